/*
 * cluster.h - a silo's membership in a cluster (see cluster.c).
 */
#ifndef QK_CLUSTER_H
#define QK_CLUSTER_H

#include "runtime/runtime.h"
#include "runtime/view.h"
#include "transport/server.h"
#include "cluster/dir_cache.h"

#define QK_HOPS_MAX 2 /* a call is forwarded at most this many times */

typedef struct qk_cluster qk_cluster;

/* What a worker holds of the cluster (touched by that worker, read for
 * status). */
typedef struct qk_cl_worker {
    qk_view *view;                /* the cluster as this worker routes by (NULL: none yet) */
    void *dir;                    /* the directory's state for this worker (NULL: stopped) */
    _Atomic uint64_t forwarded;   /* calls this worker forwarded to their owner */
    /* With a directory that asks a server (Redis): */
    uint32_t gen;                 /* bumped at each view: cache entries of older ones are stale */
    bool drop_all;
    bool dir_closed;              /* the directory's worker state was detached (stopping) */
    uv_timer_t *renew;            /* renews the entries of this worker's activations */
    unsigned renewing;            /* renewal batches in flight */
    bool round_failed;            /* a batch of the current round failed */
    uint64_t round_sent;          /* when the current round began */                /* rebalancing to let go of every activation */
    qk_dir_cache cache;           /* where actors of other silos live */
    struct qk_dir_wait **waits;   /* [QK_DIR_WAIT_BUCKETS] requests in flight, by key hash */
} qk_cl_worker;

/* In quark_silo_start, after the server bound (its port is known), before
 * the workers start. */
quark_err qk_cluster_new(quark_silo *s, qk_server *server, qk_cluster **out);
/* The route port (runtime/ports.h) to plug in with the cluster as self. */
extern const qk_route_ops qk_cluster_route;
/* The server's control table (transport/server.h) over this cluster. */
qk_server_control qk_cluster_control(qk_cluster *cl);
/* After the workers started: the peer link runs, gossip begins. */
quark_err qk_cluster_start(qk_cluster *cl);
/* Graceful leave: tell the others (bounded wait for their acks). */
void qk_cluster_leave(qk_cluster *cl);
/* True when the silo must leave only after its activations are gone (a
 * directory in a server: once it left, the others may take them over);
 * false when it leaves first, so that the others route elsewhere while it
 * still forwards what reaches it (the hash directory). */
bool qk_cluster_leaves_last(const qk_cluster *cl);
/* Between the workers' stop phases: let forwarded calls finish (bounded),
 * then stop the peer link (what is left fails clearly). */
void qk_cluster_stop(qk_cluster *cl);
/* The current view, a new reference (NULL: none yet); any thread. For
 * qk_rsvc_opts.view, so its argument is a void *. */
qk_view *qk_cluster_view_ref(void *cl);
void qk_cluster_free(qk_cluster *cl);
/* quark_silo_get_status: this silo's view and counters. */
quark_err qk_cluster_status(qk_cluster *cl, quark_silo_status **out);

#endif /* QK_CLUSTER_H */
