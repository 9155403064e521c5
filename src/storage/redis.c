/*
 * redis.c - the Redis storage: "redis://HOST:PORT[/DB]" (docs/storage.md).
 *
 * Each worker has its own connection, driven by hiredis's async API on the
 * worker's own libuv loop (hiredis/adapters/libuv.h): nothing blocks, and
 * the commands a worker issues in one batch leave in one write (hiredis
 * buffers them until the socket is writable), so a batch of writes is one
 * pipeline. Replies come back in order, so what is in flight is a FIFO.
 *
 * A record is a hash, readable with redis-cli:
 *   <cluster>/state/<type>/<id>   etag        "1", "2", ... (+1 per write)
 *                                 data        the encoded state (absent: cleared)
 *                                 updated_at  ms since the epoch
 * A write runs one Lua script (EVALSHA; EVAL and SCRIPT LOAD again when
 * Redis answers NOSCRIPT, after a restart or SCRIPT FLUSH): it compares the
 * stored etag with the one the activation read and writes only if they are
 * equal.
 *
 * When Redis cannot be reached (refused, reset, silent for more than
 * QK_REDIS_TIMEOUT_MS), the reads in flight fail with QUARK_ESTORAGE and
 * the writes with QUARK_EUNKNOWN (Redis may have run them), new ones fail
 * at once with QUARK_ESTORAGE and the reason, and the connection is made again
 * with a growing back-off (20 ms to 1 s): the silo recovers by itself. The
 * connection, its back-off and the script's loading are core/redis_link.c's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/redis_link.h"
#include "runtime/op.h"
#include "storage/storage.h"

#define QK_REDIS_TIMEOUT_MS 5000

/* KEYS[1] the record; ARGV[1] the etag read ("" none), ARGV[2] the data,
 * ARGV[3] "1" to clear, ARGV[4] now (ms), ARGV[5] the new etag (the read
 * one's version + 1: the writer knows it, so the script does no number
 * conversions). Returns 1 written, 2 nothing to clear (no record), or the
 * stored etag (a string; "" none) when it is not the one read. */
static const char script[] =
    "local cur = redis.call('HGET', KEYS[1], 'etag') or ''\n"
    "if cur ~= ARGV[1] then return cur end\n"
    "if ARGV[3] == '1' then\n"
    "  if cur == '' then return 2 end\n"
    "  redis.call('HSET', KEYS[1], 'etag', ARGV[5], 'updated_at', ARGV[4])\n"
    "  redis.call('HDEL', KEYS[1], 'data')\n"
    "  return 1\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'etag', ARGV[5], 'data', ARGV[2], 'updated_at', ARGV[4])\n"
    "return 1\n";

/* The version a write over etag makes (a foreign etag counts as 0). */
static unsigned long long next_version(const char *etag)
{
    long long v = qk_version_of_etag(etag);
    return (unsigned long long)(v < 0 ? 0 : v) + 1;
}

typedef struct rd {
    char *spec;
    qk_redis_addr addr;
    char *prefix;                  /* "<cluster>/state/" */
} rd;

typedef struct rd_pw {
    rd *r;
    qk_redis *link;                /* this worker's connection, on its loop */
} rd_pw;

typedef struct cmd {
    rd_pw *pw;
    qk_op *op;
    qk_state_rec *rec;
    bool write;
    size_t type_len, id_len;
    char key[];                    /* the record's key, NUL-terminated */
} cmd;

static const char *const scripts[] = {script};

/* ---- completing commands ---- */

static void cmd_fail(cmd *c, quark_err err, const char *why)
{
    char text[600];
    snprintf(text, sizeof text, "%s the state of %.*s '%.*s' in Redis %s:%d: %s",
             c->write ? "storing" : "reading", (int)c->type_len, c->key + strlen(c->pw->r->prefix),
             (int)c->id_len, c->key + strlen(c->pw->r->prefix) + c->type_len + 1,
             c->pw->r->addr.host, c->pw->r->addr.port, why);
    qk_outcome o = qk_outcome_error(err, text);
    qk_op_finish(c->op, &o);
}

static void on_reply(void *priv, const redisReply *rep, const char *why)
{
    cmd *c = priv;
    rd_pw *pw = c->pw;
    if (!rep) { /* the connection is gone (the link says why) */
        /* A write Redis may have run before it went: its outcome is not
         * known (the activation reloads what is stored). */
        char text[400];
        snprintf(text, sizeof text, "%s%s", why,
                 c->write ? "; the write may or may not have been applied" : "");
        cmd_fail(c, c->write ? QUARK_EUNKNOWN : QUARK_ESTORAGE, text);
        free(c);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        cmd_fail(c, QUARK_ESTORAGE, rep->str);
        free(c);
        return;
    }
    if (!c->write) {
        /* HMGET etag data -> [etag|nil, data|nil] */
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
            cmd_fail(c, QUARK_ESTORAGE, "unexpected reply to HMGET");
        } else {
            redisReply *e = rep->element[0], *d = rep->element[1];
            if (e->type == REDIS_REPLY_STRING && (size_t)e->len < QK_ETAG_MAX) {
                memcpy(c->rec->etag, e->str, (size_t)e->len);
                c->rec->etag[e->len] = '\0';
            } else {
                c->rec->etag[0] = '\0';
            }
            qk_outcome o = {0};
            if (d->type == REDIS_REPLY_STRING) {
                o.data = (const uint8_t *)d->str;
                o.len = (size_t)d->len;
            }
            qk_op_finish(c->op, &o); /* copied by the op (rule 4 of op.c) */
        }
        free(c);
        return;
    }
    if (rep->type == REDIS_REPLY_INTEGER && (rep->integer == 1 || rep->integer == 2)) {
        if (rep->integer == 1)
            qk_etag_of_version(c->rec->etag, next_version(c->rec->etag));
        else
            c->rec->etag[0] = '\0';
        qk_outcome o = {0};
        qk_op_finish(c->op, &o);
    } else if (rep->type == REDIS_REPLY_STRING) {
        char text[600];
        const char *type = c->key + strlen(pw->r->prefix);
        snprintf(text, sizeof text, "%.*s '%.*s': the stored state has etag '%.*s' but this "
                 "write expected '%s' (another activation wrote it)", (int)c->type_len, type,
                 (int)c->id_len, type + c->type_len + 1, (int)rep->len, rep->str, c->rec->etag);
        qk_outcome o = qk_outcome_error(QUARK_ECONFLICT, text);
        qk_op_finish(c->op, &o);
    } else {
        cmd_fail(c, QUARK_ESTORAGE, "unexpected reply to the compare-and-set script");
    }
    free(c);
}

/* ---- on the workers ---- */

static cmd *cmd_new(rd_pw *pw, const qk_actor_key *k, qk_state_rec *rec, qk_op *op, bool write)
{
    size_t pl = strlen(pw->r->prefix);
    cmd *c = malloc(sizeof *c + pl + k->type_len + 1 + k->id_len + 1);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    c->pw = pw;
    c->op = op;
    c->rec = rec;
    c->write = write;
    c->type_len = k->type_len;
    c->id_len = k->id_len;
    qk_redis_actor_key(c->key, pw->r->prefix, pl, k->type, k->type_len, k->id, k->id_len);
    return c;
}

static quark_err unreachable(rd_pw *pw, const qk_actor_key *k)
{
    const char *why = "connecting";
    qk_redis_up(pw->link, &why);
    return qk_error(QUARK_ESTORAGE, "the state of %.*s '%.*s' is in Redis %s:%d, which cannot "
                    "be reached now (%s); the silo keeps trying", (int)k->type_len, k->type,
                    (int)k->id_len, k->id, pw->r->addr.host, pw->r->addr.port, why);
}

static quark_err rd_read(void *p, const qk_actor_key *k, qk_state_rec *rec, qk_op *op)
{
    rd_pw *pw = p;
    if (!qk_redis_up(pw->link, NULL))
        return unreachable(pw, k);
    cmd *c = cmd_new(pw, k, rec, op, false);
    if (!c)
        return qk_error(QUARK_ENOMEM, "out of memory reading from Redis");
    const char *argv[] = {"HMGET", c->key, "etag", "data"};
    size_t lens[] = {5, strlen(c->key), 4, 4};
    if (qk_redis_command(pw->link, on_reply, c, 4, argv, lens) != QUARK_OK) {
        free(c);
        return unreachable(pw, k);
    }
    return QUARK_PENDING;
}

static quark_err rd_write(void *p, const qk_actor_key *k, const uint8_t *data, size_t len,
                          qk_state_rec *rec, qk_op *op)
{
    rd_pw *pw = p;
    if (!qk_redis_up(pw->link, NULL))
        return unreachable(pw, k);
    cmd *c = cmd_new(pw, k, rec, op, true);
    if (!c)
        return qk_error(QUARK_ENOMEM, "out of memory writing to Redis");
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    char now[24], next[QK_ETAG_MAX];
    snprintf(now, sizeof now, "%lld", (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000);
    qk_etag_of_version(next, next_version(rec->etag));
    const char *argv[] = {c->key, rec->etag, data ? (const char *)data : "", data ? "0" : "1",
                          now, next};
    size_t lens[] = {strlen(c->key), strlen(rec->etag), data ? len : 0, 1, strlen(now),
                     strlen(next)};
    if (qk_redis_script(pw->link, 0, on_reply, c, 1, 6, argv, lens) != QUARK_OK) {
        free(c);
        return unreachable(pw, k);
    }
    return QUARK_PENDING;
}

static void rd_flush(void *p)
{
    (void)p; /* hiredis writes what the batch queued once the socket is writable */
}

static void *rd_attach(void *self, struct qk_worker *w, uv_loop_t *loop)
{
    (void)w;
    rd *r = self;
    rd_pw *pw = calloc(1, sizeof *pw);
    if (!pw)
        return NULL;
    pw->r = r;
    pw->link = qk_redis_new(&r->addr, loop, scripts, 1, QK_REDIS_TIMEOUT_MS);
    if (!pw->link) {
        free(pw);
        return NULL;
    }
    return pw;
}

static void rd_detach(void *self, void *p)
{
    (void)self;
    rd_pw *pw = p;
    qk_redis_free(pw->link); /* what is in flight finishes now */
    free(pw);
}

static void rd_destroy(void *self)
{
    rd *r = self;
    free(r->spec);
    free(r->prefix);
    free(r);
}

static const qk_storage_ops rd_ops = {
    .name = "redis",
    .attach = rd_attach,
    .detach = rd_detach,
    .read = rd_read,
    .write = rd_write,
    .flush = rd_flush,
    .destroy = rd_destroy,
};

static quark_err rd_open(const char *spec, const char *rest, const qk_storage_env *env,
                         const qk_storage_ops **ops, void **self)
{
    (void)rest;
    qk_redis_addr a;
    quark_err rc = qk_redis_addr_parse(spec, "storage", &a);
    if (rc != QUARK_OK)
        return rc;
    rd *r = calloc(1, sizeof *r);
    if (!r)
        return qk_error(QUARK_ENOMEM, "out of memory opening storage '%s'", spec);
    r->addr = a;
    r->spec = strdup(spec);
    r->prefix = qk_redis_key(env->cluster_id, "state/");
    if (!r->spec || !r->prefix) {
        rd_destroy(r);
        return qk_error(QUARK_ENOMEM, "out of memory opening storage '%s'", spec);
    }
    *ops = &rd_ops;
    *self = r;
    return QUARK_OK;
}

const qk_storage_provider qk_storage_redis = {
    .prefix = "redis://",
    .usage = "redis://HOST:PORT[/DB]",
    .open = rd_open,
};
