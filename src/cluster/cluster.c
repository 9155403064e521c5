/*
 * cluster.c - a silo's membership in a cluster: views, routing, forwarding.
 *
 * Every listening silo is a member of a cluster (alone, without seeds). The
 * pieces:
 *   - a membership provider (runtime/providers.h; gossip over static seeds,
 *     gossip.c) learns the live members and hands over a view whenever they
 *     change;
 *   - a directory provider says where an actor lives; each worker asks its
 *     own per-worker state. The hash directory (directory_hash.c) follows
 *     placement: the view alone answers. The Redis directory
 *     (directory_redis.c) holds an entry per activation: a call for an
 *     actor with no activation here is held while its worker asks Redis
 *     (registers the activation here, or learns the silo that has it),
 *     then runs here (qk_deliver_placed) or is forwarded; what it learned
 *     stays in the worker's cache (dir_cache.h) for the next calls. Such a
 *     silo serves its activations only while the membership's lease holds
 *     (lease_until): a silo that may have been declared dead lets go of
 *     them before another can register the actor;
 *   - the peer link (transport/peer.c): its I/O thread is the cluster's
 *     thread (it ticks the membership provider) and carries forwarded calls;
 *   - views: when the live set changes, the new view (runtime/view.h) is
 *     published: to the peer link, to every worker by a task (each worker
 *     keeps its own reference, so routing a call reads no shared state), to
 *     the watching clients of each worker, and to the application's
 *     on_view callback;
 *   - forwarding (the route port, runtime/ports.h): a worker about to
 *     deliver a call that the directory places on another silo hands it to
 *     the peer link instead; the answer comes back to that worker through
 *     the forward's op and goes to the caller as any answer does.
 *
 * Views are published on the cluster's thread only, so they are published
 * in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "quark/actor_service.pb-c.h"
#include "core/addr.h"
#include "cluster/cluster.h"
#include "cluster/directory_hash.h"
#include "core/redis_link.h"
#include "cluster/directory_redis.h"
#include "cluster/gossip.h"
#include "cluster/membership_redis.h"
#include "transport/remote.h"
#include "transport/view_codec.h"

#define QK_DIR_WAIT_BUCKETS 256   /* a worker's table of directory requests in flight */
#define QK_DIR_CACHE_SLOTS 16384  /* a worker's cache of where actors live */

struct qk_cluster {
    quark_silo *silo;
    char self[QK_ADDR_MAX];
    /* The providers (runtime/providers.h). */
    const qk_membership_ops *mp;
    void *mstate;
    bool mstarted;                /* mp->start ran (on the cluster's thread) */
    const qk_directory_ops *dir;
    void *dstate;
    bool located;                 /* the directory asks a server (!follows_placement) */
    bool lapsed;                  /* the cluster's thread's last reading of the lease */
    uint64_t last_inc;            /* the incarnation the workers' activations belong to */
    uint64_t dropped_inc;         /* the incarnation the workers were last told to drop for */
    uv_mutex_t mu;
    qk_view *view;                /* last published (under mu) */
    qk_server *server;            /* the silo's (views go to its watchers) */
    qk_remote *peer;
    uint64_t started_ms;
    _Atomic int stopped;
    _Atomic int leaving;          /* qk_cluster_leave began */
    _Atomic size_t forwards;      /* forwarded calls whose answer was not handled yet */
    qk_cl_worker *pw;             /* [silo->nworkers] */
};

/* ---- publishing views ---- */

/* On each worker: let go of every activation (the lease lapsed, or this
 * silo is a new incarnation: its entries may be someone else's now). */
static void worker_drop_task(qk_worker *w, void *arg)
{
    qk_cluster *cl = arg;
    qk_cl_worker *pw = &cl->pw[w->index];
    pw->drop_all = true;
    qk_rebalance(w);
    pw->drop_all = false;
}

/* ---- renewing the directory's entries ----
 * A directory whose entries expire (Redis: a TTL) has each worker renew
 * those of its activations every refresh_every_ms, in batches; an entry
 * that is no longer the activation's (it expired, was deleted, or was taken
 * over) means another activation may start elsewhere: this one goes.
 * A round that fully succeeded, sent at t, keeps every entry of the worker
 * until t + TTL: the worker's route_until (runtime) becomes t + TTL - TTL/8,
 * and past it its activations run no turn and are let go. A round that
 * failed is tried again a second later. */

#define QK_RENEW_BATCH 128
#define QK_RENEW_RETRY_MS 1000

typedef struct qk_renew {
    qk_op op;                     /* home: the worker */
    qk_op_room room;
    qk_cluster *cl;
    size_t n;
    const qk_type_entry *types[QK_RENEW_BATCH];
    qk_actor_key keys[QK_RENEW_BATCH];
    qk_dir_entry mine[QK_RENEW_BATCH];
    bool gone[QK_RENEW_BATCH];
    char *ids;                    /* the ids, one after the other */
} qk_renew;

static void round_end(qk_cluster *cl, qk_worker *w);
static void on_renew(uv_timer_t *t);

static void renew_done(qk_op *op)
{
    qk_renew *r = QK_CONTAINER_OF(op, qk_renew, op);
    qk_worker *w = qk_tls_worker;
    qk_cluster *cl = r->cl;
    qk_cl_worker *pw = &r->cl->pw[w->index];
    pw->renewing--;
    if (op->out->err != QUARK_OK)
        pw->round_failed = true;
    else {
        for (size_t i = 0; i < r->n; i++) {
            if (!r->gone[i])
                continue;
            quark_actor *a = qk_activation_find(w, r->types[i], r->keys[i].hash, r->keys[i].id,
                                                r->keys[i].id_len);
            if (a && a->route_tag == r->mine[i].activation) {
                fprintf(stderr, "quark: %s '%s': its directory entry is gone (expired, deleted "
                        "or taken over): the activation goes\n", a->type->name, a->id);
                qk_let_go(w, a);
            }
        }
    }
    qk_op_release(op);
    free(r->ids);
    free(r);
    if (!pw->renewing)
        round_end(cl, w);
}

static void renew_send(qk_cluster *cl, qk_worker *w, qk_renew *r)
{
    qk_cl_worker *pw = &cl->pw[w->index];
    qk_op_init(&r->op, renew_done, w, 0, &r->room);
    if (pw->dir && cl->dir->refresh(pw->dir, r->keys, r->mine, r->n, r->gone, &r->op) ==
                       QUARK_PENDING) {
        pw->renewing++;
        return;
    }
    pw->round_failed = true;
    free(r->ids);
    free(r);
}

/* Until when the entries a round sent at `sent` renewed surely live: a TTL
 * after, less a margin. */
static uint64_t renewed_until(const qk_cluster *cl, uint64_t sent)
{
    uint64_t ttl = 3 * (uint64_t)cl->dir->refresh_every_ms(cl->dstate);
    return sent + ttl - ttl / 8;
}

/* The round's batches are all answered: a good round moves the worker's
 * bound; a failed one is tried again soon. */
static void round_end(qk_cluster *cl, qk_worker *w)
{
    qk_cl_worker *pw = &cl->pw[w->index];
    if (!pw->renew)
        return; /* stopping */
    if (!pw->round_failed) {
        w->route_until = renewed_until(cl, pw->round_sent);
        return;
    }
    uint64_t every = uv_timer_get_repeat(pw->renew);
    uv_timer_start(pw->renew, on_renew, QK_RENEW_RETRY_MS, every);
}

static void on_renew(uv_timer_t *t)
{
    qk_worker *w = qk_tls_worker;
    qk_cluster *cl = t->data;
    qk_cl_worker *pw = &cl->pw[w->index];
    if (pw->renewing || !pw->dir || w->stopping)
        return; /* the last round is not done (Redis is slow or away) */
    if (qk_now_ms_coarse() >= w->route_until) /* entries may have expired: let go */
        worker_drop_task(w, cl);
    pw->round_sent = qk_now_ms_coarse();
    pw->round_failed = false;
    uint64_t inc = cl->mp->incarnation(cl->mstate);
    qk_renew *r = NULL;
    size_t used = 0, cap = 0;
    for (quark_actor *a = w->lru_head; a; a = a->lru_next) {
        if (!a->route_tag)
            continue;
        if (!r) {
            r = calloc(1, sizeof *r);
            cap = 64 * QK_RENEW_BATCH;
            if (!r || !(r->ids = malloc(cap))) {
                free(r);
                return;
            }
            r->cl = cl;
            used = 0;
        }
        if (used + a->id_len > cap) {
            /* keys point into ids: grow by moving them along */
            size_t ncap = cap * 2 + a->id_len;
            char *n = malloc(ncap);
            if (!n)
                break;
            memcpy(n, r->ids, used);
            for (size_t i = 0; i < r->n; i++)
                r->keys[i].id = n + (r->keys[i].id - r->ids);
            free(r->ids);
            r->ids = n;
            cap = ncap;
        }
        memcpy(r->ids + used, a->id, a->id_len);
        size_t i = r->n++;
        r->types[i] = a->type;
        r->keys[i] = (qk_actor_key){.type = a->type->name, .type_len = a->type->name_len,
                                    .id = r->ids + used, .id_len = a->id_len, .hash = a->hash};
        r->mine[i] = (qk_dir_entry){.member = -1, .silo = cl->self, .incarnation = inc,
                                    .activation = a->route_tag};
        used += a->id_len;
        if (r->n == QK_RENEW_BATCH) {
            renew_send(cl, w, r);
            r = NULL;
        }
    }
    if (r && r->n)
        renew_send(cl, w, r);
    else if (r) {
        free(r->ids);
        free(r);
    }
    if (!pw->renewing)
        round_end(cl, w); /* nothing to renew, or nothing could be sent */
}

static void start_renewal(qk_cluster *cl, qk_worker *w)
{
    qk_cl_worker *pw = &cl->pw[w->index];
    uint32_t every = cl->dir->refresh_every_ms ? cl->dir->refresh_every_ms(cl->dstate) : 0;
    if (!every || !cl->dir->refresh || !(pw->renew = malloc(sizeof *pw->renew)))
        return;
    uv_timer_init(&w->loop, pw->renew);
    pw->renew->data = cl;
    /* entries registered from now on live a TTL from their registration */
    w->route_until = renewed_until(cl, qk_now_ms_coarse());
    uv_timer_start(pw->renew, on_renew, every, every);
}

static void free_timer(uv_handle_t *h)
{
    free(h);
}

/* On each worker: route by the new view from now on, let go of what this
 * silo no longer owns, tell the watching connections. */
static void worker_view_task(qk_worker *w, void *arg)
{
    qk_view *v = arg;
    qk_cluster *cl = w->silo->route_self;
    qk_cl_worker *pw = &cl->pw[w->index];
    qk_view *old = pw->view;
    pw->view = v;
    qk_view_unref(old);
    pw->gen++;
    if (cl->located && !pw->dir && !pw->dir_closed) { /* its connection lives on this loop */
        pw->dir = cl->dir->attach(cl->dstate, w);
        if (pw->dir)
            start_renewal(cl, w);
    }
    if (pw->dir) {
        qk_view_ref(v); /* the directory's */
        cl->dir->set_view(pw->dir, v);
    }
    qk_rebalance(w);
    if (cl->server)
        qk_server_push_view(cl->server, w);
}

static quark_silo_status *status_of(qk_cluster *cl, const qk_view *v, uint64_t inc);

/* The membership provider's news (on the cluster's thread): the new view
 * goes to the peer link, to every worker by a task (each keeps its own
 * reference, so routing reads no shared state), and to on_view. */
static void membership_changed(void *arg, qk_view *v)
{
    qk_cluster *cl = arg;
    uv_mutex_lock(&cl->mu);
    qk_view *old = cl->view;
    cl->view = v;
    uv_mutex_unlock(&cl->mu);
    qk_view_unref(old);

    qk_view_ref(v);
    qk_remote_install_view(cl->peer, v);
    quark_silo *s = cl->silo;
    for (unsigned i = 0; i < s->nworkers; i++) {
        qk_view_ref(v);
        if (!qk_post_task(&s->workers[i], worker_view_task, v))
            qk_view_unref(v); /* out of memory: it keeps its old view until the next change */
    }
    if (s->opts.on_view) {
        quark_silo_status *st = status_of(cl, v, cl->mp->incarnation(cl->mstate));
        if (st) {
            s->opts.on_view(st, s->opts.on_view_arg);
            quark_status_free(st);
        }
    }
}

qk_view *qk_cluster_view_ref(void *arg)
{
    qk_cluster *cl = arg;
    uv_mutex_lock(&cl->mu);
    qk_view *v = cl->view;
    if (v)
        qk_view_ref(v);
    uv_mutex_unlock(&cl->mu);
    return v;
}

/* The membership's lease (read with a fresh clock: a worker's may predate
 * a pause of the process) and, on worker w, the bound of its entries'
 * renewal (route_until). */
static bool lease_holds(const qk_cluster *cl, const qk_worker *w)
{
    uint64_t now = qk_now_ms_coarse();
    return now < cl->mp->lease_until(cl->mstate) && (!w || now < w->route_until);
}

/* With a directory in a server, on the cluster's thread: when the lease
 * lapses, or the silo became a new incarnation, the workers let go of
 * their activations (the route refuses to run calls meanwhile). */
static void watch_lease(qk_cluster *cl)
{
    atomic_store_explicit(&cl->silo->lease_until, cl->mp->lease_until(cl->mstate),
                          memory_order_relaxed); /* for the workers' turns (qk_may_run) */
    bool lapsed = !lease_holds(cl, NULL);
    uint64_t inc = cl->mp->incarnation(cl->mstate);
    bool drop = (lapsed && !cl->lapsed) ||
                (inc != cl->last_inc && cl->last_inc && inc != cl->dropped_inc);
    if (drop)
        cl->dropped_inc = inc; /* once per incarnation, not at every tick until the lease */
    if (lapsed != cl->lapsed && cl->last_inc && !atomic_load(&cl->leaving))
        fprintf(stderr, "quark: %s: %s\n", cl->self,
                lapsed ? "the membership lease lapsed (no heartbeat acknowledged within the "
                         "failure timeout): this silo lets go of its activations and runs no "
                         "call until it is renewed"
                       : "the membership lease holds again");
    cl->lapsed = lapsed;
    if (!lapsed)
        cl->last_inc = inc;
    if (!drop)
        return;
    quark_silo *s = cl->silo;
    for (unsigned i = 0; i < s->nworkers; i++)
        qk_post_task(&s->workers[i], worker_drop_task, cl); /* out of memory: the route refuses */
}

/* Every tick of the peer link's I/O thread: the membership provider's. */
static void on_tick(void *arg, uint64_t now)
{
    qk_cluster *cl = arg;
    if (!cl->mstarted) {
        qk_membership_env env = {.arg = cl, .changed = membership_changed,
                                 .loop = qk_remote_loop(cl->peer)};
        if (cl->mp->start(cl->mstate, &env) != QUARK_OK) {
            fprintf(stderr, "quark: membership provider %s did not start: %s (retrying)\n",
                    cl->mp->name, quark_last_error());
            return;
        }
        cl->mstarted = true;
    }
    cl->mp->tick(cl->mstate, now);
    if (cl->located)
        watch_lease(cl);
}

/* The server's control table: a peer's message for the membership
 * provider (gossip), on any worker. */
static uint8_t *ctl_gossip(void *arg, const uint8_t *p, size_t n, size_t *len, const char **why)
{
    qk_cluster *cl = arg;
    if (!cl->mp->peer_message) {
        *why = "this silo's membership provider takes no gossip";
        return NULL;
    }
    return cl->mp->peer_message(cl->mstate, p, n, len, why);
}

static const char *ctl_self_name(void *arg)
{
    qk_cluster *cl = arg;
    return cl->self;
}

/* The peer link's I/O thread stops: the provider closes its handles. */
static void on_stop(void *arg)
{
    qk_cluster *cl = arg;
    if (cl->mstarted && cl->mp->stop)
        cl->mp->stop(cl->mstate);
}

/* ---- lifecycle ---- */

/* The membership provider opts.membership names. */
static quark_err new_membership(qk_cluster *cl, quark_silo *s, uint32_t hb, uint32_t ft)
{
    const char *m = s->opts.membership;
    if (!m || !*m || !strcmp(m, "gossip")) {
        cl->mp = &qk_membership_gossip;
        return qk_gossip_new(&s->opts, cl->self, cl->peer, &cl->mstate);
    }
    if (!strncmp(m, "redis://", 8)) {
        if (s->opts.seeds && *s->opts.seeds)
            return qk_error(QUARK_EINVAL, "membership '%s' keeps the member table in Redis: "
                            "give no seeds with it (seeds are for gossip)", m);
        cl->mp = &qk_membership_redis;
        qk_redis_members_cfg rc = {.spec = m, .cluster_id = s->cluster_id,
                                   .self_addr = cl->self, .heartbeat_ms = hb,
                                   .failure_timeout_ms = ft, .vnodes = s->opts.vnodes};
        return qk_membership_redis_new(&rc, &cl->mstate);
    }
    return qk_error(QUARK_EINVAL, "membership '%s': give \"gossip\" (with seeds) or "
                    "\"redis://HOST:PORT[/DB]\"", m);
}

static uint64_t incarnation_of(void *arg)
{
    qk_cluster *cl = arg;
    return cl->mp->incarnation(cl->mstate);
}

/* The directory provider opts.directory names (after the membership). */
static quark_err new_directory(qk_cluster *cl, quark_silo *s)
{
    const char *d = s->opts.directory;
    if (!d || !*d || !strcmp(d, "hash")) {
        cl->dir = &qk_directory_hash;
        return QUARK_OK;
    }
    if (strncmp(d, "redis://", 8) != 0)
        return qk_error(QUARK_EINVAL, "directory '%s': give \"hash\" or "
                        "\"redis://HOST:PORT[/DB]\"", d);
    const char *m = s->opts.membership;
    qk_redis_addr da, ma;
    quark_err rc = qk_redis_addr_parse(d, "directory", &da);
    if (rc != QUARK_OK)
        return rc;
    if (!m || strncmp(m, "redis://", 8) != 0 ||
        qk_redis_addr_parse(m, "membership", &ma) != QUARK_OK || strcmp(da.host, ma.host) ||
        da.port != ma.port || da.db != ma.db)
        return qk_error(QUARK_EINVAL, "directory '%s' judges entries by the Redis member table: "
                        "give membership the same Redis (now '%s')", d, m ? m : "gossip");
    if (!cl->mp->lease_until)
        return qk_error(QUARK_EINTERNAL, "membership %s gives no lease", cl->mp->name);
    qk_dir_redis_cfg dc = {.spec = d, .cluster_id = s->cluster_id, .self_addr = cl->self,
                           .ttl_ms = s->opts.directory_ttl_ms,
                           .incarnation = incarnation_of, .incarnation_arg = cl};
    qk_dir_redis *dr;
    if ((rc = qk_dir_redis_new(&dc, &dr)) != QUARK_OK)
        return rc;
    cl->dir = &qk_directory_redis;
    cl->dstate = dr;
    cl->located = true;
    cl->lapsed = true;
    atomic_store(&s->lease_until, 0); /* no turn of a registered activation before a lease */
    for (unsigned i = 0; i < s->nworkers; i++)
        if (!qk_dir_cache_init(&cl->pw[i].cache, QK_DIR_CACHE_SLOTS) ||
            !(cl->pw[i].waits = calloc(QK_DIR_WAIT_BUCKETS, sizeof *cl->pw[i].waits)))
            return qk_error(QUARK_ENOMEM, "out of memory creating the directory cache");
    return QUARK_OK;
}

static void advertise_addr(quark_silo *s, int port, char *out, size_t cap)
{
    if (s->opts.advertise && *s->opts.advertise) {
        snprintf(out, cap, "%s", s->opts.advertise);
        return;
    }
    char host[QK_HOST_MAX] = "";
    qk_addr la;
    if (qk_addr_parse(s->opts.listen, strlen(s->opts.listen), &la) == 0)
        snprintf(host, sizeof host, "%s", la.host); /* bound already: it parses */
    if (!host[0] || !strcmp(host, "0.0.0.0") || !strcmp(host, "::"))
        if (gethostname(host, sizeof host) != 0 || !host[0])
            snprintf(host, sizeof host, "127.0.0.1");
    snprintf(out, cap, "%s:%d", host, port);
}

quark_err qk_cluster_new(quark_silo *s, qk_server *server, qk_cluster **out)
{
    qk_cluster *cl = calloc(1, sizeof *cl);
    if (!cl || !(cl->pw = calloc(s->nworkers, sizeof *cl->pw))) {
        free(cl);
        return qk_error(QUARK_ENOMEM, "out of memory creating the cluster state");
    }
    uv_mutex_init(&cl->mu);
    cl->silo = s;
    cl->server = server;
    cl->started_ms = qk_now_ms_coarse();
    cl->dir = &qk_directory_hash; /* until new_directory */
    advertise_addr(s, qk_server_port(server), cl->self, sizeof cl->self);
    uint32_t hb = s->opts.heartbeat_ms ? s->opts.heartbeat_ms : 500;
    uint32_t ft = s->opts.failure_timeout_ms ? s->opts.failure_timeout_ms : 3000;
    /* The peer link: TCP, at most one resend (a silo that did not run a
     * call), backoffs shorter than a heartbeat. */
    qk_remote_cfg pcfg = {.cluster_id = s->cluster_id, .client_name = cl->self,
                          .transport = QUARK_TRANSPORT_TCP,
                          .retry = {.max_attempts = 2, .initial_backoff_ms = 20,
                                    .max_backoff_ms = hb},
                          /* a frozen peer's links go when it would be declared dead */
                          .keepalive_ms = hb,
                          .keepalive_timeout_ms = ft,
                          .cluster_key = s->cluster_key};
    qk_remote_hooks hooks = {.arg = cl, .tick = on_tick, .stop = on_stop};
    quark_err rc = qk_remote_new_peer(&pcfg, &hooks, &cl->peer);
    if (rc == QUARK_OK)
        rc = new_membership(cl, s, hb, ft);
    if (rc == QUARK_OK)
        rc = new_directory(cl, s);
    for (unsigned i = 0; rc == QUARK_OK && !cl->located && i < s->nworkers; i++)
        if (!(cl->pw[i].dir = cl->dir->attach(cl->dstate, &s->workers[i])))
            rc = qk_error(QUARK_ENOMEM, "out of memory creating the actor directory");
    if (rc != QUARK_OK) {
        qk_cluster_free(cl);
        return rc;
    }
    *out = cl;
    return QUARK_OK;
}

quark_err qk_cluster_start(qk_cluster *cl)
{
    return qk_remote_connect(cl->peer);
}

bool qk_cluster_leaves_last(const qk_cluster *cl)
{
    return cl->located;
}

void qk_cluster_leave(qk_cluster *cl)
{
    atomic_store(&cl->leaving, 1);
    if (!atomic_load(&cl->stopped))
        cl->mp->leave(cl->mstate);
}

static void worker_dir_stop_task(qk_worker *w, void *arg)
{
    qk_cluster *cl = arg;
    qk_cl_worker *pw = &cl->pw[w->index];
    pw->dir_closed = true;
    if (pw->renew) {
        uv_close((uv_handle_t *)pw->renew, free_timer);
        pw->renew = NULL;
    }
    if (pw->dir) {
        cl->dir->detach(cl->dstate, pw->dir);
        pw->dir = NULL;
    }
}

void qk_cluster_stop(qk_cluster *cl)
{
    if (atomic_exchange(&cl->stopped, 1))
        return;
    uint64_t until = qk_now_ms_coarse() + 2000;
    while (atomic_load_explicit(&cl->forwards, memory_order_relaxed) && qk_now_ms_coarse() < until)
        usleep(1000);
    qk_remote_disconnect(cl->peer);
    /* The directory's connections live on the workers' loops: each closes
     * its own (what it still waits for fails, and is answered, there). */
    quark_silo *s = cl->silo;
    for (unsigned i = 0; cl->located && s->workers && i < s->nworkers; i++)
        qk_run_on(&s->workers[i], worker_dir_stop_task, cl);
}

void qk_cluster_free(qk_cluster *cl)
{
    if (!cl)
        return;
    qk_cluster_stop(cl);
    if (cl->mstate)
        cl->mp->destroy(cl->mstate);
    qk_remote_free(cl->peer);
    qk_view_unref(cl->view);
    for (unsigned i = 0; i < cl->silo->nworkers; i++) {
        qk_view_unref(cl->pw[i].view);
        if (cl->pw[i].dir)
            cl->dir->detach(cl->dstate, cl->pw[i].dir);
        qk_dir_cache_free(&cl->pw[i].cache);
        free(cl->pw[i].waits);
    }
    if (cl->dir == &qk_directory_redis)
        qk_dir_redis_free(cl->dstate);
    uv_mutex_destroy(&cl->mu);
    free(cl->pw);
    free(cl);
}

/* ---- forwarding ---- */

/* A call this worker forwarded: the CALL it answers once the owner did. */
typedef struct qk_fwd {
    qk_op op;                 /* home: the forwarding worker */
    qk_msg *m;
    qk_cluster *cl;
    qk_op_room room;
    char to[];                /* the silo it went to */
} qk_fwd;

/* The owner's answer (or the link's failure), on the forwarding worker: it
 * becomes the CALL's answer as it came, still encoded. */
static void fwd_done(qk_op *op)
{
    qk_fwd *f = QK_CONTAINER_OF(op, qk_fwd, op);
    qk_worker *w = qk_tls_worker;
    qk_cluster *cl = f->cl;
    const qk_outcome *o = op->out;
    if (cl->located && o->err == QUARK_EUNAVAILABLE && !o->started && f->m->hops < QK_HOPS_MAX &&
        !atomic_load(&cl->stopped)) {
        /* The silo the cache named did not run it (it let go of the actor,
         * or is stopping): ask the directory again. */
        qk_msg *m = f->m;
        qk_dir_cache_drop(&cl->pw[w->index].cache, m->hash, m->type, m->id, m->id_len);
        m->hops++;
        qk_op_release(op);
        atomic_fetch_sub_explicit(&cl->forwards, 1, memory_order_relaxed);
        free(f);
        qk_deliver(w, m);
        return;
    }
    qk_outcome told = *o;
    if (cl->located && f->m->hops == 0 && (o->err == QUARK_OK || o->by == QK_BY_ACTOR))
        told.where = f->to; /* it ran there: the client may go there next (ditto a cache) */
    qk_answer(w, f->m, &told);
    qk_arena_reset(&w->arena);
    qk_msg_free(f->m);
    qk_op_release(op);
    atomic_fetch_sub_explicit(&f->cl->forwards, 1, memory_order_relaxed);
    free(f);
}

/* Send CALL m on worker w to its owner, member `owner` of the worker's view;
 * the answer comes back to w (fwd_done). */
static void forward(qk_cluster *cl, qk_worker *w, qk_msg *m, int owner)
{
    const qk_view *view = cl->pw[w->index].view;
    char msg[400];
    if (m->hops >= QK_HOPS_MAX || atomic_load(&cl->stopped)) {
        snprintf(msg, sizeof msg, "%s '%s' belongs to %s, but %s; the call did not run (retry)",
                 m->type->name, m->id, view->members[owner].addr,
                 m->hops >= QK_HOPS_MAX ? "the call was already forwarded too many times "
                                          "(the silos' views disagree for a moment)"
                                        : "this silo is stopping");
        qk_answer_error(w, m, QUARK_EUNAVAILABLE, msg);
        qk_msg_free(m);
        return;
    }
    uint64_t now = qk_worker_now_ms(w);
    uint64_t left = m->dl.at_ms ? (m->dl.at_ms > now ? m->dl.at_ms - now : 0)
                                : w->silo->opts.default_deadline_ms;
    if (left == 0) {
        qk_answer_error(w, m, QUARK_ETIMEDOUT,
                        "deadline exceeded before the call reached its silo");
        qk_msg_free(m);
        return;
    }
    const char *to = view->members[owner].addr;
    size_t to_len = strlen(to);
    qk_fwd *f = malloc(sizeof *f + to_len + 1);
    if (!f) {
        qk_answer_error(w, m, QUARK_ENOMEM, "out of memory forwarding a call; it did not run");
        qk_msg_free(m);
        return;
    }
    qk_op_init(&f->op, fwd_done, w, 0, &f->room);
    f->m = m;
    f->cl = cl;
    memcpy(f->to, to, to_len + 1);
    atomic_fetch_add_explicit(&cl->forwards, 1, memory_order_relaxed);
    if (qk_remote_forward(cl->peer, &f->op, m, view->members[owner].addr,
                          (uint32_t)(left > UINT32_MAX ? UINT32_MAX : left)) != QUARK_OK) {
        atomic_fetch_sub_explicit(&cl->forwards, 1, memory_order_relaxed);
        free(f);
        qk_answer_error(w, m, QUARK_ENOMEM, quark_last_error());
        qk_msg_free(m);
        return;
    }
    atomic_fetch_add_explicit(&cl->pw[w->index].forwarded, 1, memory_order_relaxed);
}

/* ---- the route port (runtime/ports.h) ---- */

/* Where the actor of CALL m lives, by a directory that follows placement:
 * its member index in the worker's view v (-1: nowhere, an empty view). */
static inline int owner_of(const qk_view *v, const qk_msg *m)
{
    return qk_view_owner(v, m->hash);
}

/* ---- routing by a directory in a server ----
 * A call for an actor with no activation on this silo waits in a qk_dir_wait
 * while the worker asks the directory; calls for the same actor that come
 * meanwhile join it. Then they run here (the directory registered this
 * silo's activation), or go to the silo that has it. */

typedef struct qk_dir_wait {
    qk_op op;                     /* home: the worker; the answer is only err/errmsg */
    qk_op_room room;
    struct qk_dir_wait *next;     /* in its bucket */
    qk_cluster *cl;
    bool claim;                   /* registering (else looking up) */
    qk_dir_entry e;               /* the directory's answer */
    qk_msg *head, *tail;          /* the calls waiting (head's actor is the key) */
} qk_dir_wait;

static inline size_t wait_bucket(uint64_t hash)
{
    return (size_t)(hash >> 17) & (QK_DIR_WAIT_BUCKETS - 1);
}

static qk_dir_wait *wait_find(qk_cl_worker *pw, const qk_msg *m)
{
    for (qk_dir_wait *wt = pw->waits[wait_bucket(m->hash)]; wt; wt = wt->next) {
        const qk_msg *k = wt->head;
        if (k->hash == m->hash && k->type == m->type && k->id_len == m->id_len &&
            memcmp(k->id, m->id, m->id_len) == 0)
            return wt;
    }
    return NULL;
}

static void wait_unlink(qk_cl_worker *pw, qk_dir_wait *wt)
{
    qk_dir_wait **pp = &pw->waits[wait_bucket(wt->head->hash)];
    while (*pp != wt)
        pp = &(*pp)->next;
    *pp = wt->next;
}

/* Answer every call of wt with err, text. */
static void wait_fail(qk_worker *w, qk_dir_wait *wt, quark_err err, const char *text)
{
    qk_msg *m = wt->head;
    wt->head = wt->tail = NULL;
    while (m) {
        qk_msg *n = m->next;
        qk_answer_error(w, m, err, text);
        qk_msg_free(m);
        m = n;
    }
}

static void wait_done(qk_op *op);

/* Ask the directory for wt's actor: register this silo's activation
 * (claim) or look it up. false: it could not ask (why in quark_last_error). */
static bool wait_ask(qk_cluster *cl, qk_worker *w, qk_dir_wait *wt, bool claim)
{
    qk_cl_worker *pw = &cl->pw[w->index];
    const qk_msg *m = wt->head;
    if (!pw->dir) {
        qk_error(QUARK_EUNAVAILABLE, pw->dir_closed ? "the silo is stopping"
                                                    : "out of memory connecting to the directory");
        return false;
    }
    qk_actor_key key = {.type = m->type->name, .type_len = m->type->name_len, .id = m->id,
                        .id_len = m->id_len, .hash = m->hash};
    wt->claim = claim;
    memset(&wt->e, 0, sizeof wt->e);
    qk_op_init(&wt->op, wait_done, w, 0, &wt->room);
    quark_err rc = claim ? cl->dir->register_activation(pw->dir, &key, &wt->e, &wt->op)
                         : cl->dir->lookup(pw->dir, &key, &wt->e, &wt->op);
    if (rc != QUARK_PENDING)
        return false; /* a server directory always answers later, or fails now */
    wt->next = pw->waits[wait_bucket(m->hash)];
    pw->waits[wait_bucket(m->hash)] = wt;
    return true;
}

static void refuse(qk_cluster *cl, qk_worker *w, qk_msg *m, const char *why)
{
    char msg[1200];
    snprintf(msg, sizeof msg, "%s '%.200s' did not run on %s: %.500s (retry)", m->type->name,
             m->id, cl->self, why);
    qk_answer_error(w, m, QUARK_EUNAVAILABLE, msg);
    qk_msg_free(m);
}

static const char lapsed_why[] =
    "this silo's membership lease lapsed (Redis did not acknowledge its heartbeats within the "
    "failure timeout), so it may have been declared dead and serves no actor until renewed";

/* The directory answered wt, on its worker. */
static void wait_done(qk_op *op)
{
    qk_dir_wait *wt = QK_CONTAINER_OF(op, qk_dir_wait, op);
    qk_worker *w = qk_tls_worker;
    qk_cluster *cl = wt->cl;
    qk_cl_worker *pw = &cl->pw[w->index];
    const qk_view *v = pw->view;
    wait_unlink(pw, wt);
    quark_err err = op->out->err;
    char text[600];
    if (err != QUARK_OK)
        snprintf(text, sizeof text, "the %s directory could not say where %s '%s' lives: %s "
                 "(retry)", cl->dir->name, wt->head->type->name, wt->head->id,
                 qk_outcome_text(op->out));
    qk_op_release(op);
    if (err != QUARK_OK) {
        wait_fail(w, wt, QUARK_EUNAVAILABLE, text);
        free(wt);
        return;
    }
    const qk_dir_entry *e = &wt->e;
    const qk_msg *k = wt->head;
    bool mine = e->silo && !strcmp(e->silo, cl->self) &&
                e->incarnation == cl->mp->incarnation(cl->mstate);
    /* The entry's silo in the view calls are routed by now (the view may
     * have changed since the directory read the answer). */
    int member = -1;
    if (e->silo && v) {
        int i = qk_view_find(v, e->silo);
        member = i >= 0 && v->members[i].incarnation == e->incarnation ? i : -1;
    }
    if (mine && !wt->claim && wait_ask(cl, w, wt, true))
        return; /* its own entry from before (the activation went): claim it again */
    int at = -1;
    char why[QK_ADDR_MAX + 200] = "";
    if (wt->claim && mine) {
        if (!lease_holds(cl, w)) {
            /* registered, but this silo may not serve it now: the entry
             * stays (this silo's), the calls go back to their callers */
            snprintf(why, sizeof why, "%s", lapsed_why);
        } else {
            qk_msg *m = wt->head, *rest = m->next;
            uint64_t tag = e->activation ? e->activation : 1;
            free(wt);
            qk_deliver_placed(w, m, tag); /* it activates, marked with its entry */
            while (rest) {
                /* The rest as any call: they join that activation, or, if
                 * its activation failed (its entry goes), register anew. */
                qk_msg *n = rest->next;
                qk_deliver(w, rest);
                rest = n;
            }
            return;
        }
    } else if (e->silo && !mine && member >= 0 && member != v->self) { /* on another silo */
        at = member;
        qk_dir_cache_put(&pw->cache, k->hash, k->type, k->id, k->id_len, pw->gen, at);
    } else if (wt->claim) { /* registered on a silo this view does not hold */
        snprintf(why, sizeof why, "the directory places it on %s (incarnation %llu), which "
                 "this silo's view does not hold yet", e->silo ? e->silo : "?",
                 (unsigned long long)e->incarnation);
    } else {
        /* Looked up: no entry, one of this silo from before, or one of a
         * silo this view does not hold (dead, or not seen yet). The
         * placement owner registers (taking a dead silo's entry over). */
        int owner = v ? qk_view_owner(v, k->hash) : -1;
        if (owner >= 0 && owner == v->self) {
            if (wait_ask(cl, w, wt, true))
                return;
            snprintf(why, sizeof why, "%s", quark_last_error());
        } else if (owner >= 0) {
            at = owner;
        } else {
            snprintf(why, sizeof why, "the cluster has no members");
        }
    }
    qk_msg *m = wt->head;
    free(wt);
    while (m) {
        qk_msg *n = m->next;
        if (at >= 0)
            forward(cl, w, m, at);
        else
            refuse(cl, w, m, why);
        m = n;
    }
}

/* A call for an actor with no activation on this silo, with a directory in
 * a server: to the silo the cache names, or wait for the directory. */
static __attribute__((noinline)) int route_located(qk_cluster *cl, qk_worker *w, qk_msg *m)
{
    qk_cl_worker *pw = &cl->pw[w->index];
    const qk_view *v = pw->view;
    qk_dir_wait *wt = wait_find(pw, m);
    if (wt) {
        m->next = NULL;
        wt->tail->next = m;
        wt->tail = m;
        return QK_ROUTE_TAKEN;
    }
    int at = qk_dir_cache_find(&pw->cache, m->hash, m->type, m->id, m->id_len, pw->gen);
    if (at >= 0 && at != v->self) {
        forward(cl, w, m, at);
        return QK_ROUTE_TAKEN;
    }
    /* The placement owner, or a silo a call was forwarded to, registers;
     * any other looks up where it lives. */
    int owner = qk_view_owner(v, m->hash);
    bool claim = owner == v->self || m->hops > 0 || owner < 0;
    if (claim && !lease_holds(cl, w)) {
        refuse(cl, w, m, lapsed_why);
        return QK_ROUTE_TAKEN;
    }
    wt = calloc(1, sizeof *wt);
    if (!wt) {
        qk_answer_error(w, m, QUARK_ENOMEM, "out of memory asking the actor directory");
        qk_msg_free(m);
        return QK_ROUTE_TAKEN;
    }
    wt->cl = cl;
    m->next = NULL;
    wt->head = wt->tail = m;
    if (!wait_ask(cl, w, wt, claim)) {
        char why[400];
        snprintf(why, sizeof why, "%s", quark_last_error());
        free(wt);
        refuse(cl, w, m, why);
    }
    return QK_ROUTE_TAKEN;
}

static int route_place(void *self, qk_worker *w, qk_msg *m, bool here)
{
    qk_cluster *cl = self;
    const qk_view *v = cl->pw[w->index].view;
    if (QK_LIKELY(!cl->located)) {
        if (!v)
            return QK_ROUTE_HERE; /* no view yet: a cluster of one */
        int owner = owner_of(v, m);
        if (QK_LIKELY(owner == v->self || owner == -1))
            return QK_ROUTE_HERE;
        forward(cl, w, m, owner);
        return QK_ROUTE_TAKEN;
    }
    if (here && QK_LIKELY(lease_holds(cl, w)))
        return QK_ROUTE_HERE;
    if (here || !v) {
        refuse(cl, w, m, here ? lapsed_why : "this silo has not joined the cluster yet");
        return QK_ROUTE_TAKEN;
    }
    return route_located(cl, w, m);
}

static bool route_keeps(void *self, qk_worker *w, uint64_t hash)
{
    qk_cluster *cl = self;
    qk_cl_worker *pw = &cl->pw[w->index];
    if (cl->located) /* activations stay where they are, while the lease holds */
        return !pw->drop_all && lease_holds(cl, w);
    const qk_view *v = pw->view;
    if (!v)
        return true;
    int owner = qk_view_owner(v, hash);
    return owner < 0 || owner == v->self;
}

/* An activation the directory registered is gone: its entry goes (only if
 * it is still this one's). Nobody waits for the answer. */
typedef struct qk_unreg {
    qk_op op;
    qk_op_room room;
} qk_unreg;

static void unreg_done(qk_op *op)
{
    qk_op_release(op);
    free(QK_CONTAINER_OF(op, qk_unreg, op));
}

static void route_released(void *self, qk_worker *w, const quark_actor *a)
{
    qk_cluster *cl = self;
    qk_cl_worker *pw = &cl->pw[w->index];
    if (!cl->located || !pw->dir)
        return;
    qk_unreg *u = malloc(sizeof *u);
    if (!u)
        return; /* the entry stays: this silo's, taken over once it is gone */
    qk_op_init(&u->op, unreg_done, w, 0, &u->room);
    qk_actor_key key = {.type = a->type->name, .type_len = a->type->name_len, .id = a->id,
                        .id_len = a->id_len, .hash = a->hash};
    qk_dir_entry mine = {.member = -1, .silo = cl->self,
                         .incarnation = cl->mp->incarnation(cl->mstate),
                         .activation = a->route_tag};
    if (cl->dir->unregister_activation(pw->dir, &key, &mine, &u->op) != QUARK_PENDING)
        free(u);
}

const qk_route_ops qk_cluster_route = {.place = route_place, .keeps = route_keeps,
                                       .released = route_released};

/* ---- views for clients, status ---- */

static uint8_t *ctl_view(void *arg, qk_worker *w, size_t *len)
{
    qk_cluster *cl = arg;
    const qk_view *v = cl->pw[w->index].view;
    if (!v)
        return NULL;
    return qk_view_encode(v, w->silo->cluster_id, cl->self, cl->mp->incarnation(cl->mstate),
                          len);
}

static quark_silo_status *status_of(qk_cluster *cl, const qk_view *v, uint64_t inc)
{
    quark_silo *s = cl->silo;
    quark_silo_status *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->address = strdup(cl->self);
    st->incarnation = inc;
    st->view_version = v ? v->version : 0;
    st->n_members = v ? v->n : 0;
    st->members = st->n_members ? calloc(st->n_members, sizeof *st->members) : NULL;
    if (!st->address || (st->n_members && !st->members)) {
        quark_status_free(st);
        return NULL;
    }
    for (size_t i = 0; i < st->n_members; i++) {
        st->members[i].address = strdup(v->members[i].addr);
        st->members[i].incarnation = v->members[i].incarnation;
        if (!st->members[i].address) {
            quark_status_free(st);
            return NULL;
        }
    }
    for (unsigned i = 0; s->workers && i < s->nworkers; i++) {
        st->activations += atomic_load_explicit(&s->workers[i].live, memory_order_relaxed);
        st->forwarded += atomic_load_explicit(&cl->pw[i].forwarded, memory_order_relaxed);
        st->handoffs += atomic_load_explicit(&s->workers[i].handoffs, memory_order_relaxed);
    }
    st->uptime_ms = qk_now_ms_coarse() - cl->started_ms;
    return st;
}

quark_err qk_cluster_status(qk_cluster *cl, quark_silo_status **out)
{
    if (atomic_load(&cl->silo->state) != 1)
        return qk_error(QUARK_ECLOSED, "the silo is not running");
    uv_mutex_lock(&cl->mu);
    qk_view *v = cl->view;
    if (v)
        qk_view_ref(v);
    uv_mutex_unlock(&cl->mu);
    *out = status_of(cl, v, cl->mp->incarnation(cl->mstate));
    qk_view_unref(v);
    return *out ? QUARK_OK : qk_error(QUARK_ENOMEM, "out of memory building the status");
}

static uint8_t *ctl_status(void *arg, size_t *len)
{
    qk_cluster *cl = arg;
    quark_silo *s = cl->silo;
    quark_silo_status *st = NULL;
    if (qk_cluster_status(cl, &st) != QUARK_OK)
        return NULL;
    Quark__ClusterView cv = QUARK__CLUSTER_VIEW__INIT;
    cv.cluster_id = s->cluster_id;
    cv.from = st->address;
    cv.from_incarnation = st->incarnation;
    cv.version = st->view_version;
    cv.vnodes = s->opts.vnodes ? s->opts.vnodes : QK_VNODES_DEFAULT;
    Quark__ClusterMember *mem = calloc(st->n_members ? st->n_members : 1, sizeof *mem);
    Quark__ClusterMember **mp = calloc(st->n_members ? st->n_members : 1, sizeof *mp);
    uint8_t *buf = NULL;
    if (mem && mp) {
        for (size_t i = 0; i < st->n_members; i++) {
            quark__cluster_member__init(&mem[i]);
            mem[i].address = st->members[i].address;
            mem[i].incarnation = st->members[i].incarnation;
            mp[i] = &mem[i];
        }
        cv.n_members = st->n_members;
        cv.members = mp;
        Quark__SiloStatus ss = QUARK__SILO_STATUS__INIT;
        ss.view = &cv;
        ss.activations = st->activations;
        ss.forwarded = st->forwarded;
        ss.handoffs = st->handoffs;
        ss.uptime_ms = st->uptime_ms;
        *len = quark__silo_status__get_packed_size(&ss);
        buf = malloc(*len ? *len : 1);
        if (buf)
            quark__silo_status__pack(&ss, buf);
    }
    free(mem);
    free(mp);
    quark_status_free(st);
    return buf;
}

qk_server_control qk_cluster_control(qk_cluster *cl)
{
    qk_server_control c = {.arg = cl, .gossip = ctl_gossip, .view = ctl_view,
                           .status = ctl_status, .self_name = ctl_self_name};
    return c;
}
