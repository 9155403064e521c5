/*
 * events_test.c - actor event streams in process: a subscriber sees every
 * event an actor publishes, in order, without the subscription activating
 * anything; unsubscribe and silo stop each end it with one final callback.
 */
#include <stdatomic.h>

#include "../testutil.h"
#include "counter_actor.h"

typedef struct seen {
    atomic_int events;
    atomic_int ended;
    quark_err end;
    int64_t values[16];
    uint64_t seqs[16];
    char type[64];
} seen;

static void on_event(const quark_event *ev, quark_err end, const char *msg, void *arg)
{
    (void)msg;
    seen *s = arg;
    if (!ev) {
        s->end = end;
        atomic_fetch_add(&s->ended, 1);
        return;
    }
    int i = atomic_load(&s->events);
    Quark__Examples__CounterValue *v =
        quark__examples__counter_value__unpack(NULL, ev->payload_len, ev->payload);
    if (i < 16 && v) {
        s->values[i] = v->value;
        s->seqs[i] = ev->sequence;
        snprintf(s->type, sizeof s->type, "%s", ev->event_type);
    }
    quark__examples__counter_value__free_unpacked(v, NULL);
    atomic_fetch_add(&s->events, 1);
}

static void test_embedded_events(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 0);
    seen s = {0};
    quark_subscription *sub;
    TU_OK(quark_subscribe(e.client, quark_examples_CounterActor_TYPE_NAME, "ev-1", on_event, &s, &sub));
    /* Ordered: the subscription reaches the actor's worker before any later
     * call from this thread, so no event is missed and nothing is activated. */
    assert_int_equal(quark_silo_activation_count(e.silo, NULL), 0); /* nothing activated */
    quark_ref *r;
    TU_OK(quark_examples_CounterActor_ref(e.client, "ev-1", &r));
    Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    req.delta = 5;
    for (int i = 0; i < 3; i++) {
        Quark__Examples__CounterValue *v;
        TU_OK(quark_examples_CounterActor_Increment(r, &req, &v));
        quark_msg_free(v);
    }
    assert_true(TU_WAIT_UNTIL(atomic_load(&s.events) == 3, 20000));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s.values[i], 5 * (i + 1));
        assert_int_equal(s.seqs[i], (uint64_t)i + 1);
    }
    assert_string_equal(s.type, "quark.examples.CounterValue");
    quark_unsubscribe(sub);
    assert_true(TU_WAIT_UNTIL(atomic_load(&s.ended) == 1, 20000));
    assert_int_equal(s.end, QUARK_ECLOSED);
    Quark__Examples__CounterValue *v;
    TU_OK(quark_examples_CounterActor_Increment(r, &req, &v)); /* no longer delivered */
    quark_msg_free(v);
    tu_sleep_ms(20);
    assert_int_equal(atomic_load(&s.events), 3);

    /* Errors: unknown type, bad id. Stop ends live subscriptions. */
    assert_int_equal(quark_subscribe(e.client, "no.Such", "x", on_event, &s, &sub), QUARK_ENOTYPE);
    assert_int_equal(quark_subscribe(e.client, quark_examples_CounterActor_TYPE_NAME, "", on_event,
                                     &s, &sub), QUARK_EINVAL);
    seen s2 = {0};
    TU_OK(quark_subscribe(e.client, quark_examples_CounterActor_TYPE_NAME, "ev-2", on_event, &s2, &sub));
    quark_ref_free(r);
    tu_sleep_ms(20);
    tu_env_stop(&e);
    assert_int_equal(atomic_load(&s2.ended), 1);
    assert_int_equal(s2.end, QUARK_ECLOSED);
    quark_unsubscribe(sub); /* after stop: only frees the handle */
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_embedded_events)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
