/*
 * membership_redis.h - the Redis membership provider (membership_redis.c):
 * the cluster's member table is one hash in Redis; no seeds.
 */
#ifndef QK_MEMBERSHIP_REDIS_H
#define QK_MEMBERSHIP_REDIS_H

#include "runtime/providers.h"

#define QK_MEMBERS_PRUNE_MS (10u * 60u * 1000u) /* dead and left rows go after this */

typedef struct qk_redis_members_cfg {
    const char *spec;             /* "redis://HOST:PORT[/DB]" */
    const char *cluster_id;       /* the hash: "<cluster_id>/members" */
    const char *self_addr;        /* "host:port" as advertised */
    uint32_t heartbeat_ms;
    uint32_t failure_timeout_ms;
    unsigned vnodes;              /* carried in every view */
    uint32_t prune_ms;            /* 0: QK_MEMBERS_PRUNE_MS */
} qk_redis_members_cfg;

/* The membership table (runtime/providers.h) of a Redis provider. */
extern const qk_membership_ops qk_membership_redis;

/* A provider for cfg (copied). QUARK_EINVAL if the spec names no server. */
quark_err qk_membership_redis_new(const qk_redis_members_cfg *cfg, void **out);

#endif /* QK_MEMBERSHIP_REDIS_H */
