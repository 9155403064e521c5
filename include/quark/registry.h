/*
 * quark/registry.h - the actor type registry: type name <-> implementation.
 *
 * An implementation is a constant quark_actor_type. QUARK_ACTOR_TYPE() defines
 * one and registers it when the program (or shared object) loads, the C analog
 * of a module initializer, so a silo needs no list of its actor types.
 *
 * The name it registers under follows one priority rule:
 *   1. the interface's fully qualified name, when .map_to_interface is set
 *      (recommended: generated proxies send exactly that name);
 *   2. else the explicit .name;
 *   3. else the implementation's own name (the identifier given to the macro).
 *
 * A name registered twice is refused: the first registration stays, the second
 * leaves no trace, and the error (naming the name, both implementations and
 * the fix) is kept so that quark_registry_check() and every silo start fail
 * with it. Lookups in both directions are constant time and take no lock.
 */
#ifndef QUARK_REGISTRY_H
#define QUARK_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "quark/error.h"
#include "quark/interface.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest type name accepted, in bytes. Names are 1..QUARK_TYPE_NAME_MAX
 * printable ASCII characters without spaces. */
#define QUARK_TYPE_NAME_MAX 255

/* A reminder's tick, as on_reminder sees it (docs/reminders.md). */
typedef struct quark_reminder_tick {
    const char *name;          /* the reminder's name (NUL-terminated) */
    uint64_t period_ms;
    uint64_t scheduled_ms;     /* when this tick was due (ms since the epoch) */
} quark_reminder_tick;

typedef struct quark_actor_type {
    const char *impl_name;              /* the implementation's own name */
    const quark_interface *interface;   /* the interface it implements */
    const void *methods;                /* its <Service>_methods table */
    int map_to_interface;               /* register under interface->name */
    const char *name;                   /* explicit type name (rule 2) */
    size_t state_size;                  /* bytes of per-activation state, zeroed */
    /* Persistent state (docs/storage.md): the protobuf message the silo's
     * storage keeps for each actor of this type. It is loaded before the
     * activation's first turn (on_activate sees it) and written back when a
     * turn changed it, before that turn's reply leaves. NULL: the type has
     * only its in-memory state (state_size). */
    const ProtobufCMessageDescriptor *persistent;
    /* Called before the first message of an activation. A non-OK return
     * fails the triggering call with that error and leaves nothing behind. */
    quark_err (*on_activate)(quark_actor *self);
    /* Called when the activation is collected (idle, explicit, shutdown). */
    void (*on_deactivate)(quark_actor *self);
    /* A durable reminder of this actor ticked (quark_actor_reminder_set,
     * quark/actor.h): runs as a turn of the actor, activating it where it
     * lives. Persistent state it changes is stored like a method's. The
     * return value is the tick's outcome (an error is logged by the silo
     * that fired it). NULL: the type has no reminders (registering one
     * fails with QUARK_EINVAL). */
    quark_err (*on_reminder)(quark_actor *self, const quark_reminder_tick *tick);
} quark_actor_type;

/* Define the implementation `ident` and register it at load time:
 *
 *   QUARK_ACTOR_TYPE(counter_actor,
 *       .interface = &quark_examples_CounterActor_interface,
 *       .methods = &counter_methods,
 *       .map_to_interface = 1,
 *       .state_size = sizeof(struct counter));
 */
#define QUARK_ACTOR_TYPE(ident, ...)                                         \
    const quark_actor_type ident = {.impl_name = #ident, __VA_ARGS__};      \
    __attribute__((constructor)) static void quark__register_##ident(void)  \
    {                                                                        \
        quark__register_at_load(&ident);                                     \
    }

/* Register `type` now. QUARK_EDUPLICATE if its name is taken (registry
 * unchanged), QUARK_EINVAL if the descriptor is malformed (no interface, ABI
 * mismatch, bad name, methods table missing). quark_last_error() explains. */
QUARK_API quark_err quark_registry_add(const quark_actor_type *type);

/* The first error recorded by load-time registrations, or QUARK_OK. Its
 * message is available through quark_last_error() after this call. */
QUARK_API quark_err quark_registry_check(void);

/* The implementation registered under `name`, or NULL. */
QUARK_API const quark_actor_type *quark_registry_find(const char *name);

/* The name `type` is registered under, or NULL if it is not registered. */
QUARK_API const char *quark_registry_name_of(const quark_actor_type *type);

/* The name a descriptor would register under (the priority rule above). */
QUARK_API const char *quark_registry_resolve_name(const quark_actor_type *type);

typedef struct quark_registration {
    const char *name;
    const quark_actor_type *type;
} quark_registration;

/* Copy up to `cap` registrations, sorted by name, into `out`; returns how
 * many there are in all. */
QUARK_API size_t quark_registry_list(quark_registration *out, size_t cap);

/* Index of the method called `name` in `type`'s interface, or -1. */
QUARK_API int quark_registry_method_index(const quark_actor_type *type,
                                          const char *name, size_t len);

/* Used by QUARK_ACTOR_TYPE. */
QUARK_API void quark__register_at_load(const quark_actor_type *type);

#ifdef __cplusplus
}
#endif
#endif /* QUARK_REGISTRY_H */
