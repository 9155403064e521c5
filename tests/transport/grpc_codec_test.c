/*
 * grpc_codec_test.c - the gRPC codec (src/transport/grpc_codec.c) without any
 * socket: a client and a server codec wired together in memory, plus a raw
 * nghttp2 peer on either side to script what the codecs themselves never
 * send (wrong content-type, compressed or truncated messages, HTTP errors,
 * refused streams).
 *
 * The pump moves bytes both ways until neither side has anything to write,
 * optionally in small chunks so every frame and message is split at odd
 * places.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <nghttp2/nghttp2.h>

#include "quark/error.h"
#include "transport/grpc_codec.h"

/* ---- byte buffers and the pump ---------------------------------------- */

typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
} bytes;

static void bytes_put(bytes *b, const uint8_t *d, size_t n)
{
    if (b->len + n > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc < b->len + n)
            nc *= 2;
        b->p = realloc(b->p, nc);
        assert_non_null(b->p);
        b->cap = nc;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void bytes_write(void *wud, const uint8_t *d, size_t n)
{
    bytes_put(wud, d, n);
}

static void bytes_free(bytes *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* One side of a connection: the codecs or a raw nghttp2 session. */
typedef struct ep {
    int (*recv)(void *o, const uint8_t *d, size_t n);
    size_t (*flush)(void *o, bytes *out);
    void *o;
    int last_rc; /* first error recv returned, 0 if none */
} ep;

static int ep_srv_recv(void *o, const uint8_t *d, size_t n) { return qk_grpc_server_recv(o, d, n); }
static size_t ep_srv_flush(void *o, bytes *out) { return qk_grpc_server_flush(o, bytes_write, out); }
static int ep_cli_recv(void *o, const uint8_t *d, size_t n) { return qk_grpc_client_recv(o, d, n); }
static size_t ep_cli_flush(void *o, bytes *out) { return qk_grpc_client_flush(o, bytes_write, out); }

static int ep_raw_recv(void *o, const uint8_t *d, size_t n)
{
    ssize_t r = nghttp2_session_mem_recv(o, d, n);
    return r < 0 ? (int)r : 0;
}

static size_t ep_raw_flush(void *o, bytes *out)
{
    size_t total = 0;
    for (;;) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(o, &p);
        assert_true(n >= 0);
        if (n == 0)
            return total;
        bytes_put(out, p, (size_t)n);
        total += (size_t)n;
    }
}

static ep ep_server(qk_grpc_server *s) { return (ep){ep_srv_recv, ep_srv_flush, s, 0}; }
static ep ep_client(qk_grpc_client *c) { return (ep){ep_cli_recv, ep_cli_flush, c, 0}; }
static ep ep_raw(nghttp2_session *ng) { return (ep){ep_raw_recv, ep_raw_flush, ng, 0}; }

static void feed(ep *to, const bytes *b, size_t chunk)
{
    size_t off = 0;
    while (off < b->len && to->last_rc == 0) {
        size_t n = chunk && b->len - off > chunk ? chunk : b->len - off;
        int rc = to->recv(to->o, b->p + off, n);
        if (rc != 0)
            to->last_rc = rc;
        off += n;
    }
}

/* Move bytes both ways until nothing moves; chunk 0 = whole buffers. */
static void pump(ep *a, ep *b, size_t chunk)
{
    bytes ab = {0}, ba = {0};
    for (int rounds = 0; rounds < 100000; rounds++) {
        ab.len = ba.len = 0;
        size_t n = a->flush(a->o, &ab) + b->flush(b->o, &ba);
        if (n == 0)
            break;
        feed(b, &ab, chunk);
        feed(a, &ba, chunk);
    }
    bytes_free(&ab);
    bytes_free(&ba);
}

/* ---- the server application ------------------------------------------- */

#define MAXREQ 2048

typedef struct req {
    int32_t id;
    char path[128];
    uint64_t timeout_ms;
    char cluster[64];
    int has_cluster;
    uint8_t *msg;
    size_t len;
} req;

typedef struct srv_app {
    qk_grpc_server *s;
    int echo; /* answer at once with the request message */
    req reqs[MAXREQ];
    int nreq;
    int32_t cancels[MAXREQ];
    int ncancel;
} srv_app;

static void app_on_request(void *ud, int32_t id, const char *path, size_t path_len,
                           uint64_t timeout_ms, const char *cluster_id, const uint8_t *msg,
                           size_t len)
{
    srv_app *a = ud;
    assert_non_null(msg);
    assert_int_equal(strlen(path), path_len);
    if (a->echo) {
        assert_int_equal(qk_grpc_server_respond(a->s, id, 0, NULL, msg, len), 0);
        /* A second answer is refused. */
        assert_int_equal(qk_grpc_server_respond(a->s, id, 0, NULL, msg, len), QUARK_ECLOSED);
    }
    assert_true(a->nreq < MAXREQ);
    req *r = &a->reqs[a->nreq++];
    r->id = id;
    snprintf(r->path, sizeof r->path, "%s", path);
    r->timeout_ms = timeout_ms;
    r->has_cluster = cluster_id != NULL;
    if (cluster_id)
        snprintf(r->cluster, sizeof r->cluster, "%s", cluster_id);
    r->msg = malloc(len ? len : 1);
    memcpy(r->msg, msg, len);
    r->len = len;
}

static void app_on_cancel(void *ud, int32_t id)
{
    srv_app *a = ud;
    for (int i = 0; i < a->ncancel; i++)
        assert_int_not_equal(a->cancels[i], id); /* at most once */
    a->cancels[a->ncancel++] = id;
    /* Answers are refused from now on. */
    assert_int_equal(qk_grpc_server_respond(a->s, id, 0, NULL, NULL, 0), QUARK_ECLOSED);
}

static const qk_grpc_server_cbs app_cbs = {app_on_request, app_on_cancel};

static srv_app *srv_app_new(size_t max_msg, int echo)
{
    srv_app *a = calloc(1, sizeof *a);
    a->echo = echo;
    a->s = qk_grpc_server_new(&app_cbs, a, max_msg, 0);
    assert_non_null(a->s);
    return a;
}

static void srv_app_free(srv_app *a)
{
    if (a->s)
        qk_grpc_server_free(a->s);
    for (int i = 0; i < a->nreq; i++)
        free(a->reqs[i].msg);
    free(a);
}

/* ---- the client application ------------------------------------------- */

typedef struct res {
    int finals;     /* on_response + on_stream_end calls */
    int status;
    char message[1024];
    uint8_t *data;  /* unary response message */
    size_t len;
    int msg_null;
    int nmsgs;      /* streaming messages */
    int seq_ok;     /* streaming messages arrived as "m<i>" in order */
} res;

static void cli_on_response(void *ud, void *call_ud, int status, const char *message,
                            const uint8_t *msg, size_t len)
{
    (void)ud;
    res *r = call_ud;
    r->finals++;
    r->status = status;
    assert_non_null(message);
    snprintf(r->message, sizeof r->message, "%s", message);
    r->msg_null = msg == NULL;
    if (status == 0)
        assert_non_null(msg);
    else
        assert_null(msg);
    if (msg) {
        r->data = malloc(len ? len : 1);
        memcpy(r->data, msg, len);
        r->len = len;
    }
}

static void cli_on_stream_msg(void *ud, void *call_ud, const uint8_t *msg, size_t len)
{
    (void)ud;
    res *r = call_ud;
    char want[32];
    int n = snprintf(want, sizeof want, "m%d", r->nmsgs);
    if (r->nmsgs == 0)
        r->seq_ok = 1;
    if ((size_t)n != len || memcmp(msg, want, len) != 0)
        r->seq_ok = 0;
    r->nmsgs++;
}

static void cli_on_stream_end(void *ud, void *call_ud, int status, const char *message)
{
    (void)ud;
    res *r = call_ud;
    r->finals++;
    r->status = status;
    assert_non_null(message);
    snprintf(r->message, sizeof r->message, "%s", message);
}

static const qk_grpc_client_cbs cli_cbs = {cli_on_response, cli_on_stream_msg, cli_on_stream_end};

static void res_free(res *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(r[i].data);
}

/* A connected pair. */
typedef struct pair {
    srv_app *app;
    qk_grpc_client *cli;
    ep es, ec;
} pair;

static void pair_init(pair *p, size_t max_msg, int echo)
{
    p->app = srv_app_new(max_msg, echo);
    p->cli = qk_grpc_client_new(&cli_cbs, NULL, "127.0.0.1:7000", max_msg, 0);
    assert_non_null(p->cli);
    p->es = ep_server(p->app->s);
    p->ec = ep_client(p->cli);
}

static void pair_pump(pair *p, size_t chunk)
{
    pump(&p->ec, &p->es, chunk);
    assert_int_equal(p->es.last_rc, 0);
    assert_int_equal(p->ec.last_rc, 0);
}

static void pair_free(pair *p)
{
    qk_grpc_client_free(p->cli);
    srv_app_free(p->app);
}

/* ---- client <-> server ------------------------------------------------ */

static void test_unary_roundtrip(void **state)
{
    (void)state;
    pair p;
    pair_init(&p, 1 << 20, 1);
    res r = {0};
    const char *meta[] = {"quark-cluster-id", "prod", "x-extra", "1", NULL};
    int32_t id = qk_grpc_client_call(p.cli, "/quark.ActorService/InvokeActor", 2983, meta,
                                     (const uint8_t *)"hello", 5, 0, &r);
    assert_true(id > 0);
    pair_pump(&p, 0);
    assert_int_equal(p.app->nreq, 1);
    assert_string_equal(p.app->reqs[0].path, "/quark.ActorService/InvokeActor");
    assert_int_equal(p.app->reqs[0].timeout_ms, 2983);
    assert_true(p.app->reqs[0].has_cluster);
    assert_string_equal(p.app->reqs[0].cluster, "prod");
    assert_int_equal(r.finals, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.len, 5);
    assert_memory_equal(r.data, "hello", 5);

    /* No cluster id, a timeout in seconds' range, and an answer for a stream
     * that is gone or never existed is refused. */
    res r2 = {0};
    id = qk_grpc_client_call(p.cli, "/a/b", 5000, NULL, (const uint8_t *)"x", 1, 0, &r2);
    pair_pump(&p, 0);
    assert_int_equal(p.app->nreq, 2);
    assert_false(p.app->reqs[1].has_cluster);
    assert_int_equal(p.app->reqs[1].timeout_ms, 5000);
    assert_int_equal(r2.finals, 1);
    assert_int_equal(qk_grpc_server_respond(p.app->s, id, 0, NULL, NULL, 0), QUARK_ECLOSED);
    assert_int_equal(qk_grpc_server_respond(p.app->s, 12345, 0, NULL, NULL, 0), QUARK_ECLOSED);
    assert_int_equal(qk_grpc_server_stream_send(p.app->s, -1, NULL, 0), QUARK_ECLOSED);
    assert_int_equal(qk_grpc_server_stream_end(p.app->s, 0, 0, NULL), QUARK_ECLOSED);

    /* Bad arguments. */
    assert_int_equal(qk_grpc_client_call(p.cli, "nopath", 0, NULL, NULL, 0, 0, &r2), QUARK_EINVAL);
    const char *bad1[] = {"Upper", "v", NULL};
    const char *bad2[] = {"content-type", "text/plain", NULL};
    const char *bad3[] = {"x-ok", "line\nbreak", NULL};
    const char *bad4[] = {"x-odd", NULL};
    assert_int_equal(qk_grpc_client_call(p.cli, "/a/b", 0, bad1, NULL, 0, 0, &r2), QUARK_EINVAL);
    assert_int_equal(qk_grpc_client_call(p.cli, "/a/b", 0, bad2, NULL, 0, 0, &r2), QUARK_EINVAL);
    assert_int_equal(qk_grpc_client_call(p.cli, "/a/b", 0, bad3, NULL, 0, 0, &r2), QUARK_EINVAL);
    assert_int_equal(qk_grpc_client_call(p.cli, "/a/b", 0, bad4, NULL, 0, 0, &r2), QUARK_EINVAL);
    assert_true(qk_grpc_client_usable(p.cli));
    assert_false(qk_grpc_server_want_close(p.app->s));
    res_free(&r, 1);
    res_free(&r2, 1);
    pair_free(&p);
}

static void test_many_streams_out_of_order(void **state)
{
    (void)state;
    enum { N = 1000 };
    pair p;
    pair_init(&p, 1 << 20, 0);
    res *r = calloc(N, sizeof *r);
    int32_t ids[N];
    for (int i = 0; i < N; i++) {
        char m[32];
        int n = snprintf(m, sizeof m, "request-%d", i);
        ids[i] = qk_grpc_client_call(p.cli, "/svc/M", 0, NULL, (const uint8_t *)m, (size_t)n, 0,
                                     &r[i]);
        assert_true(ids[i] > 0);
    }
    pair_pump(&p, 0);
    /* All 1000 are open on the server at once. */
    assert_int_equal(p.app->nreq, N);
    /* Answer in a scrambled order: each with its own request text reversed
     * into "reply-<i>". */
    for (int k = 0; k < N; k++) {
        int j = (k * 617 + 123) % N; /* 617 is prime to 1000: a permutation */
        req *q = &p.app->reqs[j];
        char m[40];
        int n = snprintf(m, sizeof m, "reply-%.*s", (int)q->len - 8, (const char *)q->msg + 8);
        assert_int_equal(qk_grpc_server_respond(p.app->s, q->id, 0, NULL, (const uint8_t *)m,
                                                (size_t)n), 0);
        if (k % 100 == 0)
            pair_pump(&p, 0);
    }
    pair_pump(&p, 0);
    for (int i = 0; i < N; i++) {
        char want[40];
        int n = snprintf(want, sizeof want, "reply-%d", i);
        assert_int_equal(r[i].finals, 1);
        assert_int_equal(r[i].status, 0);
        assert_int_equal(r[i].len, (size_t)n);
        assert_memory_equal(r[i].data, want, (size_t)n);
    }
    res_free(r, N);
    free(r);
    pair_free(&p);
}

/* Echo a message of `len` bytes, moving bytes `chunk` at a time. */
static void echo_sized(size_t len, size_t chunk)
{
    pair p;
    pair_init(&p, 2 << 20, 1);
    uint8_t *m = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        m[i] = (uint8_t)(i * 31 + (i >> 8));
    res r = {0};
    assert_true(qk_grpc_client_call(p.cli, "/svc/Echo", 0, NULL, len ? m : NULL, len, 0, &r) > 0);
    pair_pump(&p, chunk);
    assert_int_equal(p.app->nreq, 1);
    assert_int_equal(p.app->reqs[0].len, len);
    if (len)
        assert_memory_equal(p.app->reqs[0].msg, m, len);
    assert_int_equal(r.finals, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.len, len);
    if (len)
        assert_memory_equal(r.data, m, len);
    free(m);
    res_free(&r, 1);
    pair_free(&p);
}

static void test_message_sizes(void **state)
{
    (void)state;
    echo_sized(1, 0);
    echo_sized(0, 0);
    echo_sized(1, 1);    /* the whole connection one byte at a time */
    echo_sized(300, 1);
    echo_sized(0, 3);
    echo_sized(1 << 20, 997);
    echo_sized(1 << 20, 65537);
    echo_sized(1 << 20, 0);
    echo_sized((1 << 20) + 3, 4093);
}

/* One table maps errors to statuses and back: every error a silo sends as
 * its own status comes back as itself; shared statuses come back as the
 * first error of theirs. */
static void test_status_map(void **state)
{
    (void)state;
    const quark_err own[] = {QUARK_OK, QUARK_ENOTYPE, QUARK_ENOMETHOD, QUARK_EINVAL,
                             QUARK_ETIMEDOUT, QUARK_ETOOBIG, QUARK_ECLUSTER, QUARK_ECYCLE,
                             QUARK_EUNAVAILABLE, QUARK_EUNKNOWN};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        assert_int_equal(qk_grpc_err_of(qk_grpc_status_of(own[i])), own[i]);
    assert_int_equal(qk_grpc_status_of(QUARK_EUNIMPLEMENTED), QK_GRPC_UNIMPLEMENTED);
    assert_int_equal(qk_grpc_status_of(QUARK_EBADARGS), QK_GRPC_INVALID_ARGUMENT);
    assert_int_equal(qk_grpc_status_of(QUARK_ECLOSED), QK_GRPC_UNAVAILABLE);
    assert_int_equal(qk_grpc_status_of(QUARK_EACTOR), QK_GRPC_INTERNAL);
    assert_int_equal(qk_grpc_err_of(QK_GRPC_CANCELLED), QUARK_ECLOSED);
    assert_int_equal(qk_grpc_err_of(QK_GRPC_PERMISSION_DENIED), QUARK_EINTERNAL);
    assert_int_equal(qk_grpc_err_of(99), QUARK_EINTERNAL);
}

static void test_status_message_roundtrip(void **state)
{
    (void)state;
    pair p;
    pair_init(&p, 1 << 20, 0);
    const char *text = "50% off\nline two: \xc3\xa9t\xc3\xa9 \xe2\x9c\x93 tab\t%41 {}~ end";
    res r1 = {0}, r2 = {0}, r3 = {0};
    assert_true(qk_grpc_client_call(p.cli, "/s/A", 0, NULL, (const uint8_t *)"a", 1, 0, &r1) > 0);
    assert_true(qk_grpc_client_call(p.cli, "/s/B", 0, NULL, (const uint8_t *)"b", 1, 0, &r2) > 0);
    assert_true(qk_grpc_client_call(p.cli, "/s/C", 0, NULL, (const uint8_t *)"c", 1, 1, &r3) > 0);
    pair_pump(&p, 0);
    assert_int_equal(p.app->nreq, 3);
    /* Trailers-Only error. */
    assert_int_equal(qk_grpc_server_respond(p.app->s, p.app->reqs[0].id, 5, text, NULL, 0), 0);
    /* Error after a message: status wins, the message is not delivered. */
    assert_int_equal(qk_grpc_server_respond(p.app->s, p.app->reqs[1].id, 9, text,
                                            (const uint8_t *)"zz", 2), 0);
    /* Stream: a message, then an error with the text in the trailers. */
    assert_int_equal(qk_grpc_server_stream_send(p.app->s, p.app->reqs[2].id,
                                                (const uint8_t *)"m0", 2), 0);
    assert_int_equal(qk_grpc_server_stream_end(p.app->s, p.app->reqs[2].id, 10, text), 0);
    pair_pump(&p, 5);
    assert_int_equal(r1.finals, 1);
    assert_int_equal(r1.status, 5);
    assert_string_equal(r1.message, text);
    assert_true(r1.msg_null);
    assert_int_equal(r2.finals, 1);
    assert_int_equal(r2.status, 9);
    assert_string_equal(r2.message, text);
    assert_int_equal(r3.finals, 1);
    assert_int_equal(r3.nmsgs, 1);
    assert_int_equal(r3.status, 10);
    assert_string_equal(r3.message, text);
    res_free(&r1, 1);
    res_free(&r2, 1);
    res_free(&r3, 1);
    pair_free(&p);
}

static void test_server_streaming(void **state)
{
    (void)state;
    pair p;
    pair_init(&p, 1 << 20, 0);
    res r = {0};
    assert_true(qk_grpc_client_call(p.cli, "/quark.ActorService/StreamActorEvents", 0, NULL,
                                    (const uint8_t *)"sub", 3, 1, &r) > 0);
    pair_pump(&p, 0);
    assert_int_equal(p.app->nreq, 1);
    int32_t id = p.app->reqs[0].id;
    for (int i = 0; i < 100; i++) {
        char m[16];
        int n = snprintf(m, sizeof m, "m%d", i);
        assert_int_equal(qk_grpc_server_stream_send(p.app->s, id, (const uint8_t *)m, (size_t)n),
                         0);
        /* Sometimes the provider has drained the queue and waits (DEFERRED). */
        if (i % 7 == 0)
            pair_pump(&p, i % 2 ? 3 : 0);
    }
    pair_pump(&p, 0);
    assert_int_equal(r.finals, 0);
    assert_int_equal(r.nmsgs, 100);
    assert_int_equal(qk_grpc_server_stream_end(p.app->s, id, 0, NULL), 0);
    assert_int_equal(qk_grpc_server_stream_send(p.app->s, id, (const uint8_t *)"late", 4),
                     QUARK_ECLOSED);
    pair_pump(&p, 0);
    assert_int_equal(r.nmsgs, 100);
    assert_true(r.seq_ok);
    assert_int_equal(r.finals, 1);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.message, "");

    /* A stream ended with nothing sent is a Trailers-Only response. */
    res r2 = {0};
    assert_true(qk_grpc_client_call(p.cli, "/s/E", 0, NULL, NULL, 0, 1, &r2) > 0);
    pair_pump(&p, 0);
    assert_int_equal(qk_grpc_server_stream_end(p.app->s, p.app->reqs[1].id, 0, NULL), 0);
    pair_pump(&p, 0);
    assert_int_equal(r2.finals, 1);
    assert_int_equal(r2.nmsgs, 0);
    assert_int_equal(r2.status, 0);
    assert_int_equal(p.app->ncancel, 0);
    pair_free(&p);
}

static void test_client_cancel(void **state)
{
    (void)state;
    pair p;
    pair_init(&p, 1 << 20, 0);
    res r = {0}, r2 = {0};
    int32_t id = qk_grpc_client_call(p.cli, "/s/Stream", 0, NULL, (const uint8_t *)"x", 1, 1, &r);
    assert_true(id > 0);
    pair_pump(&p, 0);
    int32_t sid = p.app->reqs[0].id;
    assert_int_equal(qk_grpc_server_stream_send(p.app->s, sid, (const uint8_t *)"m0", 2), 0);
    pair_pump(&p, 0);
    assert_int_equal(r.nmsgs, 1);
    qk_grpc_client_cancel(p.cli, id);
    /* Messages already on their way are dropped by the client. */
    assert_int_equal(qk_grpc_server_stream_send(p.app->s, sid, (const uint8_t *)"m1", 2), 0);
    pair_pump(&p, 0);
    assert_int_equal(p.app->ncancel, 1);
    assert_int_equal(p.app->cancels[0], sid);
    assert_int_equal(qk_grpc_server_stream_send(p.app->s, sid, (const uint8_t *)"m2", 2),
                     QUARK_ECLOSED);
    assert_int_equal(r.finals, 0);
    assert_int_equal(r.nmsgs, 1);
    qk_grpc_client_cancel(p.cli, id); /* twice: no-op */

    /* Cancelled before its HEADERS ever left: nothing reaches the server. */
    int32_t id2 = qk_grpc_client_call(p.cli, "/s/Unary", 0, NULL, (const uint8_t *)"y", 1, 0, &r2);
    assert_true(id2 > 0);
    qk_grpc_client_cancel(p.cli, id2);
    pair_pump(&p, 0);
    assert_int_equal(p.app->nreq, 1);
    assert_int_equal(r2.finals, 0);
    assert_true(qk_grpc_client_usable(p.cli));

    /* The connection still works. */
    res r3 = {0};
    p.app->echo = 1;
    assert_true(qk_grpc_client_call(p.cli, "/s/U", 0, NULL, (const uint8_t *)"z", 1, 0, &r3) > 0);
    pair_pump(&p, 0);
    assert_int_equal(r3.finals, 1);
    assert_int_equal(r3.status, 0);
    res_free(&r3, 1);
    pair_free(&p);
}

static void test_server_shutdown(void **state)
{
    (void)state;
    pair p;
    pair_init(&p, 1 << 20, 0);
    res r1 = {0}, r2 = {0}, r3 = {0};
    assert_true(qk_grpc_client_call(p.cli, "/s/A", 0, NULL, (const uint8_t *)"a", 1, 0, &r1) > 0);
    assert_true(qk_grpc_client_call(p.cli, "/s/B", 0, NULL, (const uint8_t *)"b", 1, 1, &r2) > 0);
    pair_pump(&p, 0);
    assert_int_equal(p.app->nreq, 2);

    qk_grpc_server_shutdown(p.app->s);
    qk_grpc_server_shutdown(p.app->s); /* idempotent */
    pair_pump(&p, 0);
    assert_false(qk_grpc_client_usable(p.cli));
    assert_int_equal(qk_grpc_client_call(p.cli, "/s/C", 0, NULL, (const uint8_t *)"c", 1, 0, &r3),
                     QUARK_EUNAVAILABLE);
    assert_false(qk_grpc_server_want_close(p.app->s));

    /* In-flight calls finish. */
    assert_int_equal(qk_grpc_server_respond(p.app->s, p.app->reqs[0].id, 0, NULL,
                                            (const uint8_t *)"A", 1), 0);
    pair_pump(&p, 0);
    assert_int_equal(r1.finals, 1);
    assert_int_equal(r1.status, 0);
    assert_false(qk_grpc_server_want_close(p.app->s));
    assert_int_equal(qk_grpc_server_stream_send(p.app->s, p.app->reqs[1].id,
                                                (const uint8_t *)"m0", 2), 0);
    assert_int_equal(qk_grpc_server_stream_end(p.app->s, p.app->reqs[1].id, 0, NULL), 0);
    pair_pump(&p, 0);
    assert_int_equal(r2.finals, 1);
    assert_int_equal(r2.nmsgs, 1);
    assert_int_equal(r2.status, 0);
    assert_true(qk_grpc_server_want_close(p.app->s));
    assert_true(qk_grpc_client_want_close(p.cli));
    assert_int_equal(r3.finals, 0);
    assert_int_equal(p.app->ncancel, 0);
    res_free(&r1, 1);
    pair_free(&p);
}

/* The final GOAWAY at once: the call in flight finishes; a call whose
 * HEADERS reach the server after the GOAWAY was submitted but before it left
 * does not run and fails with 14 (safe to retry). */
static void test_server_goaway_now(void **state)
{
    (void)state;
    pair p;
    pair_init(&p, 1000, 0);
    res ra = {0}, rb = {0};
    assert_true(qk_grpc_client_call(p.cli, "/s/A", 0, NULL, (const uint8_t *)"a", 1, 0, &ra) > 0);
    pair_pump(&p, 0);
    assert_int_equal(p.app->nreq, 1);
    assert_true(qk_grpc_client_call(p.cli, "/s/B", 0, NULL, (const uint8_t *)"b", 1, 0, &rb) > 0);
    qk_grpc_server_goaway_now(p.app->s);
    bytes cb = {0};
    qk_grpc_client_flush(p.cli, bytes_write, &cb);
    assert_int_equal(qk_grpc_server_recv(p.app->s, cb.p, cb.len), 0); /* B before the GOAWAY left */
    bytes_free(&cb);
    pair_pump(&p, 0);
    assert_int_equal(p.app->nreq, 1);
    assert_int_equal(rb.finals, 1);
    assert_int_equal(rb.status, 14);
    assert_false(qk_grpc_client_usable(p.cli));
    assert_false(qk_grpc_server_want_close(p.app->s));
    assert_int_equal(qk_grpc_server_respond(p.app->s, p.app->reqs[0].id, 0, NULL,
                                            (const uint8_t *)"A", 1), 0);
    pair_pump(&p, 0);
    assert_int_equal(ra.finals, 1);
    assert_int_equal(ra.status, 0);
    assert_true(qk_grpc_server_want_close(p.app->s));
    qk_grpc_server_goaway_now(p.app->s); /* again: no-op */
    res_free(&ra, 1);
    pair_free(&p);
}

/* Calls racing a shutdown: the server's GOAWAY arrives while some calls
 * still wait in the client (100 streams before the server's SETTINGS are
 * known). Each call completes exactly once: served, or 14 UNAVAILABLE for
 * the ones that never left (safe to retry elsewhere). */
static void test_shutdown_race(void **state)
{
    (void)state;
    enum { N = 150 };
    pair p;
    pair_init(&p, 1000, 1);
    qk_grpc_server_shutdown(p.app->s);
    res *r = calloc(N, sizeof *r);
    for (int i = 0; i < N; i++)
        assert_true(qk_grpc_client_call(p.cli, "/s/R", 0, NULL, (const uint8_t *)"r", 1, 0,
                                        &r[i]) > 0);
    pair_pump(&p, 0);
    int ok = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].finals, 1);
        if (r[i].status == 0)
            ok++;
        else if (r[i].status == 14)
            refused++;
        else
            fail_msg("call %d: status %d (%s)", i, r[i].status, r[i].message);
    }
    assert_int_equal(ok, p.app->nreq);
    assert_int_equal(ok + refused, N);
    print_message("shutdown race: %d served, %d refused\n", ok, refused);
    assert_true(ok >= 1);
    assert_true(refused >= 1);
    assert_true(qk_grpc_server_want_close(p.app->s));
    res_free(r, N);
    free(r);
    pair_free(&p);
}

/* A server stream producing faster than the client reads: the codec queues,
 * flow control paces, qk_grpc_server_stream_queued shows the backlog. */
static void test_stream_backpressure(void **state)
{
    (void)state;
    pair p;
    pair_init(&p, 2 << 20, 0);
    res r = {0};
    assert_true(qk_grpc_client_call(p.cli, "/s/S", 0, NULL, NULL, 0, 1, &r) > 0);
    pair_pump(&p, 0);
    int32_t id = p.app->reqs[0].id;
    size_t big = 1 << 20;
    uint8_t *m = calloc(1, big);
    for (int i = 0; i < 3; i++)
        assert_int_equal(qk_grpc_server_stream_send(p.app->s, id, m, big), 0);
    assert_int_equal(qk_grpc_server_stream_queued(p.app->s, id), 3 * (big + 5));
    bytes out = {0};
    qk_grpc_server_flush(p.app->s, bytes_write, &out); /* the client reads nothing */
    size_t q = qk_grpc_server_stream_queued(p.app->s, id);
    assert_true(q > 0 && q < 3 * (big + 5));
    bytes_free(&out);
    /* Those bytes were dropped, so this connection is done; the same with a
     * reader: 40 messages queued at once all arrive, in order. */
    pair_free(&p);
    free(m);

    pair_init(&p, 2 << 20, 0);
    res r2 = {0};
    assert_true(qk_grpc_client_call(p.cli, "/s/S", 0, NULL, NULL, 0, 1, &r2) > 0);
    pair_pump(&p, 0);
    id = p.app->reqs[0].id;
    for (int i = 0; i < 40; i++) {
        char t[16];
        int n = snprintf(t, sizeof t, "m%d", i);
        assert_int_equal(qk_grpc_server_stream_send(p.app->s, id, (const uint8_t *)t, (size_t)n),
                         0);
    }
    assert_int_equal(qk_grpc_server_stream_end(p.app->s, id, 0, NULL), 0);
    pair_pump(&p, 0);
    assert_int_equal(qk_grpc_server_stream_queued(p.app->s, id), 0);
    assert_int_equal(r2.nmsgs, 40);
    assert_true(r2.seq_ok);
    assert_int_equal(r2.finals, 1);
    assert_int_equal(r2.status, 0);
    assert_int_equal(r.finals, 0); /* the first connection was only freed */
    pair_free(&p);
}

static void test_fail_all(void **state)
{
    (void)state;
    pair p;
    pair_init(&p, 1 << 20, 0);
    res r[4] = {{0}};
    for (int i = 0; i < 4; i++)
        assert_true(qk_grpc_client_call(p.cli, "/s/X", 0, NULL, (const uint8_t *)"x", 1, i % 2,
                                        &r[i]) > 0);
    pair_pump(&p, 0);
    assert_int_equal(p.app->nreq, 4);
    /* One call completes normally before the connection is lost. */
    assert_int_equal(qk_grpc_server_respond(p.app->s, p.app->reqs[0].id, 0, NULL,
                                            (const uint8_t *)"ok", 2), 0);
    pair_pump(&p, 0);
    int done_before = 0;
    for (int i = 0; i < 4; i++)
        done_before += r[i].finals;
    assert_int_equal(done_before, 1);

    /* The socket dies: output the server produces is never delivered. */
    for (int i = 1; i < 4; i++)
        qk_grpc_server_respond(p.app->s, p.app->reqs[i].id, 0, NULL, (const uint8_t *)"late", 4);
    qk_grpc_client_fail_all(p.cli, "connection to 127.0.0.1:7000 lost");
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].finals, 1);
        if (r[i].status != 0) {
            assert_int_equal(r[i].status, 14);
            assert_string_equal(r[i].message, "connection to 127.0.0.1:7000 lost");
        }
    }
    qk_grpc_client_fail_all(p.cli, "again");
    bytes b = {0};
    qk_grpc_server_flush(p.app->s, bytes_write, &b);
    assert_int_equal(qk_grpc_client_recv(p.cli, b.p, b.len), QUARK_ECLOSED);
    bytes_free(&b);
    assert_int_equal(qk_grpc_client_call(p.cli, "/s/X", 0, NULL, NULL, 0, 0, &r[0]),
                     QUARK_EUNAVAILABLE);
    qk_grpc_client_free(p.cli);
    p.cli = NULL;
    for (int i = 0; i < 4; i++)
        assert_int_equal(r[i].finals, 1);
    res_free(r, 4);
    /* The server side goes too: on_cancel for what the app still holds
     * (nothing here: it answered all). */
    srv_app_free(p.app);
}

static void test_server_free_cancels_held(void **state)
{
    (void)state;
    pair p;
    pair_init(&p, 1 << 20, 0);
    res r[3] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_true(qk_grpc_client_call(p.cli, "/s/X", 0, NULL, (const uint8_t *)"x", 1, 0,
                                        &r[i]) > 0);
    pair_pump(&p, 0);
    assert_int_equal(p.app->nreq, 3);
    assert_int_equal(qk_grpc_server_respond(p.app->s, p.app->reqs[1].id, 0, NULL, NULL, 0), 0);
    qk_grpc_server_free(p.app->s);
    p.app->s = NULL;
    assert_int_equal(p.app->ncancel, 2);
    qk_grpc_client_fail_all(p.cli, "lost");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].finals, 1);
        assert_int_equal(r[i].status, 14);
    }
    pair_free(&p);
}

/* ---- a raw nghttp2 client against the codec's server ------------------ */

typedef struct raw_stream {
    int32_t id;
    int http_status;
    int grpc_status; /* -1 if absent */
    char grpc_message[512];
    int headers_frames, data_frames;
    bytes body;
    uint32_t close_code;
    int closed, end_stream;
} raw_stream;

typedef struct raw_peer {
    nghttp2_session *ng;
    raw_stream st[16];
    int n;
    /* Server role: how to answer a request (see raw_srv_answer). */
    int mode;
} raw_peer;

static raw_stream *raw_find(raw_peer *rp, int32_t id)
{
    for (int i = 0; i < rp->n; i++)
        if (rp->st[i].id == id)
            return &rp->st[i];
    assert_true(rp->n < 16);
    raw_stream *s = &rp->st[rp->n++];
    memset(s, 0, sizeof *s);
    s->id = id;
    s->grpc_status = -1;
    return s;
}

static int raw_on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                         size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    (void)ng;
    (void)flags;
    raw_stream *s = raw_find(ud, f->hd.stream_id);
    char v[512];
    snprintf(v, sizeof v, "%.*s", (int)vl, (const char *)value);
    if (nl == 7 && memcmp(name, ":status", 7) == 0)
        s->http_status = atoi(v);
    else if (nl == 11 && memcmp(name, "grpc-status", 11) == 0)
        s->grpc_status = atoi(v);
    else if (nl == 12 && memcmp(name, "grpc-message", 12) == 0)
        snprintf(s->grpc_message, sizeof s->grpc_message, "%s", v);
    return 0;
}

static int raw_on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *d, size_t n,
                       void *ud)
{
    (void)ng;
    (void)flags;
    bytes_put(&raw_find(ud, id)->body, d, n);
    return 0;
}

static void raw_srv_answer(raw_peer *rp, int32_t id);

static int raw_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    raw_peer *rp = ud;
    if (f->hd.stream_id == 0)
        return 0;
    raw_stream *s = raw_find(rp, f->hd.stream_id);
    if (f->hd.type == NGHTTP2_HEADERS)
        s->headers_frames++;
    if (f->hd.type == NGHTTP2_DATA)
        s->data_frames++;
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        s->end_stream = 1;
        if (nghttp2_session_check_server_session(ng))
            raw_srv_answer(rp, f->hd.stream_id);
    }
    return 0;
}

static int raw_on_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    (void)ng;
    raw_stream *s = raw_find(ud, id);
    s->closed = 1;
    s->close_code = code;
    return 0;
}

typedef struct raw_body {
    const uint8_t *p;
    size_t len, off;
    const char *trailer_status; /* server role: grpc-status trailers after the body */
    size_t max_frame;           /* > 0: DATA frames of at most this many bytes */
} raw_body;

static ssize_t raw_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *fl,
                        nghttp2_data_source *src, void *ud)
{
    (void)ud;
    raw_body *b = src->ptr;
    if (b->max_frame && len > b->max_frame)
        len = b->max_frame;
    size_t n = b->len - b->off < len ? b->len - b->off : len;
    memcpy(buf, b->p + b->off, n);
    b->off += n;
    if (b->off == b->len) {
        *fl |= NGHTTP2_DATA_FLAG_EOF;
        if (b->trailer_status) {
            nghttp2_nv tr[] = {{(uint8_t *)"grpc-status", (uint8_t *)b->trailer_status, 11,
                                strlen(b->trailer_status), 0}};
            *fl |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            assert_int_equal(nghttp2_submit_trailer(ng, id, tr, 1), 0);
        }
    }
    return (ssize_t)n;
}

static raw_peer *raw_new(int server, int mode)
{
    raw_peer *rp = calloc(1, sizeof *rp);
    rp->mode = mode;
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, raw_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, raw_on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, raw_on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, raw_on_close);
    if (server)
        assert_int_equal(nghttp2_session_server_new(&rp->ng, cb, rp), 0);
    else
        assert_int_equal(nghttp2_session_client_new(&rp->ng, cb, rp), 0);
    nghttp2_session_callbacks_del(cb);
    assert_int_equal(nghttp2_submit_settings(rp->ng, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    return rp;
}

static void raw_free(raw_peer *rp)
{
    nghttp2_session_del(rp->ng);
    for (int i = 0; i < rp->n; i++)
        bytes_free(&rp->st[i].body);
    free(rp);
}

/* Submit a request with a content-type, a method and a body; END_STREAM
 * after the body. */
static int32_t raw_request(raw_peer *rp, const char *method, const char *ctype, raw_body *body)
{
    nghttp2_nv nv[] = {
        {(uint8_t *)":method", (uint8_t *)method, 7, strlen(method), 0},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
        {(uint8_t *)":path", (uint8_t *)"/s/M", 5, 4, 0},
        {(uint8_t *)":authority", (uint8_t *)"x", 10, 1, 0},
        {(uint8_t *)"content-type", (uint8_t *)ctype, 12, strlen(ctype), 0},
    };
    nghttp2_data_provider prd = {.source.ptr = body, .read_callback = raw_read};
    int32_t id = nghttp2_submit_request(rp->ng, NULL, nv, 5, body ? &prd : NULL, NULL);
    assert_true(id > 0);
    return id;
}

static void test_server_bad_requests(void **state)
{
    (void)state;
    srv_app *a = srv_app_new(1000, 1);
    raw_peer *rp = raw_new(0, 0);
    ep es = ep_server(a->s), er = ep_raw(rp->ng);

    static const uint8_t ok[] = {0, 0, 0, 0, 2, 'h', 'i'};
    static const uint8_t big[] = {0, 0, 0, 0x03, 0xE9, 'x'};          /* 1001 > 1000 */
    static const uint8_t comp[] = {1, 0, 0, 0, 2, 'h', 'i'};
    static const uint8_t trunc[] = {0, 0, 0, 0, 9, 'a', 'b'};
    static const uint8_t trunc_prefix[] = {0, 0};
    static const uint8_t two[] = {0, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 1, 'b'};
    static const uint8_t flags[] = {4, 0, 0, 0, 1, 'a'};
    raw_body b_ok = {.p = ok, .len = sizeof ok}, b_ok2 = {.p = ok, .len = sizeof ok}, b_big = {.p = big, .len = sizeof big},
             b_comp = {.p = comp, .len = sizeof comp}, b_trunc = {.p = trunc, .len = sizeof trunc},
             b_tp = {.p = trunc_prefix, .len = sizeof trunc_prefix}, b_two = {.p = two, .len = sizeof two},
             b_flags = {.p = flags, .len = sizeof flags};

    int32_t i_ct = raw_request(rp, "POST", "application/json", &b_ok);
    int32_t i_get = raw_request(rp, "GET", "application/grpc", NULL);
    int32_t i_big = raw_request(rp, "POST", "application/grpc", &b_big);
    int32_t i_comp = raw_request(rp, "POST", "application/grpc", &b_comp);
    int32_t i_trunc = raw_request(rp, "POST", "application/grpc", &b_trunc);
    int32_t i_tp = raw_request(rp, "POST", "application/grpc", &b_tp);
    int32_t i_none = raw_request(rp, "POST", "application/grpc", NULL);
    int32_t i_two = raw_request(rp, "POST", "application/grpc", &b_two);
    int32_t i_flags = raw_request(rp, "POST", "application/grpc", &b_flags);
    int32_t i_ok = raw_request(rp, "POST", "application/grpc+proto", &b_ok2);
    pump(&er, &es, 0);
    assert_int_equal(es.last_rc, 0);

    raw_stream *s;
    s = raw_find(rp, i_ct);
    assert_int_equal(s->http_status, 415);
    assert_int_equal(s->grpc_status, -1);
    assert_true(s->closed);
    s = raw_find(rp, i_get);
    assert_int_equal(s->http_status, 405);
    assert_int_equal(s->grpc_status, -1);
    s = raw_find(rp, i_big);
    assert_int_equal(s->http_status, 200);
    assert_int_equal(s->grpc_status, 8);
    assert_non_null(strstr(s->grpc_message, "1001 bytes"));
    assert_true(s->closed);
    s = raw_find(rp, i_comp);
    assert_int_equal(s->grpc_status, 12);
    assert_string_equal(s->grpc_message, "compression not supported");
    s = raw_find(rp, i_trunc);
    assert_int_equal(s->grpc_status, 13);
    assert_non_null(strstr(s->grpc_message, "2 of 9 bytes"));
    s = raw_find(rp, i_tp);
    assert_int_equal(s->grpc_status, 13);
    s = raw_find(rp, i_none);
    assert_int_equal(s->grpc_status, 13);
    assert_string_equal(s->grpc_message, "request has no message");
    s = raw_find(rp, i_two);
    assert_int_equal(s->grpc_status, 12);
    assert_non_null(strstr(s->grpc_message, "more than one message"));
    s = raw_find(rp, i_flags);
    assert_int_equal(s->grpc_status, 13);
    /* Every rejection is a Trailers-Only response: one HEADERS frame, no DATA. */
    int32_t rejected[] = {i_big, i_comp, i_trunc, i_tp, i_none, i_two, i_flags};
    for (size_t k = 0; k < sizeof rejected / sizeof rejected[0]; k++) {
        s = raw_find(rp, rejected[k]);
        assert_int_equal(s->headers_frames, 1);
        assert_int_equal(s->data_frames, 0);
        assert_true(s->closed);
    }
    /* Only the good request reached the app, answered normally: headers,
     * DATA with the message, trailers. */
    assert_int_equal(a->nreq, 1);
    s = raw_find(rp, i_ok);
    assert_int_equal(s->http_status, 200);
    assert_int_equal(s->grpc_status, 0);
    assert_int_equal(s->headers_frames, 2);
    assert_int_equal(s->body.len, sizeof ok);
    assert_memory_equal(s->body.p, ok, sizeof ok);
    assert_false(qk_grpc_server_want_close(a->s));
    raw_free(rp);
    srv_app_free(a);
}

/* What the codec's server answers look like on the wire: Trailers-Only is a
 * single HEADERS frame; a message is HEADERS, DATA, trailers (after the
 * DATA); grpc-message is percent-encoded exactly as the spec says. */
static void test_server_wire_format(void **state)
{
    (void)state;
    srv_app *a = srv_app_new(1000, 0);
    raw_peer *rp = raw_new(0, 0);
    ep es = ep_server(a->s), er = ep_raw(rp->ng);
    static const uint8_t ok[] = {0, 0, 0, 0, 2, 'h', 'i'};
    /* The requests come in DATA frames of 1, 2 and 3 bytes: the prefix and
     * the payload are split across frames. */
    raw_body b[3] = {{.p = ok, .len = sizeof ok, .max_frame = 1},
                     {.p = ok, .len = sizeof ok, .max_frame = 2},
                     {.p = ok, .len = sizeof ok, .max_frame = 3}};
    int32_t i_err = raw_request(rp, "POST", "application/grpc", &b[0]);
    int32_t i_msg = raw_request(rp, "POST", "application/grpc", &b[1]);
    int32_t i_str = raw_request(rp, "POST", "application/grpc;charset=x", &b[2]);
    pump(&er, &es, 0);
    assert_int_equal(a->nreq, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(a->reqs[i].len, 2);
        assert_memory_equal(a->reqs[i].msg, "hi", 2);
    }
    int32_t s_err = 0, s_msg = 0, s_str = 0;
    for (int i = 0; i < 3; i++) {
        if (a->reqs[i].id == i_err)
            s_err = a->reqs[i].id;
        if (a->reqs[i].id == i_msg)
            s_msg = a->reqs[i].id;
        if (a->reqs[i].id == i_str)
            s_str = a->reqs[i].id;
    }
    assert_int_equal(qk_grpc_server_respond(a->s, s_err, 5, "50% off\n\xc3\xa9~ ok", NULL, 0), 0);
    assert_int_equal(qk_grpc_server_respond(a->s, s_msg, 0, NULL, (const uint8_t *)"abc", 3), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(qk_grpc_server_stream_send(a->s, s_str, (const uint8_t *)"xy", 2), 0);
    assert_int_equal(qk_grpc_server_stream_end(a->s, s_str, 0, ""), 0);
    pump(&er, &es, 0);

    raw_stream *s = raw_find(rp, i_err);
    assert_int_equal(s->http_status, 200);
    assert_int_equal(s->headers_frames, 1);
    assert_int_equal(s->data_frames, 0);
    assert_int_equal(s->grpc_status, 5);
    assert_string_equal(s->grpc_message, "50%25 off%0A%C3%A9~ ok");
    assert_true(s->end_stream);

    s = raw_find(rp, i_msg);
    static const uint8_t abc[] = {0, 0, 0, 0, 3, 'a', 'b', 'c'};
    assert_int_equal(s->headers_frames, 2);
    assert_true(s->data_frames >= 1);
    assert_int_equal(s->body.len, sizeof abc);
    assert_memory_equal(s->body.p, abc, sizeof abc);
    assert_int_equal(s->grpc_status, 0);
    assert_string_equal(s->grpc_message, "");
    assert_true(s->end_stream);

    s = raw_find(rp, i_str);
    static const uint8_t xy3[] = {0, 0, 0, 0, 2, 'x', 'y', 0, 0, 0, 0, 2, 'x', 'y',
                                  0, 0, 0, 0, 2, 'x', 'y'};
    assert_int_equal(s->headers_frames, 2);
    assert_int_equal(s->body.len, sizeof xy3);
    assert_memory_equal(s->body.p, xy3, sizeof xy3);
    assert_int_equal(s->grpc_status, 0);

    /* A status outside 0..16 is sent as 2 UNKNOWN. */
    raw_body b4 = {.p = ok, .len = sizeof ok};
    int32_t i4 = raw_request(rp, "POST", "application/grpc", &b4);
    pump(&er, &es, 0);
    assert_int_equal(a->nreq, 4);
    assert_int_equal(qk_grpc_server_respond(a->s, a->reqs[3].id, 99, NULL, NULL, 0), 0);
    pump(&er, &es, 0);
    assert_int_equal(raw_find(rp, i4)->grpc_status, 2);
    assert_int_equal(a->ncancel, 0);
    raw_free(rp);
    srv_app_free(a);
}

/* A large request over the limit is refused from its prefix, without the
 * server buffering it; the rest of its DATA is ignored. */
static void test_server_oversized_streamed(void **state)
{
    (void)state;
    srv_app *a = srv_app_new(64 * 1024, 1);
    raw_peer *rp = raw_new(0, 0);
    ep es = ep_server(a->s), er = ep_raw(rp->ng);
    size_t len = 5 + 3 * 1024 * 1024;
    uint8_t *m = calloc(1, len);
    m[2] = 0x30; /* 3 MiB */
    raw_body b = {.p = m, .len = len};
    int32_t id = raw_request(rp, "POST", "application/grpc", &b);
    pump(&er, &es, 1000);
    raw_stream *s = raw_find(rp, id);
    assert_int_equal(s->grpc_status, 8);
    assert_true(s->closed);
    assert_int_equal(a->nreq, 0);
    free(m);
    raw_free(rp);
    srv_app_free(a);
}

static void test_server_garbage(void **state)
{
    (void)state;
    srv_app *a = srv_app_new(1000, 1);
    static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_true(qk_grpc_server_recv(a->s, (const uint8_t *)junk, sizeof junk - 1) < 0);
    assert_true(qk_grpc_server_recv(a->s, (const uint8_t *)"x", 1) < 0);
    bytes b = {0};
    qk_grpc_server_flush(a->s, bytes_write, &b);
    /* What it wrote ends with a GOAWAY frame (type 7). */
    assert_true(b.len >= 9 + 8);
    int found_goaway = 0;
    for (size_t off = 0; off + 9 <= b.len;) {
        size_t flen = (size_t)b.p[off] << 16 | (size_t)b.p[off + 1] << 8 | b.p[off + 2];
        if (b.p[off + 3] == 7)
            found_goaway = 1;
        off += 9 + flen;
    }
    assert_true(found_goaway);
    assert_true(qk_grpc_server_want_close(a->s));
    bytes_free(&b);
    srv_app_free(a);

    /* A valid preface followed by a broken frame. */
    a = srv_app_new(1000, 1);
    bytes in = {0};
    bytes_put(&in, (const uint8_t *)NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
    static const uint8_t bad_settings[] = {0, 0, 5, 4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5}; /* len 5 */
    bytes_put(&in, bad_settings, sizeof bad_settings);
    int rc = qk_grpc_server_recv(a->s, in.p, in.len);
    bytes out = {0};
    qk_grpc_server_flush(a->s, bytes_write, &out);
    assert_true(rc < 0 || qk_grpc_server_want_close(a->s));
    assert_true(qk_grpc_server_want_close(a->s));
    bytes_free(&in);
    bytes_free(&out);
    srv_app_free(a);
}

/* ---- a raw nghttp2 server against the codec's client ------------------ */

enum {
    RAW_415,          /* :status 415, no grpc-status */
    RAW_503,          /* :status 503 */
    RAW_REFUSE,       /* RST_STREAM REFUSED_STREAM */
    RAW_NO_STATUS,    /* 200, a message, END_STREAM without trailers */
    RAW_TRUNCATED,    /* 200, half a message, trailers grpc-status 0 */
    RAW_PARTIAL_ERR,  /* 200, half a message, trailers grpc-status 9 */
    RAW_COMPRESSED,   /* 200, compressed message */
    RAW_TOO_BIG,      /* 200, a message over max_msg */
    RAW_TWO,          /* 200, two messages for a unary call */
    RAW_STATUS_WINS,  /* 404 but grpc-status 7 present */
    RAW_PCT,          /* trailers-only, grpc-message with invalid %-sequences */
    RAW_SPLIT         /* 200, messages m0 m1 m2 in 1-byte DATA frames, status 0 */
};

static raw_body raw_bodies[32];
static int raw_nbodies;

static void raw_srv_answer(raw_peer *rp, int32_t id)
{
    nghttp2_session *ng = rp->ng;
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), 0}
    nghttp2_nv ok_hdr[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
    static const uint8_t msg[] = {0, 0, 0, 0, 2, 'o', 'k'};
    static const uint8_t half[] = {0, 0, 0, 0, 9, 'o', 'k'};
    static const uint8_t comp[] = {1, 0, 0, 0, 2, 'o', 'k'};
    static const uint8_t big[] = {0, 0, 1, 0, 0, 'o', 'k'}; /* 65536 */
    static const uint8_t two[] = {0, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 1, 'b'};
    raw_body *b = &raw_bodies[raw_nbodies++ % 32];
    nghttp2_data_provider prd = {.source.ptr = b, .read_callback = raw_read};
    switch (rp->mode) {
    case RAW_415: {
        nghttp2_nv nv[] = {NV(":status", "415")};
        nghttp2_submit_response(ng, id, nv, 1, NULL);
        break;
    }
    case RAW_503: {
        nghttp2_nv nv[] = {NV(":status", "503"), NV("content-type", "text/html")};
        *b = (raw_body){.p = (const uint8_t *)"<html>busy</html>", .len = 17};
        nghttp2_submit_response(ng, id, nv, 2, &prd);
        break;
    }
    case RAW_REFUSE:
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
        break;
    case RAW_NO_STATUS:
        *b = (raw_body){.p = msg, .len = sizeof msg};
        nghttp2_submit_response(ng, id, ok_hdr, 2, &prd);
        break;
    case RAW_SPLIT: {
        static const uint8_t three[] = {0, 0, 0, 0, 2, 'm', '0', 0, 0, 0, 0, 2, 'm', '1',
                                        0, 0, 0, 0, 2, 'm', '2'};
        *b = (raw_body){.p = three, .len = sizeof three, .trailer_status = "0", .max_frame = 1};
        nghttp2_submit_response(ng, id, ok_hdr, 2, &prd);
        break;
    }
    case RAW_PARTIAL_ERR:
        *b = (raw_body){.p = half, .len = sizeof half, .trailer_status = "9"};
        nghttp2_submit_response(ng, id, ok_hdr, 2, &prd);
        break;
    case RAW_TRUNCATED:
    case RAW_COMPRESSED:
    case RAW_TOO_BIG:
    case RAW_TWO: {
        const uint8_t *p = rp->mode == RAW_TRUNCATED    ? half
                           : rp->mode == RAW_COMPRESSED ? comp
                           : rp->mode == RAW_TOO_BIG    ? big
                                                        : two;
        size_t n = rp->mode == RAW_TWO ? sizeof two : sizeof msg;
        *b = (raw_body){.p = p, .len = n, .trailer_status = "0"};
        nghttp2_submit_response(ng, id, ok_hdr, 2, &prd);
        break;
    }
    case RAW_STATUS_WINS: {
        nghttp2_nv nv[] = {NV(":status", "404"), NV("grpc-status", "7"),
                           NV("grpc-message", "nope")};
        nghttp2_submit_response(ng, id, nv, 3, NULL);
        break;
    }
    case RAW_PCT: {
        nghttp2_nv nv[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                           NV("grpc-status", "3"), NV("grpc-message", "a%zz%4 %41%e2%9C%93%")};
        nghttp2_submit_response(ng, id, nv, 4, NULL);
        break;
    }
    }
#undef NV
}

static res client_vs_raw(int mode, int streaming, int want_status, const char *want_substr)
{
    qk_grpc_client *c = qk_grpc_client_new(&cli_cbs, NULL, "h:1", 1000, 0);
    raw_peer *rp = raw_new(1, mode);
    ep ec = ep_client(c), er = ep_raw(rp->ng);
    res r = {0};
    assert_true(qk_grpc_client_call(c, "/s/M", 0, NULL, (const uint8_t *)"q", 1, streaming, &r) >
                0);
    pump(&ec, &er, 0);
    assert_int_equal(ec.last_rc, 0);
    assert_int_equal(r.finals, 1);
    if (r.status != want_status)
        fail_msg("mode %d: status %d (%s), want %d", mode, r.status, r.message, want_status);
    if (want_substr && !strstr(r.message, want_substr))
        fail_msg("mode %d: message '%s' lacks '%s'", mode, r.message, want_substr);
    if (want_status != 0)
        assert_true(r.msg_null || streaming);
    res_free(&r, 1);
    r.data = NULL;
    qk_grpc_client_free(c);
    raw_free(rp);
    return r;
}

static void test_client_bad_responses(void **state)
{
    (void)state;
    client_vs_raw(RAW_415, 0, 2, "HTTP status 415");
    client_vs_raw(RAW_415, 1, 2, "415");
    client_vs_raw(RAW_503, 0, 14, "503");
    client_vs_raw(RAW_REFUSE, 0, 14, "refused");
    client_vs_raw(RAW_NO_STATUS, 0, 13, "without grpc-status");
    client_vs_raw(RAW_TRUNCATED, 0, 13, "inside a message");
    client_vs_raw(RAW_TRUNCATED, 1, 13, "inside a message");
    client_vs_raw(RAW_PARTIAL_ERR, 0, 9, NULL);
    client_vs_raw(RAW_COMPRESSED, 0, 13, "compressed");
    client_vs_raw(RAW_TOO_BIG, 0, 8, "65536 bytes");
    client_vs_raw(RAW_TWO, 0, 13, "more than one message");
    client_vs_raw(RAW_STATUS_WINS, 0, 7, "nope");
    client_vs_raw(RAW_PCT, 0, 3, "a%zz%4 A\xe2\x9c\x93%");
    res r = client_vs_raw(RAW_SPLIT, 1, 0, NULL);
    assert_int_equal(r.nmsgs, 3);
    assert_true(r.seq_ok);
    client_vs_raw(RAW_SPLIT, 0, 13, "more than one message");
}

/* Garbage from the "server" is a fatal client error; fail_all then ends the calls. */
static void test_client_garbage(void **state)
{
    (void)state;
    qk_grpc_client *c = qk_grpc_client_new(&cli_cbs, NULL, "h:1", 1000, 0);
    res r = {0};
    assert_true(qk_grpc_client_call(c, "/s/M", 0, NULL, (const uint8_t *)"q", 1, 0, &r) > 0);
    bytes out = {0};
    assert_true(qk_grpc_client_flush(c, bytes_write, &out) > 0);
    static const char junk[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
    assert_true(qk_grpc_client_recv(c, (const uint8_t *)junk, sizeof junk - 1) < 0);
    qk_grpc_client_flush(c, bytes_write, &out);
    assert_false(qk_grpc_client_usable(c));
    assert_int_equal(r.finals, 0);
    qk_grpc_client_fail_all(c, "protocol error");
    assert_int_equal(r.finals, 1);
    assert_int_equal(r.status, 14);
    qk_grpc_client_free(c);
    bytes_free(&out);
}

/* A lane's worker hint: the client puts it in its first SETTINGS frame, the
 * silo finds it before any session exists, and a server session ignores it
 * (an unknown setting) and serves calls as usual. */
static void test_worker_hint(void **state)
{
    (void)state;
    for (unsigned want = 0; want <= 3; want += 3) {
        qk_grpc_client *c = qk_grpc_client_new(&cli_cbs, NULL, "h:1", 1000, want);
        assert_non_null(c);
        bytes out = {0};
        assert_true(qk_grpc_client_flush(c, bytes_write, &out) > 24 + 9);
        unsigned w = 77;
        assert_int_equal(qk_grpc_worker_hint(out.p, out.len, &w), 1);
        assert_int_equal(w, want);
        /* The SETTINGS frame: 24 + 9 + its length; any shorter prefix asks for more. */
        size_t end = 24 + 9 + ((size_t)out.p[24] << 16 | (size_t)out.p[25] << 8 | out.p[26]);
        assert_true(end <= out.len);
        for (size_t n = 0; n < end; n++)
            assert_int_equal(qk_grpc_worker_hint(out.p, n, &w), -1);
        assert_int_equal(qk_grpc_worker_hint(out.p, end, &w), 1);
        assert_int_equal(w, want);
        qk_grpc_client_free(c);
        bytes_free(&out);
    }
    unsigned w = 77;
    static const char other[] = "GET / HTTP/1.1\r\n\r\n";
    assert_int_equal(qk_grpc_worker_hint((const uint8_t *)other, sizeof other - 1, &w), 0);
    assert_int_equal(w, 0);
    /* A preface followed by some other frame (here a PING) has no hint. */
    uint8_t ping[24 + 9 + 8] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    ping[26] = 8;
    ping[27] = 6;
    assert_int_equal(qk_grpc_worker_hint(ping, sizeof ping, &w), 0);

    /* A hinted client against a server session: the call goes through. */
    pair p;
    p.app = srv_app_new(1 << 20, 1);
    p.cli = qk_grpc_client_new(&cli_cbs, NULL, "127.0.0.1:7000", 1 << 20, 2);
    p.es = ep_server(p.app->s);
    p.ec = ep_client(p.cli);
    res r = {0};
    assert_true(qk_grpc_client_call(p.cli, "/quark.ActorService/InvokeActor", 0, NULL,
                                    (const uint8_t *)"hi", 2, 0, &r) > 0);
    pair_pump(&p, 0);
    assert_int_equal(r.finals, 1);
    assert_int_equal(r.status, 0);
    assert_memory_equal(r.data, "hi", 2);
    res_free(&r, 1);
    pair_free(&p);
}

/* ---- helpers ---------------------------------------------------------- */

static uint64_t timeout_of(const char *v)
{
    uint64_t ms = 777;
    if (qk_grpc_parse_timeout(v, strlen(v), &ms) != 0)
        return UINT64_MAX;
    return ms;
}

static void test_parse_timeout(void **state)
{
    (void)state;
    assert_int_equal(timeout_of("2983m"), 2983);
    assert_int_equal(timeout_of("5S"), 5000);
    assert_int_equal(timeout_of("1H"), 3600000);
    assert_int_equal(timeout_of("2M"), 120000);
    assert_int_equal(timeout_of("100u"), 1);
    assert_int_equal(timeout_of("1001u"), 2);
    assert_int_equal(timeout_of("1n"), 1);
    assert_int_equal(timeout_of("2000001n"), 3);
    assert_int_equal(timeout_of("0m"), 1);
    assert_int_equal(timeout_of("12345678m"), 12345678);
    assert_int_equal(timeout_of("99999999H"), QK_GRPC_TIMEOUT_MAX_MS);
    assert_int_equal(timeout_of("123456789m"), UINT64_MAX); /* 9 digits */
    assert_int_equal(timeout_of("m"), UINT64_MAX);
    assert_int_equal(timeout_of("5"), UINT64_MAX);
    assert_int_equal(timeout_of("5s"), UINT64_MAX);
    assert_int_equal(timeout_of("-5S"), UINT64_MAX);
    assert_int_equal(timeout_of("5 S"), UINT64_MAX);
    assert_int_equal(timeout_of(""), UINT64_MAX);
    assert_int_equal(qk_grpc_parse_timeout(NULL, 0, NULL), -1);

    assert_int_equal(qk_grpc_status_from_http(400), 13);
    assert_int_equal(qk_grpc_status_from_http(401), 16);
    assert_int_equal(qk_grpc_status_from_http(403), 7);
    assert_int_equal(qk_grpc_status_from_http(404), 12);
    assert_int_equal(qk_grpc_status_from_http(415), 2);
    assert_int_equal(qk_grpc_status_from_http(429), 14);
    assert_int_equal(qk_grpc_status_from_http(504), 14);
    assert_int_equal(qk_grpc_status_from_http(500), 2);
}

/* Timeouts the client sends arrive as the same number of milliseconds, or
 * rounded up when they need a coarser unit; an invalid header is ignored. */
static void test_timeout_on_the_wire(void **state)
{
    (void)state;
    pair p;
    pair_init(&p, 1000, 1);
    res r[3] = {{0}};
    uint64_t sent[3] = {1, 99999999, 100000001};
    uint64_t want[3] = {1, 99999999, 100001000};
    for (int i = 0; i < 3; i++)
        assert_true(qk_grpc_client_call(p.cli, "/s/T", sent[i], NULL, NULL, 0, 0, &r[i]) > 0);
    pair_pump(&p, 0);
    assert_int_equal(p.app->nreq, 3);
    for (int i = 0; i < 3; i++) {
        int found = 0;
        for (int k = 0; k < 3; k++)
            found |= p.app->reqs[k].timeout_ms == want[i];
        assert_true(found);
    }
    res_free(r, 3);
    pair_free(&p);

    srv_app *a = srv_app_new(1000, 1);
    raw_peer *rp = raw_new(0, 0);
    ep es = ep_server(a->s), er = ep_raw(rp->ng);
    static const uint8_t ok[] = {0, 0, 0, 0, 0};
    raw_body b = {.p = ok, .len = sizeof ok};
    nghttp2_nv nv[] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
        {(uint8_t *)":path", (uint8_t *)"/s/M", 5, 4, 0},
        {(uint8_t *)":authority", (uint8_t *)"x", 10, 1, 0},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
        {(uint8_t *)"grpc-timeout", (uint8_t *)"123456789m", 12, 10, 0},
    };
    nghttp2_data_provider prd = {.source.ptr = &b, .read_callback = raw_read};
    assert_true(nghttp2_submit_request(rp->ng, NULL, nv, 6, &prd, NULL) > 0);
    pump(&er, &es, 0);
    assert_int_equal(a->nreq, 1);
    assert_int_equal(a->reqs[0].timeout_ms, 0);
    assert_int_equal(a->reqs[0].len, 0);
    raw_free(rp);
    srv_app_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary_roundtrip),
        cmocka_unit_test(test_many_streams_out_of_order),
        cmocka_unit_test(test_message_sizes),
        cmocka_unit_test(test_status_message_roundtrip),
        cmocka_unit_test(test_status_map),
        cmocka_unit_test(test_server_streaming),
        cmocka_unit_test(test_client_cancel),
        cmocka_unit_test(test_server_shutdown),
        cmocka_unit_test(test_server_goaway_now),
        cmocka_unit_test(test_shutdown_race),
        cmocka_unit_test(test_stream_backpressure),
        cmocka_unit_test(test_fail_all),
        cmocka_unit_test(test_server_free_cancels_held),
        cmocka_unit_test(test_server_bad_requests),
        cmocka_unit_test(test_server_wire_format),
        cmocka_unit_test(test_server_oversized_streamed),
        cmocka_unit_test(test_server_garbage),
        cmocka_unit_test(test_client_bad_responses),
        cmocka_unit_test(test_client_garbage),
        cmocka_unit_test(test_worker_hint),
        cmocka_unit_test(test_parse_timeout),
        cmocka_unit_test(test_timeout_on_the_wire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
