/*
 * quark/silo.h - a silo: the process that hosts activations.
 *
 * A silo runs a fixed set of worker threads. Every activation (type, id)
 * lives on one worker, chosen by hashing (type, id), and each worker owns its
 * activations outright: its directory, mailboxes and timers are touched by no
 * other thread, so the call path takes no global lock. Other threads hand
 * messages to a worker through a lock-free queue and wake it only when it
 * sleeps; a call between actors of the same worker never leaves the thread.
 *
 * An activation is created by the first message to (type, id), runs one turn
 * at a time, and is collected when idle for idle_timeout_ms, when it asks
 * (quark_actor_deactivate), or when the silo stops.
 */
#ifndef QUARK_SILO_H
#define QUARK_SILO_H

#include <stddef.h>
#include <stdint.h>

#include "quark/error.h"
#include "quark/client.h"
#include "quark/cluster.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct quark_silo_opts {
    unsigned workers;             /* worker threads; 0 = online CPUs */
    uint32_t idle_timeout_ms;     /* collect activations idle this long (default 300000) */
    uint32_t default_deadline_ms; /* deadline of calls that set none (default 30000) */
    /* Network: NULL = no listener (in-process only). "HOST:PORT" serves gRPC
     * and Quark's TCP protocol on one port (told apart by their first
     * bytes); port 0 picks a free one (see quark_silo_port). */
    const char *listen;
    const char *cluster_id;       /* peers of another cluster are refused ("default") */
    /* A secret the silos of the cluster share (docs/operations.md,
     * "Security"): a connection may send cluster frames (gossip, forwarded
     * calls) only after proving it holds the key (an HMAC of a challenge;
     * the key never crosses the wire). NULL or "": no key, any connection
     * may (a trusted network only). */
    const char *cluster_key;
    size_t max_message_size;      /* larger messages are refused (default 4 MiB) */
    /* A connection whose peer leaves this many bytes of answers unread
     * stops being read until they drop below a quarter of it (default
     * 16 MiB): a slow reader costs bounded memory, never the whole silo. */
    size_t max_output_buffer;

    /* ---- limits and timeouts (docs/operations.md); 0: the default ---- */
    /* Calls queued for one activation while it runs another (default
     * 10000, at most 65535): beyond, a call is answered at once with
     * QUARK_EOVERLOAD ("actor X has N calls queued"); it did not run. */
    uint32_t max_mailbox;
    /* Calls queued on one worker, its activations together (default
     * 100000): beyond, QUARK_EOVERLOAD. With max_connection_calls this
     * bounds the silo's memory by configuration, whatever clients send. */
    uint32_t max_worker_queue;
    /* Calls in flight on one connection (default 4096): at the limit the
     * silo stops reading it (TCP pushes back on the sender) until half are
     * answered; gRPC grants at most this many streams. */
    uint32_t max_connection_calls;
    /* Open connections per silo (default 10000): one more gets GOAWAY. */
    uint32_t max_connections;
    /* A connection must finish its handshake (TCP HELLO, or the HTTP/2
     * preface and SETTINGS) this soon (default 10000 ms) ... */
    uint32_t handshake_timeout_ms;
    /* ... and a frame it started this soon (default 30000 ms) ... */
    uint32_t frame_timeout_ms;
    /* ... else it is closed, as is one with nothing in flight that sent
     * nothing (not even a PING) this long (default 300000 ms). */
    uint32_t idle_connection_ms;
    /* A worker out of work keeps polling this long before it sleeps (its
     * sockets in a silo that listens, its queue otherwise): the next call
     * is often a few microseconds away, and a sleeping thread takes tens of
     * microseconds to wake on a VM. A worker that finds its core contended
     * (it was preempted) stops polling for a while. Default 50; 0 = sleep
     * at once (least CPU when idle). */
    uint32_t poll_us;
    /* Where actors with persistent state keep it (docs/storage.md):
     * "memory" (the default, NULL too: records outlive activations, not
     * the process), "sqlite:PATH" (a file, durable on this machine). */
    const char *storage;
    /* Where durable reminders are kept (docs/reminders.md): "memory" (the
     * default, NULL too: they outlive activations, not the process),
     * "sqlite:PATH", or "redis://HOST:PORT[/DB]" (shared by the cluster:
     * each silo fires the reminders of the buckets it owns). */
    const char *reminders;
    /* The shortest period a reminder may have (default 1000 ms). */
    uint32_t reminder_min_period_ms;
    /* How often a silo reads the buckets it owns again, to learn of
     * reminders set or unset on other silos (default 1000 ms). */
    uint32_t reminder_refresh_ms;

    /* ---- cluster (quark/cluster.h, docs/cluster.md); needs .listen ---- */
    /* "H1:P1,H2:P2,...": silos to join (the list may include this one).
     * NULL: a cluster of one. */
    const char *seeds;
    /* How the silos learn who is in the cluster: NULL or "gossip" (the
     * default: they gossip, and find each other through .seeds), or
     * "redis://HOST:PORT[/DB]": a member table in that Redis server
     * (docs/cluster.md), which needs no seeds (and takes none). */
    const char *membership;
    /* Where an actor lives: NULL or "hash" (the default: on the silo the
     * placement ring names under the current view; actors move when silos
     * join or leave), or "redis://HOST:PORT[/DB]": an entry per activation
     * in that Redis server (docs/cluster.md), so an actor stays where it
     * was activated, and at most one activation serves it. Needs the same
     * Redis as .membership. */
    const char *directory;
    /* The Redis directory's entry TTL (default 300000): each silo renews its
     * activations' entries every third of it; an entry that expired or was
     * removed ends its activation. */
    uint32_t directory_ttl_ms;
    /* The address other silos and clients reach this one at; default: the
     * listen address with its bound port (a wildcard host becomes the
     * machine's host name). */
    const char *advertise;
    uint32_t heartbeat_ms;        /* gossip / Redis heartbeat period (default 500) */
    uint32_t failure_timeout_ms;  /* silent this long = dead (default 3000, >= 2 heartbeats) */
    unsigned vnodes;              /* points per silo on the placement ring (default 128) */
    quark_view_fn on_view;        /* told of every view change (optional) */
    void *on_view_arg;
} quark_silo_opts;

/* Fill `opts` with the defaults above. */
QUARK_API void quark_silo_opts_init(quark_silo_opts *opts);

/* Create a silo (threads are not started yet). Fails, with the registry's
 * message, if load-time actor registrations conflicted. */
QUARK_API quark_err quark_silo_create(const quark_silo_opts *opts, quark_silo **out);

/* Start the worker threads. */
QUARK_API quark_err quark_silo_start(quark_silo *silo);

/* Stop: refuse new calls (QUARK_ECLOSED), fail queued and waiting calls with
 * QUARK_ECLOSED, deactivate every activation (on_deactivate runs), join the
 * workers. Idempotent. Must not be called from a worker thread. */
QUARK_API quark_err quark_silo_stop(quark_silo *silo);

/* Stop if needed and free. */
QUARK_API void quark_silo_free(quark_silo *silo);

/* The TCP port the silo listens on (after start), or 0 if it does not. */
QUARK_API int quark_silo_port(const quark_silo *silo);

/* ---- diagnostics (safe from any non-worker thread; a consistent snapshot
 * of each worker, taken on that worker) ---- */

/* Number of live activations of `type_name`, or of all types if NULL. */
QUARK_API size_t quark_silo_activation_count(quark_silo *silo, const char *type_name);

typedef void (*quark_activation_fn)(const char *type_name, const char *id, void *arg);

/* Call `fn` for every live activation of `type_name` (all types if NULL),
 * after the snapshot is taken (not on a worker thread). */
QUARK_API quark_err quark_silo_list_activations(quark_silo *silo, const char *type_name,
                                                quark_activation_fn fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif /* QUARK_SILO_H */
