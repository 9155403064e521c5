/*
 * storage.c - choosing a storage provider by its spec (storage.h).
 * Adding a provider: its file, and one line in `providers`.
 */
#include <string.h>

#include "core/common.h"
#include "storage/storage.h"

static const qk_storage_provider *const providers[] = {
    &qk_storage_memory,
    &qk_storage_sqlite,
    &qk_storage_redis,
};

quark_err qk_storage_open(const char *spec, const qk_storage_env *env,
                          const qk_storage_ops **ops, void **self)
{
    static const qk_storage_env none = {.cluster_id = "default"};
    if (!env)
        env = &none;
    if (!spec || !*spec)
        spec = "memory";
    char usage[400] = "";
    size_t u = 0;
    for (size_t i = 0; i < sizeof providers / sizeof providers[0]; i++) {
        const qk_storage_provider *p = providers[i];
        size_t n = strlen(p->prefix);
        if (strncmp(spec, p->prefix, n) == 0)
            return p->open(spec, spec + n, env, ops, self);
        int k = snprintf(usage + u, sizeof usage - u, "%s'%s'", i ? ", " : "", p->usage);
        if (k > 0 && (size_t)k < sizeof usage - u)
            u += (size_t)k;
    }
    return qk_error(QUARK_EINVAL, "storage '%s': unknown kind; use one of %s", spec, usage);
}
