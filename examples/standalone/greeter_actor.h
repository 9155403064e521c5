/* greeter_actor.h - the Greeter actor (greeter_actor.c). */
#ifndef GREETER_ACTOR_H
#define GREETER_ACTOR_H

#include <quark/quark.h>

#include "greeter.quark.h" /* generated from greeter.proto by quark_generate() */

/* Registered at program load under "demo.greeter.Greeter". */
extern const quark_actor_type greeter_actor;

#endif
