/*
 * quark/quark.h - everything a Quark program needs, in one include.
 *
 *   error.h      one error enum, messages per thread
 *   interface.h  the contract between protoc-gen-quark output and the runtime
 *   registry.h   actor types: type name <-> implementation
 *   actor.h      what an actor can do inside a turn (state, defer, timers)
 *   silo.h       hosting activations: workers, lifecycle, diagnostics
 *   client.h     connecting, actor references, blocking and async calls
 *   cluster.h    several silos as one cluster: status and views
 */
#ifndef QUARK_QUARK_H
#define QUARK_QUARK_H

#include "quark/version.h"
#include "quark/error.h"
#include "quark/interface.h"
#include "quark/registry.h"
#include "quark/actor.h"
#include "quark/client.h"
#include "quark/silo.h"
#include "quark/cluster.h"

#endif /* QUARK_QUARK_H */
