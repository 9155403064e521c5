/*
 * gossip.c - the gossip membership provider (runtime/providers.h): static
 * seeds, the protocol of membership.h, carried by the silo's peer link.
 *
 * The member table (membership.c) sits behind one mutex: it is touched once
 * per heartbeat per peer and by the server's workers when a peer's gossip
 * arrives, never on the call path. Every heartbeat the provider sends its
 * whole table to every target through the peer link (qk_remote_gossip; the
 * answer, the peer's table, is merged when it comes). Changes are published
 * to the cluster module (env.changed) on the cluster's thread only, so views
 * are published in order: a change found by a server worker raises a flag
 * that the next tick looks at.
 *
 * Leaving: the table marks this silo LEFT, the next round tells every
 * target, and leave() waits (bounded) until each answered, so that they
 * route elsewhere before this silo refuses calls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/addr.h"
#include "core/common.h"
#include "cluster/gossip.h"
#include "cluster/membership.h"

typedef struct qk_gossip {
    uv_mutex_t mu;
    void *table;                  /* membership.c's state (under mu) */
    qk_remote *peer;
    qk_membership_env env;
    bool started;
    uint32_t heartbeat_ms;
    uint64_t next_gossip_ms;      /* cluster's thread */
    qk_view *published;           /* the last view given to env.changed (cluster's thread) */
    _Atomic int dirty;            /* a peer's gossip changed the live set */
    char **seeds;
    size_t nseeds;
    /* graceful leave */
    _Atomic int leave_req;        /* 1 asked, 2 LEFT gossip sent */
    _Atomic unsigned leave_sent, leave_acks;
} qk_gossip;

/* One GOSSIP in flight: its answer merges the peer's table. */
typedef struct gossip_send {
    qk_op op;
    qk_gossip *g;
} gossip_send;

/* ---- publishing ---- */

static void publish(qk_gossip *g)
{
    uv_mutex_lock(&g->mu);
    qk_view *v = qk_gossip_table.view(g->table);
    uv_mutex_unlock(&g->mu);
    if (!v) {
        atomic_store(&g->dirty, 1); /* out of memory: try again next tick */
        return;
    }
    if (g->published && qk_view_same_members(g->published, v)) {
        qk_view_unref(v);
        return;
    }
    qk_view_unref(g->published);
    g->published = v;
    qk_view_ref(v);
    g->env.changed(g->env.arg, v);
}

/* ---- the heartbeat (cluster's thread) ---- */

static void merge(qk_gossip *g, const uint8_t *p, size_t n)
{
    const char *why = NULL;
    uv_mutex_lock(&g->mu);
    int rc = qk_gossip_table.receive(g->table, p, n, qk_now_ms_coarse(), &why);
    uv_mutex_unlock(&g->mu);
    if (rc == 1)
        publish(g);
}

/* A peer's answer to our gossip (its table), or the send's failure. */
static void send_done(qk_op *op)
{
    gossip_send *gs = QK_CONTAINER_OF(op, gossip_send, op);
    qk_gossip *g = gs->g;
    if (op->out->err == QUARK_OK) {
        merge(g, op->out->data, op->out->len);
        if (atomic_load(&g->leave_req) == 2)
            atomic_fetch_add(&g->leave_acks, 1);
    }
    free(gs);
}

static void send_to(qk_gossip *g, const char *addr, const uint8_t *buf, size_t len)
{
    gossip_send *gs = malloc(sizeof *gs);
    if (!gs)
        return; /* this round misses one target; the next heartbeat tries again */
    qk_op_init(&gs->op, send_done, NULL, QK_OP_LEND, NULL);
    gs->g = g;
    if (qk_remote_gossip(g->peer, addr, buf, len, g->heartbeat_ms * 2, &gs->op) != QUARK_OK)
        free(gs);
}

static void gossip_round(qk_gossip *g, uint64_t now)
{
    uv_mutex_lock(&g->mu);
    int changed = qk_gossip_table.tick(g->table, now);
    size_t len = 0;
    uint8_t *buf = qk_gossip_table.encode(g->table, &len);
    const char *tp[256];
    size_t n = qk_gossip_table.targets(g->table, tp, 256);
    char (*targets)[QK_ADDR_MAX] = n ? malloc(n * sizeof *targets) : NULL;
    for (size_t i = 0; targets && i < n; i++)
        snprintf(targets[i], QK_ADDR_MAX, "%s", tp[i]);
    uv_mutex_unlock(&g->mu);
    if (changed)
        publish(g);
    if (buf && targets) {
        if (atomic_load(&g->leave_req) == 1) {
            atomic_store(&g->leave_sent, (unsigned)n);
            atomic_store(&g->leave_req, 2);
        }
        for (size_t i = 0; i < n; i++)
            send_to(g, targets[i], buf, len);
    } else if (atomic_load(&g->leave_req) == 1 && buf && n == 0) {
        atomic_store(&g->leave_req, 2); /* nobody to tell */
    }
    free(targets);
    free(buf);
}

/* ---- the membership table (runtime/providers.h) ---- */

static quark_err g_start(void *self, const qk_membership_env *env)
{
    qk_gossip *g = self;
    g->env = *env;
    g->started = true;
    atomic_store(&g->dirty, 1); /* the first view (this silo alone) at the first tick */
    return QUARK_OK;
}

static void g_tick(void *self, uint64_t now)
{
    qk_gossip *g = self;
    if (atomic_exchange(&g->dirty, 0))
        publish(g);
    if (atomic_load(&g->leave_req) == 1) {
        publish(g); /* without this silo: its own watchers move on at once */
        g->next_gossip_ms = 0;
    }
    if (now < g->next_gossip_ms)
        return;
    g->next_gossip_ms = now + g->heartbeat_ms;
    gossip_round(g, now);
}

static void g_leave(void *self)
{
    qk_gossip *g = self;
    uv_mutex_lock(&g->mu);
    qk_gossip_table.leave(g->table);
    uv_mutex_unlock(&g->mu);
    atomic_store(&g->leave_req, 1);
    /* Wait until everyone we told answered (or a bound), so that they route
     * elsewhere before this silo refuses calls. */
    uint64_t until = qk_now_ms_coarse() + 2 * g->heartbeat_ms + 1000;
    while (qk_now_ms_coarse() < until) {
        if (atomic_load(&g->leave_req) == 2 &&
            atomic_load(&g->leave_acks) >= atomic_load(&g->leave_sent))
            break;
        usleep(2000);
    }
    /* Their clients learn it from their watch streams: a moment for that. */
    if (atomic_load(&g->leave_sent))
        usleep(100000);
}

static uint64_t g_incarnation(void *self)
{
    qk_gossip *g = self;
    uv_mutex_lock(&g->mu);
    uint64_t inc = qk_gossip_table.incarnation(g->table);
    uv_mutex_unlock(&g->mu);
    return inc;
}

/* A peer's GOSSIP, received by the server (any worker): merge it, answer
 * with this silo's table. */
static uint8_t *g_peer_message(void *self, const uint8_t *p, size_t n, size_t *len,
                               const char **why)
{
    qk_gossip *g = self;
    uv_mutex_lock(&g->mu);
    int rc = qk_gossip_table.receive(g->table, p, n, qk_now_ms_coarse(), why);
    uint8_t *out = rc < 0 ? NULL : qk_gossip_table.encode(g->table, len);
    uv_mutex_unlock(&g->mu);
    if (rc == 1)
        atomic_store(&g->dirty, 1);
    if (rc >= 0 && !out)
        *why = "out of memory answering gossip";
    return out;
}

static void g_destroy(void *self)
{
    qk_gossip *g = self;
    if (!g)
        return;
    if (g->table)
        qk_gossip_table.destroy(g->table);
    qk_view_unref(g->published);
    uv_mutex_destroy(&g->mu);
    for (size_t j = 0; j < g->nseeds; j++)
        free(g->seeds[j]);
    free(g->seeds);
    free(g);
}

const qk_membership_ops qk_membership_gossip = {
    .name = "gossip",
    .start = g_start,
    .tick = g_tick,
    .leave = g_leave,
    .incarnation = g_incarnation,
    .peer_message = g_peer_message,
    .destroy = g_destroy,
};

/* ---- making one ---- */

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

quark_err qk_gossip_new(const quark_silo_opts *opts, const char *self_addr, qk_remote *peer,
                        void **out)
{
    uint32_t hb = opts->heartbeat_ms ? opts->heartbeat_ms : 500;
    uint32_t ft = opts->failure_timeout_ms ? opts->failure_timeout_ms : 3000;
    if (ft < 2 * hb)
        return qk_error(QUARK_EINVAL, "failure_timeout_ms (%u) must be at least two heartbeats "
                        "(heartbeat_ms %u): a single late heartbeat would kill a live silo",
                        ft, hb);
    qk_gossip *g = calloc(1, sizeof *g);
    if (!g)
        return qk_error(QUARK_ENOMEM, "out of memory creating the cluster state");
    uv_mutex_init(&g->mu);
    g->peer = peer;
    g->heartbeat_ms = hb;
    seed_list sl = {0};
    if (opts->seeds && qk_addr_list_each(opts->seeds, add_seed, &sl) != 0) {
        quark_err rc = sl.bad ? qk_error(QUARK_EINVAL, "seed '%.*s' is not HOST:PORT",
                                         (int)(sl.bad_len > 300 ? 300 : sl.bad_len), sl.bad)
                              : qk_error(QUARK_ENOMEM, "out of memory reading the seed list");
        g->seeds = sl.v;
        g->nseeds = sl.n;
        g_destroy(g);
        return rc;
    }
    g->seeds = sl.v;
    g->nseeds = sl.n;
    qk_gossip_cfg cfg = {
        .cluster_id = opts->cluster_id,
        .self_addr = self_addr,
        .seeds = (const char *const *)g->seeds,
        .nseeds = g->nseeds,
        .heartbeat_ms = hb,
        .failure_timeout_ms = ft,
        .vnodes = opts->vnodes ? opts->vnodes : QK_VNODES_DEFAULT,
    };
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* wall clock: survives a reboot */
    cfg.incarnation = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    g->table = qk_gossip_table.create(&cfg, qk_now_ms_coarse());
    if (!g->table) {
        g_destroy(g);
        return qk_error(QUARK_ENOMEM, "out of memory creating the cluster state");
    }
    *out = g;
    return QUARK_OK;
}
