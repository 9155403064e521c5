/*
 * registry_test.c - the actor type registry: naming priority, lookups both
 * ways, enumeration, duplicates refused with a useful message, V1/V2
 * interfaces side by side and several implementations of one interface,
 * reached through an embedded silo.
 */
#include <stdlib.h>

#include "../testutil.h"
#include "registry.quark.h"

static quark_err order_get(quark_actor *self, const Quark__Test__OrderRequest *req,
                           Quark__Test__OrderReply *rep, const char *impl)
{
    (void)self;
    rep->item = req->item;
    rep->impl = (char *)impl;
    return QUARK_OK;
}

static quark_err v1_get(quark_actor *s, const Quark__Test__OrderRequest *q, Quark__Test__OrderReply *r)
{
    return order_get(s, q, r, "v1");
}
static quark_err v2_get(quark_actor *s, const Quark__Test__OrderRequest *q, Quark__Test__OrderReply *r)
{
    return order_get(s, q, r, "v2");
}
static quark_err v2_total(quark_actor *s, const Quark__Test__TotalRequest *q, Quark__Test__OrderReply *r)
{
    (void)s;
    (void)q;
    r->total = 42;
    r->impl = "v2";
    return QUARK_OK;
}

static const quark_test_OrderActorV1_methods v1_methods = {.GetOrder = v1_get};
static const quark_test_OrderActorV2_methods v2_methods = {.GetOrder = v2_get, .GetTotal = v2_total};

QUARK_ACTOR_TYPE(order_v1, .interface = &quark_test_OrderActorV1_interface, .methods = &v1_methods,
                 .map_to_interface = 1)
QUARK_ACTOR_TYPE(order_v2, .interface = &quark_test_OrderActorV2_interface, .methods = &v2_methods,
                 .map_to_interface = 1)

#define STORE_IMPL(fn, label)                                                                 \
    static quark_err fn(quark_actor *s, const Quark__Test__OrderRequest *q, Quark__Test__OrderReply *r) \
    {                                                                                         \
        return order_get(s, q, r, label);                                                     \
    }                                                                                         \
    static const quark_test_Store_methods fn##_methods = {.Put = fn};

STORE_IMPL(put_memory, "memory")
STORE_IMPL(put_redis, "redis")
STORE_IMPL(put_plain, "plain")
STORE_IMPL(put_both, "both")

/* Rule 2: explicit names. */
QUARK_ACTOR_TYPE(store_memory, .interface = &quark_test_Store_interface,
                 .methods = &put_memory_methods, .name = "MemoryStore")
QUARK_ACTOR_TYPE(store_redis, .interface = &quark_test_Store_interface,
                 .methods = &put_redis_methods, .name = "RedisStore")
/* Rule 3: its own name. */
QUARK_ACTOR_TYPE(store_plain, .interface = &quark_test_Store_interface,
                 .methods = &put_plain_methods)
/* Rule 1 beats rule 2. */
QUARK_ACTOR_TYPE(store_both, .interface = &quark_test_Store_interface,
                 .methods = &put_both_methods, .map_to_interface = 1, .name = "Ignored")

static void test_load_time_registrations_ok(void **state)
{
    (void)state;
    TU_OK(quark_registry_check());
}

static void test_naming_priority(void **state)
{
    (void)state;
    assert_string_equal(quark_registry_name_of(&order_v1), "quark.test.OrderActorV1");
    assert_string_equal(quark_registry_name_of(&store_memory), "MemoryStore");
    assert_string_equal(quark_registry_name_of(&store_redis), "RedisStore");
    assert_string_equal(quark_registry_name_of(&store_plain), "store_plain");
    assert_string_equal(quark_registry_name_of(&store_both), "quark.test.Store");
    assert_string_equal(quark_registry_resolve_name(&store_both), "quark.test.Store");
    assert_null(quark_registry_find("Ignored"));
}

static void test_lookups_both_ways(void **state)
{
    (void)state;
    assert_ptr_equal(quark_registry_find("quark.test.OrderActorV2"), &order_v2);
    assert_ptr_equal(quark_registry_find("MemoryStore"), &store_memory);
    assert_ptr_equal(quark_registry_find("store_plain"), &store_plain);
    assert_null(quark_registry_find("quark.test.orderactorv2")); /* case matters */
    assert_null(quark_registry_find("nope"));
    assert_null(quark_registry_find(NULL));
    static const quark_actor_type unregistered = {.impl_name = "unregistered"};
    assert_null(quark_registry_name_of(&unregistered));
    assert_null(quark_registry_name_of(NULL));
    assert_int_equal(quark_registry_method_index(&order_v2, "GetTotal", 8), 1);
    assert_int_equal(quark_registry_method_index(&order_v2, "GetOrder", 8), 0);
    assert_int_equal(quark_registry_method_index(&order_v1, "GetTotal", 8), -1);
}

static void test_enumeration(void **state)
{
    (void)state;
    size_t n = quark_registry_list(NULL, 0);
    assert_int_equal(n, 6);
    quark_registration regs[8];
    assert_int_equal(quark_registry_list(regs, 8), 6);
    const char *want[] = {"MemoryStore", "RedisStore", "quark.test.OrderActorV1",
                          "quark.test.OrderActorV2", "quark.test.Store", "store_plain"};
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(regs[i].name, want[i]);
        assert_ptr_equal(quark_registry_find(regs[i].name), regs[i].type);
    }
    /* A short buffer gets the first entries and the full count. */
    assert_int_equal(quark_registry_list(regs, 2), 6);
    assert_string_equal(regs[1].name, "RedisStore");
}

static void test_duplicates_refused(void **state)
{
    (void)state;
    static const quark_actor_type dup_v1 = {.impl_name = "dup_v1",
                                            .interface = &quark_test_OrderActorV1_interface,
                                            .methods = &v1_methods,
                                            .map_to_interface = 1};
    assert_int_equal(quark_registry_add(&dup_v1), QUARK_EDUPLICATE);
    const char *msg = quark_last_error();
    assert_non_null(strstr(msg, "'quark.test.OrderActorV1'"));
    assert_non_null(strstr(msg, "'order_v1'"));
    assert_non_null(strstr(msg, "'dup_v1'"));
    assert_non_null(strstr(msg, "unique explicit name"));
    /* Nothing half-registered. */
    assert_ptr_equal(quark_registry_find("quark.test.OrderActorV1"), &order_v1);
    assert_null(quark_registry_name_of(&dup_v1));
    assert_int_equal(quark_registry_list(NULL, 0), 6);
    /* The same descriptor twice is not a conflict. */
    TU_OK(quark_registry_add(&order_v1));
    assert_int_equal(quark_registry_list(NULL, 0), 6);
}

static void test_invalid_descriptors(void **state)
{
    (void)state;
    static const quark_actor_type no_iface = {.impl_name = "no_iface", .name = "X1"};
    assert_int_equal(quark_registry_add(&no_iface), QUARK_EINVAL);
    assert_non_null(strstr(quark_last_error(), "no .interface"));
    static const quark_actor_type no_methods = {.impl_name = "no_methods", .name = "X2",
                                                .interface = &quark_test_Store_interface};
    assert_int_equal(quark_registry_add(&no_methods), QUARK_EINVAL);
    assert_non_null(strstr(quark_last_error(), ".methods"));
    static const quark_actor_type bad_name = {.impl_name = "bad_name", .name = "has space",
                                              .interface = &quark_test_Store_interface,
                                              .methods = &put_plain_methods};
    assert_int_equal(quark_registry_add(&bad_name), QUARK_EINVAL);
    assert_non_null(strstr(quark_last_error(), "'has space'"));
    static quark_interface old_abi;
    old_abi = quark_test_Store_interface;
    old_abi.abi = QUARK_GEN_ABI + 7;
    static const quark_actor_type abi = {.impl_name = "abi", .name = "X3",
                                         .interface = &old_abi, .methods = &put_plain_methods};
    assert_int_equal(quark_registry_add(&abi), QUARK_EINVAL);
    assert_non_null(strstr(quark_last_error(), "regenerate"));
    assert_int_equal(quark_registry_add(NULL), QUARK_EINVAL);
    assert_int_equal(quark_registry_list(NULL, 0), 6);
}

static const char *call_order(tu_env *e, const quark_interface *ifc, const char *type,
                              unsigned method, quark_err want)
{
    static char impl[32];
    quark_ref *r;
    TU_OK(quark_ref_new(e->client, ifc, type, "o-1", &r));
    Quark__Test__OrderRequest req = QUARK__TEST__ORDER_REQUEST__INIT;
    Quark__Test__TotalRequest treq = QUARK__TEST__TOTAL_REQUEST__INIT;
    req.item = "pizza";
    ProtobufCMessage *rep = NULL;
    const ProtobufCMessage *arg = ifc->methods[method].input == &quark__test__total_request__descriptor
                                      ? &treq.base : &req.base;
    quark_err rc = quark_call(r, ifc, method, arg, &rep);
    assert_int_equal(rc, want);
    impl[0] = '\0';
    if (rc == QUARK_OK) {
        snprintf(impl, sizeof impl, "%s", ((Quark__Test__OrderReply *)rep)->impl);
        quark_msg_free(rep);
    }
    quark_ref_free(r);
    return impl;
}

static void test_versions_and_implementations_side_by_side(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 0);
    assert_string_equal(call_order(&e, &quark_test_OrderActorV1_interface, NULL, 0, QUARK_OK), "v1");
    assert_string_equal(call_order(&e, &quark_test_OrderActorV2_interface, NULL, 0, QUARK_OK), "v2");
    assert_string_equal(call_order(&e, &quark_test_OrderActorV2_interface, NULL, 1, QUARK_OK), "v2");
    /* Through the generated typed proxy too. */
    quark_ref *r;
    TU_OK(quark_test_OrderActorV2_ref(e.client, "o-2", &r));
    Quark__Test__TotalRequest t = QUARK__TEST__TOTAL_REQUEST__INIT;
    Quark__Test__OrderReply *rep;
    TU_OK(quark_test_OrderActorV2_GetTotal(r, &t, &rep));
    assert_int_equal(rep->total, 42);
    quark_msg_free(rep);
    quark_ref_free(r);

    /* Several implementations of one interface, chosen by type name. */
    const quark_interface *st = &quark_test_Store_interface;
    assert_string_equal(call_order(&e, st, "MemoryStore", 0, QUARK_OK), "memory");
    assert_string_equal(call_order(&e, st, "RedisStore", 0, QUARK_OK), "redis");
    assert_string_equal(call_order(&e, st, "store_plain", 0, QUARK_OK), "plain");
    assert_string_equal(call_order(&e, st, NULL, 0, QUARK_OK), "both");

    /* A V2 method sent to the V1 type: unknown method of a known type. A
     * method both have is found by name. */
    call_order(&e, &quark_test_OrderActorV2_interface, "quark.test.OrderActorV1", 1, QUARK_ENOMETHOD);
    assert_string_equal(quark_last_error(),
                        "actor type 'quark.test.OrderActorV1' has no method 'GetTotal'");
    assert_string_equal(
        call_order(&e, &quark_test_OrderActorV2_interface, "quark.test.OrderActorV1", 0, QUARK_OK), "v1");

    /* Unregistered name. */
    call_order(&e, st, "PostgresStore", 0, QUARK_ENOTYPE);
    assert_string_equal(quark_last_error(), "no actor registered for type name 'PostgresStore'");
    tu_env_stop(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_time_registrations_ok),
        cmocka_unit_test(test_naming_priority),
        cmocka_unit_test(test_lookups_both_ways),
        cmocka_unit_test(test_enumeration),
        cmocka_unit_test(test_duplicates_refused),
        cmocka_unit_test(test_invalid_descriptors),
        cmocka_unit_test(test_versions_and_implementations_side_by_side),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
