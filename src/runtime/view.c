/*
 * view.c - cluster views and the consistent-hash ring (see view.h).
 *
 * A view is built once and never changes: members copied and sorted by
 * address, then the placement state. The ring is a sorted array of
 * {point, member}: every member puts `vnodes` points on a 64-bit circle,
 * derived from its address alone (not its incarnation, so a restarted silo
 * takes back the arcs it had), and a key belongs to the member of the first
 * point at or after the key's position, wrapping to the first point. Adding a
 * member only splits existing arcs, removing one only merges its arcs into
 * their successors': keys move to or from that member, never between the
 * others. Lookup is one binary search, no lock.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "runtime/view.h"

#define QK_RING_ADDR_SEED 0x71726b72696e6761ull /* per-point seed base, + vnode index */
/* Actor key hashes also choose a worker inside a silo (their high bits), so
 * the ring sees them remixed: owner and worker stay independent. */
#define QK_RING_KEY_SEED 0x6b65795f72696e67ull

/* ---- the ring ---- */

typedef struct ring_point {
    uint64_t at;
    uint32_t member;         /* index in v->members */
} ring_point;

typedef struct ring {
    size_t n;
    ring_point pt[];         /* sorted by (at, member) */
} ring;

static int point_cmp(const void *a, const void *b)
{
    const ring_point *x = a, *y = b;
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    /* Equal points (vanishingly rare) go to the member first by address in
     * every view that holds both, so a collision cannot move keys between
     * old members either. */
    return (x->member > y->member) - (x->member < y->member);
}

static void *ring_build(const qk_view *v)
{
    size_t vn = v->vnodes;
    if (v->n > UINT32_MAX || (v->n && vn > (SIZE_MAX - sizeof(ring)) / sizeof(ring_point) / v->n))
        return NULL;
    size_t total = v->n * vn;
    ring *r = malloc(sizeof *r + total * sizeof(ring_point));
    if (!r)
        return NULL;
    r->n = total;
    size_t k = 0;
    for (size_t m = 0; m < v->n; m++) {
        const char *addr = v->members[m].addr;
        size_t len = strlen(addr);
        for (size_t i = 0; i < vn; i++) {
            r->pt[k].at = qk_fmix64(qk_hash(addr, len, QK_RING_ADDR_SEED + i));
            r->pt[k].member = (uint32_t)m;
            k++;
        }
    }
    qsort(r->pt, r->n, sizeof(ring_point), point_cmp);
    return r;
}

static int ring_owner(const void *state, uint64_t key)
{
    const ring *r = state;
    if (!r || r->n == 0)
        return -1;
    uint64_t h = qk_fmix64(key ^ QK_RING_KEY_SEED);
    size_t lo = 0, hi = r->n; /* first point with at >= h */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->pt[mid].at < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (int)r->pt[lo == r->n ? 0 : lo].member;
}

static void ring_free(void *state)
{
    free(state);
}

const qk_placement_ops qk_placement_ring = {
    .name = "ring",
    .build = ring_build,
    .owner = ring_owner,
    .free = ring_free,
};

/* ---- views ---- */

static int member_cmp(const void *a, const void *b)
{
    return strcmp(((const qk_view_member *)a)->addr, ((const qk_view_member *)b)->addr);
}

static void view_free(qk_view *v)
{
    if (v->pstate)
        v->placement->free(v->pstate);
    for (size_t i = 0; i < v->n; i++)
        free(v->members[i].addr);
    free(v->members);
    free(v);
}

qk_view *qk_view_new(const qk_view_member *members, size_t n, uint64_t version, unsigned vnodes,
                     const char *self_addr)
{
    if (n > INT_MAX) /* owner() answers an int */
        return NULL;
    qk_view *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    atomic_init(&v->refs, 1);
    v->version = version;
    v->vnodes = vnodes == 0 ? QK_VNODES_DEFAULT : vnodes > QK_VNODES_MAX ? QK_VNODES_MAX : vnodes;
    v->self = -1;
    v->placement = &qk_placement_ring;
    if (n) {
        v->members = calloc(n, sizeof *v->members);
        if (!v->members)
            goto oom;
    }
    for (size_t i = 0; i < n; i++) {
        if (!members[i].addr)
            continue;
        char *a = strdup(members[i].addr);
        if (!a)
            goto oom;
        v->members[v->n].addr = a;
        v->members[v->n].incarnation = members[i].incarnation;
        v->n++;
    }
    if (v->n > 1)
        qsort(v->members, v->n, sizeof *v->members, member_cmp);
    /* Dedupe: of the copies of one address keep the highest incarnation (the
     * newest life of that silo). */
    size_t out = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (out && strcmp(v->members[out - 1].addr, v->members[i].addr) == 0) {
            if (v->members[i].incarnation > v->members[out - 1].incarnation)
                v->members[out - 1].incarnation = v->members[i].incarnation;
            free(v->members[i].addr);
            continue;
        }
        v->members[out++] = v->members[i];
    }
    v->n = out;
    if (self_addr)
        v->self = qk_view_find(v, self_addr);
    v->pstate = v->placement->build(v);
    if (!v->pstate)
        goto oom;
    return v;
oom:
    view_free(v);
    return NULL;
}

void qk_view_ref(qk_view *v)
{
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

void qk_view_unref(qk_view *v)
{
    /* acq_rel: the last owner sees every other owner's reads finished. */
    if (v && atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1)
        view_free(v);
}

int qk_view_find(const qk_view *v, const char *addr)
{
    if (!v || !addr)
        return -1;
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(v->members[mid].addr, addr);
        if (c == 0)
            return (int)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

int qk_view_same_members(const qk_view *a, const qk_view *b)
{
    if (a == b)
        return 1;
    if (!a || !b || a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->members[i].incarnation != b->members[i].incarnation ||
            strcmp(a->members[i].addr, b->members[i].addr) != 0)
            return 0;
    return 1;
}

/* ---- wire form ---- */
