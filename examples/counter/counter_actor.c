/*
 * counter_actor.c - CounterActor: Increment adds delta, Get returns the value.
 *
 * The state is one int64 that lives as long as the activation; Quark runs one
 * turn at a time per activation, so no locking is needed.
 */
#include <stdlib.h>

#include "counter_actor.h"

static quark_err counter_increment(quark_actor *self, const Quark__Examples__IncrementRequest *req,
                                   Quark__Examples__CounterValue *reply)
{
    struct counter_state *st = quark_actor_state(self);
    st->value += req->delta;
    reply->value = st->value;
    quark_actor_publish(self, &reply->base); /* subscribers see every new value */
    return QUARK_OK;
}

static quark_err counter_get(quark_actor *self, const Quark__Examples__GetRequest *req,
                             Quark__Examples__CounterValue *reply)
{
    (void)req;
    const struct counter_state *st = quark_actor_state(self);
    reply->value = st->value;
    return QUARK_OK;
}

static void sleep_done(quark_actor *self, void *arg)
{
    quark_deferred *call = arg;
    Quark__Examples__CounterValue v = QUARK__EXAMPLES__COUNTER_VALUE__INIT;
    v.value = ((const struct counter_state *)quark_actor_state(self))->value;
    quark_examples_CounterActor_Sleep_reply(call, &v);
}

static quark_err counter_sleep(quark_actor *self, const Quark__Examples__SleepRequest *req,
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

static quark_err counter_fail(quark_actor *self, const Quark__Examples__FailRequest *req,
                              Quark__Examples__CounterValue *reply)
{
    (void)reply;
    return quark_actor_fail(self, QUARK_EACTOR, "%s", req->message);
}

static void add_to_done(quark_err err, const char *errmsg,
                        const Quark__Examples__CounterValue *value, void *arg)
{
    quark_deferred *call = arg;
    if (err != QUARK_OK)
        quark_reply_error(call, err, "%s", errmsg);
    else
        quark_examples_CounterActor_AddTo_reply(call, value);
}

static quark_err counter_add_to(quark_actor *self, const Quark__Examples__AddToRequest *req,
                                Quark__Examples__CounterValue *reply)
{
    (void)reply;
    quark_ref *target;
    quark_err rc = quark_examples_CounterActor_ref(quark_actor_client(self), req->target, &target);
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

static const quark_examples_CounterActor_methods counter_methods = {
    .Increment = counter_increment,
    .Get = counter_get,
    .Sleep = counter_sleep,
    .Fail = counter_fail,
    .AddTo = counter_add_to,
};

QUARK_ACTOR_TYPE(counter_actor,
                 .interface = &quark_examples_CounterActor_interface,
                 .methods = &counter_methods,
                 .map_to_interface = 1,
                 .state_size = sizeof(struct counter_state))
