/*
 * membership.h - the static-seed gossip protocol's state machine: the member
 * table and who is alive (the gossip membership provider, gossip.c, runs it
 * behind the membership table of runtime/providers.h).
 *
 * It does no I/O itself: gossip.c sends what `encode` produces to the
 * addresses `targets` lists every heartbeat, feeds what it receives to
 * `receive`, calls `tick` every heartbeat, and reads the live set with
 * `view` when `receive` or `tick` report a change. Not thread-safe: the
 * caller serializes every call (one mutex).
 *
 * The gossip provider (static seeds):
 *   - every member has an entry: address, incarnation, status (ALIVE, DEAD,
 *     LEFT), when it was last heard from directly;
 *   - each heartbeat a silo sends its whole table to every live member and
 *     to every seed not known alive (that is how a silo joins, and how a
 *     restarted one rejoins); the receiver merges it and answers with its
 *     own table, so both learn;
 *   - merge, per address: the higher incarnation wins; at equal incarnation
 *     the graver status wins (LEFT > DEAD > ALIVE);
 *   - a member not heard from directly (its own gossip or its answer) for
 *     failure_timeout_ms is declared DEAD; the tombstone keeps an old
 *     incarnation from coming back through stale gossip, and is dropped after
 *     QK_TOMBSTONE_MS;
 *   - a silo that finds itself DEAD at its own incarnation (it was too slow,
 *     or partitioned) refutes it by taking a higher incarnation: it rejoins as
 *     a new incarnation; a restarted silo starts with a new (higher)
 *     incarnation anyway (the wall clock in ms at start);
 *   - leave marks the silo LEFT: after its next gossip round the others drop
 *     it at once instead of waiting for the timeout.
 */
#ifndef QK_MEMBERSHIP_H
#define QK_MEMBERSHIP_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/view.h"

#define QK_TOMBSTONE_MS 60000
/* Members a view may hold (dead and left ones included): gossip that would
 * make more is refused whole. */
#define QK_MEMBERS_MAX 1024

typedef struct qk_gossip_cfg {
    const char *cluster_id;
    const char *self_addr;        /* "host:port" as advertised */
    uint64_t incarnation;         /* > 0 */
    const char *const *seeds;     /* "host:port" each; may include self_addr */
    size_t nseeds;
    uint32_t heartbeat_ms;        /* gossip period */
    uint32_t failure_timeout_ms;  /* silence that makes a member DEAD */
    unsigned vnodes;              /* carried in every view */
} qk_gossip_cfg;

typedef struct qk_gossip_ops {
    const char *name;
    /* A new provider state, self ALIVE. NULL on out of memory or bad cfg. */
    void *(*create)(const qk_gossip_cfg *cfg, uint64_t now_ms);
    void (*destroy)(void *self);
    /* Merge a ClusterView received from a peer (its gossip, or its answer to
     * ours). 1 if the live set changed, 0 if not, -1 if the bytes are not a
     * ClusterView or come from another cluster (*why says which). */
    int (*receive)(void *self, const uint8_t *p, size_t n, uint64_t now_ms, const char **why);
    /* Periodic: failure detection, tombstone expiry. 1 if the live set changed. */
    int (*tick)(void *self, uint64_t now_ms);
    /* This silo's gossip: a ClusterView of every entry with its status
     * (malloc'd; NULL on out of memory). */
    uint8_t *(*encode)(void *self, size_t *len);
    /* Addresses to send gossip to now (pointers valid until the next call
     * that changes the provider). Returns how many, at most cap. */
    size_t (*targets)(void *self, const char **out, size_t cap);
    /* Leave gracefully (the next encode says LEFT; receive no longer refutes). */
    void (*leave)(void *self);
    /* The live members (a new reference, self set). NULL on out of memory. */
    qk_view *(*view)(void *self);
    /* This silo's current incarnation (it grows when it refutes a death). */
    uint64_t (*incarnation)(void *self);
} qk_gossip_ops;

extern const qk_gossip_ops qk_gossip_table;

#endif /* QK_MEMBERSHIP_H */
