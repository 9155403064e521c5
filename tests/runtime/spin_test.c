/*
 * spin_test.c - polling before sleeping (src/core/spin.c): off when asked,
 * on at first, and off for a while once the thread has had to wait for a
 * core (here: more busy threads than cores).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/common.h"
#include "core/spin.h"

static void test_off(void **state)
{
    (void)state;
    qk_spin s;
    qk_spin_init(&s, 0);
    assert_int_equal(qk_spin_until(&s), 0);
}

static void test_polls_on_an_idle_core(void **state)
{
    (void)state;
    qk_spin s;
    qk_spin_init(&s, 50);
    uint64_t now = qk_now_ns();
    uint64_t until = qk_spin_until(&s); /* no window measured yet */
    assert_true(until >= now + 40000 && until <= qk_now_ns() + 50000);
}

static atomic_int hog_stop;

static void *hog(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&hog_stop, memory_order_relaxed))
        qk_cpu_relax();
    return NULL;
}

static void test_backs_off_when_cores_are_contended(void **state)
{
    (void)state;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nhog = (int)(ncpu > 0 ? ncpu : 1) * 3;
    pthread_t th[256];
    if (nhog > 256)
        nhog = 256;
    atomic_store(&hog_stop, 0);
    for (int i = 0; i < nhog; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hog, NULL), 0);
    qk_spin s;
    qk_spin_init(&s, 50);
    /* Keep looking (and running) for up to 5 s: with three busy threads per
     * core this thread waits for a core most of the time, and a look after
     * a measured window must say "sleep". */
    int said_sleep = 0;
    uint64_t end = qk_now_ns() + 5000000000ull;
    while (!said_sleep && qk_now_ns() < end) {
        uint64_t until = qk_spin_until(&s);
        if (until == 0)
            said_sleep = 1;
        else
            while (qk_now_ns() < until)
                qk_cpu_relax(); /* "poll" */
    }
    uint64_t pause_end = s.off_until_ns;
    atomic_store(&hog_stop, 1);
    for (int i = 0; i < nhog; i++)
        pthread_join(th[i], NULL);
    assert_true(said_sleep);
    /* And it keeps saying so during its pause (at least 2 ms from then). A
     * slow machine may take longer than that to stop the hogs: then the
     * pause is over and there is nothing to check. */
    uint64_t t = qk_now_ns();
    uint64_t u = qk_spin_until(&s);
    assert_true(u == 0 || (pause_end && t >= pause_end));
    /* Once the pause is over it polls again, judging the next window by
     * that polling (the pause itself waited for no core). The first pause
     * is 2 ms; a later one could be longer, so wait until it ends. */
    uint64_t until = 0;
    end = qk_now_ns() + 3000000000ull;
    while (!(until = qk_spin_until(&s)) && qk_now_ns() < end)
        usleep(1000);
    assert_true(until > 0);
    assert_true(s.off_until_ns == 0);
}

/* Spells that come up empty make a thread poll only one spell in 16; spells
 * that find work again bring polling back. (The contention window is pushed
 * forward so that only this rule decides.) */
static void test_empty_spells_poll_rarely(void **state)
{
    (void)state;
    qk_spin s;
    qk_spin_init(&s, 50);
    for (int i = 0; i < 40; i++) {
        s.win_ns = qk_now_ns();
        if (qk_spin_until(&s))
            qk_spin_found(&s, false);
    }
    int polled = 0;
    for (int i = 0; i < 64; i++) {
        s.win_ns = qk_now_ns();
        if (qk_spin_until(&s)) {
            polled++;
            qk_spin_found(&s, false);
        }
    }
    assert_int_equal(polled, 4); /* one in 16 */
    /* The probes find work: polling resumes. */
    int resumed = 0;
    for (int i = 0; i < 200 && !resumed; i++) {
        s.win_ns = qk_now_ns();
        if (qk_spin_until(&s)) {
            qk_spin_found(&s, true);
            s.win_ns = qk_now_ns();
            resumed = qk_spin_until(&s) != 0 && qk_spin_until(&s) != 0;
        }
    }
    assert_true(resumed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off),
        cmocka_unit_test(test_polls_on_an_idle_core),
        cmocka_unit_test(test_empty_spells_poll_rarely),
        cmocka_unit_test(test_backs_off_when_cores_are_contended),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
