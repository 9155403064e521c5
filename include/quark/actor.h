/*
 * quark/actor.h - what an actor implementation can do from inside a turn.
 *
 * A turn is one message being handled by one activation: a method call, a
 * timer tick, or the completion of a call the actor made. An activation runs
 * one turn at a time on the worker thread it lives on, so its state needs no
 * locks. Methods marked read-only may interleave with each other while one of
 * them waits for a deferred reply.
 *
 * A method returns QUARK_OK after filling its reply, an error code (with a
 * message from quark_actor_fail), or QUARK_PENDING after quark_actor_defer():
 * it then keeps the quark_deferred handle and replies later, typically from the
 * completion of a call it made to another actor or from a timer tick. Until
 * it replies, its activation takes no other incoming non-read-only call, yet
 * the worker thread is free: nothing blocks. The actor's own work (timer
 * ticks, completions of calls it made) still runs as turns meanwhile, one at
 * a time.
 *
 * Every function here must be called on the activation's own turn (from its
 * methods, hooks, timer ticks or call completions), except where noted.
 */
#ifndef QUARK_ACTOR_H
#define QUARK_ACTOR_H

#include <stddef.h>
#include <stdint.h>

#include "quark/error.h"
#include "quark/interface.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest actor id accepted, in bytes. Ids are 1..QUARK_ID_MAX bytes of any
 * value except NUL. */
#define QUARK_ID_MAX 256

/* The activation's state: state_size zeroed bytes, allocated with it. */
QUARK_API void *quark_actor_state(quark_actor *self);

/* Its id (NUL-terminated) and the registered type name. */
QUARK_API const char *quark_actor_id(const quark_actor *self);
QUARK_API const char *quark_actor_type_name(const quark_actor *self);

/* A client for calling other actors from this one. Calls made during a turn
 * belong to this activation: their completions run as turns of it, and
 * cycles (A -> B -> A) fail with QUARK_ECYCLE instead of deadlocking. */
QUARK_API quark_client *quark_actor_client(quark_actor *self);

/* Memory that lives until the current turn returns (for reply strings and
 * bytes). NULL if out of memory. */
QUARK_API void *quark_actor_alloc(quark_actor *self, size_t size);

/* Record an error message for the current method and return `err`:
 *   return quark_actor_fail(self, QUARK_EACTOR, "balance %d too low", b); */
QUARK_API quark_err quark_actor_fail(quark_actor *self, quark_err err,
                                     const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Take the reply handle of the method being run; the method then returns
 * QUARK_PENDING and replies later with quark_reply()/quark_reply_error().
 * The request message is freed when the method returns: copy what you need. */
QUARK_API quark_deferred *quark_actor_defer(quark_actor *self);

/* Send the reply of a deferred call (exactly once; the handle is then gone).
 * A reply after the call's deadline is dropped. Callable from any turn of the
 * activation that deferred it. */
QUARK_API quark_err quark_reply(quark_deferred *call, const ProtobufCMessage *reply);
QUARK_API quark_err quark_reply_error(quark_deferred *call, quark_err err,
                                      const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Ask for this activation to be deactivated once its current turn (and any
 * deferred reply) is done; on_deactivate runs, the next call re-activates. */
QUARK_API void quark_actor_deactivate(quark_actor *self);

/* Publish `event` to the subscribers of this actor (quark_subscribe, gRPC
 * StreamActorEvents). Cheap when nobody listens. */
QUARK_API quark_err quark_actor_publish(quark_actor *self, const ProtobufCMessage *event);

/* ---- persistent state (types with .persistent; docs/storage.md) ----
 * The silo's storage keeps one record per actor: its persistent state
 * message and an ETag. The record is read before the activation's first
 * turn; a turn that changes the state says so, and at the end of the
 * worker's batch every changed state is written (one transaction or one
 * pipeline for the whole batch). A reply leaves only once the state it
 * may depend on is durable: the reply of the turn that changed it, and of
 * any turn after it (write-before-ack). Methods marked @quark.write_behind
 * reply at once instead; their change is written all the same.
 *
 * A write is conditional on the ETag that was read. When it fails (another
 * writer changed the record: QUARK_ECONFLICT; storage failed or is down:
 * QUARK_ESTORAGE) the replies waiting for it get that error, and the
 * activation is deactivated without its unstored change: the next call
 * reloads the record. Stored state is never silently overwritten. */

/* The activation's persistent state: the message as loaded (a message with
 * default values when nothing is stored), to read and change in place.
 * Generated code offers it typed (<Service>_state(self) for a service
 * annotated @quark.state). NULL if the type has no persistent state.
 * Change scalar fields in place; pointer fields (strings, bytes, repeated,
 * sub-messages) must point to memory from quark_actor_state_alloc (or to
 * constants), or replace the whole message with quark_actor_state_set. */
QUARK_API ProtobufCMessage *quark_actor_persistent(quark_actor *self);

/* Say that the current turn changed the persistent state. */
QUARK_API void quark_actor_state_changed(quark_actor *self);

/* Replace the persistent state with a copy of `msg` (of the type's
 * persistent message; it may live in turn memory) and mark it changed. */
QUARK_API quark_err quark_actor_state_set(quark_actor *self, const ProtobufCMessage *msg);

/* Clear the persistent state: the state becomes the default message and
 * the stored record is deleted (when the batch's writes are committed, as
 * for a change). */
QUARK_API void quark_actor_state_clear(quark_actor *self);

/* Memory that lives as long as the persistent state it is linked into
 * (until quark_actor_state_set or _clear replaces it, or the activation
 * ends): for pointer fields changed in place. NULL if out of memory. */
QUARK_API void *quark_actor_state_alloc(quark_actor *self, size_t size);

/* The ETag of the stored record this activation holds (after its last
 * write), "" when there is none. Never NULL. */
QUARK_API const char *quark_actor_state_etag(const quark_actor *self);

/* ---- timers ---- */
typedef struct quark_timer quark_timer;
typedef void (*quark_timer_fn)(quark_actor *self, void *arg);

/* Run `fn` as a turn of this activation after `due_ms`, then every
 * `period_ms` (0: once). Ticks run even while a call is deferred (see the top
 * of this file). Timers die with their activation and do not keep it alive:
 * only calls count as use for idle collection. `out` may be NULL. */
QUARK_API quark_err quark_actor_timer_start(quark_actor *self, uint64_t due_ms,
                                            uint64_t period_ms, quark_timer_fn fn,
                                            void *arg, quark_timer **out);

/* Stop a timer (also from its own tick). A one-shot timer that has fired is
 * already gone: do not stop it again. */
QUARK_API void quark_timer_stop(quark_timer *timer);

/* ---- durable reminders (docs/reminders.md) ----
 * A reminder is a named durable timer of an actor: it ticks every period
 * from its due time until it is unset, outliving the activation, a crash
 * of its silo and a restart of the cluster. Each tick is a turn of the
 * actor, on the silo where it lives (activating it there if it has no
 * activation): the type's on_reminder (quark/registry.h), which a type
 * must have to set reminders. Ticks missed while no silo could fire them
 * (the cluster was down, the owner of its bucket had just died) are not
 * replayed: the next tick is the first due time after now, never a burst.
 *
 * The silo's reminder store (quark_silo_opts.reminders) keeps them: set,
 * unset and list reach it from the silo's reminder service (never from a
 * worker), and `done` runs as a turn of this activation once the store
 * answered (like the completion of a call the actor made; it keeps the
 * activation alive meanwhile). A method that must not reply before its
 * reminder is stored defers its reply and replies from `done`. */
typedef void (*quark_reminder_fn)(quark_actor *self, quark_err err, const char *errmsg,
                                  void *arg);

/* Longest reminder name, in bytes (1..this, any bytes but NUL). */
#define QUARK_REMINDER_NAME_MAX 200

/* Create or replace this actor's reminder `name`: first tick in due_ms,
 * then every period_ms (>= the silo's reminder_min_period_ms, 1000 by
 * default). `done` (may be NULL) gets QUARK_OK once it is stored, or the
 * store's error (QUARK_ESTORAGE: it may or may not be stored; retry).
 * Returns an error (done never runs) for a bad argument, outside a turn,
 * a type without on_reminder, or a stopping silo. */
QUARK_API quark_err quark_actor_reminder_set(quark_actor *self, const char *name, uint64_t due_ms,
                                             uint64_t period_ms, quark_reminder_fn done,
                                             void *arg);

/* Remove this actor's reminder `name` (no error if there is none): no tick
 * starts after `done` got QUARK_OK. (On a cluster, the silo that fires it
 * may be another: it learns within reminder_refresh_ms.) */
QUARK_API quark_err quark_actor_reminder_unset(quark_actor *self, const char *name,
                                               quark_reminder_fn done, void *arg);

typedef struct quark_reminder_info {
    const char *name;
    uint64_t due_ms;           /* its first due time (ms since the epoch) */
    uint64_t period_ms;
} quark_reminder_info;

typedef void (*quark_reminder_list_fn)(quark_actor *self, quark_err err, const char *errmsg,
                                       const quark_reminder_info *list, size_t n, void *arg);

/* This actor's reminders, to `fn` as a turn of this activation (everything
 * lent for the call). */
QUARK_API quark_err quark_actor_reminder_list(quark_actor *self, quark_reminder_list_fn fn,
                                              void *arg);

#ifdef __cplusplus
}
#endif
#endif /* QUARK_ACTOR_H */
