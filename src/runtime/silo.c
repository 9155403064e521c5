/*
 * silo.c - the runtime's half of a silo: its state, workers and own client,
 * the stop phases, and diagnostics.
 *
 * Running launches the workers and connects the silo's own client (the one
 * actors use to call others). Stopping flips the state so new calls fail
 * fast with QUARK_ECLOSED, then lets every worker deactivate its
 * activations and answer what it still holds (runtime.h lists the phases).
 * What else a silo is made of (its listener, its cluster) is plugged in by
 * the composition root, root/silo.c, which also holds the public
 * quark_silo_create/start/stop.
 */
#include <stdlib.h>
#include <unistd.h>

#include "runtime.h"

void quark_silo_opts_init(quark_silo_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->workers = 0;
    o->idle_timeout_ms = 300000;
    o->default_deadline_ms = 30000;
    o->listen = NULL;
    o->cluster_id = "default";
    o->max_message_size = 4u << 20;
    o->max_output_buffer = 16u << 20;
    o->poll_us = 50;
    o->max_mailbox = 10000;
    o->max_worker_queue = 100000;
    o->max_connection_calls = 4096;
    o->max_connections = 10000;
    o->handshake_timeout_ms = 10000;
    o->frame_timeout_ms = 30000;
    o->idle_connection_ms = 300000;
    o->reminder_min_period_ms = 1000;
    o->reminder_refresh_ms = 1000;
}

/* The limits left 0 get their defaults (quark_silo_opts_init's). */
static void limits_default(quark_silo_opts *o)
{
    quark_silo_opts d;
    quark_silo_opts_init(&d);
#define QK_DEFAULT(f) \
    if (o->f == 0)    \
        o->f = d.f;
    QK_DEFAULT(max_mailbox)
    QK_DEFAULT(max_worker_queue)
    QK_DEFAULT(max_connection_calls)
    QK_DEFAULT(max_connections)
    QK_DEFAULT(handshake_timeout_ms)
    QK_DEFAULT(frame_timeout_ms)
    QK_DEFAULT(idle_connection_ms)
    QK_DEFAULT(reminder_min_period_ms)
    QK_DEFAULT(reminder_refresh_ms)
#undef QK_DEFAULT
}

quark_err qk_silo_new(const quark_silo_opts *opts, quark_silo **out)
{
    quark_silo *s = calloc(1, sizeof *s);
    if (!s)
        return qk_error(QUARK_ENOMEM, "out of memory creating a silo");
    if (opts)
        s->opts = *opts;
    else
        quark_silo_opts_init(&s->opts);
    if (s->opts.idle_timeout_ms == 0)
        s->opts.idle_timeout_ms = 300000;
    if (s->opts.default_deadline_ms == 0)
        s->opts.default_deadline_ms = 30000;
    if (s->opts.max_message_size == 0)
        s->opts.max_message_size = 4u << 20;
    if (s->opts.max_output_buffer == 0)
        s->opts.max_output_buffer = 16u << 20;
    limits_default(&s->opts);
    if (s->opts.max_mailbox > UINT16_MAX) {
        uint32_t n = s->opts.max_mailbox;
        free(s);
        return qk_error(QUARK_EINVAL, "quark_silo_create: max_mailbox %u is too large (at most "
                        "65535 calls queued for one actor)", n);
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    s->nworkers = s->opts.workers ? s->opts.workers : (unsigned)(cpus > 0 ? cpus : 1);
    if (s->nworkers > 1024) {
        unsigned n = s->nworkers;
        free(s);
        return qk_error(QUARK_EINVAL, "quark_silo_create: %u workers is too many (max 1024)", n);
    }
    const char *cid = s->opts.cluster_id && *s->opts.cluster_id ? s->opts.cluster_id : "default";
    s->cluster_id = strdup(cid);
    s->listen_host = s->opts.listen ? strdup(s->opts.listen) : NULL;
    s->seeds = s->opts.seeds ? strdup(s->opts.seeds) : NULL;
    s->membership = s->opts.membership ? strdup(s->opts.membership) : NULL;
    s->directory = s->opts.directory ? strdup(s->opts.directory) : NULL;
    s->advertise = s->opts.advertise ? strdup(s->opts.advertise) : NULL;
    s->opts.storage = NULL;   /* opened by quark_silo_create, not kept */
    s->opts.reminders = NULL;
    /* NULL when there is none: "" is no key either */
    s->cluster_key = s->opts.cluster_key && *s->opts.cluster_key ? strdup(s->opts.cluster_key)
                                                                  : NULL;
    s->opts.cluster_id = s->cluster_id;
    s->opts.cluster_key = s->cluster_key;
    s->opts.listen = s->listen_host;
    s->opts.seeds = s->seeds;
    s->opts.membership = s->membership;
    s->opts.directory = s->directory;
    s->opts.advertise = s->advertise;
    uv_mutex_init(&s->lock);
    atomic_store(&s->lease_until, UINT64_MAX);
    quark_client_opts co;
    quark_client_opts_init(&co);
    co.embedded = s;
    co.default_deadline_ms = s->opts.default_deadline_ms;
    quark_err rc = qk_client_new(&co, &qk_client_embedded, s, &s->self_client);
    if (rc != QUARK_OK || !s->cluster_id || (s->opts.listen && !s->listen_host) ||
        (s->opts.seeds && !s->seeds) || (s->opts.membership && !s->membership) ||
        (s->opts.directory && !s->directory) ||
        (s->opts.advertise && !s->advertise)) {
        qk_silo_free(s);
        return rc != QUARK_OK ? rc : qk_error(QUARK_ENOMEM, "out of memory creating a silo");
    }
    *out = s;
    return QUARK_OK;
}

void qk_silo_set_listener(quark_silo *s, const qk_listener_ops *ops, void *self)
{
    s->listener = ops;
    s->listener_self = self;
}

void qk_silo_set_route(quark_silo *s, const qk_route_ops *ops, void *self)
{
    s->route = ops;
    s->route_self = self;
}

void qk_silo_set_storage(quark_silo *s, const qk_storage_ops *ops, void *self)
{
    s->storage = ops;
    s->storage_self = self;
}

quark_err qk_silo_run(quark_silo *s)
{
    quark_err rc = qk_workers_start(s);
    if (rc != QUARK_OK)
        return rc;
    atomic_store(&s->state, 1);
    atomic_store(&s->self_client->connected, 1);
    return QUARK_OK;
}

void qk_silo_stop_calls(quark_silo *s)
{
    atomic_store(&s->state, 2);
    qk_workers_stop_calls(s);
}

void qk_silo_close_io(quark_silo *s)
{
    qk_workers_close_io(s);
}

void qk_silo_join(quark_silo *s)
{
    qk_workers_join(s);
    atomic_store(&s->state, 3);
}

void qk_silo_free(quark_silo *s)
{
    if (!s)
        return;
    quark_client_free(s->self_client);
    uv_mutex_destroy(&s->lock);
    free(s->cluster_id);
    if (s->cluster_key) /* the secret does not outlive the silo in its heap */
        explicit_bzero(s->cluster_key, strlen(s->cluster_key));
    free(s->cluster_key);
    free(s->listen_host);
    free(s->seeds);
    free(s->membership);
    free(s->directory);
    free(s->advertise);
    free(s);
}

/* ---- diagnostics ---- */

typedef struct qk_diag {
    const char *type_name; /* filter, or NULL */
    size_t count;
    /* listing: "type\0id\0" pairs */
    char *buf;
    size_t len, cap;
    int oom;
} qk_diag;

static void diag_append(qk_diag *d, const char *s, size_t n)
{
    if (d->len + n + 1 > d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4096;
        while (cap < d->len + n + 1)
            cap *= 2;
        char *b = realloc(d->buf, cap);
        if (!b) {
            d->oom = 1;
            return;
        }
        d->buf = b;
        d->cap = cap;
    }
    memcpy(d->buf + d->len, s, n);
    d->buf[d->len + n] = '\0';
    d->len += n + 1;
}

static void walk(qk_worker *w, qk_diag *d, int list)
{
    for (size_t i = 0; i <= w->mask; i++) {
        quark_actor *a = w->slots[i].a;
        if (!a || (d->type_name && strcmp(a->type->name, d->type_name) != 0))
            continue;
        d->count++;
        if (list && !d->oom) {
            diag_append(d, a->type->name, a->type->name_len);
            diag_append(d, a->id, a->id_len);
        }
    }
}

static void count_task(qk_worker *w, void *arg)
{
    walk(w, arg, 0);
}

static void list_task(qk_worker *w, void *arg)
{
    walk(w, arg, 1);
}

size_t quark_silo_activation_count(quark_silo *s, const char *type_name)
{
    if (!s || qk_tls_worker || atomic_load(&s->state) != 1)
        return 0;
    qk_diag d = {.type_name = type_name};
    for (unsigned i = 0; i < s->nworkers; i++)
        qk_run_on(&s->workers[i], count_task, &d);
    return d.count;
}

quark_err quark_silo_list_activations(quark_silo *s, const char *type_name,
                                      quark_activation_fn fn, void *arg)
{
    if (!s || !fn)
        return qk_error(QUARK_EINVAL, "quark_silo_list_activations: %s is NULL",
                        !s ? "silo" : "fn");
    if (qk_tls_worker)
        return qk_error(QUARK_EWOULDBLOCK, "quark_silo_list_activations must not be called "
                        "from a worker thread");
    if (atomic_load(&s->state) != 1)
        return qk_error(QUARK_ECLOSED, "the silo is not running");
    qk_diag d = {.type_name = type_name};
    for (unsigned i = 0; i < s->nworkers; i++)
        qk_run_on(&s->workers[i], list_task, &d);
    if (d.oom) {
        free(d.buf);
        return qk_error(QUARK_ENOMEM, "out of memory listing activations");
    }
    for (size_t off = 0; off < d.len;) {
        const char *t = d.buf + off;
        off += strlen(t) + 1;
        const char *id = d.buf + off;
        off += strlen(id) + 1;
        fn(t, id, arg);
    }
    free(d.buf);
    return QUARK_OK;
}
