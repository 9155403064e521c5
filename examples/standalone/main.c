/*
 * main.c - host the Greeter in an embedded silo, call it, check the replies.
 *
 * Prints "greeter: ok" and exits 0 when every reply is what a Greeter must
 * answer; otherwise says what went wrong and exits 1.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "greeter_actor.h"

/* Any Quark failure: say which call failed and why, then give up. */
#define CHECK(expr)                                                                   \
    do {                                                                              \
        quark_err rc_ = (expr);                                                       \
        if (rc_ != QUARK_OK) {                                                        \
            fprintf(stderr, "greeter: FAILED: %s returned %s: %s\n", #expr,          \
                    quark_errname(rc_), quark_last_error());                          \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

static void fail(const char *what, long long got, long long want)
{
    fprintf(stderr, "greeter: FAILED: %s: got %lld, expected %lld\n", what, got, want);
    exit(1);
}

/* Greet `name` through `ref` (blocking) and check the count and the text. */
static void greet(quark_ref *ref, const char *name, int64_t want_count)
{
    Demo__Greeter__GreetRequest req = DEMO__GREETER__GREET_REQUEST__INIT;
    req.name = (char *)name;
    Demo__Greeter__GreetReply *reply;
    CHECK(demo_greeter_Greeter_Greet(ref, &req, &reply));
    printf("Greet(%s, \"%s\") -> \"%s\" (count %lld)\n", quark_ref_id(ref), name, reply->text,
           (long long)reply->count);
    if (reply->count != want_count)
        fail("greeting count", (long long)reply->count, (long long)want_count);
    char want_text[256];
    snprintf(want_text, sizeof want_text, "Hello, %s! (greeting #%lld from %s)", name,
             (long long)want_count, quark_ref_id(ref));
    if (strcmp(reply->text, want_text) != 0) {
        fprintf(stderr, "greeter: FAILED: text \"%s\", expected \"%s\"\n", reply->text, want_text);
        exit(1);
    }
    quark_msg_free(reply);
}

/* The asynchronous call's outcome, written by its callback on a Quark thread. */
static atomic_int async_done;
static atomic_llong async_count;
static atomic_int async_err;

static void on_greet(quark_err err, const char *errmsg, const Demo__Greeter__GreetReply *reply,
                     void *arg)
{
    (void)arg;
    if (err != QUARK_OK) {
        fprintf(stderr, "greeter: async Greet failed: %s: %s\n", quark_errname(err), errmsg);
        atomic_store(&async_err, err);
    } else {
        printf("Greet_async -> \"%s\" (count %lld)\n", reply->text, (long long)reply->count);
        atomic_store(&async_count, reply->count);
    }
    atomic_store(&async_done, 1);
}

static int64_t count_of(quark_ref *ref)
{
    Demo__Greeter__CountRequest req = DEMO__GREETER__COUNT_REQUEST__INIT;
    Demo__Greeter__GreetReply *reply;
    CHECK(demo_greeter_Greeter_Count(ref, &req, &reply));
    int64_t n = reply->count;
    quark_msg_free(reply);
    printf("Count(%s) -> %lld\n", quark_ref_id(ref), (long long)n);
    return n;
}

int main(void)
{
    /* A silo in this process, and a client that calls it directly. */
    quark_silo_opts so;
    quark_silo_opts_init(&so);
    so.workers = 2;
    quark_silo *silo;
    CHECK(quark_silo_create(&so, &silo));
    CHECK(quark_silo_start(silo));

    quark_client_opts co;
    quark_client_opts_init(&co);
    co.embedded = silo;
    quark_client *client;
    CHECK(quark_client_create(&co, &client));
    CHECK(quark_client_connect(client));

    /* One Greeter per id; each counts on its own. */
    quark_ref *alice, *bob, *carol;
    CHECK(demo_greeter_Greeter_ref(client, "alice", &alice));
    CHECK(demo_greeter_Greeter_ref(client, "bob", &bob));
    CHECK(demo_greeter_Greeter_ref(client, "carol", &carol));

    greet(alice, "Alice", 1);
    greet(alice, "Alice", 2);
    greet(bob, "Bob", 1);
    greet(alice, "Alice", 3);

    /* Asynchronous: the callback runs on a Quark thread; wait for it (10 s at most). */
    Demo__Greeter__GreetRequest req = DEMO__GREETER__GREET_REQUEST__INIT;
    req.name = (char *)"Alice";
    CHECK(demo_greeter_Greeter_Greet_async(alice, &req, on_greet, NULL));
    for (int ms = 0; !atomic_load(&async_done); ms++) {
        if (ms == 10000) {
            fprintf(stderr, "greeter: FAILED: the async Greet did not complete in 10 s\n");
            return 1;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&async_err) != QUARK_OK)
        return 1;
    if (atomic_load(&async_count) != 4)
        fail("async greeting count", atomic_load(&async_count), 4);

    /* The read-only Count: alice greeted 4 times, bob once, carol never. */
    int64_t n;
    if ((n = count_of(alice)) != 4)
        fail("Count(alice)", (long long)n, 4);
    if ((n = count_of(bob)) != 1)
        fail("Count(bob)", (long long)n, 1);
    if ((n = count_of(carol)) != 0)
        fail("Count(carol)", (long long)n, 0);

    quark_ref_free(alice);
    quark_ref_free(bob);
    quark_ref_free(carol);
    CHECK(quark_client_disconnect(client));
    quark_client_free(client);
    CHECK(quark_silo_stop(silo));
    quark_silo_free(silo);
    printf("greeter: ok\n");
    return 0;
}
