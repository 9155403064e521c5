/*
 * roundtrip_test.c - every proxy protoc-gen-quark generated for the .proto
 * files of tests/generator/good, called through an embedded silo: request
 * encoded by the proxy, decoded and dispatched by the generated dispatcher,
 * the reply encoded and decoded back, blocking and asynchronous (through the
 * generated trampolines), plus a deferred reply (<Method>_reply), an unknown
 * method number (QUARK_ENOMETHOD), NULL requests (QUARK_EINVAL) and a method
 * left NULL in the table (QUARK_EUNIMPLEMENTED).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nopkg.quark.h"
#include "zoo.quark.h"
#ifdef QG_TEST_HAVE_CPKG
#include "cpkg.quark.h"
#endif

static int failures;

/* Deadline of every call of the test (the runtime's default is 30 s). */
#define CALL_DEADLINE_MS 5000

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__, \
                    __LINE__, #cond, quark_last_error());                        \
            failures++;                                                          \
        }                                                                        \
    } while (0)

#define CHECK_OK(expr)                                                           \
    do {                                                                         \
        quark_err rc_ = (expr);                                                  \
        if (rc_ != QUARK_OK) {                                                   \
            fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__,   \
                    #expr, quark_errname(rc_), quark_last_error());              \
            failures++;                                                          \
        }                                                                        \
    } while (0)

#define CHECK_ERR(expr, want)                                                    \
    do {                                                                         \
        quark_err rc_ = (expr);                                                  \
        if (rc_ != (want)) {                                                     \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s\n", __FILE__,    \
                    __LINE__, #expr, quark_errname(rc_), quark_errname(want));   \
            failures++;                                                          \
        }                                                                        \
    } while (0)

/* A copy of a string into memory that lives until the turn returns. */
static char *turn_strdup(quark_actor *self, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = quark_actor_alloc(self, n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

/* ======== the implementations ======== */

struct keeper_state {
    quark_ref *gateway;      /* made on first use, freed on deactivation */
    quark_deferred *pending; /* the Deferred call being answered */
    char name[64];
};

static quark_err keeper_get_status(quark_actor *self, const Google__Protobuf__Empty *req,
                                   MyPkg__V1__HTTPStatus2 *reply)
{
    (void)req;
    reply->code = 200;
    reply->text = turn_strdup(self, quark_actor_id(self));
    return reply->text != NULL ? QUARK_OK : QUARK_ENOMEM;
}

static quark_err keeper_put_thing2(quark_actor *self, const MyPkg__V1__SnakeCaseReq *req,
                                   Google__Protobuf__Timestamp *reply)
{
    (void)self;
    reply->seconds = (int64_t)strlen(req->key);
    reply->nanos = req->at != NULL ? req->at->nanos + 1 : -1;
    return QUARK_OK;
}

static quark_err keeper_echo(quark_actor *self, const MyPkg__V1__Echo *req,
                             MyPkg__V1__Echo *reply)
{
    reply->text = turn_strdup(self, req->text);
    reply->n_tags = req->n_tags;
    reply->tags = quark_actor_alloc(self, (req->n_tags + 1) * sizeof(*reply->tags));
    Zoo__Common__Tag *tags = quark_actor_alloc(self, (req->n_tags + 1) * sizeof(*tags));
    if (reply->text == NULL || reply->tags == NULL || tags == NULL)
        return QUARK_ENOMEM;
    for (size_t i = 0; i < req->n_tags; i++) {
        zoo__common__tag__init(&tags[i]);
        tags[i].name = turn_strdup(self, req->tags[i]->name);
        tags[i].weight = req->tags[i]->weight * 2;
        reply->tags[i] = &tags[i];
    }
    return QUARK_OK;
}

static quark_err keeper_nested(quark_actor *self, const MyPkg__V1__Outer__InnerMsg *req,
                               MyPkg__V1__Outer__InnerMsg__DeepX9 *reply)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "v=%d", (int)req->v);
    reply->s = turn_strdup(self, buf);
    return reply->s != NULL ? QUARK_OK : QUARK_ENOMEM;
}

/* Completion of the gateway call made by keeper_deferred: runs as a turn of
 * the keeper, which answers its deferred call with the generated helper. */
static void keeper_on_fetched(quark_err err, const char *errmsg,
                              const MyPkg__V1__HTTPStatus2 *fetched, void *arg)
{
    struct keeper_state *st = arg;
    quark_deferred *call = st->pending;
    st->pending = NULL;
    if (err != QUARK_OK) {
        quark_reply_error(call, err, "the gateway failed: %s", errmsg);
        return;
    }
    Zoo__Common__Tag reply = ZOO__COMMON__TAG__INIT;
    reply.name = st->name;
    reply.weight = fetched->code;
    CHECK_OK(my_pkg_v1_Keeper_Deferred_reply(call, &reply));
}

/* Deferred: asks the gateway actor (asynchronously, through the generated
 * proxy) and replies when it answers. */
static quark_err keeper_deferred(quark_actor *self, const Zoo__Common__Tag *req,
                                 Zoo__Common__Tag *reply)
{
    (void)reply;
    struct keeper_state *st = quark_actor_state(self);
    if (st->gateway == NULL) {
        quark_err rc = my_pkg_v1_HTTP_Gateway2_ref(quark_actor_client(self), "behind-keeper",
                                                   &st->gateway);
        if (rc != QUARK_OK)
            return quark_actor_fail(self, rc, "gateway ref: %s", quark_last_error());
    }
    snprintf(st->name, sizeof(st->name), "later:%s", req->name); /* req dies with the turn */
    MyPkg__V1__HTTPStatus2 ask = MY_PKG__V1__HTTPSTATUS2__INIT;
    ask.code = req->weight;
    ask.text = "from the keeper";
    st->pending = quark_actor_defer(self);
    if (st->pending == NULL)
        return quark_actor_fail(self, QUARK_EINTERNAL, "quark_actor_defer returned NULL");
    quark_err rc = my_pkg_v1_HTTP_Gateway2_fetch_async(st->gateway, &ask, keeper_on_fetched, st);
    if (rc != QUARK_OK) {
        quark_reply_error(st->pending, rc, "fetch_async: %s", quark_last_error());
        st->pending = NULL;
    }
    return QUARK_PENDING;
}

static void keeper_deactivate(quark_actor *self)
{
    struct keeper_state *st = quark_actor_state(self);
    quark_ref_free(st->gateway);
    st->gateway = NULL;
}

static const my_pkg_v1_Keeper_methods keeper_methods = {
    .GetStatus = keeper_get_status,
    .Put_Thing2 = keeper_put_thing2,
    .Echo = keeper_echo,
    .Nested = keeper_nested,
    .Deferred = keeper_deferred,
};

QUARK_ACTOR_TYPE(keeper_impl,
                 .interface = &my_pkg_v1_Keeper_interface,
                 .methods = &keeper_methods,
                 .map_to_interface = 1,
                 .state_size = sizeof(struct keeper_state),
                 .on_deactivate = keeper_deactivate)

static quark_err gateway_fetch(quark_actor *self, const MyPkg__V1__HTTPStatus2 *req,
                               MyPkg__V1__HTTPStatus2 *reply)
{
    reply->code = req->code + 1;
    reply->text = turn_strdup(self, req->text);
    return QUARK_OK;
}

static const my_pkg_v1_HTTP_Gateway2_methods gateway_methods = {
    .fetch = gateway_fetch,
    /* .Unimplemented left NULL on purpose */
};

QUARK_ACTOR_TYPE(gateway_impl,
                 .interface = &my_pkg_v1_HTTP_Gateway2_interface,
                 .methods = &gateway_methods,
                 .map_to_interface = 1)

static quark_err plain_hello(quark_actor *self, const PlainRequest *req, PlainReply *reply)
{
    char buf[96];
    snprintf(buf, sizeof(buf), "hello, %s", req->who);
    reply->greeting = turn_strdup(self, buf);
    reply->tag = quark_actor_alloc(self, sizeof(*reply->tag));
    if (reply->greeting == NULL || reply->tag == NULL)
        return QUARK_ENOMEM;
    zoo__common__tag__init(reply->tag);
    reply->tag->name = turn_strdup(self, quark_actor_id(self));
    reply->tag->weight = 7;
    return QUARK_OK;
}

static const Plain_methods plain_methods = {.Hello = plain_hello};

QUARK_ACTOR_TYPE(plain_impl,
                 .interface = &Plain_interface,
                 .methods = &plain_methods,
                 .map_to_interface = 1)

#ifdef QG_TEST_HAVE_CPKG
static quark_err pinger_ping(quark_actor *self, const Renamed__Pkg__Ping *req,
                             Renamed__Pkg__Pong *reply)
{
    (void)self;
    reply->has_n = 1;
    reply->n = req->n + 1;
    return QUARK_OK;
}

static quark_err pinger_back(quark_actor *self, const Renamed__Pkg__Pong *req,
                             Renamed__Pkg__Ping *reply)
{
    (void)self;
    reply->has_n = 1;
    reply->n = req->n * 2;
    return QUARK_OK;
}

static const cpkg_orig_Pinger_methods pinger_methods = {
    .Ping = pinger_ping,
    .Back = pinger_back,
};

QUARK_ACTOR_TYPE(pinger_impl,
                 .interface = &cpkg_orig_Pinger_interface,
                 .methods = &pinger_methods,
                 .map_to_interface = 1)
#endif

/* ======== waiting for asynchronous completions ======== */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    quark_err err;
    char errmsg[256];
    char text[128];
    long long num;
};

static void waiter_init(struct waiter *w)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

static void waiter_finish(struct waiter *w, quark_err err, const char *errmsg,
                          const char *text, long long num)
{
    pthread_mutex_lock(&w->mu);
    w->err = err;
    snprintf(w->errmsg, sizeof(w->errmsg), "%s", errmsg != NULL ? errmsg : "");
    snprintf(w->text, sizeof(w->text), "%s", text != NULL ? text : "");
    w->num = num;
    w->done++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Wait for the callback; returns its error code. The references' deadline
 * (CALL_DEADLINE_MS) bounds the wait: a callback missing long after it is a
 * runtime bug, and the test stops (the waiter lives on the caller's stack). */
static quark_err waiter_wait(struct waiter *w)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 4 * CALL_DEADLINE_MS / 1000;
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    while (w->done == 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&w->cv, &w->mu, &until);
    int done = w->done;
    quark_err err = w->err;
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    if (done != 1) {
        fprintf(stderr, "callback ran %d times (expected once): giving up\n", done);
        abort();
    }
    return err;
}

static void on_status(quark_err err, const char *errmsg, const MyPkg__V1__HTTPStatus2 *reply,
                      void *arg)
{
    waiter_finish(arg, err, errmsg, reply ? reply->text : NULL, reply ? reply->code : -1);
}

static void on_timestamp(quark_err err, const char *errmsg,
                         const Google__Protobuf__Timestamp *reply, void *arg)
{
    waiter_finish(arg, err, errmsg, NULL,
                  reply ? (long long)reply->seconds * 1000 + reply->nanos : -1);
}

static void on_echo(quark_err err, const char *errmsg, const MyPkg__V1__Echo *reply, void *arg)
{
    long long sum = -1;
    if (reply != NULL) {
        sum = (long long)reply->n_tags * 1000;
        for (size_t i = 0; i < reply->n_tags; i++)
            sum += reply->tags[i]->weight;
    }
    waiter_finish(arg, err, errmsg, reply ? reply->text : NULL, sum);
}

static void on_nested(quark_err err, const char *errmsg,
                      const MyPkg__V1__Outer__InnerMsg__DeepX9 *reply, void *arg)
{
    waiter_finish(arg, err, errmsg, reply ? reply->s : NULL, 0);
}

static void on_tag(quark_err err, const char *errmsg, const Zoo__Common__Tag *reply, void *arg)
{
    waiter_finish(arg, err, errmsg, reply ? reply->name : NULL, reply ? reply->weight : -1);
}

static void on_empty(quark_err err, const char *errmsg, const Google__Protobuf__Empty *reply,
                     void *arg)
{
    waiter_finish(arg, err, errmsg, NULL, reply != NULL);
}

static void on_hello(quark_err err, const char *errmsg, const PlainReply *reply, void *arg)
{
    waiter_finish(arg, err, errmsg, reply ? reply->greeting : NULL,
                  reply && reply->tag ? reply->tag->weight : -1);
}

#ifdef QG_TEST_HAVE_CPKG
static void on_pong(quark_err err, const char *errmsg, const Renamed__Pkg__Pong *reply,
                    void *arg)
{
    waiter_finish(arg, err, errmsg, NULL, reply ? reply->n : -1);
}
#endif

/* ======== the calls ======== */

static void test_keeper(quark_client *client)
{
    quark_ref *ref = NULL;
    CHECK_OK(my_pkg_v1_Keeper_ref(client, "keeper-1", &ref));
    if (ref == NULL)
        return;
    CHECK(strcmp(quark_ref_type_name(ref), "zoo.Keeper") == 0);
    struct waiter w;

    /* GetStatus */
    Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
    MyPkg__V1__HTTPStatus2 *status = NULL;
    CHECK_OK(my_pkg_v1_Keeper_GetStatus(ref, &empty, &status));
    CHECK(status != NULL && status->code == 200 && strcmp(status->text, "keeper-1") == 0);
    quark_msg_free(status);
    waiter_init(&w);
    CHECK_OK(my_pkg_v1_Keeper_GetStatus_async(ref, &empty, on_status, &w));
    CHECK_OK(waiter_wait(&w));
    CHECK(w.num == 200 && strcmp(w.text, "keeper-1") == 0);

    /* Put_Thing2 */
    Google__Protobuf__Timestamp at = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    at.nanos = 41;
    MyPkg__V1__SnakeCaseReq put = MY_PKG__V1__SNAKE_CASE_REQ__INIT;
    put.key = "four";
    put.at = &at;
    Google__Protobuf__Timestamp *ts = NULL;
    CHECK_OK(my_pkg_v1_Keeper_Put_Thing2(ref, &put, &ts));
    CHECK(ts != NULL && ts->seconds == 4 && ts->nanos == 42);
    quark_msg_free(ts);
    waiter_init(&w);
    CHECK_OK(my_pkg_v1_Keeper_Put_Thing2_async(ref, &put, on_timestamp, &w));
    CHECK_OK(waiter_wait(&w));
    CHECK(w.num == 4042);

    /* Echo, with repeated messages of another package */
    Zoo__Common__Tag t1 = ZOO__COMMON__TAG__INIT, t2 = ZOO__COMMON__TAG__INIT;
    t1.name = "a";
    t1.weight = 1;
    t2.name = "b";
    t2.weight = 20;
    Zoo__Common__Tag *tags[] = {&t1, &t2};
    MyPkg__V1__Echo echo = MY_PKG__V1__ECHO__INIT;
    echo.text = "hi there";
    echo.n_tags = 2;
    echo.tags = tags;
    MyPkg__V1__Echo *echoed = NULL;
    CHECK_OK(my_pkg_v1_Keeper_Echo(ref, &echo, &echoed));
    CHECK(echoed != NULL && strcmp(echoed->text, "hi there") == 0 && echoed->n_tags == 2 &&
          strcmp(echoed->tags[1]->name, "b") == 0 && echoed->tags[1]->weight == 40);
    quark_msg_free(echoed);
    waiter_init(&w);
    CHECK_OK(my_pkg_v1_Keeper_Echo_async(ref, &echo, on_echo, &w));
    CHECK_OK(waiter_wait(&w));
    CHECK(w.num == 2042 && strcmp(w.text, "hi there") == 0);
    /* a NULL reply pointer is allowed: the reply is dropped */
    CHECK_OK(my_pkg_v1_Keeper_Echo(ref, &echo, NULL));

    /* Nested messages */
    MyPkg__V1__Outer__InnerMsg inner = MY_PKG__V1__OUTER__INNER_MSG__INIT;
    inner.v = 9;
    MyPkg__V1__Outer__InnerMsg__DeepX9 *deep = NULL;
    CHECK_OK(my_pkg_v1_Keeper_Nested(ref, &inner, &deep));
    CHECK(deep != NULL && strcmp(deep->s, "v=9") == 0);
    quark_msg_free(deep);
    waiter_init(&w);
    CHECK_OK(my_pkg_v1_Keeper_Nested_async(ref, &inner, on_nested, &w));
    CHECK_OK(waiter_wait(&w));
    CHECK(strcmp(w.text, "v=9") == 0);

    /* Deferred: the keeper asks the gateway (fetch: code + 1), then answers
     * through Keeper_Deferred_reply */
    Zoo__Common__Tag later = ZOO__COMMON__TAG__INIT;
    later.name = "x";
    later.weight = 5;
    Zoo__Common__Tag *answered = NULL;
    CHECK_OK(my_pkg_v1_Keeper_Deferred(ref, &later, &answered));
    CHECK(answered != NULL && strcmp(answered->name, "later:x") == 0 && answered->weight == 6);
    quark_msg_free(answered);
    waiter_init(&w);
    CHECK_OK(my_pkg_v1_Keeper_Deferred_async(ref, &later, on_tag, &w));
    CHECK_OK(waiter_wait(&w));
    CHECK(w.num == 6 && strcmp(w.text, "later:x") == 0);

    /* an unknown method number */
    ProtobufCMessage *raw = NULL;
    CHECK_ERR(quark_call(ref, &my_pkg_v1_Keeper_interface, my_pkg_v1_Keeper_METHOD_COUNT + 3,
                         &empty.base, &raw),
              QUARK_ENOMETHOD);
    CHECK(raw == NULL);

    /* NULL requests */
    echoed = &echo; /* must be reset */
    CHECK_ERR(my_pkg_v1_Keeper_Echo(ref, NULL, &echoed), QUARK_EINVAL);
    CHECK(echoed == NULL);
    CHECK_ERR(my_pkg_v1_Keeper_Echo_async(ref, NULL, on_echo, NULL), QUARK_EINVAL);
    CHECK_ERR(my_pkg_v1_Keeper_Echo_async(ref, &echo, NULL, NULL), QUARK_EINVAL);

    quark_ref_free(ref);
}

static void test_gateway(quark_client *client)
{
    quark_ref *ref = NULL;
    CHECK_OK(my_pkg_v1_HTTP_Gateway2_ref(client, "gw", &ref));
    if (ref == NULL)
        return;
    CHECK(strcmp(quark_ref_type_name(ref), "my_pkg.v1.HTTP_Gateway2") == 0);
    struct waiter w;

    MyPkg__V1__HTTPStatus2 req = MY_PKG__V1__HTTPSTATUS2__INIT;
    req.code = 404;
    req.text = "not found";
    MyPkg__V1__HTTPStatus2 *rep = NULL;
    CHECK_OK(my_pkg_v1_HTTP_Gateway2_fetch(ref, &req, &rep));
    CHECK(rep != NULL && rep->code == 405 && strcmp(rep->text, "not found") == 0);
    quark_msg_free(rep);
    waiter_init(&w);
    CHECK_OK(my_pkg_v1_HTTP_Gateway2_fetch_async(ref, &req, on_status, &w));
    CHECK_OK(waiter_wait(&w));
    CHECK(w.num == 405);

    /* left NULL in the table */
    Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
    Google__Protobuf__Empty *none = NULL;
    CHECK_ERR(my_pkg_v1_HTTP_Gateway2_Unimplemented(ref, &empty, &none), QUARK_EUNIMPLEMENTED);
    CHECK(none == NULL);
    waiter_init(&w);
    CHECK_OK(my_pkg_v1_HTTP_Gateway2_Unimplemented_async(ref, &empty, on_empty, &w));
    CHECK_ERR(waiter_wait(&w), QUARK_EUNIMPLEMENTED);
    CHECK(w.num == 0); /* no reply with an error */

    quark_ref_free(ref);
}

static void test_plain(quark_client *client)
{
    quark_ref *ref = NULL;
    CHECK_OK(Plain_ref(client, "p1", &ref));
    if (ref == NULL)
        return;
    CHECK(strcmp(quark_ref_type_name(ref), "Plain") == 0);
    PlainRequest req = PLAIN_REQUEST__INIT;
    req.who = "world";
    PlainReply *rep = NULL;
    CHECK_OK(Plain_Hello(ref, &req, &rep));
    CHECK(rep != NULL && strcmp(rep->greeting, "hello, world") == 0 && rep->tag != NULL &&
          strcmp(rep->tag->name, "p1") == 0 && rep->tag->weight == 7);
    quark_msg_free(rep);
    struct waiter w;
    waiter_init(&w);
    CHECK_OK(Plain_Hello_async(ref, &req, on_hello, &w));
    CHECK_OK(waiter_wait(&w));
    CHECK(w.num == 7 && strcmp(w.text, "hello, world") == 0);
    quark_ref_free(ref);
}

#ifdef QG_TEST_HAVE_CPKG
static void test_pinger(quark_client *client)
{
    quark_ref *ref = NULL;
    CHECK_OK(cpkg_orig_Pinger_ref(client, "p", &ref));
    if (ref == NULL)
        return;
    Renamed__Pkg__Ping ping = RENAMED__PKG__PING__INIT;
    ping.has_n = 1;
    ping.n = 20;
    Renamed__Pkg__Pong *pong = NULL;
    CHECK_OK(cpkg_orig_Pinger_Ping(ref, &ping, &pong));
    CHECK(pong != NULL && pong->n == 21);
    Renamed__Pkg__Ping *back = NULL;
    if (pong != NULL) {
        CHECK_OK(cpkg_orig_Pinger_Back(ref, pong, &back));
        CHECK(back != NULL && back->n == 42);
    }
    quark_msg_free(back);
    quark_msg_free(pong);
    struct waiter w;
    waiter_init(&w);
    CHECK_OK(cpkg_orig_Pinger_Ping_async(ref, &ping, on_pong, &w));
    CHECK_OK(waiter_wait(&w));
    CHECK(w.num == 21);
    quark_ref_free(ref);
}
#endif

int main(void)
{
    quark_silo_opts sopts;
    quark_silo_opts_init(&sopts);
    sopts.workers = 2;
    sopts.default_deadline_ms = CALL_DEADLINE_MS;
    quark_silo *silo = NULL;
    CHECK_OK(quark_silo_create(&sopts, &silo));
    if (silo == NULL)
        return 1;
    CHECK_OK(quark_silo_start(silo));

    quark_client_opts copts;
    quark_client_opts_init(&copts);
    copts.embedded = silo;
    copts.default_deadline_ms = CALL_DEADLINE_MS;
    quark_client *client = NULL;
    CHECK_OK(quark_client_create(&copts, &client));
    if (client == NULL)
        return 1;
    CHECK_OK(quark_client_connect(client));

    test_keeper(client);
    test_gateway(client);
    test_plain(client);
#ifdef QG_TEST_HAVE_CPKG
    test_pinger(client);
#endif

    quark_client_free(client);
    CHECK_OK(quark_silo_stop(silo));
    quark_silo_free(silo);

    if (failures != 0) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    puts("generator round trip: all checks passed");
    return 0;
}
