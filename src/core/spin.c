/*
 * spin.c - see spin.h.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/common.h"
#include "core/spin.h"

#define QK_SPIN_WINDOW_NS 2000000ull     /* measure contention over >= 2 ms */
#define QK_SPIN_CONTENDED_PCT 10         /* waiting for a core this much of the time */
#define QK_SPIN_BACKOFF_MIN_NS 2000000ull /* then pause polling 2 ms, doubling */
#define QK_SPIN_BACKOFF_MAX_SHIFT 9       /* up to ~1 s */
#define QK_SPIN_HITS_MIN 64               /* of 256: poll while a quarter of spells find work */
#define QK_SPIN_PROBE_EVERY 16            /* else poll one spell in this many */

/* How long this thread has waited on a run queue (ns), or -1 if unknown.
 * Opened each time (every few ms at most): no descriptor outlives a thread. */
static int64_t run_wait_ns(void)
{
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char b[128];
    ssize_t n = read(fd, b, sizeof b - 1);
    close(fd);
    if (n <= 0)
        return -1;
    b[n] = '\0';
    /* "<time on cpu> <time waiting on a run queue> <timeslices>" */
    char *p = b, *end;
    strtoull(p, &end, 10);
    if (end == p)
        return -1;
    p = end;
    unsigned long long w = strtoull(p, &end, 10);
    return end == p ? -1 : (int64_t)w;
}

void qk_spin_init(qk_spin *s, uint32_t us)
{
    s->budget_ns = (uint64_t)us * 1000u;
    s->off_until_ns = 0;
    s->backoffs = 0;
    s->hits = 256;
    s->skipped = 0;
    s->win_ns = qk_now_ns();
    int64_t w = us ? run_wait_ns() : -1;
    if (w < 0)
        s->budget_ns = 0; /* cannot tell contention: never poll */
    s->win_wait_ns = w < 0 ? 0 : (uint64_t)w;
}

/* Start a new measurement window at `now`; *waited is the run-queue wait
 * over the one that ends. False if it cannot be read (then polling stops). */
static bool next_window(qk_spin *s, uint64_t now, uint64_t *waited)
{
    int64_t w = run_wait_ns();
    if (w < 0) {
        s->budget_ns = 0;
        return false;
    }
    *waited = (uint64_t)w - s->win_wait_ns;
    s->win_ns = now;
    s->win_wait_ns = (uint64_t)w;
    return true;
}

uint64_t qk_spin_until(qk_spin *s)
{
    if (!s->budget_ns)
        return 0;
    uint64_t now = qk_now_ns(), waited;
    if (now < s->off_until_ns)
        return 0;
    if (s->off_until_ns) {
        /* The pause is over: judge the next window by a time of polling,
         * not by the pause (sleeping waits for no core). */
        if (!next_window(s, now, &waited))
            return 0;
        s->off_until_ns = 0;
        return now + s->budget_ns;
    }
    uint64_t span = now - s->win_ns;
    if (span >= QK_SPIN_WINDOW_NS) {
        if (!next_window(s, now, &waited))
            return 0;
        if (waited * 100 > span * QK_SPIN_CONTENDED_PCT) {
            if (s->backoffs < QK_SPIN_BACKOFF_MAX_SHIFT)
                s->backoffs++;
            s->off_until_ns = now + (QK_SPIN_BACKOFF_MIN_NS << (s->backoffs - 1));
            return 0;
        }
        s->backoffs = 0;
    }
    /* Spells that mostly time out (work comes later than the budget) only
     * burn CPU: below a quarter of hits, poll one spell in 16. */
    if (s->hits < QK_SPIN_HITS_MIN && ++s->skipped < QK_SPIN_PROBE_EVERY)
        return 0;
    s->skipped = 0;
    return now + s->budget_ns;
}

void qk_spin_found(qk_spin *s, bool found)
{
    s->hits = s->hits - s->hits / 8 + (found ? 32u : 0u); /* EWMA, 1/8 weight */
}
