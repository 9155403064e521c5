/*
 * durable_counter.c - DurableCounter: CounterActor with its value in the
 * silo's storage (docs/storage.md).
 *
 * Registered under the explicit name "DurableCounter" beside the in-memory
 * CounterActor: same interface, same methods, but the value is persistent
 * state (the CounterState message). Every Increment marks the state
 * changed; its reply leaves only once the new value is stored, so a value
 * a client saw survives a crash of the silo (with a durable storage, e.g.
 * counter-silo --storage sqlite:counter.db).
 */
#include <string.h>

#include "counter_actor.h"

/* The generated accessor of @quark.state CounterState (counter.proto). */
#define state_of quark_examples_CounterActor_state

static quark_err durable_increment(quark_actor *self, const Quark__Examples__IncrementRequest *req,
                                   Quark__Examples__CounterValue *reply)
{
    Quark__Examples__CounterState *st = state_of(self);
    st->value += req->delta;
    quark_actor_state_changed(self); /* stored before this reply leaves */
    reply->value = st->value;
    quark_actor_publish(self, &reply->base);
    return QUARK_OK;
}

static quark_err durable_get(quark_actor *self, const Quark__Examples__GetRequest *req,
                             Quark__Examples__CounterValue *reply)
{
    (void)req;
    reply->value = state_of(self)->value;
    return QUARK_OK;
}

static void sleep_done(quark_actor *self, void *arg)
{
    Quark__Examples__CounterValue v = QUARK__EXAMPLES__COUNTER_VALUE__INIT;
    v.value = state_of(self)->value;
    quark_examples_CounterActor_Sleep_reply(arg, &v);
}

static quark_err durable_sleep(quark_actor *self, const Quark__Examples__SleepRequest *req,
                               Quark__Examples__CounterValue *reply)
{
    (void)reply;
    if (req->ms < 0 || req->ms > 600000)
        return quark_actor_fail(self, QUARK_EINVAL, "sleep of %d ms is out of range 0..600000",
                                req->ms);
    quark_deferred *call = quark_actor_defer(self);
    quark_err rc = quark_actor_timer_start(self, (uint64_t)req->ms, 0, sleep_done, call, NULL);
    if (rc != QUARK_OK)
        quark_reply_error(call, rc, "%s", quark_last_error());
    return QUARK_PENDING;
}

static quark_err durable_fail(quark_actor *self, const Quark__Examples__FailRequest *req,
                              Quark__Examples__CounterValue *reply)
{
    (void)reply;
    return quark_actor_fail(self, QUARK_EACTOR, "%s", req->message);
}

static void add_to_done(quark_err err, const char *errmsg,
                        const Quark__Examples__CounterValue *value, void *arg)
{
    if (err != QUARK_OK)
        quark_reply_error(arg, err, "%s", errmsg);
    else
        quark_examples_CounterActor_AddTo_reply(arg, value);
}

/* Increment the DurableCounter `target`: its own write is stored before it
 * answers, so this reply also means "stored". */
static quark_err durable_add_to(quark_actor *self, const Quark__Examples__AddToRequest *req,
                                Quark__Examples__CounterValue *reply)
{
    (void)reply;
    quark_ref *target;
    quark_err rc = quark_ref_new(quark_actor_client(self), &quark_examples_CounterActor_interface,
                                 DURABLE_COUNTER_TYPE, req->target, &target);
    if (rc != QUARK_OK)
        return quark_actor_fail(self, rc, "%s", quark_last_error());
    Quark__Examples__IncrementRequest inc = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    inc.delta = req->delta;
    quark_deferred *call = quark_actor_defer(self);
    rc = quark_examples_CounterActor_Increment_async(target, &inc, add_to_done, call);
    quark_ref_free(target);
    if (rc != QUARK_OK)
        quark_reply_error(call, rc, "%s", quark_last_error());
    return QUARK_PENDING;
}

static void remind_done(quark_actor *self, quark_err err, const char *errmsg, void *arg)
{
    if (err != QUARK_OK) {
        quark_reply_error(arg, err, "%s", errmsg);
        return;
    }
    Quark__Examples__CounterValue v = QUARK__EXAMPLES__COUNTER_VALUE__INIT;
    v.value = state_of(self)->value;
    quark_examples_CounterActor_Remind_reply(arg, &v);
}

/* Register (or with period 0 remove) the reminder "tick"; the reply leaves
 * once the store has it. */
static quark_err durable_remind(quark_actor *self, const Quark__Examples__RemindRequest *req,
                                Quark__Examples__CounterValue *reply)
{
    (void)reply;
    quark_deferred *call = quark_actor_defer(self);
    quark_err rc = req->period_ms
                       ? quark_actor_reminder_set(self, "tick", req->period_ms, req->period_ms,
                                                  remind_done, call)
                       : quark_actor_reminder_unset(self, "tick", remind_done, call);
    if (rc != QUARK_OK)
        quark_reply_error(call, rc, "%s", quark_last_error());
    return QUARK_PENDING;
}

/* A tick of "tick": one more, stored like an Increment (the tick's answer
 * waits for the write). */
static quark_err durable_on_reminder(quark_actor *self, const quark_reminder_tick *tick)
{
    if (strcmp(tick->name, "tick") != 0)
        return quark_actor_fail(self, QUARK_EINVAL, "DurableCounter has no reminder '%s'",
                                tick->name);
    Quark__Examples__CounterState *st = state_of(self);
    st->value += 1;
    quark_actor_state_changed(self);
    Quark__Examples__CounterValue v = QUARK__EXAMPLES__COUNTER_VALUE__INIT;
    v.value = st->value;
    quark_actor_publish(self, &v.base);
    return QUARK_OK;
}

static const quark_examples_CounterActor_methods durable_methods = {
    .Increment = durable_increment,
    .Get = durable_get,
    .Sleep = durable_sleep,
    .Fail = durable_fail,
    .AddTo = durable_add_to,
    .Remind = durable_remind,
};

QUARK_ACTOR_TYPE(durable_counter,
                 .interface = &quark_examples_CounterActor_interface,
                 .methods = &durable_methods,
                 .name = DURABLE_COUNTER_TYPE,
                 .persistent = quark_examples_CounterActor_STATE,
                 .on_reminder = durable_on_reminder)
