/*
 * cluster.c - a silo's membership in a cluster: views, routing, forwarding.
 *
 * Every listening silo is a member of a cluster (alone, without seeds). The
 * pieces:
 *   - a membership provider (runtime/providers.h; gossip over static seeds,
 *     gossip.c) learns the live members and hands over a view whenever they
 *     change;
 *   - a directory provider (the hash directory, directory_hash.c) says
 *     where an actor lives; each worker asks its own per-worker state;
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
#include "cluster/gossip.h"
#include "cluster/membership_redis.h"
#include "transport/remote.h"
#include "transport/view_codec.h"

struct qk_cluster {
    quark_silo *silo;
    char self[QK_ADDR_MAX];
    /* The providers (runtime/providers.h). */
    const qk_membership_ops *mp;
    void *mstate;
    bool mstarted;                /* mp->start ran (on the cluster's thread) */
    const qk_directory_ops *dir;
    void *dstate;
    uv_mutex_t mu;
    qk_view *view;                /* last published (under mu) */
    qk_server *server;            /* the silo's (views go to its watchers) */
    qk_remote *peer;
    uint64_t started_ms;
    _Atomic int stopped;
    _Atomic size_t forwards;      /* forwarded calls whose answer was not handled yet */
    qk_cl_worker *pw;             /* [silo->nworkers] */
};

/* ---- publishing views ---- */

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
    qk_view_ref(v);
    cl->dir->set_view(pw->dir, v);
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
    cl->dir = &qk_directory_hash;
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
    for (unsigned i = 0; rc == QUARK_OK && i < s->nworkers; i++)
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

void qk_cluster_leave(qk_cluster *cl)
{
    if (!atomic_load(&cl->stopped))
        cl->mp->leave(cl->mstate);
}

void qk_cluster_stop(qk_cluster *cl)
{
    if (atomic_exchange(&cl->stopped, 1))
        return;
    uint64_t until = qk_now_ms_coarse() + 2000;
    while (atomic_load_explicit(&cl->forwards, memory_order_relaxed) && qk_now_ms_coarse() < until)
        usleep(1000);
    qk_remote_disconnect(cl->peer);
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
    }
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
} qk_fwd;

/* The owner's answer (or the link's failure), on the forwarding worker: it
 * becomes the CALL's answer as it came, still encoded. */
static void fwd_done(qk_op *op)
{
    qk_fwd *f = QK_CONTAINER_OF(op, qk_fwd, op);
    qk_worker *w = qk_tls_worker;
    qk_answer(w, f->m, op->out);
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
    qk_fwd *f = malloc(sizeof *f);
    if (!f) {
        qk_answer_error(w, m, QUARK_ENOMEM, "out of memory forwarding a call; it did not run");
        qk_msg_free(m);
        return;
    }
    qk_op_init(&f->op, fwd_done, w, 0, &f->room);
    f->m = m;
    f->cl = cl;
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

/* Where the actor of CALL m lives, by the directory: its member index in
 * the worker's view v (-1: nowhere, an empty view; -2: the directory could
 * not say). A directory that follows placement is answered by v itself. */
static inline int owner_of(qk_cluster *cl, qk_worker *w, const qk_view *v, const qk_msg *m)
{
    if (cl->dir->follows_placement)
        return qk_view_owner(v, m->hash);
    qk_actor_key key = {.type = m->type->name, .type_len = m->type->name_len, .id = m->id,
                        .id_len = m->id_len, .hash = m->hash};
    qk_dir_entry e;
    quark_err rc = cl->dir->lookup(cl->pw[w->index].dir, &key, &e, NULL);
    return rc == QUARK_OK ? e.member : -2;
}

/* The call is not for this silo, or the directory could not say: answer
 * it, or forward it (kept out of route_place, so that the common case, a
 * call that runs here, costs a few instructions). */
static __attribute__((noinline)) int route_elsewhere(qk_cluster *cl, qk_worker *w, qk_msg *m,
                                                     int owner)
{
    if (owner == -2) {
        char msg[300];
        snprintf(msg, sizeof msg, "the %s directory could not say where %s '%s' lives: %s",
                 cl->dir->name, m->type->name, m->id, quark_last_error());
        qk_answer_error(w, m, QUARK_EUNAVAILABLE, msg);
        qk_msg_free(m);
        return QK_ROUTE_TAKEN;
    }
    forward(cl, w, m, owner);
    return QK_ROUTE_TAKEN;
}

static int route_place(void *self, qk_worker *w, qk_msg *m)
{
    qk_cluster *cl = self;
    const qk_view *v = cl->pw[w->index].view;
    if (!v)
        return QK_ROUTE_HERE; /* no view yet: a cluster of one */
    int owner = owner_of(cl, w, v, m);
    if (QK_LIKELY(owner == v->self || owner == -1))
        return QK_ROUTE_HERE;
    return route_elsewhere(cl, w, m, owner);
}

static bool route_keeps(void *self, qk_worker *w, uint64_t hash)
{
    qk_cluster *cl = self;
    const qk_view *v = cl->pw[w->index].view;
    if (!v)
        return true;
    int owner;
    if (cl->dir->follows_placement) {
        owner = qk_view_owner(v, hash);
    } else {
        qk_actor_key key = {.hash = hash};
        qk_dir_entry e;
        if (cl->dir->lookup(cl->pw[w->index].dir, &key, &e, NULL) != QUARK_OK)
            return true; /* nothing says otherwise: it stays */
        owner = e.member;
    }
    return owner < 0 || owner == v->self;
}

const qk_route_ops qk_cluster_route = {.place = route_place, .keeps = route_keeps};

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
