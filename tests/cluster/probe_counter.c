/*
 * probe_counter.c - ProbeCounter, the single-activation test's actor
 * (linked into probe-silo beside counter-silo's main and actors).
 *
 * A DurableCounter (its value in the silo's storage, a reply only once the
 * value is stored) that also writes, to a list in Redis per actor, a record
 * of its activation's start and of each call it begins to serve, with the
 * machine's wall clock in microseconds (every silo of the test runs on one
 * machine, so the clocks agree):
 *   s <activation> <us>   on_activate ran
 *   c <activation> <us>   an Increment or Get began (the time is read first)
 *   e <activation> <us>   on_deactivate ran
 * The list is "probe/<QUARK_PROBE_PREFIX>/<id>" in the Redis server at
 * QUARK_PROBE_REDIS ("HOST:PORT"). A record that cannot be written fails the
 * activation or the call, so nothing is served unrecorded. The write is a
 * blocking round trip on the worker: a test actor only.
 */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "counter_actor.h"

#define state_of quark_examples_CounterActor_state

struct probe_mem {
    uint64_t activation;         /* unique on this machine: pid and a counter */
};

static _Thread_local redisContext *t_redis;
static atomic_uint_fast32_t g_next;
/* Frees a worker thread's connection when the thread ends. */
static pthread_key_t g_conn_key;
static pthread_once_t g_conn_once = PTHREAD_ONCE_INIT;

static void conn_free(void *c)
{
    redisFree(c);
}

static void conn_key_init(void)
{
    pthread_key_create(&g_conn_key, conn_free);
}

static uint64_t wall_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

static redisContext *probe_redis(void)
{
    if (t_redis && !t_redis->err)
        return t_redis;
    if (t_redis)
        redisFree(t_redis);
    t_redis = NULL;
    pthread_once(&g_conn_once, conn_key_init);
    pthread_setspecific(g_conn_key, NULL);
    const char *spec = getenv("QUARK_PROBE_REDIS");
    char host[64] = "127.0.0.1";
    int port = 6379;
    if (spec && sscanf(spec, "%63[^:]:%d", host, &port) < 1)
        return NULL;
    struct timeval tmo = {.tv_sec = 2};
    t_redis = redisConnectWithTimeout(host, port, tmo);
    if (t_redis && !t_redis->err)
        redisSetTimeout(t_redis, tmo);
    pthread_once(&g_conn_once, conn_key_init);
    pthread_setspecific(g_conn_key, t_redis);
    return t_redis && !t_redis->err ? t_redis : NULL;
}

/* Append "<kind> <activation> <us>" to the actor's list. */
static quark_err record(quark_actor *self, char kind, uint64_t us)
{
    struct probe_mem *pm = quark_actor_state(self);
    const char *prefix = getenv("QUARK_PROBE_PREFIX");
    char key[512], val[64];
    snprintf(key, sizeof key, "probe/%s/%s", prefix ? prefix : "", quark_actor_id(self));
    snprintf(val, sizeof val, "%c %llx %llu", kind, (unsigned long long)pm->activation,
             (unsigned long long)us);
    redisContext *c = probe_redis();
    redisReply *r = c ? redisCommand(c, "RPUSH %s %s", key, val) : NULL;
    bool ok = r && r->type == REDIS_REPLY_INTEGER;
    if (r)
        freeReplyObject(r);
    if (!ok && t_redis) {
        redisFree(t_redis);
        t_redis = NULL;
        pthread_setspecific(g_conn_key, NULL);
    }
    return ok ? QUARK_OK : QUARK_EUNAVAILABLE;
}

static quark_err probe_activate(quark_actor *self)
{
    struct probe_mem *pm = quark_actor_state(self);
    pm->activation = (uint64_t)getpid() << 24 | (atomic_fetch_add(&g_next, 1) & 0xffffff);
    return record(self, 's', wall_us());
}

static void probe_deactivate(quark_actor *self)
{
    record(self, 'e', wall_us());
}

static quark_err probe_increment(quark_actor *self, const Quark__Examples__IncrementRequest *req,
                                 Quark__Examples__CounterValue *reply)
{
    uint64_t now = wall_us(); /* first: when this activation began to serve the call */
    if (record(self, 'c', now) != QUARK_OK)
        return quark_actor_fail(self, QUARK_EUNAVAILABLE, "the probe could not record the call");
    Quark__Examples__CounterState *st = state_of(self);
    st->value += req->delta;
    quark_actor_state_changed(self);
    reply->value = st->value;
    return QUARK_OK;
}

static quark_err probe_get(quark_actor *self, const Quark__Examples__GetRequest *req,
                           Quark__Examples__CounterValue *reply)
{
    (void)req;
    uint64_t now = wall_us();
    if (record(self, 'c', now) != QUARK_OK)
        return quark_actor_fail(self, QUARK_EUNAVAILABLE, "the probe could not record the call");
    reply->value = state_of(self)->value;
    return QUARK_OK;
}

static const quark_examples_CounterActor_methods probe_methods = {
    .Increment = probe_increment,
    .Get = probe_get,
};

QUARK_ACTOR_TYPE(probe_counter,
                 .interface = &quark_examples_CounterActor_interface,
                 .methods = &probe_methods,
                 .name = "ProbeCounter",
                 .persistent = quark_examples_CounterActor_STATE,
                 .state_size = sizeof(struct probe_mem),
                 .on_activate = probe_activate,
                 .on_deactivate = probe_deactivate)
