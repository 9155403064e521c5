/*
 * redis_link.c - one asynchronous Redis connection on a libuv loop (see
 * redis_link.h).
 *
 * A script command is kept encoded from its third element on (numkeys,
 * keys, args: the part EVALSHA and EVAL share), with room in front for the
 * EVALSHA head, so that it leaves from that one buffer, and a NOSCRIPT
 * answer sends it again with EVAL and the script's text in front, without
 * the caller knowing.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>

#include "core/addr.h"
#include "core/common.h"
#include "core/redis_link.h"

#define QK_RL_BACKOFF_MIN_MS 20
#define QK_RL_BACKOFF_MAX_MS 1000
#define QK_RL_TIMER_MS 100
/* hiredis 0.14's libuv adapter drops a poll error, so a refused connect is
 * never reported: the timer looks at the socket's error itself, and gives
 * a connect this long. */
#define QK_RL_CONNECT_TIMEOUT_MS 1000

typedef struct rl_cmd {
    struct rl_cmd *next;
    qk_redis *r;
    qk_redis_cb cb;
    void *arg;
    uint64_t sent_ms;
    int script;                    /* its number, or -1: a plain command */
    bool retried;                  /* sent again with EVAL after NOSCRIPT */
    int tail_n;                    /* elements in the tail */
    size_t tail_len;
    /* script: QK_RL_HEAD bytes of room for the EVALSHA head, then the tail
     * (numkeys, keys, args, RESP-encoded): the command goes out of this one
     * buffer */
    char room[];
} rl_cmd;

/* "*N\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>\r\n" fits in it. */
#define QK_RL_HEAD 96
#define TAIL(c) ((c)->room + QK_RL_HEAD)

struct qk_redis {
    qk_redis_addr a;
    uv_loop_t *loop;
    const char *const *scripts;
    size_t nscripts;
    char (*sha)[48];               /* [nscripts]: "" until SCRIPT LOAD answered */
    unsigned timeout_ms;
    redisAsyncContext *ac;         /* NULL: not connected */
    bool connected;                /* the connect callback said so */
    bool db_ok;                    /* SELECT answered (or db 0) */
    bool bad_db;                   /* SELECT failed: the database does not exist */
    rl_cmd *head, *tail;           /* in flight, in order */
    uv_timer_t timer;
    uint32_t backoff_ms;
    uint64_t retry_at_ms;
    uint64_t connect_ms;           /* when the connect began */
    bool closing;
    char why[256];                 /* why it is not connected */
};

/* ---- the address ---- */

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

quark_err qk_redis_addr_parse(const char *spec, const char *what, qk_redis_addr *out)
{
    memset(out, 0, sizeof *out);
    if (strncmp(spec, "redis://", 8) != 0)
        return qk_error(QUARK_EINVAL, "%s '%s': a Redis server is named "
                        "'redis://HOST:PORT[/DB]'", what, spec);
    const char *rest = spec + 8;
    char hostport[300];
    const char *slash = strchr(rest, '/');
    size_t hl = slash ? (size_t)(slash - rest) : strlen(rest);
    if (hl == 0 || hl >= sizeof hostport)
        return qk_error(QUARK_EINVAL, "%s '%s': give the server, as in "
                        "'redis://127.0.0.1:6379' or 'redis://127.0.0.1:6379/2'", what, spec);
    memcpy(hostport, rest, hl);
    hostport[hl] = '\0';
    if (slash) {
        char *end;
        long v = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || v < 0 || v > 1000000)
            return qk_error(QUARK_EINVAL, "%s '%s': the database number after '/' must be "
                            "a number >= 0", what, spec);
        out->db = (int)v;
    }
    qk_addr a;
    if (qk_addr_parse(hostport, strlen(hostport), &a) != 0 || a.portnum <= 0 ||
        resolve_ip(a.host, out->host, sizeof out->host) != 0)
        return qk_error(QUARK_EINVAL, "%s '%s': '%s' is not HOST:PORT of a reachable "
                        "name or address", what, spec, hostport);
    out->port = a.portnum;
    return QUARK_OK;
}

char *qk_redis_key(const char *cluster_id, const char *what)
{
    const char *cid = cluster_id && *cluster_id ? cluster_id : "default";
    size_t n = strlen(cid) + 1 + strlen(what) + 1;
    char *k = malloc(n);
    if (k)
        snprintf(k, n, "%s/%s", cid, what);
    return k;
}

void qk_redis_actor_key(char *dst, const char *prefix, size_t pl, const char *type,
                        size_t type_len, const char *id, size_t id_len)
{
    memcpy(dst, prefix, pl);
    memcpy(dst + pl, type, type_len);
    dst[pl + type_len] = '/';
    memcpy(dst + pl + type_len + 1, id, id_len);
    dst[pl + type_len + 1 + id_len] = '\0';
}

/* ---- RESP encoding of a script's shared part ---- */

static size_t bulk_size(size_t len)
{
    return 1 + 20 + 2 + len + 2;
}

static size_t put_bulk(char *p, const char *s, size_t len)
{
    int n = sprintf(p, "$%zu\r\n", len);
    memcpy(p + n, s, len);
    memcpy(p + n + len, "\r\n", 2);
    return (size_t)n + len + 2;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);

/* Send c (a script) with EVALSHA, or with EVAL when the SHA is not known or
 * Redis did not know it. */
static int send_script(qk_redis *r, rl_cmd *c)
{
    const char *sha = r->sha[c->script];
    int rc;
    if (sha[0] && !c->retried) {
        /* The common case: the head is written in front of the tail. */
        char head[QK_RL_HEAD];
        size_t n = (size_t)sprintf(head, "*%d\r\n", 2 + c->tail_n);
        n += put_bulk(head + n, "EVALSHA", 7);
        n += put_bulk(head + n, sha, strlen(sha));
        memcpy(TAIL(c) - n, head, n);
        rc = redisAsyncFormattedCommand(r->ac, on_reply, c, TAIL(c) - n, n + c->tail_len);
    } else {
        /* The SHA is not known (yet), or Redis did not know it: EVAL with the text. */
        const char *body = r->scripts[c->script];
        size_t blen = strlen(body);
        char *buf = malloc(32 + bulk_size(4) + bulk_size(blen) + c->tail_len);
        if (!buf)
            return -1;
        size_t n = (size_t)sprintf(buf, "*%d\r\n", 2 + c->tail_n);
        n += put_bulk(buf + n, "EVAL", 4);
        n += put_bulk(buf + n, body, blen);
        memcpy(buf + n, TAIL(c), c->tail_len);
        rc = redisAsyncFormattedCommand(r->ac, on_reply, c, buf, n + c->tail_len);
        free(buf);
    }
    return rc == REDIS_OK ? 0 : -1;
}

/* ---- replies ---- */

static void unlink_cmd(qk_redis *r, rl_cmd *c)
{
    rl_cmd **pp = &r->head;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    if (r->tail == c) {
        r->tail = NULL;
        for (rl_cmd *x = r->head; x; x = x->next)
            r->tail = x;
    }
}

static void queue_cmd(qk_redis *r, rl_cmd *c)
{
    c->sent_ms = uv_now(r->loop);
    c->next = NULL;
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    rl_cmd *c = priv;
    qk_redis *r = c->r;
    const redisReply *rep = reply;
    unlink_cmd(r, c);
    if (rep && rep->type == REDIS_REPLY_ERROR && c->script >= 0 && !c->retried &&
        strncmp(rep->str, "NOSCRIPT", 8) == 0 && r->ac) {
        /* Restarted, or SCRIPT FLUSH: this one goes again with the text,
         * and the script is loaded again for the next ones. */
        c->retried = true;
        r->sha[c->script][0] = '\0';
        if (send_script(r, c) == 0) {
            queue_cmd(r, c);
            return;
        }
    }
    if (rep)
        c->cb(c->arg, rep, NULL);
    else
        c->cb(c->arg, NULL, r->why[0] ? r->why : "the connection was lost");
    free(c);
}

static void on_select(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    qk_redis *r = priv;
    redisReply *rep = reply;
    if (rep && rep->type == REDIS_REPLY_ERROR) {
        snprintf(r->why, sizeof r->why, "SELECT %d failed: %.200s", r->a.db, rep->str);
        r->bad_db = true; /* every command fails with it; no reconnecting */
    } else if (rep) {
        r->db_ok = true;
    }
}

typedef struct sha_req {
    qk_redis *r;
    size_t i;
} sha_req;

static void on_sha(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    sha_req *q = priv;
    redisReply *rep = reply;
    if (rep && rep->type == REDIS_REPLY_STRING && (size_t)rep->len < sizeof q->r->sha[0]) {
        memcpy(q->r->sha[q->i], rep->str, (size_t)rep->len);
        q->r->sha[q->i][rep->len] = '\0';
    }
    free(q);
}

static void load_script(qk_redis *r, size_t i)
{
    sha_req *q = malloc(sizeof *q);
    if (!q)
        return; /* EVAL until the next connection */
    q->r = r;
    q->i = i;
    if (redisAsyncCommand(r->ac, on_sha, q, "SCRIPT LOAD %s", r->scripts[i]) != REDIS_OK)
        free(q);
}

/* ---- the connection ---- */

static void lost(qk_redis *r, const char *why);

static void on_connect(const redisAsyncContext *ac, int status)
{
    qk_redis *r = ac->data;
    if (status != REDIS_OK) {
        snprintf(r->why, sizeof r->why, "cannot connect to Redis %s:%d: %s", r->a.host,
                 r->a.port, ac->errstr);
        r->ac = NULL; /* hiredis frees it, and fails what was queued */
        lost(r, NULL);
        return;
    }
    r->connected = true;
    r->backoff_ms = 0;
    r->why[0] = '\0';
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    qk_redis *r = ac->data;
    (void)status;
    if (r->ac != ac)
        return; /* freed by us (lost, free) */
    snprintf(r->why, sizeof r->why, "the connection to Redis %s:%d was lost: %s", r->a.host,
             r->a.port, ac->errstr && *ac->errstr ? ac->errstr : "closed by the server");
    r->ac = NULL;
    lost(r, NULL);
}

/* The connection is gone (or must go): fail what is in flight, retry later. */
static void lost(qk_redis *r, const char *why)
{
    if (why)
        snprintf(r->why, sizeof r->why, "%s", why);
    r->connected = false;
    for (size_t i = 0; i < r->nscripts; i++)
        r->sha[i][0] = '\0';
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        redisAsyncFree(ac); /* its callbacks run now, with no reply */
    }
    if (r->closing)
        return;
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : QK_RL_BACKOFF_MIN_MS;
    if (r->backoff_ms > QK_RL_BACKOFF_MAX_MS)
        r->backoff_ms = QK_RL_BACKOFF_MAX_MS;
    r->retry_at_ms = uv_now(r->loop) + r->backoff_ms;
}

static void connect_now(qk_redis *r)
{
    r->connect_ms = uv_now(r->loop);
    redisAsyncContext *ac = redisAsyncConnect(r->a.host, r->a.port);
    if (!ac || ac->err) {
        snprintf(r->why, sizeof r->why, "cannot connect to Redis %s:%d: %s", r->a.host,
                 r->a.port, ac ? ac->errstr : "no memory");
        if (ac)
            redisAsyncFree(ac);
        lost(r, NULL);
        return;
    }
    ac->data = r;
    if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        lost(r, "cannot attach the Redis connection to the loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->db_ok = r->a.db == 0;
    if (r->a.db)
        redisAsyncCommand(ac, on_select, r, "SELECT %d", r->a.db);
    for (size_t i = 0; i < r->nscripts; i++)
        load_script(r, i);
}

/* Every 100 ms: reconnect when it is time, give up on a silent server. */
static void on_timer(uv_timer_t *t)
{
    qk_redis *r = t->data;
    uint64_t now = uv_now(r->loop);
    if (!r->ac) {
        if (now >= r->retry_at_ms)
            connect_now(r);
        return;
    }
    if (!r->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        char why[200];
        if (getsockopt(r->ac->c.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err) {
            snprintf(why, sizeof why, "cannot connect to Redis %s:%d: %s", r->a.host,
                     r->a.port, strerror(err));
            lost(r, why);
        } else if (now - r->connect_ms > QK_RL_CONNECT_TIMEOUT_MS) {
            snprintf(why, sizeof why, "cannot connect to Redis %s:%d: no answer in %d ms",
                     r->a.host, r->a.port, QK_RL_CONNECT_TIMEOUT_MS);
            lost(r, why);
        }
        return;
    }
    if (r->head && now - r->head->sent_ms > r->timeout_ms) {
        char why[160];
        snprintf(why, sizeof why, "Redis %s:%d gave no answer in %u ms", r->a.host, r->a.port,
                 r->timeout_ms);
        lost(r, why);
    }
}

qk_redis *qk_redis_new(const qk_redis_addr *a, uv_loop_t *loop, const char *const *scripts,
                       size_t nscripts, unsigned timeout_ms)
{
    qk_redis *r = calloc(1, sizeof *r);
    if (!r || !(r->sha = calloc(nscripts ? nscripts : 1, sizeof *r->sha))) {
        free(r);
        return NULL;
    }
    r->a = *a;
    r->loop = loop;
    r->scripts = scripts;
    r->nscripts = nscripts;
    r->timeout_ms = timeout_ms ? timeout_ms : 5000;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_timer, QK_RL_TIMER_MS, QK_RL_TIMER_MS);
    connect_now(r);
    return r;
}

static void timer_closed(uv_handle_t *h)
{
    qk_redis *r = h->data;
    free(r->sha);
    free(r);
}

void qk_redis_free(qk_redis *r)
{
    if (!r)
        return;
    r->closing = true;
    lost(r, "the silo is stopping");
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, timer_closed);
}

bool qk_redis_up(const qk_redis *r, const char **why)
{
    bool up = r->ac && r->db_ok && !r->bad_db;
    if (!up && why)
        *why = r->why[0] ? r->why : "connecting";
    return up;
}

static quark_err not_up(const qk_redis *r)
{
    return qk_error(QUARK_EUNAVAILABLE, "Redis %s:%d cannot be reached now (%s); trying again",
                    r->a.host, r->a.port, r->why[0] ? r->why : "connecting");
}

quark_err qk_redis_command(qk_redis *r, qk_redis_cb cb, void *arg, int argc,
                           const char *const *argv, const size_t *lens)
{
    if (!r->ac || r->bad_db || !r->db_ok)
        return not_up(r);
    rl_cmd *c = calloc(1, sizeof *c);
    if (!c)
        return qk_error(QUARK_ENOMEM, "out of memory queueing a Redis command");
    c->r = r;
    c->cb = cb;
    c->arg = arg;
    c->script = -1;
    if (redisAsyncCommandArgv(r->ac, on_reply, c, argc, (const char **)argv, lens) != REDIS_OK) {
        free(c);
        return not_up(r);
    }
    queue_cmd(r, c);
    return QUARK_OK;
}

quark_err qk_redis_script(qk_redis *r, unsigned script, qk_redis_cb cb, void *arg, int nkeys,
                          int argc, const char *const *argv, const size_t *lens)
{
    if (script >= r->nscripts)
        return qk_error(QUARK_EINVAL, "no Redis script %u", script);
    if (!r->ac || r->bad_db || !r->db_ok)
        return not_up(r);
    char nk[16];
    int nkl = snprintf(nk, sizeof nk, "%d", nkeys);
    size_t cap = bulk_size((size_t)nkl);
    for (int i = 0; i < argc; i++)
        cap += bulk_size(lens[i]);
    rl_cmd *c = calloc(1, sizeof *c + QK_RL_HEAD + cap);
    if (!c)
        return qk_error(QUARK_ENOMEM, "out of memory queueing a Redis command");
    c->r = r;
    c->cb = cb;
    c->arg = arg;
    c->script = (int)script;
    c->tail_n = 1 + argc;
    size_t n = put_bulk(TAIL(c), nk, (size_t)nkl);
    for (int i = 0; i < argc; i++)
        n += put_bulk(TAIL(c) + n, argv[i], lens[i]);
    c->tail_len = n;
    if (send_script(r, c) != 0) {
        free(c);
        return not_up(r);
    }
    queue_cmd(r, c);
    return QUARK_OK;
}
