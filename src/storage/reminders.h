/*
 * reminders.h - the reminder providers (runtime/providers.h's reminders
 * table) and choosing one by its spec string (quark_silo_opts.reminders):
 *
 *   memory                 in this process (reminders_memory.c): they
 *                          outlive activations, not the silo. The default.
 *   sqlite:PATH            an SQLite file (reminders_sqlite.c), table
 *                          quark_reminders.
 *   redis://HOST:PORT[/DB] a Redis server (reminders_redis.c), one hash per
 *                          bucket: <cluster_id>/reminders/<bucket>.
 */
#ifndef QK_REMINDERS_H
#define QK_REMINDERS_H

#include "runtime/providers.h"

/* Open the reminder store `spec` names (NULL or "": memory) for cluster
 * `cluster_id`. On failure the error says what is wrong with the spec or
 * the store. */
quark_err qk_reminders_open(const char *spec, const char *cluster_id,
                            const qk_reminders_ops **ops, void **self);

quark_err qk_reminders_memory_open(const qk_reminders_ops **ops, void **self);
quark_err qk_reminders_sqlite_open(const char *path, const qk_reminders_ops **ops, void **self);
quark_err qk_reminders_redis_open(const char *spec, const char *cluster_id,
                                  const qk_reminders_ops **ops, void **self);

/* The field that names (type, id, name) in a bucket of a store that keys
 * by one string (Redis, the memory store): "<type>/<id_len>:<id><name>",
 * unambiguous for any bytes. Returns its length (cap must hold
 * type_len + id_len + name_len + 24). qk_reminder_field_parse is the
 * inverse: false if f is not such a field. */
size_t qk_reminder_field(char *out, const qk_actor_key *key, const char *name, size_t name_len);
/* The actor's part of its fields ("<type>/<id_len>:<id>", malloc'd, *len its
 * length): every field of its reminders begins with it. NULL: no memory. */
char *qk_reminder_actor_prefix(const qk_actor_key *key, size_t *len);
bool qk_reminder_field_parse(const char *f, size_t len, qk_reminder *r);

#endif /* QK_REMINDERS_H */
