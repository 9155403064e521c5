/*
 * client.c - the cluster client: making calls and subscriptions on a
 * qk_remote (remote.c), blocking calls on direct sockets when it can
 * (direct.h), and the remote client backend (runtime/ports.h) that a
 * quark_client of a cluster uses.
 */
#include <stdio.h>
#include <stdlib.h>

#include "transport/client.h"
#include "transport/remote_internal.h"

/* An async call's answer, on the I/O thread (its op lends it). */
static void callback_done(qk_op *op)
{
    qk_rcall *c = QK_CONTAINER_OF(op, qk_rcall, own);
    qk_remote *r = qk_rm_tls;
    const qk_outcome *o = op->out;
    if (o->err != QUARK_OK) {
        c->tramp(c->fn, o->err, qk_outcome_text(o), NULL, c->arg);
        return;
    }
    const ProtobufCMessage *msg = qk_outcome_reply(o, c->md, c->reply_desc, &r->arena.pb);
    if (msg)
        c->tramp(c->fn, QUARK_OK, NULL, msg, c->arg);
    else
        c->tramp(c->fn, QUARK_EPROTO, "the reply could not be decoded", NULL, c->arg);
    qk_arena_reset(&r->arena);
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
    c->hash = ref->hash;
    c->has_hash = true;
    c->dl.at_ms = qk_now_ms_coarse() + deadline_ms;
    return c;
}

/* The silo a direct call goes to, from what the I/O thread published;
 * false if not known (then the call goes the multiplexed way). */
static bool direct_route(qk_remote *r, uint64_t hash, char *addr, size_t cap)
{
    bool ok = false;
    uv_mutex_lock(&r->route_mu);
    qk_view *v = r->pub_view;
    if (r->cfg.routing != QUARK_ROUTE_PINNED && v) {
        int o = qk_rm_located(r, v, r->pub_gen, hash);
        if (o < 0)
            o = qk_view_owner(v, hash);
        if (o >= 0 && o != v->self && strlen(v->members[o].addr) < cap) {
            strcpy(addr, v->members[o].addr);
            ok = true;
        }
    } else if (r->pub_primary[0] && strlen(r->pub_primary) < cap) {
        strcpy(addr, r->pub_primary);
        ok = true;
    }
    uv_mutex_unlock(&r->route_mu);
    return ok;
}

/* Try call c on a socket of the calling thread's own (direct.h). Returns
 * true when the call is over (its outcome in *rc and *reply); false when it
 * must go the multiplexed way (c is then still ours). */
static bool direct_call(qk_remote *r, qk_rcall *c, quark_ref *ref, ProtobufCMessage **reply,
                        quark_err *rc)
{
    char addr[QK_ADDR_MAX];
    if (!r->direct || atomic_load(&r->stopping) || !direct_route(r, c->hash, addr, sizeof addr))
        return false;
    qk_dsock *held = NULL;
    qk_dc_result res;
    qk_dc_status st = qk_direct_call(r->direct, addr, c->hash, c->frame, c->len, c->dl.at_ms,
                                     &held, &res);
    unsigned max = r->cfg.retry.max_attempts ? r->cfg.retry.max_attempts : 1;
    switch (st) {
    case QK_DC_NOT_SENT:
        return false;
    case QK_DC_ANSWERED: {
        if (res.grpc_status) { /* (gRPC) the status says it all */
            res.resp.error_code = (int32_t)qk_grpc_err_of(res.grpc_status);
            res.resp.actor_error = false;
            res.resp.error_message.p = res.why;
            res.resp.error_message.n = strlen(res.why);
            res.resp.location.n = 0; /* (resp was not decoded) */
        }
        if (res.resp.location.n) { /* it ran elsewhere: go there next time */
            uv_mutex_lock(&r->route_mu);
            qk_rm_locate(r, r->pub_view, r->pub_gen, c->hash, res.resp.location.p,
                         res.resp.location.n);
            uv_mutex_unlock(&r->route_mu);
        }
        quark_err err = (quark_err)res.resp.error_code;
        if (err == QUARK_EUNAVAILABLE && !res.resp.actor_error)
            qk_rm_unlocate(r, c->hash); /* not there (any more): by the ring next time */
        if (err == QUARK_EUNAVAILABLE && !res.resp.actor_error && max > 1) {
            /* It did not run (ownership moving, silo stopping): once more,
             * the multiplexed way, after a backoff. */
            qk_direct_release(r->direct, held);
            c->attempts = 1;
            c->retry_at_ms = qk_now_ms_coarse() + qk_rm_backoff_of(r, 1);
            return false;
        }
        if (err != QUARK_OK) {
            const qk_wire_str *m = &res.resp.error_message;
            *rc = m->n ? qk_error(err, "%.*s", (int)m->n, (const char *)m->p)
                       : qk_error(err, "%s", quark_strerror(err));
        } else if (reply) {
            *reply = protobuf_c_message_unpack(c->reply_desc, NULL, res.resp.result_len,
                                               res.resp.result);
            *rc = *reply ? QUARK_OK
                         : qk_error(QUARK_EPROTO, "the reply of %s could not be decoded as %s",
                                    c->method, c->reply_desc->name);
            if (*reply)
                qk_error_clear();
        } else {
            *rc = QUARK_OK;
            qk_error_clear();
        }
        qk_direct_release(r->direct, held);
        break;
    }
    case QK_DC_LOST:
        if (c->idempotent && max > 1) {
            c->attempts = 1; /* safe to run again */
            return false;
        }
        *rc = qk_error(QUARK_EUNKNOWN, "connection to %s lost (%s) after %s was sent: its "
                       "outcome is unknown (not retried: the method is not @quark.idempotent)",
                       addr, res.why, c->method);
        break;
    case QK_DC_TIMEOUT:
    default:
        *rc = qk_error(QUARK_ETIMEDOUT, "deadline exceeded: %s '%s' did not reply to %s in "
                       "time", ref->type_name, ref->data, c->method);
        break;
    }
    free(c);
    return true;
}

quark_err qk_remote_call(qk_remote *r, quark_ref *ref, const quark_interface *iface,
                         unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                         ProtobufCMessage **reply)
{
    if (qk_rm_tls == r)
        return qk_error(QUARK_EWOULDBLOCK, "blocking call from a client callback would stall "
                        "the client's I/O thread: use the _async form");
    quark_err err = QUARK_OK;
    qk_rcall *c = make_call(r, ref, iface, method, req, deadline_ms, &err);
    if (!c)
        return err;
    if (direct_call(r, c, ref, reply, &err))
        return err;
    qk_waiter *wt = qk_waiter_new();
    if (!wt) {
        free(c);
        return qk_error(QUARK_ENOMEM, "out of memory making a call");
    }
    c->answer = &wt->op;
    uint64_t at = c->dl.at_ms;
    qk_rm_submit(r, c);
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
    qk_op_init(&c->own, callback_done, NULL, QK_OP_LEND, NULL);
    c->answer = &c->own;
    c->tramp = tramp;
    c->fn = fn;
    c->arg = arg;
    qk_rm_submit(r, c);
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
    c->kind = RC_OP_SUB;
    c->rsub = rs;
    c->method = "StreamActorEvents";
    /* Events are published where the actor lives: subscribe at its owner. */
    c->hash = qk_key_hash(qk_type_name_hash(type, strlen(type)), id, idl);
    c->has_hash = true;
    rs->env = c;
    rs->owner = r;
    rs->fn = fn;
    rs->arg = arg;
    qk_rm_submit(r, c);
    *out = rs;
    return QUARK_OK;
}

void qk_remote_unsubscribe(qk_rsub *rs)
{
    qk_rcall *c = calloc(1, sizeof *c);
    if (!c)
        return; /* the subscription keeps running until the client is freed */
    c->kind = RC_OP_UNSUB;
    c->rsub = rs;
    qk_rm_submit(rs->owner, c);
}

/* ---- the backend table (runtime/ports.h) ---- */

static quark_err rc_connect(void *impl)
{
    return qk_remote_connect(impl);
}

static void rc_disconnect(void *impl)
{
    qk_remote_disconnect(impl);
}

static int rc_connected(void *impl)
{
    return qk_remote_connected(impl);
}

static void rc_free(void *impl)
{
    qk_remote_free(impl);
}

static quark_err rc_call(void *impl, quark_ref *ref, const quark_interface *iface,
                         unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                         ProtobufCMessage **reply)
{
    return qk_remote_call(impl, ref, iface, method, req, deadline_ms, reply);
}

static quark_err rc_call_async(void *impl, quark_ref *ref, const quark_interface *iface,
                               unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                               quark__trampoline_fn tramp, void (*fn)(void), void *arg)
{
    return qk_remote_call_async(impl, ref, iface, method, req, deadline_ms, tramp, fn, arg);
}

static quark_err rc_subscribe(void *impl, const char *type, const char *id, quark_event_fn fn,
                              void *arg, void **sub)
{
    qk_rsub *rs = NULL;
    quark_err rc = qk_remote_subscribe(impl, type, id, fn, arg, &rs);
    *sub = rs;
    return rc;
}

static void rc_unsubscribe(void *sub)
{
    qk_remote_unsubscribe(sub);
}

static const qk_client_ops remote_client = {
    .name = "remote",
    .connect = rc_connect,
    .disconnect = rc_disconnect,
    .connected = rc_connected,
    .free = rc_free,
    .call = rc_call,
    .call_async = rc_call_async,
    .subscribe = rc_subscribe,
    .unsubscribe = rc_unsubscribe,
};

quark_err qk_remote_client_new(const quark_client_opts *opts, quark_client **out)
{
    qk_remote_cfg cfg = {.connection_string = opts->connection_string,
                         .cluster_id = opts->cluster_id,
                         .client_name = opts->service_id,
                         .transport = opts->transport,
                         .routing = opts->routing,
                         .retry = opts->retry,
                         .direct_sockets = opts->direct_sockets,
                         .poll_us = opts->poll_us,
                         .keepalive_ms = opts->keepalive_ms,
                         .keepalive_timeout_ms = opts->keepalive_timeout_ms};
    qk_remote *r = NULL;
    quark_err rc = qk_remote_new(&cfg, &r);
    if (rc != QUARK_OK)
        return rc;
    rc = qk_client_new(opts, &remote_client, r, out);
    if (rc != QUARK_OK)
        qk_remote_free(r);
    return rc;
}
