/*
 * reminder_test.c - durable reminders on one silo (docs/reminders.md):
 * ticks as turns of the actor, list and unset, names of odd bytes, bad
 * arguments, ticks that activate a deactivated actor, and a silo restarted
 * on the same SQLite files that goes on ticking without replaying the
 * ticks it missed. (Across processes and silos, in Redis: cluster_test.)
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../testutil.h"
#include "counter_actor.h"

/* ---- ReminderProbe: CounterActor's interface, reminders by its methods ----
 *   AddTo(target = name, delta = period ms): set the reminder `name` (due
 *     in one period); delta 0 unsets it. Replies once stored.
 *   Get: lists the actor's reminders into g_listed; replies their number. */

#define MAX_TICKS 4096
typedef struct tick_rec {
    char id[32];
    char name[256];
    uint64_t scheduled_ms;
} tick_rec;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static tick_rec g_ticks[MAX_TICKS];
static int g_nticks;
static char g_listed[8][256];
static uint64_t g_listed_period[8];
static int g_nlisted;
static atomic_int g_activations;

static int ticks_of(const char *id, const char *name, uint64_t *sched, int cap)
{
    pthread_mutex_lock(&g_mu);
    int n = 0;
    for (int i = 0; i < g_nticks; i++) {
        if (strcmp(g_ticks[i].id, id) == 0 && strcmp(g_ticks[i].name, name) == 0) {
            if (sched && n < cap)
                sched[n] = g_ticks[i].scheduled_ms;
            n++;
        }
    }
    pthread_mutex_unlock(&g_mu);
    return n;
}

static quark_err probe_activate(quark_actor *self)
{
    (void)self;
    atomic_fetch_add(&g_activations, 1);
    return QUARK_OK;
}

static quark_err probe_on_reminder(quark_actor *self, const quark_reminder_tick *t)
{
    pthread_mutex_lock(&g_mu);
    if (g_nticks < MAX_TICKS) {
        tick_rec *r = &g_ticks[g_nticks++];
        snprintf(r->id, sizeof r->id, "%s", quark_actor_id(self));
        snprintf(r->name, sizeof r->name, "%s", t->name);
        r->scheduled_ms = t->scheduled_ms;
    }
    pthread_mutex_unlock(&g_mu);
    return QUARK_OK;
}

static void stored(quark_actor *self, quark_err err, const char *errmsg, void *arg)
{
    (void)self;
    if (err != QUARK_OK) {
        quark_reply_error(arg, err, "%s", errmsg);
        return;
    }
    Quark__Examples__CounterValue v = QUARK__EXAMPLES__COUNTER_VALUE__INIT;
    quark_examples_CounterActor_AddTo_reply(arg, &v);
}

static quark_err probe_add_to(quark_actor *self, const Quark__Examples__AddToRequest *req,
                              Quark__Examples__CounterValue *reply)
{
    (void)reply;
    quark_deferred *call = quark_actor_defer(self);
    quark_err rc = req->delta ? quark_actor_reminder_set(self, req->target, (uint64_t)req->delta,
                                                         (uint64_t)req->delta, stored, call)
                              : quark_actor_reminder_unset(self, req->target, stored, call);
    if (rc != QUARK_OK) /* nothing started: stored() never runs */
        quark_reply_error(call, rc, "%s", quark_last_error());
    return QUARK_PENDING;
}

static void listed(quark_actor *self, quark_err err, const char *errmsg,
                   const quark_reminder_info *list, size_t n, void *arg)
{
    (void)self;
    if (err != QUARK_OK) {
        quark_reply_error(arg, err, "%s", errmsg);
        return;
    }
    pthread_mutex_lock(&g_mu);
    g_nlisted = 0;
    for (size_t i = 0; i < n && i < 8; i++) {
        snprintf(g_listed[i], sizeof g_listed[i], "%s", list[i].name);
        g_listed_period[i] = list[i].period_ms;
        g_nlisted++;
    }
    pthread_mutex_unlock(&g_mu);
    Quark__Examples__CounterValue v = QUARK__EXAMPLES__COUNTER_VALUE__INIT;
    v.value = (int64_t)n;
    quark_examples_CounterActor_Get_reply(arg, &v);
}

static quark_err probe_get(quark_actor *self, const Quark__Examples__GetRequest *req,
                           Quark__Examples__CounterValue *reply)
{
    (void)req;
    (void)reply;
    quark_deferred *call = quark_actor_defer(self);
    quark_err rc = quark_actor_reminder_list(self, listed, call);
    if (rc != QUARK_OK)
        quark_reply_error(call, rc, "%s", quark_last_error());
    return QUARK_PENDING;
}

static const quark_examples_CounterActor_methods probe_methods = {
    .AddTo = probe_add_to,
    .Get = probe_get,
};

QUARK_ACTOR_TYPE(reminder_probe, .interface = &quark_examples_CounterActor_interface,
                 .methods = &probe_methods, .name = "ReminderProbe",
                 .on_activate = probe_activate, .on_reminder = probe_on_reminder)
/* The same without on_reminder: it may not set reminders. */
QUARK_ACTOR_TYPE(no_reminder_probe, .interface = &quark_examples_CounterActor_interface,
                 .methods = &probe_methods, .name = "NoReminderProbe")

/* ---- helpers ---- */

typedef tu_env env;

/* A silo of 2 workers with reminders in `reminders` (NULL: memory), periods
 * from 50 ms, buckets read again every 200 ms. */
static void env_start(env *e, uint32_t idle_ms, const char *storage, const char *reminders)
{
    quark_silo_opts so;
    quark_silo_opts_init(&so);
    so.workers = 2;
    so.storage = storage;
    so.reminders = reminders;
    so.reminder_min_period_ms = 50;
    so.reminder_refresh_ms = 200;
    if (idle_ms)
        so.idle_timeout_ms = idle_ms;
    tu_env_start_opts(e, &so);
}

#define env_stop tu_env_stop

static quark_err set_reminder(env *e, const char *type, const char *id, const char *name,
                              int64_t period)
{
    quark_ref *r;
    TU_OK(quark_ref_new(e->client, &quark_examples_CounterActor_interface, type, id, &r));
    Quark__Examples__AddToRequest req = QUARK__EXAMPLES__ADD_TO_REQUEST__INIT;
    req.target = (char *)name;
    req.delta = period;
    quark_err rc = quark_examples_CounterActor_AddTo(r, &req, NULL);
    quark_ref_free(r);
    return rc;
}

static int64_t list_reminders(env *e, const char *id)
{
    quark_ref *r;
    TU_OK(quark_ref_new(e->client, &quark_examples_CounterActor_interface, "ReminderProbe", id,
                        &r));
    Quark__Examples__GetRequest req = QUARK__EXAMPLES__GET_REQUEST__INIT;
    Quark__Examples__CounterValue *v = NULL;
    TU_OK(quark_examples_CounterActor_Get(r, &req, &v));
    int64_t n = v->value;
    quark_msg_free(v);
    quark_ref_free(r);
    return n;
}

static bool listed_has(const char *name)
{
    pthread_mutex_lock(&g_mu);
    bool has = false;
    for (int i = 0; i < g_nlisted; i++)
        has = has || strcmp(g_listed[i], name) == 0;
    pthread_mutex_unlock(&g_mu);
    return has;
}

/* ---- cases ---- */

static void test_ticks_list_unset(void **state)
{
    (void)state;
    env e;
    env_start(&e, 0, NULL, NULL);
    const char *odd = "a/b\\c#d?e f\x01\xff";
    TU_OK(set_reminder(&e, "ReminderProbe", "t1", "r1", 100));
    TU_OK(set_reminder(&e, "ReminderProbe", "t1", odd, 150));
    TU_OK(set_reminder(&e, "ReminderProbe", "t2", "r1", 100)); /* another actor's */
    assert_int_equal(list_reminders(&e, "t1"), 2);
    assert_true(listed_has("r1"));
    assert_true(listed_has(odd));
    assert_int_equal(list_reminders(&e, "t2"), 1);

    /* Ticks come, each of its own reminder, due + k * period. */
    assert_true(TU_WAIT_UNTIL(ticks_of("t1", "r1", NULL, 0) >= 4 &&
                                  ticks_of("t1", odd, NULL, 0) >= 3 &&
                                  ticks_of("t2", "r1", NULL, 0) >= 4,
                              20000));
    uint64_t s[64];
    int n = ticks_of("t1", "r1", s, 64);
    for (int i = 1; i < n && i < 64; i++) {
        assert_true(s[i] > s[i - 1]);
        assert_int_equal((s[i] - s[0]) % 100, 0);
    }
    n = ticks_of("t1", odd, s, 64);
    for (int i = 1; i < n && i < 64; i++)
        assert_int_equal((s[i] - s[0]) % 150, 0);

    /* Replacing one changes its period; unsetting stops it. */
    TU_OK(set_reminder(&e, "ReminderProbe", "t1", odd, 1000000));
    TU_OK(set_reminder(&e, "ReminderProbe", "t1", "r1", 0));
    TU_OK(set_reminder(&e, "ReminderProbe", "t1", "never-set", 0)); /* no error */
    assert_int_equal(list_reminders(&e, "t1"), 1);
    assert_true(listed_has(odd));
    int r1 = ticks_of("t1", "r1", NULL, 0), oddn = ticks_of("t1", odd, NULL, 0);
    int t2 = ticks_of("t2", "r1", NULL, 0);
    /* t2 ticks 5 more times while t1's reminders stay quiet: r1 is gone, the
     * other is a million ms away (a tick already queued may still run). */
    assert_true(TU_WAIT_UNTIL(ticks_of("t2", "r1", NULL, 0) >= t2 + 5, 20000));
    assert_true(ticks_of("t1", "r1", NULL, 0) <= r1 + 1);
    assert_true(ticks_of("t1", odd, NULL, 0) <= oddn + 1);
    TU_OK(set_reminder(&e, "ReminderProbe", "t2", "r1", 0));
    env_stop(&e);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    env e;
    env_start(&e, 0, NULL, NULL);
    quark_err rc = set_reminder(&e, "ReminderProbe", "b", "fast", 10);
    assert_int_equal(rc, QUARK_EINVAL);
    assert_non_null(strstr(quark_last_error(), "reminder_min_period_ms"));
    assert_int_equal(set_reminder(&e, "ReminderProbe", "b", "", 100), QUARK_EINVAL);
    char longname[QUARK_REMINDER_NAME_MAX + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(set_reminder(&e, "ReminderProbe", "b", longname, 100), QUARK_EINVAL);
    longname[QUARK_REMINDER_NAME_MAX] = '\0'; /* the longest name is fine */
    TU_OK(set_reminder(&e, "ReminderProbe", "b", longname, 100000));
    TU_OK(set_reminder(&e, "ReminderProbe", "b", longname, 0));
    rc = set_reminder(&e, "NoReminderProbe", "b", "x", 100);
    assert_int_equal(rc, QUARK_EINVAL);
    assert_non_null(strstr(quark_last_error(), "on_reminder"));
    /* Outside a turn: refused, nothing started. */
    assert_int_equal(quark_actor_reminder_set(NULL, "x", 100, 100, NULL, NULL), QUARK_EINVAL);
    /* The in-memory CounterActor does not implement Remind. */
    quark_ref *r;
    TU_OK(quark_examples_CounterActor_ref(e.client, "c", &r));
    Quark__Examples__RemindRequest req = QUARK__EXAMPLES__REMIND_REQUEST__INIT;
    req.period_ms = 100;
    assert_int_equal(quark_examples_CounterActor_Remind(r, &req, NULL), QUARK_EUNIMPLEMENTED);
    quark_ref_free(r);
    env_stop(&e);
}

static void test_ticks_activate(void **state)
{
    (void)state;
    env e;
    env_start(&e, 100, NULL, NULL); /* idle activations go after 100 ms */
    int before = atomic_load(&g_activations);
    TU_OK(set_reminder(&e, "ReminderProbe", "sleepy", "wake", 600));
    /* Between ticks the actor is collected; each tick activates it again. */
    assert_true(TU_WAIT_UNTIL(atomic_load(&g_activations) >= before + 3 &&
                                  ticks_of("sleepy", "wake", NULL, 0) >= 2,
                              30000));
    TU_OK(set_reminder(&e, "ReminderProbe", "sleepy", "wake", 0));
    env_stop(&e);
}

static int64_t durable_get(env *e, const char *id)
{
    quark_ref *r;
    TU_OK(quark_ref_new(e->client, &quark_examples_CounterActor_interface, DURABLE_COUNTER_TYPE,
                        id, &r));
    Quark__Examples__GetRequest req = QUARK__EXAMPLES__GET_REQUEST__INIT;
    Quark__Examples__CounterValue *v = NULL;
    TU_OK(quark_examples_CounterActor_Get(r, &req, &v));
    int64_t n = v->value;
    quark_msg_free(v);
    quark_ref_free(r);
    return n;
}

static void test_restart_no_burst(void **state)
{
    (void)state;
    char dir[] = "/tmp/quark-reminder-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char st[128], rm[128];
    snprintf(st, sizeof st, "sqlite:%s/state.db", dir);
    snprintf(rm, sizeof rm, "sqlite:%s/reminders.db", dir);
    env e;
    env_start(&e, 0, st, rm);
    quark_ref *r;
    TU_OK(quark_ref_new(e.client, &quark_examples_CounterActor_interface, DURABLE_COUNTER_TYPE,
                        "d", &r));
    Quark__Examples__RemindRequest req = QUARK__EXAMPLES__REMIND_REQUEST__INIT;
    req.period_ms = 200;
    TU_OK(quark_examples_CounterActor_Remind(r, &req, NULL));
    quark_ref_free(r);
    assert_true(TU_WAIT_UNTIL(durable_get(&e, "d") >= 3, 20000));
    env_stop(&e);

    /* Down for 6 periods: those ticks are missed, not replayed. */
    tu_sleep_ms(1200);
    env_start(&e, 0, st, rm);
    int64_t v0 = durable_get(&e, "d");
    uint64_t t0 = tu_now_ms();
    int64_t v = v0;
    while (tu_now_ms() < t0 + 300) /* 1.5 periods */
        v = durable_get(&e, "d");
    printf("# after a restart: %lld ticks in the first 300 ms (6 were missed)\n",
           (long long)(v - v0));
    assert_true(v - v0 <= 2);
    /* And it ticks on by itself, with nobody calling. */
    assert_true(TU_WAIT_UNTIL(durable_get(&e, "d") >= v0 + 4, 20000));
    TU_OK(quark_ref_new(e.client, &quark_examples_CounterActor_interface, DURABLE_COUNTER_TYPE,
                        "d", &r));
    req.period_ms = 0;
    TU_OK(quark_examples_CounterActor_Remind(r, &req, NULL));
    quark_ref_free(r);
    env_stop(&e);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ticks_list_unset),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_ticks_activate),
        cmocka_unit_test(test_restart_no_burst),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
