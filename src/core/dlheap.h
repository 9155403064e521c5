/*
 * dlheap.h - a min-heap of deadlines, embedded in the objects that own them.
 *
 * Each entry remembers its position, so removing a call that was answered in
 * time is O(log n) and needs no search. Single-threaded: each heap belongs to
 * one loop thread (a worker, or a remote client's I/O thread).
 */
#ifndef QK_DLHEAP_H
#define QK_DLHEAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct qk_deadline {
    uint64_t at_ms;
    uint32_t idx;  /* position + 1 in the heap; 0 = not in it */
    uint8_t kind;  /* what the entry is embedded in (the owner's business) */
} qk_deadline;

typedef struct qk_dlheap {
    qk_deadline **a;
    size_t len, cap;
} qk_dlheap;

/* Insert (no-op if already in). Returns 1 if inserted, 0 if not (already in,
 * or out of memory: the entry then simply has no deadline). */
int qk_dlheap_insert(qk_dlheap *h, qk_deadline *d);
void qk_dlheap_remove(qk_dlheap *h, qk_deadline *d);
/* Remove and return the earliest entry if it is due at `now_ms`, else NULL. */
qk_deadline *qk_dlheap_pop_expired(qk_dlheap *h, uint64_t now_ms);
void qk_dlheap_destroy(qk_dlheap *h);

#endif /* QK_DLHEAP_H */
