/*
 * directory_redis_test.c - the Redis actor directory (cluster/directory_redis.c)
 * against a real redis-server, through its ops table. The member table it
 * judges entries by is written by the test (rows of cluster/membership_redis.c's
 * form), so each case sets exactly the membership it needs. The cases follow
 * Orleans' GrainDirectoryTests and Proto.Actor's identity storage tests:
 *   register_lookup   an absent entry becomes the caller's ("<silo> <inc> <act>",
 *                     TTL 300 s); another silo's register answers that entry;
 *                     a lookup finds it; an unknown actor has none
 *   racing            10 silos register one actor at once: one winner, and
 *                     every answer names it
 *   unregister        only the registered activation's unregister deletes it
 *   takeover          an entry whose silo is dead, or alive at another
 *                     incarnation, or gone from the table, is taken over; a
 *                     live one never is
 *   not_a_member      a silo not alive in the table registers nothing
 *   lost_table        nothing registers while the table's lost_until is ahead
 *   fenced_restart    a silo restarted at the same address: its old entries
 *                     are taken over only once its fence passed
 *   odd_ids           ids with '/', spaces and bytes 0..255 are distinct keys
 */
#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

#include "testutil.h"
#include "storage/redis_server.h"
#include "cluster/directory_redis.h"
#include "runtime/op.h"

enum { NDIR = 10 };

static redis_server g_rs;
static char g_spec[64];
static char g_cluster[64];

typedef struct dir {
    qk_dir_redis *d;
    qk_worker *w;                  /* only its loop and index are used */
    void *pw;
    char addr[32];
    uint64_t inc;
} dir;

static dir g_d[NDIR];
static int g_nd;

static uint64_t inc_of(void *arg)
{
    return ((dir *)arg)->inc;
}

typedef struct req {
    qk_op op;
    qk_dir_entry e;
    quark_err err;
    char msg[300];
    atomic_int done;
} req;

static void req_done(qk_op *op)
{
    req *r = (req *)op;
    r->err = op->out->err;
    snprintf(r->msg, sizeof r->msg, "%s", r->err ? qk_outcome_text(op->out) : "");
    atomic_store(&r->done, 1);
}

static void req_init(req *r)
{
    memset(r, 0, sizeof *r);
    qk_op_init(&r->op, req_done, NULL, QK_OP_LEND, NULL);
}

/* Run d's loop until r is done. */
static void wait_req(dir *d, req *r, quark_err rc)
{
    if (rc != QUARK_PENDING) {
        r->err = rc;
        snprintf(r->msg, sizeof r->msg, "%s", quark_last_error());
        return;
    }
    uint64_t end = tu_now_ms() + 10000;
    while (!atomic_load(&r->done) && tu_now_ms() < end)
        uv_run(&d->w->loop, UV_RUN_NOWAIT);
    assert_true(atomic_load(&r->done));
}

static void member_row(const char *addr, const char *row)
{
    redisReply *r = row ? rs_command(&g_rs, "HSET %s/members silo/%s %s", g_cluster, addr, row)
                        : rs_command(&g_rs, "HDEL %s/members silo/%s", g_cluster, addr);
    assert_non_null(r);
    freeReplyObject(r);
}

static void add_dir(int i, uint64_t inc, bool alive)
{
    dir *d = &g_d[i];
    snprintf(d->addr, sizeof d->addr, "10.1.0.%d:%d", i + 1, 8000 + i);
    d->inc = inc;
    char row[64];
    snprintf(row, sizeof row, "%s %llu 1", alive ? "alive" : "dead", (unsigned long long)inc);
    member_row(d->addr, row);
    qk_dir_redis_cfg cfg = {.spec = g_spec, .cluster_id = g_cluster, .self_addr = d->addr,
                            .incarnation = inc_of, .incarnation_arg = d};
    TU_OK(qk_dir_redis_new(&cfg, &d->d));
    d->w = calloc(1, sizeof *d->w);
    assert_non_null(d->w);
    d->w->index = (unsigned)i;
    uv_loop_init(&d->w->loop);
    d->pw = qk_directory_redis.attach(d->d, d->w);
    assert_non_null(d->pw);
}

static int setup(void **state)
{
    (void)state;
    static int n;
    snprintf(g_cluster, sizeof g_cluster, "dtest%d-%d", (int)getpid(), ++n);
    g_nd = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < g_nd; i++) {
        dir *d = &g_d[i];
        qk_directory_redis.detach(d->d, d->pw);
        uv_run(&d->w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&d->w->loop);
        free(d->w);
        qk_dir_redis_free(d->d);
    }
    return 0;
}

static qk_actor_key key_of(const char *id, size_t len)
{
    return (qk_actor_key){.type = "DurableCounter", .type_len = 14, .id = id, .id_len = len};
}

static void do_register(dir *d, const qk_actor_key *k, req *r)
{
    req_init(r);
    wait_req(d, r, qk_directory_redis.register_activation(d->pw, k, &r->e, &r->op));
}

static void do_lookup(dir *d, const qk_actor_key *k, req *r)
{
    req_init(r);
    wait_req(d, r, qk_directory_redis.lookup(d->pw, k, &r->e, &r->op));
}

static void do_unregister(dir *d, const qk_actor_key *k, const qk_dir_entry *e, req *r)
{
    req_init(r);
    wait_req(d, r, qk_directory_redis.unregister_activation(d->pw, k, e, &r->op));
}

/* The stored value of k ("" none). */
static void stored(const char *id, char *out, size_t cap)
{
    redisReply *r = rs_command(&g_rs, "GET %s/directory/DurableCounter/%s", g_cluster, id);
    snprintf(out, cap, "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
    if (r)
        freeReplyObject(r);
}

static void test_register_lookup(void **state)
{
    (void)state;
    g_nd = 2;
    add_dir(0, 5, true);
    add_dir(1, 7, true);
    qk_actor_key k = key_of("bob", 3);
    req r;
    do_register(&g_d[0], &k, &r);
    assert_int_equal(r.err, QUARK_OK);
    assert_string_equal(r.e.silo, g_d[0].addr);
    assert_true(r.e.incarnation == 5);
    char v[128], want[128];
    stored("bob", v, sizeof v);
    snprintf(want, sizeof want, "%s 5 %llx", g_d[0].addr, (unsigned long long)r.e.activation);
    assert_string_equal(v, want);
    redisReply *t = rs_command(&g_rs, "PTTL %s/directory/DurableCounter/bob", g_cluster);
    assert_true(t && t->type == REDIS_REPLY_INTEGER && t->integer > 290000 &&
                t->integer <= 300000);
    freeReplyObject(t);
    /* Another silo: the entry that holds is the first one's. */
    req r2;
    do_register(&g_d[1], &k, &r2);
    assert_int_equal(r2.err, QUARK_OK);
    assert_string_equal(r2.e.silo, g_d[0].addr);
    assert_true(r2.e.activation == r.e.activation);
    stored("bob", v, sizeof v);
    assert_string_equal(v, want);
    /* The same silo again: its entry stays (TTL refreshed). */
    req r3;
    do_register(&g_d[0], &k, &r3);
    assert_int_equal(r3.err, QUARK_OK);
    assert_true(r3.e.activation == r.e.activation);
    req l;
    do_lookup(&g_d[1], &k, &l);
    assert_int_equal(l.err, QUARK_OK);
    assert_string_equal(l.e.silo, g_d[0].addr);
    assert_int_equal(l.e.member, -1); /* no view given: no member index */
    qk_actor_key none = key_of("nobody", 6);
    do_lookup(&g_d[1], &none, &l);
    assert_int_equal(l.err, QUARK_OK);
    assert_int_equal(l.e.member, -1);
    assert_null(l.e.silo);
}

typedef struct racer {
    dir *d;
    pthread_barrier_t *bar;
    req r;
} racer;

static void *race(void *arg)
{
    racer *x = arg;
    qk_actor_key k = key_of("contended", 9);
    pthread_barrier_wait(x->bar);
    do_register(x->d, &k, &x->r);
    return NULL;
}

static void test_racing(void **state)
{
    (void)state;
    g_nd = NDIR;
    for (int i = 0; i < NDIR; i++)
        add_dir(i, 100 + (uint64_t)i, true);
    /* connected first, so that the registrations race in Redis */
    for (int i = 0; i < NDIR; i++) {
        qk_actor_key k = key_of("warm", 4);
        req r;
        do_lookup(&g_d[i], &k, &r);
    }
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, NDIR);
    racer x[NDIR];
    pthread_t th[NDIR];
    for (int i = 0; i < NDIR; i++) {
        x[i] = (racer){.d = &g_d[i], .bar = &bar};
        assert_int_equal(pthread_create(&th[i], NULL, race, &x[i]), 0);
    }
    for (int i = 0; i < NDIR; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&bar);
    int winners = 0;
    for (int i = 0; i < NDIR; i++) {
        assert_int_equal(x[i].r.err, QUARK_OK);
        assert_string_equal(x[i].r.e.silo, x[0].r.e.silo);
        assert_true(x[i].r.e.activation == x[0].r.e.activation);
        winners += !strcmp(x[i].r.e.silo, g_d[i].addr);
    }
    assert_int_equal(winners, 1);
}

static void test_unregister(void **state)
{
    (void)state;
    g_nd = 2;
    add_dir(0, 5, true);
    add_dir(1, 7, true);
    qk_actor_key k = key_of("u", 1);
    req r, u;
    do_register(&g_d[0], &k, &r);
    assert_int_equal(r.err, QUARK_OK);
    char v[128];
    /* Not the registered activation: another activation id, another silo. */
    qk_dir_entry other = r.e;
    other.activation++;
    do_unregister(&g_d[0], &k, &other, &u);
    assert_int_equal(u.err, QUARK_OK);
    stored("u", v, sizeof v);
    assert_true(v[0]);
    qk_dir_entry theirs = {.silo = g_d[1].addr, .incarnation = 7, .activation = 1};
    do_unregister(&g_d[1], &k, &theirs, &u);
    stored("u", v, sizeof v);
    assert_true(v[0]);
    /* The registered one. */
    do_unregister(&g_d[0], &k, &r.e, &u);
    assert_int_equal(u.err, QUARK_OK);
    stored("u", v, sizeof v);
    assert_string_equal(v, "");
}

static void test_takeover(void **state)
{
    (void)state;
    g_nd = 2;
    add_dir(0, 5, true);
    add_dir(1, 7, true);
    qk_actor_key k = key_of("t", 1);
    req r;
    char row[64];
    /* dead */
    do_register(&g_d[0], &k, &r);
    assert_string_equal(r.e.silo, g_d[0].addr);
    member_row(g_d[0].addr, "dead 5 1");
    do_register(&g_d[1], &k, &r);
    assert_int_equal(r.err, QUARK_OK);
    assert_string_equal(r.e.silo, g_d[1].addr);
    /* alive again, but as a later incarnation: B's entry is B's; A's old
     * one (incarnation 5) would be taken */
    member_row(g_d[0].addr, "alive 6 1");
    g_d[0].inc = 6;
    do_register(&g_d[0], &k, &r);
    assert_string_equal(r.e.silo, g_d[1].addr); /* B lives: not taken */
    /* B restarted (row at incarnation 8): its entry at 7 is taken over */
    member_row(g_d[1].addr, "alive 8 1");
    do_register(&g_d[0], &k, &r);
    assert_string_equal(r.e.silo, g_d[0].addr);
    assert_true(r.e.incarnation == 6);
    /* A's row gone from the table (Redis lost it): taken over too */
    g_d[1].inc = 8;
    member_row(g_d[0].addr, NULL);
    do_register(&g_d[1], &k, &r);
    assert_string_equal(r.e.silo, g_d[1].addr);
    snprintf(row, sizeof row, "%s 8 ", g_d[1].addr);
    char v[128];
    stored("t", v, sizeof v);
    assert_true(!strncmp(v, row, strlen(row)));
}

static void test_not_a_member(void **state)
{
    (void)state;
    g_nd = 1;
    add_dir(0, 5, false); /* its row says dead */
    qk_actor_key k = key_of("n", 1);
    req r;
    do_register(&g_d[0], &k, &r);
    assert_int_equal(r.err, QUARK_EUNAVAILABLE);
    assert_non_null(strstr(r.msg, "not alive in the member table"));
    char v[128];
    stored("n", v, sizeof v);
    assert_string_equal(v, "");
}

/* Redis lost the member table moments ago (membership_redis.c set
 * lost_until ahead): no registration until then, with a message to retry. */
static void test_lost_table(void **state)
{
    (void)state;
    g_nd = 1;
    add_dir(0, 5, true);
    redisReply *t = rs_command(&g_rs, "TIME");
    long long now = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000;
    freeReplyObject(t);
    redisReply *h = rs_command(&g_rs, "HSET %s/members lost_until %lld", g_cluster, now + 60000);
    freeReplyObject(h);
    qk_actor_key k = key_of("l", 1);
    req r;
    do_register(&g_d[0], &k, &r);
    assert_int_equal(r.err, QUARK_EUNAVAILABLE);
    assert_non_null(strstr(r.msg, "lost the member table"));
    char v[128];
    stored("l", v, sizeof v);
    assert_string_equal(v, "");
    h = rs_command(&g_rs, "HSET %s/members lost_until %lld", g_cluster, now - 1);
    freeReplyObject(h);
    do_register(&g_d[0], &k, &r);
    assert_int_equal(r.err, QUARK_OK);
    assert_string_equal(r.e.silo, g_d[0].addr);
}

/* A silo restarted at the same address (its row alive at a later
 * incarnation): its old entries are fenced until the old process's lease
 * surely ended (fence/<addr>, written by the join), then taken over. */
static void test_fenced_restart(void **state)
{
    (void)state;
    g_nd = 2;
    add_dir(0, 5, true);
    add_dir(1, 7, true);
    qk_actor_key k = key_of("f", 1);
    req r;
    do_register(&g_d[1], &k, &r);
    assert_string_equal(r.e.silo, g_d[1].addr);
    redisReply *t = rs_command(&g_rs, "TIME");
    long long now = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000;
    freeReplyObject(t);
    member_row(g_d[1].addr, "alive 8 1"); /* B restarted as 8 */
    redisReply *h = rs_command(&g_rs, "HSET %s/members fence/%s %s", g_cluster, g_d[1].addr,
                               "7 9999999999999");
    freeReplyObject(h);
    do_register(&g_d[0], &k, &r);
    assert_int_equal(r.err, QUARK_EUNAVAILABLE);
    assert_non_null(strstr(r.msg, "restarted moments ago"));
    char v[128], row[64];
    stored("f", v, sizeof v);
    snprintf(row, sizeof row, "%s 7 ", g_d[1].addr);
    assert_true(!strncmp(v, row, strlen(row))); /* still B's old entry */
    char fence[64];
    snprintf(fence, sizeof fence, "7 %lld", now - 1);
    h = rs_command(&g_rs, "HSET %s/members fence/%s %s", g_cluster, g_d[1].addr, fence);
    freeReplyObject(h);
    do_register(&g_d[0], &k, &r);
    assert_int_equal(r.err, QUARK_OK);
    assert_string_equal(r.e.silo, g_d[0].addr);
}

static void test_odd_ids(void **state)
{
    (void)state;
    g_nd = 2;
    add_dir(0, 5, true);
    add_dir(1, 7, true);
    char bytes[256];
    for (int i = 0; i < 256; i++)
        bytes[i] = (char)i;
    const struct { const char *id; size_t len; } ids[] = {
        {"a/b", 3}, {"a", 1}, {"b", 1}, {"with space", 10}, {"#?\\", 3}, {bytes, 256},
        {bytes, 1},
    };
    /* silo i % 2 registers each: every id its own entry */
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        qk_actor_key k = key_of(ids[i].id, ids[i].len);
        req r;
        do_register(&g_d[i % 2], &k, &r);
        assert_int_equal(r.err, QUARK_OK);
        assert_string_equal(r.e.silo, g_d[i % 2].addr);
    }
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        qk_actor_key k = key_of(ids[i].id, ids[i].len);
        req r;
        do_lookup(&g_d[0], &k, &r);
        assert_string_equal(r.e.silo, g_d[i % 2].addr);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_register_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_racing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unregister, setup, teardown),
        cmocka_unit_test_setup_teardown(test_takeover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_member, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fenced_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_odd_ids, setup, teardown),
    };
    return rs_run_group(&g_rs, g_spec, sizeof g_spec, "directory_redis", tests,
                        sizeof tests / sizeof tests[0]);
}
