/*
 * remote_test.c - remote calls across real processes and sockets: a
 * counter-silo child process, the cluster client over Quark's TCP protocol
 * and over gRPC (every case runs with both).
 * Blocking and async calls, many client threads, errors a user can act on,
 * hostile input that must not hurt other clients, a silo killed with -9 and
 * restarted (the client reconnects by itself), and a graceful SIGTERM.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../testutil.h"
#include "../silo_proc.h"
#include "../raw_tcp.h"
#include "counter_actor.h"
#include "quark/actor_service.pb-c.h"
#include "quark/cluster.h"

extern char **environ;

static quark_transport g_transport = QUARK_TRANSPORT_TCP; /* each group runs with both */


static const char *g_silo_extra; /* one extra "--flag=value"-style pair, or NULL */
static const char *g_silo_extra_val;

/* Silos still running: a failed assertion leaves its test early, and the
 * teardown stops what the test did not (a left-over silo would hold ctest's
 * output pipe open and outlive the run). */
#define MAX_LIVE 16
static pid_t g_live[MAX_LIVE];

static void live_add(pid_t p)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (!g_live[i]) {
            g_live[i] = p;
            return;
        }
}

static void live_remove(pid_t p)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (g_live[i] == p)
            g_live[i] = 0;
}

static int kill_leftovers(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_LIVE; i++) {
        if (g_live[i]) {
            kill(g_live[i], SIGKILL);
            waitpid(g_live[i], NULL, 0);
            g_live[i] = 0;
        }
    }
    g_silo_extra = g_silo_extra_val = NULL;
    return 0;
}

/* Start counter-silo and wait for its "listening" line (port 0: it picks). */
static void silo_start(silo_proc *sp, int port, const char *cluster)
{
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    char *argv[] = {(char *)COUNTER_SILO, "--listen", listen, "--cluster-id", (char *)cluster,
                    "--workers", "2", (char *)g_silo_extra, (char *)g_silo_extra_val, NULL};
    silo_proc_start(sp, argv);
    live_add(sp->pid);
}

static int silo_stop(silo_proc *sp, int sig)
{
    int status = silo_proc_stop(sp, sig);
    live_remove(sp->pid);
    return status;
}

static int g_dead_port; /* when set, listed first: a silo that is not there */

static uint32_t g_client_poll_us = UINT32_MAX; /* UINT32_MAX: the default */

static quark_client *client_for(int port, const char *cluster, quark_err want)
{
    quark_client_opts co;
    quark_client_opts_init(&co);
    if (g_client_poll_us != UINT32_MAX)
        co.poll_us = g_client_poll_us;
    char cs[64];
    if (g_dead_port)
        snprintf(cs, sizeof cs, "127.0.0.1:%d, 127.0.0.1:%d", g_dead_port, port);
    else
        snprintf(cs, sizeof cs, "127.0.0.1:%d", port);
    co.connection_string = cs;
    co.transport = g_transport;
    co.cluster_id = cluster;
    co.retry.initial_backoff_ms = 20;
    co.retry.max_backoff_ms = 200;
    quark_client *c;
    TU_OK(quark_client_create(&co, &c));
    quark_err rc = quark_client_connect(c);
    if (rc != want)
        fail_msg("connect -> %s (%s), wanted %s", quark_errname(rc), quark_last_error(),
                 quark_errname(want));
    return c;
}

static int64_t inc(quark_ref *r, int64_t d, quark_err *err)
{
    Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    req.delta = d;
    Quark__Examples__CounterValue *v = NULL;
    *err = quark_examples_CounterActor_Increment(r, &req, &v);
    int64_t out = v ? v->value : -1;
    quark_msg_free(v);
    return out;
}

static atomic_int async_done;
static atomic_long async_sum;

static void on_inc(quark_err err, const char *msg, const Quark__Examples__CounterValue *v, void *arg)
{
    (void)msg;
    (void)arg;
    if (err == QUARK_OK)
        atomic_fetch_add(&async_sum, v->value);
    atomic_fetch_add(&async_done, 1);
}

/* Increment refs[0..n) by 1 each with async calls and wait for every answer;
 * returns the sum of the values they answered. */
static long inc_all_async(quark_ref **refs, int n)
{
    atomic_store(&async_done, 0);
    atomic_store(&async_sum, 0);
    Quark__Examples__IncrementRequest one = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    one.delta = 1;
    for (int i = 0; i < n; i++)
        TU_OK(quark_examples_CounterActor_Increment_async(refs[i], &one, on_inc, NULL));
    assert_true(TU_WAIT_UNTIL(atomic_load(&async_done) == n, 20000));
    return atomic_load(&async_sum);
}

/* References to counters "<prefix>-0" .. "<prefix>-<n-1>", and their release. */
static void refs_new(quark_client *c, const char *prefix, quark_ref **refs, int n)
{
    for (int i = 0; i < n; i++) {
        char id[64];
        snprintf(id, sizeof id, "%s-%d", prefix, i);
        TU_OK(quark_examples_CounterActor_ref(c, id, &refs[i]));
    }
}

static void refs_free(quark_ref **refs, int n)
{
    for (int i = 0; i < n; i++)
        quark_ref_free(refs[i]);
}

static void test_calls(void **state)
{
    (void)state;
    silo_proc sp;
    silo_start(&sp, 0, "default");
    quark_client *c = client_for(sp.port, "default", QUARK_OK);
    assert_true(quark_client_is_connected(c));
    quark_ref *r;
    TU_OK(quark_examples_CounterActor_ref(c, "remote-1", &r));
    quark_err err;
    for (int i = 1; i <= 10; i++) {
        assert_int_equal(inc(r, 1, &err), i);
        assert_int_equal(err, QUARK_OK);
    }
    Quark__Examples__IncrementRequest two = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    two.delta = 2;
    atomic_store(&async_done, 0); /* (each transport's group runs this test) */
    atomic_store(&async_sum, 0);
    for (int i = 0; i < 100; i++)
        TU_OK(quark_examples_CounterActor_Increment_async(r, &two, on_inc, NULL));
    assert_true(TU_WAIT_UNTIL(atomic_load(&async_done) == 100, 20000));
    /* replies were 12, 14, ..., 210 in some order */
    assert_int_equal(atomic_load(&async_sum), 100 * (12 + 210) / 2);
    Quark__Examples__GetRequest g = QUARK__EXAMPLES__GET_REQUEST__INIT;
    Quark__Examples__CounterValue *v;
    TU_OK(quark_examples_CounterActor_Get(r, &g, &v));
    assert_int_equal(v->value, 210);
    quark_msg_free(v);

    /* After the silo sat idle longer than a call's deadline, calls still
     * get their whole deadline (the silo's clock is not stale). */
    tu_sleep_ms(1300);
    quark_ref_set_deadline(r, 1000);
    TU_OK(quark_examples_CounterActor_Get(r, &g, &v));
    quark_msg_free(v);
    quark_ref_set_deadline(r, 0);

    /* Errors come back with their message. */
    quark_ref *u;
    TU_OK(quark_ref_new(c, &quark_examples_CounterActor_interface, "shop.Nothing", "1", &u));
    assert_int_equal(quark_examples_CounterActor_Get(u, &g, &v), QUARK_ENOTYPE);
    assert_string_equal(quark_last_error(), "no actor registered for type name 'shop.Nothing'");
    quark_ref_free(u);

    quark_ref_free(r);
    quark_client_free(c);
    assert_int_equal(silo_stop(&sp, SIGTERM), 0); /* graceful: exit 0 */
}

typedef struct worker_arg {
    quark_client *c;
    int idx, errors;
} worker_arg;

static void *thread_main(void *p)
{
    worker_arg *a = p;
    char id[32];
    for (int k = 0; k < 300; k++) {
        snprintf(id, sizeof id, "mt-%d", (k + a->idx) % 16);
        quark_ref *r;
        quark_err err;
        if (quark_examples_CounterActor_ref(a->c, id, &r) != QUARK_OK) {
            a->errors++;
            continue;
        }
        inc(r, 1, &err);
        if (err != QUARK_OK)
            a->errors++;
        quark_ref_free(r);
    }
    return NULL;
}

static void test_many_threads(void **state)
{
    (void)state;
    silo_proc sp;
    silo_start(&sp, 0, "default");
    quark_client *c = client_for(sp.port, "default", QUARK_OK);
    pthread_t th[8];
    worker_arg args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (worker_arg){.c = c, .idx = i};
        pthread_create(&th[i], NULL, thread_main, &args[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].errors, 0);
    }
    long total = 0;
    char id[32];
    for (int i = 0; i < 16; i++) {
        snprintf(id, sizeof id, "mt-%d", i);
        quark_ref *r;
        TU_OK(quark_examples_CounterActor_ref(c, id, &r));
        quark_err err;
        total += inc(r, 0, &err);
        quark_ref_free(r);
    }
    assert_int_equal(total, 8 * 300);
    quark_client_free(c);
    assert_int_equal(silo_stop(&sp, SIGTERM), 0);
}

/* The first listed silo is down: the client moves on to the next. */
static void test_failover_to_next_listed_silo(void **state)
{
    (void)state;
    silo_proc dead, sp;
    silo_start(&dead, 0, "default");
    g_dead_port = dead.port;
    assert_int_equal(silo_stop(&dead, SIGTERM), 0);
    silo_start(&sp, 0, "default");
    quark_client *c = client_for(sp.port, "default", QUARK_OK);
    g_dead_port = 0;
    quark_ref *r;
    TU_OK(quark_examples_CounterActor_ref(c, "failover", &r));
    quark_err err;
    assert_int_equal(inc(r, 3, &err), 3);
    TU_OK(err);
    quark_ref_free(r);
    quark_client_free(c);
    assert_int_equal(silo_stop(&sp, SIGTERM), 0);
}

static void test_connect_errors(void **state)
{
    (void)state;
    silo_proc sp;
    silo_start(&sp, 0, "prod");
    if (g_transport == QUARK_TRANSPORT_TCP) {
        /* TCP refuses another cluster in its handshake... */
        quark_client *c = client_for(sp.port, "staging", QUARK_ECLUSTER);
        assert_non_null(strstr(quark_last_error(), "cluster 'prod', not 'staging'"));
        quark_client_free(c);
    } else {
        /* ...gRPC on the first call (the cluster id is call metadata). */
        quark_client *c = client_for(sp.port, "staging", QUARK_OK);
        quark_ref *r;
        TU_OK(quark_examples_CounterActor_ref(c, "x", &r));
        quark_err err;
        inc(r, 1, &err);
        assert_int_equal(err, QUARK_ECLUSTER);
        assert_non_null(strstr(quark_last_error(), "cluster 'prod', not 'staging'"));
        quark_ref_free(r);
        quark_client_free(c);
    }
    quark_client *c;
    int port = sp.port;
    assert_int_equal(silo_stop(&sp, SIGTERM), 0);
    c = client_for(port, "prod", QUARK_EUNAVAILABLE); /* nobody listens there now */
    assert_non_null(strstr(quark_last_error(), "no silo answered"));
    quark_client_free(c);
}

static void test_bad_input(void **state)
{
    (void)state;
    silo_proc sp;
    silo_start(&sp, 0, "default");
    quark_client *c = client_for(sp.port, "default", QUARK_OK);
    quark_ref *r;
    TU_OK(quark_examples_CounterActor_ref(c, "steady", &r));
    quark_err err;
    inc(r, 1, &err);
    TU_OK(err);
    /* garbage, a truncated frame, a frame claiming 1 GiB, a slow peer that
     * sends half a header and stays: the silo closes or waits, and keeps
     * serving the real client. */
    int g = raw_connect(sp.port);
    assert_true(write(g, "GET / HTTP/1.1\r\n\r\n", 18) == 18);
    int t = raw_connect(sp.port);
    assert_true(write(t, "QRK1\x00\x00\x00\x40\x03", 9) == 9);
    close(t);
    int big = raw_connect(sp.port);
    assert_true(write(big, "QRK1\x3f\xff\xff\xff\x03\x00\x00\x00", 12) == 12);
    int slow = raw_connect(sp.port);
    assert_true(write(slow, "QRK1\x00\x00", 6) == 6);
    for (int i = 2; i <= 50; i++)
        assert_int_equal(inc(r, 1, &err), i);
    close(g);
    close(big);
    close(slow);
    quark_ref_free(r);
    quark_client_free(c);
    assert_int_equal(silo_stop(&sp, SIGTERM), 0);
}

static void test_oversized_request_skipped(void **state)
{
    (void)state; /* TCP framing only; gRPC's oversized case is in the grpc-js interop test */
    silo_proc sp;
    silo_start(&sp, 0, "default");
    int fd = raw_hello(sp.port);
    uint8_t h[16];
    uint8_t type;
    uint64_t id;
    size_t len;
    /* A 5 MiB request (over the 4 MiB limit), then a normal one. */
    size_t big = 5u << 20;
    uint8_t *junk = calloc(1, big);
    put_frame_header(h, 3, 41, (uint32_t)big);
    assert_true(write(fd, h, 16) == 16);
    for (size_t off = 0; off < big;) {
        ssize_t k = write(fd, junk + off, big - off);
        assert_true(k > 0);
        off += (size_t)k;
    }
    free(junk);
    Quark__ActorInvocationRequest rq = QUARK__ACTOR_INVOCATION_REQUEST__INIT;
    rq.actor_id = "after-big";
    rq.actor_type = "quark.examples.CounterActor";
    rq.method_name = "Increment";
    uint8_t args[2] = {0x08, 0x07}; /* delta = 7 */
    rq.serialized_args.data = args;
    rq.serialized_args.len = 2;
    uint8_t body[256];
    size_t bl = quark__actor_invocation_request__pack(&rq, body);
    put_frame_header(h, 3, 42, (uint32_t)bl);
    assert_true(write(fd, h, 16) == 16);
    assert_true(write(fd, body, bl) == (ssize_t)bl);
    /* Arguments that do not decode as an IncrementRequest. */
    uint8_t junk_args[3] = {0x0a, 0x7f, 0x01}; /* field 1 as bytes, length past the end */
    rq.serialized_args.data = junk_args;
    rq.serialized_args.len = sizeof junk_args;
    bl = quark__actor_invocation_request__pack(&rq, body);
    put_frame_header(h, 3, 43, (uint32_t)bl);
    assert_true(write(fd, h, 16) == 16);
    assert_true(write(fd, body, bl) == (ssize_t)bl);
    int seen = 0;
    while (seen < 3) {
        uint8_t *p = read_frame(fd, &type, &id, &len);
        assert_int_equal(type, 4);
        Quark__ActorInvocationResponse *resp = quark__actor_invocation_response__unpack(NULL, len, p);
        assert_non_null(resp);
        if (id == 41) {
            assert_int_equal(resp->error_code, QUARK_ETOOBIG);
            assert_non_null(strstr(resp->error_message, "maximum"));
        } else if (id == 43) {
            assert_int_equal(resp->error_code, QUARK_EBADARGS);
            assert_non_null(strstr(resp->error_message, "could not be decoded"));
        } else {
            assert_int_equal(id, 42);
            assert_int_equal(resp->error_code, 0);
            assert_int_equal(resp->serialized_result.len, 2); /* CounterValue{7} */
            assert_int_equal(resp->serialized_result.data[1], 7);
        }
        quark__actor_invocation_response__free_unpacked(resp, NULL);
        free(p);
        seen++;
    }
    close(fd);
    assert_int_equal(silo_stop(&sp, SIGTERM), 0);
}

/* HELLO with `worker` (1-based, 0 any) and, in the same write, one
 * Increment request (id 7) for `actor`; returns the HELLO_OK's worker and
 * workers, and checks the request is answered on the (moved) connection. */
static void hello_worker_then_call(int port, uint32_t worker, const char *actor,
                                   uint32_t *served_by, uint32_t *workers)
{
    int fd = raw_connect(port);
    Quark__TcpHello hello = QUARK__TCP_HELLO__INIT;
    hello.cluster_id = "default";
    hello.version = 1;
    hello.worker = worker;
    Quark__ActorInvocationRequest rq = QUARK__ACTOR_INVOCATION_REQUEST__INIT;
    rq.actor_id = (char *)actor;
    rq.actor_type = "quark.examples.CounterActor";
    rq.method_name = "Increment";
    uint8_t args[2] = {0x08, 0x05}; /* delta = 5 */
    rq.serialized_args.data = args;
    rq.serialized_args.len = 2;
    uint8_t buf[1024];
    size_t n = 0;
    memcpy(buf, "QRK1", 4);
    n = 4;
    size_t hl = quark__tcp_hello__get_packed_size(&hello);
    put_frame_header(buf + n, 1, 0, (uint32_t)hl);
    n += 16;
    n += quark__tcp_hello__pack(&hello, buf + n);
    size_t rl = quark__actor_invocation_request__get_packed_size(&rq);
    put_frame_header(buf + n, 3, 7, (uint32_t)rl);
    n += 16;
    n += quark__actor_invocation_request__pack(&rq, buf + n);
    assert_true(write(fd, buf, n) == (ssize_t)n); /* the request rides behind the HELLO */
    uint8_t type;
    uint64_t id;
    size_t len;
    uint8_t *p = read_frame(fd, &type, &id, &len);
    assert_int_equal(type, 2);
    Quark__TcpHelloReply *hr = quark__tcp_hello_reply__unpack(NULL, len, p);
    assert_non_null(hr);
    assert_int_equal(hr->error_code, 0);
    *served_by = hr->worker;
    *workers = hr->workers;
    quark__tcp_hello_reply__free_unpacked(hr, NULL);
    free(p);
    p = read_frame(fd, &type, &id, &len);
    assert_int_equal(type, 4);
    assert_int_equal(id, 7);
    Quark__ActorInvocationResponse *resp = quark__actor_invocation_response__unpack(NULL, len, p);
    assert_non_null(resp);
    assert_int_equal(resp->error_code, 0);
    quark__actor_invocation_response__free_unpacked(resp, NULL);
    free(p);
    close(fd);
}

/* A Quark client's blocking calls run on the worker that owns the actor:
 * their sockets ask for that worker (TCP in HELLO, gRPC in SETTINGS), so
 * none is handed between the silo's threads, except over gRPC the first
 * call's, whose socket was opened before the client knew the worker count. */
static void test_blocking_calls_on_the_owner_worker(void **state)
{
    (void)state;
    silo_proc sp;
    silo_start(&sp, 0, "default"); /* --workers 2 */
    int port = sp.port;
    quark_client *c = client_for(port, "default", QUARK_OK);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    quark_silo_status *st0 = NULL, *st1 = NULL;
    TU_OK(quark_status_fetch(addr, "default", 5000, &st0));
    quark_err err;
    for (int i = 0; i < 200; i++) {
        char id[32];
        snprintf(id, sizeof id, "direct-%d", i);
        quark_ref *r;
        TU_OK(quark_examples_CounterActor_ref(c, id, &r));
        assert_int_equal(inc(r, 1, &err), 1);
        TU_OK(err);
        assert_int_equal(inc(r, 1, &err), 2);
        quark_ref_free(r);
    }
    TU_OK(quark_status_fetch(addr, "default", 5000, &st1));
    uint64_t handed = st1->handoffs - st0->handoffs;
    printf("# %s: 400 blocking calls, %llu handed between workers\n",
           g_transport == QUARK_TRANSPORT_TCP ? "tcp" : "grpc", (unsigned long long)handed);
    if (g_transport == QUARK_TRANSPORT_TCP)
        assert_int_equal(handed, 0);
    else
        assert_true(handed <= 1); /* the first socket, opened before the worker count was known */
    quark_status_free(st0);
    quark_status_free(st1);
    quark_client_free(c);
    assert_int_equal(silo_stop(&sp, SIGTERM), 0);
}

/* The silo restarts on the same port with 1 worker, then 3: the client's
 * lanes and direct sockets for workers that no longer exist are let go, and
 * blocking and async calls go on, on the owner worker. */
static void test_silo_changes_worker_count(void **state)
{
    (void)state;
    silo_proc sp;
    silo_start(&sp, 0, "default"); /* --workers 2 */
    int port = sp.port;
    quark_client *c = client_for(port, "default", QUARK_OK);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    const char *counts[] = {"1", "3"};
    for (int round = 0; round <= 2; round++) {
        if (round > 0) {
            assert_int_equal(silo_stop(&sp, SIGTERM), 0);
            g_silo_extra = "--workers";
            g_silo_extra_val = counts[round - 1];
            silo_start(&sp, port, "default");
            g_silo_extra = g_silo_extra_val = NULL;
            assert_true(TU_WAIT_UNTIL(quark_client_is_connected(c), 20000));
        }
        quark_err err;
        quark_ref *refs[64];
        refs_new(c, "wc", refs, 64);
        for (int i = 0; i < 64; i++) {
            /* each round starts from a fresh silo: counters start again */
            assert_int_equal(inc(refs[i], 1, &err), 1);
            TU_OK(err);
        }
        /* Blocking calls asked for the owner worker (async ones may go through
         * another worker while their lane opens). */
        quark_silo_status *st = NULL;
        TU_OK(quark_status_fetch(addr, "default", 5000, &st));
        printf("# round %d (%s workers): %llu handed between workers\n", round,
               round ? counts[round - 1] : "2", (unsigned long long)st->handoffs);
        if (g_transport == QUARK_TRANSPORT_TCP)
            assert_int_equal(st->handoffs, 0);
        quark_status_free(st);
        assert_int_equal(inc_all_async(refs, 64), 64 * 2);
        refs_free(refs, 64);
    }
    quark_client_free(c);
    assert_int_equal(silo_stop(&sp, SIGTERM), 0);
}

/* Async calls (the multiplexed connections) run on the owner worker too
 * once the client's lanes are up: a TCP lane asks for its worker in HELLO, a
 * gRPC lane in its first SETTINGS frame, and the silo hands the socket to
 * that worker before serving it. */
static void test_async_calls_on_the_owner_worker(void **state)
{
    (void)state;
    silo_proc sp;
    silo_start(&sp, 0, "default"); /* --workers 2 */
    quark_client *c = client_for(sp.port, "default", QUARK_OK);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", sp.port);
    quark_ref *refs[64];
    refs_new(c, "lane", refs, 64);
    long calls = 0;
    /* Rounds of 64 async calls: the first ones open the lanes (until then
     * calls go through the worker that reads them, which hands them over);
     * then 20 rounds in a row must hand over none. */
    int settled = 0, rounds = 0;
    while (settled < 20 && rounds++ < 200) {
        quark_silo_status *st0 = NULL, *st1 = NULL;
        TU_OK(quark_status_fetch(addr, "default", 5000, &st0));
        calls++;
        /* every counter has had `calls` increments */
        assert_int_equal(inc_all_async(refs, 64), 64 * calls);
        TU_OK(quark_status_fetch(addr, "default", 5000, &st1));
        settled = st1->handoffs == st0->handoffs ? settled + 1 : 0;
        quark_status_free(st0);
        quark_status_free(st1);
    }
    printf("# %s: %d rounds of 64 async calls, the last %d with no hand-off\n",
           g_transport == QUARK_TRANSPORT_TCP ? "tcp" : "grpc", rounds, settled);
    assert_int_equal(settled, 20);
    assert_true(rounds <= 40); /* the lanes open within the first rounds */
    refs_free(refs, 64);
    quark_client_free(c);
    assert_int_equal(silo_stop(&sp, SIGTERM), 0);
}

/* Threads that never poll (poll_us 0 on the silo and the client: they sleep
 * in epoll/poll at once) and threads that poll longer than usual both carry
 * blocking and async calls. */
static void test_calls_without_and_with_long_polling(void **state)
{
    (void)state;
    const char *polls[] = {"0", "2000"};
    for (int i = 0; i < 2; i++) {
        silo_proc sp;
        g_silo_extra = "--poll-us";
        g_silo_extra_val = polls[i];
        silo_start(&sp, 0, "default");
        g_silo_extra = g_silo_extra_val = NULL;
        g_client_poll_us = (uint32_t)atoi(polls[i]);
        quark_client *c = client_for(sp.port, "default", QUARK_OK);
        g_client_poll_us = UINT32_MAX;
        quark_ref *refs[16];
        quark_err err;
        refs_new(c, "poll", refs, 16);
        for (int k = 0; k < 16; k++) {
            for (int n = 1; n <= 20; n++) {
                assert_int_equal(inc(refs[k], 1, &err), n);
                TU_OK(err);
            }
        }
        assert_int_equal(inc_all_async(refs, 16), 16 * 21);
        refs_free(refs, 16);
        quark_client_free(c);
        assert_int_equal(silo_stop(&sp, SIGTERM), 0);
    }
}

typedef struct sleeper {
    quark_ref *ref;
    quark_err err;
    atomic_int done;
} sleeper;

static void *sleep_call(void *arg)
{
    sleeper *z = arg;
    Quark__Examples__SleepRequest sr = QUARK__EXAMPLES__SLEEP_REQUEST__INIT;
    sr.ms = 4000;
    z->err = quark_examples_CounterActor_Sleep(z->ref, &sr, NULL);
    atomic_store(&z->done, 1);
    return NULL;
}

/* Shard-aware TCP: a HELLO asking for a worker is served by that worker
 * (bytes pipelined behind it included); the client's blocking calls run on
 * their owner worker (the silo hands no call between its threads); an idle
 * direct socket whose silo restarted never turns a call into "outcome
 * unknown"; a disconnect ends a blocking call at once. */
static void test_shard_aware_and_direct_calls(void **state)
{
    (void)state;
    silo_proc sp;
    silo_start(&sp, 0, "default"); /* --workers 2 */
    int port = sp.port;
    uint32_t by, n;
    for (uint32_t want = 1; want <= 2; want++) {
        hello_worker_then_call(port, want, "hello-moved", &by, &n);
        assert_int_equal(n, 2);
        assert_int_equal(by, want);
    }
    hello_worker_then_call(port, 0, "hello-any", &by, &n); /* any worker */
    assert_true(by >= 1 && by <= 2);
    hello_worker_then_call(port, 99, "hello-bad", &by, &n); /* no such worker: served anyway */
    assert_true(by >= 1 && by <= 2);

    quark_client *c = client_for(port, "default", QUARK_OK);
    quark_err err;

    /* The silo restarts while the client's direct sockets sit idle: the
     * next non-idempotent call must not be reported "outcome unknown". */
    quark_ref *r;
    TU_OK(quark_examples_CounterActor_ref(c, "after-restart", &r));
    quark_ref_set_deadline(r, 5000);
    assert_int_equal(inc(r, 1, &err), 1);
    assert_int_equal(silo_stop(&sp, SIGTERM), 0);
    silo_start(&sp, port, "default");
    assert_true(TU_WAIT_UNTIL(quark_client_is_connected(c), 20000));
    for (int i = 1; i <= 20; i++) { /* (state was in memory: it starts again) */
        assert_int_equal(inc(r, 1, &err), i);
        TU_OK(err);
    }

    /* A disconnect ends a blocking call in progress at once: it was sent,
     * so its outcome is unknown (Sleep is not idempotent). */
    sleeper z = {.ref = r};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sleep_call, &z), 0);
    tu_sleep_ms(300);
    uint64_t t0 = tu_now_ms();
    TU_OK(quark_client_disconnect(c));
    assert_true(TU_WAIT_UNTIL(atomic_load(&z.done), 2000));
    pthread_join(th, NULL);
    assert_true(tu_now_ms() - t0 < 2000);
    assert_int_equal(z.err, QUARK_EUNKNOWN);
    /* And the client connects again and calls. */
    TU_OK(quark_client_connect(c));
    assert_int_equal(inc(r, 1, &err), 21);
    quark_ref_free(r);
    quark_client_free(c);
    assert_int_equal(silo_stop(&sp, SIGTERM), 0);
}

/* A peer that sends requests and never reads the answers: the silo stops
 * reading it (its writes start to block), keeps serving others, and once the
 * peer reads again every request gets its answer. */
static void test_backpressure_on_a_peer_that_does_not_read(void **state)
{
    (void)state;
    silo_proc sp;
    /* A small limit, so the pause comes after a few thousand answers however
     * fast or slow (sanitizers) the silo runs. */
    g_silo_extra = "--max-output-buffer";
    g_silo_extra_val = "65536";
    silo_start(&sp, 0, "default");
    g_silo_extra = g_silo_extra_val = NULL;
    int fd = raw_hello(sp.port);
    uint8_t type;
    uint64_t id;
    size_t len;
    /* Small kernel buffers on our side, so they fill soon too. */
    int small = 65536;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    /* One request frame, sent over and over with increasing ids. */
    Quark__ActorInvocationRequest rq = QUARK__ACTOR_INVOCATION_REQUEST__INIT;
    rq.actor_id = "bp";
    rq.actor_type = "quark.examples.CounterActor";
    rq.method_name = "Get";
    uint8_t body[128];
    size_t bl = quark__actor_invocation_request__pack(&rq, body);
    enum { BATCH = 512 };
    size_t fl = 16 + bl;
    uint8_t *batch = malloc(fl * BATCH);
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    uint64_t sent = 0;
    size_t pending = 0, off = 0; /* bytes of the current batch not yet written */
    bool blocked = false;
    uint64_t t0 = tu_now_ms();
    while (!blocked && tu_now_ms() - t0 < 120000) {
        if (pending == 0) {
            for (int i = 0; i < BATCH; i++) {
                put_frame_header(batch + i * fl, 3, sent + (uint64_t)i + 1, (uint32_t)bl);
                memcpy(batch + i * fl + 16, body, bl);
            }
            pending = fl * BATCH;
            off = 0;
        }
        ssize_t k = write(fd, batch + off, pending);
        if (k > 0) {
            off += (size_t)k;
            pending -= (size_t)k;
            if (pending == 0)
                sent += BATCH;
        } else if (errno == EAGAIN) {
            /* Give the silo time to drain what the kernel holds; if writes
             * still block, it stopped reading us. */
            tu_sleep_ms(300);
            k = write(fd, batch + off, pending);
            if (k > 0) {
                off += (size_t)k;
                pending -= (size_t)k;
                if (pending == 0)
                    sent += BATCH;
            } else {
                blocked = true;
            }
        } else {
            fail_msg("write: %s", strerror(errno));
        }
    }
    assert_true(blocked);
    /* Everyone else is still served. */
    quark_client *c = client_for(sp.port, "default", QUARK_OK);
    quark_ref *r;
    TU_OK(quark_examples_CounterActor_ref(c, "other", &r));
    quark_err err;
    assert_int_equal(inc(r, 1, &err), 1);
    TU_OK(err);
    quark_ref_free(r);
    quark_client_free(c);
    /* Finish the partial batch, then read every answer. */
    fcntl(fd, F_SETFL, flags);
    uint64_t answered = 0;
    if (pending) {
        /* The silo resumes reading once we drain: interleave. */
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        while (pending) {
            ssize_t k = write(fd, batch + off, pending);
            if (k > 0) {
                off += (size_t)k;
                pending -= (size_t)k;
                continue;
            }
            uint8_t *p = NULL;
            fcntl(fd, F_SETFL, flags);
            p = read_frame(fd, &type, &id, &len);
            assert_int_equal(type, 4);
            free(p);
            answered++;
            fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        }
        fcntl(fd, F_SETFL, flags);
        sent += BATCH;
    }
    while (answered < sent) {
        uint8_t *p = read_frame(fd, &type, &id, &len);
        assert_int_equal(type, 4);
        free(p);
        answered++;
    }
    printf("# %llu requests pipelined before the silo stopped reading; all answered\n",
           (unsigned long long)sent);
    free(batch);
    close(fd);
    assert_int_equal(silo_stop(&sp, SIGTERM), 0);
}

typedef struct outcome {
    atomic_int done;
    quark_err err;
} outcome;

static void on_sleep(quark_err err, const char *msg, const Quark__Examples__CounterValue *v, void *arg)
{
    (void)msg;
    (void)v;
    outcome *o = arg;
    o->err = err;
    atomic_store(&o->done, 1);
}

static void test_outcome_unknown_not_retried(void **state)
{
    (void)state;
    silo_proc sp;
    silo_start(&sp, 0, "default");
    quark_client *c = client_for(sp.port, "default", QUARK_OK);
    quark_ref *r;
    TU_OK(quark_examples_CounterActor_ref(c, "unknown-outcome", &r));
    Quark__Examples__SleepRequest sr = QUARK__EXAMPLES__SLEEP_REQUEST__INIT;
    sr.ms = 5000;
    outcome o = {0};
    TU_OK(quark_examples_CounterActor_Sleep_async(r, &sr, on_sleep, &o));
    tu_sleep_ms(200); /* it reached the silo and is running */
    silo_stop(&sp, SIGKILL);
    assert_true(TU_WAIT_UNTIL(atomic_load(&o.done), 20000));
    /* Sleep is not @quark.idempotent: it is never sent twice. */
    assert_int_equal(o.err, QUARK_EUNKNOWN);
    /* An unknown method of a known type, over the network. */
    silo_start(&sp, 0, "default");
    quark_client *c2 = client_for(sp.port, "default", QUARK_OK);
    quark_ref *u;
    TU_OK(quark_ref_new(c2, &quark_examples_CounterActor_interface, "quark.examples.CounterActor",
                        "x", &u));
    /* Pretend an older interface: call a method number the silo does not know by name. */
    static quark_method_desc fake_methods[1];
    static quark_interface fake;
    fake = quark_examples_CounterActor_interface;
    fake_methods[0] = fake.methods[0];
    fake_methods[0].name = "Decrement";
    fake.methods = fake_methods;
    fake.n_methods = 1;
    quark_ref *fr;
    TU_OK(quark_ref_new(c2, &fake, "quark.examples.CounterActor", "x", &fr));
    Quark__Examples__IncrementRequest ir = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    assert_int_equal(quark_call(fr, &fake, 0, &ir.base, NULL), QUARK_ENOMETHOD);
    assert_non_null(strstr(quark_last_error(), "has no method 'Decrement'"));
    quark_ref_free(fr);
    quark_ref_free(u);
    quark_client_free(c2);
    assert_int_equal(silo_stop(&sp, SIGTERM), 0);
    quark_ref_free(r);
    quark_client_free(c);
}

static void test_silo_killed_and_back(void **state)
{
    (void)state;
    silo_proc sp;
    silo_start(&sp, 0, "default");
    int port = sp.port;
    quark_client *c = client_for(port, "default", QUARK_OK);
    quark_ref *r;
    TU_OK(quark_examples_CounterActor_ref(c, "phoenix", &r));
    quark_ref_set_deadline(r, 3000);
    quark_err err;
    assert_int_equal(inc(r, 1, &err), 1);
    silo_stop(&sp, SIGKILL);
    /* Calls now fail with a clear error, never past their deadline. */
    uint64_t t0 = tu_now_ms();
    inc(r, 1, &err);
    assert_true(err == QUARK_EUNAVAILABLE || err == QUARK_EUNKNOWN || err == QUARK_ETIMEDOUT);
    assert_true(tu_now_ms() - t0 < 3000 + 2000);
    /* The silo comes back on the same port: the client reconnects by itself.
     * State was in memory, so the counter starts again. */
    silo_start(&sp, port, "default");
    assert_true(TU_WAIT_UNTIL((inc(r, 1, &err), err == QUARK_OK), 20000));
    assert_true(quark_client_is_connected(c));
    quark_ref_free(r);
    quark_client_free(c);
    assert_int_equal(silo_stop(&sp, SIGTERM), 0);
}

typedef struct seen {
    atomic_int events, ended;
    quark_err end;
    int64_t last;
    char endmsg[256];
} seen;

static void on_event(const quark_event *ev, quark_err end, const char *msg, void *arg)
{
    seen *s = arg;
    if (!ev) {
        s->end = end;
        snprintf(s->endmsg, sizeof s->endmsg, "%s", msg ? msg : "");
        atomic_fetch_add(&s->ended, 1);
        return;
    }
    Quark__Examples__CounterValue *v =
        quark__examples__counter_value__unpack(NULL, ev->payload_len, ev->payload);
    if (v)
        s->last = v->value;
    quark__examples__counter_value__free_unpacked(v, NULL);
    atomic_fetch_add(&s->events, 1);
}

static void test_event_stream(void **state)
{
    (void)state;
    silo_proc sp;
    silo_start(&sp, 0, "default");
    quark_client *c = client_for(sp.port, "default", QUARK_OK);
    seen s = {0}, bad = {0}, lost = {0};
    quark_subscription *sub, *sub_bad, *sub_lost;
    TU_OK(quark_subscribe(c, quark_examples_CounterActor_TYPE_NAME, "ev-r", on_event, &s, &sub));
    TU_OK(quark_subscribe(c, "no.Such", "x", on_event, &bad, &sub_bad));
    TU_OK(quark_subscribe(c, quark_examples_CounterActor_TYPE_NAME, "ev-lost", on_event, &lost,
                          &sub_lost));
    assert_true(TU_WAIT_UNTIL(atomic_load(&bad.ended) == 1, 20000));
    assert_int_equal(bad.end, QUARK_ENOTYPE);
    quark_ref *r;
    TU_OK(quark_examples_CounterActor_ref(c, "ev-r", &r));
    quark_err err;
    for (int i = 1; i <= 5; i++)
        assert_int_equal(inc(r, 1, &err), i);
    assert_true(TU_WAIT_UNTIL(atomic_load(&s.events) == 5, 20000));
    assert_int_equal(s.last, 5);
    quark_unsubscribe(sub);
    assert_true(TU_WAIT_UNTIL(atomic_load(&s.ended) == 1, 20000));
    assert_int_equal(s.end, QUARK_ECLOSED);
    /* The silo dies: the live subscription is told it ended. */
    silo_stop(&sp, SIGKILL);
    assert_true(TU_WAIT_UNTIL(atomic_load(&lost.ended) == 1, 20000));
    assert_int_equal(lost.end, QUARK_EUNAVAILABLE);
    assert_non_null(strstr(lost.endmsg, "subscribe again"));
    quark_unsubscribe(sub_lost);
    quark_unsubscribe(sub_bad);
    quark_ref_free(r);
    quark_client_free(c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest common[] = {
        cmocka_unit_test_teardown(test_calls, kill_leftovers),
        cmocka_unit_test_teardown(test_many_threads, kill_leftovers),
        cmocka_unit_test_teardown(test_connect_errors, kill_leftovers),
        cmocka_unit_test_teardown(test_failover_to_next_listed_silo, kill_leftovers),
        cmocka_unit_test_teardown(test_bad_input, kill_leftovers),
        cmocka_unit_test_teardown(test_silo_killed_and_back, kill_leftovers),
        cmocka_unit_test_teardown(test_event_stream, kill_leftovers),
        cmocka_unit_test_teardown(test_outcome_unknown_not_retried, kill_leftovers),
        cmocka_unit_test_teardown(test_blocking_calls_on_the_owner_worker, kill_leftovers),
        cmocka_unit_test_teardown(test_silo_changes_worker_count, kill_leftovers),
        cmocka_unit_test_teardown(test_async_calls_on_the_owner_worker, kill_leftovers),
        cmocka_unit_test_teardown(test_calls_without_and_with_long_polling, kill_leftovers),
    };
    const struct CMUnitTest tcp_only[] = {
        cmocka_unit_test_teardown(test_oversized_request_skipped, kill_leftovers),
        cmocka_unit_test_teardown(test_backpressure_on_a_peer_that_does_not_read, kill_leftovers),
        cmocka_unit_test_teardown(test_shard_aware_and_direct_calls, kill_leftovers),
    };
    int failed = _cmocka_run_group_tests("remote_tcp", common, sizeof common / sizeof common[0], NULL, NULL);
    failed += _cmocka_run_group_tests("remote_tcp_framing", tcp_only,
                                      sizeof tcp_only / sizeof tcp_only[0], NULL, NULL);
    g_transport = QUARK_TRANSPORT_GRPC;
    failed += _cmocka_run_group_tests("remote_grpc", common, sizeof common / sizeof common[0], NULL, NULL);
    return failed;
}
