/*
 * quark/client.h - the cluster client: connect, get actor references, call.
 *
 * A client reaches actors wherever they live. With .embedded set it calls the
 * silo in the same process; otherwise it connects to the silos listed in the
 * connection string. The calling code is the same in both cases: get a typed
 * reference from the generated helper (<Service>_ref) and call the generated
 * proxies, blocking or with a callback.
 *
 * Threads: every function here may be called from any number of application
 * threads at once. Completion callbacks run on a Quark thread: keep them
 * short and never block in them (a blocking call there returns
 * QUARK_EWOULDBLOCK). A callback of a call made from inside an actor turn runs
 * as a turn of that actor.
 *
 * Replies: a blocking call hands the reply to the caller (free it with
 * quark_msg_free); a callback borrows it until it returns.
 */
#ifndef QUARK_CLIENT_H
#define QUARK_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "quark/error.h"
#include "quark/interface.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct quark_silo quark_silo;

typedef enum quark_transport {
    QUARK_TRANSPORT_GRPC = 0, /* gRPC over HTTP/2 (the default) */
    QUARK_TRANSPORT_TCP = 1   /* Quark's framed TCP protocol */
} quark_transport;

typedef enum quark_routing {
    /* Learn the cluster's membership from the silos (WatchCluster) and send
     * each call straight to the silo that owns the actor (the default). */
    QUARK_ROUTE_OWNER = 0,
    /* Send every call to the one connected silo, which forwards what it
     * does not own (what a stock gRPC client does; one extra hop). */
    QUARK_ROUTE_PINNED = 1
} quark_routing;

typedef struct quark_retry_policy {
    unsigned max_attempts;        /* total attempts, 1 = no retry (default 3) */
    uint32_t initial_backoff_ms;  /* default 50 */
    uint32_t max_backoff_ms;      /* default 2000; jittered exponential */
} quark_retry_policy;

typedef struct quark_client_opts {
    quark_silo *embedded;           /* call this in-process silo (no network) */
    const char *connection_string;  /* "localhost:7000", comma-separated silos */
    const char *cluster_id;         /* "default" */
    const char *service_id;         /* "awesome-pizza" */
    quark_transport transport;      /* QUARK_TRANSPORT_GRPC */
    quark_retry_policy retry;
    uint32_t default_deadline_ms;   /* per call; default 30000 */
    quark_routing routing;          /* QUARK_ROUTE_OWNER */
    /* A blocking call may use a socket of its own (the calling thread
     * writes the request and reads the answer, no hand-off to the client's
     * I/O thread): at most this many per silo worker (the socket asks for
     * the actor's worker; over gRPC each is an HTTP/2 connection).
     * Calls beyond that, async calls and subscriptions share the multiplexed
     * connection. Default 4; 0 = every call on the multiplexed connection. */
    unsigned direct_sockets;
    /* A thread waiting for answers (a blocking caller, or the client's I/O
     * thread) keeps polling its sockets this long before it sleeps: an
     * answer is often a few microseconds away, and a sleeping thread takes
     * tens of microseconds to wake on a VM. A thread that finds its core
     * contended (it was preempted) stops polling for a while. Default 50;
     * 0 = sleep at once (least CPU). */
    uint32_t poll_us;
    /* A connection to a silo that has been silent this long is sent a PING
     * (default 1000 ms; 0: never), and one silent for keepalive_timeout_ms
     * (default 5000; 0: 5 x keepalive_ms) is dropped: its calls end (those
     * sent: QUARK_EUNKNOWN, or again elsewhere if idempotent) and the client
     * reconnects. A silo that froze or vanished without a reset is noticed
     * within that time, not at each call's deadline. Silos close
     * connections idle for their idle_connection_ms; the PINGs keep them. */
    uint32_t keepalive_ms;
    uint32_t keepalive_timeout_ms;
} quark_client_opts;

/* Fill `opts` with the defaults above. */
QUARK_API void quark_client_opts_init(quark_client_opts *opts);

QUARK_API quark_err quark_client_create(const quark_client_opts *opts,
                                        quark_client **out);
/* Connect (idempotent). Fails with QUARK_EUNAVAILABLE when no silo answers. */
QUARK_API quark_err quark_client_connect(quark_client *client);
/* Disconnect: calls in flight fail with QUARK_ECLOSED, later calls with
 * QUARK_ENOTCONNECTED until connect is called again. */
QUARK_API quark_err quark_client_disconnect(quark_client *client);
QUARK_API int quark_client_is_connected(const quark_client *client);
/* Disconnect and free. References made from it must be freed first. */
QUARK_API void quark_client_free(quark_client *client);

/* ---- actor references ---- */

/* A reference to actor (type, id) speaking `iface`. `type_name` NULL means
 * iface->name (an implementation mapped to the interface); pass an explicit
 * registered name to reach another implementation of the same interface.
 * The id is copied. Creating a reference never activates anything. */
QUARK_API quark_err quark_ref_new(quark_client *client, const quark_interface *iface,
                                  const char *type_name, const char *id,
                                  quark_ref **out);
QUARK_API void quark_ref_free(quark_ref *ref);
QUARK_API const char *quark_ref_id(const quark_ref *ref);
QUARK_API const char *quark_ref_type_name(const quark_ref *ref);
/* Deadline of calls made through this reference (0 = client default).
 * Set it before sharing the reference between threads. */
QUARK_API void quark_ref_set_deadline(quark_ref *ref, uint32_t ms);

/* ---- calls (the generated proxies wrap these) ---- */

/* Blocking call of method number `method` of `iface`. On success *reply (if
 * `reply` is not NULL) receives the decoded reply, owned by the caller. */
QUARK_API quark_err quark_call(quark_ref *ref, const quark_interface *iface,
                               unsigned method, const ProtobufCMessage *req,
                               ProtobufCMessage **reply);

typedef void (*quark_reply_fn)(quark_err err, const char *errmsg,
                               const ProtobufCMessage *reply, void *arg);

/* Asynchronous call: `cb` runs exactly once, with the reply or an error,
 * unless this function itself returns an error (then it never runs). */
QUARK_API quark_err quark_call_async(quark_ref *ref, const quark_interface *iface,
                                     unsigned method, const ProtobufCMessage *req,
                                     quark_reply_fn cb, void *arg);

/* ---- actor event streams ---- */

/* One event an actor published (quark_actor_publish). Valid during the
 * callback only. */
typedef struct quark_event {
    const char *actor_type;
    const char *actor_id;
    const char *event_type;   /* fully qualified message name, e.g. "quark.examples.CounterValue" */
    const uint8_t *payload;   /* the message, protobuf-encoded */
    size_t payload_len;
    uint64_t sequence;        /* per activation, increasing from 1 */
} quark_event;

/* Called with each event (ev != NULL), and exactly once more with ev == NULL
 * when the subscription ends: `end` says why (QUARK_ECLOSED after
 * quark_unsubscribe or when the silo stops, QUARK_EUNAVAILABLE when the
 * connection to the silo is lost: subscribe again to continue, QUARK_ENOTYPE
 * for an unknown type). Runs on a Quark thread. */
typedef void (*quark_event_fn)(const quark_event *ev, quark_err end, const char *errmsg,
                               void *arg);

typedef struct quark_subscription quark_subscription;

/* Subscribe to the events of actor (type_name, id). Subscribing activates
 * nothing; events flow while the actor publishes. */
QUARK_API quark_err quark_subscribe(quark_client *client, const char *type_name, const char *id,
                                    quark_event_fn fn, void *arg, quark_subscription **out);

/* End a subscription: `fn` gets its final call (QUARK_ECLOSED) soon after,
 * on a Quark thread; do not use `sub` afterwards. */
QUARK_API void quark_unsubscribe(quark_subscription *sub);

/* Free a reply received from a blocking call (NULL is fine). */
QUARK_API void quark_msg_free(void *msg);

#ifdef __cplusplus
}
#endif
#endif /* QUARK_CLIENT_H */
