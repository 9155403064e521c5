/*
 * demo.c - the counter demo: a silo embedded in this process, a client, and
 * a few calls to virtual actors, blocking and asynchronous; then
 * DurableCounter, whose value is stored in an SQLite file and survives the
 * silo being stopped and started again.
 *
 * Run it with no arguments. It prints what it does and exits 0 when every
 * result matched what a counter must return.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "counter_actor.h"

#define CHECK(expr)                                                                    \
    do {                                                                               \
        quark_err rc_ = (expr);                                                        \
        if (rc_ != QUARK_OK) {                                                         \
            fprintf(stderr, "demo: %s failed: %s (%s)\n", #expr, quark_errname(rc_),   \
                    quark_last_error());                                               \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

/* A silo on `storage` and an embedded client of it. */
static void start(const char *storage, quark_silo **silo, quark_client **client)
{
    quark_silo_opts so;
    quark_silo_opts_init(&so);
    so.storage = storage;
    CHECK(quark_silo_create(&so, silo));
    CHECK(quark_silo_start(*silo));
    quark_client_opts co;
    quark_client_opts_init(&co);
    co.embedded = *silo;
    CHECK(quark_client_create(&co, client));
    CHECK(quark_client_connect(*client));
}

static void stop(quark_silo *silo, quark_client *client)
{
    quark_client_free(client);
    CHECK(quark_silo_stop(silo));
    quark_silo_free(silo);
}

/* DurableCounter "bob": each Increment is in the file before its reply;
 * a new silo on the same file finds the value. */
static int durable_part(void)
{
    char dir[] = "/tmp/counter-demo-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("demo: mkdtemp");
        return 1;
    }
    char spec[64];
    snprintf(spec, sizeof spec, "sqlite:%s/state.db", dir);
    quark_silo *silo;
    quark_client *client;
    start(spec, &silo, &client);
    quark_ref *bob;
    CHECK(quark_ref_new(client, &quark_examples_CounterActor_interface, DURABLE_COUNTER_TYPE,
                        "bob", &bob));
    Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    Quark__Examples__CounterValue *v;
    for (int64_t d = 1; d <= 3; d++) {
        req.delta = d;
        CHECK(quark_examples_CounterActor_Increment(bob, &req, &v));
        printf("Increment(%s bob, %lld) -> %lld (stored in %s before the reply)\n",
               DURABLE_COUNTER_TYPE, (long long)d, (long long)v->value, spec);
        quark_msg_free(v);
    }
    quark_ref_free(bob);
    stop(silo, client);
    printf("silo stopped; a new silo on the same file:\n");
    start(spec, &silo, &client);
    CHECK(quark_ref_new(client, &quark_examples_CounterActor_interface, DURABLE_COUNTER_TYPE,
                        "bob", &bob));
    Quark__Examples__GetRequest get = QUARK__EXAMPLES__GET_REQUEST__INIT;
    CHECK(quark_examples_CounterActor_Get(bob, &get, &v));
    int64_t got = v->value;
    printf("Get(%s bob) -> %lld (expected 6)\n", DURABLE_COUNTER_TYPE, (long long)got);
    quark_msg_free(v);
    quark_ref_free(bob);
    stop(silo, client);
    const char *files[] = {"state.db", "state.db-wal", "state.db-shm"};
    for (int i = 0; i < 3; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return got == 6 ? 0 : 1;
}

static atomic_int async_done;
static atomic_llong async_sum;

static void on_increment(quark_err err, const char *errmsg,
                         const Quark__Examples__CounterValue *reply, void *arg)
{
    (void)arg;
    if (err != QUARK_OK)
        fprintf(stderr, "demo: async Increment failed: %s\n", errmsg);
    else
        atomic_fetch_add(&async_sum, reply->value);
    atomic_fetch_add(&async_done, 1);
}

int main(void)
{
    quark_silo_opts so;
    quark_silo_opts_init(&so);
    quark_silo *silo;
    CHECK(quark_silo_create(&so, &silo));
    CHECK(quark_silo_start(silo));

    quark_registration regs[16];
    size_t n = quark_registry_list(regs, 16);
    printf("registered actor types: %zu\n", n);
    for (size_t i = 0; i < n && i < 16; i++)
        printf("  %s -> %s\n", regs[i].name, regs[i].type->impl_name);

    quark_client_opts co;
    quark_client_opts_init(&co);
    co.embedded = silo;
    quark_client *client;
    CHECK(quark_client_create(&co, &client));
    CHECK(quark_client_connect(client));
    printf("client connected: %s\n", quark_client_is_connected(client) ? "yes" : "no");

    /* Blocking calls: the first one activates the actor. */
    quark_ref *alice;
    CHECK(quark_examples_CounterActor_ref(client, "alice", &alice));
    int64_t expect = 0;
    for (int64_t d = 1; d <= 5; d++) {
        Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
        req.delta = d;
        Quark__Examples__CounterValue *v;
        CHECK(quark_examples_CounterActor_Increment(alice, &req, &v));
        expect += d;
        printf("Increment(alice, %lld) -> %lld\n", (long long)d, (long long)v->value);
        if (v->value != expect) {
            fprintf(stderr, "demo: expected %lld\n", (long long)expect);
            return 1;
        }
        quark_msg_free(v);
    }

    /* Asynchronous calls to 100 counters, 10 increments each. */
    enum { N = 100, K = 10 };
    quark_ref *refs[N];
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "counter-%d", i);
        CHECK(quark_examples_CounterActor_ref(client, id, &refs[i]));
    }
    Quark__Examples__IncrementRequest one = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    one.delta = 1;
    for (int k = 0; k < K; k++)
        for (int i = 0; i < N; i++)
            CHECK(quark_examples_CounterActor_Increment_async(refs[i], &one, on_increment, NULL));
    while (atomic_load(&async_done) < N * K) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    /* Each counter returned 1..K once: the sum is N * K(K+1)/2. */
    long long want = (long long)N * K * (K + 1) / 2;
    printf("%d async Increments on %d counters: sum of replies %lld (expected %lld)\n", N * K, N,
           (long long)atomic_load(&async_sum), want);
    if (atomic_load(&async_sum) != want)
        return 1;

    Quark__Examples__GetRequest get = QUARK__EXAMPLES__GET_REQUEST__INIT;
    Quark__Examples__CounterValue *v;
    CHECK(quark_examples_CounterActor_Get(refs[42], &get, &v));
    printf("Get(counter-42) -> %lld\n", (long long)v->value);
    quark_msg_free(v);

    printf("live activations of %s: %zu\n", quark_examples_CounterActor_TYPE_NAME,
           quark_silo_activation_count(silo, quark_examples_CounterActor_TYPE_NAME));

    /* An unknown id is fine (virtual actors always exist); a bad one is not. */
    quark_ref *bad;
    quark_err rc = quark_examples_CounterActor_ref(client, "", &bad);
    printf("ref with empty id -> %s: %s\n", quark_errname(rc), quark_last_error());

    for (int i = 0; i < N; i++)
        quark_ref_free(refs[i]);
    quark_ref_free(alice);
    CHECK(quark_client_disconnect(client));
    quark_client_free(client);
    CHECK(quark_silo_stop(silo));
    quark_silo_free(silo);

    if (durable_part() != 0)
        return 1;
    printf("demo: all results as expected\n");
    return 0;
}
