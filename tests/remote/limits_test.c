/*
 * limits_test.c - a silo (counter-silo, its own process) against clients
 * that flood it, stall, or break the protocol: memory stays bounded by its
 * limits, other clients keep being served, bad connections are closed on
 * time (docs/operations.md, "Limits and timeouts").
 *
 * Nothing here can fill the machine: every flood stops at a time limit, and
 * the silo's RSS is checked against a guard of a few hundred MB as it runs.
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../testutil.h"
#include "../silo_proc.h"
#include "../raw_tcp.h"
#include "counter_actor.h"
#include "quark/actor_service.pb-c.h"
#include "quark/cluster.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define MB (1024L * 1024L)
#define RSS_BOUND (256 * MB) /* the bound for the flood */
/* Where a flood stops, to spare the machine. Under ASan the silo's RSS is
 * mostly the sanitizer's (freed memory in quarantine, shadow pages): the
 * floods still run there, for its checks, but RSS_BOUND and the return of
 * the memory are checked in the plain builds only (the test says so). */
#define RSS_GUARD (TU_SANITIZED_BUILD ? 1024 * MB : RSS_BOUND)

static void check_rss(long peak)
{
    if (TU_SANITIZED_BUILD)
        printf("# sanitizer build: RSS is the sanitizer allocator's, not checked against "
               "%ld MB\n", RSS_BOUND / MB);
    else
        assert_true(peak < RSS_BOUND);
}

static silo_proc g_sp;
static bool g_running;

/* counter-silo with --workers 2 and extra "--flag value" pairs (NULL-ended). */
static void silo_start(const char *const *extra)
{
    /* LIMITS_TEST_SILO: another build's counter-silo, to see an old one fail. */
    const char *prog = getenv("LIMITS_TEST_SILO") ? getenv("LIMITS_TEST_SILO") : COUNTER_SILO;
    char *argv[32] = {(char *)prog, "--listen", "127.0.0.1:0", "--workers", "2"};
    int n = 5;
    for (; extra && *extra && n < 30; extra++)
        argv[n++] = (char *)*extra;
    argv[n] = NULL;
    silo_proc_start(&g_sp, argv);
    g_running = true;
}

static void silo_stop(void)
{
    assert_int_equal(silo_proc_stop(&g_sp, SIGTERM), 0);
    g_running = false;
}

static int teardown(void **state)
{
    (void)state;
    if (g_running) {
        silo_proc_stop(&g_sp, SIGKILL);
        g_running = false;
    }
    return 0;
}

static long silo_rss(void)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)g_sp.pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

/* A client of the silo (keepalive_ms 0: the defaults), not connected yet. */
static quark_client *client_new(quark_transport t, uint32_t keepalive_ms,
                                uint32_t keepalive_timeout_ms)
{
    quark_client_opts co;
    quark_client_opts_init(&co);
    char cs[64];
    snprintf(cs, sizeof cs, "127.0.0.1:%d", g_sp.port);
    co.connection_string = cs;
    co.transport = t;
    if (keepalive_ms) {
        co.keepalive_ms = keepalive_ms;
        co.keepalive_timeout_ms = keepalive_timeout_ms;
        co.default_deadline_ms = 60000;
    }
    quark_client *c;
    TU_OK(quark_client_create(&co, &c));
    return c;
}

static quark_client *client(quark_transport t)
{
    quark_client *c = client_new(t, 0, 0);
    TU_OK(quark_client_connect(c));
    return c;
}

/* PING on a raw connection; its PONG must come back. */
static void ping_pong(int fd)
{
    uint8_t ping[16], type;
    uint64_t id;
    size_t len;
    put_frame_header(ping, 9, 1, 0);
    assert_true(write(fd, ping, 16) == 16);
    free(read_frame(fd, &type, &id, &len));
    assert_int_equal(type, 10); /* PONG */
}

static int64_t inc(quark_ref *r, quark_err *err)
{
    Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    req.delta = 1;
    Quark__Examples__CounterValue *v = NULL;
    *err = quark_examples_CounterActor_Increment(r, &req, &v);
    int64_t out = v ? v->value : -1;
    quark_msg_free(v);
    return out;
}

/* A REQUEST frame (header + ActorInvocationRequest) for method on actor id. */
static size_t request_frame(uint8_t *out, size_t cap, uint64_t fid, const char *id,
                            const char *method, const uint8_t *args, size_t alen)
{
    Quark__ActorInvocationRequest rq = QUARK__ACTOR_INVOCATION_REQUEST__INIT;
    rq.actor_id = (char *)id;
    rq.actor_type = "quark.examples.CounterActor";
    rq.method_name = (char *)method;
    rq.serialized_args.data = (uint8_t *)args;
    rq.serialized_args.len = alen;
    size_t bl = quark__actor_invocation_request__get_packed_size(&rq);
    assert_true(16 + bl <= cap);
    quark__actor_invocation_request__pack(&rq, out + 16);
    put_frame_header(out, 3, fid, (uint32_t)bl);
    return 16 + bl;
}

/* ---- the flood: one connection pipelining calls to one actor ---- */

typedef struct bystander {
    atomic_bool stop;
    atomic_long calls, failures, worst_ms;
    quark_transport transport;
} bystander;

/* Another client, calling its own actor one call at a time meanwhile. */
static void *bystander_main(void *arg)
{
    bystander *b = arg;
    quark_client *c = client(b->transport);
    quark_ref *r;
    TU_OK(quark_examples_CounterActor_ref(c, "bystander", &r));
    while (!atomic_load(&b->stop)) {
        uint64_t t0 = tu_now_ms();
        quark_err err;
        inc(r, &err);
        long el = (long)(tu_now_ms() - t0);
        if (err != QUARK_OK)
            atomic_fetch_add(&b->failures, 1);
        atomic_fetch_add(&b->calls, 1);
        if (el > atomic_load(&b->worst_ms))
            atomic_store(&b->worst_ms, el);
        tu_sleep_ms(20);
    }
    quark_ref_free(r);
    quark_client_free(c);
    return NULL;
}

typedef struct reader {
    int fd;
    atomic_long frames;
    atomic_bool stop;
} reader;

static void *reader_main(void *arg)
{
    reader *rd = arg;
    uint8_t buf[65536];
    for (;;) {
        ssize_t k = read(rd->fd, buf, sizeof buf);
        if (k <= 0)
            break;
        atomic_fetch_add(&rd->frames, k); /* bytes; enough to see it flows */
    }
    return NULL;
}

/* Flood for `secs` seconds over TCP, reading the answers (a thread) or not;
 * returns the silo's peak RSS meanwhile and checks the bystander. */
static void flood_tcp(bool read_answers, int secs)
{
    silo_start(NULL);
    quark_client *warm = client(QUARK_TRANSPORT_TCP);
    quark_ref *wr;
    TU_OK(quark_examples_CounterActor_ref(warm, "warm", &wr));
    quark_err err;
    inc(wr, &err);
    TU_OK(err);
    tu_sleep_ms(200);
    long before = silo_rss();

    bystander b = {.transport = QUARK_TRANSPORT_TCP};
    pthread_t bt;
    pthread_create(&bt, NULL, bystander_main, &b);

    int fd = raw_hello(g_sp.port);
    reader rd = {.fd = fd};
    pthread_t rt;
    if (read_answers)
        pthread_create(&rt, NULL, reader_main, &rd);
    uint8_t args[4] = {0x08, 0x01}; /* IncrementRequest{delta: 1} */
    enum { BATCH = 1024 };
    uint8_t *batch = malloc(BATCH * 96);
    size_t bl = 0;
    for (int i = 0; i < BATCH; i++)
        bl += request_frame(batch + bl, 96, (uint64_t)i + 1, "flood", "Increment", args, 2);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    long peak = before, sent = 0;
    size_t off = 0;
    uint64_t t0 = tu_now_ms(), blocked_since = 0, blocked_ms = 0, last_rss = 0;
    while (tu_now_ms() - t0 < (uint64_t)secs * 1000) {
        ssize_t k = write(fd, batch + off, bl - off);
        uint64_t now = tu_now_ms();
        if (k > 0) {
            off = (off + (size_t)k) % bl;
            sent += k;
            if (blocked_since)
                blocked_ms += now - blocked_since;
            blocked_since = 0;
        } else {
            assert_true(errno == EAGAIN);
            if (!blocked_since)
                blocked_since = now;
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 10);
        }
        if (now - last_rss >= 50) {
            last_rss = now;
            long rss = silo_rss();
            if (rss > peak)
                peak = rss;
            if (rss > RSS_GUARD)
                break; /* the guard: stop before the machine suffers */
        }
    }
    if (blocked_since)
        blocked_ms += tu_now_ms() - blocked_since;
    atomic_store(&b.stop, true);
    pthread_join(bt, NULL);
    shutdown(fd, SHUT_RDWR);
    if (read_answers)
        pthread_join(rt, NULL);
    close(fd);
    free(batch);
    printf("# flood (%s answers) %d s: %ld MB sent, writes blocked %llu ms, silo RSS %ld MB "
           "before, %ld MB peak; bystander %ld calls, %ld failed, worst %ld ms\n",
           read_answers ? "reading" : "not reading", secs, sent / MB,
           (unsigned long long)blocked_ms, before / MB, peak / MB, atomic_load(&b.calls),
           atomic_load(&b.failures), atomic_load(&b.worst_ms));
    check_rss(peak);
    if (!read_answers)
        assert_true(blocked_ms > 0); /* TCP pushed back on the sender */
    assert_true(atomic_load(&b.calls) > 0);
    assert_int_equal(atomic_load(&b.failures), 0);
    /* The memory goes back once the flood stops. */
    if (!TU_SANITIZED_BUILD) {
        long after = 0;
        assert_true(TU_WAIT_UNTIL((after = silo_rss()) <= 2 * before, 10000));
        printf("# silo RSS after the flood: %ld MB\n", after / MB);
    }
    inc(wr, &err);
    TU_OK(err);
    quark_ref_free(wr);
    quark_client_free(warm);
    silo_stop();
}

static void test_flood_not_reading(void **state)
{
    (void)state;
    flood_tcp(false, 5);
}

static void test_flood_reading(void **state)
{
    (void)state;
    flood_tcp(true, 5);
}

/* ---- the same flood over gRPC, through a Quark client's async calls ---- */

static atomic_long g_async_done, g_async_failed;

static void on_inc(quark_err err, const char *msg, const Quark__Examples__CounterValue *v,
                   void *arg)
{
    (void)msg;
    (void)v;
    (void)arg;
    if (err != QUARK_OK)
        atomic_fetch_add(&g_async_failed, 1);
    atomic_fetch_add(&g_async_done, 1);
}

static void test_flood_grpc(void **state)
{
    (void)state;
    silo_start(NULL);
    quark_client *c = client(QUARK_TRANSPORT_GRPC);
    quark_ref *r;
    TU_OK(quark_examples_CounterActor_ref(c, "gflood", &r));
    quark_err err;
    inc(r, &err);
    TU_OK(err);
    tu_sleep_ms(200);
    long before = silo_rss(), peak = before;
    bystander b = {.transport = QUARK_TRANSPORT_GRPC};
    pthread_t bt;
    pthread_create(&bt, NULL, bystander_main, &b);
    Quark__Examples__IncrementRequest one = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    one.delta = 1;
    long issued = 0;
    uint64_t t0 = tu_now_ms();
    /* Up to 200,000 calls at once from one connection (the client keeps
     * what the silo's stream limit does not admit yet). */
    while (issued < 200000 && tu_now_ms() - t0 < 5000) {
        for (int i = 0; i < 1000; i++, issued++)
            TU_OK(quark_examples_CounterActor_Increment_async(r, &one, on_inc, NULL));
        long rss = silo_rss();
        if (rss > peak)
            peak = rss;
        if (rss > RSS_GUARD)
            break;
    }
    while (atomic_load(&g_async_done) < issued && tu_now_ms() - t0 < 60000) {
        long rss = silo_rss();
        if (rss > peak)
            peak = rss;
        tu_sleep_ms(50);
    }
    atomic_store(&b.stop, true);
    pthread_join(bt, NULL);
    printf("# gRPC flood: %ld calls, %ld answered, %ld failed; silo RSS %ld MB before, %ld MB "
           "peak; bystander %ld calls, %ld failed, worst %ld ms\n",
           issued, atomic_load(&g_async_done), atomic_load(&g_async_failed), before / MB,
           peak / MB, atomic_load(&b.calls), atomic_load(&b.failures), atomic_load(&b.worst_ms));
    check_rss(peak);
    assert_int_equal(atomic_load(&g_async_done), issued);
    assert_int_equal(atomic_load(&b.failures), 0);
    quark_ref_free(r);
    quark_client_free(c);
    silo_stop();
}

/* The gRPC flood without reading: a raw HTTP/2 client opens stream after
 * stream (Increment on one actor) and never reads a byte; the silo grants
 * max_connection_calls streams, nghttp2 holds the answers the client's
 * window does not take, and the silo stops reading. */
static size_t h2_request(uint8_t *out, uint32_t stream, const uint8_t *msg, size_t mlen)
{
    static const char *const hdr[][2] = {
        {":method", "POST"}, {":scheme", "http"}, {":path", "/quark.ActorService/InvokeActor"},
        {":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}};
    size_t hl = 0;
    uint8_t *hp = out + 9;
    for (size_t i = 0; i < sizeof hdr / sizeof hdr[0]; i++) { /* literal, not indexed */
        size_t kl = strlen(hdr[i][0]), vl = strlen(hdr[i][1]);
        hp[hl++] = 0;
        hp[hl++] = (uint8_t)kl;
        memcpy(hp + hl, hdr[i][0], kl);
        hl += kl;
        hp[hl++] = (uint8_t)vl;
        memcpy(hp + hl, hdr[i][1], vl);
        hl += vl;
    }
    const uint8_t fh[9] = {0, 0, (uint8_t)hl, 1, 4, (uint8_t)(stream >> 24),
                           (uint8_t)(stream >> 16), (uint8_t)(stream >> 8), (uint8_t)stream};
    memcpy(out, fh, 9); /* HEADERS, END_HEADERS */
    size_t n = 9 + hl, dl = 5 + mlen;
    uint8_t *d = out + n; /* DATA, END_STREAM: the gRPC prefix and the message */
    const uint8_t dh[9] = {0, 0, (uint8_t)dl, 0, 1, (uint8_t)(stream >> 24),
                           (uint8_t)(stream >> 16), (uint8_t)(stream >> 8), (uint8_t)stream};
    memcpy(d, dh, 9);
    d[9] = 0, d[10] = d[11] = d[12] = 0, d[13] = (uint8_t)mlen;
    memcpy(d + 14, msg, mlen);
    return n + 9 + dl;
}

static void test_flood_grpc_not_reading(void **state)
{
    (void)state;
    silo_start(NULL);
    tu_sleep_ms(200);
    long before = silo_rss(), peak = before;
    bystander b = {.transport = QUARK_TRANSPORT_GRPC};
    pthread_t bt;
    pthread_create(&bt, NULL, bystander_main, &b);
    int fd = raw_connect(g_sp.port);
    int small = 65536;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    assert_true(write(fd, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0", 33) == 33);
    Quark__ActorInvocationRequest rq = QUARK__ACTOR_INVOCATION_REQUEST__INIT;
    rq.actor_id = "gflood-nr";
    rq.actor_type = "quark.examples.CounterActor";
    rq.method_name = "Increment";
    uint8_t args[2] = {0x08, 0x01};
    rq.serialized_args.data = args;
    rq.serialized_args.len = 2;
    uint8_t msg[128];
    size_t mlen = quark__actor_invocation_request__pack(&rq, msg);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    uint8_t *buf = malloc(512);
    uint32_t stream = 1;
    long streams = 0;
    uint64_t t0 = tu_now_ms(), last_rss = 0, blocked_ms = 0;
    size_t len = 0, off = 0;
    while (tu_now_ms() - t0 < 5000 && stream < 0x7fffff00u) {
        if (off == len) {
            len = h2_request(buf, stream, msg, mlen);
            off = 0;
            stream += 2;
            streams++;
        }
        ssize_t k = write(fd, buf + off, len - off);
        if (k > 0) {
            off += (size_t)k;
        } else {
            assert_true(errno == EAGAIN);
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            uint64_t w0 = tu_now_ms();
            poll(&p, 1, 10);
            blocked_ms += tu_now_ms() - w0;
        }
        uint64_t now = tu_now_ms();
        if (now - last_rss >= 50) {
            last_rss = now;
            long rss = silo_rss();
            if (rss > peak)
                peak = rss;
            if (rss > RSS_GUARD)
                break;
        }
    }
    atomic_store(&b.stop, true);
    pthread_join(bt, NULL);
    close(fd);
    free(buf);
    printf("# gRPC flood, not reading, 5 s: %ld streams opened, writes blocked %llu ms, silo RSS "
           "%ld MB before, %ld MB peak; bystander %ld calls, %ld failed, worst %ld ms\n",
           streams, (unsigned long long)blocked_ms, before / MB, peak / MB,
           atomic_load(&b.calls), atomic_load(&b.failures), atomic_load(&b.worst_ms));
    check_rss(peak);
    assert_true(blocked_ms > 0); /* the silo stopped reading: TCP pushed back */
    assert_true(atomic_load(&b.calls) > 0);
    assert_int_equal(atomic_load(&b.failures), 0);
    silo_stop();
}

/* ---- a full mailbox answers at once ---- */

static void test_mailbox_full(void **state)
{
    (void)state;
    const char *extra[] = {"--max-mailbox", "8", NULL};
    silo_start(extra);
    int fd = raw_hello(g_sp.port);
    uint8_t f[128], sleep_args[3] = {0x08, 0xac, 0x02}; /* SleepRequest{ms: 300} */
    size_t n = request_frame(f, sizeof f, 1, "busy", "Sleep", sleep_args, 3);
    assert_true(write(fd, f, n) == (ssize_t)n);
    uint8_t inc_args[2] = {0x08, 0x01};
    for (uint64_t id = 2; id <= 21; id++) {
        n = request_frame(f, sizeof f, id, "busy", "Increment", inc_args, 2);
        assert_true(write(fd, f, n) == (ssize_t)n);
    }
    int ok = 0, overload = 0;
    for (int i = 0; i < 21; i++) {
        uint8_t type;
        uint64_t id;
        size_t len;
        uint8_t *p = read_frame(fd, &type, &id, &len);
        assert_int_equal(type, 4);
        Quark__ActorInvocationResponse *resp =
            quark__actor_invocation_response__unpack(NULL, len, p);
        assert_non_null(resp);
        if (resp->error_code == QUARK_OK) {
            ok++;
        } else {
            assert_int_equal(resp->error_code, QUARK_EOVERLOAD);
            assert_non_null(strstr(resp->error_message, "has 8 calls queued"));
            assert_non_null(strstr(resp->error_message, "'busy'"));
            overload++;
        }
        quark__actor_invocation_response__free_unpacked(resp, NULL);
        free(p);
    }
    /* The Sleep and the 8 queued behind it ran; the 12 beyond were refused. */
    assert_int_equal(ok, 9);
    assert_int_equal(overload, 12);
    close(fd);
    silo_stop();
}

/* ---- frames checked in order: type and flags before the length ---- */

static void expect_goaway(int fd, quark_err code, const char *text)
{
    uint8_t type;
    uint64_t id;
    size_t len;
    uint8_t *p = read_frame(fd, &type, &id, &len);
    assert_int_equal(type, 11); /* GOAWAY */
    Quark__ActorInvocationResponse *r = quark__actor_invocation_response__unpack(NULL, len, p);
    assert_non_null(r);
    assert_int_equal(r->error_code, code);
    if (!strstr(r->error_message, text))
        fail_msg("GOAWAY says '%s', expected '%s' in it", r->error_message, text);
    quark__actor_invocation_response__free_unpacked(r, NULL);
    free(p);
    assert_true(raw_wait_closed(fd, 5000, NULL, 0, NULL) >= 0);
    close(fd);
}

static void test_frame_checks_in_order(void **state)
{
    (void)state;
    silo_start(NULL);
    uint8_t h[16];
    /* Bad flags and 4 GiB, type REQUEST: GOAWAY, before and after HELLO. */
    int fd = raw_connect(g_sp.port);
    assert_true(write(fd, "QRK1", 4) == 4);
    memcpy(h, "\xff\xff\xff\xff\x03\x01\x00\x00", 8);
    memset(h + 8, 0, 8);
    assert_true(write(fd, h, 16) == 16);
    expect_goaway(fd, QUARK_EPROTO, "type or flags");
    fd = raw_hello(g_sp.port);
    assert_true(write(fd, h, 16) == 16);
    expect_goaway(fd, QUARK_EPROTO, "type or flags");
    /* A good REQUEST header announcing 4 GiB: before HELLO it is not a
     * HELLO; after, too far over the maximum to skip. */
    memcpy(h, "\xff\xff\xff\xff\x03\x00\x00\x00", 8);
    fd = raw_connect(g_sp.port);
    assert_true(write(fd, "QRK1", 4) == 4);
    assert_true(write(fd, h, 16) == 16);
    expect_goaway(fd, QUARK_EPROTO, "first frame must be HELLO");
    fd = raw_hello(g_sp.port);
    assert_true(write(fd, h, 16) == 16);
    expect_goaway(fd, QUARK_ETOOBIG, "far over");
    silo_stop();
}

/* ---- timeouts ---- */

static void test_connection_timeouts(void **state)
{
    (void)state;
    const char *extra[] = {"--handshake-timeout-ms", "400", "--frame-timeout-ms", "400",
                           "--idle-connection-ms", "800", NULL};
    silo_start(extra);
    /* Nothing at all, the magic alone, the HTTP/2 preface alone. */
    int none = raw_connect(g_sp.port);
    int magic = raw_connect(g_sp.port);
    assert_true(write(magic, "QRK1", 4) == 4);
    int h2 = raw_connect(g_sp.port);
    assert_true(write(h2, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24) == 24);
    long t;
    assert_true((t = raw_wait_closed(none, 10000, NULL, 0, NULL)) >= 300);
    assert_true(raw_wait_closed(h2, 10000, NULL, 0, NULL) >= 0);
    uint8_t buf[512];
    size_t got = 0;
    assert_true(raw_wait_closed(magic, 10000, buf, sizeof buf, &got) >= 0);
    assert_true(got > 16 && buf[4] == 11); /* a GOAWAY that says why */
    assert_non_null(memmem(buf, got, "no handshake", 12));
    close(none);
    close(magic);
    close(h2);

    /* Slowloris: a frame sent a byte at a time, slower than the timeout. */
    int slow = raw_hello(g_sp.port);
    uint8_t f[128], args[2] = {0x08, 0x01};
    size_t n = request_frame(f, sizeof f, 1, "slow", "Increment", args, 2);
    uint64_t t0 = tu_now_ms();
    bool closed = false;
    for (size_t i = 0; i < n && !closed; i++) {
        if (write(slow, f + i, 1) != 1)
            closed = true;
        struct pollfd p = {.fd = slow, .events = POLLIN};
        if (poll(&p, 1, 100) > 0)
            closed = true; /* its GOAWAY */
        if (tu_now_ms() - t0 > 10000)
            break;
    }
    assert_true(closed);
    got = 0;
    raw_wait_closed(slow, 5000, buf, sizeof buf, &got);
    assert_non_null(memmem(buf, got, "not finished", 12));
    close(slow);

    /* Idle: closed after its time; one that PINGs stays. */
    int idle = raw_hello(g_sp.port);
    int live = raw_hello(g_sp.port);
    t0 = tu_now_ms();
    while (tu_now_ms() - t0 < 2000) {
        ping_pong(live);
        tu_sleep_ms(200);
    }
    got = 0;
    assert_true(raw_wait_closed(idle, 5000, buf, sizeof buf, &got) >= 0);
    assert_non_null(memmem(buf, got, "idle for 800 ms", 15));
    ping_pong(live); /* still open */
    close(idle);
    close(live);

    /* gRPC: a request whose body trickles in, a DATA frame of one byte at
     * a time: bytes keep coming, the request never ends. */
    int g = raw_connect(g_sp.port);
    uint8_t req[512];
    memcpy(req, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    memcpy(req + 24, "\0\0\0\x04\0\0\0\0\0", 9); /* SETTINGS, empty */
    size_t n2 = 24 + 9;
    static const char *const hdr[][2] = {
        {":method", "POST"}, {":scheme", "http"}, {":path", "/quark.ActorService/InvokeActor"},
        {":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}};
    size_t hl = 0, at = n2 + 9;
    for (size_t i = 0; i < sizeof hdr / sizeof hdr[0]; i++) { /* literal, not indexed */
        size_t kl = strlen(hdr[i][0]), vl = strlen(hdr[i][1]);
        req[at + hl++] = 0;
        req[at + hl++] = (uint8_t)kl;
        memcpy(req + at + hl, hdr[i][0], kl);
        hl += kl;
        req[at + hl++] = (uint8_t)vl;
        memcpy(req + at + hl, hdr[i][1], vl);
        hl += vl;
    }
    uint8_t fh[9] = {0, 0, (uint8_t)hl, 1, 4, 0, 0, 0, 1}; /* HEADERS, END_HEADERS, stream 1 */
    memcpy(req + n2, fh, 9);
    n2 += 9 + hl;
    /* DATA: the gRPC prefix of a 100-byte message; its body then trickles. */
    static const uint8_t prefix[14] = {0, 0, 5, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 100};
    memcpy(req + n2, prefix, sizeof prefix);
    n2 += sizeof prefix;
    assert_true(write(g, req, n2) == (ssize_t)n2);
    t0 = tu_now_ms();
    closed = false;
    while (!closed && tu_now_ms() - t0 < 10000) {
        uint8_t data[10] = {0, 0, 1, 0, 0, 0, 0, 0, 1, 7}; /* DATA, stream 1, one byte */
        if (write(g, data, 10) != 10)
            closed = true;
        struct pollfd p = {.fd = g, .events = POLLIN};
        while (!closed && poll(&p, 1, 100) > 0) {
            uint8_t junk[4096];
            if (read(g, junk, sizeof junk) <= 0)
                closed = true; /* SETTINGS and its ACK come first, then the end */
        }
    }
    uint64_t took = tu_now_ms() - t0;
    printf("# gRPC request trickling a byte per 100 ms: closed after %llu ms\n",
           (unsigned long long)took);
    assert_true(closed);
    assert_true(took >= 300); /* by the request's clock, not at once */
    close(g);
    silo_stop();
}

/* ---- the connection limit ---- */

static void test_connection_limit(void **state)
{
    (void)state;
    const char *extra[] = {"--max-connections", "3", NULL};
    silo_start(extra);
    int fds[3];
    for (int i = 0; i < 3; i++)
        fds[i] = raw_hello(g_sp.port);
    /* One more over TCP: a GOAWAY that says why. */
    int more = raw_connect(g_sp.port);
    assert_true(write(more, "QRK1", 4) == 4);
    expect_goaway(more, QUARK_EOVERLOAD, "max_connections");
    /* Over HTTP/2: SETTINGS, then GOAWAY REFUSED_STREAM with the reason. */
    int h2 = raw_connect(g_sp.port);
    assert_true(write(h2, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24) == 24);
    uint8_t buf[512];
    size_t got = 0;
    assert_true(raw_wait_closed(h2, 5000, buf, sizeof buf, &got) >= 0);
    assert_true(got > 18 + 8);
    assert_int_equal(buf[3], 4);     /* SETTINGS */
    assert_int_equal(buf[9 + 3], 7); /* GOAWAY */
    assert_int_equal(buf[9 + 9 + 7], 7);
    assert_non_null(memmem(buf, got, "max_connections", 15));
    close(h2);
    /* A place frees up: the next one is served. */
    close(fds[0]);
    quark_client *c = NULL;
    quark_ref *r = NULL;
    quark_err err = QUARK_EUNAVAILABLE;
    uint64_t t0 = tu_now_ms();
    while (err != QUARK_OK && tu_now_ms() - t0 < 10000) {
        c = client_new(QUARK_TRANSPORT_GRPC, 0, 0);
        if ((err = quark_client_connect(c)) == QUARK_OK) {
            TU_OK(quark_examples_CounterActor_ref(c, "after", &r));
            inc(r, &err);
            quark_ref_free(r);
        }
        quark_client_free(c);
        if (err != QUARK_OK)
            tu_sleep_ms(100);
    }
    TU_OK(err);
    close(fds[1]);
    close(fds[2]);
    silo_stop();
}

/* ---- client keepalive: a frozen silo is noticed within seconds ---- */

/* The silo's state letter in /proc (T: stopped). */
static char silo_state(void)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)g_sp.pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : '?';
}

static void frozen_silo(quark_transport t)
{
    silo_start(NULL);
    quark_client *c = client_new(t, 200, 1000);
    TU_OK(quark_client_connect(c));
    quark_ref *r;
    TU_OK(quark_examples_CounterActor_ref(c, "frozen", &r));
    quark_err err;
    assert_int_equal(inc(r, &err), 1);
    kill(g_sp.pid, SIGSTOP);
    assert_true(TU_WAIT_UNTIL(silo_state() == 'T', 5000));
    /* A blocking call (its own socket) and an async one (the shared
     * connection): both end long before their 60 s deadline. */
    atomic_store(&g_async_done, 0);
    atomic_store(&g_async_failed, 0);
    Quark__Examples__IncrementRequest one = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    one.delta = 1;
    TU_OK(quark_examples_CounterActor_Increment_async(r, &one, on_inc, NULL));
    uint64_t t0 = tu_now_ms();
    inc(r, &err);
    long blocking_ms = (long)(tu_now_ms() - t0);
    assert_true(TU_WAIT_UNTIL(atomic_load(&g_async_done) == 1, 20000));
    long async_ms = (long)(tu_now_ms() - t0);
    printf("# %s, silo stopped: blocking call ended %s after %ld ms (%s), async after %ld ms\n",
           t == QUARK_TRANSPORT_TCP ? "TCP" : "gRPC", quark_errname(err), blocking_ms,
           quark_last_error(), async_ms);
    assert_true(err == QUARK_EUNKNOWN || err == QUARK_EUNAVAILABLE);
    assert_true(blocking_ms < 20000);
    assert_int_equal(atomic_load(&g_async_failed), 1);
    /* Back: the client finds it again by itself. */
    kill(g_sp.pid, SIGCONT);
    int64_t v = -1;
    t0 = tu_now_ms();
    while (tu_now_ms() - t0 < 20000 && (v = inc(r, &err)) < 0)
        tu_sleep_ms(100);
    TU_OK(err);
    assert_true(v >= 2);
    quark_ref_free(r);
    quark_client_free(c);
    silo_stop();
}

static void test_keepalive_tcp(void **state)
{
    (void)state;
    frozen_silo(QUARK_TRANSPORT_TCP);
}

static void test_keepalive_grpc(void **state)
{
    (void)state;
    frozen_silo(QUARK_TRANSPORT_GRPC);
}

/* ---- cluster frames only from members (the cluster key) ---- */

#define KEY "correct horse battery staple"

static char g_key_path[64];

static void keyed_silo_start(void)
{
    snprintf(g_key_path, sizeof g_key_path, "/tmp/quark-limits-key-XXXXXX");
    int fd = mkstemp(g_key_path);
    assert_true(fd >= 0);
    assert_true(write(fd, KEY "\n", sizeof KEY) == (ssize_t)sizeof KEY);
    close(fd);
    const char *extra[] = {"--cluster-key-file", g_key_path, NULL};
    silo_start(extra);
}

/* A HELLO'd raw connection; the silo's challenge goes to challenge[32]. */
static int hello_challenge(uint8_t challenge[32])
{
    int fd = raw_connect(g_sp.port);
    uint8_t h[16], type;
    uint64_t id;
    size_t len;
    assert_true(write(fd, "QRK1", 4) == 4);
    put_frame_header(h, 1, 0, 0);
    assert_true(write(fd, h, 16) == 16);
    uint8_t *p = read_frame(fd, &type, &id, &len);
    assert_int_equal(type, 2);
    Quark__TcpHelloReply *r = quark__tcp_hello_reply__unpack(NULL, len, p);
    assert_non_null(r);
    assert_int_equal(r->challenge.len, 32);
    memcpy(challenge, r->challenge.data, 32);
    quark__tcp_hello_reply__free_unpacked(r, NULL);
    free(p);
    return fd;
}

/* Send a frame whose payload is one packed message. */
static void send_msg(int fd, uint8_t type, uint64_t id, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *f = malloc(16 + n);
    put_frame_header(f, type, id, (uint32_t)n);
    protobuf_c_message_pack(m, f + 16);
    assert_true(write(fd, f, 16 + n) == (ssize_t)(16 + n));
    free(f);
}

/* A gossip from "127.0.0.1:1" listing n members. */
static void send_gossip(int fd, int n)
{
    Quark__ClusterView cv = QUARK__CLUSTER_VIEW__INIT;
    cv.cluster_id = "default";
    cv.from = "127.0.0.1:1";
    cv.from_incarnation = 1;
    Quark__ClusterMember *m = calloc((size_t)n, sizeof *m);
    Quark__ClusterMember **mp = calloc((size_t)n, sizeof *mp);
    char (*addr)[32] = calloc((size_t)n, sizeof *addr);
    for (int i = 0; i < n; i++) {
        quark__cluster_member__init(&m[i]);
        snprintf(addr[i], sizeof addr[i], "10.0.%d.%d:7000", i / 250, i % 250 + 1);
        m[i].address = addr[i];
        m[i].incarnation = 1;
        mp[i] = &m[i];
    }
    cv.n_members = (size_t)n;
    cv.members = mp;
    send_msg(fd, 12, 1, &cv.base);
    free(m);
    free(mp);
    free(addr);
}

static void send_auth(int fd, const uint8_t *proof, size_t n)
{
    Quark__TcpAuth a = QUARK__TCP_AUTH__INIT;
    a.proof.data = (uint8_t *)proof;
    a.proof.len = n;
    send_msg(fd, 18, 0, &a.base);
}

static void test_cluster_frames_need_the_key(void **state)
{
    (void)state;
    keyed_silo_start();
    uint8_t ch[32];
    /* A client's gossip, and a call that claims to be forwarded. */
    int fd = hello_challenge(ch);
    send_gossip(fd, 1);
    expect_goaway(fd, QUARK_ECLUSTER, "has not proved the cluster key");
    fd = hello_challenge(ch);
    Quark__ActorInvocationRequest rq = QUARK__ACTOR_INVOCATION_REQUEST__INIT;
    rq.actor_id = "x";
    rq.actor_type = "quark.examples.CounterActor";
    rq.method_name = "Get";
    rq.hops = 1;
    send_msg(fd, 3, 7, &rq.base);
    expect_goaway(fd, QUARK_ECLUSTER, "forwarded call");
    /* A wrong proof. */
    fd = hello_challenge(ch);
    uint8_t proof[32];
    unsigned plen = 0;
    HMAC(EVP_sha256(), "another key", 11, ch, sizeof ch, proof, &plen);
    send_auth(fd, proof, plen);
    expect_goaway(fd, QUARK_ECLUSTER, "wrong cluster key");
    /* The right one (auth.h's input), then gossip is taken. */
    fd = hello_challenge(ch);
    static const char label[] = "quark-cluster-auth/1";
    uint8_t msg[sizeof label + 8 + 32];
    memcpy(msg, label, sizeof label);
    memcpy(msg + sizeof label, "default", 8);
    memcpy(msg + sizeof label + 8, ch, 32);
    HMAC(EVP_sha256(), KEY, (int)strlen(KEY), msg, sizeof msg, proof, &plen);
    send_auth(fd, proof, plen);
    send_gossip(fd, 1);
    uint8_t type;
    uint64_t id;
    size_t len;
    free(read_frame(fd, &type, &id, &len));
    assert_int_equal(type, 13); /* GOSSIP_ACK */
    close(fd);
    silo_stop();
    unlink(g_key_path);
}

static void test_gossip_size_capped(void **state)
{
    (void)state;
    silo_start(NULL); /* no key: anyone may gossip, but not 2,000 members */
    int fd = raw_hello(g_sp.port);
    send_gossip(fd, 2000);
    expect_goaway(fd, QUARK_EPROTO, "more than the 1024");
    /* The view did not take any of them. */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", g_sp.port);
    quark_silo_status *st = NULL;
    TU_OK(quark_status_fetch(addr, "default", 5000, &st));
    for (size_t i = 0; i < st->n_members; i++)
        assert_null(strstr(st->members[i].address, "10.0."));
    quark_status_free(st);
    silo_stop();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_frame_checks_in_order, teardown),
        cmocka_unit_test_teardown(test_mailbox_full, teardown),
        cmocka_unit_test_teardown(test_connection_timeouts, teardown),
        cmocka_unit_test_teardown(test_connection_limit, teardown),
        cmocka_unit_test_teardown(test_flood_not_reading, teardown),
        cmocka_unit_test_teardown(test_flood_reading, teardown),
        cmocka_unit_test_teardown(test_flood_grpc, teardown),
        cmocka_unit_test_teardown(test_flood_grpc_not_reading, teardown),
        cmocka_unit_test_teardown(test_keepalive_tcp, teardown),
        cmocka_unit_test_teardown(test_keepalive_grpc, teardown),
        cmocka_unit_test_teardown(test_cluster_frames_need_the_key, teardown),
        cmocka_unit_test_teardown(test_gossip_size_capped, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
