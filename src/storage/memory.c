/*
 * memory.c - the memory storage: records kept in this process.
 *
 * What a silo uses when no storage is configured: persistent state then
 * outlives deactivations (idle collection, a failed write, a rebalance
 * within the silo) but not the process. Same rules as every provider
 * (etags, conflicts, tombstones), answered at once. The table is split in
 * stripes, each with its own lock: workers own disjoint keys, so stripes
 * are hardly ever contended.
 */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "core/common.h"
#include "core/hash.h"
#include "storage/storage.h"

#define STRIPES 64

typedef struct rec {
    struct rec *next;
    uint64_t hash;
    unsigned long long version;
    uint8_t *data;             /* NULL: a tombstone (cleared) */
    size_t len;
    size_t type_len, id_len;
    char key[];                /* type, then id */
} rec;

typedef struct stripe {
    uv_mutex_t mu;
    rec **buckets;
    size_t mask, count;
} stripe;

typedef struct mem {
    stripe s[STRIPES];
} mem;

typedef struct mem_pw {
    mem *m;
    uint8_t *scratch;          /* a read's bytes, lent until the next call */
    size_t cap;
} mem_pw;

static uint64_t key_hash(const qk_actor_key *k)
{
    return qk_hash(k->id, k->id_len, qk_hash(k->type, k->type_len, 0x73746f7265ull));
}

static stripe *stripe_of(mem *m, uint64_t h)
{
    return &m->s[h % STRIPES];
}

static rec **find(stripe *st, const qk_actor_key *k, uint64_t h)
{
    rec **pp = &st->buckets[(h / STRIPES) & st->mask];
    for (; *pp; pp = &(*pp)->next) {
        rec *r = *pp;
        if (r->hash == h && r->type_len == k->type_len && r->id_len == k->id_len &&
            memcmp(r->key, k->type, k->type_len) == 0 &&
            memcmp(r->key + k->type_len, k->id, k->id_len) == 0)
            return pp;
    }
    return pp;
}

static int grow(stripe *st)
{
    size_t ncap = (st->mask + 1) * 2;
    rec **nb = calloc(ncap, sizeof *nb);
    if (!nb)
        return -1;
    for (size_t i = 0; i <= st->mask; i++) {
        rec *r = st->buckets[i];
        while (r) {
            rec *n = r->next;
            size_t j = (r->hash / STRIPES) & (ncap - 1);
            r->next = nb[j];
            nb[j] = r;
            r = n;
        }
    }
    free(st->buckets);
    st->buckets = nb;
    st->mask = ncap - 1;
    return 0;
}

static void *mem_attach(void *self, struct qk_worker *w, uv_loop_t *loop)
{
    (void)w;
    (void)loop;
    mem_pw *pw = calloc(1, sizeof *pw);
    if (pw)
        pw->m = self;
    return pw;
}

static void mem_detach(void *self, void *p)
{
    (void)self;
    mem_pw *pw = p;
    free(pw->scratch);
    free(pw);
}

static quark_err mem_read(void *p, const qk_actor_key *k, qk_state_rec *out, struct qk_op *op)
{
    (void)op;
    mem_pw *pw = p;
    uint64_t h = key_hash(k);
    stripe *st = stripe_of(pw->m, h);
    quark_err rc = QUARK_OK;
    uv_mutex_lock(&st->mu);
    rec *r = *find(st, k, h);
    out->data = NULL;
    out->len = 0;
    qk_etag_of_version(out->etag, r ? r->version : 0);
    if (r && r->data && r->len) {
        if (r->len > pw->cap) {
            uint8_t *nb = realloc(pw->scratch, r->len);
            if (!nb) {
                rc = qk_error(QUARK_ENOMEM, "out of memory reading the state of %.*s '%.*s'",
                              (int)k->type_len, k->type, (int)k->id_len, k->id);
                goto out;
            }
            pw->scratch = nb;
            pw->cap = r->len;
        }
        memcpy(pw->scratch, r->data, r->len);
        out->data = pw->scratch;
        out->len = r->len;
    }
out:
    uv_mutex_unlock(&st->mu);
    return rc;
}

static quark_err mem_write(void *p, const qk_actor_key *k, const uint8_t *data, size_t len,
                           qk_state_rec *io, struct qk_op *op)
{
    (void)op;
    mem_pw *pw = p;
    uint64_t h = key_hash(k);
    stripe *st = stripe_of(pw->m, h);
    uint8_t *copy = NULL;
    if (data && !(copy = malloc(len ? len : 1)))
        return qk_error(QUARK_ENOMEM, "out of memory storing the state of %.*s '%.*s'",
                        (int)k->type_len, k->type, (int)k->id_len, k->id);
    if (data)
        memcpy(copy, data, len);
    quark_err rc = QUARK_OK;
    uv_mutex_lock(&st->mu);
    rec **pp = find(st, k, h);
    rec *r = *pp;
    char have[QK_ETAG_MAX];
    qk_etag_of_version(have, r ? r->version : 0);
    if (strcmp(have, io->etag) != 0) {
        rc = qk_error(QUARK_ECONFLICT, "%.*s '%.*s': the stored state has etag '%s' but this "
                      "write expected '%s' (another activation wrote it)",
                      (int)k->type_len, k->type, (int)k->id_len, k->id, have, io->etag);
        free(copy);
        goto out;
    }
    if (!r) {
        if (!data) /* clearing what was never stored */
            goto out;
        if ((st->count + 1) > (st->mask + 1) * 2 && grow(st) != 0)
            goto oom;
        pp = find(st, k, h);
        if (!(r = malloc(sizeof *r + k->type_len + k->id_len)))
            goto oom;
        r->hash = h;
        r->version = 0;
        r->type_len = k->type_len;
        r->id_len = k->id_len;
        memcpy(r->key, k->type, k->type_len);
        memcpy(r->key + k->type_len, k->id, k->id_len);
        r->data = NULL;
        r->next = NULL;
        *pp = r;
        st->count++;
    }
    free(r->data);
    r->data = copy;
    r->len = data ? len : 0;
    r->version++;
    qk_etag_of_version(io->etag, r->version);
    goto out;
oom:
    free(copy);
    rc = qk_error(QUARK_ENOMEM, "out of memory storing the state of %.*s '%.*s'",
                  (int)k->type_len, k->type, (int)k->id_len, k->id);
out:
    uv_mutex_unlock(&st->mu);
    return rc;
}

static void mem_flush(void *p)
{
    (void)p; /* every write is done at once */
}

static void mem_destroy(void *self)
{
    mem *m = self;
    for (int i = 0; i < STRIPES; i++) {
        stripe *st = &m->s[i];
        for (size_t j = 0; j <= st->mask; j++) {
            rec *r = st->buckets[j];
            while (r) {
                rec *n = r->next;
                free(r->data);
                free(r);
                r = n;
            }
        }
        free(st->buckets);
        uv_mutex_destroy(&st->mu);
    }
    free(m);
}

static const qk_storage_ops mem_ops = {
    .name = "memory",
    .attach = mem_attach,
    .detach = mem_detach,
    .read = mem_read,
    .write = mem_write,
    .flush = mem_flush,
    .destroy = mem_destroy,
};

static quark_err mem_open(const char *spec, const char *rest, const qk_storage_env *env,
                          const qk_storage_ops **ops, void **self)
{
    (void)env;
    if (*rest)
        return qk_error(QUARK_EINVAL, "storage '%s': 'memory' takes no arguments", spec);
    mem *m = calloc(1, sizeof *m);
    if (!m)
        return qk_error(QUARK_ENOMEM, "out of memory creating the memory storage");
    for (int i = 0; i < STRIPES; i++) {
        stripe *st = &m->s[i];
        uv_mutex_init(&st->mu);
        st->mask = 15;
        if (!(st->buckets = calloc(st->mask + 1, sizeof *st->buckets))) {
            for (int j = 0; j <= i; j++) {
                free(m->s[j].buckets);
                uv_mutex_destroy(&m->s[j].mu);
            }
            free(m);
            return qk_error(QUARK_ENOMEM, "out of memory creating the memory storage");
        }
    }
    *ops = &mem_ops;
    *self = m;
    return QUARK_OK;
}

const qk_storage_provider qk_storage_memory = {
    .prefix = "memory",
    .usage = "memory",
    .open = mem_open,
};
