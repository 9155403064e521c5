/*
 * view.h - a cluster view and where actors live in it (placement, directory).
 *
 * A view is an immutable, reference-counted snapshot of the live members of
 * the cluster as one silo (or a client) sees them, with the placement state
 * built from it. Everything that routes a call reads a view: each silo
 * worker holds its own reference (swapped by a task when the view changes),
 * the cluster client's I/O thread holds one. Nothing in a view changes
 * after qk_view_new, so readers take no lock.
 *
 * Placement is an ops table: which live member should host a key
 * (consistent hashing with virtual nodes over the members' addresses:
 * adding or removing a silo moves only the keys of its arcs). Where an actor
 * lives now is the directory's business (runtime/providers.h); with the hash
 * directory it is the placement owner under the view. A view is plain data
 * and does no I/O: the membership provider that learns the members, and the
 * wire format that carries views to clients (transport/view_codec.h), are
 * elsewhere.
 */
#ifndef QK_VIEW_H
#define QK_VIEW_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define QK_ADDR_MAX 280      /* "host:port" */
#define QK_VNODES_DEFAULT 128
#define QK_VNODES_MAX 4096

typedef struct qk_view qk_view;

typedef struct qk_view_member {
    char *addr;              /* "host:port" as advertised (owned by the view) */
    uint64_t incarnation;
} qk_view_member;

typedef struct qk_placement_ops {
    const char *name;
    /* Build placement state for v's members (sorted by address). NULL on
     * out of memory. */
    void *(*build)(const qk_view *v);
    /* Index in v->members of the member that should host `key` (an actor
     * key hash, qk_key_hash), or -1 if the view is empty. */
    int (*owner)(const void *state, uint64_t key);
    void (*free)(void *state);
} qk_placement_ops;

/* Consistent hashing: v->vnodes points per member at fmix64(hash(addr, i)),
 * a key belongs to the first point at or after fmix64(key ^ seed), wrapping. */
extern const qk_placement_ops qk_placement_ring;

struct qk_view {
    _Atomic uint32_t refs;
    uint64_t version;        /* the source's version (compare only views of one source) */
    unsigned vnodes;
    size_t n;
    qk_view_member *members; /* sorted by addr (strcmp), unique */
    int self;                /* index of the local silo, -1 if not a member (clients) */
    const qk_placement_ops *placement;
    void *pstate;
};

/* A view of `n` members (copied, sorted, duplicates of one address keep the
 * highest incarnation). `self_addr` may be NULL. vnodes 0 means
 * QK_VNODES_DEFAULT; more than QK_VNODES_MAX is clamped. One reference.
 * NULL on out of memory. n may be 0 (an empty view: every owner is -1). */
qk_view *qk_view_new(const qk_view_member *members, size_t n, uint64_t version, unsigned vnodes,
                     const char *self_addr);
void qk_view_ref(qk_view *v);
void qk_view_unref(qk_view *v);          /* NULL is fine */

/* Index of `addr` in v->members, or -1. */
int qk_view_find(const qk_view *v, const char *addr);

/* The member that should host `key`: index, or -1 for an empty view. */
static inline int qk_view_owner(const qk_view *v, uint64_t key)
{
    if (!v || v->n == 0)
        return -1;
    if (v->n == 1) /* a cluster of one: no ring walk on every call */
        return 0;
    return v->placement->owner(v->pstate, key);
}

/* Do a and b list the same members with the same incarnations? */
int qk_view_same_members(const qk_view *a, const qk_view *b);

#endif /* QK_VIEW_H */
