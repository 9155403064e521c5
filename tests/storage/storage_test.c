/*
 * storage_test.c - one conformance suite for every storage provider
 * (runtime/providers.h's storage table), run against each: the memory
 * storage, a temporary SQLite file and a real redis-server. The cases follow the ones Orleans and Dapr run
 * against their grain storages (../shared/notes/providers-anchors.md), and
 * for Redis the failures seen in the field: SCRIPT FLUSH, a restart without
 * persistence, a server down then back, a server that stops answering. The
 * Redis cases run a real redis-server (Debian's package) on a free port.
 *
 * The suite drives a provider as the runtime does: one pw per "worker",
 * requests completed through qk_op (no home, answer lent), a flush after
 * each batch of writes.
 */
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "testutil.h"
#include "redis_server.h"
#include "core/common.h"
#include "runtime/op.h"
#include "storage/storage.h"

typedef struct prov {
    const char *spec;
    const qk_storage_ops *ops;
    void *self;
    uv_loop_t *loop;           /* the loop the requests are run on */
    uv_loop_t own_loop;
    void *pw;
} prov;

static char g_dir[256];

/* ---- one request, waited for ---- */

typedef struct req {
    qk_op op;
    qk_state_rec rec;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    quark_err err;
    char errmsg[600];
    uint8_t *data;
    size_t len;
} req;

static void req_done(qk_op *op)
{
    req *r = QK_CONTAINER_OF(op, req, op);
    const qk_outcome *o = op->out;
    pthread_mutex_lock(&r->mu);
    r->err = o->err;
    if (o->err != QUARK_OK)
        snprintf(r->errmsg, sizeof r->errmsg, "%s", qk_outcome_text(o));
    if (o->err == QUARK_OK && o->len) {
        r->data = malloc(o->len);
        memcpy(r->data, o->data, o->len);
        r->len = o->len;
    }
    r->done = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void req_init(req *r, const char *etag)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    qk_op_init(&r->op, req_done, NULL, QK_OP_LEND, NULL);
    snprintf(r->rec.etag, sizeof r->rec.etag, "%s", etag ? etag : "");
}

/* Wait for r (started: rc QUARK_PENDING), running the provider's loop. */
static quark_err req_wait(prov *p, req *r, quark_err rc)
{
    if (rc == QUARK_PENDING) {
        for (;;) {
            pthread_mutex_lock(&r->mu);
            int d = r->done;
            pthread_mutex_unlock(&r->mu);
            if (d)
                break;
            uv_run(p->loop, UV_RUN_NOWAIT);
            usleep(50);
        }
        rc = r->err;
    } else {
        if (rc != QUARK_OK)
            snprintf(r->errmsg, sizeof r->errmsg, "%s", quark_last_error());
        if (rc == QUARK_OK && r->rec.len) {
            r->data = malloc(r->rec.len);
            memcpy(r->data, r->rec.data, r->rec.len);
            r->len = r->rec.len;
        }
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    return rc;
}

static qk_actor_key key(const char *type, const char *id)
{
    qk_actor_key k = {.type = type, .type_len = strlen(type), .id = id, .id_len = strlen(id)};
    return k;
}

/* Read (type, id): its bytes (malloc'd, *len) and etag. */
static quark_err do_read(prov *p, void *pw, const char *type, const char *id, char *etag,
                         uint8_t **data, size_t *len, char *why)
{
    req r;
    req_init(&r, NULL);
    qk_actor_key k = key(type, id);
    quark_err rc = req_wait(p, &r, p->ops->read(pw, &k, &r.rec, &r.op));
    if (etag)
        snprintf(etag, QK_ETAG_MAX, "%s", r.rec.etag);
    if (why)
        snprintf(why, 600, "%s", r.errmsg);
    if (data)
        *data = r.data;
    else
        free(r.data);
    if (len)
        *len = r.len;
    return rc;
}

/* Write data (NULL: clear) if the etag is still *etag; *etag the new one. */
static quark_err do_write(prov *p, void *pw, const char *type, const char *id, const void *data,
                          size_t len, char *etag, char *why)
{
    req r;
    req_init(&r, etag);
    qk_actor_key k = key(type, id);
    quark_err rc = p->ops->write(pw, &k, data, len, &r.rec, &r.op);
    p->ops->flush(pw);
    rc = req_wait(p, &r, rc);
    if (rc == QUARK_OK)
        snprintf(etag, QK_ETAG_MAX, "%s", r.rec.etag);
    if (why)
        snprintf(why, 600, "%s", r.errmsg);
    free(r.data);
    return rc;
}

/* ---- set-up ---- */

static int prov_setup(void **state, const char *spec)
{
    prov *p = calloc(1, sizeof *p);
    p->spec = spec;
    if (qk_storage_open(spec, NULL, &p->ops, &p->self) != QUARK_OK) {
        fprintf(stderr, "open %s: %s\n", spec, quark_last_error());
        free(p);
        return -1;
    }
    p->loop = &p->own_loop;
    uv_loop_init(p->loop);
    p->pw = p->ops->attach(p->self, NULL, p->loop);
    *state = p;
    return 0;
}

static int prov_teardown(void **state)
{
    prov *p = *state;
    p->ops->detach(p->self, p->pw);
    p->ops->destroy(p->self);
    uv_run(p->loop, UV_RUN_DEFAULT);
    uv_loop_close(p->loop);
    free(p);
    return 0;
}

static char g_sqlite_spec[300];

static int setup_memory(void **state)
{
    return prov_setup(state, "memory");
}

static int setup_sqlite(void **state)
{
    static int n;
    snprintf(g_sqlite_spec, sizeof g_sqlite_spec, "sqlite:%s/state-%d.db", g_dir, n++);
    return prov_setup(state, g_sqlite_spec);
}

/* A fresh type name per case, so cases of one provider do not meet. */
static const char *fresh_type(void)
{
    static char names[64][40];
    static int n;
    char *t = names[n % 64];
    snprintf(t, 40, "test.Type%d", n++);
    return t;
}

/* ---- the cases ---- */

static void missing_reads_empty(void **state)
{
    prov *p = *state;
    char etag[QK_ETAG_MAX] = "x";
    uint8_t *data;
    size_t len = 99;
    TU_OK(do_read(p, p->pw, fresh_type(), "nobody", etag, &data, &len, NULL));
    assert_string_equal(etag, "");
    assert_int_equal(len, 0);
    assert_null(data);
}

static void write_read_back_etag_changes(void **state)
{
    prov *p = *state;
    const char *t = fresh_type();
    char etag[QK_ETAG_MAX] = "", e1[QK_ETAG_MAX], e2[QK_ETAG_MAX], got[QK_ETAG_MAX];
    TU_OK(do_write(p, p->pw, t, "a", "hello", 5, etag, NULL));
    assert_string_not_equal(etag, "");
    snprintf(e1, sizeof e1, "%s", etag);
    uint8_t *data;
    size_t len;
    TU_OK(do_read(p, p->pw, t, "a", got, &data, &len, NULL));
    assert_string_equal(got, e1);
    assert_int_equal(len, 5);
    assert_memory_equal(data, "hello", 5);
    free(data);
    /* The same bytes again: a new etag all the same. */
    TU_OK(do_write(p, p->pw, t, "a", "hello", 5, etag, NULL));
    snprintf(e2, sizeof e2, "%s", etag);
    assert_string_not_equal(e1, e2);
    TU_OK(do_read(p, p->pw, t, "a", got, NULL, NULL, NULL));
    assert_string_equal(got, e2);
    /* An empty state is a record too. */
    TU_OK(do_write(p, p->pw, t, "a", "", 0, etag, NULL));
    TU_OK(do_read(p, p->pw, t, "a", got, &data, &len, NULL));
    assert_string_equal(got, etag);
    assert_int_equal(len, 0);
}

static void stale_and_missing_etag_conflict(void **state)
{
    prov *p = *state;
    const char *t = fresh_type();
    char etag[QK_ETAG_MAX] = "", old[QK_ETAG_MAX], why[600];
    TU_OK(do_write(p, p->pw, t, "c", "v1", 2, etag, NULL));
    snprintf(old, sizeof old, "%s", etag);
    TU_OK(do_write(p, p->pw, t, "c", "v2", 2, etag, NULL));
    /* Stale etag. */
    char stale[QK_ETAG_MAX];
    snprintf(stale, sizeof stale, "%s", old);
    assert_int_equal(do_write(p, p->pw, t, "c", "v3", 2, stale, why), QUARK_ECONFLICT);
    assert_non_null(strstr(why, t));
    assert_non_null(strstr(why, "'c'"));
    assert_non_null(strstr(why, old));
    assert_non_null(strstr(why, etag));
    /* No etag over an existing record. */
    char none[QK_ETAG_MAX] = "";
    assert_int_equal(do_write(p, p->pw, t, "c", "v4", 2, none, why), QUARK_ECONFLICT);
    /* An etag that is no etag of the provider's. */
    char bogus[QK_ETAG_MAX] = "not-an-etag";
    assert_int_equal(do_write(p, p->pw, t, "c", "v5", 2, bogus, why), QUARK_ECONFLICT);
    /* An etag given for a record that does not exist. */
    char ghost[QK_ETAG_MAX];
    snprintf(ghost, sizeof ghost, "%s", etag);
    assert_int_equal(do_write(p, p->pw, t, "ghost", "v", 1, ghost, why), QUARK_ECONFLICT);
    /* The stored state is intact. */
    char got[QK_ETAG_MAX];
    uint8_t *data;
    size_t len;
    TU_OK(do_read(p, p->pw, t, "c", got, &data, &len, NULL));
    assert_string_equal(got, etag);
    assert_int_equal(len, 2);
    assert_memory_equal(data, "v2", 2);
    free(data);
    TU_OK(do_read(p, p->pw, t, "ghost", got, NULL, &len, NULL));
    assert_string_equal(got, "");
}

typedef struct racer {
    prov *p;
    void *pw;
    const char *type;
    pthread_barrier_t *bar;
    quark_err rc;
    char value[16];
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    char etag[QK_ETAG_MAX] = "";
    pthread_barrier_wait(r->bar);
    r->rc = do_write(r->p, r->pw, r->type, "first", r->value, strlen(r->value), etag, NULL);
    return NULL;
}

static void racing_first_writes_one_wins(void **state)
{
    prov *p = *state;
    enum { N = 20 };
    const char *t = fresh_type();
    pthread_t th[N];
    racer rs[N];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, N);
    uv_loop_t loops[N];
    for (int i = 0; i < N; i++) {
        uv_loop_init(&loops[i]);
        rs[i] = (racer){.p = p, .type = t, .bar = &bar};
        rs[i].pw = p->ops->attach(p->self, NULL, &loops[i]);
        snprintf(rs[i].value, sizeof rs[i].value, "racer-%d", i);
    }
    /* Each racer runs its own loop: give each its own view of p. */
    prov views[N];
    for (int i = 0; i < N; i++) {
        views[i] = *p;
        views[i].loop = &loops[i];
        rs[i].p = &views[i];
    }
    for (int i = 0; i < N; i++)
        pthread_create(&th[i], NULL, race, &rs[i]);
    int won = -1, wins = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        if (rs[i].rc == QUARK_OK) {
            won = i;
            wins++;
        } else {
            assert_int_equal(rs[i].rc, QUARK_ECONFLICT);
        }
    }
    assert_int_equal(wins, 1);
    uint8_t *data;
    size_t len;
    TU_OK(do_read(p, p->pw, t, "first", NULL, &data, &len, NULL));
    assert_int_equal(len, strlen(rs[won].value));
    assert_memory_equal(data, rs[won].value, len);
    free(data);
    for (int i = 0; i < N; i++) {
        p->ops->detach(p->self, rs[i].pw);
        uv_run(&loops[i], UV_RUN_DEFAULT);
        uv_loop_close(&loops[i]);
    }
    pthread_barrier_destroy(&bar);
}

static void clear_then_read_and_write(void **state)
{
    prov *p = *state;
    const char *t = fresh_type();
    char etag[QK_ETAG_MAX] = "", got[QK_ETAG_MAX];
    /* Clearing what was never stored is nothing. */
    TU_OK(do_write(p, p->pw, t, "z", NULL, 0, etag, NULL));
    assert_string_equal(etag, "");
    TU_OK(do_write(p, p->pw, t, "z", "data", 4, etag, NULL));
    char before[QK_ETAG_MAX];
    snprintf(before, sizeof before, "%s", etag);
    TU_OK(do_write(p, p->pw, t, "z", NULL, 0, etag, NULL));
    assert_string_not_equal(etag, before); /* a tombstone: old etags never match again */
    size_t len = 1;
    TU_OK(do_read(p, p->pw, t, "z", got, NULL, &len, NULL));
    assert_int_equal(len, 0);
    assert_string_equal(got, etag);
    char stale[QK_ETAG_MAX];
    snprintf(stale, sizeof stale, "%s", before);
    assert_int_equal(do_write(p, p->pw, t, "z", "x", 1, stale, NULL), QUARK_ECONFLICT);
    TU_OK(do_write(p, p->pw, t, "z", "again", 5, etag, NULL));
    uint8_t *data;
    TU_OK(do_read(p, p->pw, t, "z", got, &data, &len, NULL));
    assert_int_equal(len, 5);
    assert_memory_equal(data, "again", 5);
    free(data);
}

static void ids_of_any_bytes(void **state)
{
    prov *p = *state;
    const char *t = fresh_type();
    const char *ids[] = {"a/b\\c#d?e", "{hash}tag", "ünïcødé 日本", "\x01\x02\x7f\xff\xfe",
                         "'; DROP TABLE quark_state; --", "  spaces  ", "%s%n%x"};
    char all[255];
    for (int i = 0; i < 254; i++)
        all[i] = (char)(i + 1);
    all[254] = '\0';
    for (size_t i = 0; i <= sizeof ids / sizeof ids[0]; i++) {
        const char *id = i < sizeof ids / sizeof ids[0] ? ids[i] : all;
        char etag[QK_ETAG_MAX] = "";
        TU_OK(do_write(p, p->pw, t, id, id, strlen(id), etag, NULL));
    }
    for (size_t i = 0; i <= sizeof ids / sizeof ids[0]; i++) {
        const char *id = i < sizeof ids / sizeof ids[0] ? ids[i] : all;
        uint8_t *data;
        size_t len;
        TU_OK(do_read(p, p->pw, t, id, NULL, &data, &len, NULL));
        assert_int_equal(len, strlen(id));
        assert_memory_equal(data, id, len);
        free(data);
    }
}

static void one_mib_state(void **state)
{
    prov *p = *state;
    const char *t = fresh_type();
    size_t n = 1u << 20;
    uint8_t *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i * 2654435761u >> 13);
    char etag[QK_ETAG_MAX] = "";
    TU_OK(do_write(p, p->pw, t, "big", big, n, etag, NULL));
    uint8_t *data;
    size_t len;
    TU_OK(do_read(p, p->pw, t, "big", NULL, &data, &len, NULL));
    assert_int_equal(len, n);
    assert_memory_equal(data, big, n);
    free(data);
    free(big);
}

/* Many records, written a batch at a time as a worker would. */
static void hundred_thousand_records(void **state)
{
    prov *p = *state;
    enum { N = 100000, B = 1000 };
    const char *t = fresh_type();
    static req rs[B];
    static char ids[B][16];
    for (int base = 0; base < N; base += B) {
        quark_err rcs[B];
        for (int i = 0; i < B; i++) {
            req_init(&rs[i], NULL);
            snprintf(ids[i], sizeof ids[i], "r%d", base + i);
            qk_actor_key k = key(t, ids[i]);
            /* The value: the id without its 'r' (lent until finished). */
            rcs[i] = p->ops->write(p->pw, &k, (const uint8_t *)ids[i] + 1, strlen(ids[i]) - 1,
                                   &rs[i].rec, &rs[i].op);
        }
        p->ops->flush(p->pw);
        for (int i = 0; i < B; i++)
            TU_OK(req_wait(p, &rs[i], rcs[i]));
    }
    for (int i = 0; i < N; i += 997) {
        char id[16], want[16];
        snprintf(id, sizeof id, "r%d", i);
        snprintf(want, sizeof want, "%d", i);
        uint8_t *data;
        size_t len;
        TU_OK(do_read(p, p->pw, t, id, NULL, &data, &len, NULL));
        assert_int_equal(len, strlen(want));
        assert_memory_equal(data, want, len);
        free(data);
    }
}

/* ---- Redis only: the server's failures ---- */

static redis_server g_redis;
static char g_redis_spec[64];

static int redis_group_setup(void **state)
{
    (void)state;
    if (rs_start(&g_redis, 0) != 0) {
        fprintf(stderr, "could not start redis-server\n");
        return -1;
    }
    snprintf(g_redis_spec, sizeof g_redis_spec, "redis://127.0.0.1:%d", g_redis.port);
    return 0;
}

static int redis_group_teardown(void **state)
{
    (void)state;
    rs_stop(&g_redis);
    return 0;
}

static int setup_redis(void **state)
{
    if (!g_redis.pid && rs_start(&g_redis, g_redis.port) != 0)
        return -1;
    if (prov_setup(state, g_redis_spec) != 0)
        return -1;
    prov *p = *state;
    /* The connection is made on the loop: wait until a read goes through. */
    uint64_t end = tu_now_ms() + 10000;
    while (do_read(p, p->pw, "test.Ping", "x", NULL, NULL, NULL, NULL) != QUARK_OK &&
           tu_now_ms() < end) {
        uv_run(p->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    return 0;
}

/* Run the loop until a write of (t, id) with *etag gets an answer from
 * Redis (the provider reconnected), or ms pass. */
static quark_err write_until_ok(prov *p, const char *t, const char *id, const char *v,
                                char *etag, unsigned ms)
{
    uint64_t end = tu_now_ms() + ms;
    quark_err rc;
    while (((rc = do_write(p, p->pw, t, id, v, strlen(v), etag, NULL)) == QUARK_ESTORAGE ||
            rc == QUARK_EUNKNOWN) &&
           tu_now_ms() < end) {
        uv_run(p->loop, UV_RUN_NOWAIT);
        usleep(2000);
    }
    return rc;
}

/* The record is a hash redis-cli can read: etag, data, updated_at. */
static void redis_key_layout(void **state)
{
    prov *p = *state;
    char etag[QK_ETAG_MAX] = "";
    TU_OK(do_write(p, p->pw, "DurableCounter", "layout", "\x08\x2a", 2, etag, NULL));
    redisReply *rep = rs_command(&g_redis, "HGETALL %s", "default/state/DurableCounter/layout");
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    int seen = 0;
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        const char *f = rep->element[i]->str;
        redisReply *v = rep->element[i + 1];
        if (!strcmp(f, "etag")) {
            assert_string_equal(v->str, etag);
            seen |= 1;
        } else if (!strcmp(f, "data")) {
            assert_int_equal(v->len, 2);
            assert_memory_equal(v->str, "\x08\x2a", 2);
            seen |= 2;
        } else if (!strcmp(f, "updated_at")) {
            assert_true(atoll(v->str) > 1700000000000ll);
            seen |= 4;
        }
    }
    assert_int_equal(seen, 7);
    freeReplyObject(rep);
}

/* A database number the server does not have: every request fails with
 * the reason, and nothing lands in database 0. */
static void redis_bad_database(void **state)
{
    (void)state;
    char spec[64];
    snprintf(spec, sizeof spec, "redis://127.0.0.1:%d/99", g_redis.port);
    prov *p;
    assert_int_equal(prov_setup((void **)&p, spec), 0);
    char why[600] = "";
    quark_err rc = QUARK_OK;
    uint64_t end = tu_now_ms() + 5000;
    while (!strstr(why, "SELECT 99 failed") && tu_now_ms() < end) {
        char etag[QK_ETAG_MAX] = "";
        rc = do_write(p, p->pw, "test.BadDb", "x", "v", 1, etag, why);
        uv_run(p->loop, UV_RUN_NOWAIT);
        usleep(2000);
    }
    assert_int_equal(rc, QUARK_ESTORAGE);
    assert_non_null(strstr(why, "SELECT 99 failed"));
    redisReply *rep = rs_command(&g_redis, "EXISTS %s", "default/state/test.BadDb/x");
    assert_non_null(rep);
    assert_int_equal(rep->integer, 0);
    freeReplyObject(rep);
    void *pp = p;
    prov_teardown(&pp);
}

/* SCRIPT FLUSH between writes: the next write loads the script again. */
static void redis_script_flush_mid_run(void **state)
{
    prov *p = *state;
    const char *t = fresh_type();
    char etag[QK_ETAG_MAX] = "";
    for (int i = 0; i < 20; i++) {
        if (i % 5 == 2) {
            redisReply *rep = rs_command(&g_redis, "SCRIPT FLUSH");
            assert_non_null(rep);
            freeReplyObject(rep);
        }
        char v[16];
        snprintf(v, sizeof v, "v%d", i);
        TU_OK(do_write(p, p->pw, t, "sf", v, strlen(v), etag, NULL));
    }
    uint8_t *data;
    size_t len;
    TU_OK(do_read(p, p->pw, t, "sf", NULL, &data, &len, NULL));
    assert_int_equal(len, 3);
    assert_memory_equal(data, "v19", 3);
    free(data);
}

/* Redis restarted without persistence: the records are gone. A write with
 * the old etag is a conflict (never a silent overwrite); the provider
 * reconnects by itself. */
static void redis_restart_without_persistence(void **state)
{
    prov *p = *state;
    const char *t = fresh_type();
    char etag[QK_ETAG_MAX] = "", why[600];
    TU_OK(do_write(p, p->pw, t, "r", "before", 6, etag, NULL));
    rs_kill(&g_redis, SIGKILL);
    assert_int_equal(rs_start(&g_redis, g_redis.port), 0);
    quark_err rc = write_until_ok(p, t, "r", "after", etag, 20000);
    assert_int_equal(rc, QUARK_ECONFLICT);
    (void)why;
    char got[QK_ETAG_MAX];
    size_t len = 1;
    TU_OK(do_read(p, p->pw, t, "r", got, NULL, &len, NULL));
    assert_string_equal(got, "");
    assert_int_equal(len, 0);
    char none[QK_ETAG_MAX] = "";
    TU_OK(do_write(p, p->pw, t, "r", "again", 5, none, NULL));
}

/* Down, then back: requests fail at once with a clear, retryable error
 * while it is down, and succeed again once it is back. */
static void redis_down_then_back(void **state)
{
    prov *p = *state;
    const char *t = fresh_type();
    char etag[QK_ETAG_MAX] = "", why[600];
    TU_OK(do_write(p, p->pw, t, "d", "one", 3, etag, NULL));
    rs_kill(&g_redis, SIGTERM);
    uint64_t t0 = tu_now_ms();
    /* Sent before the provider knew: its outcome is unknown. */
    quark_err rc = do_write(p, p->pw, t, "d", "two", 3, etag, why);
    assert_int_equal(rc, QUARK_EUNKNOWN);
    assert_non_null(strstr(why, "Redis"));
    assert_non_null(strstr(why, "may or may not"));
    /* and again, now that the provider knows it is down */
    for (int i = 0; i < 3; i++)
        uv_run(p->loop, UV_RUN_NOWAIT);
    rc = do_write(p, p->pw, t, "d", "two", 3, etag, why);
    assert_int_equal(rc, QUARK_ESTORAGE); /* not sent: surely not applied */
    assert_non_null(strstr(why, "cannot be reached"));
    assert_true(tu_now_ms() - t0 < 5000); /* failed fast, not at a timeout */
    assert_int_equal(rs_start(&g_redis, g_redis.port), 0);
    /* no persistence: the record is gone, so the write starts afresh */
    char none[QK_ETAG_MAX] = "";
    assert_int_equal(write_until_ok(p, t, "d2", "three", none, 20000), QUARK_OK);
}

/* A server that stops answering (SIGSTOP): a write fails after the
 * provider's timeout with QUARK_EUNKNOWN (it was sent), and the provider
 * recovers when the server resumes. */
static void redis_paused(void **state)
{
    prov *p = *state;
    const char *t = fresh_type();
    char etag[QK_ETAG_MAX] = "", why[600];
    TU_OK(do_write(p, p->pw, t, "p", "one", 3, etag, NULL));
    rs_kill(&g_redis, SIGSTOP);
    quark_err rc = do_write(p, p->pw, t, "p", "two", 3, etag, why);
    rs_kill(&g_redis, SIGCONT);
    assert_int_equal(rc, QUARK_EUNKNOWN); /* sent, unanswered: it may have run */
    assert_non_null(strstr(why, "no answer"));
    /* The write may or may not have been applied when the server resumed:
     * read the etag afresh, then write. */
    uint64_t end = tu_now_ms() + 20000;
    while (do_read(p, p->pw, t, "p", etag, NULL, NULL, NULL) != QUARK_OK && tu_now_ms() < end) {
        uv_run(p->loop, UV_RUN_NOWAIT); /* the provider reconnects on its loop */
        usleep(2000);
    }
    TU_OK(do_write(p, p->pw, t, "p", "three", 5, etag, NULL));
}

/* ---- SQLite only: files that cannot be used give clear errors ---- */

static void sqlite_bad_files(void **state)
{
    (void)state;
    const qk_storage_ops *ops;
    void *self;
    char spec[400];
    /* Not a database. */
    snprintf(spec, sizeof spec, "%s/garbage.db", g_dir);
    FILE *f = fopen(spec, "w");
    fputs("this is not an SQLite database, just some text that is long enough to look like "
          "a header of something else entirely................................................",
          f);
    fclose(f);
    snprintf(spec, sizeof spec, "sqlite:%s/garbage.db", g_dir);
    assert_int_equal(qk_storage_open(spec, NULL, &ops, &self), QUARK_ESTORAGE);
    assert_non_null(strstr(quark_last_error(), "garbage.db"));
    assert_non_null(strstr(quark_last_error(), "not a database"));
    /* A directory. */
    snprintf(spec, sizeof spec, "sqlite:%s", g_dir);
    assert_int_equal(qk_storage_open(spec, NULL, &ops, &self), QUARK_ESTORAGE);
    assert_non_null(strstr(quark_last_error(), "unable to open"));
    /* A file that cannot be written (permissions do not stop root). */
    if (geteuid() != 0) {
        snprintf(spec, sizeof spec, "%s/ro.db", g_dir);
        f = fopen(spec, "w");
        fclose(f);
        chmod(spec, 0444);
        snprintf(spec, sizeof spec, "sqlite:%s/ro.db", g_dir);
        assert_int_equal(qk_storage_open(spec, NULL, &ops, &self), QUARK_ESTORAGE);
        assert_non_null(strstr(quark_last_error(), "readonly"));
    }
    /* No path, unknown kind. */
    assert_int_equal(qk_storage_open("sqlite:", NULL, &ops, &self), QUARK_EINVAL);
    assert_int_equal(qk_storage_open("etcd://x", NULL, &ops, &self), QUARK_EINVAL);
    assert_non_null(strstr(quark_last_error(), "sqlite:PATH"));
}

#define CASES(setup)                                                                 \
    cmocka_unit_test_setup_teardown(missing_reads_empty, setup, prov_teardown),     \
    cmocka_unit_test_setup_teardown(write_read_back_etag_changes, setup, prov_teardown), \
    cmocka_unit_test_setup_teardown(stale_and_missing_etag_conflict, setup, prov_teardown), \
    cmocka_unit_test_setup_teardown(racing_first_writes_one_wins, setup, prov_teardown), \
    cmocka_unit_test_setup_teardown(clear_then_read_and_write, setup, prov_teardown), \
    cmocka_unit_test_setup_teardown(ids_of_any_bytes, setup, prov_teardown),        \
    cmocka_unit_test_setup_teardown(one_mib_state, setup, prov_teardown),           \
    cmocka_unit_test_setup_teardown(hundred_thousand_records, setup, prov_teardown)

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/quark-storage-test-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest memory[] = {CASES(setup_memory)};
    const struct CMUnitTest sqlite[] = {
        CASES(setup_sqlite),
        cmocka_unit_test(sqlite_bad_files),
    };
    const struct CMUnitTest redis[] = {
        CASES(setup_redis),
        cmocka_unit_test_setup_teardown(redis_key_layout, setup_redis, prov_teardown),
        cmocka_unit_test(redis_bad_database),
        cmocka_unit_test_setup_teardown(redis_script_flush_mid_run, setup_redis, prov_teardown),
        cmocka_unit_test_setup_teardown(redis_restart_without_persistence, setup_redis,
                                        prov_teardown),
        cmocka_unit_test_setup_teardown(redis_down_then_back, setup_redis, prov_teardown),
        cmocka_unit_test_setup_teardown(redis_paused, setup_redis, prov_teardown),
    };
    int failed = cmocka_run_group_tests_name("memory", memory, NULL, NULL);
    failed += cmocka_run_group_tests_name("sqlite", sqlite, NULL, NULL);
    failed += cmocka_run_group_tests_name("redis", redis, redis_group_setup,
                                          redis_group_teardown);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return failed;
}
