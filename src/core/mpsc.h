/*
 * mpsc.h - intrusive multi-producer single-consumer queue (lock-free push).
 *
 * Any thread pushes with one atomic exchange; only the owning worker pops.
 * The queue keeps a stub node so push never touches the consumer's end. A
 * pop may briefly see "empty" while a producer sits between its exchange and
 * its link store; qk_mpsc_empty() still reports non-empty then, so the
 * consumer retries instead of going to sleep on a message.
 */
#ifndef QK_MPSC_H
#define QK_MPSC_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct qk_mpsc_node {
    struct qk_mpsc_node *_Atomic next;
} qk_mpsc_node;

typedef struct qk_mpsc {
    _Atomic(qk_mpsc_node *) head; /* producers' end */
    char pad_[64 - sizeof(void *)];
    qk_mpsc_node *tail;           /* consumer's end */
    qk_mpsc_node stub;
} qk_mpsc;

static inline void qk_mpsc_init(qk_mpsc *q)
{
    atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
    atomic_store_explicit(&q->head, &q->stub, memory_order_relaxed);
    q->tail = &q->stub;
}

static inline void qk_mpsc_push(qk_mpsc *q, qk_mpsc_node *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    qk_mpsc_node *prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

/* Push a chain first..last already linked through `next` (relaxed stores are
 * enough: the release store below publishes them): one exchange for many
 * messages. */
static inline void qk_mpsc_push_chain(qk_mpsc *q, qk_mpsc_node *first, qk_mpsc_node *last)
{
    atomic_store_explicit(&last->next, NULL, memory_order_relaxed);
    qk_mpsc_node *prev = atomic_exchange_explicit(&q->head, last, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, first, memory_order_release);
}

/* Consumer only. NULL when empty (or a producer is mid-push: retry). */
static inline qk_mpsc_node *qk_mpsc_pop(qk_mpsc *q)
{
    qk_mpsc_node *tail = q->tail;
    qk_mpsc_node *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == &q->stub) {
        if (!next)
            return NULL;
        q->tail = next;
        tail = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next) {
        q->tail = next;
        return tail;
    }
    if (tail != atomic_load_explicit(&q->head, memory_order_acquire))
        return NULL; /* a producer is linking: retry */
    qk_mpsc_push(q, &q->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

/* Consumer only: nothing pushed and not yet popped. seq_cst so that a
 * consumer that announced "sleeping" and then sees empty cannot miss a
 * producer that pushed and then read "not sleeping". */
static inline int qk_mpsc_empty(qk_mpsc *q)
{
    qk_mpsc_node *tail = q->tail;
    if (atomic_load_explicit(&tail->next, memory_order_seq_cst))
        return 0;
    return atomic_load_explicit(&q->head, memory_order_seq_cst) == tail;
}

#endif /* QK_MPSC_H */
