/*
 * ports_test.c - the runtime alone: linked with core/ and runtime/ only (no
 * transport, no cluster), it plays the parts the runtime calls out to
 * (runtime/ports.h) with fakes:
 *   - answer sinks: ops (runtime/op.h) of our own, the way a connection
 *     starts the calls it reads (qk_invoke), that count how often they are
 *     finished: exactly once, whether the call is answered, times out, is
 *     dropped by a deactivation or by the silo stopping;
 *   - a route that takes some calls (as a cluster forwards them) and answers
 *     them later, and that can stop keeping activations (a view change);
 *   - a listener whose hooks must run on the right workers in the right
 *     order; a network subscriber; the embedded client backend.
 * Debug builds also abort on a second finish of any op (op.c).
 */
#include <pthread.h>
#include <stdlib.h>

#include "../testutil.h"
#include "probe_actor.h"
#include "counter_actor.h"
#include "runtime/runtime.h"

static Quark__Test__Empty empty = QUARK__TEST__EMPTY__INIT;

/* ---- a fake answer sink ---- */

typedef struct sink {
    qk_op op;
    _Atomic int finished;
    quark_err err;
    uint8_t by;
    bool started;
    char msg[300];
    uint8_t data[256];
    size_t len;
    qk_worker *ran_on;            /* the thread done ran on (its worker, or NULL) */
    qk_op_room room;
} sink;

static void sink_done(qk_op *op)
{
    sink *k = QK_CONTAINER_OF(op, sink, op);
    const qk_outcome *o = op->out;
    k->err = o->err;
    k->by = o->by;
    k->started = o->started;
    snprintf(k->msg, sizeof k->msg, "%s", o->err ? qk_outcome_text(o) : "");
    k->len = qk_outcome_size(o);
    if (k->len <= sizeof k->data)
        qk_outcome_pack(o, k->data);
    k->ran_on = qk_tls_worker;
    qk_op_release(op);
    atomic_fetch_add(&k->finished, 1);
}

/* home NULL: done runs where the answer is made; else on that worker. */
static void sink_init(sink *k, qk_worker *home, unsigned flags)
{
    memset(k, 0, sizeof *k);
    qk_op_init(&k->op, sink_done, home, flags, &k->room);
}

/* ---- starting calls the way a connection does ---- */

typedef struct inv_task {
    const char *type, *method, *id;
    uint8_t args[256];
    size_t args_len;
    uint32_t deadline_ms;
    sink *k;
    quark_err rc;
} inv_task;

static void invoke_task(qk_worker *w, void *arg)
{
    inv_task *t = arg;
    qk_invoke_req rq = {.type = t->type, .type_len = strlen(t->type), .actor_id = t->id,
                        .id_len = strlen(t->id), .method = t->method,
                        .method_len = strlen(t->method), .args = t->args,
                        .args_len = t->args_len, .deadline_ms = t->deadline_ms};
    t->rc = qk_invoke(w, &rq, &t->k->op);
}

/* Start type.method(req) on actor id from worker `from`, answered to k. */
static quark_err invoke(quark_silo *s, unsigned from, sink *k, const char *type,
                        const char *method, const char *id, const ProtobufCMessage *req,
                        uint32_t deadline_ms)
{
    inv_task t = {.type = type, .method = method, .id = id, .deadline_ms = deadline_ms, .k = k};
    t.args_len = protobuf_c_message_get_packed_size(req);
    assert_true(t.args_len <= sizeof t.args);
    protobuf_c_message_pack(req, t.args);
    qk_run_on(&s->workers[from], invoke_task, &t);
    return t.rc;
}

static quark_err probe_call(quark_silo *s, sink *k, const char *method, const char *id,
                            const ProtobufCMessage *req, uint32_t deadline_ms)
{
    return invoke(s, 0, k, quark_test_Probe_TYPE_NAME, method, id, req, deadline_ms);
}

/* ---- silos without a network ---- */

static quark_silo *silo_up(unsigned workers, const qk_route_ops *route, void *rs,
                           const qk_listener_ops *l, void *ls)
{
    TU_OK(quark_registry_check());
    quark_silo_opts o;
    quark_silo_opts_init(&o);
    o.workers = workers;
    quark_silo *s = NULL;
    TU_OK(qk_silo_new(&o, &s));
    if (route)
        qk_silo_set_route(s, route, rs);
    if (l)
        qk_silo_set_listener(s, l, ls);
    TU_OK(qk_silo_run(s));
    return s;
}

static void silo_down(quark_silo *s)
{
    qk_silo_stop_calls(s);
    qk_silo_close_io(s);
    qk_silo_join(s);
    qk_silo_free(s);
}

static int64_t count_of(const sink *k)
{
    Quark__Test__Count *c = quark__test__count__unpack(NULL, k->len, k->data);
    assert_non_null(c);
    int64_t n = c->n;
    quark__test__count__free_unpacked(c, NULL);
    return n;
}

/* ---- answers, exactly once ---- */

static void test_answer_reply(void **state)
{
    (void)state;
    quark_silo *s = silo_up(2, NULL, NULL, NULL, NULL);
    sink a, b;
    sink_init(&a, NULL, QK_OP_LEND);               /* done where the answer is made */
    sink_init(&b, &s->workers[1], QK_OP_INLINE);   /* done on worker 1 */
    TU_OK(probe_call(s, &a, "Ticks", "r-1", &empty.base, 0));
    TU_OK(probe_call(s, &b, "Ticks", "r-2", &empty.base, 0));
    assert_true(TU_WAIT_UNTIL(atomic_load(&a.finished) && atomic_load(&b.finished), 10000));
    assert_int_equal(a.err, QUARK_OK);
    assert_int_equal(count_of(&a), 0);
    assert_int_equal(b.err, QUARK_OK);
    assert_ptr_equal(b.ran_on, &s->workers[1]);
    /* A call that cannot start is refused by qk_invoke; its op is untouched. */
    sink c;
    sink_init(&c, NULL, 0);
    assert_int_equal(probe_call(s, &c, "NoSuchMethod", "r-1", &empty.base, 0), QUARK_ENOMETHOD);
    assert_int_equal(invoke(s, 0, &c, "no.Such.Type", "Ticks", "x", &empty.base, 0),
                     QUARK_ENOTYPE);
    silo_down(s);
    assert_int_equal(atomic_load(&a.finished), 1);
    assert_int_equal(atomic_load(&b.finished), 1);
    assert_int_equal(atomic_load(&c.finished), 0);
}

static void test_actor_error_is_the_actors(void **state)
{
    (void)state;
    quark_silo *s = silo_up(1, NULL, NULL, NULL, NULL);
    Quark__Test__FailRequest fr = QUARK__TEST__FAIL_REQUEST__INIT;
    fr.message = "no such pizza";
    sink k;
    sink_init(&k, NULL, QK_OP_LEND);
    TU_OK(probe_call(s, &k, "Fail", "e-1", &fr.base, 0));
    assert_true(TU_WAIT_UNTIL(atomic_load(&k.finished), 10000));
    assert_int_equal(k.err, QUARK_EACTOR);
    assert_int_equal(k.by, QK_BY_ACTOR);
    assert_non_null(strstr(k.msg, "no such pizza"));
    silo_down(s);
    assert_int_equal(atomic_load(&k.finished), 1);
}

static void test_deadline_then_stop(void **state)
{
    (void)state;
    quark_silo *s = silo_up(2, NULL, NULL, NULL, NULL);
    sink never, queued;
    sink_init(&never, NULL, 0);
    sink_init(&queued, NULL, 0);
    /* Never defers forever: its deadline answers it. A call queued behind
     * it times out where it waits. */
    TU_OK(probe_call(s, &never, "Never", "d-1", &empty.base, 50));
    TU_OK(probe_call(s, &queued, "Leave", "d-1", &empty.base, 80));
    assert_true(TU_WAIT_UNTIL(atomic_load(&never.finished) && atomic_load(&queued.finished),
                              10000));
    assert_int_equal(never.err, QUARK_ETIMEDOUT);
    assert_true(never.started); /* it had begun: deferred */
    assert_int_equal(queued.err, QUARK_ETIMEDOUT);
    assert_false(queued.started);
    /* The activation still holds both; stopping drops them without a
     * second answer. */
    silo_down(s);
    assert_int_equal(atomic_load(&never.finished), 1);
    assert_int_equal(atomic_load(&queued.finished), 1);
}

static void test_stop_answers_what_it_holds(void **state)
{
    (void)state;
    quark_silo *s = silo_up(2, NULL, NULL, NULL, NULL);
    enum { N = 40 };
    sink k[N];
    char id[32];
    for (int i = 0; i < N; i++) {
        sink_init(&k[i], i % 2 ? &s->workers[i % 2] : NULL, i % 3 ? QK_OP_LEND : 0);
        if (i % 4) /* Ticks on a few actors; each Never on its own (one would queue
                    * behind the other: not started, see test_queued_at_stop) */
            snprintf(id, sizeof id, "s-%d", i % 8);
        else
            snprintf(id, sizeof id, "s-never-%d", i);
        TU_OK(probe_call(s, &k[i], i % 4 ? "Ticks" : "Never", id, &empty.base, 0));
    }
    for (int i = 0; i < N; i++) /* all but the Nevers were answered */
        if (i % 4)
            assert_true(TU_WAIT_UNTIL(atomic_load(&k[i].finished), 10000));
    silo_down(s);
    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&k[i].finished), 1);
        if (i % 4 == 0) { /* deferred when the silo stopped: it had started */
            assert_int_equal(k[i].err, QUARK_ECLOSED);
            assert_true(k[i].started);
        } else {
            assert_int_equal(k[i].err, QUARK_OK);
        }
    }
}

/* A call queued behind a deferred one when the silo stops never started:
 * a network caller may send it elsewhere (its connection maps ECLOSED by
 * `started`: EUNAVAILABLE, or EUNKNOWN for the deferred one). */
static void test_queued_at_stop(void **state)
{
    (void)state;
    quark_silo *s = silo_up(1, NULL, NULL, NULL, NULL);
    sink first, second;
    sink_init(&first, NULL, 0);
    sink_init(&second, NULL, 0);
    TU_OK(probe_call(s, &first, "Never", "q-1", &empty.base, 0));
    TU_OK(probe_call(s, &second, "Never", "q-1", &empty.base, 0));
    silo_down(s);
    assert_int_equal(atomic_load(&first.finished), 1);
    assert_int_equal(atomic_load(&second.finished), 1);
    assert_int_equal(first.err, QUARK_ECLOSED);
    assert_true(first.started);
    assert_int_equal(second.err, QUARK_ECLOSED);
    assert_false(second.started);
}

static void test_deactivation_answers_once(void **state)
{
    (void)state;
    quark_silo *s = silo_up(1, NULL, NULL, NULL, NULL);
    long deact = atomic_load(&probe_deactivations);
    Quark__Test__WorkRequest wr = QUARK__TEST__WORK_REQUEST__INIT;
    wr.delay_ms = 100;
    sink work, leave, ticks;
    sink_init(&work, NULL, 0);
    sink_init(&leave, NULL, 0);
    sink_init(&ticks, NULL, 0);
    TU_OK(probe_call(s, &work, "Work", "x-1", &wr.base, 0));   /* deferred 100 ms */
    TU_OK(probe_call(s, &leave, "Leave", "x-1", &empty.base, 0)); /* queued: asks to go */
    TU_OK(probe_call(s, &ticks, "Ticks", "x-1", &empty.base, 0)); /* queued behind it */
    assert_true(TU_WAIT_UNTIL(atomic_load(&ticks.finished), 10000));
    assert_int_equal(work.err, QUARK_OK);
    assert_int_equal(leave.err, QUARK_OK);
    assert_int_equal(ticks.err, QUARK_OK);
    /* Leave's deactivation came once the calls queued behind it ran. */
    assert_true(TU_WAIT_UNTIL(atomic_load(&probe_deactivations) > deact, 10000));
    silo_down(s);
    assert_int_equal(atomic_load(&work.finished), 1);
    assert_int_equal(atomic_load(&leave.finished), 1);
    assert_int_equal(atomic_load(&ticks.finished), 1);
}

/* ---- a fake route ---- */

typedef struct held {
    qk_msg *m;
    qk_worker *w;
} held;

typedef struct fake_route {
    uv_mutex_t mu;
    held h[64];
    int n;
    _Atomic int placed, taken;
    _Atomic bool all_far;         /* take every call, not just "far-" ones */
    _Atomic bool keep;            /* keeps() answers */
} fake_route;

static int fr_place(void *self, qk_worker *w, qk_msg *m, bool here)
{
    fake_route *r = self;
    (void)here;
    atomic_fetch_add(&r->placed, 1);
    if (!atomic_load(&r->all_far) && strncmp(m->id, "far-", 4) != 0)
        return QK_ROUTE_HERE;
    uv_mutex_lock(&r->mu);
    assert_true(r->n < 64);
    r->h[r->n++] = (held){m, w};
    uv_mutex_unlock(&r->mu);
    atomic_fetch_add(&r->taken, 1);
    return QK_ROUTE_TAKEN;
}

static bool fr_keeps(void *self, qk_worker *w, uint64_t hash)
{
    (void)w;
    (void)hash;
    return atomic_load(&((fake_route *)self)->keep);
}

static const qk_route_ops fake_route_ops = {.place = fr_place, .keeps = fr_keeps};

/* The "owner's" answer to the calls a worker handed over, as a cluster's
 * forward gives it back: encoded, on the worker that holds the call. */
static void answer_held_task(qk_worker *w, void *arg)
{
    fake_route *r = arg;
    Quark__Test__Count c = QUARK__TEST__COUNT__INIT;
    c.n = 42;
    uint8_t buf[16];
    size_t len = quark__test__count__pack(&c, buf);
    uv_mutex_lock(&r->mu);
    for (int i = 0; i < r->n;) {
        if (r->h[i].w != w) {
            i++;
            continue;
        }
        qk_msg *m = r->h[i].m;
        r->h[i] = r->h[--r->n];
        qk_outcome o = {.data = buf, .len = len};
        qk_answer(w, m, &o);
        qk_msg_free(m);
    }
    uv_mutex_unlock(&r->mu);
}

static void answer_held(quark_silo *s, fake_route *r)
{
    for (unsigned i = 0; i < s->nworkers; i++)
        qk_run_on(&s->workers[i], answer_held_task, r);
}

static void test_route_forwards(void **state)
{
    (void)state;
    fake_route r = {.keep = true};
    uv_mutex_init(&r.mu);
    quark_silo *s = silo_up(2, &fake_route_ops, &r, NULL, NULL);
    long act = atomic_load(&probe_activations);
    sink here, far1, far2;
    sink_init(&here, NULL, QK_OP_LEND);
    sink_init(&far1, NULL, QK_OP_LEND);
    sink_init(&far2, &s->workers[0], QK_OP_INLINE | QK_OP_LEND);
    TU_OK(probe_call(s, &here, "Ticks", "near-1", &empty.base, 0));
    TU_OK(probe_call(s, &far1, "Ticks", "far-1", &empty.base, 0));
    TU_OK(probe_call(s, &far2, "Ticks", "far-2", &empty.base, 0));
    assert_true(TU_WAIT_UNTIL(atomic_load(&here.finished) && atomic_load(&r.taken) == 2, 10000));
    assert_int_equal(atomic_load(&probe_activations) - act, 1); /* far ones activate nothing */
    assert_int_equal(atomic_load(&far1.finished), 0);
    answer_held(s, &r);
    assert_true(TU_WAIT_UNTIL(atomic_load(&far1.finished) && atomic_load(&far2.finished), 10000));
    assert_int_equal(far1.err, QUARK_OK);
    assert_int_equal(count_of(&far1), 42);
    assert_int_equal(count_of(&far2), 42);
    assert_ptr_equal(far2.ran_on, &s->workers[0]);
    /* Calls the route holds when the silo stops are answered while the
     * workers are still there (between the stop phases, as the cluster's
     * forwards are). */
    sink late;
    sink_init(&late, NULL, 0);
    TU_OK(probe_call(s, &late, "Ticks", "far-3", &empty.base, 0));
    assert_true(TU_WAIT_UNTIL(atomic_load(&r.taken) == 3, 10000));
    qk_silo_stop_calls(s);
    answer_held(s, &r);
    qk_silo_close_io(s);
    qk_silo_join(s);
    qk_silo_free(s);
    assert_int_equal(atomic_load(&late.finished), 1);
    assert_int_equal(late.err, QUARK_OK);
    assert_int_equal(atomic_load(&here.finished), 1);
    assert_int_equal(atomic_load(&far1.finished), 1);
    assert_int_equal(atomic_load(&far2.finished), 1);
    uv_mutex_destroy(&r.mu);
}

static void rebalance_task(qk_worker *w, void *arg)
{
    (void)arg;
    qk_rebalance(w);
}

static void test_route_rebalance(void **state)
{
    (void)state;
    fake_route r = {.keep = true};
    uv_mutex_init(&r.mu);
    quark_silo *s = silo_up(1, &fake_route_ops, &r, NULL, NULL);
    long deact = atomic_load(&probe_deactivations);
    sink idle, never, queued;
    sink_init(&idle, NULL, 0);
    sink_init(&never, NULL, 0);
    sink_init(&queued, NULL, 0);
    TU_OK(probe_call(s, &idle, "Ticks", "rb-1", &empty.base, 0));    /* an idle activation */
    TU_OK(probe_call(s, &never, "Never", "rb-2", &empty.base, 0));   /* a busy one ... */
    TU_OK(probe_call(s, &queued, "Leave", "rb-2", &empty.base, 0));  /* ... with a queued call */
    /* All three reached the worker (the route placed each here). */
    assert_true(TU_WAIT_UNTIL(atomic_load(&idle.finished) && atomic_load(&r.placed) == 3, 10000));
    int taken = atomic_load(&r.taken);
    /* The view changed: this silo no longer keeps them, and calls go
     * elsewhere now. */
    atomic_store(&r.keep, false);
    atomic_store(&r.all_far, true);
    qk_run_on(&s->workers[0], rebalance_task, NULL);
    assert_true(atomic_load(&probe_deactivations) >= deact + 1); /* the idle one went at once */
    assert_int_equal(atomic_load(&r.taken), taken + 1);           /* the queued call moved */
    answer_held(s, &r);
    assert_true(TU_WAIT_UNTIL(atomic_load(&queued.finished), 10000));
    assert_int_equal(queued.err, QUARK_OK);
    assert_int_equal(atomic_load(&never.finished), 0); /* still running where it is */
    silo_down(s);
    assert_int_equal(atomic_load(&never.finished), 1);
    assert_int_equal(never.err, QUARK_ECLOSED);
    assert_int_equal(atomic_load(&queued.finished), 1);
    uv_mutex_destroy(&r.mu);
}

/* ---- a route that places activations (as the Redis directory does) ---- */

typedef struct placing_route {
    uv_mutex_t mu;
    held h[8];
    int n;
    _Atomic int not_here;         /* place() calls without an activation here */
    _Atomic int released;
    _Atomic uint64_t released_tag;
    _Atomic bool keep;
} placing_route;

static int pr_place(void *self, qk_worker *w, qk_msg *m, bool here)
{
    placing_route *r = self;
    if (here)
        return QK_ROUTE_HERE;
    atomic_fetch_add(&r->not_here, 1);
    uv_mutex_lock(&r->mu);
    assert_true(r->n < 8);
    r->h[r->n++] = (held){m, w};
    uv_mutex_unlock(&r->mu);
    return QK_ROUTE_TAKEN;
}

static bool pr_keeps(void *self, qk_worker *w, uint64_t hash)
{
    (void)w;
    (void)hash;
    return atomic_load(&((placing_route *)self)->keep);
}

static void pr_released(void *self, qk_worker *w, const quark_actor *a)
{
    placing_route *r = self;
    (void)w;
    atomic_store(&r->released_tag, a->route_tag);
    atomic_fetch_add(&r->released, 1);
}

static const qk_route_ops placing_route_ops = {.place = pr_place, .keeps = pr_keeps,
                                               .released = pr_released};

/* The "directory answered": the held calls run here, placed with tag 7. */
static void place_held_task(qk_worker *w, void *arg)
{
    placing_route *r = arg;
    uv_mutex_lock(&r->mu);
    for (int i = 0; i < r->n;) {
        if (r->h[i].w != w) {
            i++;
            continue;
        }
        qk_msg *m = r->h[i].m;
        r->h[i] = r->h[--r->n];
        qk_deliver_placed(w, m, 7);
    }
    uv_mutex_unlock(&r->mu);
}

/* A route holds a call for an actor with no activation, then hands it back
 * placed: it activates with the route's tag, later calls find it "here",
 * and when the route lets go of it the route is told, with the tag; an
 * activation let go of is not "here" any more. */
static void test_route_places(void **state)
{
    (void)state;
    placing_route r = {.keep = true};
    uv_mutex_init(&r.mu);
    quark_silo *s = silo_up(1, &placing_route_ops, &r, NULL, NULL);
    long act = atomic_load(&probe_activations);
    sink first, second;
    sink_init(&first, NULL, 0);
    sink_init(&second, NULL, 0);
    TU_OK(probe_call(s, &first, "Ticks", "pl-1", &empty.base, 0));
    assert_true(TU_WAIT_UNTIL(atomic_load(&r.not_here) == 1, 10000));
    assert_int_equal(atomic_load(&first.finished), 0);
    assert_int_equal(atomic_load(&probe_activations), act); /* held: nothing activated */
    qk_run_on(&s->workers[0], place_held_task, &r);
    assert_true(TU_WAIT_UNTIL(atomic_load(&first.finished), 10000));
    assert_int_equal(first.err, QUARK_OK);
    assert_int_equal(atomic_load(&probe_activations), act + 1);
    TU_OK(probe_call(s, &second, "Ticks", "pl-1", &empty.base, 0));
    assert_true(TU_WAIT_UNTIL(atomic_load(&second.finished), 10000));
    assert_int_equal(second.err, QUARK_OK);
    assert_int_equal(atomic_load(&r.not_here), 1); /* found here: not held again */
    assert_int_equal(atomic_load(&probe_activations), act + 1);
    /* The route lets go of it: released with its tag, and the next call is
     * not "here" (the route holds it again). */
    atomic_store(&r.keep, false);
    qk_run_on(&s->workers[0], rebalance_task, NULL);
    assert_true(TU_WAIT_UNTIL(atomic_load(&r.released) == 1, 10000));
    assert_int_equal(atomic_load(&r.released_tag), 7);
    sink third;
    sink_init(&third, NULL, 0);
    TU_OK(probe_call(s, &third, "Ticks", "pl-1", &empty.base, 0));
    assert_true(TU_WAIT_UNTIL(atomic_load(&r.not_here) == 2, 10000));
    atomic_store(&r.keep, true);
    qk_run_on(&s->workers[0], place_held_task, &r);
    assert_true(TU_WAIT_UNTIL(atomic_load(&third.finished), 10000));
    assert_int_equal(third.err, QUARK_OK);
    assert_int_equal(atomic_load(&probe_activations), act + 2);
    silo_down(s);
    assert_int_equal(atomic_load(&r.released), 2);
    uv_mutex_destroy(&r.mu);
}

/* ---- a fake listener ---- */

typedef struct fake_listener {
    quark_silo *s;
    _Atomic int started[4], quiesced[4], stopped[4], flushed[4];
    _Atomic int wrong_thread;
    _Atomic int order_bad;        /* a phase came before the one it follows */
} fake_listener;

static void check_thread(fake_listener *l, qk_worker *w)
{
    if (qk_tls_worker != w)
        atomic_fetch_add(&l->wrong_thread, 1);
}

static void fl_start(void *self, qk_worker *w)
{
    fake_listener *l = self;
    check_thread(l, w);
    atomic_fetch_add(&l->started[w->index], 1);
}

static void fl_quiesce(void *self, qk_worker *w)
{
    fake_listener *l = self;
    check_thread(l, w);
    if (!atomic_load(&l->started[w->index]))
        atomic_fetch_add(&l->order_bad, 1);
    atomic_fetch_add(&l->quiesced[w->index], 1);
}

static void fl_stop(void *self, qk_worker *w)
{
    fake_listener *l = self;
    check_thread(l, w);
    if (!atomic_load(&l->quiesced[w->index]))
        atomic_fetch_add(&l->order_bad, 1);
    atomic_fetch_add(&l->stopped[w->index], 1);
}

static bool fl_busy(void *self, const qk_worker *w)
{
    (void)self;
    (void)w;
    return false;
}

static void fl_flush(void *self, qk_worker *w)
{
    fake_listener *l = self;
    check_thread(l, w);
    atomic_fetch_add(&l->flushed[w->index], 1);
}

static const qk_listener_ops fake_listener_ops = {
    .worker_start = fl_start, .worker_quiesce = fl_quiesce, .worker_stop = fl_stop,
    .worker_busy = fl_busy, .flush = fl_flush};

static void io_pending_task(qk_worker *w, void *arg)
{
    (void)arg;
    qk_worker_io_pending(w);
}

static void test_listener_port(void **state)
{
    (void)state;
    fake_listener l = {0};
    quark_silo *s = silo_up(2, NULL, NULL, &fake_listener_ops, &l);
    l.s = s;
    assert_true(TU_WAIT_UNTIL(atomic_load(&l.started[0]) && atomic_load(&l.started[1]), 10000));
    /* Output pending on worker 1 is flushed there, at the end of its batch. */
    int before = atomic_load(&l.flushed[1]);
    qk_run_on(&s->workers[1], io_pending_task, NULL);
    assert_true(TU_WAIT_UNTIL(atomic_load(&l.flushed[1]) > before, 10000));
    int f0 = atomic_load(&l.flushed[0]);
    sink k;
    sink_init(&k, NULL, 0);
    TU_OK(probe_call(s, &k, "Ticks", "l-1", &empty.base, 0)); /* calls alone flush nothing */
    assert_true(TU_WAIT_UNTIL(atomic_load(&k.finished), 10000));
    assert_int_equal(atomic_load(&l.flushed[0]), f0);
    qk_silo_stop_calls(s);
    assert_int_equal(atomic_load(&l.quiesced[0]), 1);
    assert_int_equal(atomic_load(&l.quiesced[1]), 1);
    assert_int_equal(atomic_load(&l.stopped[0]), 0);
    qk_silo_close_io(s);
    assert_int_equal(atomic_load(&l.stopped[0]), 1);
    assert_int_equal(atomic_load(&l.stopped[1]), 1);
    qk_silo_join(s);
    qk_silo_free(s);
    assert_int_equal(atomic_load(&l.started[0]), 1);
    assert_int_equal(atomic_load(&l.started[1]), 1);
    assert_int_equal(atomic_load(&l.wrong_thread), 0);
    assert_int_equal(atomic_load(&l.order_bad), 0);
}

/* ---- a network subscriber, and the embedded client ---- */

typedef struct fake_sub {
    qk_worker *home;
    _Atomic int events;
    int64_t last_seq;
    _Atomic int ended;
    bool removed;                 /* at its ended() */
    _Atomic int wrong_thread;
    qk_sub *s;
} fake_sub;

static void fs_event(qk_sub *s, const quark_event *ev)
{
    fake_sub *f = s->ctx;
    if (qk_tls_worker != f->home)
        atomic_fetch_add(&f->wrong_thread, 1);
    if (strcmp(ev->actor_id, "sub-1") != 0 ||
        strcmp(ev->event_type, "quark.examples.CounterValue") != 0)
        atomic_fetch_add(&f->wrong_thread, 100);
    f->last_seq = (int64_t)ev->sequence;
    atomic_fetch_add(&f->events, 1);
}

static void fs_ended(qk_sub *s)
{
    fake_sub *f = s->ctx;
    if (qk_tls_worker != f->home)
        atomic_fetch_add(&f->wrong_thread, 1);
    f->removed = s->removed;
    qk_sub_free(s);
    atomic_fetch_add(&f->ended, 1);
}

static const qk_sub_ops fake_sub_ops = {.event = fs_event, .ended = fs_ended};

typedef struct sub_task {
    fake_sub *f;
    const char *id;
    bool unsubscribe;
    quark_err rc;
} sub_task;

static void sub_on_home(qk_worker *w, void *arg)
{
    sub_task *t = arg;
    if (t->unsubscribe) {
        qk_unsubscribe_remote(t->f->s);
        return;
    }
    const char *type = quark_examples_CounterActor_TYPE_NAME;
    t->rc = qk_subscribe_remote(w, &fake_sub_ops, t->f, 9, type, strlen(type), t->id,
                                strlen(t->id), &t->f->s);
}

static void test_subscriber_port_and_embedded_client(void **state)
{
    (void)state;
    quark_silo *s = silo_up(2, NULL, NULL, NULL, NULL);
    quark_client_opts co;
    quark_client_opts_init(&co);
    co.embedded = s;
    quark_client *c = NULL;
    TU_OK(qk_client_new(&co, &qk_client_embedded, s, &c));
    TU_OK(quark_client_connect(c));
    fake_sub a = {.home = &s->workers[1]}, b = {.home = &s->workers[0]};
    sub_task ta = {.f = &a, .id = "sub-1"}, tb = {.f = &b, .id = "sub-2"};
    qk_run_on(a.home, sub_on_home, &ta);
    qk_run_on(b.home, sub_on_home, &tb);
    TU_OK(ta.rc);
    TU_OK(tb.rc);
    quark_ref *r = NULL;
    TU_OK(quark_examples_CounterActor_ref(c, "sub-1", &r));
    Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    req.delta = 2;
    /* Subscriptions are made by messages to the actor's worker: the first
     * calls may come before them. */
    assert_true(TU_WAIT_UNTIL(({
        Quark__Examples__CounterValue *v = NULL;
        TU_OK(quark_examples_CounterActor_Increment(r, &req, &v));
        quark_msg_free(v);
        atomic_load(&a.events) > 0;
    }), 10000));
    /* Events of the increments before may still be on their way to the
     * subscriber's worker: the one of this increment comes after them. */
    int seen = atomic_load(&a.events);
    Quark__Examples__CounterValue *v = NULL;
    TU_OK(quark_examples_CounterActor_Increment(r, &req, &v));
    quark_msg_free(v);
    assert_true(TU_WAIT_UNTIL(atomic_load(&a.events) >= seen + 1, 10000));
    /* Unsubscribing ends it once, as removed. */
    sub_task ua = {.f = &a, .unsubscribe = true};
    qk_run_on(a.home, sub_on_home, &ua);
    assert_true(TU_WAIT_UNTIL(atomic_load(&a.ended) == 1, 10000));
    assert_true(a.removed);
    quark_ref_free(r);
    quark_client_free(c);
    /* Stopping ends the other once, not removed (the silo ended it). */
    silo_down(s);
    assert_int_equal(atomic_load(&b.ended), 1);
    assert_false(b.removed);
    assert_int_equal(atomic_load(&a.ended), 1);
    assert_int_equal(atomic_load(&b.events), 0);
    assert_int_equal(atomic_load(&a.wrong_thread), 0);
    assert_int_equal(atomic_load(&b.wrong_thread), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answer_reply),
        cmocka_unit_test(test_actor_error_is_the_actors),
        cmocka_unit_test(test_deadline_then_stop),
        cmocka_unit_test(test_stop_answers_what_it_holds),
        cmocka_unit_test(test_queued_at_stop),
        cmocka_unit_test(test_deactivation_answers_once),
        cmocka_unit_test(test_route_forwards),
        cmocka_unit_test(test_route_rebalance),
        cmocka_unit_test(test_route_places),
        cmocka_unit_test(test_listener_port),
        cmocka_unit_test(test_subscriber_port_and_embedded_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
