/*
 * quark/cluster.h - several silos as one cluster: what a silo reports.
 *
 * Silos started with the same cluster id and seed list (quark_silo_opts
 * .seeds) form a cluster: they gossip their membership every heartbeat,
 * declare a silo dead when it has been silent for failure_timeout_ms, and
 * place every actor (type, id) on one live silo by consistent hashing. A
 * call that reaches another silo is forwarded to the owner; cluster clients
 * learn the membership and send each call straight to its owner.
 * docs/cluster.md explains the protocol and its guarantees.
 *
 * A silo's status (its view of the members, its activation count) is
 * available in process (quark_silo_get_status), over the network
 * (quark_status_fetch, or gRPC GetSiloStatus), and at every change through
 * quark_silo_opts.on_view.
 */
#ifndef QUARK_CLUSTER_H
#define QUARK_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "quark/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct quark_member {
    char *address;            /* "host:port" the silo advertises */
    uint64_t incarnation;     /* grows each time that silo (re)joins */
} quark_member;

typedef struct quark_silo_status {
    char *address;            /* the silo reporting */
    uint64_t incarnation;     /* its own incarnation */
    uint64_t view_version;    /* grows with each change of its view */
    size_t n_members;
    quark_member *members;    /* live members as it sees them, sorted by address */
    uint64_t activations;     /* live activations it hosts */
    uint64_t forwarded;       /* calls it forwarded to their owner since start */
    uint64_t handoffs;        /* network calls read by one worker thread for an actor
                               * of another since start (shard-aware TCP clients
                               * keep this near 0; stock gRPC clients cannot) */
    uint64_t uptime_ms;
} quark_silo_status;

typedef struct quark_silo quark_silo;

/* The status of a running silo of this process. Free with quark_status_free. */
QUARK_API quark_err quark_silo_get_status(quark_silo *silo, quark_silo_status **out);

/* Ask the silo at `address` ("host:port") for its status over Quark's TCP
 * protocol (blocking, at most timeout_ms; 0 = 5000). `cluster_id` NULL means
 * "default". */
QUARK_API quark_err quark_status_fetch(const char *address, const char *cluster_id,
                                       uint32_t timeout_ms, quark_silo_status **out);

QUARK_API void quark_status_free(quark_silo_status *st);

/* Write a one-line summary ("view v3 of 127.0.0.1:7001#1763800000123: 3
 * members 127.0.0.1:7000#.. ...; 120 activations") into buf. Returns what
 * snprintf returns. */
QUARK_API int quark_status_format(const quark_silo_status *st, char *buf, size_t cap);

/* Called on a Quark thread (never a worker) each time the silo's view
 * changes, and once when it starts. The status is valid during the call. */
typedef void (*quark_view_fn)(const quark_silo_status *st, void *arg);

#ifdef __cplusplus
}
#endif
#endif /* QUARK_CLUSTER_H */
