/*
 * remote_route.c - where a remote's calls go: by the cluster's view to the
 * silo that owns the actor (and, on that silo, on the lane of the actor's
 * worker), to the primary connection while there is no view, or to an
 * explicit target (gossip, forwards). Also the view itself: which silo the
 * client watches for it, and installing a new one (the calls waiting for a
 * connection are routed again).
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "transport/remote_internal.h"

static qk_rconn *route_silo(qk_remote *r, qk_rcall *c, const char **why);

/* Where call `c` should go now: NULL if nowhere (then *why says why). */

/* The lane of silo connection k for worker `shard` (made on first use). */
static qk_rconn *lane_get(qk_rconn *k, unsigned shard)
{
    if (!k->lanes && !(k->lanes = calloc(k->workers, sizeof *k->lanes)))
        return NULL;
    qk_rconn *l = k->lanes[shard];
    if (!l) {
        l = qk_rm_conn_new(k->r, k->addr, strlen(k->addr));
        if (!l)
            return NULL;
        l->lane = true;
        l->parent = k;
        l->shard = shard;
        k->lanes[shard] = l;
    }
    return l;
}

/* Where call `c` should go now: NULL if nowhere (then *why says why). A call
 * to an actor goes on the lane of its worker when that lane is up, else on
 * the silo connection (whose worker hands it over). */
qk_rconn *qk_rm_route(qk_remote *r, qk_rcall *c, const char **why)
{
    qk_rconn *k = route_silo(r, c, why);
    if (!k || k->state != RC_READY || k->workers < 2 || !k->served_by ||
        !c->has_hash || (c->kind != RC_OP_CALL && c->kind != RC_OP_FWD))
        return k;
    unsigned shard = (unsigned)(((c->hash >> 32) * (uint64_t)k->workers) >> 32);
    if (shard == k->served_by - 1)
        return k;
    qk_rconn *l = lane_get(k, shard);
    if (!l)
        return k;
    if (l->state == RC_READY)
        return l;
    qk_rm_ensure_connecting(l);
    return k;
}

static qk_rconn *route_silo(qk_remote *r, qk_rcall *c, const char **why)
{
    *why = NULL;
    if (c->target && c->attempts == 0) /* explicit, on the first attempt */
        return qk_rm_conn_get(r, c->target);
    if (c->kind == RC_OP_GOSSIP)
        return qk_rm_conn_get(r, c->target);
    if (c->kind == RC_OP_WATCH)
        return c->conn;
    if (r->view && c->has_hash) {
        int o = r->peer ? -1 : qk_rm_located(r, r->view, r->view_gen, c->hash);
        if (o < 0)
            o = qk_view_owner(r->view, c->hash);
        if (o >= 0 && o == r->view->self) {
            *why = "the actor's ownership moved to this silo while the call was forwarded; "
                   "it did not run (retry)";
            return NULL;
        }
        if (o >= 0)
            return qk_rm_conn_get(r, r->view->members[o].addr);
    }
    if (r->peer) {
        if (c->target)
            return qk_rm_conn_get(r, c->target);
        *why = "no route to the actor's silo";
        return NULL;
    }
    return r->primary;
}

/* ---- where actors live off their placement owner ---- */

static uint64_t loc_slot(uint64_t hash, int member, uint32_t gen)
{
    return (hash & ~0xffffffull) | ((uint64_t)member & 0xfff) << 12 | (gen & 0xfff);
}

static bool loc_is(uint64_t s, uint64_t hash)
{
    return s && !((s ^ hash) & ~0xffffffull);
}

/* The set of `hash`: two slots side by side. */
static _Atomic uint64_t *loc_set(const qk_remote *r, uint64_t hash)
{
    return &r->loc[(hash & (QK_LOC_SLOTS / 2 - 1)) * 2];
}

int qk_rm_located(const qk_remote *r, const qk_view *v, uint32_t gen, uint64_t hash)
{
    if (!r->loc)
        return -1;
    _Atomic uint64_t *set = loc_set(r, hash);
    for (int w = 0; w < 2; w++) {
        uint64_t s = atomic_load_explicit(&set[w], memory_order_relaxed);
        if (!loc_is(s, hash))
            continue;
        if ((s & 0xfff) != (gen & 0xfff))
            return -1;
        size_t m = (size_t)(s >> 12 & 0xfff);
        return m < v->n ? (int)m : -1;
    }
    return -1;
}

void qk_rm_unlocate(qk_remote *r, uint64_t hash)
{
    if (!r->loc)
        return;
    _Atomic uint64_t *set = loc_set(r, hash);
    for (int w = 0; w < 2; w++)
        if (loc_is(atomic_load_explicit(&set[w], memory_order_relaxed), hash))
            atomic_store_explicit(&set[w], 0, memory_order_relaxed);
}

void qk_rm_locate(qk_remote *r, const qk_view *v, uint32_t gen, uint64_t hash, const char *p,
                  size_t n)
{
    char addr[QK_ADDR_MAX];
    if (!r->loc || !v || n == 0 || n >= sizeof addr)
        return;
    memcpy(addr, p, n);
    addr[n] = '\0';
    int m = qk_view_find(v, addr);
    uint64_t val = m < 0 || m > 0xfff ? 0 : loc_slot(hash, m, gen); /* 0: not a member now */
    _Atomic uint64_t *set = loc_set(r, hash);
    /* Its own slot if it has one, else an empty or stale one, else the one
     * the hash picks. */
    uint64_t s0 = atomic_load_explicit(&set[0], memory_order_relaxed);
    uint64_t s1 = atomic_load_explicit(&set[1], memory_order_relaxed);
    int w = loc_is(s0, hash)                        ? 0
            : loc_is(s1, hash)                      ? 1
            : !s0 || (s0 & 0xfff) != (gen & 0xfff) ? 0
            : !s1 || (s1 & 0xfff) != (gen & 0xfff) ? 1
                                                    : (int)(hash >> 24 & 1);
    atomic_store_explicit(&set[w], val, memory_order_relaxed);
}

static void reroute_waiting(qk_remote *r)
{
    qk_rcall *all = NULL, *tail = NULL;
    for (size_t i = 0; i < r->nconns; i++) {
        qk_rconn *k = r->conns[i];
        if (!k->waiting)
            continue;
        if (tail)
            tail->next = k->waiting;
        else
            all = k->waiting;
        tail = k->waiting_tail;
        k->waiting = k->waiting_tail = NULL;
    }
    qk_rm_resend(r, all, NULL);
}

/* Route by v from now on (NULL: forget the view). Takes the reference. */
void qk_rm_publish_view(qk_remote *r)
{
    if (!r->direct)
        return;
    qk_view *nv = r->view;
    if (nv)
        qk_view_ref(nv);
    uv_mutex_lock(&r->route_mu);
    qk_view *old = r->pub_view;
    r->pub_view = nv;
    r->pub_gen = r->view_gen;
    uv_mutex_unlock(&r->route_mu);
    qk_view_unref(old);
    /* Direct sockets to silos calls no longer go to are closed (they would
     * otherwise sit open until disconnect). */
    size_t n = 0, cap = 1 + (nv ? nv->n : 0);
    const char **keep = malloc(cap * sizeof *keep);
    if (!keep)
        return; /* out of memory: they stay until the next change */
    if (r->primary)
        keep[n++] = r->primary->addr;
    for (size_t i = 0; nv && i < nv->n; i++)
        keep[n++] = nv->members[i].addr;
    qk_direct_retain(r->direct, keep, n);
    free(keep);
}

void qk_rm_publish_primary(qk_remote *r)
{
    if (!r->direct)
        return;
    uv_mutex_lock(&r->route_mu);
    if (r->primary && r->primary->state == RC_READY)
        snprintf(r->pub_primary, sizeof r->pub_primary, "%s", r->primary->addr);
    else
        r->pub_primary[0] = '\0';
    uv_mutex_unlock(&r->route_mu);
}

void qk_rm_set_view(qk_remote *r, qk_view *v)
{
    qk_view *old = r->view;
    r->view = v;
    /* Locations found under the old view hold no more (member indexes). */
    if (++r->view_gen % 0x1000 == 0)
        r->view_gen++; /* gen 0 never marks a slot: 0 is an empty one */
    qk_rm_publish_view(r);
    for (size_t i = 0; i < r->nconns; i++)
        r->conns[i]->member = false;
    if (v) {
        for (size_t i = 0; i < v->n; i++) {
            if ((int)i == v->self)
                continue;
            qk_rconn *k = qk_rm_conn_get(r, v->members[i].addr);
            if (!k)
                continue;
            k->member = true;
            if (!r->peer) /* clients keep a connection to every member */
                qk_rm_ensure_connecting(k);
        }
    }
    reroute_waiting(r);
    qk_view_unref(old);
    /* Connections of silos that left: keep answering what is in flight. */
    for (size_t i = r->nconns; i-- > 0;)
        if (i < r->nconns) /* (freeing a silo connection frees its lanes too) */
            qk_rm_conn_free_if_unused(r->conns[i]);
}

/* Ask connection k for the cluster's view (clients routing by owner). */
static void start_watch(qk_remote *r, qk_rconn *k)
{
    qk_rcall *c = calloc(1, sizeof *c + QK_FRAME_HEADER);
    if (!c)
        return;
    qk_frame_header(c->frame, QK_FRAME_WATCH, 0, 0);
    c->len = QK_FRAME_HEADER;
    c->kind = RC_OP_WATCH;
    c->conn = k;
    c->method = "WatchCluster";
    k->watch = c;
    r->source = k;
    r->want_watch = false;
    qk_rm_send_on(k, c);
}

/* A READY connection to watch, preferring members. */
void qk_rm_pick_source(qk_remote *r)
{
    if (r->peer || r->cfg.routing == QUARK_ROUTE_PINNED || r->source)
        return;
    qk_rconn *best = NULL;
    for (size_t i = 0; i < r->nconns; i++) {
        qk_rconn *k = r->conns[i];
        if (!k->lane && k->state == RC_READY && (!best || (k->member && !best->member)))
            best = k;
    }
    if (best) {
        start_watch(r, best);
        return;
    }
    /* Nobody reachable: forget the view, start over from the seeds. */
    if (r->view) {
        qk_rm_set_view(r, NULL);
    }
    r->want_watch = true;
}

void qk_rm_handle_view(qk_rconn *k, qk_rcall *c, const uint8_t *p, size_t n)
{
    qk_remote *r = k->r;
    if (k->watch != c)
        return;
    char *from = NULL;
    const char *why = NULL;
    qk_view *v = qk_view_decode(p, n, r->cfg.cluster_id, &from, &why);
    if (!v) {
        free(from);
        return; /* keep the old view */
    }
    if (from && *from && !k->silo_id[0] && strlen(from) < sizeof k->silo_id)
        strcpy(k->silo_id, from);
    free(from);
    if (r->view && qk_view_same_members(r->view, v)) {
        qk_view_unref(v);
        return;
    }
    qk_rm_set_view(r, v);
}

void qk_rm_watch_ended(qk_rconn *k, qk_rcall *c)
{
    qk_remote *r = k->r;
    if (k->watch == c)
        k->watch = NULL;
    if (r->source == k)
        r->source = NULL;
    qk_rm_rcall_free(c);
    r->want_watch = true;
}
