/*
 * sqlite.c - the SQLite storage: "sqlite:PATH", one file, durable on this
 * machine (docs/storage.md).
 *
 * SQLite's calls block, and a worker never blocks: one storage thread owns
 * the connection. A worker hands it its batch's writes in one go (flush:
 * one lock, one signal), and the thread commits everything that arrived
 * while it was busy in one transaction: WAL, synchronous=FULL, so one
 * fdatasync stores the writes of every worker's batches together (group
 * commit). Reads go as they come, in autocommit, before the next
 * transaction. Each request is finished (op.c) from the storage thread,
 * after its transaction's COMMIT returned.
 *
 * The table (readable with the sqlite3 command):
 *   CREATE TABLE quark_state (
 *     type TEXT NOT NULL, id TEXT NOT NULL,   -- the actor: its type name, id
 *     etag INTEGER NOT NULL,                  -- 1 at the first write, +1 each
 *     data BLOB,                              -- the encoded state; NULL: cleared
 *     updated_at INTEGER NOT NULL,            -- ms since the epoch
 *     PRIMARY KEY (type, id)) WITHOUT ROWID;
 */
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <uv.h>

#include "core/common.h"
#include "runtime/op.h"
#include "storage/storage.h"

/* A write's progress through its transaction (commit_writes). */
enum { JOB_PENDING, JOB_STORED, JOB_FINISHED };

typedef struct job {
    struct job *next;
    struct sq_pw *pw;
    qk_op *op;
    qk_state_rec *rec;             /* etag in, etag (and data) out */
    const uint8_t *data;           /* write: lent until the op is finished; NULL clears */
    size_t len;
    int state;                     /* write: JOB_* */
    size_t type_len, id_len;
    char key[];                    /* type, then id */
} job;

typedef struct sq {
    char *path;
    sqlite3 *db;                   /* the storage thread's */
    sqlite3_stmt *get, *insert, *update, *etag_of;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cv;                  /* work for the thread, or a pw's jobs all done */
    job *reads, *reads_tail;       /* waiting, under mu */
    job *writes, *writes_tail;
    bool stop;
} sq;

typedef struct sq_pw {
    sq *s;
    job *batch, *batch_tail;       /* writes of this worker's batch, not handed over yet */
    unsigned inflight;             /* handed over, not finished (under s->mu) */
} sq_pw;

/* ---- the storage thread ---- */

static void bind_key(sqlite3_stmt *st, const job *j)
{
    sqlite3_bind_text(st, 1, j->key, (int)j->type_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->key + j->type_len, (int)j->id_len, SQLITE_STATIC);
}

/* The stored etag of j's key (0: no record), or -1 on error. */
static long long stored_etag(sq *s, const job *j)
{
    sqlite3_stmt *st = s->etag_of;
    bind_key(st, j);
    int rc = sqlite3_step(st);
    long long v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : rc == SQLITE_DONE ? 0 : -1;
    sqlite3_reset(st);
    return v;
}

static void finish(job *j, const qk_outcome *o)
{
    qk_op_finish(j->op, o);
}

static void fail(job *j, quark_err err, const char *fmt, const char *detail)
{
    char text[600];
    snprintf(text, sizeof text, fmt, (int)j->type_len, j->key, (int)j->id_len,
             j->key + j->type_len, detail);
    qk_outcome o = qk_outcome_error(err, text);
    finish(j, &o);
}

static void do_read(sq *s, job *j)
{
    sqlite3_stmt *st = s->get;
    bind_key(st, j);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        qk_etag_of_version(j->rec->etag, (unsigned long long)sqlite3_column_int64(st, 0));
        qk_outcome o = {.data = sqlite3_column_blob(st, 1),
                        .len = (size_t)sqlite3_column_bytes(st, 1)};
        finish(j, &o); /* copied by the op (its home is the worker) */
    } else if (rc == SQLITE_DONE) {
        j->rec->etag[0] = '\0';
        qk_outcome o = {0};
        finish(j, &o);
    } else {
        fail(j, QUARK_ESTORAGE, "reading the state of %.*s '%.*s' from SQLite: %s",
             sqlite3_errmsg(s->db));
    }
    sqlite3_reset(st);
}

/* Run write j inside the open transaction: 1 written, 0 a conflict (with
 * *have the stored version), -1 an error. */
static int do_write(sq *s, job *j, long long want, long long *have, uint64_t now)
{
    sqlite3_stmt *st;
    if (want == 0) {
        if (!j->data) { /* clearing what was never stored: nothing to do */
            *have = stored_etag(s, j);
            return *have == 0 ? 1 : *have < 0 ? -1 : 0;
        }
        st = s->insert;
    } else {
        st = s->update;
        sqlite3_bind_int64(st, 5, want);
    }
    bind_key(st, j);
    if (j->data)
        sqlite3_bind_blob(st, 3, j->len ? (const void *)j->data : "", (int)j->len,
                          SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 3);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)now);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE)
        return -1;
    if (sqlite3_changes(s->db) == 1)
        return 1;
    *have = stored_etag(s, j);
    return *have < 0 ? -1 : 0;
}

/* One transaction for every write that came: group commit. */
static void commit_writes(sq *s, job *list)
{
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    uint64_t now = (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
    char *err = NULL;
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, &err) != SQLITE_OK) {
        for (job *j = list; j; j = j->next)
            fail(j, QUARK_ESTORAGE, "storing the state of %.*s '%.*s' in SQLite: %s",
                 err ? err : sqlite3_errmsg(s->db));
        sqlite3_free(err);
        return;
    }
    /* Each write (do_write): 1 stored (its etag set now, finished after
     * COMMIT), 0 a conflict (finished now: nothing of it is stored), -1 an
     * error: SQLite may have ended the transaction, so none of the batch is
     * trusted. */
    for (job *j = list; j; j = j->next) {
        long long want = qk_version_of_etag(j->rec->etag), have = 0;
        int r = want < 0 ? 0 : do_write(s, j, want, &have, now);
        if (r == 1) {
            j->state = JOB_STORED;
            if (want == 0 && !j->data)
                j->rec->etag[0] = '\0';
            else
                qk_etag_of_version(j->rec->etag, (unsigned long long)want + 1);
        } else if (r == 0) {
            char have_s[QK_ETAG_MAX], text[200];
            qk_etag_of_version(have_s, (unsigned long long)have);
            snprintf(text, sizeof text, "the stored state has etag '%s' but this write "
                     "expected '%s' (another activation wrote it)", have_s, j->rec->etag);
            fail(j, QUARK_ECONFLICT, "%.*s '%.*s': %s", text);
            j->state = JOB_FINISHED;
        } else {
            char text[400];
            snprintf(text, sizeof text, "%s", sqlite3_errmsg(s->db));
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            for (job *k = list; k; k = k->next)
                if (k->state != JOB_FINISHED)
                    fail(k, QUARK_ESTORAGE, "storing the state of %.*s '%.*s' in SQLite: %s",
                         text);
            return;
        }
    }
    int rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        char text[400];
        snprintf(text, sizeof text, "%s", err ? err : sqlite3_errmsg(s->db));
        sqlite3_free(err);
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        for (job *j = list; j; j = j->next)
            if (j->state == JOB_STORED)
                fail(j, QUARK_ESTORAGE, "committing the state of %.*s '%.*s' to SQLite: %s",
                     text);
        return;
    }
    for (job *j = list; j; j = j->next) {
        if (j->state == JOB_STORED) {
            qk_outcome o = {0};
            finish(j, &o);
        }
    }
}

static void free_jobs(sq *s, job *list)
{
    uv_mutex_lock(&s->mu);
    for (job *j = list; j;) {
        job *n = j->next;
        j->pw->inflight--;
        free(j);
        j = n;
    }
    uv_cond_broadcast(&s->cv); /* a detaching pw may wait for its last ones */
    uv_mutex_unlock(&s->mu);
}

static void sq_main(void *arg)
{
    sq *s = arg;
    uv_mutex_lock(&s->mu);
    for (;;) {
        while (!s->reads && !s->writes && !s->stop)
            uv_cond_wait(&s->cv, &s->mu);
        if (!s->reads && !s->writes && s->stop)
            break;
        job *reads = s->reads, *writes = s->writes;
        s->reads = s->reads_tail = s->writes = s->writes_tail = NULL;
        uv_mutex_unlock(&s->mu);
        for (job *j = reads; j; j = j->next)
            do_read(s, j);
        if (writes)
            commit_writes(s, writes);
        free_jobs(s, reads);
        free_jobs(s, writes);
        uv_mutex_lock(&s->mu);
    }
    uv_mutex_unlock(&s->mu);
}

/* ---- on the workers ---- */

static job *job_new(sq_pw *pw, const qk_actor_key *k, qk_state_rec *rec, qk_op *op)
{
    job *j = malloc(sizeof *j + k->type_len + k->id_len);
    if (!j) {
        qk_error(QUARK_ENOMEM, "out of memory queueing a storage request for %.*s '%.*s'",
                 (int)k->type_len, k->type, (int)k->id_len, k->id);
        return NULL;
    }
    j->next = NULL;
    j->pw = pw;
    j->op = op;
    j->rec = rec;
    j->data = NULL;
    j->len = 0;
    j->state = JOB_PENDING;
    j->type_len = k->type_len;
    j->id_len = k->id_len;
    memcpy(j->key, k->type, k->type_len);
    memcpy(j->key + k->type_len, k->id, k->id_len);
    return j;
}

static void hand_over(sq_pw *pw, job *first, job *last, unsigned n, bool write)
{
    sq *s = pw->s;
    uv_mutex_lock(&s->mu);
    job **head = write ? &s->writes : &s->reads, **tail = write ? &s->writes_tail : &s->reads_tail;
    if (*tail)
        (*tail)->next = first;
    else
        *head = first;
    *tail = last;
    pw->inflight += n;
    uv_cond_signal(&s->cv);
    uv_mutex_unlock(&s->mu);
}

static quark_err sq_read(void *p, const qk_actor_key *k, qk_state_rec *rec, qk_op *op)
{
    sq_pw *pw = p;
    job *j = job_new(pw, k, rec, op);
    if (!j)
        return QUARK_ENOMEM;
    hand_over(pw, j, j, 1, false);
    return QUARK_PENDING;
}

static quark_err sq_write(void *p, const qk_actor_key *k, const uint8_t *data, size_t len,
                          qk_state_rec *rec, qk_op *op)
{
    sq_pw *pw = p;
    job *j = job_new(pw, k, rec, op);
    if (!j)
        return QUARK_ENOMEM;
    j->data = data;
    j->len = len;
    if (pw->batch_tail)
        pw->batch_tail->next = j;
    else
        pw->batch = j;
    pw->batch_tail = j;
    return QUARK_PENDING;
}

static void sq_flush(void *p)
{
    sq_pw *pw = p;
    if (!pw->batch)
        return;
    unsigned n = 0;
    for (job *j = pw->batch; j; j = j->next)
        n++;
    hand_over(pw, pw->batch, pw->batch_tail, n, true);
    pw->batch = pw->batch_tail = NULL;
}

static void *sq_attach(void *self, struct qk_worker *w, uv_loop_t *loop)
{
    (void)w;
    (void)loop;
    sq_pw *pw = calloc(1, sizeof *pw);
    if (pw)
        pw->s = self;
    return pw;
}

static void sq_detach(void *self, void *p)
{
    sq *s = self;
    sq_pw *pw = p;
    sq_flush(pw); /* nothing is left unsent: its ops are finished below */
    uv_mutex_lock(&s->mu);
    while (pw->inflight)
        uv_cond_wait(&s->cv, &s->mu);
    uv_mutex_unlock(&s->mu);
    free(pw);
}

static void sq_close(sq *s)
{
    sqlite3_finalize(s->get);
    sqlite3_finalize(s->insert);
    sqlite3_finalize(s->update);
    sqlite3_finalize(s->etag_of);
    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

static void sq_destroy(void *self)
{
    sq *s = self;
    uv_mutex_lock(&s->mu);
    s->stop = true;
    uv_cond_signal(&s->cv);
    uv_mutex_unlock(&s->mu);
    uv_thread_join(&s->thread);
    uv_mutex_destroy(&s->mu);
    uv_cond_destroy(&s->cv);
    sq_close(s);
}

static const qk_storage_ops sq_ops = {
    .name = "sqlite",
    .attach = sq_attach,
    .detach = sq_detach,
    .read = sq_read,
    .write = sq_write,
    .flush = sq_flush,
    .destroy = sq_destroy,
};

/* Pages of 1 KiB (for a new file; an existing one keeps its own): each
 * write of a small state dirties one page of the B-tree, and this disk's
 * fdatasync takes longer the more it flushes (149 us for one 4 KiB page,
 * 436 us for 32: bench/fsync_pages.c), so a group commit costs about its
 * bytes. A checkpoint every 16,000 WAL frames (16 MiB) copies a page that
 * was written many times once. DurableCounter w2: 55k -> 90k writes/s
 * (docs/benchmarks.md). */
static const char schema[] =
    "PRAGMA page_size=1024;"
    "PRAGMA journal_mode=WAL;"
    "PRAGMA wal_autocheckpoint=16000;"
    "PRAGMA synchronous=FULL;"
    "CREATE TABLE IF NOT EXISTS quark_state ("
    " type TEXT NOT NULL, id TEXT NOT NULL, etag INTEGER NOT NULL, data BLOB,"
    " updated_at INTEGER NOT NULL, PRIMARY KEY (type, id)) WITHOUT ROWID;";

static quark_err sq_open(const char *spec, const char *path, const qk_storage_env *env,
                         const qk_storage_ops **ops, void **self)
{
    (void)env;
    if (!*path)
        return qk_error(QUARK_EINVAL, "storage '%s': give the file, as in "
                        "'sqlite:/var/lib/quark/state.db'", spec);
    sq *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return qk_error(QUARK_ENOMEM, "out of memory opening storage '%s'", spec);
    }
    int rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    char *err = NULL;
    const char *what = "opening";
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(s->db, 5000);
        what = "creating the table in";
        rc = sqlite3_exec(s->db, schema, NULL, NULL, &err);
    }
    if (rc == SQLITE_OK) {
        what = "preparing statements for";
        rc = sqlite3_prepare_v2(s->db, "SELECT etag, data FROM quark_state WHERE type = ?1 "
                                "AND id = ?2", -1, &s->get, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v2(s->db, "INSERT INTO quark_state (type, id, etag, data, "
                                    "updated_at) VALUES (?1, ?2, 1, ?3, ?4) ON CONFLICT "
                                    "(type, id) DO NOTHING", -1, &s->insert, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v2(s->db, "UPDATE quark_state SET etag = etag + 1, data = ?3, "
                                    "updated_at = ?4 WHERE type = ?1 AND id = ?2 AND "
                                    "etag = ?5", -1, &s->update, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v2(s->db, "SELECT etag FROM quark_state WHERE type = ?1 AND "
                                    "id = ?2", -1, &s->etag_of, NULL);
    }
    if (rc == SQLITE_OK && sqlite3_db_readonly(s->db, "main") == 1) {
        /* SQLite opens a file it may not write read-only, silently. */
        what = "writing to";
        rc = SQLITE_READONLY;
    }
    if (rc != SQLITE_OK) {
        quark_err e = qk_error(QUARK_ESTORAGE, "storage '%s': %s the SQLite file failed: %s",
                               spec, what, err ? err : rc == SQLITE_READONLY ? sqlite3_errstr(rc)
                                           : s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        sqlite3_free(err);
        sq_close(s);
        return e;
    }
    uv_mutex_init(&s->mu);
    uv_cond_init(&s->cv);
    if (uv_thread_create(&s->thread, sq_main, s) != 0) {
        uv_mutex_destroy(&s->mu);
        uv_cond_destroy(&s->cv);
        sq_close(s);
        return qk_error(QUARK_ENOMEM, "storage '%s': could not start its thread", spec);
    }
    *ops = &sq_ops;
    *self = s;
    return QUARK_OK;
}

const qk_storage_provider qk_storage_sqlite = {
    .prefix = "sqlite:",
    .usage = "sqlite:PATH",
    .open = sq_open,
};
