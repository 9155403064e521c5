/*
 * reminders_memory.c - reminders in this process (reminders.h): an array
 * per bucket of (field, due, period, hash), under one mutex. They outlive
 * activations, not the silo.
 */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/common.h"
#include "storage/reminders.h"

typedef struct mem_rem {
    char *field;                   /* qk_reminder_field */
    size_t len;
    uint64_t hash, due_ms, period_ms;
} mem_rem;

typedef struct mem_bucket {
    mem_rem *v;
    size_t n, cap;
} mem_bucket;

typedef struct rem_mem {
    uv_mutex_t mu;
    mem_bucket b[QK_REMINDER_BUCKETS];
} rem_mem;

static mem_rem *find(mem_bucket *b, const char *f, size_t len)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->v[i].len == len && !memcmp(b->v[i].field, f, len))
            return &b->v[i];
    return NULL;
}

static quark_err oom(void)
{
    return qk_error(QUARK_ENOMEM, "out of memory storing a reminder");
}

static quark_err mem_upsert(void *self, const qk_reminder *r)
{
    rem_mem *m = self;
    char *f = malloc(r->key.type_len + r->key.id_len + r->name_len + 24);
    if (!f)
        return oom();
    size_t len = qk_reminder_field(f, &r->key, r->name, r->name_len);
    mem_bucket *b = &m->b[qk_reminder_bucket(r->key.hash)];
    uv_mutex_lock(&m->mu);
    mem_rem *e = find(b, f, len);
    if (!e) {
        if (b->n == b->cap) {
            size_t cap = b->cap ? 2 * b->cap : 8;
            mem_rem *v = realloc(b->v, cap * sizeof *v);
            if (!v) {
                uv_mutex_unlock(&m->mu);
                free(f);
                return oom();
            }
            b->v = v;
            b->cap = cap;
        }
        e = &b->v[b->n++];
        e->field = f;
        e->len = len;
        f = NULL;
    }
    e->hash = r->key.hash;
    e->due_ms = r->due_ms;
    e->period_ms = r->period_ms;
    uv_mutex_unlock(&m->mu);
    free(f);
    return QUARK_OK;
}

static quark_err mem_remove(void *self, const qk_actor_key *key, const char *name,
                            size_t name_len, bool *existed)
{
    rem_mem *m = self;
    char *f = malloc(key->type_len + key->id_len + name_len + 24);
    if (!f)
        return oom();
    size_t len = qk_reminder_field(f, key, name, name_len);
    mem_bucket *b = &m->b[qk_reminder_bucket(key->hash)];
    uv_mutex_lock(&m->mu);
    mem_rem *e = find(b, f, len);
    if (e) {
        free(e->field);
        *e = b->v[--b->n];
    }
    uv_mutex_unlock(&m->mu);
    free(f);
    *existed = e != NULL;
    return QUARK_OK;
}

/* Tell fn each reminder of bucket b whose field begins with prefix[0..plen)
 * (the actor's "<type>/<id_len>:<id>", which the id's length makes
 * unambiguous; plen 0: all). */
static quark_err scan(rem_mem *m, uint32_t bi, const char *prefix, size_t plen,
                      qk_reminder_fn fn, void *arg)
{
    mem_bucket *b = &m->b[bi];
    uv_mutex_lock(&m->mu);
    for (size_t i = 0; i < b->n; i++) {
        mem_rem *e = &b->v[i];
        qk_reminder r;
        if (e->len < plen || memcmp(e->field, prefix, plen) != 0 ||
            !qk_reminder_field_parse(e->field, e->len, &r))
            continue;
        r.key.hash = e->hash;
        r.due_ms = e->due_ms;
        r.period_ms = e->period_ms;
        fn(arg, &r); /* under the lock: fn must not call the provider */
    }
    uv_mutex_unlock(&m->mu);
    return QUARK_OK;
}

static quark_err mem_list(void *self, const qk_actor_key *key, qk_reminder_fn fn, void *arg)
{
    size_t plen;
    char *p = qk_reminder_actor_prefix(key, &plen);
    if (!p)
        return oom();
    quark_err rc = scan(self, qk_reminder_bucket(key->hash), p, plen, fn, arg);
    free(p);
    return rc;
}

static quark_err mem_load_bucket(void *self, uint32_t b, qk_reminder_fn fn, void *arg)
{
    if (b >= QK_REMINDER_BUCKETS)
        return qk_error(QUARK_EINVAL, "reminder bucket %u is out of range", b);
    return scan(self, b, "", 0, fn, arg);
}

static void mem_destroy(void *self)
{
    rem_mem *m = self;
    for (unsigned i = 0; i < QK_REMINDER_BUCKETS; i++) {
        for (size_t k = 0; k < m->b[i].n; k++)
            free(m->b[i].v[k].field);
        free(m->b[i].v);
    }
    uv_mutex_destroy(&m->mu);
    free(m);
}

static const qk_reminders_ops mem_ops = {
    .name = "memory",
    .local = true,
    .upsert = mem_upsert,
    .remove = mem_remove,
    .list = mem_list,
    .load_bucket = mem_load_bucket,
    .destroy = mem_destroy,
};

quark_err qk_reminders_memory_open(const qk_reminders_ops **ops, void **self)
{
    rem_mem *m = calloc(1, sizeof *m);
    if (!m)
        return oom();
    uv_mutex_init(&m->mu);
    *ops = &mem_ops;
    *self = m;
    return QUARK_OK;
}
