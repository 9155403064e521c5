/*
 * gossip.h - the gossip membership provider (gossip.c): static seeds, the
 * protocol of membership.h over the silo's peer link.
 */
#ifndef QK_GOSSIP_H
#define QK_GOSSIP_H

#include "runtime/providers.h"
#include "transport/remote.h"

/* The membership table (runtime/providers.h) of a gossip provider. */
extern const qk_membership_ops qk_membership_gossip;

/* A gossip provider for a silo of `opts` (seeds, heartbeat_ms,
 * failure_timeout_ms, vnodes, cluster_id) that goes by `self_addr` in
 * views, talking through the peer link `peer`. */
quark_err qk_gossip_new(const quark_silo_opts *opts, const char *self_addr, qk_remote *peer,
                        void **out);

#endif /* QK_GOSSIP_H */
