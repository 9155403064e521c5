/*
 * counter_actor.h - the CounterActor implementation of examples/counter.
 *
 * Linking counter_actor.c into a program registers the implementation under
 * "quark.examples.CounterActor" (it is mapped to the interface).
 */
#ifndef COUNTER_ACTOR_H
#define COUNTER_ACTOR_H

#include <quark/quark.h>

#include "counter.quark.h"

struct counter_state {
    int64_t value;
};

extern const quark_actor_type counter_actor;

#endif
