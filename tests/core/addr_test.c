/*
 * addr_test.c - the one HOST:PORT parser (core/addr.h): what it accepts,
 * what it refuses, and comma-separated lists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/addr.h"

static int parse(const char *s, qk_addr *a)
{
    return qk_addr_parse(s, strlen(s), a);
}

static void test_accepts(void **state)
{
    (void)state;
    qk_addr a;
    assert_int_equal(parse("127.0.0.1:7000", &a), 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_string_equal(a.port, "7000");
    assert_int_equal(a.portnum, 7000);
    assert_int_equal(parse("localhost:0", &a), 0);
    assert_int_equal(a.portnum, 0);
    assert_int_equal(parse("silo-3.example:65535", &a), 0);
    assert_int_equal(a.portnum, 65535);
    assert_int_equal(parse("[::1]:7001", &a), 0); /* brackets removed */
    assert_string_equal(a.host, "::1");
    assert_int_equal(parse("::1:7001", &a), 0); /* the last colon ends the host */
    assert_string_equal(a.host, "::1");
    /* only the first len bytes count */
    assert_int_equal(qk_addr_parse("h:12,x:9", 4, &a), 0);
    assert_string_equal(a.port, "12");
}

static void test_refuses(void **state)
{
    (void)state;
    qk_addr a;
    const char *bad[] = {"", "host", "host:", ":7000", "host:70000", "host:12345678", "host:7a",
                         "host:-1", "host: 1", "[]:7000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(parse(bad[i], &a), -1);
    char longhost[400];
    memset(longhost, 'h', 300);
    strcpy(longhost + 300, ":1");
    assert_int_equal(parse(longhost, &a), -1);
}

typedef struct seen {
    char items[8][32];
    int n;
    int stop_at;
} seen;

static int collect(void *arg, const char *item, size_t len)
{
    seen *s = arg;
    if (s->n == s->stop_at)
        return 7;
    memcpy(s->items[s->n], item, len);
    s->items[s->n][len] = '\0';
    s->n++;
    return 0;
}

static void test_lists(void **state)
{
    (void)state;
    seen s = {.stop_at = -1};
    assert_int_equal(qk_addr_list_each(" a:1, b:2 ,,c:3 ,", collect, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.items[0], "a:1");
    assert_string_equal(s.items[1], "b:2");
    assert_string_equal(s.items[2], "c:3");
    seen e = {.stop_at = -1};
    assert_int_equal(qk_addr_list_each("", collect, &e), 0);
    assert_int_equal(qk_addr_list_each(" , ", collect, &e), 0);
    assert_int_equal(e.n, 0);
    seen st = {.stop_at = 1};
    assert_int_equal(qk_addr_list_each("a:1,b:2,c:3", collect, &st), 7); /* fn's stop */
    assert_int_equal(st.n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_refuses),
        cmocka_unit_test(test_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
