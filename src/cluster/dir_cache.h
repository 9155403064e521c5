/*
 * dir_cache.h - a worker's cache of where actors live, for a directory that
 * asks a server (cluster.c with the Redis directory).
 *
 * Direct-mapped by the actor's key hash: a slot holds one actor (its type
 * and a copy of its id) and the view member its activation is on; a new
 * entry replaces whatever held its slot, so the cache is bounded and a
 * lookup is one probe. An entry is valid only under the view it was made
 * under (its `gen`, which the owner bumps at every view change): a stale
 * one is a miss, asked again.
 */
#ifndef QK_DIR_CACHE_H
#define QK_DIR_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct qk_dir_cache_slot {
    uint64_t hash;
    const void *type;             /* the type's registry entry (compared by address) */
    char *id;                     /* NULL: an empty slot */
    uint32_t id_len;
    uint32_t gen;                 /* the view generation `member` is an index of */
    int member;
} qk_dir_cache_slot;

typedef struct qk_dir_cache {
    qk_dir_cache_slot *slots;
    uint32_t mask;
} qk_dir_cache;

/* nslots: rounded up to a power of two (at least 2). false: out of memory. */
bool qk_dir_cache_init(qk_dir_cache *c, uint32_t nslots);
void qk_dir_cache_free(qk_dir_cache *c);

/* The member the actor (type, id) lives on under generation gen, or -1. */
int qk_dir_cache_find(qk_dir_cache *c, uint64_t hash, const void *type, const char *id,
                      size_t id_len, uint32_t gen);
/* Remember it (replacing the slot's entry); out of memory forgets. */
void qk_dir_cache_put(qk_dir_cache *c, uint64_t hash, const void *type, const char *id,
                      size_t id_len, uint32_t gen, int member);
/* Forget it, if the cache holds it. */
void qk_dir_cache_drop(qk_dir_cache *c, uint64_t hash, const void *type, const char *id,
                       size_t id_len);

#endif /* QK_DIR_CACHE_H */
