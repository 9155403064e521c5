/*
 * counter_actor.h - the CounterActor implementation of examples/counter.
 *
 * Linking counter_actor.c into a program registers the implementation under
 * "quark.examples.CounterActor" (it is mapped to the interface), and
 * durable_counter.c registers DurableCounter.
 */
#ifndef COUNTER_ACTOR_H
#define COUNTER_ACTOR_H

#include <quark/quark.h>

#include "counter.quark.h"

struct counter_state {
    int64_t value;
};

extern const quark_actor_type counter_actor;

/* DurableCounter (durable_counter.c): the same interface with its value in
 * the silo's storage, registered under this name. */
#define DURABLE_COUNTER_TYPE "DurableCounter"
extern const quark_actor_type durable_counter;

#endif
