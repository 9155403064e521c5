/*
 * reminders.c - choosing a reminder provider by its spec, and the field
 * encoding the string-keyed ones share (reminders.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "storage/reminders.h"

quark_err qk_reminders_open(const char *spec, const char *cluster_id,
                            const qk_reminders_ops **ops, void **self)
{
    if (!spec || !*spec || !strcmp(spec, "memory"))
        return qk_reminders_memory_open(ops, self);
    if (!strncmp(spec, "sqlite:", 7) && spec[7])
        return qk_reminders_sqlite_open(spec + 7, ops, self);
    if (!strncmp(spec, "redis://", 8))
        return qk_reminders_redis_open(spec, cluster_id ? cluster_id : "default", ops, self);
    return qk_error(QUARK_EINVAL, "reminders '%s': unknown kind; use one of 'memory', "
                    "'sqlite:PATH', 'redis://HOST:PORT[/DB]'", spec);
}

size_t qk_reminder_field(char *out, const qk_actor_key *key, const char *name, size_t name_len)
{
    size_t n = 0;
    memcpy(out, key->type, key->type_len);
    n += key->type_len;
    n += (size_t)sprintf(out + n, "/%zu:", key->id_len);
    memcpy(out + n, key->id, key->id_len);
    n += key->id_len;
    memcpy(out + n, name, name_len);
    n += name_len;
    out[n] = '\0';
    return n;
}

char *qk_reminder_actor_prefix(const qk_actor_key *key, size_t *len)
{
    char *p = malloc(key->type_len + key->id_len + 24);
    if (p)
        *len = qk_reminder_field(p, key, "", 0);
    return p;
}

bool qk_reminder_field_parse(const char *f, size_t len, qk_reminder *r)
{
    const char *slash = memchr(f, '/', len); /* a type name has no '/' */
    if (!slash)
        return false;
    const char *p = slash + 1, *end = f + len;
    size_t id_len = 0;
    while (p < end && *p >= '0' && *p <= '9')
        id_len = id_len * 10 + (size_t)(*p++ - '0');
    if (p == slash + 1 || p >= end || *p != ':' || (size_t)(end - p - 1) <= id_len)
        return false;
    r->key.type = f;
    r->key.type_len = (size_t)(slash - f);
    r->key.id = p + 1;
    r->key.id_len = id_len;
    r->name = p + 1 + id_len;
    r->name_len = (size_t)(end - r->name);
    return true;
}
