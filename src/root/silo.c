/*
 * silo.c - the composition root of a silo: quark_silo_create, start, stop.
 *
 * The runtime (runtime/) knows nothing of sockets, clusters or storage; it calls
 * outward through the ports it declares (runtime/ports.h). This is where the
 * parts are made and plugged in: a silo that listens gets a server
 * (transport/server.h: the listener port) and a cluster membership
 * (cluster/cluster.h: the route port, and the control table the server asks
 * for gossip, views and status). The order matters:
 *   start: bind (the port is known) -> cluster -> workers -> the silo runs
 *          -> gossip starts;
 *   stop:  leave the cluster (the others route elsewhere) -> calls stop
 *          (phase 1) -> forwarded calls finish, the peer link closes ->
 *          connections write and close (phase 2) -> workers join (phase 3).
 */
#include <stdlib.h>

#include "runtime/runtime.h"
#include "transport/server.h"
#include "cluster/cluster.h"
#include "storage/storage.h"
#include "storage/reminders.h"
#include "runtime/reminder_service.h"

/* What a silo is made of besides its runtime. */
typedef struct qk_silo_parts {
    qk_server *server;            /* NULL: in-process only */
    qk_cluster *cluster;          /* with a server */
    const qk_storage_ops *storage; /* always (memory by default) */
    void *storage_self;
    const qk_reminders_ops *reminders; /* always (memory by default) */
    void *reminders_self;
} qk_silo_parts;

static qk_silo_parts *parts_of(const quark_silo *s)
{
    return s->root;
}

quark_err quark_silo_create(const quark_silo_opts *opts, quark_silo **out)
{
    if (!out)
        return qk_error(QUARK_EINVAL, "quark_silo_create: out is NULL");
    *out = NULL;
    quark_err rc = quark_registry_check();
    if (rc != QUARK_OK)
        return rc;
    quark_silo *s = NULL;
    if ((rc = qk_silo_new(opts, &s)) != QUARK_OK)
        return rc;
    qk_silo_parts *p = calloc(1, sizeof *p);
    if (!p) {
        qk_silo_free(s);
        return qk_error(QUARK_ENOMEM, "out of memory creating a silo");
    }
    s->root = p;
    /* The storage opens now, so a bad spec or file fails here. */
    qk_storage_env env = {.cluster_id = s->cluster_id};
    if ((rc = qk_storage_open(opts ? opts->storage : NULL, &env, &p->storage,
                              &p->storage_self)) != QUARK_OK) {
        free(p);
        qk_silo_free(s);
        return rc;
    }
    qk_silo_set_storage(s, p->storage, p->storage_self);
    if ((rc = qk_reminders_open(opts ? opts->reminders : NULL, s->cluster_id, &p->reminders,
                                &p->reminders_self)) != QUARK_OK) {
        p->storage->destroy(p->storage_self);
        free(p);
        qk_silo_free(s);
        return rc;
    }
    *out = s;
    return QUARK_OK;
}

/* Make and plug in the network parts (opts.listen set). */
static quark_err start_parts(quark_silo *s, qk_silo_parts *p)
{
    quark_err rc = qk_server_new(s, &p->server);
    if (rc == QUARK_OK)
        rc = qk_server_bind(p->server);
    if (rc == QUARK_OK)
        rc = qk_cluster_new(s, p->server, &p->cluster);
    if (rc != QUARK_OK) { /* nothing stays behind: a later start begins afresh */
        qk_server_free(p->server);
        p->server = NULL;
        return rc;
    }
    qk_server_control ctl = qk_cluster_control(p->cluster);
    qk_server_set_control(p->server, &ctl);
    qk_silo_set_listener(s, &qk_server_listener, p->server);
    qk_silo_set_route(s, &qk_cluster_route, p->cluster);
    return QUARK_OK;
}

quark_err quark_silo_start(quark_silo *s)
{
    if (!s)
        return qk_error(QUARK_EINVAL, "quark_silo_start: silo is NULL");
    qk_silo_parts *p = parts_of(s);
    uv_mutex_lock(&s->lock);
    int st = atomic_load(&s->state);
    if (st != 0) {
        uv_mutex_unlock(&s->lock);
        return qk_error(QUARK_EBUSY, "the silo was already %s", st == 1 ? "started" : "stopped");
    }
    quark_err rc = s->opts.listen ? start_parts(s, p) : QUARK_OK;
    if (rc == QUARK_OK && !s->reminders) {
        /* In a cluster, the view says which buckets of reminders are this
         * silo's to fire; a silo alone fires them all. */
        qk_rsvc_opts ro = {.ops = p->reminders, .store = p->reminders_self,
                           .view = p->cluster ? qk_cluster_view_ref : NULL,
                           .view_arg = p->cluster,
                           .min_period_ms = s->opts.reminder_min_period_ms,
                           .refresh_ms = s->opts.reminder_refresh_ms};
        rc = qk_rsvc_new(s, &ro);
    }
    if (rc == QUARK_OK)
        rc = qk_silo_run(s);
    if (rc != QUARK_OK) { /* the workers never started: unplug; a later start begins afresh */
        if (p->server) {
            qk_silo_set_listener(s, NULL, NULL);
            qk_silo_set_route(s, NULL, NULL);
            qk_cluster_free(p->cluster);
            qk_server_free(p->server);
            p->cluster = NULL;
            p->server = NULL;
        }
        qk_rsvc_free(s);
    }
    if (rc == QUARK_OK && p->cluster)
        rc = qk_cluster_start(p->cluster);
    if (rc == QUARK_OK)
        rc = qk_rsvc_run(s);
    uv_mutex_unlock(&s->lock);
    return rc;
}

quark_err quark_silo_stop(quark_silo *s)
{
    if (!s)
        return qk_error(QUARK_EINVAL, "quark_silo_stop: silo is NULL");
    if (qk_tls_worker)
        return qk_error(QUARK_EWOULDBLOCK, "quark_silo_stop must not be called from a "
                        "worker thread (an actor or a callback)");
    qk_silo_parts *p = parts_of(s);
    uv_mutex_lock(&s->lock);
    if (atomic_load(&s->state) == 1) {
        /* No more ticks, and the reminders' requests queued are answered
         * while the workers still run. */
        qk_rsvc_stop(s);
        /* Leave the cluster first (the hash directory): the others take
         * over this silo's actors and route there, while it still forwards
         * what reaches it. */
        bool last = p->cluster && qk_cluster_leaves_last(p->cluster);
        if (p->cluster && !last)
            qk_cluster_leave(p->cluster);
        qk_silo_stop_calls(s);
        /* With a directory in a server, only once its activations are gone
         * (their state written) may the others take them over. */
        if (last)
            qk_cluster_leave(p->cluster);
        /* Calls this silo forwarded get their answers (bounded), then the
         * link to the other silos closes. */
        if (p->cluster)
            qk_cluster_stop(p->cluster);
        qk_silo_close_io(s);
        qk_silo_join(s);
    }
    atomic_store(&s->state, 3);
    uv_mutex_unlock(&s->lock);
    return QUARK_OK;
}

void quark_silo_free(quark_silo *s)
{
    if (!s)
        return;
    quark_silo_stop(s);
    qk_silo_parts *p = parts_of(s);
    qk_cluster_free(p->cluster);
    qk_server_free(p->server);
    qk_rsvc_free(s); /* every tick it sent was answered */
    qk_silo_free(s); /* the workers are gone: nothing uses the storage now */
    p->storage->destroy(p->storage_self);
    p->reminders->destroy(p->reminders_self);
    free(p);
}

int quark_silo_port(const quark_silo *s)
{
    return s ? qk_server_port(parts_of(s)->server) : 0;
}

quark_err quark_silo_get_status(quark_silo *s, quark_silo_status **out)
{
    if (!s || !out)
        return qk_error(QUARK_EINVAL, "quark_silo_get_status: %s is NULL", !s ? "silo" : "out");
    *out = NULL;
    qk_silo_parts *p = parts_of(s);
    if (!p->cluster)
        return qk_error(QUARK_ENOTCONNECTED, "this silo does not listen, so it is in no "
                        "cluster (set quark_silo_opts.listen)");
    return qk_cluster_status(p->cluster, out);
}
