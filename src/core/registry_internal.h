/*
 * registry_internal.h - the registry's view for the runtime: an entry per
 * registered name, with the name's hash and a method-name index built once.
 */
#ifndef QK_REGISTRY_INTERNAL_H
#define QK_REGISTRY_INTERNAL_H

#include <stdint.h>

#include "quark/registry.h"

typedef struct qk_type_entry {
    const char *name; /* the registered name */
    uint32_t name_len;
    uint64_t name_hash;
    const quark_actor_type *type;
    /* The interface calls are dispatched by: the type's own, or for a type
     * with on_reminder a copy with one more method, QK_REMINDER_METHOD, at
     * index reminder_method (so a tick is a call like any other: routed,
     * forwarded, answered). */
    const quark_interface *iface;
    int reminder_method;    /* -1: none */
    uint32_t method_mask;   /* slots - 1 */
    int16_t *method_slots;  /* open addressing: method index + 1, 0 = empty */
} qk_type_entry;

/* The reserved method a reminder's tick calls (not a valid .proto rpc
 * name, so it never collides with one). */
#define QK_REMINDER_METHOD "quark.Reminder"

/* Entry registered under name[0..len), or NULL. Lock-free. */
const qk_type_entry *qk_registry_lookup(const char *name, size_t len);

/* Method index by name for an entry, or -1. */
int qk_entry_method_index(const qk_type_entry *e, const char *name, size_t len);

/* The hash a type name is registered and placed under. */
uint64_t qk_type_name_hash(const char *name, size_t len);

/* Validate an actor type name: 1..QUARK_TYPE_NAME_MAX printable, no spaces. */
int qk_type_name_valid(const char *name, size_t len);

#endif /* QK_REGISTRY_INTERNAL_H */
