/*
 * state_test.c - persistent actor state in a silo (docs/storage.md), with
 * DurableCounter (examples/counter/durable_counter.c) on the memory and
 * SQLite storages: loading before the first turn, write-before-ack checked
 * against the file itself, ETag conflicts between two silos sharing a file,
 * a record that does not decode, a read-only and a full SQLite file, Redis
 * down for 10 s under load (the rest of the silo keeps serving), a spec that
 * names no storage.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sqlite3.h>

#include "testutil.h"
#include "../storage/redis_server.h"
#include "counter_actor.h"
#include "journal.pb-c.h"

static char g_dir[256];

static quark_ref *durable(tu_env *e, const char *id)
{
    quark_ref *r;
    TU_OK(quark_ref_new(e->client, &quark_examples_CounterActor_interface, DURABLE_COUNTER_TYPE,
                        id, &r));
    return r;
}

static quark_err incr(quark_ref *r, int64_t delta, int64_t *value)
{
    Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    req.delta = delta;
    Quark__Examples__CounterValue *v = NULL;
    quark_err rc = quark_examples_CounterActor_Increment(r, &req, &v);
    if (rc == QUARK_OK && value)
        *value = v->value;
    quark_msg_free(v);
    return rc;
}

static int64_t get(quark_ref *r)
{
    Quark__Examples__GetRequest req = QUARK__EXAMPLES__GET_REQUEST__INIT;
    Quark__Examples__CounterValue *v = NULL;
    TU_OK(quark_examples_CounterActor_Get(r, &req, &v));
    int64_t x = v->value;
    quark_msg_free(v);
    return x;
}

static const char *sqlite_spec(const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "sqlite:%s/%s", g_dir, name);
    return buf;
}

/* The value stored for DurableCounter `id` in the file, read with SQLite
 * itself (-1: no record). */
static int64_t stored_value(const char *spec, const char *id, long long *etag)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(spec + 7, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT etag, data FROM quark_state WHERE type = ?1 "
                                        "AND id = ?2", -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_text(st, 1, DURABLE_COUNTER_TYPE, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    int64_t v = -1;
    if (sqlite3_step(st) == SQLITE_ROW) {
        if (etag)
            *etag = sqlite3_column_int64(st, 0);
        Quark__Examples__CounterState *cs = quark__examples__counter_state__unpack(
            NULL, (size_t)sqlite3_column_bytes(st, 1), sqlite3_column_blob(st, 1));
        assert_non_null(cs);
        v = cs->value;
        quark__examples__counter_state__free_unpacked(cs, NULL);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* Memory storage: the value outlives its activation (idle collection). */
static void memory_outlives_activation(void **state)
{
    (void)state;
    tu_env e;
    tu_env_start_on(&e, 2, 100, NULL);
    quark_ref *r = durable(&e, "m1");
    int64_t v = 0;
    for (int i = 0; i < 5; i++)
        TU_OK(incr(r, 2, &v));
    assert_int_equal(v, 10);
    assert_true(TU_WAIT_UNTIL(quark_silo_activation_count(e.silo, DURABLE_COUNTER_TYPE) == 0,
                              10000));
    assert_int_equal(get(r), 10);
    /* The in-memory CounterActor does not keep its value. */
    quark_ref *c;
    TU_OK(quark_examples_CounterActor_ref(e.client, "m1", &c));
    assert_int_equal(get(c), 0);
    quark_ref_free(c);
    quark_ref_free(r);
    tu_env_stop(&e);
}

/* SQLite: every acknowledged increment is in the file when the reply comes,
 * and the value survives the silo. */
static void sqlite_write_before_ack_and_restart(void **state)
{
    (void)state;
    char spec[400];
    sqlite_spec("wba.db", spec, sizeof spec);
    tu_env e;
    tu_env_start_on(&e, 2, 0, spec);
    quark_ref *r = durable(&e, "s1");
    for (int i = 1; i <= 50; i++) {
        int64_t v;
        TU_OK(incr(r, 1, &v));
        assert_int_equal(v, i);
        assert_int_equal(stored_value(spec, "s1", NULL), i); /* stored before the reply */
    }
    quark_ref_free(r);
    tu_env_stop(&e);
    tu_env_start_on(&e, 3, 0, spec); /* another worker count: the key moves, the value stays */
    r = durable(&e, "s1");
    assert_int_equal(get(r), 50);
    int64_t v;
    TU_OK(incr(r, 5, &v));
    assert_int_equal(v, 55);
    quark_ref_free(r);
    tu_env_stop(&e);
    assert_int_equal(stored_value(spec, "s1", NULL), 55);
}

typedef struct flood {
    quark_ref *ref;
    int n;
    _Atomic int acked, failed;
    pthread_mutex_t mu;
    int64_t max_seen;
} flood;

static void flood_cb(quark_err err, const char *errmsg, const Quark__Examples__CounterValue *v,
                     void *arg)
{
    (void)errmsg;
    flood *f = arg;
    if (err == QUARK_OK) {
        pthread_mutex_lock(&f->mu);
        if (v->value > f->max_seen)
            f->max_seen = v->value;
        pthread_mutex_unlock(&f->mu);
        atomic_fetch_add(&f->acked, 1);
    } else {
        atomic_fetch_add(&f->failed, 1);
    }
}

/* Many calls in flight on many actors: all acknowledged, all stored (the
 * writes of a batch are grouped; the values are exact). */
static void sqlite_pipelined_many_actors(void **state)
{
    (void)state;
    char spec[400];
    sqlite_spec("pipe.db", spec, sizeof spec);
    tu_env e;
    tu_env_start_on(&e, 2, 0, spec);
    enum { ACTORS = 40, PER = 100 };
    flood f[ACTORS];
    for (int a = 0; a < ACTORS; a++) {
        char id[16];
        snprintf(id, sizeof id, "p%d", a);
        f[a] = (flood){.ref = durable(&e, id)};
        pthread_mutex_init(&f[a].mu, NULL);
    }
    Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    req.delta = 1;
    for (int i = 0; i < PER; i++)
        for (int a = 0; a < ACTORS; a++)
            TU_OK(quark_examples_CounterActor_Increment_async(f[a].ref, &req, flood_cb, &f[a]));
    for (int a = 0; a < ACTORS; a++)
        assert_true(TU_WAIT_UNTIL(atomic_load(&f[a].acked) + atomic_load(&f[a].failed) == PER,
                                  60000));
    for (int a = 0; a < ACTORS; a++) {
        char id[16];
        snprintf(id, sizeof id, "p%d", a);
        assert_int_equal(atomic_load(&f[a].failed), 0);
        assert_int_equal(f[a].max_seen, PER);
        assert_int_equal(stored_value(spec, id, NULL), PER);
        quark_ref_free(f[a].ref);
        pthread_mutex_destroy(&f[a].mu);
    }
    tu_env_stop(&e);
}

/* Two silos share one file: the one whose etag is stale gets ECONFLICT, is
 * deactivated, and the next call reloads what the other stored. */
static void sqlite_conflict_between_silos(void **state)
{
    (void)state;
    char spec[400];
    sqlite_spec("conflict.db", spec, sizeof spec);
    tu_env a, b;
    tu_env_start_on(&a, 1, 0, spec);
    tu_env_start_on(&b, 1, 0, spec);
    quark_ref *ra = durable(&a, "x"), *rb = durable(&b, "x");
    int64_t v;
    TU_OK(incr(ra, 1, &v)); /* a: etag 1, value 1 */
    assert_int_equal(v, 1);
    TU_OK(incr(rb, 10, &v)); /* b loads 1, stores 11 (etag 2) */
    assert_int_equal(v, 11);
    quark_err rc = incr(ra, 100, &v); /* a still holds etag 1 */
    assert_int_equal(rc, QUARK_ECONFLICT);
    const char *msg = quark_last_error();
    assert_non_null(strstr(msg, DURABLE_COUNTER_TYPE));
    assert_non_null(strstr(msg, "'x'"));
    assert_non_null(strstr(msg, "'2'"));
    assert_non_null(strstr(msg, "'1'"));
    assert_int_equal(stored_value(spec, "x", NULL), 11); /* never overwritten */
    TU_OK(incr(ra, 100, &v)); /* a reloaded: 11 + 100 */
    assert_int_equal(v, 111);
    assert_int_equal(get(rb), 11); /* b's activation still holds its own */
    rc = incr(rb, 1, &v);
    assert_int_equal(rc, QUARK_ECONFLICT);
    assert_int_equal(get(rb), 111);
    quark_ref_free(ra);
    quark_ref_free(rb);
    tu_env_stop(&a);
    tu_env_stop(&b);
}

/* A stored record that does not decode fails the calls that wait for it,
 * with a message naming it, and leaves no activation. */
static void sqlite_record_that_does_not_decode(void **state)
{
    (void)state;
    char spec[400];
    sqlite_spec("bad.db", spec, sizeof spec);
    tu_env e;
    tu_env_start_on(&e, 1, 0, spec);
    quark_ref *r = durable(&e, "good");
    TU_OK(incr(r, 1, NULL));
    quark_ref_free(r);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(spec + 7, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO quark_state VALUES ('DurableCounter', 'bad', "
                                  "1, x'ffffffff', 0)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    r = durable(&e, "bad");
    int64_t v;
    assert_int_equal(incr(r, 1, &v), QUARK_ESTORAGE);
    assert_non_null(strstr(quark_last_error(), "does not decode"));
    assert_non_null(strstr(quark_last_error(), "quark.examples.CounterState"));
    assert_int_equal(quark_silo_activation_count(e.silo, DURABLE_COUNTER_TYPE), 1); /* good */
    quark_ref_free(r);
    tu_env_stop(&e);
}

/* A file that cannot be written: the silo does not start, and says why.
 * As root permissions do not stop writes, so the file is made immutable. */
static void sqlite_read_only_file(void **state)
{
    (void)state;
    char spec[400], cmd[600];
    sqlite_spec("ro.db", spec, sizeof spec);
    tu_env e;
    tu_env_start_on(&e, 1, 0, spec);
    quark_ref *r = durable(&e, "ro");
    TU_OK(incr(r, 1, NULL));
    quark_ref_free(r);
    tu_env_stop(&e);
    if (geteuid() == 0) {
        snprintf(cmd, sizeof cmd, "chattr +i '%s' 2>&1", spec + 7);
        if (system(cmd) != 0)
            fail_msg("cannot make %s read-only as root: chattr +i failed (a filesystem "
                     "without attributes?)", spec + 7);
    } else {
        chmod(spec + 7, 0444);
    }
    quark_silo_opts so;
    quark_silo_opts_init(&so);
    so.storage = spec;
    quark_silo *s = NULL;
    quark_err rc = quark_silo_create(&so, &s);
    char msg[600];
    snprintf(msg, sizeof msg, "%s", quark_last_error());
    if (geteuid() == 0) {
        snprintf(cmd, sizeof cmd, "chattr -i '%s'", spec + 7);
        if (system(cmd) != 0)
            fprintf(stderr, "could not undo chattr +i on %s\n", spec + 7);
    }
    if (s)
        quark_silo_free(s);
    assert_int_equal(rc, QUARK_ESTORAGE);
    assert_null(s);
    assert_non_null(strstr(msg, "ro.db"));
    assert_non_null(strstr(msg, "readonly"));
}

/* A full disk (here: the file size limit of this process, RLIMIT_FSIZE, so
 * writes fail with EFBIG as they would with ENOSPC): increments fail with
 * QUARK_ESTORAGE and the reason, nothing acknowledged is lost, the silo
 * keeps serving, and once there is room again everything works. */
static void sqlite_full_disk(void **state)
{
    (void)state;
    char spec[400];
    sqlite_spec("full.db", spec, sizeof spec);
    tu_env e;
    tu_env_start_on(&e, 2, 0, spec);
    quark_ref *c;
    TU_OK(quark_examples_CounterActor_ref(e.client, "bystander", &c));
    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, SIG_IGN);
    struct stat st;
    char wal[450];
    snprintf(wal, sizeof wal, "%s-wal", spec + 7);
    off_t used = 0;
    if (stat(spec + 7, &st) == 0)
        used = st.st_size;
    if (stat(wal, &st) == 0 && st.st_size > used)
        used = st.st_size;
    struct rlimit lim = {.rlim_cur = (rlim_t)used + 256 * 1024, .rlim_max = old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    /* Fill it: many actors, until a write fails. */
    int64_t acked[400] = {0};
    quark_err rc = QUARK_OK;
    char why[600] = "";
    int failed_at = -1;
    for (int round = 0; round < 200 && failed_at < 0; round++) {
        for (int i = 0; i < 400; i++) {
            char id[64];
            snprintf(id, sizeof id, "fill-%d-with-a-longer-id-to-take-room", i);
            quark_ref *r = durable(&e, id);
            int64_t v;
            rc = incr(r, 1, &v);
            quark_ref_free(r);
            if (rc != QUARK_OK) {
                snprintf(why, sizeof why, "%s", quark_last_error());
                failed_at = i;
                break;
            }
            acked[i] = v;
        }
    }
    assert_true(failed_at >= 0);
    assert_int_equal(rc, QUARK_ESTORAGE);
    assert_non_null(strstr(why, "SQLite"));
    assert_non_null(strstr(why, "full") ? strstr(why, "full") : strstr(why, "disk I/O"));
    /* The silo serves what needs no storage. */
    assert_int_equal(get(c), 0);
    int64_t v;
    Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    req.delta = 3;
    Quark__Examples__CounterValue *cv;
    TU_OK(quark_examples_CounterActor_Increment(c, &req, &cv));
    quark_msg_free(cv);
    /* Room again: the failed actor works again, and nothing acknowledged is lost. */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    for (int i = 0; i < 400; i++) {
        char id[64];
        snprintf(id, sizeof id, "fill-%d-with-a-longer-id-to-take-room", i);
        quark_ref *r = durable(&e, id);
        quark_err rc2 = QUARK_ESTORAGE;
        uint64_t end = tu_now_ms() + 10000;
        while ((rc2 = incr(r, 1, &v)) == QUARK_ESTORAGE && tu_now_ms() < end)
            tu_sleep_ms(10);
        TU_OK(rc2);
        assert_true(v >= acked[i] + 1);
        quark_ref_free(r);
    }
    quark_ref_free(c);
    tu_env_stop(&e);
}

typedef struct bg_load {
    quark_ref *ref;
    atomic_bool run;
    _Atomic long ok, estorage, unknown, other;
} bg_load;

static void *bg_main(void *arg)
{
    bg_load *b = arg;
    while (atomic_load(&b->run)) {
        quark_err rc = incr(b->ref, 1, NULL);
        if (rc == QUARK_OK)
            atomic_fetch_add(&b->ok, 1);
        else if (rc == QUARK_ESTORAGE)
            atomic_fetch_add(&b->estorage, 1);
        else if (rc == QUARK_EUNKNOWN) /* in flight as Redis went */
            atomic_fetch_add(&b->unknown, 1);
        else
            atomic_fetch_add(&b->other, 1);
    }
    return NULL;
}

/* Redis killed for 10 s under load, then back: the call in flight then ends
 * QUARK_EUNKNOWN, DurableCounter calls fail at once with QUARK_ESTORAGE
 * meanwhile, the in-memory counter keeps being
 * served, and once Redis is back the silo recovers by itself. */
static void redis_down_ten_seconds_under_load(void **state)
{
    (void)state;
    redis_server rs = {0};
    assert_int_equal(rs_start(&rs, 0), 0);
    char spec[64];
    snprintf(spec, sizeof spec, "redis://127.0.0.1:%d", rs.port);
    tu_env e;
    tu_env_start_on(&e, 2, 0, spec);
    bg_load b = {.ref = durable(&e, "under-load")};
    atomic_store(&b.run, true);
    pthread_t th;
    pthread_create(&th, NULL, bg_main, &b);
    assert_true(TU_WAIT_UNTIL(atomic_load(&b.ok) > 100, 20000));
    rs_kill(&rs, SIGKILL);
    uint64_t t0 = tu_now_ms();
    assert_true(TU_WAIT_UNTIL(atomic_load(&b.estorage) > 10, 10000));
    quark_ref *c;
    TU_OK(quark_examples_CounterActor_ref(e.client, "bystander", &c));
    long served = 0;
    while (tu_now_ms() - t0 < 10000) {
        Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
        req.delta = 1;
        Quark__Examples__CounterValue *cv;
        TU_OK(quark_examples_CounterActor_Increment(c, &req, &cv));
        quark_msg_free(cv);
        served++;
        tu_sleep_ms(5);
    }
    assert_true(served > 100);
    long ok_before = atomic_load(&b.ok);
    assert_int_equal(rs_start(&rs, rs.port), 0);
    assert_true(TU_WAIT_UNTIL(atomic_load(&b.ok) > ok_before + 100, 30000));
    atomic_store(&b.run, false);
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&b.other), 0); /* only the storage errors, never another */
    assert_true(atomic_load(&b.unknown) <= 2);  /* the one call in flight as Redis went */
    printf("  redis down 10 s: %ld increments stored, %ld refused with QUARK_ESTORAGE, "
           "%ld bystander calls served meanwhile\n", atomic_load(&b.ok),
           atomic_load(&b.estorage), served);
    quark_ref_free(c);
    quark_ref_free(b.ref);
    tu_env_stop(&e);
    rs_stop(&rs);
}

/* ---- a state with many repeated elements ---- */

/* JournalCounter: CounterActor whose state is a Journal of one entry per
 * unit incremented; Get returns how many entries it holds. */
static quark_err journal_increment(quark_actor *self, const Quark__Examples__IncrementRequest *req,
                                   Quark__Examples__CounterValue *reply)
{
    const Quark__Test__Journal *j = (const Quark__Test__Journal *)quark_actor_persistent(self);
    size_t n = j->n_entries + (size_t)req->delta;
    char **e = quark_actor_alloc(self, n * sizeof *e);
    if (!e)
        return quark_actor_fail(self, QUARK_ENOMEM, "no memory");
    for (size_t i = 0; i < j->n_entries; i++)
        e[i] = j->entries[i];
    for (size_t i = j->n_entries; i < n; i++) {
        e[i] = quark_actor_alloc(self, 32);
        snprintf(e[i], 32, "entry-%zu", i);
    }
    Quark__Test__Journal nj = QUARK__TEST__JOURNAL__INIT;
    nj.n_entries = n;
    nj.entries = e;
    quark_err rc = quark_actor_state_set(self, &nj.base); /* copies it */
    if (rc != QUARK_OK)
        return quark_actor_fail(self, rc, "%s", quark_last_error());
    reply->value = (int64_t)n;
    return QUARK_OK;
}

static quark_err journal_get(quark_actor *self, const Quark__Examples__GetRequest *req,
                             Quark__Examples__CounterValue *reply)
{
    (void)req;
    const Quark__Test__Journal *j = (const Quark__Test__Journal *)quark_actor_persistent(self);
    reply->value = (int64_t)j->n_entries;
    if (j->n_entries && strcmp(j->entries[j->n_entries - 1], "") == 0)
        return quark_actor_fail(self, QUARK_EACTOR, "empty last entry");
    return QUARK_OK;
}

static const quark_examples_CounterActor_methods journal_methods = {
    .Increment = journal_increment,
    .Get = journal_get,
};

QUARK_ACTOR_TYPE(journal_counter,
                 .interface = &quark_examples_CounterActor_interface,
                 .methods = &journal_methods,
                 .name = "JournalCounter",
                 .persistent = &quark__test__journal__descriptor)

/* 5,000 entries stored, read back by a new silo (decoding them, protobuf-c
 * frees its scratch slabs through the state's allocator), then grown. */
static void sqlite_large_repeated_state(void **state)
{
    (void)state;
    char spec[400];
    sqlite_spec("journal.db", spec, sizeof spec);
    for (int round = 0; round < 2; round++) {
        tu_env e;
        tu_env_start_on(&e, 2, 0, spec);
        quark_ref *r;
        TU_OK(quark_ref_new(e.client, &quark_examples_CounterActor_interface, "JournalCounter",
                            "j1", &r));
        assert_int_equal(get(r), round * 5010);
        int64_t v;
        TU_OK(incr(r, 5000, &v));
        assert_int_equal(v, round * 5010 + 5000);
        TU_OK(incr(r, 10, &v));
        assert_int_equal(v, round * 5010 + 5010);
        quark_ref_free(r);
        tu_env_stop(&e);
    }
}

static void bad_storage_spec(void **state)
{
    (void)state;
    quark_silo_opts so;
    quark_silo_opts_init(&so);
    so.storage = "etcd://127.0.0.1:2379";
    quark_silo *s = NULL;
    assert_int_equal(quark_silo_create(&so, &s), QUARK_EINVAL);
    assert_null(s);
    assert_non_null(strstr(quark_last_error(), "sqlite:PATH"));
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/quark-state-test-XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(memory_outlives_activation),
        cmocka_unit_test(sqlite_write_before_ack_and_restart),
        cmocka_unit_test(sqlite_pipelined_many_actors),
        cmocka_unit_test(sqlite_conflict_between_silos),
        cmocka_unit_test(sqlite_record_that_does_not_decode),
        cmocka_unit_test(sqlite_large_repeated_state),
        cmocka_unit_test(sqlite_read_only_file),
        cmocka_unit_test(sqlite_full_disk),
        cmocka_unit_test(redis_down_ten_seconds_under_load),
        cmocka_unit_test(bad_storage_spec),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return failed;
}
