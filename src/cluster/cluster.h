/*
 * cluster.h - a silo's membership in a cluster (see cluster.c).
 */
#ifndef QK_CLUSTER_H
#define QK_CLUSTER_H

#include "runtime/runtime.h"
#include "cluster/view.h"

#define QK_HOPS_MAX 2 /* a call is forwarded at most this many times */

typedef struct qk_cluster qk_cluster;

/* In quark_silo_start, after binding (the port is known), before workers. */
quark_err qk_cluster_create(quark_silo *s);
/* After the workers started: the peer link runs, gossip begins. */
quark_err qk_cluster_start(quark_silo *s);
/* Graceful leave: tell the others (bounded wait for their acks). */
void qk_cluster_leave(quark_silo *s);
/* Between the workers' stop phases: let forwarded calls finish (bounded),
 * then stop the peer link (what is left fails clearly). */
void qk_cluster_stop(quark_silo *s);
void qk_cluster_free(quark_silo *s);

/* A worker delivering CALL m owned by member `owner` of w->view. */
void qk_cluster_forward(qk_worker *w, qk_msg *m, int owner);

/* Server side (any worker): a peer's gossip; returns this silo's answer
 * (malloc'd ClusterView) or NULL with *why. */
uint8_t *qk_cluster_gossip_in(quark_silo *s, const uint8_t *p, size_t n, size_t *len,
                              const char **why);
/* The view for clients (WatchCluster), encoded from w->view (NULL if none). */
uint8_t *qk_cluster_view_for_clients(qk_worker *w, size_t *len);
/* The address this silo goes by in views (its advertised address; "" when
 * it has no cluster). Clients match connections to view members by it. */
const char *qk_cluster_self(const quark_silo *s);
/* SiloStatus, encoded (malloc'd). */
uint8_t *qk_cluster_status_pack(quark_silo *s, size_t *len);

#endif /* QK_CLUSTER_H */
