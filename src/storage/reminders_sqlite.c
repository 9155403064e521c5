/*
 * reminders_sqlite.c - reminders in an SQLite file (reminders.h), durable on
 * this machine. Its own connection, used only from the reminder service's
 * thread (every call blocks); WAL, synchronous=FULL: an upsert that
 * returned is on disk. The table, readable with the sqlite3 command:
 *
 *   CREATE TABLE quark_reminders (
 *     type TEXT NOT NULL, id BLOB NOT NULL, name BLOB NOT NULL,
 *     bucket INTEGER NOT NULL,            -- key hash % 256
 *     hash INTEGER NOT NULL,              -- the key hash (as a signed 64-bit)
 *     due_ms INTEGER NOT NULL,            -- wall clock of the next tick
 *     period_ms INTEGER NOT NULL,
 *     PRIMARY KEY (type, id, name)) WITHOUT ROWID;
 *   CREATE INDEX quark_reminders_bucket ON quark_reminders (bucket);
 */
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>

#include "core/common.h"
#include "storage/reminders.h"

typedef struct rem_sq {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *upsert, *remove, *list, *bucket;
} rem_sq;

static quark_err sq_fail(rem_sq *s, const char *what)
{
    return qk_error(QUARK_ESTORAGE, "reminders in SQLite %s: %s: %s", s->path, what,
                    sqlite3_errmsg(s->db));
}

static quark_err run(rem_sq *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    quark_err err = rc == SQLITE_DONE ? QUARK_OK : sq_fail(s, what);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

static void bind_key(sqlite3_stmt *st, const qk_actor_key *k)
{
    sqlite3_bind_text(st, 1, k->type, (int)k->type_len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, k->id, (int)k->id_len, SQLITE_STATIC);
}

static quark_err sq_upsert(void *self, const qk_reminder *r)
{
    rem_sq *s = self;
    bind_key(s->upsert, &r->key);
    sqlite3_bind_blob(s->upsert, 3, r->name, (int)r->name_len, SQLITE_STATIC);
    sqlite3_bind_int(s->upsert, 4, (int)qk_reminder_bucket(r->key.hash));
    sqlite3_bind_int64(s->upsert, 5, (sqlite3_int64)r->key.hash);
    sqlite3_bind_int64(s->upsert, 6, (sqlite3_int64)r->due_ms);
    sqlite3_bind_int64(s->upsert, 7, (sqlite3_int64)r->period_ms);
    return run(s, s->upsert, "storing a reminder");
}

static quark_err sq_remove(void *self, const qk_actor_key *key, const char *name,
                           size_t name_len, bool *existed)
{
    rem_sq *s = self;
    bind_key(s->remove, key);
    sqlite3_bind_blob(s->remove, 3, name, (int)name_len, SQLITE_STATIC);
    quark_err rc = run(s, s->remove, "removing a reminder");
    *existed = rc == QUARK_OK && sqlite3_changes(s->db) > 0;
    return rc;
}

/* Rows of st: type, id, name, hash, due_ms, period_ms. */
static quark_err rows(rem_sq *s, sqlite3_stmt *st, qk_reminder_fn fn, void *arg)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        qk_reminder r = {
            .key = {.type = (const char *)sqlite3_column_text(st, 0),
                    .type_len = (size_t)sqlite3_column_bytes(st, 0),
                    .id = sqlite3_column_blob(st, 1),
                    .id_len = (size_t)sqlite3_column_bytes(st, 1),
                    .hash = (uint64_t)sqlite3_column_int64(st, 3)},
            .name = sqlite3_column_blob(st, 2),
            .name_len = (size_t)sqlite3_column_bytes(st, 2),
            .due_ms = (uint64_t)sqlite3_column_int64(st, 4),
            .period_ms = (uint64_t)sqlite3_column_int64(st, 5)};
        if (!r.key.id)
            r.key.id = "";
        fn(arg, &r);
    }
    quark_err err = rc == SQLITE_DONE ? QUARK_OK : sq_fail(s, "reading reminders");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

static quark_err sq_list(void *self, const qk_actor_key *key, qk_reminder_fn fn, void *arg)
{
    rem_sq *s = self;
    bind_key(s->list, key);
    return rows(s, s->list, fn, arg);
}

static quark_err sq_load_bucket(void *self, uint32_t b, qk_reminder_fn fn, void *arg)
{
    rem_sq *s = self;
    if (b >= QK_REMINDER_BUCKETS)
        return qk_error(QUARK_EINVAL, "reminder bucket %u is out of range", b);
    sqlite3_bind_int(s->bucket, 1, (int)b);
    return rows(s, s->bucket, fn, arg);
}

static void sq_destroy(void *self)
{
    rem_sq *s = self;
    sqlite3_finalize(s->upsert);
    sqlite3_finalize(s->remove);
    sqlite3_finalize(s->list);
    sqlite3_finalize(s->bucket);
    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

static const qk_reminders_ops sq_ops = {
    .name = "sqlite",
    .upsert = sq_upsert,
    .remove = sq_remove,
    .list = sq_list,
    .load_bucket = sq_load_bucket,
    .destroy = sq_destroy,
};

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    "PRAGMA busy_timeout=5000;"
    "CREATE TABLE IF NOT EXISTS quark_reminders ("
    " type TEXT NOT NULL, id BLOB NOT NULL, name BLOB NOT NULL,"
    " bucket INTEGER NOT NULL, hash INTEGER NOT NULL,"
    " due_ms INTEGER NOT NULL, period_ms INTEGER NOT NULL,"
    " PRIMARY KEY (type, id, name)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS quark_reminders_bucket ON quark_reminders (bucket);";

quark_err qk_reminders_sqlite_open(const char *path, const qk_reminders_ops **ops, void **self)
{
    rem_sq *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return qk_error(QUARK_ENOMEM, "out of memory opening the reminders file");
    }
    quark_err rc = QUARK_OK;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                          SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
        rc = sq_fail(s, "opening");
    else if (sqlite3_exec(s->db, schema, NULL, NULL, NULL) != SQLITE_OK)
        rc = sq_fail(s, "creating the table");
    else if (sqlite3_prepare_v2(s->db,
                                "INSERT INTO quark_reminders VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                                "ON CONFLICT (type, id, name) DO UPDATE SET "
                                "due_ms = excluded.due_ms, period_ms = excluded.period_ms",
                                -1, &s->upsert, NULL) != SQLITE_OK ||
             sqlite3_prepare_v2(s->db, "DELETE FROM quark_reminders WHERE type = ?1 AND "
                                "id = ?2 AND name = ?3", -1, &s->remove, NULL) != SQLITE_OK ||
             sqlite3_prepare_v2(s->db, "SELECT type, id, name, hash, due_ms, period_ms FROM "
                                "quark_reminders WHERE type = ?1 AND id = ?2", -1, &s->list,
                                NULL) != SQLITE_OK ||
             sqlite3_prepare_v2(s->db, "SELECT type, id, name, hash, due_ms, period_ms FROM "
                                "quark_reminders WHERE bucket = ?1", -1, &s->bucket,
                                NULL) != SQLITE_OK)
        rc = sq_fail(s, "preparing statements");
    if (rc != QUARK_OK) {
        sq_destroy(s);
        return rc;
    }
    *ops = &sq_ops;
    *self = s;
    return QUARK_OK;
}
