/*
 * spin.h - polling for a while before sleeping, and backing off when the
 * cores are contended.
 *
 * A thread that runs out of work usually sleeps in epoll or poll and is
 * woken by the next bytes; on a VM a wake-up costs tens of microseconds,
 * which dominates a remote call. Polling a little first lets an answer that
 * is about to arrive be read at once. That only pays while every polling
 * thread has a core of its own: if other threads are kept waiting for a
 * core, polling takes it from them. So a thread looks, every few
 * milliseconds, at how long it waited on the run queue itself (Linux's
 * /proc/thread-self/schedstat); above 10% of the time the cores are
 * contended and it stops polling for a while, doubling the pause while the
 * windows of polling between pauses stay contended (2 ms up to ~1 s). Where
 * that file cannot be read it never polls. And a thread whose spells mostly
 * come up empty (its work comes later than the budget: polling would only
 * burn CPU that the threads producing that work need) polls one spell in 16,
 * until they find work again.
 */
#ifndef QK_SPIN_H
#define QK_SPIN_H

#include <stdbool.h>
#include <stdint.h>

typedef struct qk_spin {
    uint64_t budget_ns;    /* how long to poll; 0 never */
    uint64_t off_until_ns; /* backing off until then */
    uint64_t win_ns;       /* start of the current measurement window */
    uint64_t win_wait_ns;  /* run-queue wait at its start */
    unsigned backoffs;     /* consecutive contended windows */
    unsigned hits;         /* recent spells that found work, in 1/256 (EWMA) */
    unsigned skipped;      /* spells not polled since the last probe */
} qk_spin;

/* Poll up to `us` microseconds per idle spell (0: never). Call on the
 * thread that will use it. */
void qk_spin_init(qk_spin *s, uint32_t us);

/* The calling thread is out of work: the monotonic time (qk_now_ns) to
 * poll until, or 0 to sleep at once (polling off, or backing off). */
uint64_t qk_spin_until(qk_spin *s);

/* After polling until qk_spin_until's time: whether work came meanwhile.
 * A thread whose spells mostly come up empty polls only now and then (to
 * notice when they would pay again). */
void qk_spin_found(qk_spin *s, bool found);

#endif /* QK_SPIN_H */
