/*
 * server_tcp.c - Quark's TCP protocol on a silo's connection (frame.h,
 * docs/wire-protocol.md).
 *
 * After the magic "QRK1" (conn.c consumed it) the first frame must be a
 * HELLO: it names the cluster (another cluster's client is refused) and may
 * ask for the worker that should serve the connection, which then moves
 * there before HELLO_OK is sent (server.c). After it, REQUEST frames are
 * calls (the envelope is decoded in place, wire.h), SUBSCRIBE / UNSUBSCRIBE
 * manage event streams, and the cluster's own frames (GOSSIP, WATCH,
 * STATUS) are answered through the server's control table. Answers are
 * appended to the connection's output as frames and written once per batch.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "quark/actor_service.pb-c.h"
#include "transport/auth.h"
#include "transport/frame.h"
#include "transport/server.h"
#include "transport/wire.h"

/* ---- writing frames ---- */

/* Append one frame: header + a packed protobuf message (or none). */
static void send_frame(qk_conn *c, uint8_t type, uint64_t id, const ProtobufCMessage *msg)
{
    if (c->closing)
        return;
    size_t len = msg ? protobuf_c_message_get_packed_size(msg) : 0;
    if (!qk_conn_reserve(c, QK_FRAME_HEADER + len))
        return;
    qk_frame_header(c->out + c->out_len, type, id, len);
    if (msg)
        protobuf_c_message_pack(msg, c->out + c->out_len + QK_FRAME_HEADER);
    c->out_len += QK_FRAME_HEADER + len;
    qk_conn_mark_dirty(c);
}

/* Append a frame whose payload is already encoded. */
static void send_raw(qk_conn *c, uint8_t type, uint64_t id, const uint8_t *p, size_t len)
{
    if (c->closing)
        return;
    if (!qk_conn_reserve(c, QK_FRAME_HEADER + len))
        return;
    qk_frame_header(c->out + c->out_len, type, id, len);
    if (len)
        memcpy(c->out + c->out_len + QK_FRAME_HEADER, p, len);
    c->out_len += QK_FRAME_HEADER + len;
    qk_conn_mark_dirty(c);
}

/* An ActorInvocationResponse that says why (GOAWAY, STREAM_END). */
static void send_why(qk_conn *c, uint8_t type, uint64_t id, quark_err err, const char *why)
{
    Quark__ActorInvocationResponse r = QUARK__ACTOR_INVOCATION_RESPONSE__INIT;
    r.error_code = err;
    r.error_message = (char *)why;
    send_frame(c, type, id, &r.base);
}

static void goaway(qk_conn *c, quark_err err, const char *why)
{
    send_why(c, QK_FRAME_GOAWAY, 0, err, why);
    c->close_after_write = true;
}

/* A RESPONSE frame, encoded in place (wire.h). */
static void tcp_respond(qk_conn *c, uint64_t id, quark_err err, const char *errmsg,
                        const uint8_t *result, size_t len, bool actor_error, const char *where)
{
    if (c->closing)
        return;
    size_t mlen = 0;
    if (err != QUARK_OK) {
        if (!errmsg || !*errmsg)
            errmsg = quark_strerror(err);
        mlen = strlen(errmsg);
        len = 0;
    }
    size_t body = qk_wire_response_size(err, mlen, len, actor_error, where);
    if (!qk_conn_reserve(c, QK_FRAME_HEADER + body))
        return;
    uint8_t *o = c->out + c->out_len;
    qk_frame_header(o, QK_FRAME_RESPONSE, id, body);
    qk_wire_encode_response(o + QK_FRAME_HEADER, err, errmsg, mlen, result, len, actor_error,
                            where);
    c->out_len += QK_FRAME_HEADER + body;
    qk_conn_mark_dirty(c);
}

static void tcp_event(qk_conn *c, uint64_t sub_id, const uint8_t *ev, size_t len)
{
    send_raw(c, QK_FRAME_EVENT, sub_id, ev, len);
}

static void tcp_stream_end(qk_conn *c, uint64_t sub_id, quark_err err, const char *why)
{
    send_why(c, QK_FRAME_STREAM_END, sub_id, err, why);
}

static void tcp_send_view(qk_conn *c, const uint8_t *v, size_t n)
{
    send_raw(c, QK_FRAME_VIEW, c->watch_id, v, n);
}

/* ---- the handshake ---- */

static void send_hello_ok(qk_conn *c, quark_err code, const char *msg)
{
    quark_silo *s = c->w->silo;
    const qk_server_control *ctl = &c->srv->ctl;
    Quark__TcpHelloReply r = QUARK__TCP_HELLO_REPLY__INIT;
    r.version = 1;
    /* as views name it (not --listen's text) */
    r.silo_id = (char *)(ctl->self_name ? ctl->self_name(ctl->arg) : "");
    r.error_code = code;
    r.error_message = (char *)(msg ? msg : "");
    r.workers = s->nworkers;
    r.worker = c->w->index + 1;
    _Static_assert(sizeof c->challenge == QK_AUTH_CHALLENGE, "room for the challenge");
    if (code == QUARK_OK && s->cluster_key) {
        if (!qk_auth_challenge(c->challenge)) {
            code = QUARK_EINTERNAL;
            r.error_code = code;
            r.error_message = "this silo could not draw random bytes for its challenge";
        } else {
            r.challenge.data = c->challenge;
            r.challenge.len = QK_AUTH_CHALLENGE;
        }
    }
    send_frame(c, QK_FRAME_HELLO_OK, 0, &r.base);
    if (code)
        c->close_after_write = true;
    else
        c->hello_done = true;
}

/* The connection moved here after its HELLO: this worker answers it. */
static void tcp_adopted(qk_conn *c)
{
    send_hello_ok(c, QUARK_OK, NULL);
}

/* Returns the worker the connection asks to move to, or -1 to stay. */
static int tcp_hello(qk_conn *c, const qk_frame *f)
{
    quark_silo *s = c->w->silo;
    Quark__TcpHello *h = quark__tcp_hello__unpack(NULL, f->len, f->payload);
    char msg[300];
    const char *theirs = h && h->cluster_id[0] ? h->cluster_id : "default";
    int move = -1;
    if (!h) {
        send_hello_ok(c, QUARK_EPROTO, "the hello frame could not be decoded");
    } else if (strcmp(theirs, s->cluster_id) != 0) {
        snprintf(msg, sizeof msg, "this silo belongs to cluster '%s', not '%s'", s->cluster_id,
                 theirs);
        send_hello_ok(c, QUARK_ECLUSTER, msg);
    } else if (h->worker > 0 && h->worker <= s->nworkers && h->worker - 1 != c->w->index) {
        move = (int)h->worker - 1; /* its HELLO_OK comes from there */
    } else {
        send_hello_ok(c, QUARK_OK, NULL);
    }
    if (h)
        quark__tcp_hello__free_unpacked(h, NULL);
    return move;
}

/* ---- frames ---- */

static void tcp_subscribe(qk_conn *c, const qk_frame *f)
{
    Quark__StreamRequest *rq = quark__stream_request__unpack(NULL, f->len, f->payload);
    quark_err rc;
    if (!rq) {
        rc = qk_error(QUARK_EPROTO, "the subscription request could not be decoded");
    } else {
        rc = qk_conn_subscribe(c, f->id, rq->actor_type, rq->actor_id);
        quark__stream_request__free_unpacked(rq, NULL);
    }
    if (rc != QUARK_OK)
        send_why(c, QK_FRAME_STREAM_END, f->id, rc, quark_last_error());
}

/* A refused cluster frame goes to stderr, at most once a second per
 * process (a misconfigured silo retries every heartbeat). */
static void log_refusal(const char *why)
{
    static _Atomic uint64_t last_ms;
    uint64_t now = qk_now_ms_coarse(), last = atomic_load(&last_ms);
    if (now - last >= 1000 && atomic_compare_exchange_strong(&last_ms, &last, now))
        fprintf(stderr, "quark: %s (refusals logged at most once a second)\n", why);
}

/* With a cluster key, cluster frames only from a connection that proved
 * it: true if c may send them; else it is told (GOAWAY) and logged. */
bool qk_conn_cluster_member(qk_conn *c, const char *what)
{
    quark_silo *s = c->w->silo;
    if (!s->cluster_key || c->member)
        return true;
    char why[200];
    snprintf(why, sizeof why, "%s refused: this connection has not proved the cluster key "
             "(only the cluster's silos may send it)", what);
    log_refusal(why);
    c->proto->goaway(c, QUARK_ECLUSTER, why);
    return false;
}

/* AUTH: the peer proves it holds the cluster key. */
static void tcp_auth(qk_conn *c, const qk_frame *f)
{
    quark_silo *s = c->w->silo;
    Quark__TcpAuth *a = quark__tcp_auth__unpack(NULL, f->len, f->payload);
    bool ok = a && s->cluster_key &&
              qk_auth_check(s->cluster_key, s->cluster_id, c->challenge, a->proof.data,
                            a->proof.len);
    if (a)
        quark__tcp_auth__free_unpacked(a, NULL);
    if (ok) {
        c->member = true;
        return;
    }
    const char *why = s->cluster_key ? "AUTH refused: wrong cluster key (this silo's cluster "
                                       "has another one)"
                                     : "AUTH refused: this silo has no cluster key to prove";
    log_refusal(why);
    goaway(c, QUARK_ECLUSTER, why);
}

static void tcp_gossip(qk_conn *c, const qk_frame *f)
{
    const qk_server_control *ctl = &c->srv->ctl;
    if (!qk_conn_cluster_member(c, "GOSSIP"))
        return;
    size_t n = 0;
    const char *why = NULL;
    uint8_t *rep = ctl->gossip ? ctl->gossip(ctl->arg, f->payload, f->len, &n, &why) : NULL;
    if (!rep) {
        goaway(c, QUARK_EPROTO, why ? why : "gossip refused: this silo is not a cluster member");
        return;
    }
    send_raw(c, QK_FRAME_GOSSIP_ACK, f->id, rep, n);
    free(rep);
}

static void tcp_status(qk_conn *c, const qk_frame *f)
{
    const qk_server_control *ctl = &c->srv->ctl;
    size_t n = 0;
    uint8_t *st = ctl->status ? ctl->status(ctl->arg, &n) : NULL;
    if (!st) {
        goaway(c, QUARK_EUNAVAILABLE, "this silo has no status to give (not a cluster member)");
        return;
    }
    send_raw(c, QK_FRAME_STATUS_OK, f->id, st, n);
    free(st);
}

/* One frame after the handshake. */
static void tcp_frame(qk_conn *c, const qk_frame *f)
{
    switch (f->type) {
    case QK_FRAME_REQUEST:
        qk_conn_invoke(c, f->id, f->payload, f->len, 0);
        break;
    case QK_FRAME_SUBSCRIBE:
        tcp_subscribe(c, f);
        break;
    case QK_FRAME_UNSUBSCRIBE:
        qk_conn_unsubscribe(c, f->id);
        break;
    case QK_FRAME_PING:
        send_frame(c, QK_FRAME_PONG, f->id, NULL);
        break;
    case QK_FRAME_GOSSIP:
        tcp_gossip(c, f);
        break;
    case QK_FRAME_WATCH:
        qk_conn_watch(c, f->id);
        break;
    case QK_FRAME_STATUS:
        tcp_status(c, f);
        break;
    case QK_FRAME_AUTH:
        tcp_auth(c, f);
        break;
    case QK_FRAME_GOAWAY:
        c->close_after_write = true;
        break;
    default:
        goaway(c, QUARK_EPROTO, "unexpected frame type from a client");
        break;
    }
}

/* A frame too big to take (its header at h): a REQUEST (after HELLO, of at
 * most QK_SKIP_MAX_FACTOR times the maximum) is refused alone and its bytes
 * skipped, so the rest goes on; anything else ends the connection. */
#define QK_SKIP_MAX_FACTOR 64
static void too_big(qk_conn *c, const uint8_t *h, const char *why)
{
    size_t max = c->w->silo->opts.max_message_size;
    uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    char msg[200];
    if (h[4] != QK_FRAME_REQUEST || !c->hello_done) {
        goaway(c, QUARK_EPROTO, c->hello_done ? why : "the first frame must be HELLO");
        return;
    }
    if ((uint64_t)len > QK_SKIP_MAX_FACTOR * (uint64_t)max) {
        /* Skipping it would take a long while for nothing: end it. */
        snprintf(msg, sizeof msg, "a frame of %u bytes is far over this silo's maximum "
                 "message size of %zu", len, max);
        goaway(c, QUARK_ETOOBIG, msg);
        return;
    }
    uint64_t id = 0;
    for (int i = 0; i < 8; i++)
        id = id << 8 | h[8 + i];
    snprintf(msg, sizeof msg, "message of %u bytes is larger than this silo's maximum of %zu",
             len, max);
    tcp_respond(c, id, QUARK_ETOOBIG, msg, NULL, 0, false, NULL);
    c->discard = 4 + (uint64_t)len;
}

/* Consume what is in c->in. */
static void tcp_input(qk_conn *c)
{
    size_t max = c->w->silo->opts.max_message_size + 4096;
    size_t off = 0;
    bool ended = false; /* a frame (or a skip) was completed */
    while (!c->closing && !c->close_after_write) {
        if (c->discard) { /* skipping an oversized frame */
            size_t k = c->in_len - off < c->discard ? c->in_len - off : (size_t)c->discard;
            off += k;
            c->discard -= k;
            if (c->discard)
                break;
            ended = true;
            continue;
        }
        if (c->hello_done && qk_conn_full(c))
            break; /* the rest waits until calls are answered */
        qk_frame f;
        const char *why = NULL;
        long used = qk_frame_parse(c->in + off, c->in_len - off, max, &f, &why);
        if (used == QK_FRAME_PARTIAL)
            break;
        if (used == QK_FRAME_TOO_BIG) {
            too_big(c, c->in + off, why);
            continue;
        }
        if (used < 0) {
            goaway(c, QUARK_EPROTO, why ? why : "malformed frame");
            break;
        }
        off += (size_t)used;
        ended = true;
        if (c->hello_done) {
            tcp_frame(c, &f);
        } else if (f.type != QK_FRAME_HELLO) {
            goaway(c, QUARK_EPROTO, "the first frame must be HELLO");
            break;
        } else {
            int move = tcp_hello(c, &f);
            if (move >= 0 &&
                !qk_server_move_conn(c, (unsigned)move, c->in + off, c->in_len - off))
                send_hello_ok(c, QUARK_OK, NULL); /* could not move: served here */
        }
    }
    if (off) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    /* The frame timeout's clock: a frame the peer started and has not
     * finished (not one this silo has not taken yet). */
    if ((!c->in_len && !c->discard) || (c->paused & QK_PAUSE_CALLS))
        c->partial_ms = 0;
    else if (ended || !c->partial_ms)
        c->partial_ms = c->w->now_ms;
    qk_conn_close_when_written(c);
}

static void tcp_goaway(qk_conn *c, quark_err err, const char *why)
{
    goaway(c, err, why);
    qk_conn_close_when_written(c);
}

const qk_proto_ops qk_proto_tcp = {
    .name = "tcp",
    .input = tcp_input,
    .respond = tcp_respond,
    .event = tcp_event,
    .stream_end = tcp_stream_end,
    .send_view = tcp_send_view,
    .adopted = tcp_adopted,
    .goaway = tcp_goaway,
};
