/*
 * conn.c - one connection of a silo: its lifetime, input and output, and
 * what it does for the runtime: the answers of the calls it read and the
 * events of the subscriptions it made (see server.h).
 *
 * A connection is owned by one worker and touched by no other thread. It is
 * reference-counted: the socket holds one reference, every call in flight
 * one (its call record), every subscription one (until the owner of the
 * actor let go of it), a write in progress one, the worker's list of
 * connections with output to flush one; it is freed at zero.
 *
 * Output is coalesced: answers are appended to a per-connection buffer and
 * written once per batch of the worker (the listener port's flush). A peer
 * that does not read its answers stops being read (backpressure) until it
 * has read most of them, instead of growing the silo's memory.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "quark/actor_service.pb-c.h"
#include "core/buf.h"
#include "transport/frame.h"
#include "transport/server.h"
#include "transport/wire.h"

/* ---- lifetime ---- */

void qk_conn_init(qk_conn *c, qk_server *srv, qk_worker *w)
{
    uv_tcp_init(&w->loop, &c->tcp);
    c->w = w;
    c->srv = srv;
    c->refs = 1; /* the socket's */
}

/* The state of one call read from a connection, until its answer is
 * written: the call's op (home: the connection's worker; answers made there
 * are written at once, lent), the request id to answer, room for a small
 * answer. Recycled by the connection. */
typedef struct qk_srv_call {
    qk_op op;
    qk_conn *conn;
    uint64_t id;
    struct qk_srv_call *next_free;
    qk_op_room room;
} qk_srv_call;

void qk_conn_unref(qk_conn *c)
{
    if (--c->refs == 0) {
        while (c->free_calls) {
            qk_srv_call *sc = c->free_calls;
            c->free_calls = sc->next_free;
            free(sc);
        }
        free(c->in);
        free(c->out);
        free(c->wbuf);
        free(c);
    }
}

void qk_conn_closed_cb(uv_handle_t *h)
{
    qk_conn_unref((qk_conn *)h); /* the socket's reference */
}

void qk_conn_close(qk_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    atomic_fetch_sub(&c->srv->nconns, 1); /* only a started connection closes this way */
    qk_srv_worker *pw = &c->srv->pw[c->w->index];
    if (c->prev)
        c->prev->next = c->next;
    else
        pw->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, qk_conn_closed_cb);
    for (qk_sub *s = c->subs; s; s = s->ctx_next)
        qk_unsubscribe_remote(s); /* each comes back as ended() */
    if (c->proto && c->proto->close)
        c->proto->close(c);
}

/* ---- output ---- */

bool qk_conn_reserve(qk_conn *c, size_t n)
{
    if (qk_buf_reserve(&c->out, &c->out_cap, c->out_len, n, 4096) == 0)
        return true;
    qk_conn_close(c);
    return false;
}

static void resume_read(qk_conn *c);

void qk_conn_mark_dirty(qk_conn *c)
{
    if (!c->dirty) {
        qk_srv_worker *pw = &c->srv->pw[c->w->index];
        c->dirty = true;
        c->refs++; /* the dirty list's: it may close and its socket's close callback run before the flush */
        c->dirty_next = pw->dirty;
        pw->dirty = c;
        qk_worker_io_pending(c->w);
    }
    if (c->out_len > c->w->silo->opts.max_output_buffer)
        qk_conn_pause(c, QK_PAUSE_OUTPUT); /* the peer does not read: stop reading it */
}

static void maybe_resume_read(qk_conn *c)
{
    if ((c->paused & QK_PAUSE_OUTPUT) && c->out_len < c->w->silo->opts.max_output_buffer / 4)
        qk_conn_unpause(c, QK_PAUSE_OUTPUT);
}

void qk_conn_pause(qk_conn *c, unsigned why)
{
    if (!c->paused && !c->closing)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->paused |= (uint8_t)why;
}

void qk_conn_unpause(qk_conn *c, unsigned why)
{
    if (!(c->paused & why))
        return;
    c->paused &= (uint8_t)~why;
    if (!c->paused && !c->closing) {
        if (c->partial_ms) /* the frame's clock ran while this silo did not read */
            c->partial_ms = qk_worker_now_ms(c->w);
        resume_read(c);
    }
}

bool qk_conn_full(qk_conn *c)
{
    if (c->inflight < c->w->silo->opts.max_connection_calls)
        return false;
    qk_conn_pause(c, QK_PAUSE_CALLS);
    return true;
}

void qk_conn_resume_input(qk_conn *c)
{
    if (c->closing || !(c->paused & QK_PAUSE_CALLS) ||
        c->inflight > c->w->silo->opts.max_connection_calls / 2)
        return;
    c->paused &= (uint8_t)~QK_PAUSE_CALLS;
    if (c->in_len && c->proto)
        c->proto->input(c); /* what it read before pausing (may pause again) */
    if (!c->paused && !c->closing)
        resume_read(c);
}

static void on_written(uv_write_t *req, int status);

/* Write the pending output: at once if the socket takes it all (the common
 * case; uv_write would also change the epoll registration twice per write),
 * else the rest through uv_write. */
void qk_conn_write(qk_conn *c)
{
    if (c->writing || c->closing || c->out_len == 0)
        return;
    uv_buf_t all = uv_buf_init((char *)c->out, (unsigned)c->out_len);
    int nw = uv_try_write((uv_stream_t *)&c->tcp, &all, 1);
    if (nw < 0 && nw != UV_EAGAIN) {
        qk_conn_close(c);
        return;
    }
    size_t done = nw > 0 ? (size_t)nw : 0;
    if (done == c->out_len) {
        c->out_len = 0;
        if (c->close_after_write)
            qk_conn_close(c);
        else
            maybe_resume_read(c);
        return;
    }
    size_t len = qk_buf_swap(&c->out, &c->out_cap, &c->out_len, &c->wbuf, &c->wbuf_cap);
    uv_buf_t buf = uv_buf_init((char *)c->wbuf + done, (unsigned)(len - done));
    c->writing = true;
    c->refs++;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) {
        c->writing = false;
        c->refs--;
        qk_conn_close(c);
    }
}

static void on_written(uv_write_t *req, int status)
{
    qk_conn *c = QK_CONTAINER_OF(req, qk_conn, wreq);
    c->writing = false;
    if (status < 0 || c->closing) {
        qk_conn_close(c);
    } else if (c->out_len) {
        qk_conn_write(c);
    } else if (c->close_after_write) {
        qk_conn_close(c);
    }
    maybe_resume_read(c);
    qk_conn_unref(c);
}

void qk_conn_close_when_written(qk_conn *c)
{
    if (c->close_after_write && !c->writing && c->out_len == 0)
        qk_conn_close(c);
}

/* ---- calls ---- */

/* A call's answer, on its connection's worker (op.c): write it. */
static void srv_call_done(qk_op *op)
{
    qk_srv_call *sc = QK_CONTAINER_OF(op, qk_srv_call, op);
    qk_conn *c = sc->conn;
    const qk_outcome *o = op->out;
    quark_err err = o->err;
    bool app = o->by == QK_BY_ACTOR && err != QUARK_OK;
    if (err == QUARK_ECLOSED) {
        /* For a remote caller: did it run? Never started -> it may go
         * elsewhere; started (deferred) -> nobody can say. */
        err = o->started ? QUARK_EUNKNOWN : QUARK_EUNAVAILABLE;
        app = false;
    }
    if (!c->closing) {
        if (o->reply && err == QUARK_OK) { /* lent as a message: encode it here */
            size_t len = qk_outcome_size(o);
            uint8_t small[512];
            uint8_t *buf = len <= sizeof small ? small : malloc(len);
            if (buf) {
                qk_outcome_pack(o, buf);
                c->proto->respond(c, sc->id, QUARK_OK, NULL, buf, len, false, o->where);
                if (buf != small)
                    free(buf);
            } else {
                c->proto->respond(c, sc->id, QUARK_ENOMEM, "out of memory encoding the reply",
                                  NULL, 0, false, NULL);
            }
        } else {
            c->proto->respond(c, sc->id, err, err == QUARK_OK ? NULL : qk_outcome_text(o),
                              o->data, o->len, app, o->where);
        }
    }
    qk_op_release(op);
    sc->next_free = c->free_calls;
    c->free_calls = sc;
    c->inflight--;
    if ((c->paused & QK_PAUSE_CALLS) && !c->closing &&
        c->inflight <= c->w->silo->opts.max_connection_calls / 2)
        qk_conn_mark_dirty(c); /* resumed at the flush, never inside the input that answered */
    qk_conn_unref(c);
}

void qk_conn_invoke(qk_conn *c, uint64_t id, const uint8_t *p, size_t n, uint64_t timeout_ms)
{
    qk_wire_request rq;
    qk_chain_link chain[QK_CHAIN_MAX];
    if (qk_wire_decode_request(p, n, &rq, chain, QK_CHAIN_MAX) != 0) {
        c->proto->respond(c, id, QUARK_EBADARGS, "the ActorInvocationRequest could not be "
                          "decoded", NULL, 0, false, NULL);
        return;
    }
    if (rq.hops && !qk_conn_cluster_member(c, "a forwarded call (hops > 0)"))
        return;
    uint64_t dl = rq.deadline_ms;
    if (timeout_ms && (!dl || timeout_ms < dl))
        dl = timeout_ms;
    if (dl > UINT32_MAX)
        dl = UINT32_MAX;
    qk_srv_call *sc = c->free_calls;
    if (sc) {
        c->free_calls = sc->next_free;
    } else if (!(sc = malloc(sizeof *sc))) {
        c->proto->respond(c, id, QUARK_ENOMEM, "out of memory accepting a call", NULL, 0, false,
                          NULL);
        return;
    }
    qk_op_init(&sc->op, srv_call_done, c->w, QK_OP_INLINE | QK_OP_LEND, &sc->room);
    sc->conn = c;
    sc->id = id;
    /* A chain as deep as we carry is refused by qk_invoke (ECYCLE). */
    qk_invoke_req ir = {.type = rq.actor_type.p, .type_len = rq.actor_type.n,
                        .actor_id = rq.actor_id.p, .id_len = rq.actor_id.n,
                        .method = rq.method.p, .method_len = rq.method.n,
                        .args = rq.args, .args_len = rq.args_len, .deadline_ms = (uint32_t)dl,
                        .chain = chain,
                        .chain_len = rq.n_chain > QK_CHAIN_MAX ? QK_CHAIN_MAX : rq.n_chain,
                        .hops = rq.hops};
    quark_err rc = qk_invoke(c->w, &ir, &sc->op);
    if (rc != QUARK_OK) {
        sc->next_free = c->free_calls;
        c->free_calls = sc;
        c->proto->respond(c, id, rc, quark_last_error(), NULL, 0, false, NULL);
        return;
    }
    c->refs++; /* the call's: released when its answer is written */
    c->inflight++;
}

/* ---- subscriptions: the subscriber port (runtime/ports.h) ---- */

/* An event for one of the connection's subscriptions: an ActorEvent. */
static void sub_event(qk_sub *s, const quark_event *ev)
{
    qk_conn *c = s->ctx;
    if (c->closing)
        return;
    Quark__ActorEvent ae = QUARK__ACTOR_EVENT__INIT;
    ae.actor_id = (char *)ev->actor_id;
    ae.actor_type = (char *)ev->actor_type;
    ae.event_type = (char *)ev->event_type;
    ae.payload.data = (uint8_t *)ev->payload;
    ae.payload.len = ev->payload_len;
    ae.sequence = ev->sequence;
    size_t n = protobuf_c_message_get_packed_size(&ae.base);
    uint8_t small[512];
    uint8_t *buf = n <= sizeof small ? small : malloc(n);
    if (!buf)
        return; /* a subscriber misses an event under OOM; its sequence shows the gap */
    protobuf_c_message_pack(&ae.base, buf);
    c->proto->event(c, s->id, buf, n);
    if (buf != small)
        free(buf);
}

static void sub_ended(qk_sub *s)
{
    qk_conn *c = s->ctx;
    for (qk_sub **pp = &c->subs; *pp; pp = &(*pp)->ctx_next) {
        if (*pp == s) {
            *pp = s->ctx_next;
            break;
        }
    }
    if (!c->closing && !s->removed) /* the silo ended it (stopping): say so */
        c->proto->stream_end(c, s->id, QUARK_ECLOSED, "the silo is stopping");
    qk_sub_free(s);
    qk_conn_unref(c);
}

static const qk_sub_ops conn_sub_ops = {.event = sub_event, .ended = sub_ended};

quark_err qk_conn_subscribe(qk_conn *c, uint64_t sub_id, const char *type, const char *id)
{
    qk_sub *s = NULL;
    quark_err rc = qk_subscribe_remote(c->w, &conn_sub_ops, c, sub_id, type, strlen(type), id,
                                       strlen(id), &s);
    if (rc != QUARK_OK)
        return rc;
    c->refs++; /* released by ended() */
    s->ctx_next = c->subs;
    c->subs = s;
    return QUARK_OK;
}

void qk_conn_unsubscribe(qk_conn *c, uint64_t sub_id)
{
    for (qk_sub *s = c->subs; s; s = s->ctx_next) {
        if (s->id == sub_id && !s->removed) {
            qk_unsubscribe_remote(s);
            return;
        }
    }
}

/* ---- the cluster's views ---- */

void qk_conn_watch(qk_conn *c, uint64_t id)
{
    c->watching = true;
    c->watch_id = id;
    const qk_server_control *ctl = &c->srv->ctl;
    size_t n = 0;
    uint8_t *v = ctl->view ? ctl->view(ctl->arg, c->w, &n) : NULL;
    if (v) /* else: the first view is on its way (qk_server_push_view) */
        c->proto->send_view(c, v, n);
    free(v);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    qk_conn *c = (qk_conn *)h;
    if (c->in_cap - c->in_len < QK_READ_CHUNK) {
        size_t cap = c->in_cap ? c->in_cap : QK_READ_CHUNK;
        while (cap - c->in_len < QK_READ_CHUNK)
            cap *= 2;
        uint8_t *b = realloc(c->in, cap);
        if (!b) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        c->in = b;
        c->in_cap = cap;
    }
    *buf = uv_buf_init((char *)c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

/* The first bytes tell the protocol; false: neither (closed). */
static bool detect(qk_conn *c)
{
    if (memcmp(c->in, QK_FRAME_MAGIC, 4) == 0) {
        c->proto = &qk_proto_tcp;
        memmove(c->in, c->in + 4, c->in_len - 4);
        c->in_len -= 4;
    } else if (memcmp(c->in, "PRI ", 4) == 0) {
        c->proto = &qk_proto_grpc;
    } else {
        qk_conn_close(c); /* neither protocol: nothing to say to it */
        return false;
    }
    if (c->over_limit) { /* one connection too many (max_connections) */
        char why[160];
        snprintf(why, sizeof why, "this silo has %u connections open, its maximum "
                 "(max_connections): try another silo or later",
                 c->w->silo->opts.max_connections);
        qk_conn_pause(c, QK_PAUSE_STOP);
        c->proto->goaway(c, QUARK_EOVERLOAD, why);
        return false;
    }
    return true;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    qk_conn *c = (qk_conn *)st;
    if (n < 0) {
        qk_conn_close(c);
        return;
    }
    /* The loop may have slept for long: deadlines of the calls decoded
     * below are counted from now, not from the last batch. */
    qk_worker_set_now(c->w);
    c->last_in_ms = c->w->now_ms;
    c->in_len += (size_t)n;
    if (!c->proto && (c->in_len < 4 || !detect(c)))
        return;
    c->proto->input(c);
    /* Give back a large input buffer once it is drained. */
    if (c->in_len == 0 && c->in_cap > 4 * QK_READ_CHUNK) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

static void resume_read(qk_conn *c)
{
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

void qk_conn_start(qk_conn *c)
{
    qk_srv_worker *pw = &c->srv->pw[c->w->index];
    uv_tcp_nodelay(&c->tcp, 1);
    c->opened_ms = c->last_in_ms = c->w->now_ms;
    c->over_limit = atomic_fetch_add(&c->srv->nconns, 1) >= c->w->silo->opts.max_connections;
    c->next = pw->conns;
    if (pw->conns)
        pw->conns->prev = c;
    pw->conns = c;
    resume_read(c);
}
