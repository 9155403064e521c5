/*
 * registry_dup_test.c - two implementations registered under one name at
 * load time: start-up fails with a message naming the name, both
 * implementations and the fix, and no silo can be created.
 */
#include "../testutil.h"
#include "registry.quark.h"

static quark_err put(quark_actor *s, const Quark__Test__OrderRequest *q, Quark__Test__OrderReply *r)
{
    (void)s;
    (void)q;
    (void)r;
    return QUARK_OK;
}
static const quark_test_Store_methods methods = {.Put = put};

QUARK_ACTOR_TYPE(twin_a, .interface = &quark_test_Store_interface, .methods = &methods, .name = "Twin")
QUARK_ACTOR_TYPE(twin_b, .interface = &quark_test_Store_interface, .methods = &methods, .name = "Twin")

static void test_duplicate_fails_startup(void **state)
{
    (void)state;
    assert_int_equal(quark_registry_check(), QUARK_EDUPLICATE);
    const char *msg = quark_last_error();
    assert_non_null(strstr(msg, "'Twin'"));
    assert_non_null(strstr(msg, "'twin_a'"));
    assert_non_null(strstr(msg, "'twin_b'"));
    assert_non_null(strstr(msg, "unique explicit name"));
    quark_silo *s = NULL;
    assert_int_equal(quark_silo_create(NULL, &s), QUARK_EDUPLICATE);
    assert_null(s);
    assert_non_null(strstr(quark_last_error(), "'Twin'"));
    /* Exactly one of them holds the name; the other left no trace. */
    const quark_actor_type *t = quark_registry_find("Twin");
    assert_true(t == &twin_a || t == &twin_b);
    assert_null(quark_registry_name_of(t == &twin_a ? &twin_b : &twin_a));
    assert_int_equal(quark_registry_list(NULL, 0), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_duplicate_fails_startup)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
