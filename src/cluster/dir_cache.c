/*
 * dir_cache.c - a worker's cache of where actors live (see dir_cache.h).
 */
#include <stdlib.h>
#include <string.h>

#include "cluster/dir_cache.h"

bool qk_dir_cache_init(qk_dir_cache *c, uint32_t nslots)
{
    uint32_t n = 2;
    while (n < nslots && n < (1u << 30))
        n <<= 1;
    memset(c, 0, sizeof *c);
    c->slots = calloc(n, sizeof *c->slots);
    if (!c->slots)
        return false;
    c->mask = n - 1;
    return true;
}

void qk_dir_cache_free(qk_dir_cache *c)
{
    if (!c->slots)
        return;
    for (uint32_t i = 0; i <= c->mask; i++)
        free(c->slots[i].id);
    free(c->slots);
    c->slots = NULL;
}

static inline qk_dir_cache_slot *slot_of(qk_dir_cache *c, uint64_t hash, const void *type,
                                         const char *id, size_t id_len)
{
    qk_dir_cache_slot *s = &c->slots[(uint32_t)(hash >> 17) & c->mask];
    if (s->id && s->hash == hash && s->type == type && s->id_len == id_len &&
        memcmp(s->id, id, id_len) == 0)
        return s;
    return NULL;
}

int qk_dir_cache_find(qk_dir_cache *c, uint64_t hash, const void *type, const char *id,
                      size_t id_len, uint32_t gen)
{
    qk_dir_cache_slot *s = slot_of(c, hash, type, id, id_len);
    return s && s->gen == gen ? s->member : -1;
}

void qk_dir_cache_put(qk_dir_cache *c, uint64_t hash, const void *type, const char *id,
                      size_t id_len, uint32_t gen, int member)
{
    qk_dir_cache_slot *s = &c->slots[(uint32_t)(hash >> 17) & c->mask];
    if (!s->id || s->id_len != id_len || memcmp(s->id, id, id_len) != 0) {
        char *copy = malloc(id_len + 1);
        if (!copy)
            return;
        memcpy(copy, id, id_len);
        copy[id_len] = '\0';
        free(s->id);
        s->id = copy;
        s->id_len = (uint32_t)id_len;
    }
    s->hash = hash;
    s->type = type;
    s->gen = gen;
    s->member = member;
}

void qk_dir_cache_drop(qk_dir_cache *c, uint64_t hash, const void *type, const char *id,
                       size_t id_len)
{
    qk_dir_cache_slot *s = slot_of(c, hash, type, id, id_len);
    if (s) {
        free(s->id);
        s->id = NULL;
    }
}
