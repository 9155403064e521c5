/*
 * ring_test.c - cluster views and the consistent-hash ring (src/cluster/view.c):
 * placement is deterministic, spreads keys evenly, and moves only the keys of
 * the member that joins or leaves; views dedupe, find, compare, and survive
 * the wire (and refuse garbage and other clusters).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "transport/view_codec.h"
#include "cluster/directory_hash.h"
#include "core/hash.h"

#define NKEYS 100000

/* Keys like the runtime's (qk_key_hash of a type name hash and an id). */
/* The hash directory's answer for key under v (through its table, as the
 * route asks it). */
static int dir_owner(qk_view *v, uint64_t key)
{
    void *pw = qk_directory_hash.attach(NULL, NULL);
    assert_non_null(pw);
    qk_view_ref(v);
    qk_directory_hash.set_view(pw, v);
    qk_actor_key k = {.hash = key};
    qk_dir_entry e;
    assert_int_equal(qk_directory_hash.lookup(pw, &k, &e, NULL), QUARK_OK);
    if (e.member >= 0)
        assert_string_equal(e.silo, v->members[e.member].addr);
    qk_dir_entry r;
    assert_int_equal(qk_directory_hash.register_activation(pw, &k, &r, NULL), QUARK_OK);
    assert_int_equal(r.member, e.member); /* placement decides */
    assert_int_equal(qk_directory_hash.unregister_activation(pw, &k, NULL, NULL), QUARK_OK);
    qk_directory_hash.detach(NULL, pw);
    return e.member;
}

static uint64_t key(int i)
{
    char id[32];
    int n = snprintf(id, sizeof id, "counter-%d", i);
    return qk_hash(id, (size_t)n, 0x6b65795f71726bull ^ 0x1234567890abcdefull);
}

static qk_view *mk(const char *const *addrs, size_t n, unsigned vnodes)
{
    qk_view_member ms[16];
    for (size_t i = 0; i < n; i++) {
        ms[i].addr = (char *)addrs[i];
        ms[i].incarnation = 100 + i;
    }
    qk_view *v = qk_view_new(ms, n, 1, vnodes, NULL);
    assert_non_null(v);
    return v;
}

static const char *owner_addr(const qk_view *v, uint64_t k)
{
    int i = qk_view_owner(v, k);
    assert_true(i >= 0 && (size_t)i < v->n);
    return v->members[i].addr;
}

static void test_deterministic_and_order_independent(void **state)
{
    (void)state;
    const char *a[] = {"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"};
    const char *b[] = {"10.0.0.3:7000", "10.0.0.1:7000", "10.0.0.2:7000"};
    qk_view *v1 = mk(a, 3, 128), *v2 = mk(b, 3, 128), *v3 = mk(a, 3, 128);
    assert_string_equal(v2->members[0].addr, "10.0.0.1:7000"); /* sorted */
    for (int i = 0; i < 20000; i++) {
        uint64_t k = key(i);
        assert_string_equal(owner_addr(v1, k), owner_addr(v2, k));
        assert_int_equal(qk_view_owner(v1, k), qk_view_owner(v3, k));
        assert_int_equal(dir_owner(v1, k), qk_view_owner(v1, k));
    }
    qk_view_unref(v1);
    qk_view_unref(v2);
    qk_view_unref(v3);
}

static void test_spread(void **state)
{
    (void)state;
    const char *a[] = {"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"};
    qk_view *v = mk(a, 3, 128);
    size_t cnt[3] = {0};
    for (int i = 0; i < NKEYS; i++)
        cnt[qk_view_owner(v, key(i))]++;
    for (int m = 0; m < 3; m++) {
        double share = 100.0 * (double)cnt[m] / NKEYS;
        print_message("  %s: %.1f%%\n", v->members[m].addr, share);
        assert_true(share >= 20.0 && share <= 47.0);
    }
    qk_view_unref(v);
}

static void test_join_moves_only_to_new_member(void **state)
{
    (void)state;
    const char *a[] = {"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"};
    const char *b[] = {"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000", "10.0.0.4:7000"};
    qk_view *v3 = mk(a, 3, 128), *v4 = mk(b, 4, 128);
    size_t moved = 0;
    for (int i = 0; i < NKEYS; i++) {
        const char *before = owner_addr(v3, key(i)), *after = owner_addr(v4, key(i));
        if (strcmp(before, after) != 0) {
            assert_string_equal(after, "10.0.0.4:7000");
            moved++;
        }
    }
    double share = 100.0 * (double)moved / NKEYS;
    print_message("  moved to the 4th member: %.1f%%\n", share);
    assert_true(share >= 15.0 && share <= 35.0);
    qk_view_unref(v3);
    qk_view_unref(v4);
}

static void test_leave_moves_only_its_keys(void **state)
{
    (void)state;
    const char *a[] = {"a:1", "b:1", "c:1", "d:1", "e:1"};
    const char *b[] = {"a:1", "b:1", "d:1", "e:1"};
    qk_view *v5 = mk(a, 5, 64), *v4 = mk(b, 4, 64);
    size_t moved = 0;
    for (int i = 0; i < NKEYS; i++) {
        const char *before = owner_addr(v5, key(i)), *after = owner_addr(v4, key(i));
        if (strcmp(before, "c:1") == 0) {
            moved++;
            assert_string_not_equal(after, "c:1");
        } else {
            assert_string_equal(before, after);
        }
    }
    assert_true(moved > 0);
    qk_view_unref(v5);
    qk_view_unref(v4);
}

static void test_incarnation_does_not_move_keys(void **state)
{
    (void)state;
    qk_view_member m1[] = {{"a:1", 1}, {"b:1", 1}}, m2[] = {{"a:1", 1}, {"b:1", 99}};
    qk_view *v1 = qk_view_new(m1, 2, 1, 0, NULL), *v2 = qk_view_new(m2, 2, 2, 0, NULL);
    assert_non_null(v1);
    assert_non_null(v2);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(qk_view_owner(v1, key(i)), qk_view_owner(v2, key(i)));
    qk_view_unref(v1);
    qk_view_unref(v2);
}

static void test_empty_and_single(void **state)
{
    (void)state;
    qk_view *e = qk_view_new(NULL, 0, 7, 0, "a:1");
    assert_non_null(e);
    assert_int_equal(e->n, 0);
    assert_int_equal(e->self, -1);
    assert_int_equal(e->version, 7);
    assert_int_equal(qk_view_owner(e, key(1)), -1);
    assert_int_equal(dir_owner(e, key(1)), -1);
    assert_int_equal(qk_view_owner(NULL, key(1)), -1);
    assert_int_equal(qk_view_find(e, "a:1"), -1);

    const char *a[] = {"only:1"};
    qk_view *one = mk(a, 1, 3);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(qk_view_owner(one, key(i)), 0);
    qk_view_unref(e);
    qk_view_unref(one);
}

static void test_dedupe_find_self_vnodes(void **state)
{
    (void)state;
    qk_view_member ms[] = {{"b:1", 5}, {"a:1", 3}, {"b:1", 9}, {"c:1", 1}, {"b:1", 7}};
    qk_view *v = qk_view_new(ms, 5, 1, 100000, "b:1");
    assert_non_null(v);
    assert_int_equal(v->n, 3);
    assert_int_equal(v->vnodes, QK_VNODES_MAX);
    assert_string_equal(v->members[0].addr, "a:1");
    assert_string_equal(v->members[1].addr, "b:1");
    assert_int_equal(v->members[1].incarnation, 9);
    assert_string_equal(v->members[2].addr, "c:1");
    assert_int_equal(v->self, 1);
    assert_int_equal(qk_view_find(v, "a:1"), 0);
    assert_int_equal(qk_view_find(v, "c:1"), 2);
    assert_int_equal(qk_view_find(v, "b:2"), -1);
    assert_int_equal(qk_view_find(v, ""), -1);
    assert_int_equal(qk_view_find(v, "zzz"), -1);
    assert_ptr_not_equal(v->members[0].addr, ms[1].addr); /* copied */

    qk_view *w = qk_view_new(ms, 5, 1, 0, "x:1");
    assert_non_null(w);
    assert_int_equal(w->self, -1);
    assert_int_equal(w->vnodes, QK_VNODES_DEFAULT);

    /* references: the view outlives its first owner while another holds it */
    qk_view_ref(w);
    qk_view_unref(w);
    assert_int_equal(qk_view_find(w, "c:1"), 2);
    qk_view_unref(w);
    qk_view_unref(v);
    qk_view_unref(NULL);
}

static void test_same_members(void **state)
{
    (void)state;
    qk_view_member a[] = {{"a:1", 1}, {"b:1", 2}}, b[] = {{"b:1", 2}, {"a:1", 1}},
                   c[] = {{"a:1", 1}, {"b:1", 3}}, d[] = {{"a:1", 1}, {"c:1", 2}};
    qk_view *va = qk_view_new(a, 2, 1, 0, NULL), *vb = qk_view_new(b, 2, 5, 64, "a:1"),
            *vc = qk_view_new(c, 2, 1, 0, NULL), *vd = qk_view_new(d, 2, 1, 0, NULL),
            *ve = qk_view_new(a, 1, 1, 0, NULL);
    assert_true(qk_view_same_members(va, vb)); /* version, vnodes, self do not count */
    assert_true(qk_view_same_members(va, va));
    assert_false(qk_view_same_members(va, vc));
    assert_false(qk_view_same_members(va, vd));
    assert_false(qk_view_same_members(va, ve));
    assert_false(qk_view_same_members(va, NULL));
    qk_view_unref(va);
    qk_view_unref(vb);
    qk_view_unref(vc);
    qk_view_unref(vd);
    qk_view_unref(ve);
}

static void test_encode_decode(void **state)
{
    (void)state;
    qk_view_member ms[] = {{"10.0.0.2:7000", 22}, {"10.0.0.1:7000", 11}};
    qk_view *v = qk_view_new(ms, 2, 42, 64, "10.0.0.1:7000");
    assert_non_null(v);
    size_t len = 0;
    uint8_t *buf = qk_view_encode(v, "prod", "10.0.0.1:7000", 11, &len);
    assert_non_null(buf);
    assert_true(len > 0);
    char *from = NULL;
    const char *why = NULL;
    qk_view *d = qk_view_decode(buf, len, "prod", &from, &why);
    assert_non_null(d);
    assert_true(qk_view_same_members(v, d));
    assert_int_equal(d->version, 42);
    assert_int_equal(d->vnodes, 64);
    assert_int_equal(d->self, -1);
    assert_string_equal(from, "10.0.0.1:7000");
    for (int i = 0; i < 10000; i++)
        assert_int_equal(qk_view_owner(v, key(i)), qk_view_owner(d, key(i)));
    free(from);
    qk_view_unref(d);

    /* cluster_id NULL: any cluster; from optional */
    d = qk_view_decode(buf, len, NULL, NULL, NULL);
    assert_non_null(d);
    qk_view_unref(d);

    /* another cluster */
    from = (char *)"untouched";
    d = qk_view_decode(buf, len, "staging", &from, &why);
    assert_null(d);
    assert_null(from);
    assert_non_null(strstr(why, "prod"));
    assert_non_null(strstr(why, "staging"));
    free(buf);

    /* an empty view (vnodes 0 on the wire means the default) */
    qk_view *e = qk_view_new(NULL, 0, 3, 0, NULL);
    buf = qk_view_encode(e, "prod", "x:1", 1, &len);
    assert_non_null(buf);
    d = qk_view_decode(buf, len, "prod", NULL, &why);
    assert_non_null(d);
    assert_int_equal(d->n, 0);
    assert_int_equal(d->vnodes, QK_VNODES_DEFAULT);
    qk_view_unref(d);
    qk_view_unref(e);
    free(buf);
    qk_view_unref(v);
}

/* Hand-made protobuf: varint tags, field 6 = ClusterMember. */
static void test_decode_skips_non_alive_and_rejects_garbage(void **state)
{
    (void)state;
    /* cluster_id "c", members {"a:1", inc 1, ALIVE}, {"b:1", inc 2, DEAD},
     * {"d:1", inc 3, LEFT} */
    const uint8_t msg[] = {0x0a, 1, 'c',
                           0x32, 7, 0x0a, 3, 'a', ':', '1', 0x10, 1,
                           0x32, 9, 0x0a, 3, 'b', ':', '1', 0x10, 2, 0x18, 1,
                           0x32, 9, 0x0a, 3, 'd', ':', '1', 0x10, 3, 0x18, 2};
    const char *why = NULL;
    qk_view *v = qk_view_decode(msg, sizeof msg, "c", NULL, &why);
    assert_non_null(v);
    assert_int_equal(v->n, 1);
    assert_string_equal(v->members[0].addr, "a:1");
    qk_view_unref(v);

    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    why = NULL;
    assert_null(qk_view_decode(junk, sizeof junk, NULL, NULL, &why));
    assert_non_null(why);
    /* truncated: a length that runs past the end */
    assert_null(qk_view_decode(msg, 10, "c", NULL, &why));
    /* an empty member address */
    const uint8_t noaddr[] = {0x32, 2, 0x10, 1};
    assert_null(qk_view_decode(noaddr, sizeof noaddr, NULL, NULL, &why));
    assert_non_null(strstr(why, "address"));
    /* random bytes never crash (run under ASan) */
    uint64_t r = 0x9e3779b97f4a7c15ull;
    for (int it = 0; it < 5000; it++) {
        uint8_t b[64];
        size_t n = (size_t)(r % sizeof b);
        for (size_t i = 0; i < n; i++) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            b[i] = (uint8_t)r;
        }
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        qk_view_unref(qk_view_decode(b, n, NULL, NULL, &why));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic_and_order_independent),
        cmocka_unit_test(test_spread),
        cmocka_unit_test(test_join_moves_only_to_new_member),
        cmocka_unit_test(test_leave_moves_only_its_keys),
        cmocka_unit_test(test_incarnation_does_not_move_keys),
        cmocka_unit_test(test_empty_and_single),
        cmocka_unit_test(test_dedupe_find_self_vnodes),
        cmocka_unit_test(test_same_members),
        cmocka_unit_test(test_encode_decode),
        cmocka_unit_test(test_decode_skips_non_alive_and_rejects_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
