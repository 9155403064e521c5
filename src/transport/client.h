/*
 * client.h - the remote client backend: a quark_client whose calls go to the
 * silos of a cluster (client.c over remote.c).
 */
#ifndef QK_TRANSPORT_CLIENT_H
#define QK_TRANSPORT_CLIENT_H

#include "runtime/runtime.h"

/* A client of opts (not embedded) connecting to opts->connection_string. */
quark_err qk_remote_client_new(const quark_client_opts *opts, quark_client **out);

#endif /* QK_TRANSPORT_CLIENT_H */
