/*
 * membership_redis.c - the Redis membership provider (runtime/providers.h):
 * the member table is one hash in Redis, so a silo needs no seed list.
 *
 * The hash "<cluster_id>/members" (docs/cluster.md; readable with
 * redis-cli HGETALL):
 *   version          advanced by one at every change of the member table
 *                    (a join, a leave, a death, a pruned row), never by
 *                    heartbeats, inside the Lua script that makes the change
 *   silo/<addr>      "<status> <incarnation> <since_ms>": alive, dead, left
 *   alive/<addr>     "<incarnation> <ms>": the silo's last heartbeat
 *   votes/<addr>     "<voter> <ms>,...": who found the silo silent, when
 *   last_hb          the last heartbeat of any silo; resumed: when
 *                    heartbeats came again after a gap of ft/2 (Redis down
 *                    or paused: nobody could heartbeat)
 * Every time is Redis's own clock (TIME in the scripts), so the silos'
 * clocks never decide who is silent.
 *
 * Three scripts, each atomic:
 *   join       a row "alive" at a new incarnation; refused if the row holds
 *              this incarnation or a later one (an old incarnation never
 *              comes back);
 *   heartbeat  refreshes alive/<self>; then for every other alive silo
 *              silent for more than failure_timeout_ms (counted from
 *              `resumed` at the earliest), records this silo's vote; a silo
 *              is declared dead when min(2, the fresh silos) fresh voters
 *              found it silent within 2 failure timeouts, so one slow silo's
 *              opinion never kills a healthy one (and a voter that is itself
 *              silent does not count); prunes dead and left rows older than
 *              prune_ms; answers this silo's own status and, when the version
 *              is not the one it knows, the alive members;
 *   leave      marks the row "left"; then left_seen tells when every other
 *              alive silo heartbeated since (its view no longer holds this
 *              one), which leave() waits for, bounded.
 * A silo that finds its row gone (Redis restarted without persistence, or
 * it was pruned), dead, left or taken by a later incarnation joins again as
 * a new incarnation (the wall clock in ms, above the last), as the gossip
 * provider refutes its death.
 *
 * It runs on the cluster's thread: a heartbeat every heartbeat_ms, one
 * command in flight at a time, over core/redis_link.c. While Redis cannot be
 * reached the silo keeps its last view and says why on stderr (once a
 * second at most).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/common.h"
#include "core/redis_link.h"
#include "cluster/membership_redis.h"

enum { S_JOIN, S_HEARTBEAT, S_LEAVE, S_LEFT_SEEN, S_NSCRIPTS };

#define LUA_NOW                                                                  \
    "local t = redis.call('TIME')\n"                                             \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"    \
    "local function ms(x) return string.format('%d', x) end\n"

/* The table K as rows[addr] = "status inc since", seen[addr] = ms of its
 * last heartbeat. */
#define LUA_READ_TABLE                                                           \
    "local all = redis.call('HGETALL', K)\n"                                     \
    "local rows, seen = {}, {}\n"                                                \
    "for i = 1, #all, 2 do\n"                                                    \
    "  local kind, a = string.match(all[i], '^(%a+)/(.+)$')\n"                   \
    "  if kind == 'silo' then rows[a] = all[i + 1]\n"                            \
    "  elseif kind == 'alive' then seen[a] = tonumber(string.match(all[i + 1], ' (%d+)$')) end\n" \
    "end\n"

/* KEYS[1] the hash; ARGV: addr, incarnation, "1" if this silo's row
 * vanished (Redis lost the table?), failure timeout ms. {1, version} or {0,
 * the incarnation the row holds}. A table created moments ago that a silo
 * had a row in was lost (Redis restarted without persistence): until a
 * failure timeout has passed, time for every silo that held activations to
 * find its row gone and let go of them, lost_until holds registrations
 * back (directory_redis.c). A join that replaces an alive row of an older
 * incarnation (a restart at the same address, while the old process may
 * still run) fences that incarnation's directory entries until its last
 * heartbeat + the failure timeout: fence/<addr> = "<old inc> <until ms>". */
static const char join_lua[] =
    "local K, me, inc = KEYS[1], ARGV[1], ARGV[2]\n"
    LUA_NOW
    "redis.call('HSETNX', K, 'created', ms(now))\n"
    "local created = tonumber(redis.call('HGET', K, 'created'))\n"
    "local ft = tonumber(ARGV[4])\n"
    "if ARGV[3] == '1' and now - created < ft then\n"
    "  local lu = tonumber(redis.call('HGET', K, 'lost_until') or '0')\n"
    "  if now + ft > lu then redis.call('HSET', K, 'lost_until', ms(now + ft)) end\n"
    "end\n"
    "local row = redis.call('HGET', K, 'silo/' .. me)\n"
    "if row then\n"
    "  local st, i = string.match(row, '^(%a+) (%d+)')\n"
    "  if i and tonumber(i) >= tonumber(inc) then return {0, i} end\n"
    "  if st == 'alive' then\n"
    "    local a = redis.call('HGET', K, 'alive/' .. me)\n"
    "    local last = a and tonumber(string.match(a, ' (%d+)$')) or now\n"
    "    redis.call('HSET', K, 'fence/' .. me, i .. ' ' .. ms(last + ft))\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', K, 'silo/' .. me, 'alive ' .. inc .. ' ' .. ms(now),\n"
    "           'alive/' .. me, inc .. ' ' .. ms(now))\n"
    "redis.call('HDEL', K, 'votes/' .. me)\n"
    "return {1, redis.call('HINCRBY', K, 'version', 1)}\n";

/* KEYS[1] the hash; ARGV: addr, incarnation, the version known, failure
 * timeout ms, prune ms. {status} when this incarnation is no longer alive
 * ("missing", "replaced", "dead", "left"); {"alive", version, now} when the
 * version is the one known; else {"alive", version, now, addr, inc, ...}. */
static const char heartbeat_lua[] =
    "local K, me, inc = KEYS[1], ARGV[1], ARGV[2]\n"
    "local ft, prune = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    LUA_NOW
    "local last = tonumber(redis.call('HGET', K, 'last_hb') or '0')\n"
    "redis.call('HSET', K, 'last_hb', ms(now))\n"
    "if now - last > ft / 2 then redis.call('HSET', K, 'resumed', ms(now)) end\n"
    "local resumed = tonumber(redis.call('HGET', K, 'resumed') or '0')\n"
    "local row = redis.call('HGET', K, 'silo/' .. me)\n"
    "if not row then return {'missing'} end\n"
    "local st, rinc = string.match(row, '^(%a+) (%d+)')\n"
    "if rinc ~= inc then return {'replaced'} end\n"
    "if st ~= 'alive' then return {st} end\n"
    "redis.call('HSET', K, 'alive/' .. me, inc .. ' ' .. ms(now))\n"
    LUA_READ_TABLE
    "local function fresh(a)\n"
    "  local ts = seen[a] or 0\n"
    "  if ts < resumed then ts = resumed end\n"
    "  return now - ts <= ft\n"
    "end\n"
    "local nfresh = 0\n"
    "for a, v in pairs(rows) do\n"
    "  if string.sub(v, 1, 6) == 'alive ' and fresh(a) then nfresh = nfresh + 1 end\n"
    "end\n"
    "local changed = false\n"
    "for a, v in pairs(rows) do\n"
    "  local s, i, since = string.match(v, '^(%a+) (%d+) (%d+)$')\n"
    "  if s == 'alive' and a ~= me and not fresh(a) then\n"
    "    local votes = redis.call('HGET', K, 'votes/' .. a) or ''\n"
    "    local keep = {}\n"
    "    for voter, when in string.gmatch(votes, '([^ ,]+) (%d+)') do\n"
    "      if voter ~= me and now - tonumber(when) <= 2 * ft and fresh(voter) then\n"
    "        keep[#keep + 1] = voter .. ' ' .. when\n"
    "      end\n"
    "    end\n"
    "    keep[#keep + 1] = me .. ' ' .. ms(now)\n"
    "    if #keep >= math.min(2, nfresh) then\n"
    "      rows[a] = 'dead ' .. i .. ' ' .. ms(now)\n"
    "      redis.call('HSET', K, 'silo/' .. a, rows[a])\n"
    "      redis.call('HDEL', K, 'votes/' .. a)\n"
    "      changed = true\n"
    "    else\n"
    "      redis.call('HSET', K, 'votes/' .. a, table.concat(keep, ','))\n"
    "    end\n"
    "  elseif s and s ~= 'alive' and now - tonumber(since) > prune then\n"
    "    rows[a] = nil\n"
    "    redis.call('HDEL', K, 'silo/' .. a, 'alive/' .. a, 'votes/' .. a, 'fence/' .. a)\n"
    "    changed = true\n"
    "  end\n"
    "end\n"
    "local v = tonumber(redis.call('HGET', K, 'version') or '0')\n"
    "if changed then v = redis.call('HINCRBY', K, 'version', 1) end\n"
    "if ms(v) == ARGV[3] then return {'alive', v, now} end\n"
    "local out = {'alive', v, now}\n"
    "for a, r in pairs(rows) do\n"
    "  local s, i = string.match(r, '^(%a+) (%d+)')\n"
    "  if s == 'alive' then out[#out + 1] = a; out[#out + 1] = i end\n"
    "end\n"
    "return out\n";

/* KEYS[1] the hash; ARGV: addr, incarnation. {the new version, now}, or
 * {0, now} when the row was not this incarnation's alive one. */
static const char leave_lua[] =
    "local K, me, inc = KEYS[1], ARGV[1], ARGV[2]\n"
    LUA_NOW
    "local row = redis.call('HGET', K, 'silo/' .. me)\n"
    "if not row then return {0, now} end\n"
    "local s, i = string.match(row, '^(%a+) (%d+)')\n"
    "if s ~= 'alive' or i ~= inc then return {0, now} end\n"
    "redis.call('HSET', K, 'silo/' .. me, 'left ' .. inc .. ' ' .. ms(now))\n"
    "return {redis.call('HINCRBY', K, 'version', 1), now}\n";

/* KEYS[1] the hash; ARGV: addr, the leave's time, failure timeout ms. 1
 * when every other alive silo that is not silent heartbeated since (so its
 * view no longer holds the leaving one), else 0. */
static const char left_seen_lua[] =
    "local K, me, since, ft = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    LUA_NOW
    LUA_READ_TABLE
    "for a, v in pairs(rows) do\n"
    "  local ts = seen[a] or 0\n"
    "  if a ~= me and string.sub(v, 1, 6) == 'alive ' and now - ts <= ft and ts < since then\n"
    "    return 0\n"
    "  end\n"
    "end\n"
    "return 1\n";

static const char *const scripts[S_NSCRIPTS] = {join_lua, heartbeat_lua, leave_lua,
                                                left_seen_lua};

typedef struct qk_rmembers {
    qk_redis_members_cfg cfg;     /* spec and self_addr owned; cluster_id not kept */
    qk_redis_addr addr;
    char *key;                    /* "<cluster_id>/members" */
    qk_membership_env env;
    qk_redis *link;               /* cluster's thread */
    bool joined;                  /* the row is ours, alive */
    bool busy;                    /* a command is in flight */
    uint64_t next_ms;             /* next heartbeat (the tick's clock, ms) */
    uint64_t sent_ms;             /* when the command in flight was sent (qk_now_ms_coarse) */
    _Atomic uint64_t lease_until; /* see rm_lease_until */
    char known[24];               /* the version of the published view ("" none) */
    qk_view *published;
    uint64_t last_log_ms;
    bool stopping;                /* what fails now fails because we close */
    bool lost;                    /* this silo's row vanished: say so when joining again */
    _Atomic uint64_t inc;
    _Atomic int leave_req;        /* 1 asked */
    _Atomic int left;             /* 1 the others know (or nothing to tell) */
    _Atomic int running;          /* start ran: the cluster's thread ticks it */
    char left_at[24];             /* Redis's time of the LEAVE ("" not sent yet) */
    uint64_t next_check_ms;       /* next LEFT_SEEN */
} qk_rmembers;

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Rate-limited: Redis trouble is said once a second at most. */
static void say(qk_rmembers *m, const char *what, const char *why)
{
    uint64_t now = qk_now_ms_coarse();
    if (m->stopping || now - m->last_log_ms < 1000)
        return;
    m->last_log_ms = now;
    fprintf(stderr, "quark: membership in Redis %s:%d: %s: %s\n", m->addr.host, m->addr.port,
            what, why);
}

/* This incarnation is over: join again as a later one. */
static void rejoin(qk_rmembers *m, const char *why)
{
    uint64_t old = atomic_load(&m->inc), now = wall_ms();
    atomic_store(&m->inc, now > old ? now : old + 1);
    m->joined = false;
    m->known[0] = '\0';
    fprintf(stderr, "quark: membership in Redis: this silo's incarnation %llu %s; joining "
            "again as %llu\n", (unsigned long long)old, why,
            (unsigned long long)atomic_load(&m->inc));
}

static void publish(qk_rmembers *m, const redisReply *r, long long version)
{
    size_t n = (r->elements - 3) / 2;
    qk_view_member *mem = calloc(n ? n : 1, sizeof *mem);
    if (!mem)
        return; /* the next change tries again (known stays old) */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *a = r->element[3 + 2 * i], *inc = r->element[4 + 2 * i];
        if (a->type != REDIS_REPLY_STRING || inc->type != REDIS_REPLY_STRING)
            continue;
        mem[k].addr = a->str;
        mem[k].incarnation = strtoull(inc->str, NULL, 10);
        k++;
    }
    qk_view *v = qk_view_new(mem, k, (uint64_t)version, m->cfg.vnodes, m->cfg.self_addr);
    free(mem);
    if (!v)
        return;
    snprintf(m->known, sizeof m->known, "%lld", version);
    if (m->published && qk_view_same_members(m->published, v)) {
        qk_view_unref(v);
        return;
    }
    qk_view_unref(m->published);
    m->published = v;
    qk_view_ref(v);
    m->env.changed(m->env.arg, v);
}

/* An acknowledged heartbeat or join, sent at m->sent_ms: Redis stamped it
 * alive no earlier than that, and the others declare a silo dead only after
 * a failure timeout of silence on Redis's clock (and two votes), so until
 * sent + ft the row is this incarnation's. A margin of ft/8 covers the
 * coarse clock and a thread late to act on an expiry. */
static void renew_lease(qk_rmembers *m)
{
    uint32_t ft = m->cfg.failure_timeout_ms;
    atomic_store(&m->lease_until, m->sent_ms + ft - ft / 8);
}

static void on_heartbeat(void *arg, const redisReply *r, const char *why)
{
    qk_rmembers *m = arg;
    m->busy = false;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        say(m, "heartbeat failed", r && r->type == REDIS_REPLY_ERROR ? r->str
                                   : why ? why : "unexpected reply");
        return;
    }
    const char *st = r->element[0]->str;
    if (strcmp(st, "alive") != 0) {
        atomic_store(&m->lease_until, 0);
        m->lost = !strcmp(st, "missing");
        rejoin(m, !strcmp(st, "missing")    ? "has no row in Redis (Redis lost it, or it was "
                                              "pruned)"
                  : !strcmp(st, "replaced") ? "was replaced by another incarnation"
                  : !strcmp(st, "dead")     ? "was declared dead (silent for longer than the "
                                              "failure timeout)"
                                            : "had left");
        m->next_ms = 0;
        return;
    }
    if (r->elements < 3 || r->element[1]->type != REDIS_REPLY_INTEGER)
        return;
    renew_lease(m);
    if (r->elements > 3)
        publish(m, r, r->element[1]->integer);
}

static void on_join(void *arg, const redisReply *r, const char *why)
{
    qk_rmembers *m = arg;
    m->busy = false;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        say(m, "joining failed", r && r->type == REDIS_REPLY_ERROR ? r->str
                                 : why ? why : "unexpected reply");
        return;
    }
    if (r->element[0]->integer == 1) {
        m->joined = true;
        m->lost = false;
        renew_lease(m);
        m->known[0] = '\0';
        m->next_ms = 0; /* the table at once */
        return;
    }
    /* A row of this incarnation or a later one exists (a clock that went
     * back, or an old process of this address): above it. */
    const redisReply *have = r->element[1];
    unsigned long long h = have->type == REDIS_REPLY_STRING ? strtoull(have->str, NULL, 10) : 0;
    uint64_t now = wall_ms();
    atomic_store(&m->inc, now > h ? now : h + 1);
    m->next_ms = 0;
}

static void on_leave(void *arg, const redisReply *r, const char *why)
{
    qk_rmembers *m = arg;
    m->busy = false;
    m->joined = false;
    atomic_store(&m->lease_until, 0);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER ||
        r->element[0]->integer == 0) {
        if (!r || r->type == REDIS_REPLY_ERROR)
            say(m, "leaving failed", r ? r->str : why);
        atomic_store(&m->left, 1); /* nothing to wait for */
        return;
    }
    /* Left: now wait (rm_tick) until the others heartbeated since, so that
     * they route elsewhere before this silo refuses calls. */
    snprintf(m->left_at, sizeof m->left_at, "%lld", r->element[1]->integer);
}

static void on_left_seen(void *arg, const redisReply *r, const char *why)
{
    qk_rmembers *m = arg;
    m->busy = false;
    (void)why;
    if (!r || r->type != REDIS_REPLY_INTEGER || r->integer == 1)
        atomic_store(&m->left, 1); /* seen, or no way to know: leave()'s bound decides */
}

static void send_script(qk_rmembers *m, unsigned which, qk_redis_cb cb)
{
    char inc[24], ft[16], prune[16];
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)atomic_load(&m->inc));
    snprintf(ft, sizeof ft, "%u", m->cfg.failure_timeout_ms);
    snprintf(prune, sizeof prune, "%u", m->cfg.prune_ms);
    const char *argv[] = {m->key, m->cfg.self_addr, inc, m->known, ft, prune};
    size_t lens[] = {strlen(m->key), strlen(m->cfg.self_addr), strlen(inc), strlen(m->known),
                     strlen(ft), strlen(prune)};
    if (which == S_JOIN) { /* addr, inc, lost, ft */
        argv[3] = m->lost ? "1" : "0";
        lens[3] = 1;
        argv[4] = ft;
        lens[4] = strlen(ft);
    }
    if (which == S_LEFT_SEEN) { /* addr, the leave's time, ft */
        argv[2] = m->left_at;
        lens[2] = strlen(m->left_at);
        argv[3] = ft;
        lens[3] = strlen(ft);
    }
    int argc = which == S_HEARTBEAT ? 6 : which == S_LEFT_SEEN ? 4 : which == S_JOIN ? 5 : 3;
    m->sent_ms = qk_now_ms_coarse();
    if (qk_redis_script(m->link, which, cb, m, 1, argc, argv, lens) == QUARK_OK)
        m->busy = true;
    else if (which == S_LEAVE || which == S_LEFT_SEEN)
        atomic_store(&m->left, 1); /* nothing to tell it with: the others time it out */
    else
        say(m, "cannot send", quark_last_error());
}

static quark_err rm_start(void *self, const qk_membership_env *env)
{
    qk_rmembers *m = self;
    m->env = *env;
    m->link = qk_redis_new(&m->addr, env->loop, scripts, S_NSCRIPTS, m->cfg.failure_timeout_ms);
    if (!m->link)
        return qk_error(QUARK_ENOMEM, "out of memory connecting to Redis for membership");
    atomic_store(&m->running, 1);
    return QUARK_OK;
}

static void rm_tick(void *self, uint64_t now_ms)
{
    qk_rmembers *m = self;
    uint64_t now = now_ms;
    if (!m->link || m->busy || atomic_load(&m->left))
        return;
    if (atomic_load(&m->leave_req)) {
        if (m->left_at[0]) { /* the LEAVE is in: have the others seen it? */
            if (now >= m->next_check_ms) {
                m->next_check_ms = now + 20;
                send_script(m, S_LEFT_SEEN, on_left_seen);
            }
        } else if (m->joined && qk_redis_up(m->link, NULL)) {
            send_script(m, S_LEAVE, on_leave);
        } else {
            atomic_store(&m->left, 1);
        }
        return;
    }
    if (now < m->next_ms || !qk_redis_up(m->link, NULL))
        return;
    m->next_ms = now + m->cfg.heartbeat_ms;
    if (m->joined)
        send_script(m, S_HEARTBEAT, on_heartbeat);
    else
        send_script(m, S_JOIN, on_join);
}

static void rm_leave(void *self)
{
    qk_rmembers *m = self;
    atomic_store(&m->leave_req, 1);
    uint64_t until = qk_now_ms_coarse() + 2000;
    while (!atomic_load(&m->left) && atomic_load(&m->running) && qk_now_ms_coarse() < until)
        usleep(1000);
}

static uint64_t rm_incarnation(void *self)
{
    qk_rmembers *m = self;
    return atomic_load(&m->inc);
}

/* Until when this incarnation's row is surely alive (renew_lease); 0 before
 * the join, after a death or a leave. */
static uint64_t rm_lease_until(void *self)
{
    qk_rmembers *m = self;
    return atomic_load(&m->lease_until);
}

static void rm_stop(void *self)
{
    qk_rmembers *m = self;
    m->stopping = true;
    atomic_store(&m->running, 0);
    qk_redis_free(m->link); /* its callbacks run now: busy is cleared */
    m->link = NULL;
}

static void rm_destroy(void *self)
{
    qk_rmembers *m = self;
    qk_view_unref(m->published);
    free((char *)m->cfg.spec);
    free((char *)m->cfg.self_addr);
    free(m->key);
    free(m);
}

const qk_membership_ops qk_membership_redis = {
    .name = "redis",
    .start = rm_start,
    .tick = rm_tick,
    .leave = rm_leave,
    .incarnation = rm_incarnation,
    .lease_until = rm_lease_until,
    .peer_message = NULL,
    .stop = rm_stop,
    .destroy = rm_destroy,
};

quark_err qk_membership_redis_new(const qk_redis_members_cfg *cfg, void **out)
{
    qk_redis_addr a;
    quark_err rc = qk_redis_addr_parse(cfg->spec, "membership", &a);
    if (rc != QUARK_OK)
        return rc;
    qk_rmembers *m = calloc(1, sizeof *m);
    if (!m)
        return qk_error(QUARK_ENOMEM, "out of memory creating the Redis membership");
    m->addr = a;
    m->cfg = *cfg;
    m->cfg.spec = strdup(cfg->spec);
    m->cfg.self_addr = strdup(cfg->self_addr);
    m->key = qk_redis_key(cfg->cluster_id, "members");
    if (!m->cfg.spec || !m->cfg.self_addr || !m->key) {
        rm_destroy(m);
        return qk_error(QUARK_ENOMEM, "out of memory creating the Redis membership");
    }
    if (!m->cfg.heartbeat_ms)
        m->cfg.heartbeat_ms = 500;
    if (!m->cfg.failure_timeout_ms)
        m->cfg.failure_timeout_ms = 3000;
    if (!m->cfg.prune_ms)
        m->cfg.prune_ms = QK_MEMBERS_PRUNE_MS;
    atomic_store(&m->inc, wall_ms());
    *out = m;
    return QUARK_OK;
}
