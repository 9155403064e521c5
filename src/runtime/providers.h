/*
 * providers.h - the tables of the providers a silo is made of: who is in the
 * cluster (membership), where an actor lives (directory), where actor state
 * is kept (storage), and durable reminders.
 *
 * Each provider is one ops table and a `self`; adding one means writing its
 * table, and the code that uses it (the cluster module, the runtime) calls
 * only through the table. Operations that may wait for I/O are asynchronous
 * and complete through a qk_op (op.h) that the caller prepared:
 *
 *   QUARK_OK       done at once: the outputs are set, the op is NOT finished;
 *   QUARK_PENDING  started: the outputs are set before the op is finished
 *                  with the outcome (exactly once, op.c's rules);
 *   anything else  not started (the op is not finished): the error, with
 *                  quark_last_error() saying more.
 *
 * Which of these tables are filled today:
 *   membership  gossip over static seeds (cluster/gossip.c), or a table
 *               in Redis (cluster/membership_redis.c);
 *   directory   hash: the placement owner under the view
 *               (cluster/directory_hash.c); Redis (cluster/directory_redis.c);
 *   storage     memory (storage/memory.c), SQLite (storage/sqlite.c),
 *               Redis (storage/redis.c), chosen by quark_silo_opts.storage;
 *   reminders   memory, SQLite, Redis (storage/reminders*.c), chosen by
 *               quark_silo_opts.reminders; fired by runtime/reminder_service.c.
 */
#ifndef QK_PROVIDERS_H
#define QK_PROVIDERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "quark/quark.h"
#include "runtime/view.h"

struct qk_worker;
struct qk_op;

/* An actor's identity as the providers see it. */
typedef struct qk_actor_key {
    const char *type;          /* the registered type name */
    size_t type_len;
    const char *id;
    size_t id_len;
    uint64_t hash;             /* qk_key_hash(type, id): placement and worker */
} qk_actor_key;

/* ---- membership: who is in the cluster ----
 * A provider learns the live members and tells the cluster module
 * (cluster/cluster.c) with a view whenever the set changes; the module
 * publishes it to the workers, the peer link, the watching clients. It runs
 * on the cluster's thread (the peer link's I/O thread): `tick` every few
 * milliseconds, and providers that do I/O use that thread's loop. */
typedef struct qk_membership_env {
    void *arg;
    /* The live set changed: v (with self set) is the cluster module's now;
     * the provider's reference passes with it. On the cluster's thread. */
    void (*changed)(void *arg, qk_view *v);
    uv_loop_t *loop;           /* the cluster's thread's loop */
} qk_membership_env;

typedef struct qk_membership_ops {
    const char *name;
    /* Take part from now on (on the cluster's thread, before its first
     * tick). The first view may come later. */
    quark_err (*start)(void *self, const qk_membership_env *env);
    /* Every tick of the cluster's thread: heartbeats, failure detection. */
    void (*tick)(void *self, uint64_t now_ms);
    /* Leave gracefully, from the thread that stops the silo: returns once
     * the others were told this silo is leaving (or after a bound), so that
     * they route elsewhere before it refuses calls. */
    void (*leave)(void *self);
    /* This silo's incarnation (it grows when the silo refutes its death). */
    uint64_t (*incarnation)(void *self);
    /* Optional, any thread: until when (qk_now_ms_coarse) nobody can have
     * declared this silo dead: the provider's promise that the silo's
     * directory entries are still its own (0: not now). NULL for providers
     * whose view alone decides (gossip with the hash directory). */
    uint64_t (*lease_until)(void *self);
    /* Providers that talk silo to silo (gossip): a peer's message, received
     * by the server on any worker; returns the answer (malloc'd) or NULL
     * with *why. NULL for providers that do not. */
    uint8_t *(*peer_message)(void *self, const uint8_t *p, size_t n, size_t *len,
                             const char **why);
    /* On the cluster's thread as it stops (after leave, if any): close what
     * the provider opened on the loop. NULL for providers that open nothing. */
    void (*stop)(void *self);
    /* After the cluster's thread stopped. */
    void (*destroy)(void *self);
} qk_membership_ops;

/* ---- directory: where an actor lives ----
 * Consulted by the route (cluster/cluster.c) for every call a silo of a
 * cluster receives. Per worker: attach gives each worker its own state (no
 * lock on the call path); view and lookup run on that worker. */
typedef struct qk_dir_entry {
    int member;                /* index in the view it was found under (-1: none) */
    const char *silo;          /* that member's address (valid while the view is,
                                * or pointing at `where`); NULL: no entry */
    uint64_t incarnation;      /* of that silo */
    uint64_t activation;       /* which activation there (0: the directory has none) */
    char where[QK_ADDR_MAX];   /* the address, for a directory that read it from a server */
} qk_dir_entry;

typedef struct qk_directory_ops {
    const char *name;
    /* True for a directory whose answer is always the placement owner under
     * the view (hash): the route then computes it from the view it holds
     * (qk_view_owner, no call; measured: asking through the table cost ~75
     * instructions per call, 3.5% of a silo's work on a call), and lookup
     * serves only those who ask explicitly. */
    bool follows_placement;
    /* Worker w's state, before the workers start (from the thread that
     * starts the silo); detach after they stopped. */
    void *(*attach)(void *self, struct qk_worker *w);
    void (*detach)(void *self, void *pw);
    /* On w: the view calls are routed by from now on (a new reference
     * for the provider, which drops the previous one). */
    void (*set_view)(void *pw, qk_view *v);
    /* On w: where the actor of `key` lives, or is to be activated (*out).
     * The route handles a QUARK_OK answer; a QUARK_PENDING one (a directory
     * that asks a server) comes with the Redis clustering issue. */
    quark_err (*lookup)(void *pw, const qk_actor_key *key, qk_dir_entry *out,
                        struct qk_op *op);
    /* On w: register the activation of `key` on this silo, atomically: if
     * no live activation is registered (or only one on a silo membership
     * declared dead). *out: the entry that holds afterwards (this silo's,
     * or the other one, which the call must go to). */
    quark_err (*register_activation)(void *pw, const qk_actor_key *key, qk_dir_entry *out,
                                     struct qk_op *op);
    /* On w: unregister this silo's activation of `key` (`mine`, as register
     * answered it), only if it is still the registered one. */
    quark_err (*unregister_activation)(void *pw, const qk_actor_key *key,
                                       const qk_dir_entry *mine, struct qk_op *op);
    /* On w, optional (a directory whose entries expire): renew the entries
     * of n activations of this silo (keys[i], mine[i] as registered);
     * gone[i] is set true for each entry that is no longer that activation's
     * (expired, deleted, taken over), false for each renewed. */
    quark_err (*refresh)(void *pw, const qk_actor_key *keys, const qk_dir_entry *mine,
                         size_t n, bool *gone, struct qk_op *op);
    /* How often refresh must run (ms; 0: never). */
    uint32_t (*refresh_every_ms)(void *self);
} qk_directory_ops;

/* ---- storage: actor state (docs/storage.md) ----
 * Records are (key -> encoded state message, etag). A write is conditional
 * on the etag the activation read ("" for "no record yet"), so state is
 * never silently overwritten: a stale etag, or "" over an existing record,
 * is QUARK_ECONFLICT with a message naming the actor and both etags.
 * Per worker, like the directory: attach gives each worker its own state
 * (its connection, its statements), and read, write and flush run on that
 * worker. Writes a worker starts during one batch are committed together
 * when flush is called at its end (one transaction, one pipeline); the
 * answers of that batch wait for them (runtime/state.c).
 *
 * read and write answer either at once (QUARK_OK or an error, the op not
 * finished) or later (QUARK_PENDING: the op is finished, on any thread,
 * with the outcome, rec filled before). A storage that cannot be reached
 * answers QUARK_ESTORAGE and tells why. */
#define QK_ETAG_MAX 19 /* 18 characters: a version of up to 10^18 - 1 */
typedef struct qk_state_rec {
    /* In: the etag read ("" none). Out: read, the stored one ("" when there
     * is no record); write, the new one. */
    char etag[QK_ETAG_MAX];
    /* Out, read: the encoded state (len 0 when there is none). Answered at
     * once: lent until the next call on the same pw. Answered later: the
     * op's outcome carries the bytes instead (data, len). */
    const uint8_t *data;
    size_t len;
} qk_state_rec;

typedef struct qk_storage_ops {
    const char *name;                 /* "memory", "sqlite", "redis" */
    /* Worker w's state, before the workers start, from the thread that
     * starts the silo; `loop` is w's (it runs once w starts). NULL if out of
     * memory. detach after the workers stopped. */
    void *(*attach)(void *self, struct qk_worker *w, uv_loop_t *loop);
    void (*detach)(void *self, void *pw);
    /* On w: read key's record into *rec. */
    quark_err (*read)(void *pw, const qk_actor_key *key, qk_state_rec *rec, struct qk_op *op);
    /* On w: store data[0..len) as key's record if its etag is still
     * rec->etag; data NULL clears it (the record stays as an empty
     * tombstone with a new etag, so an old etag can never match again).
     * data is lent until the op is finished (or the call returns). */
    quark_err (*write)(void *pw, const qk_actor_key *key, const uint8_t *data, size_t len,
                       qk_state_rec *rec, struct qk_op *op);
    /* On w, at the end of each batch that started writes: commit them. */
    void (*flush)(void *pw);
    /* After every pw was detached. */
    void (*destroy)(void *self);
} qk_storage_ops;

/* ---- reminders: durable timers (docs/reminders.md) ----
 * A reminder (actor key, name) ticks every period from its due time until
 * it is removed. Each is kept in one of QK_REMINDER_BUCKETS buckets (the
 * key's hash modulo that), so that the silos can split the work of firing
 * them: a silo loads the buckets it is responsible for under the view.
 * Every operation blocks: a provider is used from the reminder service's
 * own thread, never from a worker. A provider that cannot reach its store
 * answers QUARK_ESTORAGE and tells why. */
#define QK_REMINDER_BUCKETS 256u

typedef struct qk_reminder {
    qk_actor_key key;          /* type, id (any bytes) and hash */
    const char *name;          /* any bytes but NUL, 1..QK_REMINDER_NAME_MAX */
    size_t name_len;
    uint64_t due_ms;           /* wall clock (ms since the epoch) of its next tick */
    uint64_t period_ms;
} qk_reminder;

#define QK_REMINDER_NAME_MAX 200

static inline uint32_t qk_reminder_bucket(uint64_t key_hash)
{
    return (uint32_t)(key_hash % QK_REMINDER_BUCKETS);
}

/* Told each reminder found (everything in r lent for the call). */
typedef void (*qk_reminder_fn)(void *arg, const qk_reminder *r);

typedef struct qk_reminders_ops {
    const char *name;
    /* The store is this process's alone (memory): the silo fires every
     * reminder in it, whatever the view (no other silo can see them). */
    bool local;
    /* Create or replace (key, name). */
    quark_err (*upsert)(void *self, const qk_reminder *r);
    /* Remove (key, name); *existed says whether it was there. */
    quark_err (*remove)(void *self, const qk_actor_key *key, const char *name, size_t name_len,
                        bool *existed);
    /* The reminders of one actor. */
    quark_err (*list)(void *self, const qk_actor_key *key, qk_reminder_fn fn, void *arg);
    /* Every reminder of bucket b. */
    quark_err (*load_bucket)(void *self, uint32_t b, qk_reminder_fn fn, void *arg);
    void (*destroy)(void *self);
} qk_reminders_ops;

#endif /* QK_PROVIDERS_H */
