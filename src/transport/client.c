/*
 * client.c - the remote client backend (runtime/ports.h): a quark_client
 * that calls the silos of a cluster through a qk_remote (remote.c).
 */
#include <stdlib.h>

#include "transport/client.h"
#include "transport/remote.h"

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
                         .poll_us = opts->poll_us};
    qk_remote *r = NULL;
    quark_err rc = qk_remote_new(&cfg, &r);
    if (rc != QUARK_OK)
        return rc;
    rc = qk_client_new(opts, &remote_client, r, out);
    if (rc != QUARK_OK)
        qk_remote_free(r);
    return rc;
}
