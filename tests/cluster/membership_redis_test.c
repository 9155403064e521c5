/*
 * membership_redis_test.c - the Redis membership provider
 * (cluster/membership_redis.c) against a real redis-server, driven through
 * its ops table the way the cluster module drives it: providers on one libuv
 * loop, ticked every few milliseconds, their views collected. The cases
 * follow Orleans' MembershipTableTestsBase and the field's failures:
 *   racing_joins     20 silos join at once: all admitted, version 20, every
 *                    one sees the same 20 members at version 20
 *   racing_leaves    19 of them leave at once (19 threads): version 39, the
 *                    last one alone in its view
 *   death            a silo whose ticks stop is declared dead by the others'
 *                    votes; when it ticks again it finds itself dead and joins
 *                    as a later incarnation
 *   one_vote         a silent row is not declared dead while a second fresh
 *                    silo exists that did not vote; it is once that one is
 *                    silent too
 *   prune            a left row goes after prune_ms, with a version bump
 *   old_incarnation  a row of a later incarnation of this address: the silo
 *                    joins above it, never under the old one
 *   redis_restart    Redis killed and restarted without persistence: every
 *                    silo registers again by itself
 *   script_flush     SCRIPT FLUSH mid-run: the scripts go again by EVAL, and
 *                    a death is still declared
 */
#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

#include "testutil.h"
#include "storage/redis_server.h"
#include "cluster/membership_redis.h"

enum { MAXP = 20, HB_MS = 100, FT_MS = 600 };

typedef struct prov {
    void *self;
    char addr[32];
    qk_view *view;               /* the last one it published */
    bool ticking;
    bool started;
} prov;

static redis_server g_rs;
static uv_loop_t g_loop;
static prov g_p[MAXP];
static int g_n;
static char g_cluster[64];
static char g_spec[64];

static void changed(void *arg, qk_view *v)
{
    prov *p = arg;
    qk_view_unref(p->view);
    p->view = v;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    for (int i = 0; i < g_n; i++)
        if (g_p[i].ticking)
            qk_membership_redis.tick(g_p[i].self, uv_now(&g_loop));
}

static uv_timer_t g_timer;

/* Run the loop until cond holds or ms passed. */
#define RUN_UNTIL(cond, ms)                                             \
    ({                                                                  \
        uint64_t end_ = tu_now_ms() + (ms);                             \
        while (!(cond) && tu_now_ms() < end_)                           \
            uv_run(&g_loop, UV_RUN_ONCE);                               \
        (cond);                                                         \
    })

static void add_prov(int i, uint32_t prune_ms)
{
    prov *p = &g_p[i];
    memset(p, 0, sizeof *p);
    snprintf(p->addr, sizeof p->addr, "10.0.0.%d:%d", i + 1, 7000 + i);
    qk_redis_members_cfg cfg = {.spec = g_spec, .cluster_id = g_cluster, .self_addr = p->addr,
                                .heartbeat_ms = HB_MS, .failure_timeout_ms = FT_MS,
                                .prune_ms = prune_ms};
    TU_OK(qk_membership_redis_new(&cfg, &p->self));
    qk_membership_env env = {.arg = p, .changed = changed, .loop = &g_loop};
    TU_OK(qk_membership_redis.start(p->self, &env));
    p->started = p->ticking = true;
}

static int setup(void **state)
{
    (void)state;
    static int n;
    snprintf(g_cluster, sizeof g_cluster, "mtest%d-%d", (int)getpid(), ++n);
    uv_loop_init(&g_loop);
    uv_timer_init(&g_loop, &g_timer);
    uv_timer_start(&g_timer, on_tick, 5, 5);
    g_n = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < g_n; i++) {
        if (g_p[i].started)
            qk_membership_redis.stop(g_p[i].self);
    }
    uv_close((uv_handle_t *)&g_timer, NULL);
    uv_run(&g_loop, UV_RUN_DEFAULT);
    for (int i = 0; i < g_n; i++) {
        qk_membership_redis.destroy(g_p[i].self);
        qk_view_unref(g_p[i].view);
        g_p[i].view = NULL;
    }
    uv_loop_close(&g_loop);
    return 0;
}

static bool sees(int i, size_t n, uint64_t version)
{
    const qk_view *v = g_p[i].view;
    return v && v->n == n && (!version || v->version == version) && v->self >= 0;
}

static bool all_see(int from, int to, size_t n, uint64_t version)
{
    for (int i = from; i < to; i++)
        if (!sees(i, n, version))
            return false;
    return true;
}

static long long hget_int(const char *field)
{
    char key[128];
    snprintf(key, sizeof key, "%s/members", g_cluster);
    redisReply *r = rs_command(&g_rs, "HGET %s %s", key, field);
    long long v = r && r->type == REDIS_REPLY_STRING ? atoll(r->str) : -1;
    if (r)
        freeReplyObject(r);
    return v;
}

/* The row of addr ("" if none), into out. */
static void row_of(const char *addr, char *out, size_t cap)
{
    char key[128];
    snprintf(key, sizeof key, "%s/members", g_cluster);
    redisReply *r = rs_command(&g_rs, "HGET %s silo/%s", key, addr);
    snprintf(out, cap, "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
    if (r)
        freeReplyObject(r);
}

static void join_n(int n)
{
    g_n = n;
    for (int i = 0; i < n; i++)
        add_prov(i, 0);
}

static void test_racing_joins(void **state)
{
    (void)state;
    join_n(MAXP);
    assert_true(RUN_UNTIL(all_see(0, MAXP, MAXP, MAXP), 20000));
    assert_int_equal(hget_int("version"), MAXP);
    assert_int_equal(hget_int("lost_until"), -1); /* a new cluster holds nothing back */
    for (int i = 0; i < MAXP; i++) {
        char row[128];
        row_of(g_p[i].addr, row, sizeof row);
        assert_true(!strncmp(row, "alive ", 6));
        /* every view lists every silo with the incarnation it joined as */
        for (int j = 0; j < MAXP; j++) {
            int k = qk_view_find(g_p[i].view, g_p[j].addr);
            assert_true(k >= 0);
            assert_true(g_p[i].view->members[k].incarnation ==
                        qk_membership_redis.incarnation(g_p[j].self));
        }
    }
}

static atomic_int g_left; /* leave() calls that returned */

static void *leave_main(void *arg)
{
    qk_membership_redis.leave(arg);
    atomic_fetch_add(&g_left, 1);
    return NULL;
}

static void test_racing_leaves(void **state)
{
    (void)state;
    join_n(MAXP);
    assert_true(RUN_UNTIL(all_see(0, MAXP, MAXP, MAXP), 20000));
    pthread_t th[MAXP];
    atomic_store(&g_left, 0);
    for (int i = 1; i < MAXP; i++)
        assert_int_equal(pthread_create(&th[i], NULL, leave_main, g_p[i].self), 0);
    /* leave() returns once its LEAVE was answered: the loop must run */
    assert_true(RUN_UNTIL(atomic_load(&g_left) == MAXP - 1, 20000));
    assert_true(RUN_UNTIL(hget_int("version") == 2 * MAXP - 1 && sees(0, 1, 2 * MAXP - 1),
                          20000));
    for (int i = 1; i < MAXP; i++) {
        pthread_join(th[i], NULL);
        g_p[i].ticking = false;
        char row[128];
        row_of(g_p[i].addr, row, sizeof row);
        assert_true(!strncmp(row, "left ", 5));
    }
}

static void test_death(void **state)
{
    (void)state;
    join_n(3);
    assert_true(RUN_UNTIL(all_see(0, 3, 3, 0), 10000));
    uint64_t inc = qk_membership_redis.incarnation(g_p[2].self);
    g_p[2].ticking = false; /* silent from now on */
    uint64_t t0 = tu_now_ms();
    assert_true(RUN_UNTIL(all_see(0, 2, 2, 0), 10000));
    uint64_t took = tu_now_ms() - t0;
    printf("# death: silent silo dropped from both views after %llu ms (failure timeout %d)\n",
           (unsigned long long)took, FT_MS);
    assert_true(took >= FT_MS);
    char row[128];
    row_of(g_p[2].addr, row, sizeof row);
    assert_true(!strncmp(row, "dead ", 5));
    /* It comes back: it reads itself dead, and joins as a later incarnation. */
    g_p[2].ticking = true;
    assert_true(RUN_UNTIL(all_see(0, 3, 3, 0), 10000));
    assert_true(qk_membership_redis.incarnation(g_p[2].self) > inc);
    int k = qk_view_find(g_p[0].view, g_p[2].addr);
    assert_true(k >= 0 && g_p[0].view->members[k].incarnation > inc);
}

/* Write a row and heartbeat for a silo that is not a provider. */
static void fake_row(const char *addr, bool fresh)
{
    char key[128];
    snprintf(key, sizeof key, "%s/members", g_cluster);
    redisReply *t = rs_command(&g_rs, "TIME");
    assert_non_null(t);
    long long now = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000;
    freeReplyObject(t);
    char row[64], hb[64];
    snprintf(row, sizeof row, "alive 5 %lld", now);
    snprintf(hb, sizeof hb, "5 %lld", fresh ? now : 1);
    redisReply *r = rs_command(&g_rs, "HSET %s silo/%s %s alive/%s %s", key, addr, row, addr, hb);
    assert_non_null(r);
    freeReplyObject(r);
}

static void refresh_fake(const char *addr)
{
    fake_row(addr, true);
}

static void test_one_vote(void **state)
{
    (void)state;
    join_n(1);
    fake_row("10.9.9.1:1", true);  /* Y: fresh, but it never votes */
    fake_row("10.9.9.2:2", false); /* X: silent */
    /* For 3 failure timeouts: X keeps its row (one vote of two needed). */
    uint64_t end = tu_now_ms() + 3 * FT_MS;
    while (tu_now_ms() < end) {
        refresh_fake("10.9.9.1:1");
        RUN_UNTIL(false, 50);
        char row[128];
        row_of("10.9.9.2:2", row, sizeof row);
        assert_true(!strncmp(row, "alive ", 6));
    }
    char key[128];
    snprintf(key, sizeof key, "%s/members", g_cluster);
    redisReply *r = rs_command(&g_rs, "HGET %s votes/10.9.9.2:2", key);
    assert_true(r && r->type == REDIS_REPLY_STRING && strstr(r->str, g_p[0].addr));
    freeReplyObject(r);
    /* Y falls silent too: one fresh silo is left, its vote is enough. */
    char row[128];
    assert_true(RUN_UNTIL((row_of("10.9.9.2:2", row, sizeof row), !strncmp(row, "dead ", 5)),
                          10000));
    assert_true(RUN_UNTIL((row_of("10.9.9.1:1", row, sizeof row), !strncmp(row, "dead ", 5)),
                          10000));
    assert_true(RUN_UNTIL(sees(0, 1, 0), 5000));
}

static void test_prune(void **state)
{
    (void)state;
    g_n = 2;
    add_prov(0, 500);
    add_prov(1, 500);
    assert_true(RUN_UNTIL(all_see(0, 2, 2, 0), 10000));
    pthread_t th;
    atomic_store(&g_left, 0);
    assert_int_equal(pthread_create(&th, NULL, leave_main, g_p[1].self), 0);
    assert_true(RUN_UNTIL(atomic_load(&g_left) == 1, 10000));
    pthread_join(th, NULL);
    char row[128];
    row_of(g_p[1].addr, row, sizeof row);
    assert_true(!strncmp(row, "left ", 5));
    g_p[1].ticking = false;
    long long v = hget_int("version");
    assert_true(RUN_UNTIL((row_of(g_p[1].addr, row, sizeof row), row[0] == '\0'), 10000));
    assert_true(hget_int("version") == v + 1);
    char key[128];
    snprintf(key, sizeof key, "%s/members", g_cluster);
    redisReply *r = rs_command(&g_rs, "HEXISTS %s alive/%s", key, g_p[1].addr);
    assert_true(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0);
    freeReplyObject(r);
}

static void test_old_incarnation(void **state)
{
    (void)state;
    /* A later incarnation of 10.0.0.1:7000 than any wall clock gives. */
    char key[128];
    snprintf(key, sizeof key, "%s/members", g_cluster);
    redisReply *r = rs_command(&g_rs, "HSET %s silo/10.0.0.1:7000 %s", key,
                               "dead 9000000000000 1");
    freeReplyObject(r);
    join_n(1);
    assert_true(RUN_UNTIL(sees(0, 1, 0), 10000));
    assert_true(qk_membership_redis.incarnation(g_p[0].self) > 9000000000000ull);
    char row[128];
    row_of(g_p[0].addr, row, sizeof row);
    assert_true(!strncmp(row, "alive 9000000000001 ", 20));
}

/* A join that replaces an alive row of an older incarnation (a restart at
 * the same address) fences the old one's directory entries until its last
 * heartbeat + the failure timeout; one that replaces a dead row does not. */
static void test_fence(void **state)
{
    (void)state;
    char key[128];
    snprintf(key, sizeof key, "%s/members", g_cluster);
    redisReply *t = rs_command(&g_rs, "TIME");
    long long now = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000;
    freeReplyObject(t);
    redisReply *r = rs_command(&g_rs, "HSET %s silo/10.0.0.1:7000 %s alive/10.0.0.1:7000 5%s%lld"
                               " silo/10.0.0.2:7001 %s", key, "alive 5 1", " ", now - 100,
                               "dead 6 1");
    freeReplyObject(r);
    join_n(2);
    assert_true(RUN_UNTIL(all_see(0, 2, 2, 0), 10000));
    r = rs_command(&g_rs, "HGET %s fence/10.0.0.1:7000", key);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    char want[64];
    snprintf(want, sizeof want, "5 %lld", now - 100 + FT_MS);
    assert_string_equal(r->str, want);
    freeReplyObject(r);
    r = rs_command(&g_rs, "HGET %s fence/10.0.0.2:7001", key);
    assert_int_equal(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);
}

static void test_redis_restart(void **state)
{
    (void)state;
    join_n(3);
    assert_true(RUN_UNTIL(all_see(0, 3, 3, 0), 10000));
    uint64_t inc[3];
    for (int i = 0; i < 3; i++)
        inc[i] = qk_membership_redis.incarnation(g_p[i].self);
    int port = g_rs.port;
    rs_kill(&g_rs, SIGKILL);
    RUN_UNTIL(false, 1000); /* the silos find it gone, keep their views */
    assert_true(all_see(0, 3, 3, 0));
    assert_int_equal(rs_start(&g_rs, port), 0);
    /* Nothing is left in Redis: each registers again, as a new incarnation. */
    char row[3][128];
    assert_true(RUN_UNTIL((row_of(g_p[0].addr, row[0], 128), row_of(g_p[1].addr, row[1], 128),
                           row_of(g_p[2].addr, row[2], 128),
                           row[0][0] && row[1][0] && row[2][0] && all_see(0, 3, 3, 3)),
                          15000));
    for (int i = 0; i < 3; i++)
        assert_true(qk_membership_redis.incarnation(g_p[i].self) > inc[i]);
    /* They said their rows had vanished from a table just created: the
     * directory's registrations wait a failure timeout from then. */
    long long created = hget_int("created"), lost_until = hget_int("lost_until");
    assert_true(created > 0);
    assert_true(lost_until > created && lost_until <= created + 2 * FT_MS);
}

static void test_script_flush(void **state)
{
    (void)state;
    join_n(2);
    assert_true(RUN_UNTIL(all_see(0, 2, 2, 0), 10000));
    redisReply *r = rs_command(&g_rs, "SCRIPT FLUSH");
    assert_true(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    RUN_UNTIL(false, 3 * HB_MS);
    assert_true(all_see(0, 2, 2, 0));
    g_p[1].ticking = false;
    assert_true(RUN_UNTIL(sees(0, 1, 0), 10000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_racing_joins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_racing_leaves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_death, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_vote, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_incarnation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_script_flush, setup, teardown),
    };
    return rs_run_group(&g_rs, g_spec, sizeof g_spec, "membership_redis", tests,
                        sizeof tests / sizeof tests[0]);
}
