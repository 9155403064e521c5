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
 * with a growing back-off (20 ms to 1 s): the silo recovers by itself.
 */
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "core/addr.h"
#include "core/common.h"
#include "runtime/op.h"
#include "storage/storage.h"

#define QK_REDIS_TIMEOUT_MS 5000
#define QK_REDIS_BACKOFF_MIN_MS 20
#define QK_REDIS_BACKOFF_MAX_MS 1000

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
    char host[64];                 /* an IP: hiredis resolves names blocking */
    int port;
    int db;
    char *prefix;                  /* "<cluster>/state/" */
} rd;

typedef struct cmd {
    struct cmd *next;
    struct rd_pw *pw;
    qk_op *op;
    qk_state_rec *rec;
    const uint8_t *data;           /* write: lent until the op is finished; NULL clears */
    size_t len;
    bool write;
    bool retried;                  /* sent again with EVAL after NOSCRIPT */
    uint64_t sent_ms;
    size_t type_len, id_len;
    char key[];                    /* the record's key, NUL-terminated */
} cmd;

typedef struct rd_pw {
    rd *r;
    uv_loop_t *loop;
    redisAsyncContext *ac;         /* NULL: not connected */
    bool connected;                /* the connect callback said so */
    char sha[48];                  /* the script's SHA1 ("" until SCRIPT LOAD answered) */
    cmd *head, *tail;              /* in flight, in order */
    uv_timer_t timer;              /* reconnect and timeouts */
    uint32_t backoff_ms;
    uint64_t retry_at_ms;
    char why[256];                 /* why it is not connected */
    bool closing;
    bool bad_db;                   /* SELECT failed: the spec's database does not exist */
    bool db_ok;                    /* SELECT answered OK (or db 0): commands may go */
} rd_pw;

static void pw_connect(rd_pw *pw);

/* ---- completing commands ---- */

static void cmd_unlink(rd_pw *pw, cmd *c)
{
    /* Replies come in order: c is the head, except when failing them all. */
    cmd **pp = &pw->head;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    if (pw->tail == c) {
        pw->tail = NULL;
        for (cmd *x = pw->head; x; x = x->next)
            pw->tail = x;
    }
}

static void cmd_fail(cmd *c, quark_err err, const char *why)
{
    char text[600];
    snprintf(text, sizeof text, "%s the state of %.*s '%.*s' in Redis %s:%d: %s",
             c->write ? "storing" : "reading", (int)c->type_len, c->key + strlen(c->pw->r->prefix),
             (int)c->id_len, c->key + strlen(c->pw->r->prefix) + c->type_len + 1,
             c->pw->r->host, c->pw->r->port, why);
    qk_outcome o = qk_outcome_error(err, text);
    qk_op_finish(c->op, &o);
}

static void lost(rd_pw *pw, const char *why);

static bool send_write(rd_pw *pw, cmd *c, bool eval);

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    cmd *c = priv;
    rd_pw *pw = c->pw;
    redisReply *rep = r;
    cmd_unlink(pw, c);
    if (!rep) { /* the connection is gone: lost() tells why */
        /* A write Redis may have run before it went: its outcome is not
         * known (the activation reloads what is stored). */
        char why[400];
        snprintf(why, sizeof why, "%s%s", pw->why[0] ? pw->why : "the connection was lost",
                 c->write ? "; the write may or may not have been applied" : "");
        cmd_fail(c, c->write ? QUARK_EUNKNOWN : QUARK_ESTORAGE, why);
        free(c);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        if (c->write && !c->retried && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
            /* Redis restarted or its scripts were flushed: the script goes
             * along this time (EVAL), and is loaded again. */
            c->retried = true;
            pw->sha[0] = '\0';
            if (send_write(pw, c, true))
                return;
            cmd_fail(c, QUARK_ESTORAGE, "could not send the command");
        } else {
            cmd_fail(c, QUARK_ESTORAGE, rep->str);
        }
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

static void on_select(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    rd_pw *pw = priv;
    redisReply *rep = r;
    if (rep && rep->type == REDIS_REPLY_ERROR) {
        snprintf(pw->why, sizeof pw->why, "SELECT %d failed: %.200s", pw->r->db, rep->str);
        pw->bad_db = true; /* every command fails with it; no reconnecting */
    } else if (rep) {
        pw->db_ok = true;
    }
}

static void on_sha(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    rd_pw *pw = priv;
    redisReply *rep = r;
    if (rep && rep->type == REDIS_REPLY_STRING && (size_t)rep->len < sizeof pw->sha) {
        memcpy(pw->sha, rep->str, (size_t)rep->len);
        pw->sha[rep->len] = '\0';
    }
}

/* ---- the connection ---- */

static void on_connect(const redisAsyncContext *ac, int status)
{
    rd_pw *pw = ac->data;
    if (status != REDIS_OK) {
        snprintf(pw->why, sizeof pw->why, "cannot connect: %s", ac->errstr);
        pw->ac = NULL; /* hiredis frees it, and fails what was queued */
        lost(pw, NULL);
        return;
    }
    pw->connected = true;
    pw->backoff_ms = 0;
    pw->why[0] = '\0';
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rd_pw *pw = ac->data;
    (void)status;
    if (pw->ac != ac)
        return; /* freed by us (lost, detach) */
    snprintf(pw->why, sizeof pw->why, "the connection was lost: %s",
             ac->errstr && *ac->errstr ? ac->errstr : "closed by the server");
    pw->ac = NULL;
    lost(pw, NULL);
}

/* The connection is gone (or must go): fail what is in flight, retry later. */
static void lost(rd_pw *pw, const char *why)
{
    if (why)
        snprintf(pw->why, sizeof pw->why, "%s", why);
    pw->connected = false;
    pw->sha[0] = '\0';
    if (pw->ac) {
        redisAsyncContext *ac = pw->ac;
        pw->ac = NULL;
        redisAsyncFree(ac); /* its callbacks run now, with no reply */
    }
    if (pw->closing)
        return;
    pw->backoff_ms = pw->backoff_ms ? pw->backoff_ms * 2 : QK_REDIS_BACKOFF_MIN_MS;
    if (pw->backoff_ms > QK_REDIS_BACKOFF_MAX_MS)
        pw->backoff_ms = QK_REDIS_BACKOFF_MAX_MS;
    pw->retry_at_ms = uv_now(pw->loop) + pw->backoff_ms;
}

static void pw_connect(rd_pw *pw)
{
    redisAsyncContext *ac = redisAsyncConnect(pw->r->host, pw->r->port);
    if (!ac || ac->err) {
        snprintf(pw->why, sizeof pw->why, "cannot connect: %s", ac ? ac->errstr : "no memory");
        if (ac)
            redisAsyncFree(ac);
        lost(pw, NULL);
        return;
    }
    ac->data = pw;
    if (redisLibuvAttach(ac, pw->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        lost(pw, "cannot attach to the worker's loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    pw->ac = ac;
    pw->db_ok = pw->r->db == 0; /* else nothing goes before SELECT's answer */
    if (pw->r->db)
        redisAsyncCommand(ac, on_select, pw, "SELECT %d", pw->r->db);
    redisAsyncCommand(ac, on_sha, pw, "SCRIPT LOAD %s", script);
}

/* Every 100 ms: reconnect when it is time, give up on a silent server. */
static void on_timer(uv_timer_t *t)
{
    rd_pw *pw = t->data;
    uint64_t now = uv_now(pw->loop);
    if (!pw->ac) {
        if (now >= pw->retry_at_ms)
            pw_connect(pw);
        return;
    }
    if (pw->head && now - pw->head->sent_ms > QK_REDIS_TIMEOUT_MS) {
        char why[128];
        snprintf(why, sizeof why, "no answer in %d ms", QK_REDIS_TIMEOUT_MS);
        lost(pw, why);
    }
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
    char *p = c->key;
    memcpy(p, pw->r->prefix, pl);
    p += pl;
    memcpy(p, k->type, k->type_len);
    p += k->type_len;
    *p++ = '/';
    memcpy(p, k->id, k->id_len);
    p[k->id_len] = '\0';
    return c;
}

static void cmd_queue(rd_pw *pw, cmd *c)
{
    c->sent_ms = uv_now(pw->loop);
    c->next = NULL;
    if (pw->tail)
        pw->tail->next = c;
    else
        pw->head = c;
    pw->tail = c;
}

static quark_err unreachable(rd_pw *pw, const qk_actor_key *k)
{
    return qk_error(QUARK_ESTORAGE, "the state of %.*s '%.*s' is in Redis %s:%d, which cannot "
                    "be reached now (%s); the silo keeps trying", (int)k->type_len, k->type,
                    (int)k->id_len, k->id, pw->r->host, pw->r->port,
                    pw->why[0] ? pw->why : "connecting");
}

static quark_err rd_read(void *p, const qk_actor_key *k, qk_state_rec *rec, qk_op *op)
{
    rd_pw *pw = p;
    if (!pw->ac || pw->bad_db || !pw->db_ok)
        return unreachable(pw, k);
    cmd *c = cmd_new(pw, k, rec, op, false);
    if (!c)
        return qk_error(QUARK_ENOMEM, "out of memory reading from Redis");
    const char *argv[] = {"HMGET", c->key, "etag", "data"};
    size_t lens[] = {5, strlen(c->key), 4, 4};
    if (redisAsyncCommandArgv(pw->ac, on_reply, c, 4, argv, lens) != REDIS_OK) {
        free(c);
        return unreachable(pw, k);
    }
    cmd_queue(pw, c);
    return QUARK_PENDING;
}

static bool send_write(rd_pw *pw, cmd *c, bool eval)
{
    if (!pw->ac)
        return false;
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000);
    char next[QK_ETAG_MAX];
    qk_etag_of_version(next, next_version(c->rec->etag));
    bool use_sha = !eval && pw->sha[0];
    const char *argv[] = {use_sha ? "EVALSHA" : "EVAL", use_sha ? pw->sha : script, "1",
                          c->key, c->rec->etag, c->data ? (const char *)c->data : "",
                          c->data ? "0" : "1", now, next};
    size_t lens[] = {strlen(argv[0]), strlen(argv[1]), 1, strlen(c->key), strlen(c->rec->etag),
                     c->data ? c->len : 0, 1, strlen(now), strlen(next)};
    if (redisAsyncCommandArgv(pw->ac, on_reply, c, 9, argv, lens) != REDIS_OK)
        return false;
    if (eval) /* load it again for the next ones */
        redisAsyncCommand(pw->ac, on_sha, pw, "SCRIPT LOAD %s", script);
    cmd_queue(pw, c);
    return true;
}

static quark_err rd_write(void *p, const qk_actor_key *k, const uint8_t *data, size_t len,
                          qk_state_rec *rec, qk_op *op)
{
    rd_pw *pw = p;
    if (!pw->ac || pw->bad_db || !pw->db_ok)
        return unreachable(pw, k);
    cmd *c = cmd_new(pw, k, rec, op, true);
    if (!c)
        return qk_error(QUARK_ENOMEM, "out of memory writing to Redis");
    c->data = data;
    c->len = len;
    if (!send_write(pw, c, false)) {
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
    rd_pw *pw = calloc(1, sizeof *pw);
    if (!pw)
        return NULL;
    pw->r = self;
    pw->loop = loop;
    uv_timer_init(loop, &pw->timer);
    pw->timer.data = pw;
    uv_timer_start(&pw->timer, on_timer, 100, 100);
    pw_connect(pw);
    return pw;
}

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void rd_detach(void *self, void *p)
{
    (void)self;
    rd_pw *pw = p;
    pw->closing = true;
    lost(pw, "the silo is stopping"); /* what is in flight finishes now */
    uv_timer_stop(&pw->timer);
    uv_close((uv_handle_t *)&pw->timer, timer_closed); /* frees pw */
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

/* host -> its first IPv4/IPv6 address as text (once, at open: hiredis
 * would resolve on every connect, blocking the worker). */
static int resolve_ip(const char *host, char *ip, size_t cap)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, NULL, &hints, &ai) != 0 || !ai)
        return -1;
    const void *a = ai->ai_family == AF_INET
                        ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                        : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
    int rc = inet_ntop(ai->ai_family, a, ip, (socklen_t)cap) ? 0 : -1;
    freeaddrinfo(ai);
    return rc;
}

static quark_err rd_open(const char *spec, const char *rest, const qk_storage_env *env,
                         const qk_storage_ops **ops, void **self)
{
    const char *cluster = env->cluster_id;
    char hostport[300];
    int db = 0;
    const char *slash = strchr(rest, '/');
    size_t hl = slash ? (size_t)(slash - rest) : strlen(rest);
    if (hl == 0 || hl >= sizeof hostport)
        return qk_error(QUARK_EINVAL, "storage '%s': give the server, as in "
                        "'redis://127.0.0.1:6379' or 'redis://127.0.0.1:6379/2'", spec);
    memcpy(hostport, rest, hl);
    hostport[hl] = '\0';
    if (slash) {
        char *end;
        long v = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || v < 0 || v > 1000000)
            return qk_error(QUARK_EINVAL, "storage '%s': the database number after '/' must be "
                            "a number >= 0", spec);
        db = (int)v;
    }
    rd *r = calloc(1, sizeof *r);
    if (!r)
        return qk_error(QUARK_ENOMEM, "out of memory opening storage '%s'", spec);
    qk_addr a;
    if (qk_addr_parse(hostport, strlen(hostport), &a) != 0 || a.portnum <= 0 ||
        resolve_ip(a.host, r->host, sizeof r->host) != 0) {
        free(r);
        return qk_error(QUARK_EINVAL, "storage '%s': '%s' is not HOST:PORT of a reachable "
                        "name or address", spec, hostport);
    }
    r->port = a.portnum;
    r->db = db;
    r->spec = strdup(spec);
    size_t cl = strlen(cluster ? cluster : "default");
    r->prefix = malloc(cl + sizeof "/state/");
    if (!r->spec || !r->prefix) {
        rd_destroy(r);
        return qk_error(QUARK_ENOMEM, "out of memory opening storage '%s'", spec);
    }
    snprintf(r->prefix, cl + sizeof "/state/", "%s/state/", cluster ? cluster : "default");
    *ops = &rd_ops;
    *self = r;
    return QUARK_OK;
}

const qk_storage_provider qk_storage_redis = {
    .prefix = "redis://",
    .usage = "redis://HOST:PORT[/DB]",
    .open = rd_open,
};
