/*
 * reminders_test.c - one conformance suite for every reminder provider
 * (runtime/providers.h's reminders table): the memory store, a temporary
 * SQLite file and a real redis-server. The cases follow Orleans' reminder
 * table tests (../shared/notes/providers-anchors.md):
 *   crud          create, read (list), update, delete, delete again
 *   names         ids and names with '/', '\', '#', '?', spaces and bytes
 *                 1..255 are distinct; one actor's list holds only its own
 *   buckets       500 reminders: each bucket's load is exactly the reminders
 *                 whose key hash falls in it (range ownership), and all of
 *                 them together are every reminder once
 *   reopen        (SQLite, Redis) a store opened again holds what was stored
 *   redis_down    an operation while Redis is down fails with
 *                 QUARK_ESTORAGE and a message; once it is back, they work
 */
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"
#include "redis_server.h"
#include "core/common.h"
#include "runtime/runtime.h"
#include "storage/reminders.h"

static char g_dir[256];
static redis_server g_rs;
static char g_spec[300];
static const char *g_kind;     /* "memory", "sqlite", "redis" */
static int g_case;

typedef struct prov {
    const qk_reminders_ops *ops;
    void *self;
} prov;

static prov g_p;

static void open_store(prov *p)
{
    TU_OK(qk_reminders_open(g_spec, "rtest", &p->ops, &p->self));
}

static int setup(void **state)
{
    (void)state;
    g_case++;
    if (!strcmp(g_kind, "memory"))
        snprintf(g_spec, sizeof g_spec, "memory");
    else if (!strcmp(g_kind, "sqlite"))
        snprintf(g_spec, sizeof g_spec, "sqlite:%s/rem-%d.db", g_dir, g_case);
    else {
        snprintf(g_spec, sizeof g_spec, "redis://127.0.0.1:%d", g_rs.port);
        redisReply *r = rs_command(&g_rs, "FLUSHALL");
        if (r)
            freeReplyObject(r);
    }
    open_store(&g_p);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (g_p.self)
        g_p.ops->destroy(g_p.self);
    g_p.self = NULL;
    return 0;
}

static uint64_t hash_of(const char *type, const char *id, size_t id_len)
{
    return qk_key_hash(qk_type_name_hash(type, strlen(type)), id, id_len);
}

static qk_actor_key key_of(const char *type, const char *id, size_t id_len)
{
    return (qk_actor_key){.type = type, .type_len = strlen(type), .id = id, .id_len = id_len,
                          .hash = hash_of(type, id, id_len)};
}

/* What a list or load found. */
typedef struct found {
    int n;
    struct {
        char type[64], id[300], name[QK_REMINDER_NAME_MAX + 1];
        size_t id_len, name_len;
        uint64_t hash, due, period;
    } r[600];
} found;

static void collect(void *arg, const qk_reminder *r)
{
    found *f = arg;
    assert_true(f->n < 600);
    int i = f->n++;
    assert_true(r->key.type_len < sizeof f->r[i].type && r->key.id_len < sizeof f->r[i].id &&
                r->name_len <= QK_REMINDER_NAME_MAX);
    memcpy(f->r[i].type, r->key.type, r->key.type_len);
    f->r[i].type[r->key.type_len] = '\0';
    memcpy(f->r[i].id, r->key.id, r->key.id_len);
    f->r[i].id[r->key.id_len] = '\0';
    f->r[i].id_len = r->key.id_len;
    memcpy(f->r[i].name, r->name, r->name_len);
    f->r[i].name[r->name_len] = '\0';
    f->r[i].name_len = r->name_len;
    f->r[i].hash = r->key.hash;
    f->r[i].due = r->due_ms;
    f->r[i].period = r->period_ms;
}

static void upsert(const qk_actor_key *k, const char *name, uint64_t due, uint64_t period)
{
    qk_reminder r = {.key = *k, .name = name, .name_len = strlen(name), .due_ms = due,
                     .period_ms = period};
    TU_OK(g_p.ops->upsert(g_p.self, &r));
}

static found *list_of(const qk_actor_key *k)
{
    found *f = calloc(1, sizeof *f);
    TU_OK(g_p.ops->list(g_p.self, k, collect, f));
    return f;
}

static void test_crud(void **state)
{
    (void)state;
    qk_actor_key k = key_of("DurableCounter", "bob", 3);
    found *f = list_of(&k);
    assert_int_equal(f->n, 0);
    free(f);
    upsert(&k, "tick", 1000, 5000);
    f = list_of(&k);
    assert_int_equal(f->n, 1);
    assert_string_equal(f->r[0].name, "tick");
    assert_string_equal(f->r[0].type, "DurableCounter");
    assert_memory_equal(f->r[0].id, "bob", 3);
    assert_true(f->r[0].due == 1000 && f->r[0].period == 5000 && f->r[0].hash == k.hash);
    free(f);
    upsert(&k, "tick", 7000, 2000); /* update: one reminder, new times */
    upsert(&k, "tock", 9000, 1000);
    f = list_of(&k);
    assert_int_equal(f->n, 2);
    for (int i = 0; i < 2; i++)
        if (!strcmp(f->r[i].name, "tick"))
            assert_true(f->r[i].due == 7000 && f->r[i].period == 2000);
    free(f);
    bool existed = false;
    TU_OK(g_p.ops->remove(g_p.self, &k, "tick", 4, &existed));
    assert_true(existed);
    TU_OK(g_p.ops->remove(g_p.self, &k, "tick", 4, &existed));
    assert_false(existed);
    f = list_of(&k);
    assert_int_equal(f->n, 1);
    assert_string_equal(f->r[0].name, "tock");
    free(f);
}

static void test_names(void **state)
{
    (void)state;
    static const char *const odd[] = {"a/b", "a\\b", "#x", "what?", "with space", "/", "12:3"};
    char bytes[255];
    for (int i = 0; i < 255; i++)
        bytes[i] = (char)(i + 1);
    qk_actor_key ka = key_of("T", "x/1", 3), kb = key_of("T", "x", 1);
    qk_actor_key kc = key_of("T", "x/", 2), kd = key_of("U", "x/1", 3);
    qk_actor_key kbytes = key_of("T", bytes, sizeof bytes);
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        upsert(&ka, odd[i], 100 + i, 1000);
        upsert(&kb, odd[i], 200 + i, 1000);
    }
    upsert(&kc, "1a/b", 1, 1000); /* would collide with (x, "/1a/b") under a naive join */
    upsert(&kd, "a/b", 2, 1000);
    char name[QK_REMINDER_NAME_MAX + 1];
    for (int i = 0; i < QK_REMINDER_NAME_MAX; i++)
        name[i] = (char)(1 + i % 255);
    name[QK_REMINDER_NAME_MAX] = '\0';
    upsert(&kbytes, name, 3, 1000);
    found *f = list_of(&ka);
    assert_int_equal(f->n, (int)(sizeof odd / sizeof odd[0]));
    for (int i = 0; i < f->n; i++) {
        assert_int_equal(f->r[i].id_len, 3);
        assert_memory_equal(f->r[i].id, "x/1", 3);
        size_t k = 0;
        while (k < sizeof odd / sizeof odd[0] && strcmp(odd[k], f->r[i].name))
            k++;
        assert_true(k < sizeof odd / sizeof odd[0]);
        assert_true(f->r[i].due == 100 + k);
    }
    free(f);
    f = list_of(&kb);
    assert_int_equal(f->n, (int)(sizeof odd / sizeof odd[0]));
    free(f);
    f = list_of(&kc);
    assert_int_equal(f->n, 1);
    assert_string_equal(f->r[0].name, "1a/b");
    free(f);
    f = list_of(&kd);
    assert_int_equal(f->n, 1);
    assert_string_equal(f->r[0].type, "U");
    free(f);
    f = list_of(&kbytes);
    assert_int_equal(f->n, 1);
    assert_int_equal(f->r[0].id_len, sizeof bytes);
    assert_memory_equal(f->r[0].id, bytes, sizeof bytes);
    assert_string_equal(f->r[0].name, name);
    free(f);
}

enum { N_BUCKETED = 500 };

static void test_buckets(void **state)
{
    (void)state;
    static bool seen[N_BUCKETED];
    memset(seen, 0, sizeof seen);
    char id[32];
    for (int i = 0; i < N_BUCKETED; i++) {
        snprintf(id, sizeof id, "r-%d", i);
        qk_actor_key k = key_of("DurableCounter", id, strlen(id));
        upsert(&k, "tick", (uint64_t)i, 1000);
    }
    int total = 0, used = 0;
    found *f = malloc(sizeof *f);
    for (uint32_t b = 0; b < QK_REMINDER_BUCKETS; b++) {
        f->n = 0;
        TU_OK(g_p.ops->load_bucket(g_p.self, b, collect, f));
        used += f->n > 0;
        for (int i = 0; i < f->n; i++) {
            assert_int_equal(qk_reminder_bucket(f->r[i].hash), b);
            assert_true(f->r[i].hash == hash_of("DurableCounter", f->r[i].id, f->r[i].id_len));
            int n = atoi(f->r[i].id + 2);
            assert_true(n >= 0 && n < N_BUCKETED && !seen[n]);
            assert_true(f->r[i].due == (uint64_t)n);
            seen[n] = true;
            total++;
        }
    }
    free(f);
    assert_int_equal(total, N_BUCKETED);
    assert_true(used > (int)QK_REMINDER_BUCKETS / 2); /* spread, not one bucket */
    f = calloc(1, sizeof *f);
    assert_int_equal(g_p.ops->load_bucket(g_p.self, QK_REMINDER_BUCKETS, collect, f),
                     QUARK_EINVAL);
    free(f);
}

static void test_reopen(void **state)
{
    (void)state;
    qk_actor_key k = key_of("DurableCounter", "kept", 4);
    upsert(&k, "tick", 42, 1000);
    g_p.ops->destroy(g_p.self);
    open_store(&g_p);
    found *f = list_of(&k);
    assert_int_equal(f->n, 1);
    assert_true(f->r[0].due == 42);
    free(f);
}

static void test_redis_down(void **state)
{
    (void)state;
    qk_actor_key k = key_of("DurableCounter", "d", 1);
    upsert(&k, "tick", 1, 1000);
    int port = g_rs.port;
    rs_kill(&g_rs, SIGKILL);
    qk_reminder r = {.key = k, .name = "tock", .name_len = 4, .due_ms = 2, .period_ms = 1000};
    assert_int_equal(g_p.ops->upsert(g_p.self, &r), QUARK_ESTORAGE);
    assert_non_null(strstr(quark_last_error(), "reminders in Redis"));
    found *f = calloc(1, sizeof *f);
    assert_int_equal(g_p.ops->list(g_p.self, &k, collect, f), QUARK_ESTORAGE);
    assert_int_equal(rs_start(&g_rs, port), 0);
    TU_OK(g_p.ops->upsert(g_p.self, &r)); /* a new connection, by itself */
    f->n = 0;
    TU_OK(g_p.ops->list(g_p.self, &k, collect, f));
    assert_int_equal(f->n, 1); /* a restart without persistence kept only the new one */
    assert_string_equal(f->r[0].name, "tock");
    free(f);
}

static void test_bad_specs(void **state)
{
    (void)state;
    const qk_reminders_ops *ops;
    void *self;
    assert_int_equal(qk_reminders_open("floppy:", "c", &ops, &self), QUARK_EINVAL);
    assert_non_null(strstr(quark_last_error(), "sqlite:PATH"));
    assert_int_equal(qk_reminders_open("redis://nohost", "c", &ops, &self), QUARK_EINVAL);
    assert_int_equal(qk_reminders_open("sqlite:/nonexistent-dir/x.db", "c", &ops, &self),
                     QUARK_ESTORAGE);
}

#define CASE(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/quark-reminders-test-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest memory[] = {CASE(test_crud), CASE(test_names), CASE(test_buckets),
                                        cmocka_unit_test(test_bad_specs)};
    const struct CMUnitTest sqlite[] = {CASE(test_crud), CASE(test_names), CASE(test_buckets),
                                        CASE(test_reopen)};
    const struct CMUnitTest redis[] = {CASE(test_crud), CASE(test_names), CASE(test_buckets),
                                       CASE(test_reopen), CASE(test_redis_down)};
    g_kind = "memory";
    int failed = cmocka_run_group_tests_name("reminders_memory", memory, NULL, NULL);
    g_kind = "sqlite";
    failed += cmocka_run_group_tests_name("reminders_sqlite", sqlite, NULL, NULL);
    if (rs_start(&g_rs, 0) != 0) {
        fprintf(stderr, "could not start redis-server (Debian's redis-server package)\n");
        failed++;
    } else {
        g_kind = "redis";
        failed += cmocka_run_group_tests_name("reminders_redis", redis, NULL, NULL);
        rs_stop(&g_rs);
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return failed;
}
