/*
 * reminders_redis.c - reminders in Redis (reminders.h). One hash per bucket,
 * readable with redis-cli:
 *
 *   HGETALL <cluster_id>/reminders/<bucket>
 *     "<type>/<id_len>:<id><name>"  ->  "<due_ms> <period_ms> <key hash>"
 *
 * (the field encoding is qk_reminder_field: any bytes in ids and names).
 * Every call blocks (the reminder service's own thread), on a synchronous
 * hiredis connection with a 2 s timeout; a broken one is opened again by
 * the next call. Loading a bucket walks it with HSCAN, so a large bucket
 * never costs Redis one long command.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/redis_link.h"
#include "storage/reminders.h"

typedef struct rem_rd {
    qk_redis_addr addr;
    char *prefix;                  /* "<cluster>/reminders/" */
    redisContext *c;
} rem_rd;

static quark_err rd_fail(rem_rd *r, const char *what, const char *why)
{
    return qk_error(QUARK_ESTORAGE, "reminders in Redis %s:%d: %s: %s", r->addr.host,
                    r->addr.port, what, why);
}

/* The connection, opened (again) if need be; NULL with the error set. */
static redisContext *conn(rem_rd *r, const char *what)
{
    if (r->c && !r->c->err)
        return r->c;
    if (r->c)
        redisFree(r->c);
    struct timeval tmo = {.tv_sec = 2};
    r->c = redisConnectWithTimeout(r->addr.host, r->addr.port, tmo);
    if (!r->c || r->c->err) {
        rd_fail(r, what, r->c ? r->c->errstr : "out of memory");
        if (r->c)
            redisFree(r->c);
        r->c = NULL;
        return NULL;
    }
    redisSetTimeout(r->c, tmo);
    if (r->addr.db) {
        redisReply *rep = redisCommand(r->c, "SELECT %d", r->addr.db);
        bool ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep)
            freeReplyObject(rep);
        if (!ok) {
            rd_fail(r, what, "SELECT of the database failed");
            redisFree(r->c);
            r->c = NULL;
            return NULL;
        }
    }
    return r->c;
}

/* Run argv; the reply (the caller frees it), or NULL with the error set. */
static redisReply *command(rem_rd *r, const char *what, int argc, const char **argv,
                           const size_t *lens)
{
    redisContext *c = conn(r, what);
    if (!c)
        return NULL;
    redisReply *rep = redisCommandArgv(c, argc, argv, lens);
    if (!rep) {
        rd_fail(r, what, c->errstr[0] ? c->errstr : "no answer");
        redisFree(r->c); /* a broken connection: the next call opens another */
        r->c = NULL;
        return NULL;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        rd_fail(r, what, rep->str);
        freeReplyObject(rep);
        return NULL;
    }
    return rep;
}

static void bucket_key(rem_rd *r, uint32_t b, char *out, size_t cap)
{
    snprintf(out, cap, "%s%u", r->prefix, b);
}

static quark_err rd_upsert(void *self, const qk_reminder *rm)
{
    rem_rd *r = self;
    char key[300], val[80];
    bucket_key(r, qk_reminder_bucket(rm->key.hash), key, sizeof key);
    char *f = malloc(rm->key.type_len + rm->key.id_len + rm->name_len + 24);
    if (!f)
        return qk_error(QUARK_ENOMEM, "out of memory storing a reminder");
    size_t fl = qk_reminder_field(f, &rm->key, rm->name, rm->name_len);
    int vl = snprintf(val, sizeof val, "%llu %llu %llu", (unsigned long long)rm->due_ms,
                      (unsigned long long)rm->period_ms, (unsigned long long)rm->key.hash);
    const char *argv[] = {"HSET", key, f, val};
    size_t lens[] = {4, strlen(key), fl, (size_t)vl};
    redisReply *rep = command(r, "storing a reminder", 4, argv, lens);
    free(f);
    if (!rep)
        return QUARK_ESTORAGE;
    freeReplyObject(rep);
    return QUARK_OK;
}

static quark_err rd_remove(void *self, const qk_actor_key *k, const char *name, size_t name_len,
                           bool *existed)
{
    rem_rd *r = self;
    char key[300];
    bucket_key(r, qk_reminder_bucket(k->hash), key, sizeof key);
    char *f = malloc(k->type_len + k->id_len + name_len + 24);
    if (!f)
        return qk_error(QUARK_ENOMEM, "out of memory removing a reminder");
    size_t fl = qk_reminder_field(f, k, name, name_len);
    const char *argv[] = {"HDEL", key, f};
    size_t lens[] = {4, strlen(key), fl};
    redisReply *rep = command(r, "removing a reminder", 3, argv, lens);
    free(f);
    if (!rep)
        return QUARK_ESTORAGE;
    *existed = rep->type == REDIS_REPLY_INTEGER && rep->integer > 0;
    freeReplyObject(rep);
    return QUARK_OK;
}

/* Walk bucket b with HSCAN; tell fn each entry whose field begins with
 * prefix[0..plen) (plen 0: all). */
static quark_err scan(rem_rd *r, uint32_t b, const char *prefix, size_t plen,
                      qk_reminder_fn fn, void *arg)
{
    char key[300], cursor[32] = "0";
    bucket_key(r, b, key, sizeof key);
    do {
        const char *argv[] = {"HSCAN", key, cursor, "COUNT", "500"};
        size_t lens[] = {5, strlen(key), strlen(cursor), 5, 3};
        redisReply *rep = command(r, "reading reminders", 5, argv, lens);
        if (!rep)
            return QUARK_ESTORAGE;
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
            rep->element[0]->type != REDIS_REPLY_STRING ||
            rep->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(rep);
            return rd_fail(r, "reading reminders", "an HSCAN reply of an unexpected shape");
        }
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        const redisReply *kv = rep->element[1];
        for (size_t i = 0; i + 1 < kv->elements; i += 2) {
            const redisReply *f = kv->element[i], *v = kv->element[i + 1];
            qk_reminder rm;
            unsigned long long due, period, hash;
            if (f->len < plen || memcmp(f->str, prefix, plen) != 0 ||
                !qk_reminder_field_parse(f->str, f->len, &rm) ||
                sscanf(v->str, "%llu %llu %llu", &due, &period, &hash) != 3)
                continue; /* not this actor's, or not a reminder of ours */
            rm.key.hash = hash;
            rm.due_ms = due;
            rm.period_ms = period;
            fn(arg, &rm);
        }
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
    return QUARK_OK;
}

static quark_err rd_list(void *self, const qk_actor_key *k, qk_reminder_fn fn, void *arg)
{
    size_t pl;
    char *p = qk_reminder_actor_prefix(k, &pl);
    if (!p)
        return qk_error(QUARK_ENOMEM, "out of memory listing reminders");
    quark_err rc = scan(self, qk_reminder_bucket(k->hash), p, pl, fn, arg);
    free(p);
    return rc;
}

static quark_err rd_load_bucket(void *self, uint32_t b, qk_reminder_fn fn, void *arg)
{
    if (b >= QK_REMINDER_BUCKETS)
        return qk_error(QUARK_EINVAL, "reminder bucket %u is out of range", b);
    return scan(self, b, "", 0, fn, arg);
}

static void rd_destroy(void *self)
{
    rem_rd *r = self;
    if (r->c)
        redisFree(r->c);
    free(r->prefix);
    free(r);
}

static const qk_reminders_ops rd_ops = {
    .name = "redis",
    .upsert = rd_upsert,
    .remove = rd_remove,
    .list = rd_list,
    .load_bucket = rd_load_bucket,
    .destroy = rd_destroy,
};

quark_err qk_reminders_redis_open(const char *spec, const char *cluster_id,
                                  const qk_reminders_ops **ops, void **self)
{
    qk_redis_addr a;
    quark_err rc = qk_redis_addr_parse(spec, "reminders", &a);
    if (rc != QUARK_OK)
        return rc;
    rem_rd *r = calloc(1, sizeof *r);
    if (!r || !(r->prefix = qk_redis_key(cluster_id, "reminders/"))) {
        free(r);
        return qk_error(QUARK_ENOMEM, "out of memory opening the Redis reminders");
    }
    r->addr = a;
    *ops = &rd_ops;
    *self = r; /* connected at the first call: a Redis that is down now may be up then */
    return QUARK_OK;
}
