/*
 * server_grpc.c - gRPC on a silo's connection: quark.ActorService over
 * HTTP/2, through the codec of grpc_codec.h (which does no I/O).
 *
 * The connection's bytes go into the session; what the session has to say
 * goes out through the connection's output buffer, pumped after every
 * receive and every answer ("pumping" is never done from inside the
 * session's own callbacks: nghttp2 must not send while it receives). A call
 * is a stream of /quark.ActorService/InvokeActor whose id is the stream id;
 * its answer is an ActorInvocationResponse (with the worker that read it,
 * fields 5 and 6, for Quark clients) or a gRPC status for the framework's
 * errors (qk_grpc_status_of). A Quark client's extra connection asks for a
 * silo worker in its first SETTINGS frame (id 0xf051): the connection moves
 * to that worker before its session starts (server.c).
 */
#include <stdio.h>
#include <stdlib.h>

#include "quark/actor_service.pb-c.h"
#include "transport/grpc_codec.h"
#include "transport/server.h"
#include "transport/wire.h"

#define QK_PATH_INVOKE "/quark.ActorService/InvokeActor"
#define QK_PATH_STREAM "/quark.ActorService/StreamActorEvents"
#define QK_PATH_WATCH "/quark.ActorService/WatchCluster"
#define QK_PATH_STATUS "/quark.ActorService/GetSiloStatus"

static void grpc_write(void *wud, const uint8_t *data, size_t len)
{
    qk_conn *c = wud;
    if (c->closing || !qk_conn_reserve(c, len))
        return;
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    qk_conn_mark_dirty(c);
}

/* Move the session's output into the connection's buffer. */
static void grpc_pump(qk_conn *c)
{
    if (!c->grpc || c->closing || c->in_recv)
        return;
    qk_grpc_server_flush(c->grpc, grpc_write, c);
    if (qk_grpc_server_want_close(c->grpc)) {
        c->close_after_write = true;
        qk_conn_close_when_written(c);
    }
}

static void grpc_respond(qk_conn *c, uint64_t id, quark_err err, const char *errmsg,
                         const uint8_t *result, size_t len, bool actor_error, const char *where)
{
    if (c->closing || !c->grpc)
        return;
    if (err != QUARK_OK && !actor_error) {
        qk_grpc_server_respond(c->grpc, (int32_t)id, qk_grpc_status_of(err),
                               errmsg && *errmsg ? errmsg : quark_strerror(err), NULL, 0);
    } else {
        /* Success, or the actor's own error: an ActorInvocationResponse. */
        size_t mlen = 0;
        if (err != QUARK_OK) {
            if (!errmsg || !*errmsg)
                errmsg = quark_strerror(err);
            mlen = strlen(errmsg);
            len = 0;
        }
        size_t n = qk_wire_response_size(err, mlen, len, actor_error, where);
        uint8_t small[512];
        uint8_t *buf = n + 4 <= sizeof small ? small : malloc(n + 4);
        if (buf) {
            n = (size_t)(qk_wire_encode_response(buf, err, errmsg, mlen, result, len,
                                                 actor_error, where) - buf);
            /* Which worker read it, and how many there are: a Quark gRPC
             * client keeps its own sockets on the actor's worker with this
             * (its lanes ask for a worker, the first connection cannot). */
            unsigned by = c->w->index + 1, nw = c->w->silo->nworkers;
            if (by < 128 && nw < 128) {
                buf[n++] = 5 << 3;
                buf[n++] = (uint8_t)by;
                buf[n++] = 6 << 3;
                buf[n++] = (uint8_t)nw;
            }
            qk_grpc_server_respond(c->grpc, (int32_t)id, 0, NULL, buf, n);
            if (buf != small)
                free(buf);
        }
    }
    grpc_pump(c);
}

static void grpc_event(qk_conn *c, uint64_t sub_id, const uint8_t *ev, size_t len)
{
    if (!c->grpc)
        return;
    qk_grpc_server_stream_send(c->grpc, (int32_t)sub_id, ev, len);
    grpc_pump(c);
}

static void grpc_stream_end(qk_conn *c, uint64_t sub_id, quark_err err, const char *why)
{
    if (!c->grpc)
        return;
    qk_grpc_server_stream_end(c->grpc, (int32_t)sub_id, qk_grpc_status_of(err), why);
    grpc_pump(c);
}

static void grpc_send_view(qk_conn *c, const uint8_t *v, size_t n)
{
    grpc_event(c, c->watch_id, v, n);
}

/* ---- the session's callbacks ---- */

static bool path_is(const char *path, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(path, want, len) == 0;
}

static void grpc_status(qk_conn *c, int32_t stream_id)
{
    const qk_server_control *ctl = &c->srv->ctl;
    size_t n = 0;
    uint8_t *st = ctl->status ? ctl->status(ctl->arg, &n) : NULL;
    if (st)
        qk_grpc_server_respond(c->grpc, stream_id, 0, NULL, st, n);
    else
        qk_grpc_server_respond(c->grpc, stream_id, QK_GRPC_UNAVAILABLE,
                               "this silo has no status to give", NULL, 0);
    free(st);
}

static void grpc_subscribe(qk_conn *c, int32_t stream_id, const uint8_t *msg, size_t len)
{
    Quark__StreamRequest *rq = quark__stream_request__unpack(NULL, len, msg);
    quark_err rc = rq ? qk_conn_subscribe(c, (uint64_t)stream_id, rq->actor_type, rq->actor_id)
                      : qk_error(QUARK_EBADARGS, "the StreamRequest could not be decoded");
    if (rq)
        quark__stream_request__free_unpacked(rq, NULL);
    if (rc != QUARK_OK)
        qk_grpc_server_stream_end(c->grpc, stream_id, qk_grpc_status_of(rc), quark_last_error());
}

static void grpc_on_request(void *ud, int32_t stream_id, const char *path, size_t path_len,
                            uint64_t timeout_ms, const char *cluster_id, const uint8_t *msg,
                            size_t len)
{
    qk_conn *c = ud;
    quark_silo *s = c->w->silo;
    char why[300];
    if (cluster_id && *cluster_id && strcmp(cluster_id, s->cluster_id) != 0) {
        snprintf(why, sizeof why, "this silo belongs to cluster '%s', not '%.100s'",
                 s->cluster_id, cluster_id);
        qk_grpc_server_respond(c->grpc, stream_id, qk_grpc_status_of(QUARK_ECLUSTER), why, NULL,
                               0);
    } else if (path_is(path, path_len, QK_PATH_INVOKE)) {
        qk_conn_invoke(c, (uint64_t)stream_id, msg, len, timeout_ms);
    } else if (path_is(path, path_len, QK_PATH_STREAM)) {
        grpc_subscribe(c, stream_id, msg, len);
    } else if (path_is(path, path_len, QK_PATH_WATCH)) {
        qk_conn_watch(c, (uint64_t)stream_id);
    } else if (path_is(path, path_len, QK_PATH_STATUS)) {
        grpc_status(c, stream_id);
    } else {
        snprintf(why, sizeof why, "unknown method %.*s (this server offers %s, %s, %s and %s)",
                 (int)(path_len > 100 ? 100 : path_len), path, QK_PATH_INVOKE, QK_PATH_STREAM,
                 QK_PATH_WATCH, QK_PATH_STATUS);
        qk_grpc_server_respond(c->grpc, stream_id, QK_GRPC_UNIMPLEMENTED, why, NULL, 0);
    }
}

static void grpc_on_cancel(void *ud, int32_t stream_id)
{
    qk_conn *c = ud;
    if (c->closing)
        return;
    if (c->watching && c->watch_id == (uint64_t)stream_id)
        c->watching = false;
    /* A subscriber going away; a cancelled call's answer is simply ignored. */
    qk_conn_unsubscribe(c, (uint64_t)stream_id);
}

static const qk_grpc_server_cbs grpc_cbs = {.on_request = grpc_on_request,
                                            .on_cancel = grpc_on_cancel};

/* ---- the protocol ---- */

static void grpc_input(qk_conn *c)
{
    if (!c->hint_done) {
        /* A Quark client's lane asks for a worker in its first SETTINGS
         * frame: move before the HTTP/2 session starts (it moves with the
         * bytes read so far and starts there). */
        unsigned want;
        int got = qk_grpc_worker_hint(c->in, c->in_len, &want);
        if (got < 0)
            return; /* the rest of the SETTINGS frame is on its way */
        c->hint_done = true;
        if (want >= 1 && want <= c->w->silo->nworkers && want - 1 != c->w->index &&
            qk_server_move_conn(c, want - 1, c->in, c->in_len)) {
            c->in_len = 0;
            return;
        }
    }
    if (!c->grpc) {
        const quark_silo_opts *o = &c->w->silo->opts;
        c->grpc = qk_grpc_server_new(&grpc_cbs, c, o->max_message_size, o->max_connection_calls);
        if (!c->grpc) {
            qk_conn_close(c);
            return;
        }
    }
    c->in_recv = true;
    int rc = qk_grpc_server_recv(c->grpc, c->in, c->in_len);
    c->in_recv = false;
    c->in_len = 0;
    qk_conn_full(c); /* at the limit: read no more until calls are answered */
    grpc_pump(c);
    if (rc != 0 && !c->closing) {
        c->close_after_write = true;
        qk_conn_close_when_written(c);
    }
}

bool qk_conn_grpc_ready(const qk_conn *c)
{
    return c->grpc && qk_grpc_server_ready(c->grpc);
}

uint64_t qk_conn_grpc_partial_ms(const qk_conn *c)
{
    return c->grpc ? qk_grpc_server_oldest_request_ms(c->grpc) : 0;
}

/* Stop phase 2: the final GOAWAY now. Reading has stopped, so no PING round
 * trip can complete; what it refuses never ran. */
static void grpc_stop(qk_conn *c)
{
    if (c->grpc) {
        qk_grpc_server_goaway_now(c->grpc);
        grpc_pump(c);
    }
}

/* Before its session starts (a connection past max_connections): the
 * server's preface (an empty SETTINGS), then GOAWAY with code REFUSED_STREAM
 * (7: nothing ran) and the reason as its debug data. */
static void refuse_raw(qk_conn *c, const char *why)
{
    size_t dl = strlen(why), gl = 8 + dl;
    if (!qk_conn_reserve(c, 9 + 9 + gl))
        return;
    uint8_t *o = c->out + c->out_len;
    memset(o, 0, 9 + 9 + 8);
    o[3] = 4;                                             /* SETTINGS, stream 0 */
    o[9] = (uint8_t)(gl >> 16), o[10] = (uint8_t)(gl >> 8), o[11] = (uint8_t)gl;
    o[12] = 7;                                            /* GOAWAY, stream 0 */
    o[9 + 9 + 7] = 7;                                     /* last stream 0, REFUSED_STREAM */
    memcpy(o + 9 + 9 + 8, why, dl);
    c->out_len += 9 + 9 + gl;
    qk_conn_mark_dirty(c);
}

/* The silo ends the connection (a timeout, a limit): the final GOAWAY (with
 * a session, the reason stays in the silo: nghttp2's carries a code; before
 * it, only a refusal says why), then close. */
static void grpc_goaway(qk_conn *c, quark_err err, const char *why)
{
    if (c->grpc)
        grpc_stop(c);
    else if (err == QUARK_EOVERLOAD)
        refuse_raw(c, why);
    c->close_after_write = true;
    qk_conn_close_when_written(c);
}

static void grpc_close(qk_conn *c)
{
    if (c->grpc) {
        struct qk_grpc_server *g = c->grpc;
        c->grpc = NULL; /* its on_cancel calls see a closing connection */
        qk_grpc_server_free(g);
    }
}

const qk_proto_ops qk_proto_grpc = {
    .name = "grpc",
    .input = grpc_input,
    .respond = grpc_respond,
    .event = grpc_event,
    .stream_end = grpc_stream_end,
    .send_view = grpc_send_view,
    .stop = grpc_stop,
    .goaway = grpc_goaway,
    .close = grpc_close,
};
