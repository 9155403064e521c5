/*
 * membership_test.c - the gossip membership provider (src/cluster/membership.c)
 * driven in memory: several providers exchange what encode() gives through
 * receive(), on a synthetic clock (no sleeping, no sockets). Joining through
 * seeds, failure detection and its timing, tombstones against stale gossip,
 * restart and refutation with a higher incarnation, graceful leave, tombstone
 * expiry, and hostile input.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cluster/membership.h"
#include "quark/actor_service.pb-c.h"

#define HB 100
#define TIMEOUT 1000
#define CLUSTER "test-cluster"

static const qk_gossip_ops *G = &qk_gossip_table;

typedef struct node {
    const char *addr;
    void *m;
    int up;                  /* delivers and receives */
} node;

static void *mk(const char *addr, uint64_t inc, const char *const *seeds, size_t nseeds,
                uint64_t now)
{
    qk_gossip_cfg cfg = {
        .cluster_id = CLUSTER,
        .self_addr = addr,
        .incarnation = inc,
        .seeds = seeds,
        .nseeds = nseeds,
        .heartbeat_ms = HB,
        .failure_timeout_ms = TIMEOUT,
        .vnodes = 32,
    };
    void *m = G->create(&cfg, now);
    assert_non_null(m);
    return m;
}

/* `to` receives what `from` encodes now; receive's result. */
static int deliver(void *from, void *to, uint64_t now)
{
    size_t len = 0;
    uint8_t *buf = G->encode(from, &len);
    assert_non_null(buf);
    const char *why = NULL;
    int rc = G->receive(to, buf, len, now, &why);
    if (rc < 0)
        fail_msg("receive: %s", why ? why : "?");
    free(buf);
    return rc;
}

static node *by_addr(node *ns, size_t n, const char *addr)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ns[i].addr, addr) == 0)
            return &ns[i];
    return NULL;
}

/* One heartbeat at `now`: every up node gossips to its targets, each up
 * target answers with its own table, then every up node ticks. */
static void round_at(node *ns, size_t n, uint64_t now)
{
    for (size_t i = 0; i < n; i++) {
        if (!ns[i].up)
            continue;
        const char *t[16];
        size_t k = G->targets(ns[i].m, t, 16);
        char copy[16][QK_ADDR_MAX]; /* receive may move the strings */
        for (size_t j = 0; j < k; j++)
            snprintf(copy[j], sizeof copy[j], "%s", t[j]);
        for (size_t j = 0; j < k; j++) {
            node *d = by_addr(ns, n, copy[j]);
            if (!d || !d->up)
                continue;
            deliver(ns[i].m, d->m, now);
            deliver(d->m, ns[i].m, now);
        }
    }
    for (size_t i = 0; i < n; i++)
        if (ns[i].up)
            G->tick(ns[i].m, now);
}

/* Incarnation of addr in m's live view, 0 if absent. */
static uint64_t live_inc(void *m, const char *addr)
{
    qk_view *v = G->view(m);
    assert_non_null(v);
    int i = qk_view_find(v, addr);
    uint64_t inc = i >= 0 ? v->members[i].incarnation : 0;
    qk_view_unref(v);
    return inc;
}

static size_t live_n(void *m)
{
    qk_view *v = G->view(m);
    assert_non_null(v);
    size_t n = v->n;
    qk_view_unref(v);
    return n;
}

static uint64_t view_version(void *m)
{
    qk_view *v = G->view(m);
    assert_non_null(v);
    uint64_t ver = v->version;
    qk_view_unref(v);
    return ver;
}

/* Status of addr in m's gossip (-1 if not listed). */
static int gossip_status(void *m, const char *addr, uint64_t *inc)
{
    size_t len;
    uint8_t *buf = G->encode(m, &len);
    assert_non_null(buf);
    Quark__ClusterView *cv = quark__cluster_view__unpack(NULL, len, buf);
    assert_non_null(cv);
    int st = -1;
    for (size_t i = 0; i < cv->n_members; i++)
        if (strcmp(cv->members[i]->address, addr) == 0) {
            st = (int)cv->members[i]->status;
            if (inc)
                *inc = cv->members[i]->incarnation;
        }
    quark__cluster_view__free_unpacked(cv, NULL);
    free(buf);
    return st;
}

typedef struct crafted_member {
    const char *addr;
    uint64_t inc;
    Quark__MemberStatus st;
} crafted_member;

static uint8_t *craft(const char *cluster, const char *from, uint64_t from_inc,
                      const crafted_member *ms, size_t n, size_t *len)
{
    Quark__ClusterView cv = QUARK__CLUSTER_VIEW__INIT;
    Quark__ClusterMember m[8], *mp[8];
    for (size_t i = 0; i < n; i++) {
        quark__cluster_member__init(&m[i]);
        m[i].address = (char *)ms[i].addr;
        m[i].incarnation = ms[i].inc;
        m[i].status = ms[i].st;
        mp[i] = &m[i];
    }
    cv.cluster_id = (char *)cluster;
    cv.from = (char *)from;
    cv.from_incarnation = from_inc;
    cv.n_members = n;
    cv.members = mp;
    *len = quark__cluster_view__get_packed_size(&cv);
    uint8_t *buf = malloc(*len + 1);
    assert_non_null(buf);
    quark__cluster_view__pack(&cv, buf);
    return buf;
}

/* A, B, C where A and C know only the seed B; joined at the returned time. */
static uint64_t three(node ns[3])
{
    static const char *const seeds[] = {"b:7000"};
    ns[0] = (node){"a:7000", mk("a:7000", 1000, seeds, 1, 0), 1};
    ns[1] = (node){"b:7000", mk("b:7000", 2000, seeds, 1, 0), 1};
    ns[2] = (node){"c:7000", mk("c:7000", 3000, seeds, 1, 0), 1};
    uint64_t now = 0;
    for (int r = 0; r < 3; r++)
        round_at(ns, 3, now += HB);
    return now;
}

static void destroy(node *ns, size_t n)
{
    for (size_t i = 0; i < n; i++)
        G->destroy(ns[i].m);
}

/* ---- tests ---- */

static void test_join_via_seeds(void **state)
{
    (void)state;
    static const char *const seeds[] = {"b:7000"};
    node ns[3] = {{"a:7000", mk("a:7000", 1000, seeds, 1, 0), 1},
                  {"b:7000", mk("b:7000", 2000, seeds, 1, 0), 1},
                  {"c:7000", mk("c:7000", 3000, seeds, 1, 0), 1}};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(live_n(ns[i].m), 1); /* just self */
        assert_int_equal(view_version(ns[i].m), 1);
    }
    round_at(ns, 3, HB);
    round_at(ns, 3, 2 * HB);
    for (int i = 0; i < 3; i++) {
        qk_view *v = G->view(ns[i].m);
        assert_non_null(v);
        assert_int_equal(v->n, 3);
        assert_int_equal(v->self, i); /* a, b, c sort in that order */
        assert_int_equal(v->vnodes, 32);
        assert_int_equal(v->members[0].incarnation, 1000);
        assert_int_equal(v->members[1].incarnation, 2000);
        assert_int_equal(v->members[2].incarnation, 3000);
        assert_true(v->version > 1);
        qk_view_unref(v);
    }
    /* A learned C from B (indirectly) and now talks to it directly */
    const char *t[8];
    size_t k = G->targets(ns[0].m, t, 8);
    assert_int_equal(k, 2);
    assert_string_equal(t[0], "b:7000");
    assert_string_equal(t[1], "c:7000");
    /* nothing new: no change, same version */
    uint64_t ver = view_version(ns[0].m);
    assert_int_equal(deliver(ns[1].m, ns[0].m, 3 * HB), 0);
    assert_int_equal(G->tick(ns[0].m, 3 * HB), 0);
    assert_int_equal(view_version(ns[0].m), ver);
    destroy(ns, 3);
}

static void test_failure_detection(void **state)
{
    (void)state;
    node ns[3];
    uint64_t now = three(ns);
    uint64_t last = now; /* C last talked to A and B at `now` */
    ns[2].up = 0;
    uint64_t ver_a = view_version(ns[0].m);
    /* rounds up to just before the timeout: B keeps telling A that C is
     * alive, which must not count as hearing from C */
    while (now + HB < last + TIMEOUT) {
        now += HB;
        round_at(ns, 3, now);
        assert_int_equal(live_n(ns[0].m), 3);
        assert_int_equal(live_n(ns[1].m), 3);
    }
    assert_int_equal(G->tick(ns[0].m, last + TIMEOUT - 1), 0);
    assert_int_equal(G->tick(ns[1].m, last + TIMEOUT - 1), 0);
    assert_int_equal(live_n(ns[0].m), 3);
    assert_int_equal(G->tick(ns[0].m, last + TIMEOUT), 1);
    assert_int_equal(G->tick(ns[1].m, last + TIMEOUT), 1);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(live_n(ns[i].m), 2);
        assert_int_equal(live_inc(ns[i].m, "c:7000"), 0);
        assert_int_equal(gossip_status(ns[i].m, "c:7000", NULL), QUARK__MEMBER_STATUS__MEMBER_DEAD);
    }
    assert_true(view_version(ns[0].m) > ver_a);
    /* C is no longer gossiped to (it is not a seed) */
    const char *t[8];
    assert_int_equal(G->targets(ns[0].m, t, 8), 1);
    assert_string_equal(t[0], "b:7000");
    destroy(ns, 3);
}

static void test_stale_gossip_does_not_resurrect(void **state)
{
    (void)state;
    node ns[3];
    uint64_t now = three(ns);
    /* what C and B said while C was alive */
    size_t clen, blen;
    uint8_t *cold = G->encode(ns[2].m, &clen), *bold = G->encode(ns[1].m, &blen);
    assert_non_null(cold);
    assert_non_null(bold);
    ns[2].up = 0;
    uint64_t dead_at = now + TIMEOUT;
    while (now < dead_at)
        round_at(ns, 3, now += HB);
    assert_int_equal(live_inc(ns[0].m, "c:7000"), 0);
    assert_int_equal(live_n(ns[0].m), 2);
    const char *why;
    now += HB;
    assert_int_equal(G->receive(ns[0].m, bold, blen, now, &why), 0);
    assert_int_equal(G->receive(ns[0].m, cold, clen, now, &why), 0);
    assert_int_equal(G->tick(ns[0].m, now), 0);
    assert_int_equal(live_inc(ns[0].m, "c:7000"), 0);
    assert_int_equal(gossip_status(ns[0].m, "c:7000", NULL), QUARK__MEMBER_STATUS__MEMBER_DEAD);
    free(cold);
    free(bold);
    destroy(ns, 3);
}

static void test_restart_with_higher_incarnation(void **state)
{
    (void)state;
    node ns[3];
    uint64_t now = three(ns);
    ns[2].up = 0;
    now += TIMEOUT;
    round_at(ns, 3, now);
    assert_int_equal(live_n(ns[0].m), 2);
    /* C restarts: new process, new incarnation, knows only the seed */
    static const char *const seeds[] = {"b:7000"};
    G->destroy(ns[2].m);
    ns[2].m = mk("c:7000", 3500, seeds, 1, now);
    ns[2].up = 1;
    for (int r = 0; r < 3; r++)
        round_at(ns, 3, now += HB);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(live_n(ns[i].m), 3);
        assert_int_equal(live_inc(ns[i].m, "c:7000"), 3500);
    }
    destroy(ns, 3);
}

static void test_refutation(void **state)
{
    (void)state;
    node ns[3];
    uint64_t now = three(ns);
    /* C is partitioned away long enough to be declared dead, but keeps
     * running */
    ns[2].up = 0;
    now += TIMEOUT;
    round_at(ns, 3, now);
    assert_int_equal(live_inc(ns[0].m, "c:7000"), 0);
    assert_int_equal(G->incarnation(ns[2].m), 3000);
    /* C hears A's table, which says C DEAD at 3000: C refutes */
    uint64_t ver_c = view_version(ns[2].m);
    assert_int_equal(deliver(ns[0].m, ns[2].m, now), 1);
    assert_int_equal(G->incarnation(ns[2].m), 3001);
    assert_true(view_version(ns[2].m) > ver_c);
    assert_int_equal(gossip_status(ns[2].m, "c:7000", NULL), QUARK__MEMBER_STATUS__MEMBER_ALIVE);
    /* and its next gossip brings it back, at the new incarnation */
    assert_int_equal(deliver(ns[2].m, ns[0].m, now), 1);
    assert_int_equal(live_inc(ns[0].m, "c:7000"), 3001);
    ns[2].up = 1;
    round_at(ns, 3, now += HB);
    for (int i = 0; i < 3; i++)
        assert_int_equal(live_inc(ns[i].m, "c:7000"), 3001);

    /* a DEAD claim about an older incarnation is not refuted again */
    size_t len;
    const char *why;
    crafted_member old[] = {{"c:7000", 3000, QUARK__MEMBER_STATUS__MEMBER_DEAD}};
    uint8_t *buf = craft(CLUSTER, "a:7000", 1000, old, 1, &len);
    assert_int_equal(G->receive(ns[2].m, buf, len, now, &why), 0);
    assert_int_equal(G->incarnation(ns[2].m), 3001);
    free(buf);
    /* LEFT at a later incarnation (C never left): refuted past it */
    crafted_member later[] = {{"c:7000", 5000, QUARK__MEMBER_STATUS__MEMBER_LEFT}};
    buf = craft(CLUSTER, "a:7000", 1000, later, 1, &len);
    assert_int_equal(G->receive(ns[2].m, buf, len, now, &why), 1);
    assert_int_equal(G->incarnation(ns[2].m), 5001);
    free(buf);
    destroy(ns, 3);
}

static void test_graceful_leave(void **state)
{
    (void)state;
    node ns[3];
    uint64_t now = three(ns);
    size_t blen;
    uint8_t *bold = G->encode(ns[1].m, &blen);
    assert_non_null(bold);
    G->leave(ns[1].m);
    /* B's own view no longer has B */
    assert_int_equal(live_inc(ns[1].m, "b:7000"), 0);
    assert_int_equal(gossip_status(ns[1].m, "b:7000", NULL), QUARK__MEMBER_STATUS__MEMBER_LEFT);
    /* B's gossip reaches A and C: B is gone at once, no timeout */
    now += 1;
    assert_int_equal(deliver(ns[1].m, ns[0].m, now), 1);
    assert_int_equal(deliver(ns[1].m, ns[2].m, now), 1);
    for (int i = 0; i < 3; i += 2) {
        assert_int_equal(live_n(ns[i].m), 2);
        assert_int_equal(live_inc(ns[i].m, "b:7000"), 0);
    }
    /* B does not refute what others say about it after leaving */
    size_t len;
    const char *why;
    crafted_member dead[] = {{"b:7000", 2000, QUARK__MEMBER_STATUS__MEMBER_DEAD}};
    uint8_t *buf = craft(CLUSTER, "a:7000", 1000, dead, 1, &len);
    G->receive(ns[1].m, buf, len, now, &why);
    assert_int_equal(G->incarnation(ns[1].m), 2000);
    free(buf);
    /* stale gossip from B before it left does not bring it back */
    ns[1].up = 0;
    now += HB;
    assert_int_equal(G->receive(ns[0].m, bold, blen, now, &why), 0);
    free(bold);
    round_at(ns, 3, now);
    assert_int_equal(live_inc(ns[0].m, "b:7000"), 0);
    assert_int_equal(live_inc(ns[2].m, "b:7000"), 0);
    assert_int_equal(gossip_status(ns[0].m, "b:7000", NULL), QUARK__MEMBER_STATUS__MEMBER_LEFT);
    destroy(ns, 3);
}

static void test_tombstone_expiry(void **state)
{
    (void)state;
    node ns[3];
    uint64_t now = three(ns);
    ns[2].up = 0;
    uint64_t dead_at = now + TIMEOUT;
    while (now < dead_at)
        round_at(ns, 3, now += HB);
    assert_int_equal(gossip_status(ns[0].m, "c:7000", NULL), QUARK__MEMBER_STATUS__MEMBER_DEAD);
    /* A and B keep gossiping; the tombstone stays for QK_TOMBSTONE_MS */
    while (now + HB < dead_at + QK_TOMBSTONE_MS)
        round_at(ns, 3, now += HB);
    assert_int_equal(G->tick(ns[0].m, dead_at + QK_TOMBSTONE_MS - 1), 0);
    assert_int_equal(gossip_status(ns[0].m, "c:7000", NULL), QUARK__MEMBER_STATUS__MEMBER_DEAD);
    uint64_t ver = view_version(ns[0].m);
    now = dead_at + QK_TOMBSTONE_MS;
    assert_int_equal(G->tick(ns[0].m, now), 0); /* the live set did not change */
    assert_int_equal(G->tick(ns[1].m, now), 0);
    assert_int_equal(view_version(ns[0].m), ver);
    assert_int_equal(gossip_status(ns[0].m, "c:7000", NULL), -1);
    assert_int_equal(gossip_status(ns[1].m, "c:7000", NULL), -1);
    /* and it does not come back through the other's gossip */
    round_at(ns, 3, now += HB);
    assert_int_equal(gossip_status(ns[0].m, "c:7000", NULL), -1);
    assert_int_equal(gossip_status(ns[1].m, "c:7000", NULL), -1);
    assert_int_equal(live_n(ns[0].m), 2);
    destroy(ns, 3);
}

static void test_sender_learns_only_net_changes(void **state)
{
    (void)state;
    void *a = mk("a:7000", 1, NULL, 0, 0);
    uint64_t ver = view_version(a);
    size_t len;
    const char *why;
    /* an unknown silo says goodbye: added and removed in one message */
    crafted_member left[] = {{"x:1", 7, QUARK__MEMBER_STATUS__MEMBER_LEFT}};
    uint8_t *buf = craft(CLUSTER, "x:1", 7, left, 1, &len);
    assert_int_equal(G->receive(a, buf, len, 10, &why), 0);
    assert_int_equal(view_version(a), ver);
    free(buf);
    /* tombstones of silos we never knew are not taken */
    crafted_member dead[] = {{"y:1", 7, QUARK__MEMBER_STATUS__MEMBER_DEAD}};
    buf = craft(CLUSTER, "x:1", 7, dead, 1, &len);
    assert_int_equal(G->receive(a, buf, len, 10, &why), 0);
    assert_int_equal(gossip_status(a, "y:1", NULL), -1);
    free(buf);
    /* an unknown ALIVE member learned indirectly gets a full timeout */
    crafted_member alive[] = {{"z:1", 3, QUARK__MEMBER_STATUS__MEMBER_ALIVE}};
    buf = craft(CLUSTER, "x:1", 7, alive, 1, &len);
    assert_int_equal(G->receive(a, buf, len, 500, &why), 1);
    assert_int_equal(live_inc(a, "z:1"), 3);
    assert_int_equal(G->tick(a, 500 + TIMEOUT - 1), 0);
    assert_int_equal(G->tick(a, 500 + TIMEOUT), 1);
    assert_int_equal(live_inc(a, "z:1"), 0);
    free(buf);
    /* so does a new incarnation of a member learned indirectly, even one
     * whose old incarnation went quiet long ago */
    crafted_member again[] = {{"z:1", 9, QUARK__MEMBER_STATUS__MEMBER_ALIVE}};
    buf = craft(CLUSTER, "x:1", 7, again, 1, &len);
    assert_int_equal(G->receive(a, buf, len, 5000, &why), 1);
    assert_int_equal(live_inc(a, "z:1"), 9);
    assert_int_equal(G->tick(a, 5000 + TIMEOUT - 1), 0);
    assert_int_equal(G->tick(a, 5000 + TIMEOUT), 1);
    free(buf);
    G->destroy(a);
}

static void test_wrong_cluster_and_garbage(void **state)
{
    (void)state;
    void *a = mk("a:7000", 1, NULL, 0, 0);
    size_t len;
    const char *why = NULL;
    crafted_member ms[] = {{"x:1", 7, QUARK__MEMBER_STATUS__MEMBER_ALIVE}};
    uint8_t *buf = craft("other", "x:1", 7, ms, 1, &len);
    assert_int_equal(G->receive(a, buf, len, 10, &why), -1);
    assert_non_null(why);
    assert_non_null(strstr(why, "'other'"));
    assert_non_null(strstr(why, "'" CLUSTER "'"));
    assert_int_equal(live_n(a), 1);
    free(buf);

    /* no sender */
    buf = craft(CLUSTER, "", 7, ms, 1, &len);
    why = NULL;
    assert_int_equal(G->receive(a, buf, len, 10, &why), -1);
    assert_non_null(why);
    free(buf);
    /* a member without an address: all of it rejected */
    crafted_member bad[] = {{"z:1", 7, QUARK__MEMBER_STATUS__MEMBER_ALIVE},
                            {"", 7, QUARK__MEMBER_STATUS__MEMBER_ALIVE}};
    buf = craft(CLUSTER, "x:1", 7, bad, 2, &len);
    assert_int_equal(G->receive(a, buf, len, 10, &why), -1);
    assert_int_equal(live_n(a), 1);
    free(buf);

    const uint8_t junk[] = {0x0a, 0x7f, 'x'}; /* length past the end */
    why = NULL;
    assert_int_equal(G->receive(a, junk, sizeof junk, 10, &why), -1);
    assert_non_null(why);
    uint64_t r = 0x243f6a8885a308d3ull;
    for (int it = 0; it < 5000; it++) {
        uint8_t b[96];
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
        G->receive(a, b, n, 10, &why);
    }
    assert_int_equal(gossip_status(a, "a:7000", NULL), QUARK__MEMBER_STATUS__MEMBER_ALIVE);
    G->destroy(a);
}

static void test_targets(void **state)
{
    (void)state;
    static const char *const seeds[] = {"b:1", "a:1", "c:1", "b:1"};
    void *a = mk("a:1", 1, seeds, 4, 0);
    const char *t[8];
    /* seeds not known alive, without self or duplicates */
    size_t k = G->targets(a, t, 8);
    assert_int_equal(k, 2);
    assert_string_equal(t[0], "b:1");
    assert_string_equal(t[1], "c:1");
    assert_int_equal(G->targets(a, t, 1), 1);
    /* B gossips to A and lists D: live members first, then seeds not alive */
    size_t len;
    const char *why;
    crafted_member ms[] = {{"b:1", 2, QUARK__MEMBER_STATUS__MEMBER_ALIVE},
                           {"d:1", 4, QUARK__MEMBER_STATUS__MEMBER_ALIVE},
                           {"a:1", 1, QUARK__MEMBER_STATUS__MEMBER_ALIVE}};
    uint8_t *buf = craft(CLUSTER, "b:1", 2, ms, 3, &len);
    assert_int_equal(G->receive(a, buf, len, 100, &why), 1);
    free(buf);
    k = G->targets(a, t, 8);
    assert_int_equal(k, 3);
    assert_string_equal(t[0], "b:1");
    assert_string_equal(t[1], "d:1");
    assert_string_equal(t[2], "c:1");
    /* D is never heard from directly, B is: D dies, B (a seed) stays a
     * member target; once B dies too it is a seed target again */
    crafted_member none[] = {{"a:1", 1, QUARK__MEMBER_STATUS__MEMBER_ALIVE}};
    buf = craft(CLUSTER, "b:1", 2, none, 1, &len);
    assert_int_equal(G->receive(a, buf, len, 600, &why), 0);
    free(buf);
    assert_int_equal(G->tick(a, 100 + TIMEOUT), 1);
    k = G->targets(a, t, 8);
    assert_int_equal(k, 2);
    assert_string_equal(t[0], "b:1");
    assert_string_equal(t[1], "c:1");
    assert_int_equal(G->tick(a, 600 + TIMEOUT), 1);
    k = G->targets(a, t, 8);
    assert_int_equal(k, 2);
    assert_string_equal(t[0], "b:1");
    assert_string_equal(t[1], "c:1");
    assert_int_equal(live_n(a), 1);
    G->destroy(a);
}

static void test_create_rejects_bad_config(void **state)
{
    (void)state;
    qk_gossip_cfg cfg = {.cluster_id = CLUSTER, .self_addr = "a:1", .incarnation = 1,
                             .failure_timeout_ms = TIMEOUT};
    void *m = G->create(&cfg, 0);
    assert_non_null(m);
    G->destroy(m);
    cfg.incarnation = 0;
    assert_null(G->create(&cfg, 0));
    cfg.incarnation = 1;
    cfg.self_addr = "";
    assert_null(G->create(&cfg, 0));
    cfg.self_addr = NULL;
    assert_null(G->create(&cfg, 0));
    cfg.self_addr = "a:1";
    cfg.nseeds = 1;
    assert_null(G->create(&cfg, 0));
    assert_null(G->create(NULL, 0));
    G->destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join_via_seeds),
        cmocka_unit_test(test_failure_detection),
        cmocka_unit_test(test_stale_gossip_does_not_resurrect),
        cmocka_unit_test(test_restart_with_higher_incarnation),
        cmocka_unit_test(test_refutation),
        cmocka_unit_test(test_graceful_leave),
        cmocka_unit_test(test_tombstone_expiry),
        cmocka_unit_test(test_sender_learns_only_net_changes),
        cmocka_unit_test(test_wrong_cluster_and_garbage),
        cmocka_unit_test(test_targets),
        cmocka_unit_test(test_create_rejects_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
