/*
 * cluster.c - a silo's membership in a cluster: gossip, views, forwarding.
 *
 * Every listening silo is a member of a cluster (alone, without seeds). The
 * pieces:
 *   - a membership provider (membership.h; static-seed gossip for now) owns
 *     the member table, behind one mutex: it is touched once per heartbeat
 *     per peer, never on the call path;
 *   - the peer link (transport/remote.c in peer mode): its I/O thread runs
 *     the heartbeat (gossip to every target, failure detection) and carries
 *     forwarded calls;
 *   - views: when the live set changes, the new view (cluster/view.h) is
 *     published: to the peer link, to every worker by a task (each worker
 *     keeps its own reference, so routing a call reads no shared state), to
 *     the watching clients of each worker, and to the application's
 *     on_view callback;
 *   - forwarding: a worker about to deliver a call whose owner under its
 *     view is another silo hands it to the peer link instead; the answer
 *     comes back to that worker (QK_MSG_FWDANS) and goes to the caller as
 *     any answer does.
 *
 * Publishing happens on the peer link's thread only (changes found by the
 * server's workers raise a flag the next tick looks at), so views are
 * published in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "quark/actor_service.pb-c.h"
#include "core/addr.h"
#include "cluster/cluster.h"
#include "cluster/membership.h"
#include "transport/remote.h"

struct qk_cluster {
    quark_silo *silo;
    char self[QK_ADDR_MAX];
    const qk_membership_ops *mops;
    void *mstate;                 /* under mu */
    uv_mutex_t mu;
    qk_view *view;                /* last published (under mu) */
    uint64_t incarnation;         /* under mu */
    _Atomic int dirty;            /* the server's gossip changed the live set */
    qk_server *server;            /* the silo's (views go to its watchers) */
    qk_remote *peer;
    uint32_t heartbeat_ms, failure_timeout_ms;
    uint64_t next_gossip_ms;
    uint64_t started_ms;
    char **seeds;
    size_t nseeds;
    /* graceful leave */
    _Atomic int leave_req;        /* 1 asked, 2 LEFT gossip sent */
    _Atomic unsigned leave_sent, leave_acks;
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
    qk_rebalance(w);
    if (cl->server)
        qk_server_push_view(cl->server, w);
}

static quark_silo_status *status_of(qk_cluster *cl, const qk_view *v, uint64_t inc);

static void publish(qk_cluster *cl)
{
    uv_mutex_lock(&cl->mu);
    qk_view *v = cl->mops->view(cl->mstate);
    if (!v) {
        uv_mutex_unlock(&cl->mu);
        atomic_store(&cl->dirty, 1); /* try again next tick */
        return;
    }
    bool same = cl->view && qk_view_same_members(cl->view, v);
    if (same) {
        uv_mutex_unlock(&cl->mu);
        qk_view_unref(v);
        return;
    }
    qk_view *old = cl->view;
    cl->view = v;
    cl->incarnation = cl->mops->incarnation(cl->mstate);
    uint64_t inc = cl->incarnation;
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
        quark_silo_status *st = status_of(cl, v, inc);
        if (st) {
            s->opts.on_view(st, s->opts.on_view_arg);
            quark_status_free(st);
        }
    }
}

/* ---- the heartbeat (peer link thread) ---- */

static void gossip_round(qk_cluster *cl, uint64_t now)
{
    uv_mutex_lock(&cl->mu);
    int changed = cl->mops->tick(cl->mstate, now);
    size_t len = 0;
    uint8_t *buf = cl->mops->encode(cl->mstate, &len);
    const char *tp[256];
    size_t n = cl->mops->targets(cl->mstate, tp, 256);
    char (*targets)[QK_ADDR_MAX] = n ? malloc(n * sizeof *targets) : NULL;
    for (size_t i = 0; targets && i < n; i++)
        snprintf(targets[i], QK_ADDR_MAX, "%s", tp[i]);
    uv_mutex_unlock(&cl->mu);
    if (changed)
        publish(cl);
    if (buf && targets) {
        for (size_t i = 0; i < n; i++)
            qk_remote_gossip(cl->peer, targets[i], buf, len, cl->heartbeat_ms * 2);
        if (atomic_load(&cl->leave_req) == 1) {
            atomic_store(&cl->leave_sent, (unsigned)n);
            atomic_store(&cl->leave_req, 2);
        }
    } else if (atomic_load(&cl->leave_req) == 1 && buf && n == 0) {
        atomic_store(&cl->leave_req, 2); /* nobody to tell */
    }
    free(targets);
    free(buf);
}

static void on_tick(void *arg, uint64_t now)
{
    qk_cluster *cl = arg;
    if (atomic_exchange(&cl->dirty, 0))
        publish(cl);
    if (atomic_load(&cl->leave_req) == 1) {
        publish(cl); /* without this silo: its own watchers move on at once */
        cl->next_gossip_ms = 0;
    }
    if (now < cl->next_gossip_ms)
        return;
    cl->next_gossip_ms = now + cl->heartbeat_ms;
    gossip_round(cl, now);
}

static void on_gossip_ack(void *arg, const uint8_t *p, size_t n)
{
    qk_cluster *cl = arg;
    const char *why = NULL;
    uv_mutex_lock(&cl->mu);
    int rc = cl->mops->receive(cl->mstate, p, n, qk_now_ms_coarse(), &why);
    uv_mutex_unlock(&cl->mu);
    if (atomic_load(&cl->leave_req) == 2)
        atomic_fetch_add(&cl->leave_acks, 1);
    if (rc == 1)
        publish(cl);
}

/* The server's control table: a peer's gossip (any worker). */
static uint8_t *ctl_gossip(void *arg, const uint8_t *p, size_t n, size_t *len, const char **why)
{
    qk_cluster *cl = arg;
    uv_mutex_lock(&cl->mu);
    int rc = cl->mops->receive(cl->mstate, p, n, qk_now_ms_coarse(), why);
    uint8_t *out = rc < 0 ? NULL : cl->mops->encode(cl->mstate, len);
    uv_mutex_unlock(&cl->mu);
    if (rc == 1)
        atomic_store(&cl->dirty, 1);
    if (rc >= 0 && !out)
        *why = "out of memory answering gossip";
    return out;
}

/* ---- lifecycle ---- */

typedef struct seed_list {
    char **v;
    size_t n, cap;
    const char *bad;      /* the first seed that is not HOST:PORT */
    size_t bad_len;
} seed_list;

static int add_seed(void *arg, const char *item, size_t len)
{
    seed_list *l = arg;
    qk_addr a;
    if (len >= QK_ADDR_MAX || qk_addr_parse(item, len, &a) != 0) {
        l->bad = item;
        l->bad_len = len;
        return -1;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strndup(item, len)))
        return -1;
    l->n++;
    return 0;
}

static const char *ctl_self_name(void *arg)
{
    qk_cluster *cl = arg;
    return cl->self;
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
    cl->silo = s;
    cl->server = server;
    advertise_addr(s, qk_server_port(server), cl->self, sizeof cl->self);
    cl->heartbeat_ms = s->opts.heartbeat_ms ? s->opts.heartbeat_ms : 500;
    cl->failure_timeout_ms = s->opts.failure_timeout_ms ? s->opts.failure_timeout_ms : 3000;
    if (cl->failure_timeout_ms < 2 * cl->heartbeat_ms) {
        uint32_t hb = cl->heartbeat_ms, ft = cl->failure_timeout_ms;
        free(cl->pw);
        free(cl);
        return qk_error(QUARK_EINVAL, "failure_timeout_ms (%u) must be at least two heartbeats "
                        "(heartbeat_ms %u): a single late heartbeat would kill a live silo",
                        ft, hb);
    }
    seed_list sl = {0};
    if (s->opts.seeds && qk_addr_list_each(s->opts.seeds, add_seed, &sl) != 0) {
        quark_err rc = sl.bad ? qk_error(QUARK_EINVAL, "seed '%.*s' is not HOST:PORT",
                                         (int)(sl.bad_len > 300 ? 300 : sl.bad_len), sl.bad)
                              : qk_error(QUARK_ENOMEM, "out of memory reading the seed list");
        for (size_t j = 0; j < sl.n; j++)
            free(sl.v[j]);
        free(sl.v);
        free(cl->pw);
        free(cl);
        return rc;
    }
    cl->seeds = sl.v;
    cl->nseeds = sl.n;
    cl->started_ms = qk_now_ms_coarse();
    qk_membership_cfg cfg = {
        .cluster_id = s->cluster_id,
        .self_addr = cl->self,
        .seeds = (const char *const *)cl->seeds,
        .nseeds = cl->nseeds,
        .heartbeat_ms = cl->heartbeat_ms,
        .failure_timeout_ms = cl->failure_timeout_ms,
        .vnodes = s->opts.vnodes ? s->opts.vnodes : QK_VNODES_DEFAULT,
    };
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* wall clock: survives a reboot */
    cfg.incarnation = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    cl->mops = &qk_membership_gossip;
    cl->mstate = cl->mops->create(&cfg, cl->started_ms);
    cl->incarnation = cfg.incarnation;
    uv_mutex_init(&cl->mu);
    quark_err rc = QUARK_OK;
    if (!cl->mstate) {
        rc = qk_error(QUARK_ENOMEM, "out of memory creating the cluster state");
    } else {
        /* The peer link: TCP, at most one resend (a silo that did not run a
         * call), backoffs shorter than a heartbeat. */
        qk_remote_cfg pcfg = {.cluster_id = s->cluster_id, .client_name = cl->self,
                              .transport = QUARK_TRANSPORT_TCP,
                              .retry = {.max_attempts = 2, .initial_backoff_ms = 20,
                                        .max_backoff_ms = cl->heartbeat_ms}};
        qk_remote_hooks hooks = {.arg = cl, .tick = on_tick, .gossip_ack = on_gossip_ack};
        rc = qk_remote_new_peer(&pcfg, &hooks, &cl->peer);
    }
    if (rc != QUARK_OK) {
        if (cl->mstate)
            cl->mops->destroy(cl->mstate);
        uv_mutex_destroy(&cl->mu);
        for (size_t j = 0; j < cl->nseeds; j++)
            free(cl->seeds[j]);
        free(cl->seeds);
        free(cl->pw);
        free(cl);
        return rc;
    }
    *out = cl;
    return QUARK_OK;
}

quark_err qk_cluster_start(qk_cluster *cl)
{
    atomic_store(&cl->dirty, 1); /* the first view (this silo alone) at the first tick */
    return qk_remote_connect(cl->peer);
}

void qk_cluster_leave(qk_cluster *cl)
{
    if (atomic_load(&cl->stopped))
        return;
    uv_mutex_lock(&cl->mu);
    cl->mops->leave(cl->mstate);
    uv_mutex_unlock(&cl->mu);
    atomic_store(&cl->leave_req, 1);
    /* Wait until everyone we told answered (or a bound), so that they route
     * elsewhere before this silo refuses calls. */
    uint64_t until = qk_now_ms_coarse() + 2 * cl->heartbeat_ms + 1000;
    while (qk_now_ms_coarse() < until) {
        if (atomic_load(&cl->leave_req) == 2 &&
            atomic_load(&cl->leave_acks) >= atomic_load(&cl->leave_sent))
            break;
        usleep(2000);
    }
    /* Their clients learn it from their watch streams: a moment for that. */
    if (atomic_load(&cl->leave_sent))
        usleep(100000);
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
    qk_remote_free(cl->peer);
    cl->mops->destroy(cl->mstate);
    qk_view_unref(cl->view);
    for (unsigned i = 0; i < cl->silo->nworkers; i++)
        qk_view_unref(cl->pw[i].view);
    uv_mutex_destroy(&cl->mu);
    for (size_t j = 0; j < cl->nseeds; j++)
        free(cl->seeds[j]);
    free(cl->seeds);
    free(cl->pw);
    free(cl);
}

/* ---- forwarding ---- */

/* A call this worker forwarded: the CALL it answers once the owner did. */
typedef struct qk_fwd {
    qk_op op;                 /* home: the forwarding worker */
    qk_msg *m;
    qk_cluster *cl;
    uint8_t space[QK_ANSWER_SPACE];
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
    qk_op_init(&f->op, fwd_done, w, 0, f->space, sizeof f->space);
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

static int route_place(void *self, qk_worker *w, qk_msg *m)
{
    qk_cluster *cl = self;
    const qk_view *v = cl->pw[w->index].view;
    int owner = qk_view_owner(v, m->hash);
    if (owner < 0 || owner == v->self)
        return QK_ROUTE_HERE;
    forward(cl, w, m, owner);
    return QK_ROUTE_TAKEN;
}

static bool route_keeps(void *self, qk_worker *w, uint64_t hash)
{
    qk_cluster *cl = self;
    const qk_view *v = cl->pw[w->index].view;
    int owner = qk_view_owner(v, hash);
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
    uv_mutex_lock(&cl->mu);
    uint64_t inc = cl->incarnation;
    uv_mutex_unlock(&cl->mu);
    return qk_view_encode(v, w->silo->cluster_id, cl->self, inc, len);
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
    uint64_t inc = cl->incarnation;
    uv_mutex_unlock(&cl->mu);
    *out = status_of(cl, v, inc);
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
