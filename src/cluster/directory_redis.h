/*
 * directory_redis.h - the Redis actor directory (directory_redis.c): one
 * entry per activation in Redis, judged by the Redis member table.
 */
#ifndef QK_DIRECTORY_REDIS_H
#define QK_DIRECTORY_REDIS_H

#include "runtime/runtime.h"
#include "runtime/providers.h"

#define QK_DIR_TTL_MS 300000u      /* an entry's life without a refresh */
#define QK_DIR_TIMEOUT_MS 5000u    /* Redis silent this long: the connection goes */

typedef struct qk_dir_redis qk_dir_redis;

typedef struct qk_dir_redis_cfg {
    const char *spec;              /* "redis://HOST:PORT[/DB]" */
    const char *cluster_id;
    const char *self_addr;         /* as in the member table */
    uint32_t ttl_ms;               /* 0: QK_DIR_TTL_MS */
    /* this silo's incarnation now (the membership provider's) */
    uint64_t (*incarnation)(void *arg);
    void *incarnation_arg;
} qk_dir_redis_cfg;

extern const qk_directory_ops qk_directory_redis;

quark_err qk_dir_redis_new(const qk_dir_redis_cfg *cfg, qk_dir_redis **out);
/* After every worker state was detached. */
void qk_dir_redis_free(qk_dir_redis *d);

#endif /* QK_DIRECTORY_REDIS_H */
