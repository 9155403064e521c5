/*
 * remote.h - the cluster client's network side (see remote.c).
 *
 * Two users: a remote quark_client (application threads call actors of a
 * cluster; client.c), and a silo's peer link (peer mode, peer.c: the silo's
 * cluster module gossips membership and forwards calls it does not own
 * through it).
 */
#ifndef QK_REMOTE_H
#define QK_REMOTE_H

#include <uv.h>

#include "quark/quark.h"
#include "runtime/view.h"
#include "runtime/op.h"

typedef struct qk_remote qk_remote;
struct qk_worker;
struct qk_msg;

/* How a remote behaves (a client's options, or the peer link's). */
typedef struct qk_remote_cfg {
    const char *connection_string;  /* client: the silos to try first */
    const char *cluster_id;         /* NULL or "": "default" */
    const char *client_name;        /* TCP HELLO client_name */
    quark_transport transport;
    quark_routing routing;
    quark_retry_policy retry;
    unsigned direct_sockets;        /* per silo worker (0: none) */
    uint32_t poll_us;               /* the I/O thread's polling before it sleeps */
    uint32_t keepalive_ms;          /* PING a connection silent this long (0: never) */
    uint32_t keepalive_timeout_ms;  /* silent this long: lost */
    const char *cluster_key;        /* peer links: answer a silo's challenge (auth.h) */
} qk_remote_cfg;

quark_err qk_remote_new(const qk_remote_cfg *cfg, qk_remote **out);
quark_err qk_remote_connect(qk_remote *r);      /* blocks until a silo said hello, or all failed */
void qk_remote_disconnect(qk_remote *r);        /* fails what is in flight, joins the thread */
void qk_remote_free(qk_remote *r);
int qk_remote_connected(const qk_remote *r);
quark_err qk_remote_call(qk_remote *r, quark_ref *ref, const quark_interface *iface,
                         unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                         ProtobufCMessage **reply);
quark_err qk_remote_call_async(qk_remote *r, quark_ref *ref, const quark_interface *iface,
                               unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                               quark__trampoline_fn tramp, void (*fn)(void), void *arg);

typedef struct qk_rsub qk_rsub;
quark_err qk_remote_subscribe(qk_remote *r, const char *type, const char *id, quark_event_fn fn,
                              void *arg, qk_rsub **out);
void qk_remote_unsubscribe(qk_rsub *rs);

/* ---- peer mode (a silo's link to the other silos; cluster/cluster.c) ---- */

typedef struct qk_remote_hooks {
    void *arg;
    /* Every loop tick (a few ms), on the I/O thread. */
    void (*tick)(void *arg, uint64_t now_ms);
    /* Once, on the I/O thread as it stops, before its loop runs out: close
     * the handles the hooks opened on it (NULL: none). */
    void (*stop)(void *arg);
} qk_remote_hooks;

/* A peer link for `c` (TCP, no seeds: it connects to whom it sends to).
 * qk_remote_connect starts its thread and returns at once. */
quark_err qk_remote_new_peer(const qk_remote_cfg *cfg, const qk_remote_hooks *hooks,
                             qk_remote **out);
/* I/O thread only (from a hook): send a GOSSIP to addr; `answer` is
 * finished with its GOSSIP_ACK (the peer's ClusterView), or with an error if
 * addr does not answer within timeout_ms. Error: nothing was sent. */
quark_err qk_remote_gossip(qk_remote *r, const char *addr, const uint8_t *p, size_t n,
                           uint32_t timeout_ms, qk_op *answer);
/* The link's loop (its I/O thread runs it once connected). */
uv_loop_t *qk_remote_loop(qk_remote *r);
/* I/O thread only: route by this view from now on (takes the reference). */
void qk_remote_install_view(qk_remote *r, qk_view *v);
/* A worker: forward CALL `m` (which stays the caller's) to the silo `owner`;
 * `answer` is finished with the owner's answer (op.c), from the link's
 * thread. On an error nothing was started and `answer` is not finished. */
quark_err qk_remote_forward(qk_remote *r, qk_op *answer, const struct qk_msg *m,
                            const char *owner, uint32_t deadline_ms);

#endif /* QK_REMOTE_H */
