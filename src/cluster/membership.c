/*
 * membership.c - the static-seed gossip membership provider (see
 * membership.h for the protocol).
 *
 * The state is one table of entries sorted by address, self included (self is
 * ALIVE, or LEFT once it leaves; never DEAD locally). Clusters are tens of
 * silos, so a sorted array with binary search and memmove is plenty.
 *
 * "Did the live set change" is answered exactly, without copies: each entry
 * remembers how it stood in the last published live set (pub_alive,
 * pub_inc). After every call that may change the table, publish() compares
 * and bumps the version only if some member joined, went, or changed
 * incarnation: a receive that adds a member and marks it LEFT in the same
 * message is no change.
 *
 * Tombstones (DEAD, LEFT) are kept for known members only: a tombstone
 * learned about a member we never knew would be re-learned from a peer
 * whose copy expires a little later, and so on forever.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/membership.h"
#include "quark/actor_service.pb-c.h"

enum {
    ST_ALIVE = QUARK__MEMBER_STATUS__MEMBER_ALIVE,
    ST_DEAD = QUARK__MEMBER_STATUS__MEMBER_DEAD,
    ST_LEFT = QUARK__MEMBER_STATUS__MEMBER_LEFT,
};

typedef struct entry {
    char *addr;
    uint64_t incarnation;
    int status;              /* ST_* */
    /* ALIVE: when last heard from directly (or when learned of, which gives
     * a new member a full timeout to reach us); DEAD/LEFT: when the
     * tombstone was set. */
    uint64_t heard_ms;
    int pub_alive;           /* in the last published live set ... */
    uint64_t pub_inc;        /* ... at this incarnation */
} entry;

typedef struct gossip {
    char *cluster_id;
    char *self_addr;
    char **seeds;            /* unique, without self_addr */
    size_t nseeds;
    uint32_t failure_timeout_ms;
    unsigned vnodes;
    int leaving;
    uint64_t version;        /* of the live set */
    entry *e;                /* sorted by addr, self included */
    size_t n, cap;
    qk_view *cached;         /* view() of `version`, or NULL */
    char why[256];           /* receive's last error */
} gossip;

/* ---- the table ---- */

/* Index of addr, or -(insertion point) - 1. */
static long find(const gossip *g, const char *addr)
{
    size_t lo = 0, hi = g->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->e[mid].addr, addr);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -(long)lo - 1;
}

/* Insert a new entry (not in the published set yet) at position `at`. */
static entry *insert(gossip *g, size_t at, const char *addr, uint64_t inc, int status,
                     uint64_t now)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 8;
        entry *e = realloc(g->e, cap * sizeof *e);
        if (!e)
            return NULL;
        g->e = e;
        g->cap = cap;
    }
    char *a = strdup(addr);
    if (!a)
        return NULL;
    memmove(&g->e[at + 1], &g->e[at], (g->n - at) * sizeof *g->e);
    g->n++;
    g->e[at] = (entry){.addr = a, .incarnation = inc, .status = status, .heard_ms = now};
    return &g->e[at];
}

static entry *self_entry(gossip *g)
{
    long i = find(g, g->self_addr);
    return i >= 0 ? &g->e[i] : NULL; /* always there */
}

/* Compare the table's live set with the published one; if it differs,
 * publish it under a new version. 1 if it changed. */
static int publish(gossip *g)
{
    int changed = 0;
    for (size_t i = 0; i < g->n; i++) {
        entry *e = &g->e[i];
        int alive = e->status == ST_ALIVE;
        if (alive != e->pub_alive || (alive && e->incarnation != e->pub_inc))
            changed = 1;
        e->pub_alive = alive;
        e->pub_inc = e->incarnation;
    }
    if (changed) {
        g->version++;
        qk_view_unref(g->cached);
        g->cached = NULL;
    }
    return changed;
}

/* ---- ops ---- */

static int addr_ok(const char *a)
{
    return a && a[0] && strlen(a) < QK_ADDR_MAX;
}

static void g_destroy(void *self)
{
    gossip *g = self;
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++)
        free(g->e[i].addr);
    free(g->e);
    for (size_t i = 0; i < g->nseeds; i++)
        free(g->seeds[i]);
    free(g->seeds);
    free(g->cluster_id);
    free(g->self_addr);
    qk_view_unref(g->cached);
    free(g);
}

static void *g_create(const qk_gossip_cfg *cfg, uint64_t now_ms)
{
    if (!cfg || !addr_ok(cfg->self_addr) || cfg->incarnation == 0 || cfg->failure_timeout_ms == 0 ||
        (cfg->nseeds && !cfg->seeds))
        return NULL;
    for (size_t i = 0; i < cfg->nseeds; i++)
        if (!addr_ok(cfg->seeds[i]))
            return NULL;
    gossip *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->failure_timeout_ms = cfg->failure_timeout_ms;
    g->vnodes = cfg->vnodes == 0 ? QK_VNODES_DEFAULT
                : cfg->vnodes > QK_VNODES_MAX ? QK_VNODES_MAX : cfg->vnodes;
    g->cluster_id = strdup(cfg->cluster_id ? cfg->cluster_id : "");
    g->self_addr = strdup(cfg->self_addr);
    if (!g->cluster_id || !g->self_addr)
        goto fail;
    if (cfg->nseeds && !(g->seeds = calloc(cfg->nseeds, sizeof *g->seeds)))
        goto fail;
    for (size_t i = 0; i < cfg->nseeds; i++) {
        const char *s = cfg->seeds[i];
        int dup = strcmp(s, g->self_addr) == 0; /* every silo may share one seed list */
        for (size_t j = 0; j < g->nseeds && !dup; j++)
            dup = strcmp(s, g->seeds[j]) == 0;
        if (dup)
            continue;
        if (!(g->seeds[g->nseeds] = strdup(s)))
            goto fail;
        g->nseeds++;
    }
    if (!insert(g, 0, g->self_addr, cfg->incarnation, ST_ALIVE, now_ms))
        goto fail;
    g->version = 0;
    publish(g); /* version 1: just self */
    return g;
fail:
    g_destroy(g);
    return NULL;
}

/* The sender talks to us: that is direct contact. An unknown sender, or a
 * new incarnation of a known one, becomes ALIVE; a stale incarnation is
 * ignored; at the same incarnation a DEAD or LEFT sender stays so (a DEAD
 * one refutes by taking a higher incarnation when it sees our table). */
static int heard_from(gossip *g, const char *from, uint64_t inc, uint64_t now)
{
    if (strcmp(from, g->self_addr) == 0)
        return 0; /* our own address: a misconfiguration, nothing to learn */
    long i = find(g, from);
    if (i < 0)
        return insert(g, (size_t)(-i - 1), from, inc, ST_ALIVE, now) ? 0 : -1;
    entry *e = &g->e[i];
    if (inc > e->incarnation) {
        e->incarnation = inc;
        e->status = ST_ALIVE;
        e->heard_ms = now;
    } else if (inc == e->incarnation && e->status == ST_ALIVE) {
        e->heard_ms = now;
    }
    return 0;
}

/* What a peer says about our own entry. */
static void about_self(gossip *g, uint64_t inc, int status)
{
    entry *s = self_entry(g);
    if (g->leaving || status == ST_ALIVE || inc < s->incarnation)
        return;
    /* Declared DEAD (or LEFT, which we did not do) at our incarnation or
     * later: come back as a newer incarnation, which beats the tombstone. */
    s->incarnation = inc + 1;
}

static int graver(int a, int b)
{
    /* LEFT > DEAD > ALIVE, and the enum happens to be in that order. */
    return a > b;
}

/* Merge one listed member (indirect news: never refreshes heard_ms of a
 * member we already have alive at that incarnation). */
static int merge(gossip *g, const char *addr, uint64_t inc, int status, uint64_t now)
{
    if (strcmp(addr, g->self_addr) == 0) {
        about_self(g, inc, status);
        return 0;
    }
    long i = find(g, addr);
    if (i < 0) {
        if (status != ST_ALIVE)
            return 0; /* see the file comment: no tombstones of strangers */
        return insert(g, (size_t)(-i - 1), addr, inc, ST_ALIVE, now) ? 0 : -1;
    }
    entry *e = &g->e[i];
    if (inc > e->incarnation || (inc == e->incarnation && graver(status, e->status))) {
        e->incarnation = inc;
        e->status = status;
        e->heard_ms = now; /* full timeout if ALIVE, tombstone starts if not */
    }
    return 0;
}

static int status_of(int s)
{
    return s == ST_DEAD || s == ST_LEFT ? s : ST_ALIVE; /* unknown values: proto3 open enums */
}

static int g_receive(void *self, const uint8_t *p, size_t n, uint64_t now_ms, const char **why)
{
    gossip *g = self;
    const char *dummy;
    if (!why)
        why = &dummy;
    Quark__ClusterView *cv = quark__cluster_view__unpack(NULL, n, p);
    if (!cv) {
        *why = "malformed gossip (not a ClusterView)";
        return -1;
    }
    int rc = -1;
    const char *cid = cv->cluster_id ? cv->cluster_id : "";
    if (strcmp(cid, g->cluster_id) != 0) {
        snprintf(g->why, sizeof g->why, "gossip from cluster '%.64s', this silo is in '%.64s'",
                 cid, g->cluster_id);
        *why = g->why;
        goto out;
    }
    if (!addr_ok(cv->from)) {
        *why = "gossip without a valid sender address";
        goto out;
    }
    /* Check everything before changing anything: a bad message is all
     * rejected. */
    size_t unknown = find(g, cv->from) < 0;
    for (size_t i = 0; i < cv->n_members; i++) {
        if (!addr_ok(cv->members[i]->address)) {
            *why = "gossip lists a member with an empty or too long address";
            goto out;
        }
        unknown += find(g, cv->members[i]->address) < 0;
    }
    /* A cluster of more silos than this is not what gossip is for; a
     * message that would grow the table past it is refused whole. */
    if (cv->n_members > QK_MEMBERS_MAX || g->n + unknown > QK_MEMBERS_MAX) {
        snprintf(g->why, sizeof g->why, "gossip would make %zu members, more than the %d a "
                 "view may hold", g->n + unknown, QK_MEMBERS_MAX);
        *why = g->why;
        goto out;
    }
    if (heard_from(g, cv->from, cv->from_incarnation, now_ms) != 0) {
        *why = "out of memory";
        goto done;
    }
    for (size_t i = 0; i < cv->n_members; i++) {
        const Quark__ClusterMember *m = cv->members[i];
        if (merge(g, m->address, m->incarnation, status_of((int)m->status), now_ms) != 0) {
            *why = "out of memory";
            goto done; /* what was merged stays merged: every step is valid alone */
        }
    }
    rc = 0;
done:
    if (publish(g) && rc == 0)
        rc = 1;
out:
    quark__cluster_view__free_unpacked(cv, NULL);
    return rc;
}

static int g_tick(void *self, uint64_t now_ms)
{
    gossip *g = self;
    size_t out = 0;
    for (size_t i = 0; i < g->n; i++) {
        entry *e = &g->e[i];
        int is_self = strcmp(e->addr, g->self_addr) == 0;
        uint64_t quiet = now_ms > e->heard_ms ? now_ms - e->heard_ms : 0;
        if (!is_self && e->status == ST_ALIVE && quiet >= g->failure_timeout_ms) {
            e->status = ST_DEAD;
            e->heard_ms = now_ms;
        } else if (!is_self && e->status != ST_ALIVE && quiet >= QK_TOMBSTONE_MS) {
            /* Not in the published live set: it went DEAD or LEFT in an
             * earlier call, which published that. */
            free(e->addr);
            continue;
        }
        g->e[out++] = *e;
    }
    g->n = out;
    return publish(g);
}

static uint8_t *g_encode(void *self, size_t *len)
{
    gossip *g = self;
    Quark__ClusterView cv = QUARK__CLUSTER_VIEW__INIT;
    Quark__ClusterMember *ms = calloc(g->n, sizeof *ms);
    Quark__ClusterMember **mp = calloc(g->n, sizeof *mp);
    uint8_t *buf = NULL;
    if (!ms || !mp)
        goto out;
    for (size_t i = 0; i < g->n; i++) {
        quark__cluster_member__init(&ms[i]);
        ms[i].address = g->e[i].addr;
        ms[i].incarnation = g->e[i].incarnation;
        ms[i].status = (Quark__MemberStatus)g->e[i].status;
        mp[i] = &ms[i];
    }
    cv.cluster_id = g->cluster_id;
    cv.from = g->self_addr;
    cv.from_incarnation = self_entry(g)->incarnation;
    cv.version = g->version;
    cv.vnodes = g->vnodes;
    cv.n_members = g->n;
    cv.members = mp;
    size_t n = quark__cluster_view__get_packed_size(&cv);
    buf = malloc(n ? n : 1);
    if (buf) {
        quark__cluster_view__pack(&cv, buf);
        *len = n;
    }
out:
    free(ms);
    free(mp);
    return buf;
}

static int alive_member(const gossip *g, const char *addr)
{
    long i = find(g, addr);
    return i >= 0 && g->e[i].status == ST_ALIVE;
}

static size_t g_targets(void *self, const char **out, size_t cap)
{
    gossip *g = self;
    size_t k = 0;
    for (size_t i = 0; i < g->n && k < cap; i++)
        if (g->e[i].status == ST_ALIVE && strcmp(g->e[i].addr, g->self_addr) != 0)
            out[k++] = g->e[i].addr;
    /* Seeds not known alive: how a silo joins, and how a restarted seed (or
     * the far side of a healed partition) is found again. */
    for (size_t i = 0; i < g->nseeds && k < cap; i++)
        if (!alive_member(g, g->seeds[i]))
            out[k++] = g->seeds[i];
    return k;
}

static void g_leave(void *self)
{
    gossip *g = self;
    g->leaving = 1;
    self_entry(g)->status = ST_LEFT;
    publish(g);
}

static qk_view *g_view(void *self)
{
    gossip *g = self;
    if (!g->cached) {
        qk_view_member *ms = calloc(g->n ? g->n : 1, sizeof *ms);
        if (!ms)
            return NULL;
        size_t k = 0;
        for (size_t i = 0; i < g->n; i++) {
            if (g->e[i].status != ST_ALIVE)
                continue;
            ms[k].addr = g->e[i].addr;
            ms[k].incarnation = g->e[i].incarnation;
            k++;
        }
        g->cached = qk_view_new(ms, k, g->version, g->vnodes, g->self_addr);
        free(ms);
        if (!g->cached)
            return NULL;
    }
    qk_view_ref(g->cached);
    return g->cached;
}

static uint64_t g_incarnation(void *self)
{
    return self_entry(self)->incarnation;
}

const qk_gossip_ops qk_gossip_table = {
    .name = "gossip",
    .create = g_create,
    .destroy = g_destroy,
    .receive = g_receive,
    .tick = g_tick,
    .encode = g_encode,
    .targets = g_targets,
    .leave = g_leave,
    .view = g_view,
    .incarnation = g_incarnation,
};
