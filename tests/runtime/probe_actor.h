/* probe_actor.h - the Probe test actor (see probe.proto) and its counters. */
#ifndef PROBE_ACTOR_H
#define PROBE_ACTOR_H

#include <stdatomic.h>

#include <quark/quark.h>

#include "probe.quark.h"

extern atomic_long probe_activations;
extern atomic_long probe_deactivations;
extern const quark_actor_type probe_actor;

#endif
