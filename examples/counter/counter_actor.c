/*
 * counter_actor.c - CounterActor: Increment adds delta, Get returns the value.
 *
 * The state is one int64 that lives as long as the activation; Quark runs one
 * turn at a time per activation, so no locking is needed.
 */
#include "counter_actor.h"

static quark_err counter_increment(quark_actor *self, const Quark__Examples__IncrementRequest *req,
                                   Quark__Examples__CounterValue *reply)
{
    struct counter_state *st = quark_actor_state(self);
    st->value += req->delta;
    reply->value = st->value;
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

static const quark_examples_CounterActor_methods counter_methods = {
    .Increment = counter_increment,
    .Get = counter_get,
};

QUARK_ACTOR_TYPE(counter_actor,
                 .interface = &quark_examples_CounterActor_interface,
                 .methods = &counter_methods,
                 .map_to_interface = 1,
                 .state_size = sizeof(struct counter_state))
