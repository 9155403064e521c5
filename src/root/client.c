/*
 * client.c - the composition root of a client: quark_client_create picks
 * its backend (runtime/ports.h): the embedded one for a silo of this
 * process, the remote one (transport/client.h) for a cluster.
 */
#include "runtime/runtime.h"
#include "transport/client.h"

quark_err quark_client_create(const quark_client_opts *opts, quark_client **out)
{
    if (!opts || !out)
        return qk_error(QUARK_EINVAL, "quark_client_create: %s is NULL", !opts ? "opts" : "out");
    *out = NULL;
    if (opts->embedded)
        return qk_client_new(opts, &qk_client_embedded, opts->embedded, out);
    if (opts->transport != QUARK_TRANSPORT_TCP && opts->transport != QUARK_TRANSPORT_GRPC)
        return qk_error(QUARK_EINVAL, "unknown transport %d: use QUARK_TRANSPORT_GRPC or "
                        "QUARK_TRANSPORT_TCP", (int)opts->transport);
    return qk_remote_client_new(opts, out);
}
