/*
 * scale_test.c - 200,000 activations created, used and collected, with the
 * memory given back; and many application threads calling many counters at
 * once (the public API is thread-safe, totals add up exactly).
 */
#include <malloc.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdlib.h>

#include "../testutil.h"
#include "counter_actor.h"

enum { N_ACT = 200000 };

static atomic_long replies, failures;

static void on_inc(quark_err err, const char *msg, const Quark__Examples__CounterValue *v, void *arg)
{
    (void)msg;
    (void)arg;
    if (err != QUARK_OK || v->value != 1)
        atomic_fetch_add(&failures, 1);
    atomic_fetch_add(&replies, 1);
}

static size_t heap_in_use(void)
{
    malloc_trim(0);
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void test_200k_activations(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 300); /* idle after 300 ms */
    size_t before = heap_in_use();
    Quark__Examples__IncrementRequest one = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    one.delta = 1;
    char id[32];
    for (int i = 0; i < N_ACT; i++) {
        quark_ref *r;
        snprintf(id, sizeof id, "scale-%d", i);
        TU_OK(quark_examples_CounterActor_ref(e.client, id, &r));
        TU_OK(quark_examples_CounterActor_Increment_async(r, &one, on_inc, NULL));
        quark_ref_free(r);
        while (i - atomic_load(&replies) > 10000) /* bound what is in flight */
            tu_sleep_ms(1);
    }
    assert_true(TU_WAIT_UNTIL(atomic_load(&replies) == N_ACT, 60000));
    assert_int_equal(atomic_load(&failures), 0);
    size_t live = quark_silo_activation_count(e.silo, quark_examples_CounterActor_TYPE_NAME);
    size_t peak = heap_in_use();
    printf("# %zu activations live, heap grew by %zu bytes (%zu per activation)\n", live,
           peak - before, live ? (peak - before) / live : 0);
    /* All of them were live at once unless the machine was slow enough for
     * the idle collector to start already. */
    assert_true(live > 0);
    assert_true(TU_WAIT_UNTIL(quark_silo_activation_count(e.silo, NULL) == 0, 60000));
    size_t after = heap_in_use();
    printf("# collected; heap now %zd bytes above the start\n", (ssize_t)(after - before));
    /* Memory returned: what is left is bounded by the workers' tables and
     * arenas, not by the number of activations that lived. */
    assert_true(after < before + 4u * 1024 * 1024);
    tu_env_stop(&e);
}

typedef struct caller {
    tu_env *e;
    int index;
    int errors;
} caller;

enum { THREADS = 8, COUNTERS = 16, CALLS = 2000 };

static void *caller_main(void *arg)
{
    caller *c = arg;
    quark_ref *refs[COUNTERS];
    char id[32];
    for (int i = 0; i < COUNTERS; i++) {
        snprintf(id, sizeof id, "shared-%d", i);
        if (quark_examples_CounterActor_ref(c->e->client, id, &refs[i]) != QUARK_OK)
            c->errors++;
    }
    Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    for (int k = 0; k < CALLS; k++) {
        req.delta = 1 + (k % 3);
        Quark__Examples__CounterValue *v;
        if (quark_examples_CounterActor_Increment(refs[(k + c->index) % COUNTERS], &req, &v) != QUARK_OK)
            c->errors++;
        else
            quark_msg_free(v);
    }
    for (int i = 0; i < COUNTERS; i++)
        quark_ref_free(refs[i]);
    return NULL;
}

static void test_many_threads(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 0);
    pthread_t th[THREADS];
    caller cs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        cs[i] = (caller){.e = &e, .index = i};
        pthread_create(&th[i], NULL, caller_main, &cs[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(cs[i].errors, 0);
    }
    /* Each thread adds sum_{k<CALLS} (1 + k%3) spread over the counters. */
    long want = 0;
    for (int k = 0; k < CALLS; k++)
        want += 1 + (k % 3);
    want *= THREADS;
    long total = 0;
    char id[32];
    for (int i = 0; i < COUNTERS; i++) {
        quark_ref *r;
        snprintf(id, sizeof id, "shared-%d", i);
        TU_OK(quark_examples_CounterActor_ref(e.client, id, &r));
        Quark__Examples__GetRequest g = QUARK__EXAMPLES__GET_REQUEST__INIT;
        Quark__Examples__CounterValue *v;
        TU_OK(quark_examples_CounterActor_Get(r, &g, &v));
        total += v->value;
        quark_msg_free(v);
        quark_ref_free(r);
    }
    assert_int_equal(total, want);
    tu_env_stop(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_threads),
        cmocka_unit_test(test_200k_activations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
