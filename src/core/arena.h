/*
 * arena.h - bump allocator for memory that dies together (one turn).
 *
 * Decoding a request, building reply strings and decoding a reply for a
 * callback all allocate from the worker's arena, which is reset after the
 * turn: no malloc/free per call. It also serves as a ProtobufCAllocator.
 */
#ifndef QK_ARENA_H
#define QK_ARENA_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

typedef struct qk_arena_chunk qk_arena_chunk;

typedef struct qk_arena {
    char *cur, *end;
    qk_arena_chunk *chunks; /* newest first; the last one is kept on reset */
    ProtobufCAllocator pb;  /* allocator_data = the arena */
} qk_arena;

void qk_arena_init(qk_arena *a, size_t first_chunk);
void qk_arena_destroy(qk_arena *a);
void *qk_arena_alloc_slow(qk_arena *a, size_t n);
void qk_arena_reset(qk_arena *a);

static inline void *qk_arena_alloc(qk_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if ((size_t)(a->end - a->cur) >= n) {
        void *p = a->cur;
        a->cur += n;
        return p;
    }
    return qk_arena_alloc_slow(a, n);
}

#endif /* QK_ARENA_H */
