/*
 * storage.h - the storage providers (runtime/providers.h's storage table)
 * and choosing one by its spec string (quark_silo_opts.storage, --storage):
 *
 *   memory                 records in this process (storage/memory.c): they
 *                          outlive activations, not the silo. The default.
 *   sqlite:PATH            an SQLite file (storage/sqlite.c): WAL, one
 *                          fsync per group commit.
 *   redis://HOST:PORT[/DB] a Redis server (storage/redis.c).
 */
#ifndef QK_STORAGE_H
#define QK_STORAGE_H

#include <stdio.h>

#include "runtime/providers.h"

/* What a provider may need to know of the silo it serves. */
typedef struct qk_storage_env {
    const char *cluster_id;        /* names the records (Redis keys) */
} qk_storage_env;

/* Open the storage `spec` names (NULL or "": memory). On failure the error
 * says what is wrong with the spec or the storage. */
quark_err qk_storage_open(const char *spec, const qk_storage_env *env,
                          const qk_storage_ops **ops, void **self);

/* One provider: its spec prefix and how to open it (rest: the spec after
 * the prefix). */
typedef struct qk_storage_provider {
    const char *prefix;
    const char *usage;
    quark_err (*open)(const char *spec, const char *rest, const qk_storage_env *env,
                      const qk_storage_ops **ops, void **self);
} qk_storage_provider;

extern const qk_storage_provider qk_storage_memory;
extern const qk_storage_provider qk_storage_sqlite;
extern const qk_storage_provider qk_storage_redis;

/* Etags of providers that keep a version number: "" for 0 (no record);
 * versions fit QK_ETAG_MAX - 1 digits (10^18 writes of one actor). */
static inline void qk_etag_of_version(char *etag, unsigned long long v)
{
    char digits[QK_ETAG_MAX];
    int n = 0;
    while (v && n < QK_ETAG_MAX - 1) {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    }
    for (int i = 0; i < n; i++)
        etag[i] = digits[n - 1 - i];
    etag[n] = '\0';
}
/* The version an etag names (0 for ""); -1 if it is no version of ours. */
static inline long long qk_version_of_etag(const char *etag)
{
    if (!etag[0])
        return 0;
    unsigned long long v = 0;
    for (const char *p = etag; *p; p++) {
        if (*p < '0' || *p > '9' || p - etag >= QK_ETAG_MAX - 1)
            return -1;
        v = v * 10 + (unsigned)(*p - '0');
    }
    return (long long)v;
}

#endif /* QK_STORAGE_H */
