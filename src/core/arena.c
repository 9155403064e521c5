/*
 * arena.c - chunk management for the bump allocator (see arena.h).
 */
#include <stdlib.h>

#include "arena.h"

struct qk_arena_chunk {
    qk_arena_chunk *next;
    size_t size;
    _Alignas(16) char data[];
};

static void *pb_alloc(void *data, size_t size)
{
    return qk_arena_alloc((qk_arena *)data, size);
}

static void pb_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr; /* freed in bulk by qk_arena_reset */
}

static qk_arena_chunk *chunk_new(size_t size)
{
    qk_arena_chunk *c = malloc(sizeof *c + size);
    if (c) {
        c->next = NULL;
        c->size = size;
    }
    return c;
}

void qk_arena_init(qk_arena *a, size_t first_chunk)
{
    a->chunks = chunk_new(first_chunk);
    a->cur = a->chunks ? a->chunks->data : NULL;
    a->end = a->chunks ? a->chunks->data + first_chunk : NULL;
    a->pb.alloc = pb_alloc;
    a->pb.free = pb_free;
    a->pb.allocator_data = a;
}

void *qk_arena_alloc_slow(qk_arena *a, size_t n)
{
    size_t size = a->chunks ? a->chunks->size * 2 : 4096;
    while (size < n)
        size *= 2;
    qk_arena_chunk *c = chunk_new(size);
    if (!c)
        return NULL;
    c->next = a->chunks;
    a->chunks = c;
    a->cur = c->data + n;
    a->end = c->data + size;
    return c->data;
}

void qk_arena_reset(qk_arena *a)
{
    qk_arena_chunk *c = a->chunks;
    if (!c)
        return;
    /* Keep only the largest (newest) chunk so a busy turn's size sticks. */
    qk_arena_chunk *keep = c;
    c = c->next;
    while (c) {
        qk_arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    keep->next = NULL;
    a->chunks = keep;
    a->cur = keep->data;
    a->end = keep->data + keep->size;
}

void qk_arena_destroy(qk_arena *a)
{
    qk_arena_chunk *c = a->chunks;
    while (c) {
        qk_arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    a->chunks = NULL;
    a->cur = a->end = NULL;
}
