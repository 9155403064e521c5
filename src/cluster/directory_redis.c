/*
 * directory_redis.c - the Redis actor directory (runtime/providers.h): where
 * each actor lives is an entry in Redis, so an actor stays where it was
 * activated when silos join.
 *
 * One string per actor, readable with redis-cli GET:
 *   <cluster_id>/directory/<type>/<id>  ->  "<silo addr> <incarnation> <activation>"
 * (a type name has no '/', so the id after it may hold any bytes), with a TTL
 * of QK_DIR_TTL_MS, refreshed while the activation lives. The entry's silo
 * is judged by the Redis member table of the same cluster
 * (cluster/membership_redis.c: "<cluster_id>/members"), which is why this
 * directory needs Redis membership.
 *
 * Two scripts, each atomic:
 *   register    the caller must be alive in the member table at its
 *               incarnation (a silo declared dead registers nothing); then
 *               an absent entry, or one whose silo the table does not hold
 *               alive at the entry's incarnation (dead, left, replaced, gone),
 *               becomes the caller's; an entry of this very silo and
 *               incarnation is kept (its TTL refreshed); a live entry of
 *               another silo is left alone. The answer is the entry that holds.
 *               While the member table's lost_until is ahead (Redis lost the
 *               table moments ago, membership_redis.c), nothing registers;
 *               while its fence/<silo> names the entry's incarnation (that
 *               silo restarted at the same address moments ago), the entry
 *               is not taken over.
 *   unregister  deletes the entry only if it is the caller's (silo,
 *               incarnation and activation).
 * A lookup is a GET.
 *
 * Each worker has its own connection (core/redis_link.c) on its own loop;
 * every request completes through its op (QUARK_PENDING), on that worker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/redis_link.h"
#include "cluster/directory_redis.h"
#include "runtime/op.h"

enum { S_REGISTER, S_UNREGISTER, S_REFRESH, S_N };

/* KEYS[1] the entry, KEYS[2] the member table; ARGV: addr, incarnation,
 * activation, ttl ms. The entry that holds, or the error "not a member". */
static const char register_lua[] =
    "local me = redis.call('HGET', KEYS[2], 'silo/' .. ARGV[1])\n"
    "local ms, mi = nil, nil\n"
    "if me then ms, mi = string.match(me, '^(%a+) (%d+)') end\n"
    "if ms ~= 'alive' or mi ~= ARGV[2] then\n"
    "  return redis.error_reply('NOTMEMBER this silo is not alive in the member table')\n"
    "end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local lu = redis.call('HGET', KEYS[2], 'lost_until')\n"
    "if lu then\n"
    "  if now < tonumber(lu) then\n"
    "    return redis.error_reply('WAIT Redis lost the member table moments ago: registrations "
    "wait until the silos that held activations let go of them')\n"
    "  end\n"
    "end\n"
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur then\n"
    "  local s, i = string.match(cur, '^(%S+) (%d+) ')\n"
    "  if s == ARGV[1] and i == ARGV[2] then\n"
    "    redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
    "    return cur\n"
    "  end\n"
    "  local row = s and redis.call('HGET', KEYS[2], 'silo/' .. s)\n"
    "  if row then\n"
    "    local rs, ri = string.match(row, '^(%a+) (%d+)')\n"
    "    if rs == 'alive' and ri == i then return cur end\n"
    "  end\n"
    "  local f = s and redis.call('HGET', KEYS[2], 'fence/' .. s)\n"
    "  if f then\n"
    "    local fi, fu = string.match(f, '^(%d+) (%d+)$')\n"
    "    if fi == i and now < tonumber(fu) then\n"
    "      return redis.error_reply('WAIT its silo restarted moments ago at the same address: "
    "the old process may still serve it until a failure timeout after its last heartbeat')\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local mine = ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3]\n"
    "redis.call('SET', KEYS[1], mine, 'PX', ARGV[4])\n"
    "return mine\n";

/* KEYS[1] the entry; ARGV[1] the caller's value. 1 deleted, 0 not its. */
static const char unregister_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

/* KEYS the entries; ARGV[1] the ttl ms, ARGV[1 + i] what entry i must hold.
 * For each: 1 renewed, 0 not (any more) that value. */
static const char refresh_lua[] =
    "local out = {}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  if redis.call('GET', k) == ARGV[i + 1] then\n"
    "    redis.call('PEXPIRE', k, ARGV[1])\n"
    "    out[i] = 1\n"
    "  else\n"
    "    out[i] = 0\n"
    "  end\n"
    "end\n"
    "return out\n";

static const char *const scripts[S_N] = {register_lua, unregister_lua, refresh_lua};

struct qk_dir_redis {
    qk_redis_addr addr;
    char *self_addr;
    char *prefix;                  /* "<cluster>/directory/" */
    char *members_key;             /* "<cluster>/members" */
    uint32_t ttl_ms;
    /* this silo's incarnation: the membership provider's, read at each request */
    uint64_t (*incarnation)(void *arg);
    void *incarnation_arg;
};

typedef struct dr_pw {
    qk_dir_redis *d;
    qk_redis *link;
    qk_view *view;
    uint64_t next_activation;
    unsigned worker;
} dr_pw;

typedef struct dr_req {
    dr_pw *pw;
    qk_op *op;
    qk_dir_entry *out;
    size_t klen;
    char key[];
} dr_req;

static dr_req *req_new(dr_pw *pw, const qk_actor_key *k, qk_dir_entry *out, qk_op *op)
{
    size_t pl = strlen(pw->d->prefix);
    size_t kl = pl + k->type_len + 1 + k->id_len;
    dr_req *r = malloc(sizeof *r + kl + 1);
    if (!r)
        return NULL;
    r->pw = pw;
    r->op = op;
    r->out = out;
    r->klen = kl;
    qk_redis_actor_key(r->key, pw->d->prefix, pl, k->type, k->type_len, k->id, k->id_len);
    return r;
}

static void req_fail(dr_req *r, quark_err err, const char *why)
{
    char text[400];
    snprintf(text, sizeof text, "the actor directory in Redis %s:%d: %s", r->pw->d->addr.host,
             r->pw->d->addr.port, why);
    qk_outcome o = qk_outcome_error(err, text);
    qk_op_finish(r->op, &o);
    free(r);
}

/* Parse "<addr> <incarnation> <activation>" into out (member: its index in
 * the worker's view, -1 if that view does not hold it at that incarnation).
 * false if it is not such a value. */
static bool parse_entry(dr_pw *pw, const char *v, size_t len, qk_dir_entry *out)
{
    const char *sp = memchr(v, ' ', len);
    if (!sp || (size_t)(sp - v) >= sizeof out->where)
        return false;
    size_t al = (size_t)(sp - v);
    memcpy(out->where, v, al);
    out->where[al] = '\0';
    char *end;
    out->incarnation = strtoull(sp + 1, &end, 10);
    if (*end != ' ')
        return false;
    out->activation = strtoull(end + 1, NULL, 16);
    out->silo = out->where;
    int m = pw->view ? qk_view_find(pw->view, out->where) : -1;
    out->member = m >= 0 && pw->view->members[m].incarnation == out->incarnation ? m : -1;
    return true;
}

static void on_entry(void *arg, const redisReply *rep, const char *why)
{
    dr_req *r = arg;
    if (!rep) {
        req_fail(r, QUARK_EUNAVAILABLE, why);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        bool retry = !strncmp(rep->str, "NOTMEMBER", 9) || !strncmp(rep->str, "WAIT", 4);
        req_fail(r, retry ? QUARK_EUNAVAILABLE : QUARK_EINTERNAL, rep->str);
        return;
    }
    if (rep->type == REDIS_REPLY_NIL) { /* a lookup of an actor with no entry */
        memset(r->out, 0, sizeof *r->out);
        r->out->member = -1;
        qk_outcome o = {0};
        qk_op_finish(r->op, &o);
        free(r);
        return;
    }
    if (rep->type != REDIS_REPLY_STRING ||
        !parse_entry(r->pw, rep->str, (size_t)rep->len, r->out)) {
        req_fail(r, QUARK_EINTERNAL, "an entry that is not \"<silo> <incarnation> <activation>\"");
        return;
    }
    qk_outcome o = {0};
    qk_op_finish(r->op, &o);
    free(r);
}

static void on_unregister(void *arg, const redisReply *rep, const char *why)
{
    dr_req *r = arg;
    if (!rep) {
        req_fail(r, QUARK_EUNAVAILABLE, why);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        req_fail(r, QUARK_EINTERNAL, rep->str);
        return;
    }
    qk_outcome o = {0};
    qk_op_finish(r->op, &o);
    free(r);
}

static quark_err unreachable(dr_pw *pw)
{
    const char *why = "connecting";
    qk_redis_up(pw->link, &why);
    return qk_error(QUARK_EUNAVAILABLE, "the actor directory in Redis %s:%d cannot be reached "
                    "now (%s); the silo keeps trying", pw->d->addr.host, pw->d->addr.port, why);
}

static quark_err dr_lookup(void *p, const qk_actor_key *k, qk_dir_entry *out, qk_op *op)
{
    dr_pw *pw = p;
    if (!qk_redis_up(pw->link, NULL))
        return unreachable(pw);
    dr_req *r = req_new(pw, k, out, op);
    if (!r)
        return qk_error(QUARK_ENOMEM, "out of memory asking the actor directory");
    const char *argv[] = {"GET", r->key};
    size_t lens[] = {3, r->klen};
    if (qk_redis_command(pw->link, on_entry, r, 2, argv, lens) != QUARK_OK) {
        free(r);
        return unreachable(pw);
    }
    return QUARK_PENDING;
}

static quark_err dr_register(void *p, const qk_actor_key *k, qk_dir_entry *out, qk_op *op)
{
    dr_pw *pw = p;
    qk_dir_redis *d = pw->d;
    if (!qk_redis_up(pw->link, NULL))
        return unreachable(pw);
    dr_req *r = req_new(pw, k, out, op);
    if (!r)
        return qk_error(QUARK_ENOMEM, "out of memory registering an activation");
    char inc[24], act[24], ttl[16];
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)d->incarnation(d->incarnation_arg));
    /* unique on this silo incarnation: the worker in the top bits */
    snprintf(act, sizeof act, "%llx",
             (unsigned long long)((uint64_t)pw->worker << 48 | ++pw->next_activation));
    snprintf(ttl, sizeof ttl, "%u", d->ttl_ms);
    const char *argv[] = {r->key, d->members_key, d->self_addr, inc, act, ttl};
    size_t lens[] = {r->klen, strlen(d->members_key), strlen(d->self_addr), strlen(inc),
                     strlen(act), strlen(ttl)};
    if (qk_redis_script(pw->link, S_REGISTER, on_entry, r, 2, 6, argv, lens) != QUARK_OK) {
        free(r);
        return unreachable(pw);
    }
    return QUARK_PENDING;
}

static quark_err dr_unregister(void *p, const qk_actor_key *k, const qk_dir_entry *mine,
                               qk_op *op)
{
    dr_pw *pw = p;
    if (!qk_redis_up(pw->link, NULL))
        return unreachable(pw);
    dr_req *r = req_new(pw, k, NULL, op);
    if (!r)
        return qk_error(QUARK_ENOMEM, "out of memory unregistering an activation");
    char val[QK_ADDR_MAX + 48];
    int vl = snprintf(val, sizeof val, "%s %llu %llx", mine->silo,
                      (unsigned long long)mine->incarnation,
                      (unsigned long long)mine->activation);
    const char *argv[] = {r->key, val};
    size_t lens[] = {r->klen, (size_t)vl};
    if (qk_redis_script(pw->link, S_UNREGISTER, on_unregister, r, 1, 2, argv, lens) != QUARK_OK) {
        free(r);
        return unreachable(pw);
    }
    return QUARK_PENDING;
}

typedef struct dr_refresh {
    dr_pw *pw;
    qk_op *op;
    bool *gone;
    size_t n;
} dr_refresh;

static void on_refresh(void *arg, const redisReply *rep, const char *why)
{
    dr_refresh *r = arg;
    char text[400];
    quark_err err = QUARK_OK;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != r->n) {
        err = rep ? QUARK_EINTERNAL : QUARK_EUNAVAILABLE;
        snprintf(text, sizeof text, "the actor directory in Redis %s:%d: renewing entries: %s",
                 r->pw->d->addr.host, r->pw->d->addr.port,
                 !rep ? why : rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    } else {
        for (size_t i = 0; i < r->n; i++)
            r->gone[i] = !(rep->element[i]->type == REDIS_REPLY_INTEGER &&
                           rep->element[i]->integer == 1);
    }
    qk_outcome o = err == QUARK_OK ? (qk_outcome){0} : qk_outcome_error(err, text);
    qk_op_finish(r->op, &o);
    free(r);
}

static quark_err dr_refresh_entries(void *p, const qk_actor_key *keys, const qk_dir_entry *mine,
                                    size_t n, bool *gone, qk_op *op)
{
    dr_pw *pw = p;
    qk_dir_redis *d = pw->d;
    if (!qk_redis_up(pw->link, NULL))
        return unreachable(pw);
    size_t pl = strlen(d->prefix), total = 0;
    for (size_t i = 0; i < n; i++)
        total += pl + keys[i].type_len + 1 + keys[i].id_len + 1 + strlen(mine[i].silo) + 48;
    size_t argc = 2 * n + 1;
    dr_refresh *r = malloc(sizeof *r);
    char *text = malloc(total + 16);
    const char **argv = malloc(argc * sizeof *argv);
    size_t *lens = malloc(argc * sizeof *lens);
    quark_err rc = QUARK_PENDING;
    if (!r || !text || !argv || !lens) {
        rc = qk_error(QUARK_ENOMEM, "out of memory renewing directory entries");
        goto out;
    }
    *r = (dr_refresh){.pw = pw, .op = op, .gone = gone, .n = n};
    char *o = text;
    for (size_t i = 0; i < n; i++) { /* the keys */
        size_t kl = pl + keys[i].type_len + 1 + keys[i].id_len;
        qk_redis_actor_key(o, d->prefix, pl, keys[i].type, keys[i].type_len, keys[i].id,
                           keys[i].id_len);
        argv[i] = o;
        lens[i] = kl;
        o += kl + 1;
    }
    char ttl[16];
    argv[n] = ttl;
    lens[n] = (size_t)snprintf(ttl, sizeof ttl, "%u", d->ttl_ms);
    for (size_t i = 0; i < n; i++) { /* the values */
        int vl = sprintf(o, "%s %llu %llx", mine[i].silo, (unsigned long long)mine[i].incarnation,
                         (unsigned long long)mine[i].activation);
        argv[n + 1 + i] = o;
        lens[n + 1 + i] = (size_t)vl;
        o += vl + 1;
    }
    if (qk_redis_script(pw->link, S_REFRESH, on_refresh, r, (int)n, (int)argc, argv, lens) !=
        QUARK_OK) {
        rc = unreachable(pw);
        goto out;
    }
    r = NULL; /* on_refresh frees it */
out:
    free(r);
    free(text);
    free(argv);
    free(lens);
    return rc;
}

static uint32_t dr_refresh_every(void *self)
{
    qk_dir_redis *d = self;
    return d->ttl_ms / 3;
}

static void *dr_attach(void *self, qk_worker *w)
{
    qk_dir_redis *d = self;
    dr_pw *pw = calloc(1, sizeof *pw);
    if (!pw)
        return NULL;
    pw->d = d;
    pw->worker = w->index;
    pw->link = qk_redis_new(&d->addr, &w->loop, scripts, S_N, QK_DIR_TIMEOUT_MS);
    if (!pw->link) {
        free(pw);
        return NULL;
    }
    return pw;
}

static void dr_detach(void *self, void *p)
{
    (void)self;
    dr_pw *pw = p;
    qk_redis_free(pw->link); /* what is in flight fails now */
    qk_view_unref(pw->view);
    free(pw);
}

static void dr_set_view(void *p, qk_view *v)
{
    dr_pw *pw = p;
    qk_view *old = pw->view;
    pw->view = v;
    qk_view_unref(old);
}

const qk_directory_ops qk_directory_redis = {
    .name = "redis",
    .follows_placement = false,
    .attach = dr_attach,
    .detach = dr_detach,
    .set_view = dr_set_view,
    .lookup = dr_lookup,
    .register_activation = dr_register,
    .unregister_activation = dr_unregister,
    .refresh = dr_refresh_entries,
    .refresh_every_ms = dr_refresh_every,
};

quark_err qk_dir_redis_new(const qk_dir_redis_cfg *cfg, qk_dir_redis **out)
{
    qk_redis_addr a;
    quark_err rc = qk_redis_addr_parse(cfg->spec, "directory", &a);
    if (rc != QUARK_OK)
        return rc;
    qk_dir_redis *d = calloc(1, sizeof *d);
    if (!d)
        return qk_error(QUARK_ENOMEM, "out of memory creating the Redis directory");
    d->addr = a;
    d->self_addr = strdup(cfg->self_addr);
    d->prefix = qk_redis_key(cfg->cluster_id, "directory/");
    d->members_key = qk_redis_key(cfg->cluster_id, "members");
    if (!d->self_addr || !d->prefix || !d->members_key) {
        qk_dir_redis_free(d);
        return qk_error(QUARK_ENOMEM, "out of memory creating the Redis directory");
    }
    d->ttl_ms = cfg->ttl_ms ? cfg->ttl_ms : QK_DIR_TTL_MS;
    d->incarnation = cfg->incarnation;
    d->incarnation_arg = cfg->incarnation_arg;
    *out = d;
    return QUARK_OK;
}

void qk_dir_redis_free(qk_dir_redis *d)
{
    if (!d)
        return;
    free(d->self_addr);
    free(d->prefix);
    free(d->members_key);
    free(d);
}
