/*
 * client.c - the client API of quark/client.h, whatever the backend.
 *
 * A quark_client is a front (this file: argument checks, references, the
 * connected flag) over a backend table (ports.h): the embedded one calls a
 * silo of this process (call.c), the remote one the silos of a cluster
 * (transport/client.c). quark_client_create, which picks the backend, is in
 * the composition root (root/client.c).
 */
#include <stdlib.h>

#include "runtime.h"

void quark_client_opts_init(quark_client_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->connection_string = "localhost:7000";
    o->cluster_id = "default";
    o->service_id = "awesome-pizza";
    o->transport = QUARK_TRANSPORT_GRPC;
    o->retry.max_attempts = 3;
    o->retry.initial_backoff_ms = 50;
    o->retry.max_backoff_ms = 2000;
    o->default_deadline_ms = 30000;
    o->direct_sockets = 4;
    o->poll_us = 50;
    o->keepalive_ms = 1000;
    o->keepalive_timeout_ms = 5000;
}

quark_err qk_client_new(const quark_client_opts *opts, const qk_client_ops *ops, void *impl,
                        quark_client **out)
{
    quark_client *c = calloc(1, sizeof *c);
    if (!c)
        return qk_error(QUARK_ENOMEM, "out of memory creating a client");
    c->opts = *opts;
    c->ops = ops;
    c->impl = impl;
    c->default_deadline_ms = opts->default_deadline_ms ? opts->default_deadline_ms : 30000;
    *out = c;
    return QUARK_OK;
}

quark_err quark_client_connect(quark_client *c)
{
    if (!c)
        return qk_error(QUARK_EINVAL, "quark_client_connect: client is NULL");
    quark_err rc = c->ops->connect(c->impl);
    if (rc == QUARK_OK)
        atomic_store(&c->connected, 1);
    return rc;
}

quark_err quark_client_disconnect(quark_client *c)
{
    if (!c)
        return qk_error(QUARK_EINVAL, "quark_client_disconnect: client is NULL");
    atomic_store(&c->connected, 0);
    c->ops->disconnect(c->impl);
    return QUARK_OK;
}

int quark_client_is_connected(const quark_client *c)
{
    if (!c || !atomic_load(&((quark_client *)c)->connected))
        return 0;
    return c->ops->connected(c->impl);
}

void quark_client_free(quark_client *c)
{
    if (!c)
        return;
    c->ops->free(c->impl);
    free(c);
}

/* ---- calls ---- */

/* What every call checks, whatever the backend; *dl is its deadline (ms
 * from now). */
static quark_err check_call(quark_ref *ref, const quark_interface *iface, unsigned method,
                            const ProtobufCMessage *req, uint32_t *dl)
{
    if (QK_UNLIKELY(!ref || !iface || !req))
        return qk_error(QUARK_EINVAL, "call: %s is NULL",
                        !ref ? "the actor reference" : !iface ? "the interface" : "the request");
    quark_client *c = ref->client;
    if (QK_UNLIKELY(!atomic_load_explicit(&c->connected, memory_order_acquire)))
        return qk_error(QUARK_ENOTCONNECTED, "the client is not connected: call "
                        "quark_client_connect() first");
    if (QK_UNLIKELY(ref->iface != iface && strcmp(ref->iface->name, iface->name) != 0))
        return qk_error(QUARK_EINVAL, "the reference to '%s' speaks %s, not %s",
                        ref->id_len ? ref->data : "", ref->iface->name, iface->name);
    if (QK_UNLIKELY(method >= iface->n_methods))
        return qk_error(QUARK_ENOMETHOD, "interface %s has no method number %u", iface->name,
                        method);
    const quark_method_desc *md = &iface->methods[method];
    if (QK_UNLIKELY(req->descriptor != md->input))
        return qk_error(QUARK_EINVAL, "%s.%s takes a %s, not a %s", iface->name, md->name,
                        md->input->name, req->descriptor ? req->descriptor->name : "?");
    *dl = ref->deadline_ms ? ref->deadline_ms : c->default_deadline_ms;
    return QUARK_OK;
}

quark_err quark_call(quark_ref *ref, const quark_interface *iface, unsigned method,
                     const ProtobufCMessage *req, ProtobufCMessage **reply)
{
    if (reply)
        *reply = NULL;
    if (QK_UNLIKELY(qk_tls_worker != NULL))
        return qk_error(QUARK_EWOULDBLOCK, "blocking call on a Quark worker thread (inside "
                        "an actor or a callback) would stall it: use the _async form");
    uint32_t dl = 0;
    quark_err rc = check_call(ref, iface, method, req, &dl);
    if (rc != QUARK_OK)
        return rc;
    quark_client *c = ref->client;
    return c->ops->call(c->impl, ref, iface, method, req, dl, reply);
}

quark_err quark__call_async(quark_ref *ref, const quark_interface *iface, unsigned method,
                            const ProtobufCMessage *req, quark__trampoline_fn tramp,
                            void (*fn)(void), void *arg)
{
    if (QK_UNLIKELY(!tramp || !fn))
        return qk_error(QUARK_EINVAL, "async call: the callback is NULL");
    uint32_t dl = 0;
    quark_err rc = check_call(ref, iface, method, req, &dl);
    if (rc != QUARK_OK)
        return rc;
    quark_client *c = ref->client;
    return c->ops->call_async(c->impl, ref, iface, method, req, dl, tramp, fn, arg);
}

static void generic_tramp(void (*fn)(void), quark_err err, const char *errmsg,
                          const ProtobufCMessage *reply, void *arg)
{
    ((quark_reply_fn)fn)(err, errmsg, reply, arg);
}

quark_err quark_call_async(quark_ref *ref, const quark_interface *iface, unsigned method,
                           const ProtobufCMessage *req, quark_reply_fn cb, void *arg)
{
    return quark__call_async(ref, iface, method, req, generic_tramp, (void (*)(void))cb, arg);
}

void quark_msg_free(void *msg)
{
    if (msg)
        protobuf_c_message_free_unpacked((ProtobufCMessage *)msg, NULL);
}

/* ---- subscriptions ---- */

quark_err quark_subscribe(quark_client *c, const char *type_name, const char *id,
                          quark_event_fn fn, void *arg, quark_subscription **out)
{
    if (!out)
        return qk_error(QUARK_EINVAL, "quark_subscribe: out is NULL");
    *out = NULL;
    if (!c || !type_name || !id || !fn)
        return qk_error(QUARK_EINVAL, "quark_subscribe: %s is NULL",
                        !c ? "client" : !type_name ? "type_name" : !id ? "id" : "fn");
    if (!atomic_load(&c->connected))
        return qk_error(QUARK_ENOTCONNECTED, "the client is not connected: call "
                        "quark_client_connect() first");
    quark_subscription *h = calloc(1, sizeof *h);
    if (!h)
        return qk_error(QUARK_ENOMEM, "out of memory subscribing");
    quark_err rc = c->ops->subscribe(c->impl, type_name, id, fn, arg, &h->sub);
    if (rc != QUARK_OK) {
        free(h);
        return rc;
    }
    h->ops = c->ops;
    *out = h;
    return QUARK_OK;
}

void quark_unsubscribe(quark_subscription *h)
{
    if (!h)
        return;
    h->ops->unsubscribe(h->sub);
    free(h);
}

/* ---- references ---- */

quark_err quark_ref_new(quark_client *c, const quark_interface *iface, const char *type_name,
                        const char *id, quark_ref **out)
{
    if (!out)
        return qk_error(QUARK_EINVAL, "quark_ref_new: out is NULL");
    *out = NULL;
    if (!c || !iface || !id)
        return qk_error(QUARK_EINVAL, "quark_ref_new: %s is NULL",
                        !c ? "client" : !iface ? "interface" : "id");
    size_t id_len = strlen(id);
    if (id_len == 0 || id_len > QUARK_ID_MAX)
        return qk_error(QUARK_EINVAL, "actor id must be 1..%d bytes (got %zu)", QUARK_ID_MAX,
                        id_len);
    size_t tn_len = type_name ? strlen(type_name) : 0;
    if (type_name && !qk_type_name_valid(type_name, tn_len))
        return qk_error(QUARK_EINVAL, "type name '%s' is invalid (1..%d printable ASCII "
                        "characters, no spaces)", type_name, QUARK_TYPE_NAME_MAX);
    quark_ref *r = calloc(1, sizeof *r + id_len + 1 + (type_name ? tn_len + 1 : 0));
    if (!r)
        return qk_error(QUARK_ENOMEM, "out of memory creating an actor reference");
    r->client = c;
    r->iface = iface;
    r->id_len = (uint16_t)id_len;
    memcpy(r->data, id, id_len + 1);
    if (type_name) {
        char *tn = r->data + id_len + 1;
        memcpy(tn, type_name, tn_len + 1);
        r->type_name = tn;
        r->type_len = (uint32_t)tn_len;
    } else {
        r->type_name = iface->name;
        r->type_len = (uint32_t)strlen(iface->name);
    }
    r->hash = qk_key_hash(qk_type_name_hash(r->type_name, r->type_len), id, id_len);
    *out = r;
    return QUARK_OK;
}

void quark_ref_free(quark_ref *r)
{
    free(r);
}

const char *quark_ref_id(const quark_ref *r)
{
    return r ? r->data : NULL;
}

const char *quark_ref_type_name(const quark_ref *r)
{
    return r ? r->type_name : NULL;
}

void quark_ref_set_deadline(quark_ref *r, uint32_t ms)
{
    if (r)
        r->deadline_ms = ms;
}
