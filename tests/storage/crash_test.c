/*
 * crash_test.c - "an acknowledged call is never lost", across real
 * processes: counter-silo with a durable storage runs DurableCounter under
 * pipelined load (several actors, many calls in flight each, over TCP and
 * gRPC), is killed with SIGKILL at a random moment, and is started again on
 * the same storage. For every actor, the value it then has must count every
 * increment that was acknowledged and none that was never sent:
 *
 *   acknowledged <= final - before <= sent,  and every value a reply
 *   carried <= final.
 *
 * Storages: a SQLite file, and a real redis-server (which itself keeps
 * running: what is tested is the silo's crash).
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "redis_server.h"
#include "silo_proc.h"
#include "counter_actor.h"

static char g_dir[256];
static pid_t g_pid; /* the silo running, for the teardown */
static redis_server g_rs; /* the Redis cases' server */

static void silo_start(silo_proc *sp, const char *storage, int port)
{
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    char *argv[] = {(char *)COUNTER_SILO, "--listen", listen, "--workers", "2",
                    "--storage", (char *)storage, NULL};
    silo_proc_start(sp, argv);
    g_pid = sp->pid;
}

static void silo_kill(silo_proc *sp, int sig)
{
    silo_proc_stop(sp, sig);
    g_pid = 0;
}

static int teardown(void **state)
{
    (void)state;
    rs_stop(&g_rs); /* a failed assertion leaves its test early */
    if (g_pid) {
        kill(g_pid, SIGKILL);
        waitpid(g_pid, NULL, 0);
        g_pid = 0;
    }
    return 0;
}

static quark_client *client_for(int port, quark_transport tr)
{
    quark_client_opts co;
    quark_client_opts_init(&co);
    char cs[64];
    snprintf(cs, sizeof cs, "127.0.0.1:%d", port);
    co.connection_string = cs;
    co.transport = tr;
    quark_client *c;
    TU_OK(quark_client_create(&co, &c));
    TU_OK(quark_client_connect(c));
    return c;
}

enum { ACTORS = 8, WINDOW = 32 };

typedef struct actor_load {
    quark_ref *ref;
    _Atomic long sent, acked, failed, inflight;
    _Atomic long max_value;
} actor_load;

static actor_load g_load[ACTORS];
static atomic_bool g_feeding;

static void on_inc(quark_err err, const char *msg, const Quark__Examples__CounterValue *v,
                   void *arg)
{
    (void)msg;
    actor_load *a = arg;
    if (err == QUARK_OK) {
        long cur = atomic_load(&a->max_value);
        while (v->value > cur && !atomic_compare_exchange_weak(&a->max_value, &cur, v->value))
            ;
        atomic_fetch_add(&a->acked, 1);
    } else {
        atomic_fetch_add(&a->failed, 1);
    }
    atomic_fetch_sub(&a->inflight, 1);
}

/* Keep WINDOW increments in flight on every actor until told to stop. */
static void *feeder(void *arg)
{
    (void)arg;
    Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    req.delta = 1;
    while (atomic_load(&g_feeding)) {
        int issued = 0;
        for (int i = 0; i < ACTORS; i++) {
            actor_load *a = &g_load[i];
            while (atomic_load(&a->inflight) < WINDOW && atomic_load(&g_feeding)) {
                atomic_fetch_add(&a->inflight, 1);
                atomic_fetch_add(&a->sent, 1);
                if (quark_examples_CounterActor_Increment_async(a->ref, &req, on_inc, a) !=
                    QUARK_OK) {
                    atomic_fetch_sub(&a->inflight, 1);
                    atomic_fetch_sub(&a->sent, 1); /* refused at once: never sent */
                    break;
                }
                issued++;
            }
        }
        if (!issued)
            usleep(100);
    }
    return NULL;
}

static int64_t get_value(quark_ref *r)
{
    Quark__Examples__GetRequest req = QUARK__EXAMPLES__GET_REQUEST__INIT;
    Quark__Examples__CounterValue *v = NULL;
    TU_OK(quark_examples_CounterActor_Get(r, &req, &v));
    int64_t x = v->value;
    quark_msg_free(v);
    return x;
}

static void refs(quark_client *c, quark_ref **out, const char *round_tag)
{
    for (int i = 0; i < ACTORS; i++) {
        char id[32];
        snprintf(id, sizeof id, "crash-%s-%d", round_tag, i);
        TU_OK(quark_ref_new(c, &quark_examples_CounterActor_interface, DURABLE_COUNTER_TYPE, id,
                            &out[i]));
        /* Calls made while the client reconnects to the killed silo wait
         * for it until their deadline: keep that short. */
        quark_ref_set_deadline(out[i], 3000);
    }
}

/* One round: load, SIGKILL at a random moment, restart, check. */
static void crash_round(const char *storage, quark_transport tr, const char *tag, int round)
{
    silo_proc sp;
    silo_start(&sp, storage, 0);
    quark_client *c = client_for(sp.port, tr);
    quark_ref *r[ACTORS];
    refs(c, r, tag);
    int64_t before[ACTORS];
    for (int i = 0; i < ACTORS; i++) {
        before[i] = get_value(r[i]);
        g_load[i] = (actor_load){.ref = r[i]};
    }
    atomic_store(&g_feeding, true);
    pthread_t th;
    pthread_create(&th, NULL, feeder, NULL);
    /* Let it run until something was acknowledged, then a random while. */
    assert_true(TU_WAIT_UNTIL(atomic_load(&g_load[ACTORS - 1].acked) > 0, 30000));
    unsigned ms = 50 + (unsigned)(rand() % 700);
    tu_sleep_ms(ms);
    silo_kill(&sp, SIGKILL);
    atomic_store(&g_feeding, false);
    pthread_join(th, NULL);
    /* Every call in flight ends (the connection is gone; calls made after
     * the kill at their deadline). */
    for (int i = 0; i < ACTORS; i++)
        assert_true(TU_WAIT_UNTIL(atomic_load(&g_load[i].inflight) == 0, 60000));
    for (int i = 0; i < ACTORS; i++)
        quark_ref_free(r[i]);
    quark_client_free(c);

    silo_start(&sp, storage, sp.port);
    c = client_for(sp.port, tr);
    refs(c, r, tag);
    long total_acked = 0;
    for (int i = 0; i < ACTORS; i++) {
        actor_load *a = &g_load[i];
        int64_t after = get_value(r[i]);
        long acked = atomic_load(&a->acked), sent = atomic_load(&a->sent);
        total_acked += acked;
        if (after - before[i] < acked || after - before[i] > sent ||
            atomic_load(&a->max_value) > after)
            fail_msg("%s round %d (killed after %u ms), actor %d: before %lld, after %lld, "
                     "acknowledged %ld, sent %ld, largest value acknowledged %ld", tag, round,
                     ms, i, (long long)before[i], (long long)after, acked, sent,
                     atomic_load(&a->max_value));
        quark_ref_free(r[i]);
    }
    printf("  %s round %d: killed after %u ms; %ld increments acknowledged, all there\n", tag,
           round, ms, total_acked);
    quark_client_free(c);
    silo_kill(&sp, SIGTERM);
}

static void sqlite_kill9(void **state)
{
    (void)state;
    char spec[400];
    snprintf(spec, sizeof spec, "sqlite:%s/crash.db", g_dir);
    for (int round = 0; round < 3; round++)
        crash_round(spec, QUARK_TRANSPORT_TCP, "sqlite-tcp", round);
    for (int round = 0; round < 2; round++)
        crash_round(spec, QUARK_TRANSPORT_GRPC, "sqlite-grpc", round);
}

static void redis_kill9(void **state)
{
    (void)state;
    assert_int_equal(rs_start(&g_rs, 0), 0);
    char spec[64];
    snprintf(spec, sizeof spec, "redis://127.0.0.1:%d", g_rs.port);
    for (int round = 0; round < 3; round++)
        crash_round(spec, QUARK_TRANSPORT_TCP, "redis-tcp", round);
    for (int round = 0; round < 2; round++)
        crash_round(spec, QUARK_TRANSPORT_GRPC, "redis-grpc", round);
}

int main(void)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    snprintf(g_dir, sizeof g_dir, "/tmp/quark-crash-test-XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(sqlite_kill9, teardown),
        cmocka_unit_test_teardown(redis_kill9, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return failed;
}
