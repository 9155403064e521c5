/*
 * runtime_test.c - the local runtime's guarantees, checked through the public
 * API with the Probe actor: activation and its failure, idle / explicit /
 * shutdown deactivation, one turn at a time under many callers, read-only
 * interleaving, actor-to-actor calls and cycles, timers, deadlines.
 */
#include <pthread.h>
#include <stdlib.h>

#include "../testutil.h"
#include "probe_actor.h"

static Quark__Test__Empty empty = QUARK__TEST__EMPTY__INIT;

static quark_ref *probe(tu_env *e, const char *id)
{
    quark_ref *r = NULL;
    TU_OK(quark_test_Probe_ref(e->client, id, &r));
    return r;
}

/* ---- activation ---- */

static void test_first_call_activates_once(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 0);
    long before = atomic_load(&probe_activations);
    quark_ref *r = probe(&e, "act-once");
    for (int i = 0; i < 5; i++) {
        Quark__Test__Count *c;
        TU_OK(quark_test_Probe_Ticks(r, &empty, &c));
        quark_msg_free(c);
    }
    assert_int_equal(atomic_load(&probe_activations) - before, 1);
    assert_int_equal(quark_silo_activation_count(e.silo, quark_test_Probe_TYPE_NAME), 1);
    assert_int_equal(quark_silo_activation_count(e.silo, "no.such.Type"), 0);
    quark_ref_free(r);
    tu_env_stop(&e);
}

static void list_cb(const char *type, const char *id, void *arg)
{
    int *found = arg;
    if (strcmp(type, quark_test_Probe_TYPE_NAME) == 0 && strcmp(id, "listed") == 0)
        (*found)++;
}

static void test_list_activations(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 0);
    quark_ref *r = probe(&e, "listed");
    Quark__Test__Count *c;
    TU_OK(quark_test_Probe_Ticks(r, &empty, &c));
    quark_msg_free(c);
    int found = 0;
    TU_OK(quark_silo_list_activations(e.silo, NULL, list_cb, &found));
    assert_int_equal(found, 1);
    found = 0;
    TU_OK(quark_silo_list_activations(e.silo, "other.Type", list_cb, &found));
    assert_int_equal(found, 0);
    quark_ref_free(r);
    tu_env_stop(&e);
}

static void test_activation_failure_leaves_nothing(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 0);
    quark_ref *r = probe(&e, "fail-1");
    long before = atomic_load(&probe_activations);
    Quark__Test__Count *c = NULL;
    assert_int_equal(quark_test_Probe_Ticks(r, &empty, &c), QUARK_EACTIVATE);
    assert_null(c);
    assert_non_null(strstr(quark_last_error(), "refusing to activate 'fail-1'"));
    assert_non_null(strstr(quark_last_error(), "quark.test.Probe"));
    assert_int_equal(quark_silo_activation_count(e.silo, NULL), 0);
    /* Nothing half-made: the next call tries to activate again. */
    assert_int_equal(quark_test_Probe_Ticks(r, &empty, &c), QUARK_EACTIVATE);
    assert_int_equal(atomic_load(&probe_activations) - before, 2);
    quark_ref_free(r);
    /* An on_activate that called out and asked to go before failing: the
     * answer to its call finds nothing (ASan would see a freed activation). */
    r = probe(&e, "failcall-1");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(quark_test_Probe_Ticks(r, &empty, &c), QUARK_EACTIVATE);
        assert_non_null(strstr(quark_last_error(), "after a call"));
    }
    quark_ref *t = probe(&e, "target-of-failcall");
    assert_true(TU_WAIT_UNTIL(quark_silo_activation_count(e.silo, NULL) == 1, 10000));
    TU_OK(quark_test_Probe_Ticks(t, &empty, &c)); /* the target served the calls, and goes on */
    quark_msg_free(c);
    quark_ref_free(t);
    quark_ref_free(r);
    tu_env_stop(&e);
}

/* ---- deactivation ---- */

static void test_idle_deactivation(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 100); /* collect after 100 ms idle */
    long deact = atomic_load(&probe_deactivations);
    long act = atomic_load(&probe_activations);
    quark_ref *r = probe(&e, "idle-1");
    Quark__Test__Count *c;
    TU_OK(quark_test_Probe_Ticks(r, &empty, &c));
    quark_msg_free(c);
    assert_true(TU_WAIT_UNTIL(atomic_load(&probe_deactivations) == deact + 1, 20000));
    assert_int_equal(quark_silo_activation_count(e.silo, NULL), 0);
    TU_OK(quark_test_Probe_Ticks(r, &empty, &c)); /* re-activates */
    quark_msg_free(c);
    assert_int_equal(atomic_load(&probe_activations), act + 2);
    quark_ref_free(r);
    tu_env_stop(&e);
}

static void test_explicit_deactivation(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 0);
    long deact = atomic_load(&probe_deactivations);
    quark_ref *r = probe(&e, "leaver");
    Quark__Test__Empty *out;
    TU_OK(quark_test_Probe_Leave(r, &empty, &out));
    quark_msg_free(out);
    assert_true(TU_WAIT_UNTIL(atomic_load(&probe_deactivations) == deact + 1, 20000));
    assert_int_equal(quark_silo_activation_count(e.silo, NULL), 0);
    quark_ref_free(r);
    tu_env_stop(&e);
}

static void test_shutdown_runs_hooks(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 0);
    long deact = atomic_load(&probe_deactivations);
    char id[32];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "shut-%d", i);
        quark_ref *r = probe(&e, id);
        Quark__Test__Count *c;
        TU_OK(quark_test_Probe_Ticks(r, &empty, &c));
        quark_msg_free(c);
        quark_ref_free(r);
    }
    quark_client_free(e.client);
    TU_OK(quark_silo_stop(e.silo));
    assert_int_equal(atomic_load(&probe_deactivations) - deact, 10);
    quark_silo_free(e.silo);
}

/* ---- one turn at a time ---- */

typedef struct hammer {
    quark_ref *ref;
    int calls;
    int bad;
} hammer;

static void *hammer_main(void *arg)
{
    hammer *h = arg;
    for (int i = 0; i < h->calls; i++) {
        Quark__Test__WorkRequest req = QUARK__TEST__WORK_REQUEST__INIT;
        req.delay_ms = i % 2;
        req.tag = i;
        Quark__Test__WorkReply *rep;
        if (quark_test_Probe_Work(h->ref, &req, &rep) != QUARK_OK) {
            h->bad++;
            continue;
        }
        if (rep->max_overlap != 1 || rep->seen != 0 || rep->tag != i)
            h->bad++;
        quark_msg_free(rep);
    }
    return NULL;
}

static void test_one_turn_at_a_time(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 0);
    enum { T = 8 };
    pthread_t th[T];
    hammer h[T];
    quark_ref *r = probe(&e, "hot");
    for (int i = 0; i < T; i++) {
        h[i] = (hammer){.ref = r, .calls = 40};
        pthread_create(&th[i], NULL, hammer_main, &h[i]);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(h[i].bad, 0);
    }
    quark_ref_free(r);
    tu_env_stop(&e);
}

/* ---- read-only interleaving ---- */

typedef struct collected {
    atomic_int done;
    int max_overlap[4];
    int seen[4];
    quark_err err[4];
} collected;

static void on_work(quark_err err, const char *msg, const Quark__Test__WorkReply *rep, void *arg)
{
    (void)msg;
    collected *c = arg;
    int i = atomic_load(&c->done);
    (void)i;
    int slot = rep ? (int)rep->tag : 3;
    c->err[slot] = err;
    if (rep) {
        c->max_overlap[slot] = rep->max_overlap;
        c->seen[slot] = rep->seen;
    }
    atomic_fetch_add(&c->done, 1);
}

static void test_read_only_interleaves(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 0);
    quark_ref *r = probe(&e, "reader");
    collected c = {0};
    Quark__Test__WorkRequest req = QUARK__TEST__WORK_REQUEST__INIT;
    req.delay_ms = 300;
    req.tag = 0;
    TU_OK(quark_test_Probe_Peek_async(r, &req, on_work, &c));
    req.tag = 1;
    TU_OK(quark_test_Probe_Peek_async(r, &req, on_work, &c));
    /* A Work queued behind them must wait for both Peeks. */
    req.tag = 2;
    req.delay_ms = 1;
    TU_OK(quark_test_Probe_Work_async(r, &req, on_work, &c));
    assert_true(TU_WAIT_UNTIL(atomic_load(&c.done) == 3, 20000));
    for (int i = 0; i < 3; i++)
        assert_int_equal(c.err[i], QUARK_OK);
    /* Both Peeks were in progress together... */
    assert_int_equal(c.max_overlap[1], 2);
    /* ...but the Work never overlapped anything. */
    assert_int_equal(c.max_overlap[2], 1);
    assert_int_equal(c.seen[2], 0);
    quark_ref_free(r);
    tu_env_stop(&e);
}

/* ---- actor-to-actor calls and cycles ---- */

static void relay(tu_env *e, const char *from, const char **path, size_t n, quark_err want,
                  const char *want_visited)
{
    quark_ref *r = probe(e, from);
    Quark__Test__RelayRequest req = QUARK__TEST__RELAY_REQUEST__INIT;
    req.n_path = n;
    req.path = (char **)path;
    Quark__Test__RelayReply *rep = NULL;
    uint64_t t0 = tu_now_ms();
    quark_err rc = quark_test_Probe_Relay(r, &req, &rep);
    assert_int_equal(rc, want);
    /* Never a hang: far below the 30 s default deadline. */
    assert_true(tu_now_ms() - t0 < 10000);
    if (rc == QUARK_OK) {
        char buf[256] = "";
        for (size_t i = 0; i < rep->n_visited; i++) {
            strcat(buf, rep->visited[i]);
            strcat(buf, i + 1 < rep->n_visited ? "," : "");
        }
        assert_string_equal(buf, want_visited);
        quark_msg_free(rep);
    }
    quark_ref_free(r);
}

static void test_actor_to_actor(void **state)
{
    (void)state;
    for (unsigned workers = 1; workers <= 3; workers++) {
        tu_env e;
        tu_env_start(&e, workers, 0);
        const char *path[] = {"b", "c", "d"};
        relay(&e, "a", path, 3, QUARK_OK, "d,c,b,a");
        tu_env_stop(&e);
    }
}

static void test_cycle_fails_fast(void **state)
{
    (void)state;
    for (unsigned workers = 1; workers <= 2; workers++) {
        tu_env e;
        tu_env_start(&e, workers, 0);
        const char *path[] = {"y", "x"}; /* x -> y -> x */
        relay(&e, "x", path, 2, QUARK_ECYCLE, NULL);
        assert_non_null(strstr(quark_last_error(), "call cycle"));
        assert_non_null(strstr(quark_last_error(), "'x'"));
        /* Longer cycle: p -> q -> r -> q. */
        const char *path2[] = {"q", "r", "q"};
        relay(&e, "p", path2, 3, QUARK_ECYCLE, NULL);
        /* Self-call. */
        const char *path3[] = {"s"};
        relay(&e, "s", path3, 1, QUARK_ECYCLE, NULL);
        /* The actors are usable again afterwards. */
        const char *path4[] = {"y"};
        relay(&e, "x", path4, 1, QUARK_OK, "y,x");
        tu_env_stop(&e);
    }
}

/* ---- timers ---- */

static int64_t ticks(quark_ref *r)
{
    Quark__Test__Count *c;
    TU_OK(quark_test_Probe_Ticks(r, &empty, &c));
    int64_t n = c->n;
    quark_msg_free(c);
    return n;
}

static void test_timers(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 0);
    quark_ref *r = probe(&e, "ticker");
    Quark__Test__TimerRequest req = QUARK__TEST__TIMER_REQUEST__INIT;
    req.due_ms = 5;
    req.period_ms = 5;
    req.stop_after = 5; /* stops itself from its fifth tick */
    Quark__Test__Count *c;
    TU_OK(quark_test_Probe_StartTimer(r, &req, &c));
    quark_msg_free(c);
    assert_true(TU_WAIT_UNTIL(ticks(r) == 5, 20000));
    tu_sleep_ms(50);
    assert_int_equal(ticks(r), 5);

    quark_ref *o = probe(&e, "oneshot");
    req.due_ms = 10;
    req.period_ms = 0;
    req.stop_after = 0;
    TU_OK(quark_test_Probe_StartTimer(o, &req, &c));
    quark_msg_free(c);
    assert_true(TU_WAIT_UNTIL(ticks(o) == 1, 20000));
    tu_sleep_ms(50);
    assert_int_equal(ticks(o), 1);

    /* A periodic timer dies with its activation at shutdown (no leak). */
    quark_ref *p = probe(&e, "forever");
    req.due_ms = 1;
    req.period_ms = 1;
    TU_OK(quark_test_Probe_StartTimer(p, &req, &c));
    quark_msg_free(c);
    assert_true(TU_WAIT_UNTIL(ticks(p) >= 3, 20000));
    quark_ref_free(p);
    quark_ref_free(o);
    quark_ref_free(r);
    tu_env_stop(&e);
}

/* ---- deadlines ---- */

static void on_empty(quark_err err, const char *msg, const Quark__Test__Empty *rep, void *arg)
{
    (void)msg;
    (void)rep;
    collected *c = arg;
    c->err[0] = err;
    atomic_fetch_add(&c->done, 1);
}

static void test_deadlines(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 0);

    /* A deferred reply that never comes: blocking caller times out. */
    quark_ref *n = probe(&e, "never");
    quark_ref_set_deadline(n, 100);
    Quark__Test__Empty *out = NULL;
    uint64_t t0 = tu_now_ms();
    assert_int_equal(quark_test_Probe_Never(n, &empty, &out), QUARK_ETIMEDOUT);
    assert_true(tu_now_ms() - t0 >= 95);
    assert_non_null(strstr(quark_last_error(), "deadline"));

    /* The same, asynchronously. */
    quark_ref *n2 = probe(&e, "never-async");
    quark_ref_set_deadline(n2, 100);
    collected c = {0};
    TU_OK(quark_test_Probe_Never_async(n2, &empty, on_empty, &c));
    assert_true(TU_WAIT_UNTIL(atomic_load(&c.done) == 1, 20000));
    assert_int_equal(c.err[0], QUARK_ETIMEDOUT);

    /* A late reply is dropped: the caller sees the timeout, and the actor
     * carries on normally afterwards. */
    quark_ref *slow = probe(&e, "slow");
    quark_ref_set_deadline(slow, 50);
    Quark__Test__WorkRequest wr = QUARK__TEST__WORK_REQUEST__INIT;
    wr.delay_ms = 300;
    Quark__Test__WorkReply *rep = NULL;
    assert_int_equal(quark_test_Probe_Work(slow, &wr, &rep), QUARK_ETIMEDOUT);
    assert_null(rep);
    quark_ref_set_deadline(slow, 0);
    wr.delay_ms = 1;
    TU_OK(quark_test_Probe_Work(slow, &wr, &rep));
    assert_int_equal(rep->max_overlap, 1);
    quark_msg_free(rep);

    /* A turn that blocks its worker: the blocking caller still returns at its
     * deadline, not when the turn ends. */
    quark_ref *b = probe(&e, "blocker");
    quark_ref_set_deadline(b, 100);
    wr.delay_ms = 1500;
    t0 = tu_now_ms();
    assert_int_equal(quark_test_Probe_Block(b, &wr, &out), QUARK_ETIMEDOUT);
    assert_true(tu_now_ms() - t0 >= 95);

    quark_ref_free(b);
    quark_ref_free(slow);
    quark_ref_free(n2);
    quark_ref_free(n);
    tu_env_stop(&e);
}

/* ---- errors a user can act on ---- */

typedef struct inner {
    quark_ref *ref;
    atomic_int done;
    quark_err err;
} inner;

static void on_ticks_then_block(quark_err err, const char *msg, const Quark__Test__Count *rep,
                                void *arg)
{
    (void)err;
    (void)msg;
    (void)rep;
    inner *in = arg;
    Quark__Test__Count *c = NULL;
    in->err = quark_test_Probe_Ticks(in->ref, &empty, &c);
    atomic_store(&in->done, 1);
}

static void test_errors(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start(&e, 2, 0);
    quark_ref *r = NULL;

    /* Bad ids and NULL arguments. */
    assert_int_equal(quark_test_Probe_ref(e.client, "", &r), QUARK_EINVAL);
    assert_non_null(strstr(quark_last_error(), "1..256"));
    char big[QUARK_ID_MAX + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(quark_test_Probe_ref(e.client, big, &r), QUARK_EINVAL);
    big[QUARK_ID_MAX] = '\0';
    TU_OK(quark_test_Probe_ref(e.client, big, &r)); /* exactly the maximum is fine */
    quark_ref_free(r);
    assert_int_equal(quark_test_Probe_ref(e.client, NULL, &r), QUARK_EINVAL);
    assert_int_equal(quark_test_Probe_ref(NULL, "a", &r), QUARK_EINVAL);
    assert_int_equal(quark_call(NULL, &quark_test_Probe_interface, 0, &empty.base, NULL),
                     QUARK_EINVAL);

    r = probe(&e, "err");
    Quark__Test__Count *c = NULL;
    assert_int_equal(quark_test_Probe_Ticks(r, NULL, &c), QUARK_EINVAL);

    /* Unknown method number; a request of the wrong type. */
    assert_int_equal(quark_call(r, &quark_test_Probe_interface, 999, &empty.base, NULL),
                     QUARK_ENOMETHOD);
    assert_int_equal(quark_call(r, &quark_test_Probe_interface, quark_test_Probe_Work_METHOD,
                                &empty.base, NULL),
                     QUARK_EINVAL);
    assert_non_null(strstr(quark_last_error(), "quark.test.WorkRequest"));

    /* A method the implementation left NULL. */
    Quark__Test__Empty *out = NULL;
    assert_int_equal(quark_test_Probe_Missing(r, &empty, &out), QUARK_EUNIMPLEMENTED);
    assert_non_null(strstr(quark_last_error(), "Missing"));

    /* An application error with its message. */
    Quark__Test__FailRequest fr = QUARK__TEST__FAIL_REQUEST__INIT;
    fr.message = "the oven is cold";
    assert_int_equal(quark_test_Probe_Fail(r, &fr, &out), QUARK_EACTOR);
    assert_string_equal(quark_last_error(), "the oven is cold");

    /* An unregistered type name. */
    quark_ref *u;
    TU_OK(quark_ref_new(e.client, &quark_test_Probe_interface, "shop.Nothing", "1", &u));
    assert_int_equal(quark_test_Probe_Ticks(u, &empty, &c), QUARK_ENOTYPE);
    assert_string_equal(quark_last_error(), "no actor registered for type name 'shop.Nothing'");
    quark_ref_free(u);

    /* A blocking call from a callback (a worker thread) is refused. */
    inner in = {.ref = r};
    TU_OK(quark_test_Probe_Ticks_async(r, &empty, on_ticks_then_block, &in));
    assert_true(TU_WAIT_UNTIL(atomic_load(&in.done), 20000));
    assert_int_equal(in.err, QUARK_EWOULDBLOCK);

    /* After disconnect: a clear error, and connect brings it back. */
    TU_OK(quark_client_disconnect(e.client));
    assert_false(quark_client_is_connected(e.client));
    assert_int_equal(quark_test_Probe_Ticks(r, &empty, &c), QUARK_ENOTCONNECTED);
    TU_OK(quark_client_connect(e.client));
    TU_OK(quark_test_Probe_Ticks(r, &empty, &c));
    quark_msg_free(c);

    quark_ref_free(r);
    tu_env_stop(&e);

    /* A stopped silo refuses calls and connections. */
    tu_env_start(&e, 1, 0);
    r = probe(&e, "late");
    TU_OK(quark_silo_stop(e.silo));
    assert_int_equal(quark_test_Probe_Ticks(r, &empty, &c), QUARK_ECLOSED);
    assert_int_equal(quark_client_connect(e.client), QUARK_EUNAVAILABLE);
    quark_ref_free(r);
    quark_client_free(e.client);
    quark_silo_free(e.silo);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_call_activates_once),
        cmocka_unit_test(test_list_activations),
        cmocka_unit_test(test_activation_failure_leaves_nothing),
        cmocka_unit_test(test_idle_deactivation),
        cmocka_unit_test(test_explicit_deactivation),
        cmocka_unit_test(test_shutdown_runs_hooks),
        cmocka_unit_test(test_one_turn_at_a_time),
        cmocka_unit_test(test_read_only_interleaves),
        cmocka_unit_test(test_actor_to_actor),
        cmocka_unit_test(test_cycle_fails_fast),
        cmocka_unit_test(test_timers),
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
