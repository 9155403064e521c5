/*
 * ports.h - what the runtime needs from the layers above it, as tables those
 * layers fill in.
 *
 * The runtime (activations, turns, calls, events, worker threads) calls
 * outward only through these tables and includes nothing of transport/ or
 * cluster/. The composition root (root/silo.c, root/client.c) creates the
 * parts and plugs them in; a test plugs in fakes (tests/runtime/
 * ports_test.c). Answers to calls do not need a table: they go through the
 * call's qk_op (op.h), which whoever started the call prepared.
 *
 * Every table's functions run on the thread named in its comment; `self` is
 * the pointer that was plugged in with the table.
 */
#ifndef QK_PORTS_H
#define QK_PORTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quark/quark.h"
#include "runtime/codec.h"

struct qk_worker;
struct qk_msg;
struct qk_sub;
struct qk_op;

/* ---- a listener: what serves the silo's network (transport/server.c) ----
 * Plugged in before the workers start (qk_silo_set_listener). A silo with a
 * listener ends its batches more often and polls its sockets before it
 * sleeps (worker.c). */
typedef struct qk_listener_ops {
    /* On worker w as its loop starts: begin serving (w->loop is running). */
    void (*worker_start)(void *self, struct qk_worker *w);
    /* Stop phase 1, on w: accept nothing more and read no new requests;
     * answers to the calls in flight still go out. */
    void (*worker_quiesce)(void *self, struct qk_worker *w);
    /* Stop phase 2, on w: write what is pending, then close. */
    void (*worker_stop)(void *self, struct qk_worker *w);
    /* On w: are connections still open? (its loop stays up to 2 s for them) */
    bool (*worker_busy)(void *self, const struct qk_worker *w);
    /* On w, at the end of each batch in which the listener called
     * qk_worker_io_pending(w): write what the batch produced. */
    void (*flush)(void *self, struct qk_worker *w);
} qk_listener_ops;

/* ---- a route: where a call runs (cluster/cluster.c) ----
 * Without one, every call runs on this silo. */
enum { QK_ROUTE_HERE = 0, QK_ROUTE_TAKEN = 1 };
typedef struct qk_route_ops {
    /* CALL m reached its owner worker w on this silo, which holds an
     * activation of its actor (`here`) or not. QK_ROUTE_HERE: run it here.
     * QK_ROUTE_TAKEN: the route took m; it answers m (qk_answer, on w) and
     * frees it, e.g. once the silo that owns the actor answered, or hands it
     * back with qk_deliver_placed. */
    int (*place)(void *self, struct qk_worker *w, struct qk_msg *m, bool here);
    /* On w, while it rebalances (qk_rebalance): may this silo keep the
     * activation of key `hash`? */
    bool (*keeps)(void *self, struct qk_worker *w, uint64_t hash);
    /* On w, optional: activation a, which the route marked (a->route_tag,
     * qk_deliver_placed), is gone (deactivated, or its activation failed);
     * its state writes are done. */
    void (*released)(void *self, struct qk_worker *w, const struct quark_actor *a);
} qk_route_ops;

/* ---- a subscriber of actor events that is not an embedded client ----
 * A network subscriber (transport/server.c) lives on its home worker (the
 * connection's); the worker that owns the actor's key sends it events
 * there. Both functions run on the home worker, in the order sent. */
typedef struct qk_sub_ops {
    /* An event for subscriber s (lent for the call). */
    void (*event)(struct qk_sub *s, const quark_event *ev);
    /* The owner let go of s: after qk_unsubscribe_remote, or because the
     * silo is stopping (then s->removed is false). No event follows; free
     * s with qk_sub_free when done with it. */
    void (*ended)(struct qk_sub *s);
} qk_sub_ops;

/* ---- a client backend: how a quark_client reaches actors ----
 * The embedded backend (runtime/call.c) calls a silo of this process; the
 * remote one (transport/client.c) the silos of a cluster. Application
 * threads call these, any number at once; quark_client_* (runtime/client.c)
 * has checked the arguments and the connection first. */
typedef struct qk_client_ops {
    const char *name;
    quark_err (*connect)(void *impl);
    void (*disconnect)(void *impl);
    int (*connected)(void *impl);
    void (*free)(void *impl);
    /* A blocking call (not on a Quark thread); deadline_ms is relative. */
    quark_err (*call)(void *impl, quark_ref *ref, const quark_interface *iface, unsigned method,
                      const ProtobufCMessage *req, uint32_t deadline_ms, ProtobufCMessage **reply);
    /* An async call: tramp(fn, ...) runs exactly once unless this fails. */
    quark_err (*call_async)(void *impl, quark_ref *ref, const quark_interface *iface,
                            unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                            quark__trampoline_fn tramp, void (*fn)(void), void *arg);
    /* Subscribe to an actor's events; *sub is what unsubscribe takes. */
    quark_err (*subscribe)(void *impl, const char *type, const char *id, quark_event_fn fn,
                           void *arg, void **sub);
    /* End one; it may come after the client (and the silo) are gone, when
     * the subscription ended already: then it only frees what is left. */
    void (*unsubscribe)(void *sub);
} qk_client_ops;

/* ---- what the runtime offers them ---- */

/* A call decoded from outside this silo's process (a connection, a peer). */
typedef struct qk_invoke_req {
    const char *type, *actor_id, *method; /* not NUL-terminated */
    size_t type_len, id_len, method_len;
    const uint8_t *args;
    size_t args_len;
    uint32_t deadline_ms;                 /* 0: the silo's default */
    const qk_chain_link *chain;
    size_t chain_len;
    uint32_t hops;                        /* times forwarded between silos */
} qk_invoke_req;

/* On worker w (the one that read it): start call `rq`, to be finished
 * through `op` (op.c's rules). On an error (unknown type or method, a bad
 * id, a chain too deep, the silo stopping, no memory) nothing is started,
 * `op` is not finished, and the error is returned (quark_last_error() says
 * more, for the caller's answer). */
quark_err qk_invoke(struct qk_worker *w, const qk_invoke_req *rq, struct qk_op *op);

/* On worker w: subscribe a subscriber of `ops` (home w) to actor (type,
 * id), under the caller's id `sub_id`. *out is the subscriber (its `ctx` is
 * the caller's to set). Error: nothing was subscribed. */
quark_err qk_subscribe_remote(struct qk_worker *w, const qk_sub_ops *ops, void *ctx,
                              uint64_t sub_id, const char *type, size_t type_len, const char *id,
                              size_t id_len, struct qk_sub **out);
/* On s's home worker: end subscription s (ended() follows). Idempotent. */
void qk_unsubscribe_remote(struct qk_sub *s);
void qk_sub_free(struct qk_sub *s);

/* A listener tells worker w, on w, that it has output to write at the end
 * of the batch: qk_worker_io_pending(w) (runtime.h, inline). */

#endif /* QK_PORTS_H */
