/*
 * registry.c - actor type registry: name <-> implementation, lock-free reads.
 *
 * Writers (load-time constructors, quark_registry_add) serialize on a mutex
 * and publish a new immutable snapshot through one atomic pointer; readers
 * (every call that resolves a type) load that pointer and probe two open-
 * addressing tables, by name and by descriptor address. Entries are shared by
 * all snapshots and live until the process exits; registrations are few, so
 * copying a snapshot per registration costs nothing that matters.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "hash.h"
#include "registry_internal.h"
#include "quark/reminder.pb-c.h"

#define QK_NAME_SEED 0x51a7c0de5eedull

typedef struct qk_snapshot {
    struct qk_snapshot *retired_next; /* chain of old snapshots, freed at exit */
    size_t count;
    size_t mask;               /* slots - 1 */
    qk_type_entry **by_name;   /* slots */
    qk_type_entry **by_type;   /* slots */
    qk_type_entry **list;      /* count entries, sorted by name */
} qk_snapshot;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(qk_snapshot *) g_snap;
static qk_snapshot *g_retired;
static quark_err g_load_err = QUARK_OK;
static char g_load_msg[512];

static uint64_t ptr_hash(const void *p)
{
    return qk_fmix64((uint64_t)(uintptr_t)p);
}

uint64_t qk_type_name_hash(const char *name, size_t len)
{
    return qk_hash(name, len, QK_NAME_SEED);
}

int qk_type_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > QUARK_TYPE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= 0x20 || c >= 0x7f)
            return 0;
    }
    return 1;
}

const char *quark_registry_resolve_name(const quark_actor_type *t)
{
    if (!t)
        return NULL;
    if (t->map_to_interface && t->interface)
        return t->interface->name;
    if (t->name)
        return t->name;
    return t->impl_name;
}

static const qk_type_entry *snap_find(const qk_snapshot *s, const char *name,
                                      size_t len, uint64_t h)
{
    if (!s)
        return NULL;
    for (size_t i = h & s->mask;; i = (i + 1) & s->mask) {
        const qk_type_entry *e = s->by_name[i];
        if (!e)
            return NULL;
        if (e->name_hash == h && e->name_len == len && memcmp(e->name, name, len) == 0)
            return e;
    }
}

const qk_type_entry *qk_registry_lookup(const char *name, size_t len)
{
    const qk_snapshot *s = atomic_load_explicit(&g_snap, memory_order_acquire);
    return snap_find(s, name, len, qk_hash(name, len, QK_NAME_SEED));
}

static const qk_type_entry *snap_find_type(const qk_snapshot *s, const quark_actor_type *t)
{
    if (!s)
        return NULL;
    for (size_t i = ptr_hash(t) & s->mask;; i = (i + 1) & s->mask) {
        const qk_type_entry *e = s->by_type[i];
        if (!e)
            return NULL;
        if (e->type == t)
            return e;
    }
}

const quark_actor_type *quark_registry_find(const char *name)
{
    if (!name)
        return NULL;
    const qk_type_entry *e = qk_registry_lookup(name, strlen(name));
    return e ? e->type : NULL;
}

const char *quark_registry_name_of(const quark_actor_type *type)
{
    const qk_snapshot *s = atomic_load_explicit(&g_snap, memory_order_acquire);
    const qk_type_entry *e = type ? snap_find_type(s, type) : NULL;
    return e ? e->name : NULL;
}

int qk_entry_method_index(const qk_type_entry *e, const char *name, size_t len)
{
    const quark_interface *ifc = e->iface;
    for (uint32_t i = (uint32_t)qk_hash(name, len, QK_NAME_SEED) & e->method_mask;;
         i = (i + 1) & e->method_mask) {
        int slot = e->method_slots[i];
        if (slot == 0)
            return -1;
        const char *m = ifc->methods[slot - 1].name;
        if (strncmp(m, name, len) == 0 && m[len] == '\0')
            return slot - 1;
    }
}

int quark_registry_method_index(const quark_actor_type *type, const char *name, size_t len)
{
    const qk_snapshot *s = atomic_load_explicit(&g_snap, memory_order_acquire);
    const qk_type_entry *e = (type && name) ? snap_find_type(s, type) : NULL;
    return e ? qk_entry_method_index(e, name, len) : -1;
}

static int cmp_entry(const void *a, const void *b)
{
    const qk_type_entry *x = *(qk_type_entry *const *)a, *y = *(qk_type_entry *const *)b;
    return strcmp(x->name, y->name);
}

size_t quark_registry_list(quark_registration *out, size_t cap)
{
    const qk_snapshot *s = atomic_load_explicit(&g_snap, memory_order_acquire);
    if (!s)
        return 0;
    for (size_t i = 0; i < s->count && i < cap && out; i++) {
        out[i].name = s->list[i]->name;
        out[i].type = s->list[i]->type;
    }
    return s->count;
}

/* Validate a descriptor; on failure write the reason into msg. */
static quark_err validate(const quark_actor_type *t, char *msg, size_t cap)
{
    if (!t) {
        snprintf(msg, cap, "quark_registry_add: type is NULL");
        return QUARK_EINVAL;
    }
    const char *impl = t->impl_name ? t->impl_name : "(unnamed)";
    if (!t->interface) {
        snprintf(msg, cap, "actor implementation '%s' has no .interface: set it to the "
                 "generated <Service>_interface it implements", impl);
        return QUARK_EINVAL;
    }
    if (t->interface->abi != QUARK_GEN_ABI) {
        snprintf(msg, cap, "actor implementation '%s': interface '%s' was generated for "
                 "ABI %u but this libquark speaks ABI %u; regenerate it with this "
                 "version's protoc-gen-quark", impl, t->interface->name,
                 t->interface->abi, (unsigned)QUARK_GEN_ABI);
        return QUARK_EINVAL;
    }
    if (!t->methods) {
        snprintf(msg, cap, "actor implementation '%s' has no .methods table for "
                 "interface '%s'", impl, t->interface->name);
        return QUARK_EINVAL;
    }
    const char *name = quark_registry_resolve_name(t);
    if (!name || !qk_type_name_valid(name, strlen(name))) {
        snprintf(msg, cap, "actor implementation '%s': type name '%s' is invalid (1..%d "
                 "printable ASCII characters, no spaces)", impl, name ? name : "(null)",
                 QUARK_TYPE_NAME_MAX);
        return QUARK_EINVAL;
    }
    return QUARK_OK;
}

static qk_type_entry *entry_new(const quark_actor_type *t)
{
    const char *name = quark_registry_resolve_name(t);
    const quark_interface *ifc = t->interface;
    unsigned n = ifc->n_methods + (t->on_reminder ? 1u : 0u);
    uint32_t slots = 4;
    while (slots < n * 2u)
        slots *= 2;
    qk_type_entry *e = calloc(1, sizeof *e);
    int16_t *ms = calloc(slots, sizeof *ms);
    if (!e || !ms) {
        free(e);
        free(ms);
        return NULL;
    }
    e->reminder_method = -1;
    if (t->on_reminder) {
        /* The interface with the reminder's method after the type's own. */
        quark_interface *own = calloc(1, sizeof *own);
        quark_method_desc *md = calloc(n, sizeof *md);
        if (!own || !md) {
            free(own);
            free(md);
            free(e);
            free(ms);
            return NULL;
        }
        memcpy(md, ifc->methods, ifc->n_methods * sizeof *md);
        md[ifc->n_methods] = (quark_method_desc){.name = QK_REMINDER_METHOD,
                                                 .input = &quark__reminder_tick__descriptor,
                                                 .output = &quark__reminder_tick_reply__descriptor};
        *own = *ifc;
        own->n_methods = n;
        own->methods = md;
        e->reminder_method = (int)ifc->n_methods;
        ifc = own;
    }
    e->name = name;
    e->name_len = (uint32_t)strlen(name);
    e->name_hash = qk_hash(name, e->name_len, QK_NAME_SEED);
    e->type = t;
    e->iface = ifc;
    e->method_mask = slots - 1;
    e->method_slots = ms;
    for (unsigned m = 0; m < n; m++) {
        const char *mn = ifc->methods[m].name;
        uint32_t i = (uint32_t)qk_hash(mn, strlen(mn), QK_NAME_SEED) & e->method_mask;
        while (ms[i])
            i = (i + 1) & e->method_mask;
        ms[i] = (int16_t)(m + 1);
    }
    return e;
}

/* Build a snapshot of `old` plus `add`. */
static qk_snapshot *snap_with(const qk_snapshot *old, qk_type_entry *add)
{
    size_t count = (old ? old->count : 0) + 1;
    size_t slots = 8;
    while (slots < count * 2)
        slots *= 2;
    qk_snapshot *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->by_name = calloc(slots, sizeof *s->by_name);
    s->by_type = calloc(slots, sizeof *s->by_type);
    s->list = calloc(count, sizeof *s->list);
    if (!s->by_name || !s->by_type || !s->list) {
        free(s->by_name);
        free(s->by_type);
        free(s->list);
        free(s);
        return NULL;
    }
    s->mask = slots - 1;
    for (size_t i = 0; old && i < old->count; i++)
        s->list[s->count++] = old->list[i];
    s->list[s->count++] = add;
    qsort(s->list, s->count, sizeof *s->list, cmp_entry);
    for (size_t k = 0; k < s->count; k++) {
        qk_type_entry *e = s->list[k];
        size_t i = e->name_hash & s->mask;
        while (s->by_name[i])
            i = (i + 1) & s->mask;
        s->by_name[i] = e;
        i = ptr_hash(e->type) & s->mask;
        while (s->by_type[i])
            i = (i + 1) & s->mask;
        s->by_type[i] = e;
    }
    return s;
}

static quark_err add_locked(const quark_actor_type *t, char *msg, size_t cap)
{
    quark_err rc = validate(t, msg, cap);
    if (rc != QUARK_OK)
        return rc;
    qk_snapshot *old = atomic_load_explicit(&g_snap, memory_order_relaxed);
    const char *name = quark_registry_resolve_name(t);
    size_t len = strlen(name);
    const qk_type_entry *have = snap_find(old, name, len, qk_hash(name, len, QK_NAME_SEED));
    if (have) {
        if (have->type == t)
            return QUARK_OK; /* the same descriptor again: nothing to do */
        snprintf(msg, cap,
                 "actor type name '%s' is already registered for implementation '%s'; "
                 "cannot register it again for implementation '%s'. Give one of them a "
                 "unique explicit name (.name = \"UniqueName\" without .map_to_interface)",
                 name, have->type->impl_name ? have->type->impl_name : "(unnamed)",
                 t->impl_name ? t->impl_name : "(unnamed)");
        return QUARK_EDUPLICATE;
    }
    if (snap_find_type(old, t)) {
        snprintf(msg, cap, "actor implementation '%s' is already registered under "
                 "another name", t->impl_name ? t->impl_name : "(unnamed)");
        return QUARK_EDUPLICATE;
    }
    qk_type_entry *e = entry_new(t);
    qk_snapshot *s = e ? snap_with(old, e) : NULL;
    if (!s) {
        if (e) {
            if (e->iface != t->interface) { /* the copy with the reminder's method */
                free((void *)e->iface->methods);
                free((void *)e->iface);
            }
            free(e->method_slots);
            free(e);
        }
        snprintf(msg, cap, "out of memory registering actor type '%s'", name);
        return QUARK_ENOMEM;
    }
    atomic_store_explicit(&g_snap, s, memory_order_release);
    if (old) {
        old->retired_next = g_retired;
        g_retired = old;
    }
    return QUARK_OK;
}

quark_err quark_registry_add(const quark_actor_type *type)
{
    char msg[512];
    pthread_mutex_lock(&g_lock);
    quark_err rc = add_locked(type, msg, sizeof msg);
    pthread_mutex_unlock(&g_lock);
    if (rc != QUARK_OK)
        return qk_error_str(rc, msg);
    qk_error_clear();
    return QUARK_OK;
}

void quark__register_at_load(const quark_actor_type *type)
{
    char msg[512];
    pthread_mutex_lock(&g_lock);
    quark_err rc = add_locked(type, msg, sizeof msg);
    if (rc != QUARK_OK && g_load_err == QUARK_OK) {
        g_load_err = rc;
        memcpy(g_load_msg, msg, sizeof g_load_msg);
    }
    pthread_mutex_unlock(&g_lock);
}

quark_err quark_registry_check(void)
{
    pthread_mutex_lock(&g_lock);
    quark_err rc = g_load_err;
    char msg[512];
    memcpy(msg, g_load_msg, sizeof msg);
    pthread_mutex_unlock(&g_lock);
    if (rc != QUARK_OK)
        return qk_error(rc, "actor registration at load time failed: %s", msg);
    qk_error_clear();
    return QUARK_OK;
}

/* Nothing is freed at exit: every snapshot and entry stays reachable from
 * g_snap / g_retired (so leak checkers are quiet), and a worker thread still
 * resolving a type while the process exits never touches freed memory. */
