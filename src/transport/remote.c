/*
 * remote.c - the cluster client's remote side (Quark's TCP protocol).
 *
 * A remote client owns one I/O thread running a libuv loop and one
 * connection to a silo of its connection string. Application threads build
 * a complete REQUEST frame, push it on a lock-free queue and wake the loop;
 * the loop gives it a request id, appends it to the connection's output
 * (written once per loop turn) and keeps it in a table until its RESPONSE.
 * Blocking callers wait on a futex; callbacks run on the I/O thread.
 *
 * Delivery: a call is sent again only when it surely did not run (never
 * written to a socket, or answered QUARK_EUNAVAILABLE by a silo that did not
 * run it) or when its method is @quark.idempotent. Otherwise a lost
 * connection completes it with QUARK_EUNKNOWN: at most once.
 *
 * Connection loss: the client reconnects by itself, trying the listed silos
 * in turn with jittered exponential backoff; calls wait for it until their
 * deadline.
 *
 * With the gRPC transport the same machinery drives an HTTP/2 session
 * (grpc_codec.h) instead of frames: a call is a stream of
 * /quark.ActorService/InvokeActor, its id is the stream id, the cluster id
 * travels as quark-cluster-id metadata on every call.
 */
#define _GNU_SOURCE /* memrchr */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "quark/actor_service.pb-c.h"
#include "core/buf.h"
#include "runtime/runtime.h"
#include "transport/frame.h"
#include "transport/grpc_codec.h"
#include "transport/wire.h"
#include "transport/remote.h"

#define QK_TICK_MS 5
#define QK_CONNECT_TIMEOUT_MS 3000

enum { RC_OP_CALL = 0, RC_OP_SUB, RC_OP_UNSUB };

typedef struct qk_rsub {
    struct qk_rcall *env;         /* the SUBSCRIBE envelope while active */
    quark_event_fn fn;
    void *arg;
    bool ended;                   /* its final callback ran */
    bool released;                /* the application let go (quark_unsubscribe) */
    struct qk_remote *owner;
    struct qk_rsub *all_next;
} qk_rsub;

typedef struct qk_rcall {
    qk_mpsc_node qnode;
    uint8_t op;                   /* RC_OP_* */
    qk_rsub *rsub;
    struct qk_rcall *next;        /* waiting queue / unsent list */
    qk_deadline dl;
    uint64_t id;
    uint8_t rk;                   /* QK_RK_WAITER or QK_RK_CALLBACK */
    bool idempotent;
    bool written;                 /* handed to a socket: it may have run */
    bool in_table;
    uint8_t attempts;
    qk_waiter *waiter;
    quark__trampoline_fn tramp;
    void (*fn)(void);
    void *arg;
    const ProtobufCMessageDescriptor *reply_desc;
    const quark_method_desc *md;  /* the method (its fast codecs) */
    const char *method;           /* for messages */
    size_t len;
    uint8_t frame[];              /* the complete REQUEST frame */
} qk_rcall;

typedef struct qk_endpoint {
    char host[256];
    char port[8];
} qk_endpoint;

enum { RC_IDLE, RC_CONNECTING, RC_HELLO, RC_READY };

struct qk_remote {
    quark_client *client;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t tick;
    qk_mpsc inbox;
    _Atomic int connected;        /* a connection said HELLO_OK */
    _Atomic int sleeping;         /* the I/O thread is (about to be) in epoll */
    _Atomic int stopping;
    /* connect() handshake with the application thread */
    uv_mutex_t mu;
    uv_cond_t cv;
    int first_done;               /* 1 connected, -1 every endpoint failed once */
    char first_error[512];
    /* endpoints */
    qk_endpoint *eps;
    size_t neps, cur_ep;
    unsigned failures;            /* consecutive failed connects */
    uint64_t reconnect_at_ms;
    uint64_t attempt_started_ms;  /* when the current connect began */
    /* the connection */
    int state;
    uv_tcp_t *tcp;
    uv_connect_t creq;
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out, *wbuf;
    size_t out_len, out_cap, wbuf_cap;
    bool writing;
    uv_write_t wreq;
    qk_rcall *unsent, *unsent_tail; /* frames in `out`, not yet written */
    /* calls */
    qk_rcall **slots;             /* id -> call, open addressing */
    size_t mask, count;
    qk_rcall *waiting, *waiting_tail; /* to send once connected */
    qk_dlheap heap;
    uint64_t next_id;
    size_t max_msg;
    qk_arena arena;
    bool thread_started_;
    qk_rsub *all_subs;            /* every subscription not yet freed */
    qk_grpc_client *grpc;         /* gRPC transport: the connection's session */
    bool in_recv_;                /* inside qk_grpc_client_recv: no flushing */
    const char *meta[3];          /* quark-cluster-id metadata */
};

static QK_TLS qk_remote *tls_remote; /* set on the I/O thread */

/* ---- call table ---- */

static size_t slot_of(const qk_remote *r, uint64_t id)
{
    return (size_t)qk_fmix64(id) & r->mask;
}

static int table_put(qk_remote *r, qk_rcall *c)
{
    if ((r->count + 1) * 2 > r->mask + 1) {
        size_t ncap = (r->mask + 1) * 2;
        qk_rcall **ns = calloc(ncap, sizeof *ns);
        if (!ns)
            return -1;
        qk_rcall **old = r->slots;
        size_t oldn = r->mask + 1;
        r->slots = ns;
        r->mask = ncap - 1;
        for (size_t i = 0; i < oldn; i++) {
            if (!old[i])
                continue;
            size_t j = slot_of(r, old[i]->id);
            while (ns[j])
                j = (j + 1) & r->mask;
            ns[j] = old[i];
        }
        free(old);
    }
    size_t i = slot_of(r, c->id);
    while (r->slots[i])
        i = (i + 1) & r->mask;
    r->slots[i] = c;
    r->count++;
    c->in_table = true;
    return 0;
}

static qk_rcall *table_take(qk_remote *r, uint64_t id)
{
    size_t i = slot_of(r, id);
    for (;; i = (i + 1) & r->mask) {
        qk_rcall *c = r->slots[i];
        if (!c)
            return NULL;
        if (c->id == id)
            break;
    }
    qk_rcall *found = r->slots[i];
    for (size_t j = (i + 1) & r->mask;; j = (j + 1) & r->mask) {
        qk_rcall *b = r->slots[j];
        if (!b)
            break;
        size_t home = slot_of(r, b->id);
        if (((j - home) & r->mask) >= ((j - i) & r->mask)) {
            r->slots[i] = b;
            i = j;
        }
    }
    r->slots[i] = NULL;
    r->count--;
    found->in_table = false;
    return found;
}

/* ---- completing calls ---- */

static void rcall_free(qk_rcall *c)
{
    free(c);
}

static void complete(qk_remote *r, qk_rcall *c, quark_err err, const char *errmsg,
                     const uint8_t *result, size_t len)
{
    qk_dlheap_remove(&r->heap, &c->dl);
    if (c->rk == QK_RK_WAITER) {
        qk_waiter_complete(c->waiter, err, errmsg, result, len);
    } else {
        ProtobufCMessage *msg = NULL;
        if (err == QUARK_OK) {
            msg = qk_msg_unpack_reply(c->md, c->reply_desc, &r->arena.pb, result, len);
            if (!msg) {
                err = QUARK_EPROTO;
                errmsg = "the reply could not be decoded";
            }
        }
        c->tramp(c->fn, err, err == QUARK_OK ? NULL : (errmsg ? errmsg : quark_strerror(err)), msg,
                 c->arg);
        qk_arena_reset(&r->arena);
    }
    rcall_free(c);
}

static void sub_end(qk_rsub *rs, quark_err why, const char *msg)
{
    if (rs->ended)
        return;
    rs->ended = true;
    rs->env = NULL;
    rs->fn(NULL, why, msg, rs->arg);
}

static void waiting_push(qk_remote *r, qk_rcall *c)
{
    c->next = NULL;
    if (r->waiting_tail)
        r->waiting_tail->next = c;
    else
        r->waiting = c;
    r->waiting_tail = c;
}

/* ---- gRPC transport ---- */

/* The quark_err a gRPC status stands for (the inverse of the silo's
 * mapping, docs/wire-protocol.md). */
static quark_err err_of_status(int st)
{
    switch (st) {
    case 0: return QUARK_OK;
    case 1: return QUARK_ECLOSED;         /* CANCELLED */
    case 3: return QUARK_EINVAL;          /* INVALID_ARGUMENT */
    case 4: return QUARK_ETIMEDOUT;       /* DEADLINE_EXCEEDED */
    case 5: return QUARK_ENOTYPE;         /* NOT_FOUND */
    case 8: return QUARK_ETOOBIG;         /* RESOURCE_EXHAUSTED */
    case 9: return QUARK_ECLUSTER;        /* FAILED_PRECONDITION */
    case 10: return QUARK_ECYCLE;         /* ABORTED */
    case 12: return QUARK_ENOMETHOD;      /* UNIMPLEMENTED */
    case 14: return QUARK_EUNAVAILABLE;   /* UNAVAILABLE */
    case 2: return QUARK_EUNKNOWN;        /* UNKNOWN */
    default: return QUARK_EINTERNAL;
    }
}

static void finish_call(qk_remote *r, qk_rcall *c, quark_err err, const char *errmsg,
                        size_t errlen, const uint8_t *result, size_t len);
static void sub_end(qk_rsub *rs, quark_err why, const char *msg);
static void finish_encoded(qk_remote *r, qk_rcall *c, const uint8_t *p, size_t n);
static void deliver_event(qk_remote *r, qk_rcall *c, const uint8_t *p, size_t n);
static qk_rcall *table_take(qk_remote *r, uint64_t id);

static void g_on_response(void *ud, void *call_ud, int st, const char *gmsg, const uint8_t *msg,
                          size_t len)
{
    qk_remote *r = ud;
    qk_rcall *c = call_ud;
    table_take(r, c->id);
    if (st != 0)
        finish_call(r, c, err_of_status(st), gmsg, strlen(gmsg), NULL, 0);
    else
        finish_encoded(r, c, msg, len);
}

static void g_on_stream_msg(void *ud, void *call_ud, const uint8_t *msg, size_t len)
{
    deliver_event(ud, call_ud, msg, len);
}

static void g_on_stream_end(void *ud, void *call_ud, int st, const char *gmsg)
{
    qk_remote *r = ud;
    qk_rcall *c = call_ud;
    table_take(r, c->id);
    sub_end(c->rsub, st == 0 ? QUARK_ECLOSED : err_of_status(st), gmsg);
    free(c);
}

static const qk_grpc_client_cbs g_cbs = {.on_response = g_on_response,
                                         .on_stream_msg = g_on_stream_msg,
                                         .on_stream_end = g_on_stream_end};

/* ---- output ---- */

static void on_written(uv_write_t *req, int status);
static void conn_lost(qk_remote *r, const char *why);

static int out_append(qk_remote *r, const uint8_t *p, size_t n)
{
    if (qk_buf_reserve(&r->out, &r->out_cap, r->out_len, n, 16384) != 0)
        return -1;
    memcpy(r->out + r->out_len, p, n);
    r->out_len += n;
    return 0;
}

static void g_write(void *wud, const uint8_t *data, size_t len)
{
    /* Out of memory drops output; the calls' deadlines complete them. */
    (void)out_append(wud, data, len);
}

static void flush(qk_remote *r)
{
    if (r->grpc && !r->in_recv_)
        qk_grpc_client_flush(r->grpc, g_write, r);
    if (r->writing || r->out_len == 0 || r->state < RC_HELLO)
        return;
    size_t len = qk_buf_swap(&r->out, &r->out_cap, &r->out_len, &r->wbuf, &r->wbuf_cap);
    for (qk_rcall *c = r->unsent; c; c = c->next)
        c->written = true; /* from now on it may reach the silo */
    r->unsent = r->unsent_tail = NULL;
    uv_buf_t buf = uv_buf_init((char *)r->wbuf, (unsigned)len);
    r->writing = true;
    if (uv_write(&r->wreq, (uv_stream_t *)r->tcp, &buf, 1, on_written) != 0) {
        r->writing = false;
        conn_lost(r, "write failed");
    }
}

static void on_written(uv_write_t *req, int status)
{
    qk_remote *r = QK_CONTAINER_OF(req, qk_remote, wreq);
    r->writing = false;
    if (status < 0) {
        if (status != UV_ECANCELED)
            conn_lost(r, uv_strerror(status));
        return;
    }
    flush(r);
}

/* A call is in the table and its bytes in the output: count the attempt and
 * remember it as unsent until the next write takes it. */
static void mark_queued(qk_remote *r, qk_rcall *c)
{
    c->attempts++;
    c->next = NULL;
    if (r->unsent_tail)
        r->unsent_tail->next = c;
    else
        r->unsent = c;
    r->unsent_tail = c;
}

/* Send (or queue) one call. */
static void send_call(qk_remote *r, qk_rcall *c)
{
    if (r->state != RC_READY) {
        waiting_push(r, c);
        return;
    }
    if (r->grpc) {
        /* No grpc-timeout header: the deadline travels in the request body
         * (deadline_ms), which the silo honours, and the client enforces it
         * itself; a header whose value changes on every call would cost a
         * format and an unindexable HPACK literal each time. */
        int32_t sid = qk_grpc_client_call(
            r->grpc, c->op == RC_OP_SUB ? "/quark.ActorService/StreamActorEvents"
                                        : "/quark.ActorService/InvokeActor",
            0, r->meta, c->frame + QK_FRAME_HEADER, c->len - QK_FRAME_HEADER,
            c->op == RC_OP_SUB, c);
        if (sid < 0) {
            if (c->op == RC_OP_SUB) {
                sub_end(c->rsub, (quark_err)sid, "the subscription could not be sent");
                free(c);
            } else {
                complete(r, c, (quark_err)sid, "the call could not be sent", NULL, 0);
            }
            return;
        }
        c->id = (uint64_t)sid;
        if (table_put(r, c) != 0) { /* keep nothing we cannot find again */
            qk_grpc_client_cancel(r->grpc, sid);
            complete(r, c, QUARK_ENOMEM, "out of memory sending a call", NULL, 0);
            return;
        }
        mark_queued(r, c);
        return;
    }
    c->id = ++r->next_id;
    /* the id lives at bytes 8..15 of the frame header */
    for (int i = 0; i < 8; i++)
        c->frame[8 + i] = (uint8_t)(c->id >> (56 - 8 * i));
    if (table_put(r, c) != 0 || out_append(r, c->frame, c->len) != 0) {
        if (c->in_table)
            table_take(r, c->id);
        complete(r, c, QUARK_ENOMEM, "out of memory sending a call", NULL, 0);
        return;
    }
    mark_queued(r, c);
}

/* ---- connection ---- */

static void on_tcp_closed(uv_handle_t *h)
{
    free(h);
}

static uint64_t backoff_ms(const qk_remote *r)
{
    const quark_retry_policy *p = &r->client->opts.retry;
    uint64_t b = p->initial_backoff_ms ? p->initial_backoff_ms : 50;
    for (unsigned i = 1; i < r->failures && b < (p->max_backoff_ms ? p->max_backoff_ms : 2000); i++)
        b *= 2;
    uint64_t max = p->max_backoff_ms ? p->max_backoff_ms : 2000;
    if (b > max)
        b = max;
    return b / 2 + (uint64_t)rand() % (b / 2 + 1); /* jitter: [b/2, b] */
}

static void first_result(qk_remote *r, int result, const char *why)
{
    uv_mutex_lock(&r->mu);
    if (r->first_done == 0 || (result == 1 && r->first_done != 1)) {
        if (result < 0 && why)
            snprintf(r->first_error, sizeof r->first_error, "%s", why);
        r->first_done = result;
        uv_cond_broadcast(&r->cv);
    }
    uv_mutex_unlock(&r->mu);
}

static void conn_lost(qk_remote *r, const char *why)
{
    if (r->state == RC_IDLE)
        return;
    qk_endpoint *ep = &r->eps[r->cur_ep];
    char msg[400];
    int was_ready = r->state == RC_READY;
    r->state = RC_IDLE;
    atomic_store(&r->connected, 0);
    uv_close((uv_handle_t *)r->tcp, on_tcp_closed);
    r->tcp = NULL;
    r->in_len = r->out_len = 0;
    r->unsent = r->unsent_tail = NULL;
    r->writing = false;
    /* Every call in the table was sent on this connection. */
    for (size_t i = 0; i <= r->mask && r->count; i++) {
        qk_rcall *c = r->slots[i];
        if (!c)
            continue;
        table_take(r, c->id);
        i = (size_t)-1; /* the table shifted: rescan */
        if (c->op == RC_OP_SUB) {
            snprintf(msg, sizeof msg, "connection to %s:%s lost (%s): the subscription ended; "
                     "subscribe again to continue", ep->host, ep->port, why);
            sub_end(c->rsub, QUARK_EUNAVAILABLE, msg);
            rcall_free(c);
            continue;
        }
        unsigned max = r->client->opts.retry.max_attempts ? r->client->opts.retry.max_attempts : 1;
        if (!c->written || (c->idempotent && c->attempts < max)) {
            waiting_push(r, c); /* did not run, or safe to run again */
        } else {
            snprintf(msg, sizeof msg, "connection to %s:%s lost (%s) after %s was sent: its "
                     "outcome is unknown (not retried: the method is not @quark.idempotent)",
                     ep->host, ep->port, why, c->method);
            complete(r, c, QUARK_EUNKNOWN, msg, NULL, 0);
        }
    }
    if (r->grpc) {
        qk_grpc_client_free(r->grpc); /* runs no callback: every call was handled above */
        r->grpc = NULL;
    }
    r->failures++;
    if (!was_ready) {
        snprintf(msg, sizeof msg, "%s:%s: %s", ep->host, ep->port, why);
        if (r->failures >= r->neps)
            first_result(r, -1, msg);
    }
    r->cur_ep = (r->cur_ep + 1) % r->neps;
    r->reconnect_at_ms = qk_now_ms_coarse() + (was_ready ? 0 : backoff_ms(r));
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    qk_remote *r = h->data;
    if (r->in_cap - r->in_len < 65536) {
        size_t cap = r->in_cap ? r->in_cap * 2 : 131072;
        uint8_t *b = realloc(r->in, cap);
        if (!b) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        r->in = b;
        r->in_cap = cap;
    }
    *buf = uv_buf_init((char *)r->in + r->in_len, (unsigned)(r->in_cap - r->in_len));
}

/* A call's answer arrived (either transport); `c` is out of the table. */
static void finish_call(qk_remote *r, qk_rcall *c, quark_err err, const char *errmsg,
                        size_t errlen, const uint8_t *result, size_t len)
{
    unsigned max = r->client->opts.retry.max_attempts ? r->client->opts.retry.max_attempts : 1;
    if (err == QUARK_EUNAVAILABLE && c->attempts < max) {
        c->written = false; /* the silo says it did not run it */
        waiting_push(r, c);
        return;
    }
    if (c->rk == QK_RK_CALLBACK && err == QUARK_OK) {
        ProtobufCMessage *msg =
            qk_msg_unpack_reply(c->md, c->reply_desc, &r->arena.pb, result, len);
        qk_dlheap_remove(&r->heap, &c->dl);
        if (msg)
            c->tramp(c->fn, QUARK_OK, NULL, msg, c->arg);
        else
            c->tramp(c->fn, QUARK_EPROTO, "the reply could not be decoded", NULL, c->arg);
        rcall_free(c);
        return;
    }
    char errbuf[512];
    if (err != QUARK_OK) {
        if (errmsg && errlen)
            snprintf(errbuf, sizeof errbuf, "%.*s", (int)(errlen > 511 ? 511 : errlen), errmsg);
        else
            snprintf(errbuf, sizeof errbuf, "%s", quark_strerror(err));
    }
    complete(r, c, err, err == QUARK_OK ? NULL : errbuf, result, len);
}

static void finish_encoded(qk_remote *r, qk_rcall *c, const uint8_t *p, size_t n)
{
    qk_wire_response resp;
    if (qk_wire_decode_response(p, n, &resp) != 0) {
        const char *m = "the silo's response could not be decoded";
        finish_call(r, c, QUARK_EPROTO, m, strlen(m), NULL, 0);
        return;
    }
    finish_call(r, c, (quark_err)resp.error_code, resp.error_message.p, resp.error_message.n,
                resp.result, resp.result_len);
    qk_arena_reset(&r->arena);
}

static void handle_response(qk_remote *r, const qk_frame *f)
{
    qk_rcall *c = table_take(r, f->id);
    if (c) /* NULL: already completed (deadline) */
        finish_encoded(r, c, f->payload, f->len);
}

static void handle_event(qk_remote *r, const qk_frame *f, bool end)
{
    size_t i = slot_of(r, f->id);
    qk_rcall *c;
    while ((c = r->slots[i]) != NULL && c->id != f->id)
        i = (i + 1) & r->mask;
    if (!c || c->op != RC_OP_SUB)
        return;
    if (end) {
        table_take(r, f->id);
        Quark__ActorInvocationResponse *e =
            quark__actor_invocation_response__unpack(&r->arena.pb, f->len, f->payload);
        sub_end(c->rsub, e ? (quark_err)e->error_code : QUARK_EPROTO,
                e ? e->error_message : "bad stream end");
        rcall_free(c);
    } else {
        deliver_event(r, c, f->payload, f->len);
    }
    qk_arena_reset(&r->arena);
}

static void deliver_event(qk_remote *r, qk_rcall *c, const uint8_t *p, size_t n)
{
    Quark__ActorEvent *ae = quark__actor_event__unpack(&r->arena.pb, n, p);
    if (ae && c->rsub && !c->rsub->ended) {
        quark_event ev = {.actor_type = ae->actor_type, .actor_id = ae->actor_id,
                          .event_type = ae->event_type, .payload = ae->payload.data,
                          .payload_len = ae->payload.len, .sequence = ae->sequence};
        c->rsub->fn(&ev, QUARK_OK, NULL, c->rsub->arg);
    }
    qk_arena_reset(&r->arena);
}

static void handle_hello(qk_remote *r, const qk_frame *f)
{
    Quark__TcpHelloReply *h = quark__tcp_hello_reply__unpack(NULL, f->len, f->payload);
    if (!h || h->error_code) {
        char why[400];
        snprintf(why, sizeof why, "refused: %s", h ? h->error_message : "bad hello reply");
        if (h)
            quark__tcp_hello_reply__free_unpacked(h, NULL);
        /* A refusal (wrong cluster) is final for this endpoint's attempt. */
        conn_lost(r, why);
        return;
    }
    quark__tcp_hello_reply__free_unpacked(h, NULL);
    r->state = RC_READY;
    r->failures = 0;
    atomic_store(&r->connected, 1);
    first_result(r, 1, NULL);
    qk_rcall *c = r->waiting;
    r->waiting = r->waiting_tail = NULL;
    while (c) {
        qk_rcall *n = c->next;
        send_call(r, c);
        c = n;
    }
    flush(r);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    qk_remote *r = st->data;
    if (n < 0) {
        conn_lost(r, n == UV_EOF ? "closed by the silo" : uv_strerror((int)n));
        return;
    }
    r->in_len += (size_t)n;
    if (r->grpc) {
        r->in_recv_ = true;
        int rc = qk_grpc_client_recv(r->grpc, r->in, r->in_len);
        r->in_recv_ = false;
        r->in_len = 0;
        if (rc != 0 || qk_grpc_client_want_close(r->grpc)) {
            conn_lost(r, rc != 0 ? "HTTP/2 protocol error from the silo" : "the silo is going away");
            return;
        }
        flush(r);
        return;
    }
    size_t off = 0;
    while (r->state >= RC_HELLO) {
        qk_frame f;
        const char *why = NULL;
        long used = qk_frame_parse(r->in + off, r->in_len - off, r->max_msg + 4096, &f, &why);
        if (used == 0)
            break;
        if (used < 0) {
            conn_lost(r, why ? why : "malformed frame from the silo");
            return;
        }
        off += (size_t)used;
        if (f.type == QK_FRAME_HELLO_OK)
            handle_hello(r, &f);
        else if (f.type == QK_FRAME_RESPONSE)
            handle_response(r, &f);
        else if (f.type == QK_FRAME_EVENT || f.type == QK_FRAME_STREAM_END)
            handle_event(r, &f, f.type == QK_FRAME_STREAM_END);
        else if (f.type == QK_FRAME_GOAWAY) {
            conn_lost(r, "the silo is going away");
            return;
        }
    }
    if (r->state == RC_IDLE)
        return;
    memmove(r->in, r->in + off, r->in_len - off);
    r->in_len -= off;
    flush(r);
}

static void on_connect(uv_connect_t *req, int status)
{
    qk_remote *r = req->data;
    if (status == UV_ECANCELED)
        return; /* we closed that attempt ourselves (timeout or stop) */
    if (status < 0) {
        conn_lost(r, uv_strerror(status));
        return;
    }
    r->state = RC_HELLO;
    uv_tcp_nodelay(r->tcp, 1);
    uv_read_start((uv_stream_t *)r->tcp, on_alloc, on_read);
    if (r->client->opts.transport == QUARK_TRANSPORT_GRPC) {
        char authority[300];
        qk_endpoint *ep = &r->eps[r->cur_ep];
        snprintf(authority, sizeof authority, "%s:%s", ep->host, ep->port);
        r->grpc = qk_grpc_client_new(&g_cbs, r, authority, r->max_msg + 4096);
        if (!r->grpc) {
            conn_lost(r, "out of memory");
            return;
        }
        /* No handshake: the cluster id rides on every call. */
        Quark__TcpHelloReply ok = QUARK__TCP_HELLO_REPLY__INIT;
        uint8_t buf[16];
        qk_frame f = {.type = QK_FRAME_HELLO_OK, .payload = buf,
                      .len = protobuf_c_message_pack(&ok.base, buf)};
        handle_hello(r, &f);
        return;
    }
    Quark__TcpHello h = QUARK__TCP_HELLO__INIT;
    h.cluster_id = (char *)(r->client->opts.cluster_id ? r->client->opts.cluster_id : "default");
    h.client_name = (char *)(r->client->opts.service_id ? r->client->opts.service_id : "");
    h.version = 1;
    size_t len = protobuf_c_message_get_packed_size(&h.base);
    uint8_t hdr[QK_FRAME_MAGIC_LEN + QK_FRAME_HEADER];
    memcpy(hdr, QK_FRAME_MAGIC, QK_FRAME_MAGIC_LEN);
    qk_frame_header(hdr + QK_FRAME_MAGIC_LEN, QK_FRAME_HELLO, 0, len);
    uint8_t *body = malloc(len ? len : 1);
    if (!body || out_append(r, hdr, sizeof hdr) != 0) {
        free(body);
        conn_lost(r, "out of memory");
        return;
    }
    protobuf_c_message_pack(&h.base, body);
    out_append(r, body, len);
    free(body);
    flush(r);
}

static void start_connect(qk_remote *r)
{
    qk_endpoint *ep = &r->eps[r->cur_ep];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(ep->host, ep->port, &hints, &ai);
    r->tcp = calloc(1, sizeof *r->tcp);
    uv_tcp_init(&r->loop, r->tcp);
    r->tcp->data = r;
    r->state = RC_CONNECTING;
    r->attempt_started_ms = qk_now_ms_coarse();
    if (gai != 0 || !ai) {
        conn_lost(r, gai_strerror(gai));
        return;
    }
    r->creq.data = r;
    int rc = uv_tcp_connect(&r->creq, r->tcp, ai->ai_addr, on_connect);
    freeaddrinfo(ai);
    if (rc != 0)
        conn_lost(r, uv_strerror(rc));
}

/* ---- the loop ---- */

static void rsub_free(qk_remote *r, qk_rsub *rs)
{
    for (qk_rsub **pp = &r->all_subs; *pp; pp = &(*pp)->all_next) {
        if (*pp == rs) {
            *pp = rs->all_next;
            break;
        }
    }
    free(rs);
}

/* The application let go of a subscription. */
static void unsub_op(qk_remote *r, qk_rsub *rs)
{
    rs->released = true;
    qk_rcall *env = rs->env;
    if (env && env->in_table) {
        table_take(r, env->id);
        if (r->grpc) {
            qk_grpc_client_cancel(r->grpc, (int32_t)env->id);
        } else {
            uint8_t hdr[QK_FRAME_HEADER];
            qk_frame_header(hdr, QK_FRAME_UNSUBSCRIBE, env->id, 0);
            out_append(r, hdr, sizeof hdr);
        }
        rcall_free(env);
    } else if (env) { /* still waiting for a connection */
        qk_rcall **pp = &r->waiting, *prev = NULL;
        while (*pp && *pp != env) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = env->next;
            if (r->waiting_tail == env)
                r->waiting_tail = prev;
        }
        rcall_free(env);
    }
    sub_end(rs, QUARK_ECLOSED, "unsubscribed");
    rsub_free(r, rs);
}

static void drain_inbox(qk_remote *r)
{
    qk_mpsc_node *n;
    while ((n = qk_mpsc_pop(&r->inbox)) != NULL) {
        qk_rcall *c = QK_CONTAINER_OF(n, qk_rcall, qnode);
        if (c->op == RC_OP_UNSUB) {
            unsub_op(r, c->rsub);
            rcall_free(c);
            continue;
        }
        if (c->op == RC_OP_SUB) {
            c->rsub->all_next = r->all_subs;
            r->all_subs = c->rsub;
            if (atomic_load(&r->stopping)) {
                c->rsub->env = NULL;
                sub_end(c->rsub, QUARK_ECLOSED, "the client is disconnecting");
                rcall_free(c);
            } else {
                send_call(r, c);
            }
            continue;
        }
        if (atomic_load(&r->stopping)) {
            complete(r, c, QUARK_ECLOSED, "the client is disconnecting", NULL, 0);
            continue;
        }
        qk_dlheap_insert(&r->heap, &c->dl);
        send_call(r, c);
    }
    flush(r);
}

static void on_wake(uv_async_t *h)
{
    (void)h; /* io_main drains the inbox */
}

static void on_tick(uv_timer_t *t)
{
    qk_remote *r = t->data;
    uint64_t now = qk_now_ms_coarse();
    qk_deadline *d;
    while ((d = qk_dlheap_pop_expired(&r->heap, now)) != NULL) {
        qk_rcall *c = QK_CONTAINER_OF(d, qk_rcall, dl);
        char msg[600];
        if (c->in_table) {
            table_take(r, c->id);
            if (r->grpc)
                qk_grpc_client_cancel(r->grpc, (int32_t)c->id);
            snprintf(msg, sizeof msg, "deadline exceeded: no reply to %s in time", c->method);
            complete(r, c, QUARK_ETIMEDOUT, msg, NULL, 0);
        } else {
            /* Still waiting for a connection: it never left this process. */
            qk_rcall **pp = &r->waiting, *prev = NULL;
            while (*pp && *pp != c) {
                prev = *pp;
                pp = &(*pp)->next;
            }
            if (*pp) {
                *pp = c->next;
                if (r->waiting_tail == c)
                    r->waiting_tail = prev;
            }
            snprintf(msg, sizeof msg, "no silo reachable before the deadline of %s (tried %s:%s)",
                     c->method, r->eps[r->cur_ep].host, r->eps[r->cur_ep].port);
            complete(r, c, QUARK_EUNAVAILABLE, msg, NULL, 0);
        }
    }
    /* A silo that never answers (no RST, no SYN-ACK): give up on it after a
     * bounded time instead of the kernel's minutes, and try the next one. */
    if ((r->state == RC_CONNECTING || r->state == RC_HELLO) &&
        now - r->attempt_started_ms > QK_CONNECT_TIMEOUT_MS)
        conn_lost(r, "no answer within the connect timeout");
    if (r->state == RC_IDLE && now >= r->reconnect_at_ms && !atomic_load(&r->stopping))
        start_connect(r);
}

static void io_main(void *arg)
{
    qk_remote *r = arg;
    tls_remote = r;
    start_connect(r);
    /* Drain, run the loop, then sleep in epoll, announcing it so that
     * submitters know to wake us (they skip the eventfd write otherwise). */
    while (!atomic_load(&r->stopping)) {
        drain_inbox(r);
        uv_run(&r->loop, UV_RUN_NOWAIT);
        flush(r);
        if (!qk_mpsc_empty(&r->inbox))
            continue;
        atomic_store_explicit(&r->sleeping, 1, memory_order_seq_cst);
        if (qk_mpsc_empty(&r->inbox) && !atomic_load(&r->stopping))
            uv_run(&r->loop, UV_RUN_ONCE);
        atomic_store_explicit(&r->sleeping, 0, memory_order_relaxed);
    }
    uv_timer_stop(&r->tick);
    /* Stopping: fail what is left, close the connection. */
    drain_inbox(r);
    for (size_t i = 0; i <= r->mask && r->count; i++) {
        qk_rcall *c = r->slots[i];
        if (!c)
            continue;
        table_take(r, c->id);
        i = (size_t)-1;
        if (c->op == RC_OP_SUB) {
            sub_end(c->rsub, QUARK_ECLOSED, "the client disconnected");
            rcall_free(c);
            continue;
        }
        complete(r, c, c->written ? QUARK_EUNKNOWN : QUARK_ECLOSED,
                 "the client disconnected before the reply came", NULL, 0);
    }
    while (r->waiting) {
        qk_rcall *c = r->waiting;
        r->waiting = c->next;
        if (c->op == RC_OP_SUB) {
            sub_end(c->rsub, QUARK_ECLOSED, "the client disconnected");
            rcall_free(c);
            continue;
        }
        complete(r, c, QUARK_ECLOSED, "the client disconnected before the call was sent", NULL, 0);
    }
    /* Subscriptions the application still holds are freed by quark_unsubscribe
     * (if it comes) or with the client. */
    r->waiting_tail = NULL;
    if (r->grpc) {
        qk_grpc_client_free(r->grpc);
        r->grpc = NULL;
    }
    if (r->tcp)
        uv_close((uv_handle_t *)r->tcp, on_tcp_closed);
    r->tcp = NULL;
    uv_close((uv_handle_t *)&r->wake, NULL);
    uv_close((uv_handle_t *)&r->tick, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    tls_remote = NULL;
}

/* ---- API used by client.c / call.c ---- */

static int parse_endpoints(qk_remote *r, const char *cs)
{
    size_t n = 1;
    for (const char *p = cs; *p; p++)
        n += *p == ',';
    r->eps = calloc(n, sizeof *r->eps);
    if (!r->eps)
        return -1;
    const char *p = cs;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && p[len - 1] == ' ')
            len--;
        const char *colon = memrchr(p, ':', len);
        if (!colon || colon == p || (size_t)(colon - p) >= sizeof r->eps[0].host ||
            len - (size_t)(colon - p) - 1 == 0 || len - (size_t)(colon - p) - 1 >= 6)
            return -1;
        qk_endpoint *ep = &r->eps[r->neps++];
        memcpy(ep->host, p, (size_t)(colon - p));
        memcpy(ep->port, colon + 1, len - (size_t)(colon - p) - 1);
        for (const char *d = ep->port; *d; d++)
            if (*d < '0' || *d > '9')
                return -1;
        p += len;
        while (*p == ' ' || *p == ',')
            p++;
    }
    return r->neps ? 0 : -1;
}

quark_err qk_remote_new(quark_client *c, qk_remote **out)
{
    qk_remote *r = calloc(1, sizeof *r);
    if (!r)
        return qk_error(QUARK_ENOMEM, "out of memory creating a client");
    const char *cs = c->opts.connection_string ? c->opts.connection_string : "localhost:7000";
    if (parse_endpoints(r, cs) != 0) {
        free(r->eps);
        free(r);
        return qk_error(QUARK_EINVAL, "connection string '%s' is not a comma-separated list "
                        "of HOST:PORT", cs);
    }
    r->client = c;
    r->max_msg = 4u << 20;
    r->meta[0] = "quark-cluster-id";
    r->meta[1] = c->opts.cluster_id && *c->opts.cluster_id ? c->opts.cluster_id : "default";
    r->meta[2] = NULL;
    uv_mutex_init(&r->mu);
    uv_cond_init(&r->cv);
    *out = r;
    return QUARK_OK;
}

quark_err qk_remote_connect(qk_remote *r)
{
    if (r->thread_started_)
        return atomic_load(&r->connected) ? QUARK_OK
                                          : qk_error(QUARK_EUNAVAILABLE, "reconnecting to the "
                                                     "cluster: %s", r->first_error);
    qk_mpsc_init(&r->inbox);
    r->mask = 255;
    r->slots = calloc(r->mask + 1, sizeof *r->slots);
    qk_arena_init(&r->arena, 16384);
    if (!r->slots || uv_loop_init(&r->loop) != 0)
        return qk_error(QUARK_ENOMEM, "out of memory connecting");
    uv_async_init(&r->loop, &r->wake, on_wake);
    r->wake.data = r;
    uv_timer_init(&r->loop, &r->tick);
    r->tick.data = r;
    uv_timer_start(&r->tick, on_tick, QK_TICK_MS, QK_TICK_MS);
    r->first_done = 0;
    atomic_store(&r->stopping, 0);
    if (uv_thread_create(&r->thread, io_main, r) != 0)
        return qk_error(QUARK_ENOMEM, "could not start the client's I/O thread");
    r->thread_started_ = true;
    /* Wait until one silo says hello, or every one has failed once. */
    uv_mutex_lock(&r->mu);
    while (r->first_done == 0)
        uv_cond_wait(&r->cv, &r->mu);
    int ok = r->first_done == 1;
    uv_mutex_unlock(&r->mu);
    if (!ok) {
        quark_err rc = qk_error(strstr(r->first_error, "refused: this silo belongs")
                                    ? QUARK_ECLUSTER : QUARK_EUNAVAILABLE,
                                "no silo answered at %s (last error: %s)",
                                r->client->opts.connection_string, r->first_error);
        qk_remote_disconnect(r);
        return rc;
    }
    return QUARK_OK;
}

void qk_remote_disconnect(qk_remote *r)
{
    if (!r->thread_started_)
        return;
    atomic_store(&r->stopping, 1);
    uv_async_send(&r->wake);
    uv_thread_join(&r->thread);
    r->thread_started_ = false;
    atomic_store(&r->connected, 0);
    uv_loop_close(&r->loop);
    free(r->slots);
    r->slots = NULL;
    r->count = 0;
    free(r->in);
    free(r->out);
    free(r->wbuf);
    r->in = r->out = r->wbuf = NULL;
    r->in_len = r->in_cap = r->out_len = r->out_cap = r->wbuf_cap = 0;
    qk_dlheap_destroy(&r->heap);
    qk_arena_destroy(&r->arena);
    r->state = RC_IDLE;
    r->failures = 0;
}

void qk_remote_free(qk_remote *r)
{
    if (!r)
        return;
    qk_remote_disconnect(r);
    while (r->all_subs)
        rsub_free(r, r->all_subs);
    uv_mutex_destroy(&r->mu);
    uv_cond_destroy(&r->cv);
    free(r->eps);
    free(r);
}

int qk_remote_connected(const qk_remote *r)
{
    return atomic_load(&((qk_remote *)r)->connected);
}

/* Build a call: the whole REQUEST frame, ready to go. */
static qk_rcall *make_call(qk_remote *r, quark_ref *ref, const quark_interface *iface,
                           unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                           quark_err *err)
{
    const quark_method_desc *md = &iface->methods[method];
    size_t args_len = qk_msg_size(md, QK_IN, req);
    if (args_len > r->max_msg) {
        *err = qk_error(QUARK_ETOOBIG, "the request of %s is %zu bytes, over the maximum "
                        "message size of %zu", md->name, args_len, r->max_msg);
        return NULL;
    }
    size_t mlen = strlen(md->name);
    size_t len = qk_wire_request_size(ref->id_len, ref->type_len, mlen, args_len, deadline_ms);
    qk_rcall *c = malloc(sizeof *c + QK_FRAME_HEADER + len);
    if (!c) {
        *err = qk_error(QUARK_ENOMEM, "out of memory making a call");
        return NULL;
    }
    memset(c, 0, sizeof *c);
    qk_frame_header(c->frame, QK_FRAME_REQUEST, 0, len);
    qk_wire_encode_request(c->frame + QK_FRAME_HEADER, ref->data, ref->id_len, ref->type_name,
                           ref->type_len, md->name, mlen, md, req, args_len, deadline_ms);
    c->len = QK_FRAME_HEADER + len;
    c->idempotent = (md->flags & QUARK_METHOD_IDEMPOTENT) != 0;
    c->reply_desc = md->output;
    c->md = md;
    c->method = md->name;
    c->dl.at_ms = qk_now_ms_coarse() + deadline_ms;
    return c;
}

static void submit(qk_remote *r, qk_rcall *c)
{
    if (tls_remote == r) { /* from a callback on the I/O thread: no queue, no wake */
        qk_dlheap_insert(&r->heap, &c->dl);
        send_call(r, c);
        return;
    }
    qk_mpsc_push(&r->inbox, &c->qnode);
    if (atomic_load_explicit(&r->sleeping, memory_order_seq_cst))
        uv_async_send(&r->wake);
}

quark_err qk_remote_call(qk_remote *r, quark_ref *ref, const quark_interface *iface,
                         unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                         ProtobufCMessage **reply)
{
    if (tls_remote == r)
        return qk_error(QUARK_EWOULDBLOCK, "blocking call from a client callback would stall "
                        "the client's I/O thread: use the _async form");
    quark_err err = QUARK_OK;
    qk_rcall *c = make_call(r, ref, iface, method, req, deadline_ms, &err);
    if (!c)
        return err;
    qk_waiter *wt = qk_waiter_new();
    if (!wt) {
        free(c);
        return qk_error(QUARK_ENOMEM, "out of memory making a call");
    }
    c->rk = QK_RK_WAITER;
    c->waiter = wt;
    uint64_t at = c->dl.at_ms;
    submit(r, c);
    return qk_waiter_finish(wt, at + 50, true, iface->methods[method].output, reply, ref->type_name,
                            ref->data, iface->methods[method].name);
}

quark_err qk_remote_call_async(qk_remote *r, quark_ref *ref, const quark_interface *iface,
                               unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                               quark__trampoline_fn tramp, void (*fn)(void), void *arg)
{
    quark_err err = QUARK_OK;
    qk_rcall *c = make_call(r, ref, iface, method, req, deadline_ms, &err);
    if (!c)
        return err;
    c->rk = QK_RK_CALLBACK;
    c->tramp = tramp;
    c->fn = fn;
    c->arg = arg;
    submit(r, c);
    return QUARK_OK;
}

quark_err qk_remote_subscribe(qk_remote *r, const char *type, const char *id, quark_event_fn fn,
                              void *arg, qk_rsub **out)
{
    size_t idl = strlen(id);
    if (idl == 0 || idl > QUARK_ID_MAX)
        return qk_error(QUARK_EINVAL, "actor id must be 1..%d bytes (got %zu)", QUARK_ID_MAX, idl);
    Quark__StreamRequest sr = QUARK__STREAM_REQUEST__INIT;
    sr.actor_id = (char *)id;
    sr.actor_type = (char *)type;
    size_t len = protobuf_c_message_get_packed_size(&sr.base);
    qk_rsub *rs = calloc(1, sizeof *rs);
    qk_rcall *c = calloc(1, sizeof *c + QK_FRAME_HEADER + len);
    if (!rs || !c) {
        free(rs);
        free(c);
        return qk_error(QUARK_ENOMEM, "out of memory subscribing");
    }
    qk_frame_header(c->frame, QK_FRAME_SUBSCRIBE, 0, len);
    protobuf_c_message_pack(&sr.base, c->frame + QK_FRAME_HEADER);
    c->len = QK_FRAME_HEADER + len;
    c->op = RC_OP_SUB;
    c->rsub = rs;
    c->method = "StreamActorEvents";
    rs->env = c;
    rs->owner = r;
    rs->fn = fn;
    rs->arg = arg;
    submit(r, c);
    *out = rs;
    return QUARK_OK;
}

void qk_remote_unsubscribe(qk_rsub *rs)
{
    qk_rcall *c = calloc(1, sizeof *c);
    if (!c)
        return; /* the subscription keeps running until the client is freed */
    c->op = RC_OP_UNSUB;
    c->rsub = rs;
    submit(rs->owner, c);
}
