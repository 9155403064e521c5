/*
 * remote.c - the cluster client's network side (both transports).
 *
 * A remote client owns one I/O thread running a libuv loop and one
 * connection per silo it talks to. Application threads build a complete
 * REQUEST frame, push it on a lock-free queue and wake the loop; the loop
 * picks the connection (routing, below), gives the call a request id,
 * appends it to that connection's output (written once per loop turn) and
 * keeps it in the connection's table until its RESPONSE. Blocking callers
 * wait on a futex; callbacks run on the I/O thread.
 *
 * Routing. Until the client knows the cluster, every call goes to the
 * "primary" connection: one silo of the connection string, tried in turn.
 * Once connected it watches the cluster (WATCH frame, or gRPC WatchCluster):
 * the silo sends its view of the live members at once and at every change.
 * With a view, each call goes straight to the silo that owns its actor
 * (consistent hashing over the members, cluster/view.h); a connection per
 * member is opened as needed. Calls whose owner is unreachable wait on that
 * connection until it answers again, the view drops the silo (they then go
 * to the new owner), or their deadline. If the watched silo goes away, the
 * client watches another member; if none is reachable it forgets the view
 * and starts over from the connection string. With QUARK_ROUTE_PINNED the
 * client never watches: everything goes to the primary, which forwards.
 *
 * Delivery: a call is sent again only when it surely did not run (never
 * written to a socket, or answered QUARK_EUNAVAILABLE by a silo that did not
 * run it: then after a jittered backoff, so a view change can land) or when
 * its method is @quark.idempotent. Otherwise a lost connection completes it
 * with QUARK_EUNKNOWN: at most once.
 *
 * With the gRPC transport the same machinery drives one HTTP/2 session per
 * connection (grpc_codec.h) instead of frames: a call is a stream of
 * /quark.ActorService/InvokeActor, its id is the stream id, the cluster id
 * travels as quark-cluster-id metadata on every call.
 *
 * Peer mode: a silo's own link to the other silos (cluster/cluster.c). Always
 * TCP, no connection string: it connects to the silos it gossips with and to
 * the owners of the calls it forwards.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "quark/actor_service.pb-c.h"
#include "core/addr.h"
#include "core/buf.h"
#include "core/spin.h"
#include "runtime/runtime.h"
#include "transport/frame.h"
#include "transport/grpc_codec.h"
#include "transport/wire.h"
#include "transport/remote.h"
#include "transport/direct.h"

#define QK_TICK_MS 5
#define QK_CONNECT_TIMEOUT_MS 3000

enum { RC_OP_CALL = 0, RC_OP_SUB, RC_OP_UNSUB, RC_OP_WATCH, RC_OP_GOSSIP, RC_OP_FWD };

typedef struct qk_rsub {
    struct qk_rcall *env;         /* the SUBSCRIBE envelope while active */
    quark_event_fn fn;
    void *arg;
    bool ended;                   /* its final callback ran */
    bool released;                /* the application let go (quark_unsubscribe) */
    struct qk_remote *owner;
    struct qk_rsub *all_next;
} qk_rsub;

typedef struct qk_rconn qk_rconn;

typedef struct qk_rcall {
    qk_mpsc_node qnode;
    uint8_t kind;                 /* RC_OP_* */
    bool idempotent;
    bool written;                 /* handed to a socket: it may have run */
    bool in_table;
    bool has_hash;                /* route by `hash` */
    uint8_t attempts;
    qk_rsub *rsub;
    struct qk_rcall *next;        /* waiting queue / unsent list / delayed list */
    qk_rconn *conn;               /* where it waits or is in flight */
    qk_deadline dl;               /* at_ms 0: none (streams) */
    uint64_t id;
    uint64_t hash;                /* actor key */
    uint64_t retry_at_ms;         /* delayed: send again then */
    char *target;                 /* GOSSIP, FWD: the silo to send to (malloc'd) */
    /* Where the answer goes (CALL, FWD, GOSSIP; op.c's rules): a blocking
     * caller's waiter, the forwarding silo's record, or `own` below. */
    qk_op *answer;
    qk_op own;                    /* callbacks and gossip: done runs on the I/O thread */
    quark__trampoline_fn tramp;   /* an async call's callback */
    void (*fn)(void);
    void *arg;
    const ProtobufCMessageDescriptor *reply_desc;
    const quark_method_desc *md;  /* the method (its fast codecs) */
    const char *method;           /* for messages */
    size_t len;
    uint8_t frame[];              /* the complete frame (header + body) */
} qk_rcall;

enum { RC_IDLE, RC_CONNECTING, RC_HELLO, RC_READY };

/* One connection to one silo. */
struct qk_rconn {
    qk_remote *r;
    char host[QK_HOST_MAX];
    char port[QK_PORT_MAX];
    char addr[QK_ADDR_MAX];       /* "host:port" as listed or as the view names it */
    char silo_id[QK_ADDR_MAX];    /* what the silo calls itself ("" until known) */
    bool seed;                    /* from the connection string */
    bool member;                  /* in the current view */
    int state;
    uv_tcp_t *tcp;
    uv_connect_t creq;
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out, *wbuf;
    size_t out_len, out_cap, wbuf_cap;
    bool writing;
    bool in_recv_;                /* inside qk_grpc_client_recv: no flushing */
    uv_write_t wreq;
    qk_rcall *unsent, *unsent_tail; /* frames in `out`, not yet written */
    qk_rcall **slots;             /* id -> call, open addressing */
    size_t mask, count;
    qk_rcall *waiting, *waiting_tail; /* to send once connected */
    uint64_t next_id;
    unsigned failures;            /* consecutive failed connects */
    quark_err refusal;            /* the silo's HELLO_OK error of this attempt, or 0 */
    uint64_t reconnect_at_ms;
    uint64_t attempt_started_ms;
    qk_grpc_client *grpc;         /* gRPC transport: the connection's session */
    qk_rcall *watch;              /* our WATCH stream on it, if it is the view source */
    /* Shard-aware routing (TCP): a silo connection learns from HELLO_OK how
     * many workers the silo runs and which one serves it; calls for actors of
     * another worker go on a lane, an extra connection served by that worker
     * (docs/wire-protocol.md). Lanes are in r->conns too (so ticks, flushes
     * and stops see them) but never found by address. */
    unsigned workers;             /* the silo's worker count (0: unknown) */
    unsigned served_by;           /* 1 + the worker serving this connection */
    bool lane;                    /* it is a lane */
    qk_rconn *parent;             /* a lane: the silo connection it belongs to
                                   * (NULL once orphaned: freed when idle) */
    unsigned shard;               /* a lane: the worker it asks for */
    qk_rconn **lanes;             /* a silo connection: [workers], NULL where none */
};

struct qk_remote {
    qk_remote_cfg cfg;            /* its strings are copies (owned) */
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t tick;
    qk_mpsc inbox;
    _Atomic int connected;        /* a connection said HELLO_OK */
    _Atomic int sleeping;         /* the I/O thread is (about to be) in epoll */
    _Atomic int stopping;
    /* connect() handshake with the application thread */
    uv_mutex_t mu;
    uv_cond_t cv;
    int first_done;               /* 1 connected, -1 every seed failed once */
    quark_err first_code;         /* then: why (ECLUSTER: a silo refused our cluster id) */
    char first_error[640];
    /* connections */
    qk_rconn **conns;
    size_t nconns, conns_cap;
    size_t nseeds;                /* the first nseeds conns are the seeds */
    size_t cur_seed;
    qk_rconn *primary;            /* where calls go without a view */
    unsigned seed_failures;       /* consecutive failed seed connects */
    /* the cluster */
    qk_view *view;                /* routing view, or NULL */
    qk_rconn *source;             /* the connection we watch (clients) */
    bool want_watch;
    bool peer;                    /* a silo's peer link */
    qk_remote_hooks hooks;
    /* calls */
    qk_rcall *delayed;            /* waiting for their retry time */
    qk_dlheap heap;
    size_t max_msg;
    qk_arena arena;
    bool thread_started_;
    qk_spin spin;                 /* the I/O thread's polling before it sleeps */
    bool io_event;                /* calls or answers moved since the flag was cleared */
    qk_rsub *all_subs;            /* every subscription not yet freed */
    const char *meta[3];          /* gRPC metadata: quark-cluster-id, cfg.cluster_id */
    /* Direct blocking calls (TCP, direct.h): the pool, and the routing facts
     * application threads read (the I/O thread publishes them). */
    qk_direct *direct;
    uv_mutex_t route_mu;
    qk_view *pub_view;            /* a reference to r->view */
    char pub_primary[QK_ADDR_MAX];/* the primary while it is READY, else "" */
};

static QK_TLS qk_remote *tls_remote; /* set on the I/O thread */

static void send_call(qk_remote *r, qk_rcall *c);
static void conn_lost(qk_rconn *k, const char *why);
static void start_connect(qk_rconn *k);
static void flush(qk_rconn *k);

/* ---- call tables (one per connection) ---- */

static size_t slot_of(const qk_rconn *k, uint64_t id)
{
    return (size_t)qk_fmix64(id) & k->mask;
}

static int table_put(qk_rconn *k, qk_rcall *c)
{
    if ((k->count + 1) * 2 > k->mask + 1) {
        size_t ncap = (k->mask + 1) * 2;
        qk_rcall **ns = calloc(ncap, sizeof *ns);
        if (!ns)
            return -1;
        qk_rcall **old = k->slots;
        size_t oldn = k->mask + 1;
        k->slots = ns;
        k->mask = ncap - 1;
        for (size_t i = 0; i < oldn; i++) {
            if (!old[i])
                continue;
            size_t j = slot_of(k, old[i]->id);
            while (ns[j])
                j = (j + 1) & k->mask;
            ns[j] = old[i];
        }
        free(old);
    }
    size_t i = slot_of(k, c->id);
    while (k->slots[i])
        i = (i + 1) & k->mask;
    k->slots[i] = c;
    k->count++;
    c->in_table = true;
    return 0;
}

static qk_rcall *table_find(qk_rconn *k, uint64_t id)
{
    for (size_t i = slot_of(k, id);; i = (i + 1) & k->mask) {
        qk_rcall *c = k->slots[i];
        if (!c || c->id == id)
            return c;
    }
}

static qk_rcall *table_take(qk_rconn *k, uint64_t id)
{
    size_t i = slot_of(k, id);
    for (;; i = (i + 1) & k->mask) {
        qk_rcall *c = k->slots[i];
        if (!c)
            return NULL;
        if (c->id == id)
            break;
    }
    qk_rcall *found = k->slots[i];
    for (size_t j = (i + 1) & k->mask;; j = (j + 1) & k->mask) {
        qk_rcall *b = k->slots[j];
        if (!b)
            break;
        size_t home = slot_of(k, b->id);
        if (((j - home) & k->mask) >= ((j - i) & k->mask)) {
            k->slots[i] = b;
            i = j;
        }
    }
    k->slots[i] = NULL;
    k->count--;
    found->in_table = false;
    return found;
}

/* Take any one call out of the table (draining it), or NULL. */
static qk_rcall *table_take_any(qk_rconn *k)
{
    if (!k->count)
        return NULL;
    for (size_t i = 0; i <= k->mask; i++)
        if (k->slots[i])
            return table_take(k, k->slots[i]->id);
    return NULL;
}

/* ---- completing calls ---- */

static void rcall_free(qk_rcall *c)
{
    free(c->target);
    free(c);
}

/* Finish call c (out of every list and table) through its op, and free it. */
static void complete_ex(qk_remote *r, qk_rcall *c, quark_err err, bool actor_error,
                        const char *errmsg, const uint8_t *result, size_t len)
{
    qk_dlheap_remove(&r->heap, &c->dl);
    if (c->answer) {
        qk_outcome o = {.err = err, .by = actor_error ? QK_BY_ACTOR : QK_BY_RUNTIME,
                        .errmsg = errmsg, .data = result, .len = err == QUARK_OK ? len : 0};
        qk_op_finish(c->answer, &o);
    }
    rcall_free(c);
}

/* An async call's answer, on the I/O thread (its op lends it). */
static void callback_done(qk_op *op)
{
    qk_rcall *c = QK_CONTAINER_OF(op, qk_rcall, own);
    qk_remote *r = tls_remote;
    const qk_outcome *o = op->out;
    if (o->err != QUARK_OK) {
        c->tramp(c->fn, o->err, qk_outcome_text(o), NULL, c->arg);
        return;
    }
    const ProtobufCMessage *msg = qk_outcome_reply(o, c->md, c->reply_desc, &r->arena.pb);
    if (msg)
        c->tramp(c->fn, QUARK_OK, NULL, msg, c->arg);
    else
        c->tramp(c->fn, QUARK_EPROTO, "the reply could not be decoded", NULL, c->arg);
    qk_arena_reset(&r->arena);
}

/* A peer's answer to our gossip, on the I/O thread. */
static void gossip_done(qk_op *op)
{
    qk_remote *r = tls_remote;
    if (op->out->err == QUARK_OK && r->hooks.gossip_ack)
        r->hooks.gossip_ack(r->hooks.arg, op->out->data, op->out->len);
}

static void complete(qk_remote *r, qk_rcall *c, quark_err err, const char *errmsg,
                     const uint8_t *result, size_t len)
{
    complete_ex(r, c, err, false, errmsg, result, len);
}

static void sub_end(qk_rsub *rs, quark_err why, const char *msg)
{
    if (rs->ended)
        return;
    rs->ended = true;
    rs->env = NULL;
    rs->fn(NULL, why, msg, rs->arg);
}

static void list_push(qk_rcall **head, qk_rcall **tail, qk_rcall *c)
{
    c->next = NULL;
    if (*tail)
        (*tail)->next = c;
    else
        *head = c;
    *tail = c;
}

static void list_remove(qk_rcall **head, qk_rcall **tail, qk_rcall *c)
{
    qk_rcall **pp = head, *prev = NULL;
    while (*pp && *pp != c) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = c->next;
        if (tail && *tail == c)
            *tail = prev;
    }
}

/* ---- connections ---- */

static uint64_t backoff_of(const qk_remote *r, unsigned failures)
{
    const quark_retry_policy *p = &r->cfg.retry;
    uint64_t max = p->max_backoff_ms ? p->max_backoff_ms : 2000;
    uint64_t b = p->initial_backoff_ms ? p->initial_backoff_ms : 50;
    for (unsigned i = 1; i < failures && b < max; i++)
        b *= 2;
    if (b > max)
        b = max;
    return b / 2 + (uint64_t)rand() % (b / 2 + 1); /* jitter: [b/2, b] */
}

static qk_rconn *conn_new(qk_remote *r, const char *addr, size_t len)
{
    if (r->nconns == r->conns_cap) {
        size_t cap = r->conns_cap ? r->conns_cap * 2 : 8;
        qk_rconn **n = realloc(r->conns, cap * sizeof *n);
        if (!n)
            return NULL;
        r->conns = n;
        r->conns_cap = cap;
    }
    qk_rconn *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    qk_addr a;
    if (len >= sizeof k->addr || qk_addr_parse(addr, len, &a) != 0) {
        free(k);
        return NULL;
    }
    memcpy(k->host, a.host, sizeof k->host);
    memcpy(k->port, a.port, sizeof k->port);
    memcpy(k->addr, addr, len);
    k->addr[len] = '\0';
    k->r = r;
    k->mask = 63;
    k->slots = calloc(k->mask + 1, sizeof *k->slots);
    if (!k->slots) {
        free(k);
        return NULL;
    }
    r->conns[r->nconns++] = k;
    return k;
}

/* The connection to the silo known as `addr` (by its own name or ours). */
static qk_rconn *conn_find(qk_remote *r, const char *addr)
{
    for (size_t i = 0; i < r->nconns; i++) {
        qk_rconn *k = r->conns[i];
        if (k->lane)
            continue;
        /* By either name: a silo whose HELLO_OK names it otherwise than the
         * view does must not get a new connection per call. */
        if (!strcmp(k->silo_id, addr) || !strcmp(k->addr, addr))
            return k;
    }
    return NULL;
}

static qk_rconn *conn_get(qk_remote *r, const char *addr)
{
    qk_rconn *k = conn_find(r, addr);
    return k ? k : conn_new(r, addr, strlen(addr));
}

/* Free a connection that is closed and holds nothing (not a seed). */
static bool conn_busy(const qk_rconn *k)
{
    return k->state != RC_IDLE || k->tcp || k->count || k->waiting;
}

/* Free k's memory (it is out of r->conns, or all of them go). */
static void conn_free(qk_rconn *k)
{
    free(k->lanes);
    free(k->slots);
    free(k->in);
    free(k->out);
    free(k->wbuf);
    free(k);
}

static void conn_destroy(qk_rconn *k)
{
    qk_remote *r = k->r;
    for (size_t i = 0; i < r->nconns; i++) {
        if (r->conns[i] == k) {
            r->conns[i] = r->conns[--r->nconns];
            break;
        }
    }
    conn_free(k);
}

/* Free a connection that is closed and holds nothing (not a seed), with its
 * lanes (a lane goes only with its silo connection). */
static void conn_free_if_unused(qk_rconn *k)
{
    qk_remote *r = k->r;
    if (k->lane) {
        if (!k->parent && !conn_busy(k))
            conn_destroy(k); /* an orphan */
        return;
    }
    if (k->seed || k->member || conn_busy(k) || k == r->primary || k == r->source)
        return;
    for (unsigned i = 0; k->lanes && i < k->workers; i++)
        if (k->lanes[i] && conn_busy(k->lanes[i]))
            return;
    for (unsigned i = 0; k->lanes && i < k->workers; i++)
        if (k->lanes[i])
            conn_destroy(k->lanes[i]);
    conn_destroy(k);
}

/* Drop a silo connection's lanes (all idle: the client stopped). */
static void conn_drop_lanes(qk_rconn *k)
{
    free(k->lanes);
    k->lanes = NULL;
    k->workers = k->served_by = 0;
}

/* ---- routing ---- */

/* Where call `c` should go now: NULL if nowhere (then *why says why). */
static qk_rconn *route_silo(qk_remote *r, qk_rcall *c, const char **why);
static void ensure_connecting(qk_rconn *k);

/* The lane of silo connection k for worker `shard` (made on first use). */
static qk_rconn *lane_get(qk_rconn *k, unsigned shard)
{
    if (!k->lanes && !(k->lanes = calloc(k->workers, sizeof *k->lanes)))
        return NULL;
    qk_rconn *l = k->lanes[shard];
    if (!l) {
        l = conn_new(k->r, k->addr, strlen(k->addr));
        if (!l)
            return NULL;
        l->lane = true;
        l->parent = k;
        l->shard = shard;
        k->lanes[shard] = l;
    }
    return l;
}

/* Where call `c` should go now: NULL if nowhere (then *why says why). A call
 * to an actor goes on the lane of its worker when that lane is up, else on
 * the silo connection (whose worker hands it over). */
static qk_rconn *route(qk_remote *r, qk_rcall *c, const char **why)
{
    qk_rconn *k = route_silo(r, c, why);
    if (!k || k->state != RC_READY || k->workers < 2 || !k->served_by ||
        !c->has_hash || (c->kind != RC_OP_CALL && c->kind != RC_OP_FWD))
        return k;
    unsigned shard = (unsigned)(((c->hash >> 32) * (uint64_t)k->workers) >> 32);
    if (shard == k->served_by - 1)
        return k;
    qk_rconn *l = lane_get(k, shard);
    if (!l)
        return k;
    if (l->state == RC_READY)
        return l;
    ensure_connecting(l);
    return k;
}

static qk_rconn *route_silo(qk_remote *r, qk_rcall *c, const char **why)
{
    *why = NULL;
    if (c->target && c->attempts == 0) /* explicit, on the first attempt */
        return conn_get(r, c->target);
    if (c->kind == RC_OP_GOSSIP)
        return conn_get(r, c->target);
    if (c->kind == RC_OP_WATCH)
        return c->conn;
    if (r->view && c->has_hash) {
        int o = qk_view_owner(r->view, c->hash);
        if (o >= 0 && o == r->view->self) {
            *why = "the actor's ownership moved to this silo while the call was forwarded; "
                   "it did not run (retry)";
            return NULL;
        }
        if (o >= 0)
            return conn_get(r, r->view->members[o].addr);
    }
    if (r->peer) {
        if (c->target)
            return conn_get(r, c->target);
        *why = "no route to the actor's silo";
        return NULL;
    }
    return r->primary;
}

static void ensure_connecting(qk_rconn *k)
{
    if (k->state == RC_IDLE && !atomic_load(&k->r->stopping) &&
        qk_now_ms_coarse() >= k->reconnect_at_ms)
        start_connect(k);
}

/* ---- gRPC transport ---- */

static void finish_call(qk_remote *r, qk_rcall *c, quark_err err, bool actor_error,
                        const char *errmsg, size_t errlen, const uint8_t *result, size_t len);
static void finish_encoded(qk_rconn *k, qk_rcall *c, const uint8_t *p, size_t n);
static void learn_workers(qk_rconn *k, unsigned workers, unsigned served_by);
static void deliver_event(qk_remote *r, qk_rcall *c, const uint8_t *p, size_t n);
static void handle_view(qk_rconn *k, qk_rcall *c, const uint8_t *p, size_t n);
static void watch_ended(qk_rconn *k, qk_rcall *c);

static void g_on_response(void *ud, void *call_ud, int st, const char *gmsg, const uint8_t *msg,
                          size_t len)
{
    qk_rconn *k = ud;
    qk_rcall *c = call_ud;
    table_take(k, c->id);
    if (st != 0)
        finish_call(k->r, c, qk_grpc_err_of(st), false, gmsg, strlen(gmsg), NULL, 0);
    else
        finish_encoded(k, c, msg, len);
}

static void g_on_stream_msg(void *ud, void *call_ud, const uint8_t *msg, size_t len)
{
    qk_rconn *k = ud;
    qk_rcall *c = call_ud;
    if (c->kind == RC_OP_WATCH)
        handle_view(k, c, msg, len);
    else
        deliver_event(k->r, c, msg, len);
}

static void g_on_stream_end(void *ud, void *call_ud, int st, const char *gmsg)
{
    qk_rconn *k = ud;
    qk_rcall *c = call_ud;
    table_take(k, c->id);
    if (c->kind == RC_OP_WATCH) {
        watch_ended(k, c);
        return;
    }
    sub_end(c->rsub, st == 0 ? QUARK_ECLOSED : qk_grpc_err_of(st), gmsg);
    rcall_free(c);
}

static const qk_grpc_client_cbs g_cbs = {.on_response = g_on_response,
                                         .on_stream_msg = g_on_stream_msg,
                                         .on_stream_end = g_on_stream_end};

/* ---- output ---- */

static void on_written(uv_write_t *req, int status);

static int out_append(qk_rconn *k, const uint8_t *p, size_t n)
{
    if (qk_buf_reserve(&k->out, &k->out_cap, k->out_len, n, 16384) != 0)
        return -1;
    memcpy(k->out + k->out_len, p, n);
    k->out_len += n;
    return 0;
}

static void g_write(void *wud, const uint8_t *data, size_t len)
{
    /* Out of memory drops output; the calls' deadlines complete them. */
    (void)out_append(wud, data, len);
}

static void flush(qk_rconn *k)
{
    if (k->grpc && !k->in_recv_)
        qk_grpc_client_flush(k->grpc, g_write, k);
    if (k->writing || k->out_len == 0 || k->state < RC_HELLO)
        return;
    for (qk_rcall *c = k->unsent; c; c = c->next)
        c->written = true; /* from now on it may reach the silo */
    k->unsent = k->unsent_tail = NULL;
    /* At once if the socket takes it all (uv_write would also change the
     * epoll registration twice per write), else the rest through uv_write. */
    uv_buf_t all = uv_buf_init((char *)k->out, (unsigned)k->out_len);
    int nw = uv_try_write((uv_stream_t *)k->tcp, &all, 1);
    if (nw < 0 && nw != UV_EAGAIN) {
        conn_lost(k, uv_strerror(nw));
        return;
    }
    size_t done = nw > 0 ? (size_t)nw : 0;
    if (done == k->out_len) {
        k->out_len = 0;
        return;
    }
    size_t len = qk_buf_swap(&k->out, &k->out_cap, &k->out_len, &k->wbuf, &k->wbuf_cap);
    uv_buf_t buf = uv_buf_init((char *)k->wbuf + done, (unsigned)(len - done));
    k->writing = true;
    k->wreq.data = k;
    if (uv_write(&k->wreq, (uv_stream_t *)k->tcp, &buf, 1, on_written) != 0) {
        k->writing = false;
        conn_lost(k, "write failed");
    }
}

static void flush_all(qk_remote *r)
{
    for (size_t i = 0; i < r->nconns; i++)
        flush(r->conns[i]);
}

static void on_written(uv_write_t *req, int status)
{
    qk_rconn *k = req->data;
    k->writing = false;
    if (status < 0) {
        if (status != UV_ECANCELED)
            conn_lost(k, uv_strerror(status));
        return;
    }
    flush(k);
}

/* A call is in the table and its bytes in the output: count the attempt and
 * remember it as unsent until the next write takes it. */
static void mark_queued(qk_rconn *k, qk_rcall *c)
{
    c->attempts++;
    c->conn = k;
    c->next = NULL;
    if (k->unsent_tail)
        k->unsent_tail->next = c;
    else
        k->unsent = c;
    k->unsent_tail = c;
}

static const char *grpc_path(const qk_rcall *c)
{
    switch (c->kind) {
    case RC_OP_SUB: return "/quark.ActorService/StreamActorEvents";
    case RC_OP_WATCH: return "/quark.ActorService/WatchCluster";
    default: return "/quark.ActorService/InvokeActor";
    }
}

static void fail_unsendable(qk_remote *r, qk_rcall *c, quark_err err, const char *why)
{
    if (c->kind == RC_OP_SUB) {
        sub_end(c->rsub, err, why);
        rcall_free(c);
    } else if (c->kind == RC_OP_WATCH) {
        if (c->conn && c->conn->watch == c)
            c->conn->watch = NULL;
        if (r->source == c->conn)
            r->source = NULL;
        r->want_watch = true;
        rcall_free(c);
    } else {
        complete(r, c, err, why, NULL, 0);
    }
}

/* Put one call on the wire of connection k (which is READY). */
static void send_on(qk_rconn *k, qk_rcall *c)
{
    qk_remote *r = k->r;
    if (k->grpc) {
        /* No grpc-timeout header: the deadline travels in the request body
         * (deadline_ms), which the silo honours, and the client enforces it
         * itself; a header whose value changes on every call would cost a
         * format and an unindexable HPACK literal each time. */
        int32_t sid = qk_grpc_client_call(k->grpc, grpc_path(c), 0, r->meta,
                                          c->frame + QK_FRAME_HEADER, c->len - QK_FRAME_HEADER,
                                          c->kind == RC_OP_SUB || c->kind == RC_OP_WATCH, c);
        if (sid < 0) {
            fail_unsendable(r, c, (quark_err)sid, "the call could not be sent");
            return;
        }
        c->id = (uint64_t)sid;
        if (table_put(k, c) != 0) { /* keep nothing we cannot find again */
            qk_grpc_client_cancel(k->grpc, sid);
            fail_unsendable(r, c, QUARK_ENOMEM, "out of memory sending a call");
            return;
        }
        mark_queued(k, c);
        return;
    }
    c->id = ++k->next_id;
    /* the id lives at bytes 8..15 of the frame header */
    for (int i = 0; i < 8; i++)
        c->frame[8 + i] = (uint8_t)(c->id >> (56 - 8 * i));
    if (table_put(k, c) != 0 || out_append(k, c->frame, c->len) != 0) {
        if (c->in_table)
            table_take(k, c->id);
        fail_unsendable(r, c, QUARK_ENOMEM, "out of memory sending a call");
        return;
    }
    mark_queued(k, c);
}

/* Send (or queue) one call where it belongs now. */
static void send_call(qk_remote *r, qk_rcall *c)
{
    const char *why;
    qk_rconn *k = route(r, c, &why);
    if (!k) {
        fail_unsendable(r, c, QUARK_EUNAVAILABLE,
                        why ? why : "no silo to send the call to (out of memory?)");
        return;
    }
    c->conn = k;
    if (k->state != RC_READY) {
        list_push(&k->waiting, &k->waiting_tail, c);
        ensure_connecting(k);
        return;
    }
    send_on(k, c);
}

/* Send again, after a jittered backoff, a call a silo said it did not run. */
static void retry_later(qk_remote *r, qk_rcall *c)
{
    c->written = false;
    c->conn = NULL;
    c->retry_at_ms = qk_now_ms_coarse() + backoff_of(r, c->attempts);
    c->next = r->delayed;
    r->delayed = c;
}

/* ---- the view ---- */

/* Route each call of `list` afresh. With `gone` (why its connection will not
 * be used again): a forward leaves its explicit target for the view's owner,
 * and gossip for that silo is dropped. */
static void resend(qk_remote *r, qk_rcall *list, const char *gone)
{
    while (list) {
        qk_rcall *c = list;
        list = c->next;
        c->conn = NULL;
        if (gone && c->kind == RC_OP_GOSSIP) {
            complete(r, c, QUARK_EUNAVAILABLE, gone, NULL, 0);
            continue;
        }
        if (gone && c->target && c->kind == RC_OP_FWD && !c->attempts)
            c->attempts = 1; /* route by hash now */
        send_call(r, c);
    }
}

static void reroute_waiting(qk_remote *r)
{
    qk_rcall *all = NULL, *tail = NULL;
    for (size_t i = 0; i < r->nconns; i++) {
        qk_rconn *k = r->conns[i];
        if (!k->waiting)
            continue;
        if (tail)
            tail->next = k->waiting;
        else
            all = k->waiting;
        tail = k->waiting_tail;
        k->waiting = k->waiting_tail = NULL;
    }
    resend(r, all, NULL);
}

/* Route by v from now on (NULL: forget the view). Takes the reference. */
static void publish_view(qk_remote *r)
{
    if (!r->direct)
        return;
    qk_view *nv = r->view;
    if (nv)
        qk_view_ref(nv);
    uv_mutex_lock(&r->route_mu);
    qk_view *old = r->pub_view;
    r->pub_view = nv;
    uv_mutex_unlock(&r->route_mu);
    qk_view_unref(old);
    /* Direct sockets to silos calls no longer go to are closed (they would
     * otherwise sit open until disconnect). */
    size_t n = 0, cap = 1 + (nv ? nv->n : 0);
    const char **keep = malloc(cap * sizeof *keep);
    if (!keep)
        return; /* out of memory: they stay until the next change */
    if (r->primary)
        keep[n++] = r->primary->addr;
    for (size_t i = 0; nv && i < nv->n; i++)
        keep[n++] = nv->members[i].addr;
    qk_direct_retain(r->direct, keep, n);
    free(keep);
}

static void publish_primary(qk_remote *r)
{
    if (!r->direct)
        return;
    uv_mutex_lock(&r->route_mu);
    if (r->primary && r->primary->state == RC_READY)
        snprintf(r->pub_primary, sizeof r->pub_primary, "%s", r->primary->addr);
    else
        r->pub_primary[0] = '\0';
    uv_mutex_unlock(&r->route_mu);
}

static void set_view(qk_remote *r, qk_view *v)
{
    qk_view *old = r->view;
    r->view = v;
    publish_view(r);
    for (size_t i = 0; i < r->nconns; i++)
        r->conns[i]->member = false;
    if (v) {
        for (size_t i = 0; i < v->n; i++) {
            if ((int)i == v->self)
                continue;
            qk_rconn *k = conn_get(r, v->members[i].addr);
            if (!k)
                continue;
            k->member = true;
            if (!r->peer) /* clients keep a connection to every member */
                ensure_connecting(k);
        }
    }
    reroute_waiting(r);
    qk_view_unref(old);
    /* Connections of silos that left: keep answering what is in flight. */
    for (size_t i = r->nconns; i-- > 0;)
        if (i < r->nconns) /* (freeing a silo connection frees its lanes too) */
            conn_free_if_unused(r->conns[i]);
}

void qk_remote_install_view(qk_remote *r, qk_view *v)
{
    set_view(r, v);
}

/* Ask connection k for the cluster's view (clients routing by owner). */
static void start_watch(qk_remote *r, qk_rconn *k)
{
    qk_rcall *c = calloc(1, sizeof *c + QK_FRAME_HEADER);
    if (!c)
        return;
    qk_frame_header(c->frame, QK_FRAME_WATCH, 0, 0);
    c->len = QK_FRAME_HEADER;
    c->kind = RC_OP_WATCH;
    c->conn = k;
    c->method = "WatchCluster";
    k->watch = c;
    r->source = k;
    r->want_watch = false;
    send_on(k, c);
}

/* A READY connection to watch, preferring members. */
static void pick_source(qk_remote *r)
{
    if (r->peer || r->cfg.routing == QUARK_ROUTE_PINNED || r->source)
        return;
    qk_rconn *best = NULL;
    for (size_t i = 0; i < r->nconns; i++) {
        qk_rconn *k = r->conns[i];
        if (!k->lane && k->state == RC_READY && (!best || (k->member && !best->member)))
            best = k;
    }
    if (best) {
        start_watch(r, best);
        return;
    }
    /* Nobody reachable: forget the view, start over from the seeds. */
    if (r->view) {
        set_view(r, NULL);
    }
    r->want_watch = true;
}

static void handle_view(qk_rconn *k, qk_rcall *c, const uint8_t *p, size_t n)
{
    qk_remote *r = k->r;
    if (k->watch != c)
        return;
    char *from = NULL;
    const char *why = NULL;
    qk_view *v = qk_view_decode(p, n, r->cfg.cluster_id, &from, &why);
    if (!v) {
        free(from);
        return; /* keep the old view */
    }
    if (from && *from && !k->silo_id[0] && strlen(from) < sizeof k->silo_id)
        strcpy(k->silo_id, from);
    free(from);
    if (r->view && qk_view_same_members(r->view, v)) {
        qk_view_unref(v);
        return;
    }
    set_view(r, v);
}

static void watch_ended(qk_rconn *k, qk_rcall *c)
{
    qk_remote *r = k->r;
    if (k->watch == c)
        k->watch = NULL;
    if (r->source == k)
        r->source = NULL;
    rcall_free(c);
    r->want_watch = true;
}

/* ---- connection state ---- */

static void on_tcp_closed(uv_handle_t *h)
{
    free(h);
}

static void first_result(qk_remote *r, int result, quark_err code, const char *why)
{
    uv_mutex_lock(&r->mu);
    if (r->first_done == 0 || (result == 1 && r->first_done != 1)) {
        r->first_code = code;
        if (result < 0 && why)
            snprintf(r->first_error, sizeof r->first_error, "%s", why);
        r->first_done = result;
        uv_cond_broadcast(&r->cv);
    }
    uv_mutex_unlock(&r->mu);
}

/* The primary moves to the next seed. */
static void next_primary(qk_remote *r)
{
    if (!r->nseeds)
        return;
    r->cur_seed = (r->cur_seed + 1) % r->nseeds;
    r->primary = r->conns[r->cur_seed];
    publish_primary(r);
}

static void conn_lost(qk_rconn *k, const char *why)
{
    qk_remote *r = k->r;
    if (k->state == RC_IDLE)
        return;
    char msg[600];
    int was_ready = k->state == RC_READY;
    k->state = RC_IDLE;
    uv_close((uv_handle_t *)k->tcp, on_tcp_closed);
    k->tcp = NULL;
    k->in_len = k->out_len = 0;
    k->unsent = k->unsent_tail = NULL;
    k->writing = false;
    if (k->watch && !k->watch->in_table) /* (in the table: freed with it below) */
        rcall_free(k->watch);
    k->watch = NULL; /* our view source is gone: watch another member below */
    bool source_lost = r->source == k;
    if (source_lost)
        r->source = NULL;
    /* Every call in the table was sent on this connection. */
    qk_rcall *c, *again = NULL;
    while ((c = table_take_any(k)) != NULL) {
        if (c->kind == RC_OP_WATCH) {
            rcall_free(c);
            continue;
        }
        if (c->kind == RC_OP_SUB) {
            snprintf(msg, sizeof msg, "connection to %s lost (%s): the subscription ended; "
                     "subscribe again to continue", k->addr, why);
            sub_end(c->rsub, QUARK_EUNAVAILABLE, msg);
            rcall_free(c);
            continue;
        }
        if (c->kind == RC_OP_GOSSIP) {
            complete(r, c, QUARK_EUNAVAILABLE, why, NULL, 0);
            continue;
        }
        unsigned max = r->cfg.retry.max_attempts ? r->cfg.retry.max_attempts : 1;
        if (!c->written || (c->idempotent && c->attempts < max)) {
            c->next = again; /* did not run, or safe to run again */
            again = c;
        } else {
            snprintf(msg, sizeof msg, "connection to %s lost (%s) after %s was sent: its "
                     "outcome is unknown (not retried: the method is not @quark.idempotent)",
                     k->addr, why, c->method);
            complete(r, c, QUARK_EUNKNOWN, msg, NULL, 0);
        }
    }
    if (k->grpc) {
        qk_grpc_client_free(k->grpc); /* runs no callback: every call was handled above */
        k->grpc = NULL;
    }
    k->failures++;
    k->reconnect_at_ms = qk_now_ms_coarse() + (was_ready ? 0 : backoff_of(r, k->failures));
    if (k == r->primary && !was_ready) {
        r->seed_failures++;
        snprintf(msg, sizeof msg, "%s: %s", k->addr, why);
        if (r->seed_failures >= r->nseeds)
            first_result(r, -1, k->refusal ? k->refusal : QUARK_EUNAVAILABLE, msg);
    }
    if (k == r->primary && !r->view)
        next_primary(r);
    if (source_lost || (k == r->primary && !r->view))
        pick_source(r);
    /* Calls that may go again: route them afresh (the owner may be another
     * silo now, or this one once it answers). */
    resend(r, again, NULL);
    if (k->waiting && ((!k->member && k != r->primary) || (k == r->primary && !r->view))) {
        /* Nobody will route here again, or the primary moved on: the waiting
         * calls go where they belong now. */
        qk_rcall *w = k->waiting;
        k->waiting = k->waiting_tail = NULL;
        resend(r, w, k == r->primary ? NULL : why);
    }
    if (!atomic_load(&r->connected) || was_ready) {
        bool any = false;
        for (size_t i = 0; i < r->nconns; i++)
            any |= r->conns[i]->state == RC_READY;
        atomic_store(&r->connected, any);
    }
    publish_primary(r);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    qk_rconn *k = h->data;
    if (k->in_cap - k->in_len < 65536) {
        size_t cap = k->in_cap ? k->in_cap * 2 : 131072;
        uint8_t *b = realloc(k->in, cap);
        if (!b) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        k->in = b;
        k->in_cap = cap;
    }
    *buf = uv_buf_init((char *)k->in + k->in_len, (unsigned)(k->in_cap - k->in_len));
}

/* A call's answer arrived (either transport); `c` is out of the table. */
static void finish_call(qk_remote *r, qk_rcall *c, quark_err err, bool actor_error,
                        const char *errmsg, size_t errlen, const uint8_t *result, size_t len)
{
    unsigned max = r->cfg.retry.max_attempts ? r->cfg.retry.max_attempts : 1;
    if (err == QUARK_EUNAVAILABLE && !actor_error && c->attempts < max &&
        (c->kind == RC_OP_CALL || c->kind == RC_OP_FWD)) {
        retry_later(r, c); /* the silo says it did not run it */
        return;
    }
    char errbuf[512];
    if (err != QUARK_OK) {
        if (errmsg && errlen)
            snprintf(errbuf, sizeof errbuf, "%.*s", (int)(errlen > 511 ? 511 : errlen), errmsg);
        else
            snprintf(errbuf, sizeof errbuf, "%s", quark_strerror(err));
    }
    complete_ex(r, c, err, actor_error, err == QUARK_OK ? NULL : errbuf, result, len);
}

static void finish_encoded(qk_rconn *k, qk_rcall *c, const uint8_t *p, size_t n)
{
    qk_remote *r = k->r;
    qk_wire_response resp;
    if (qk_wire_decode_response(p, n, &resp) != 0) {
        const char *m = "the silo's response could not be decoded";
        finish_call(r, c, QUARK_EPROTO, false, m, strlen(m), NULL, 0);
        return;
    }
    /* gRPC answers say which worker read the call (TCP says it in HELLO_OK). */
    if (k->grpc && resp.workers &&
        ((!k->lane && resp.workers != k->workers) || resp.served_by != k->served_by))
        learn_workers(k, resp.workers, resp.served_by);
    finish_call(r, c, (quark_err)resp.error_code, resp.actor_error, resp.error_message.p,
                resp.error_message.n, resp.result, resp.result_len);
    qk_arena_reset(&r->arena);
}

static void handle_response(qk_rconn *k, const qk_frame *f)
{
    qk_rcall *c = table_take(k, f->id);
    if (!c) /* already completed (deadline) */
        return;
    if (c->kind == RC_OP_GOSSIP)
        complete(k->r, c, QUARK_OK, NULL, f->payload, f->len);
    else
        finish_encoded(k, c, f->payload, f->len);
}

static void handle_stream(qk_rconn *k, const qk_frame *f)
{
    qk_remote *r = k->r;
    qk_rcall *c = table_find(k, f->id);
    if (!c)
        return;
    if (c->kind == RC_OP_WATCH) {
        if (f->type == QK_FRAME_VIEW)
            handle_view(k, c, f->payload, f->len);
        else if (f->type == QK_FRAME_STREAM_END) {
            table_take(k, f->id);
            watch_ended(k, c);
        }
        return;
    }
    if (c->kind != RC_OP_SUB)
        return;
    if (f->type == QK_FRAME_STREAM_END) {
        table_take(k, f->id);
        Quark__ActorInvocationResponse *e =
            quark__actor_invocation_response__unpack(&r->arena.pb, f->len, f->payload);
        sub_end(c->rsub, e ? (quark_err)e->error_code : QUARK_EPROTO,
                e ? e->error_message : "bad stream end");
        rcall_free(c);
    } else if (f->type == QK_FRAME_EVENT) {
        deliver_event(r, c, f->payload, f->len);
    }
    qk_arena_reset(&r->arena);
}

static void deliver_event(qk_remote *r, qk_rcall *c, const uint8_t *p, size_t n)
{
    Quark__ActorEvent *ae = quark__actor_event__unpack(&r->arena.pb, n, p);
    if (ae && c->rsub && !c->rsub->ended) {
        quark_event ev = {.actor_type = ae->actor_type, .actor_id = ae->actor_id,
                          .event_type = ae->event_type, .payload = ae->payload.data,
                          .payload_len = ae->payload.len, .sequence = ae->sequence};
        c->rsub->fn(&ev, QUARK_OK, NULL, c->rsub->arg);
    }
    qk_arena_reset(&r->arena);
}

/* The connection is usable: send what waited for it. */
static void conn_ready(qk_rconn *k)
{
    qk_remote *r = k->r;
    k->state = RC_READY;
    k->failures = 0;
    if (k == r->primary)
        r->seed_failures = 0;
    atomic_store(&r->connected, 1);
    if (k == r->primary)
        publish_primary(r);
    first_result(r, 1, QUARK_OK, NULL);
    if (r->want_watch && !r->source)
        pick_source(r);
    qk_rcall *c = k->waiting;
    k->waiting = k->waiting_tail = NULL;
    while (c) {
        qk_rcall *n = c->next;
        send_on(k, c);
        c = n;
    }
    flush(k);
}

/* What the silo said of its workers (TCP: HELLO_OK; gRPC: every answer):
 * how many it runs and which one serves connection k. */
static void learn_workers(qk_rconn *k, unsigned workers, unsigned served_by)
{
    if (workers > 1024 || served_by > workers)
        workers = served_by = 0;
    if (!k->lane && workers != k->workers) {
        /* A silo that restarted with another worker count: new lanes. */
        qk_rconn **old = k->lanes;
        unsigned n = k->workers;
        k->lanes = NULL;
        for (unsigned i = 0; old && i < n; i++)
            if (old[i])
                old[i]->parent = NULL; /* orphans: freed once idle */
        for (unsigned i = 0; old && i < n; i++)
            if (old[i])
                conn_free_if_unused(old[i]);
        free(old);
        k->workers = workers;
    }
    k->served_by = served_by;
}

static void handle_hello(qk_rconn *k, const qk_frame *f)
{
    Quark__TcpHelloReply *h = quark__tcp_hello_reply__unpack(NULL, f->len, f->payload);
    if (!h || h->error_code) {
        char why[400];
        snprintf(why, sizeof why, "refused: %s", h ? h->error_message : "bad hello reply");
        /* A refusal (wrong cluster) is final for this endpoint's attempt. */
        k->refusal = h ? (quark_err)h->error_code : QUARK_EPROTO;
        if (h)
            quark__tcp_hello_reply__free_unpacked(h, NULL);
        conn_lost(k, why);
        return;
    }
    if (h->silo_id && h->silo_id[0] && strlen(h->silo_id) < sizeof k->silo_id)
        strcpy(k->silo_id, h->silo_id);
    learn_workers(k, h->workers, h->worker);
    quark__tcp_hello_reply__free_unpacked(h, NULL);
    conn_ready(k);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    qk_rconn *k = st->data;
    k->r->io_event = true;
    if (n < 0) {
        conn_lost(k, n == UV_EOF ? "closed by the silo" : uv_strerror((int)n));
        return;
    }
    k->in_len += (size_t)n;
    if (k->grpc) {
        k->in_recv_ = true;
        int rc = qk_grpc_client_recv(k->grpc, k->in, k->in_len);
        k->in_recv_ = false;
        k->in_len = 0;
        if (rc != 0 || qk_grpc_client_want_close(k->grpc)) {
            conn_lost(k, rc != 0 ? "HTTP/2 protocol error from the silo" : "the silo is going away");
            return;
        }
        flush(k);
        return;
    }
    size_t off = 0;
    while (k->state >= RC_HELLO) {
        qk_frame f;
        const char *why = NULL;
        long used = qk_frame_parse(k->in + off, k->in_len - off, k->r->max_msg + 4096, &f, &why);
        if (used == 0)
            break;
        if (used < 0) {
            conn_lost(k, why ? why : "malformed frame from the silo");
            return;
        }
        off += (size_t)used;
        switch (f.type) {
        case QK_FRAME_HELLO_OK:
            handle_hello(k, &f);
            break;
        case QK_FRAME_RESPONSE:
        case QK_FRAME_GOSSIP_ACK:
            handle_response(k, &f);
            break;
        case QK_FRAME_EVENT:
        case QK_FRAME_STREAM_END:
        case QK_FRAME_VIEW:
            handle_stream(k, &f);
            break;
        case QK_FRAME_GOAWAY:
            conn_lost(k, "the silo is going away");
            return;
        default:
            break;
        }
    }
    if (k->state == RC_IDLE)
        return;
    memmove(k->in, k->in + off, k->in_len - off);
    k->in_len -= off;
    flush(k);
}

static void on_connect(uv_connect_t *req, int status)
{
    qk_rconn *k = req->data;
    qk_remote *r = k->r;
    if (status == UV_ECANCELED)
        return; /* we closed that attempt ourselves (timeout or stop) */
    if (status < 0) {
        conn_lost(k, uv_strerror(status));
        return;
    }
    k->state = RC_HELLO;
    uv_tcp_nodelay(k->tcp, 1);
    uv_read_start((uv_stream_t *)k->tcp, on_alloc, on_read);
    if (!r->peer && r->cfg.transport == QUARK_TRANSPORT_GRPC) {
        k->grpc = qk_grpc_client_new(&g_cbs, k, k->addr, r->max_msg + 4096,
                                     k->lane ? k->shard + 1 : 0);
        if (!k->grpc) {
            conn_lost(k, "out of memory");
            return;
        }
        conn_ready(k); /* no handshake: the cluster id rides on every call */
        return;
    }
    Quark__TcpHello h = QUARK__TCP_HELLO__INIT;
    h.cluster_id = (char *)r->cfg.cluster_id;
    h.client_name = (char *)r->cfg.client_name;
    h.version = 1;
    h.worker = k->lane ? k->shard + 1 : 0;
    size_t len = protobuf_c_message_get_packed_size(&h.base);
    uint8_t hdr[QK_FRAME_MAGIC_LEN + QK_FRAME_HEADER];
    memcpy(hdr, QK_FRAME_MAGIC, QK_FRAME_MAGIC_LEN);
    qk_frame_header(hdr + QK_FRAME_MAGIC_LEN, QK_FRAME_HELLO, 0, len);
    uint8_t *body = malloc(len ? len : 1);
    if (!body || out_append(k, hdr, sizeof hdr) != 0) {
        free(body);
        conn_lost(k, "out of memory");
        return;
    }
    protobuf_c_message_pack(&h.base, body);
    out_append(k, body, len);
    free(body);
    flush(k);
}

static void start_connect(qk_rconn *k)
{
    qk_remote *r = k->r;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(k->host, k->port, &hints, &ai);
    k->tcp = calloc(1, sizeof *k->tcp);
    if (!k->tcp) {
        if (ai)
            freeaddrinfo(ai);
        k->reconnect_at_ms = qk_now_ms_coarse() + backoff_of(r, ++k->failures);
        return;
    }
    uv_tcp_init(&r->loop, k->tcp);
    k->tcp->data = k;
    k->state = RC_CONNECTING;
    k->refusal = QUARK_OK;
    k->attempt_started_ms = qk_now_ms_coarse();
    if (gai != 0 || !ai) {
        conn_lost(k, gai_strerror(gai));
        return;
    }
    k->creq.data = k;
    int rc = uv_tcp_connect(&k->creq, k->tcp, ai->ai_addr, on_connect);
    freeaddrinfo(ai);
    if (rc != 0)
        conn_lost(k, uv_strerror(rc));
}

/* ---- the loop ---- */

static void rsub_free(qk_remote *r, qk_rsub *rs)
{
    for (qk_rsub **pp = &r->all_subs; *pp; pp = &(*pp)->all_next) {
        if (*pp == rs) {
            *pp = rs->all_next;
            break;
        }
    }
    free(rs);
}

static void unsub_op(qk_remote *r, qk_rsub *rs)
{
    rs->released = true;
    qk_rcall *env = rs->env;
    if (env && env->in_table) {
        qk_rconn *k = env->conn;
        table_take(k, env->id);
        if (k->grpc) {
            qk_grpc_client_cancel(k->grpc, (int32_t)env->id);
        } else {
            uint8_t hdr[QK_FRAME_HEADER];
            qk_frame_header(hdr, QK_FRAME_UNSUBSCRIBE, env->id, 0);
            out_append(k, hdr, sizeof hdr);
        }
        rcall_free(env);
    } else if (env) { /* still waiting for a connection */
        if (env->conn)
            list_remove(&env->conn->waiting, &env->conn->waiting_tail, env);
        rcall_free(env);
    }
    sub_end(rs, QUARK_ECLOSED, "unsubscribed");
    rsub_free(r, rs);
}

/* Take in what application threads submitted; true if there was any. */
static bool drain_inbox(qk_remote *r)
{
    qk_mpsc_node *n;
    bool any = false;
    while ((n = qk_mpsc_pop(&r->inbox)) != NULL) {
        any = true;
        qk_rcall *c = QK_CONTAINER_OF(n, qk_rcall, qnode);
        if (c->kind == RC_OP_UNSUB) {
            unsub_op(r, c->rsub);
            rcall_free(c);
            continue;
        }
        if (c->kind == RC_OP_SUB) {
            c->rsub->all_next = r->all_subs;
            r->all_subs = c->rsub;
            if (atomic_load(&r->stopping)) {
                c->rsub->env = NULL;
                sub_end(c->rsub, QUARK_ECLOSED, "the client is disconnecting");
                rcall_free(c);
            } else {
                send_call(r, c);
            }
            continue;
        }
        if (atomic_load(&r->stopping)) {
            complete(r, c, QUARK_ECLOSED, "the client is disconnecting", NULL, 0);
            continue;
        }
        qk_dlheap_insert(&r->heap, &c->dl);
        if (c->retry_at_ms) { /* a direct call the silo did not run: after a backoff */
            c->next = r->delayed;
            r->delayed = c;
            continue;
        }
        send_call(r, c);
    }
    flush_all(r);
    return any;
}

static void on_wake(uv_async_t *h)
{
    (void)h; /* io_main drains the inbox */
}

static void expire(qk_remote *r, qk_rcall *c, uint64_t now)
{
    (void)now;
    char msg[600];
    if (c->in_table) {
        qk_rconn *k = c->conn;
        table_take(k, c->id);
        if (k->grpc)
            qk_grpc_client_cancel(k->grpc, (int32_t)c->id);
        snprintf(msg, sizeof msg, "deadline exceeded: no reply to %s from %s in time", c->method,
                 k->addr);
        complete(r, c, QUARK_ETIMEDOUT, msg, NULL, 0);
        return;
    }
    const char *where = c->conn ? c->conn->addr : "the cluster";
    if (c->conn) { /* waiting for a connection: it never left this process */
        list_remove(&c->conn->waiting, &c->conn->waiting_tail, c);
        snprintf(msg, sizeof msg, "no silo reachable before the deadline of %s (waited for %s)",
                 c->method, where);
    } else { /* delayed retry */
        list_remove(&r->delayed, NULL, c);
        snprintf(msg, sizeof msg, "deadline of %s reached while retrying (the silo had "
                 "answered that it could not run it)", c->method);
    }
    complete(r, c, c->written ? QUARK_ETIMEDOUT : QUARK_EUNAVAILABLE, msg, NULL, 0);
}

static void on_tick(uv_timer_t *t)
{
    qk_remote *r = t->data;
    uint64_t now = qk_now_ms_coarse();
    qk_deadline *d;
    while ((d = qk_dlheap_pop_expired(&r->heap, now)) != NULL)
        expire(r, QK_CONTAINER_OF(d, qk_rcall, dl), now);
    /* Retries whose backoff is over. */
    qk_rcall **pp = &r->delayed;
    qk_rcall *due = NULL;
    while (*pp) {
        qk_rcall *c = *pp;
        if (c->retry_at_ms <= now) {
            *pp = c->next;
            c->next = due;
            due = c;
        } else {
            pp = &c->next;
        }
    }
    while (due) {
        qk_rcall *n = due->next;
        send_call(r, due);
        due = n;
    }
    bool stopping = atomic_load(&r->stopping);
    for (size_t i = 0; i < r->nconns; i++) {
        qk_rconn *k = r->conns[i];
        /* A silo that never answers (no RST, no SYN-ACK): give up on it after
         * a bounded time instead of the kernel's minutes. */
        if ((k->state == RC_CONNECTING || k->state == RC_HELLO) &&
            now - k->attempt_started_ms > QK_CONNECT_TIMEOUT_MS)
            conn_lost(k, "no answer within the connect timeout");
        if (k->state == RC_IDLE && !stopping && now >= k->reconnect_at_ms &&
            (k == r->primary || k->waiting || (k->member && !r->peer)))
            start_connect(k);
    }
    if (r->want_watch && !r->source)
        pick_source(r);
    if (r->hooks.tick)
        r->hooks.tick(r->hooks.arg, now);
    flush_all(r);
}

/* The client is disconnecting: end c (a subscription ends, a watch goes). */
static void fail_closed(qk_remote *r, qk_rcall *c, quark_err err, const char *why)
{
    if (c->kind == RC_OP_SUB) {
        sub_end(c->rsub, QUARK_ECLOSED, "the client disconnected");
        rcall_free(c);
    } else if (c->kind == RC_OP_WATCH) {
        rcall_free(c);
    } else {
        complete(r, c, err, why, NULL, 0);
    }
}

static void fail_all(qk_remote *r)
{
    for (size_t i = 0; i < r->nconns; i++) {
        qk_rconn *k = r->conns[i];
        qk_rcall *c;
        while ((c = table_take_any(k)) != NULL)
            fail_closed(r, c, c->written ? QUARK_EUNKNOWN : QUARK_ECLOSED,
                        "the client disconnected before the reply came");
        k->watch = NULL;
        while (k->waiting) {
            c = k->waiting;
            k->waiting = c->next;
            fail_closed(r, c, QUARK_ECLOSED, "the client disconnected before the call was sent");
        }
        k->waiting_tail = NULL;
        if (k->grpc) {
            qk_grpc_client_free(k->grpc);
            k->grpc = NULL;
        }
        if (k->tcp)
            uv_close((uv_handle_t *)k->tcp, on_tcp_closed);
        k->tcp = NULL;
        k->state = RC_IDLE;
    }
    while (r->delayed) {
        qk_rcall *c = r->delayed;
        r->delayed = c->next;
        complete(r, c, QUARK_ECLOSED, "the client disconnected before the call was sent again",
                 NULL, 0);
    }
}

static void io_main(void *arg)
{
    qk_remote *r = arg;
    tls_remote = r;
    qk_spin_init(&r->spin, r->peer ? 0 : r->cfg.poll_us);
    if (r->primary)
        start_connect(r->primary);
    /* Drain, run the loop, then sleep in epoll, announcing it so that
     * submitters know to wake us (they skip the eventfd write otherwise). */
    while (!atomic_load(&r->stopping)) {
        if (drain_inbox(r))
            r->io_event = true;
        uv_run(&r->loop, UV_RUN_NOWAIT);
        flush_all(r);
        if (!qk_mpsc_empty(&r->inbox))
            continue;
        /* Poll a little before sleeping while the core is ours (spin.h):
         * the next answers are often a few microseconds away. Only after
         * calls or answers moved: a tick alone is no reason to poll. */
        uint64_t until = r->io_event ? qk_spin_until(&r->spin) : 0;
        r->io_event = false;
        bool more = false;
        while (until && !atomic_load(&r->stopping)) {
            r->io_event = false;
            uv_run(&r->loop, UV_RUN_NOWAIT);
            if ((more = r->io_event || !qk_mpsc_empty(&r->inbox)))
                break;
            if (qk_now_ns() >= until)
                break;
        }
        if (until)
            qk_spin_found(&r->spin, more);
        if (more) {
            flush_all(r);
            continue;
        }
        atomic_store_explicit(&r->sleeping, 1, memory_order_seq_cst);
        if (qk_mpsc_empty(&r->inbox) && !atomic_load(&r->stopping))
            uv_run(&r->loop, UV_RUN_ONCE);
        atomic_store_explicit(&r->sleeping, 0, memory_order_relaxed);
    }
    uv_timer_stop(&r->tick);
    /* Stopping: fail what is left, close the connections. */
    drain_inbox(r);
    fail_all(r);
    /* Subscriptions the application still holds are freed by quark_unsubscribe
     * (if it comes) or with the client. */
    r->source = NULL;
    uv_close((uv_handle_t *)&r->wake, NULL);
    uv_close((uv_handle_t *)&r->tick, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    tls_remote = NULL;
}

/* ---- API used by client.c / call.c ---- */

static int add_seed(void *arg, const char *item, size_t len)
{
    qk_remote *r = arg;
    qk_rconn *k = conn_new(r, item, len);
    if (!k)
        return -1;
    k->seed = true;
    r->nseeds++;
    return 0;
}

static int parse_endpoints(qk_remote *r, const char *cs)
{
    if (qk_addr_list_each(cs, add_seed, r) != 0)
        return -1;
    return r->nseeds ? 0 : -1;
}

static void remote_free_conns(qk_remote *r)
{
    for (size_t i = 0; i < r->nconns; i++)
        conn_free(r->conns[i]);
    free(r->conns);
    r->conns = NULL;
    r->nconns = r->conns_cap = r->nseeds = 0;
}

static void remote_free(qk_remote *r)
{
    remote_free_conns(r);
    qk_direct_free(r->direct);
    uv_mutex_destroy(&r->mu);
    uv_cond_destroy(&r->cv);
    uv_mutex_destroy(&r->route_mu);
    free((char *)r->cfg.connection_string);
    free((char *)r->cfg.cluster_id);
    free((char *)r->cfg.client_name);
    free(r);
}

static qk_remote *remote_alloc(const qk_remote_cfg *cfg)
{
    qk_remote *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    uv_mutex_init(&r->mu);
    uv_cond_init(&r->cv);
    uv_mutex_init(&r->route_mu);
    r->cfg = *cfg;
    r->cfg.connection_string = cfg->connection_string ? strdup(cfg->connection_string) : NULL;
    r->cfg.cluster_id = strdup(cfg->cluster_id && *cfg->cluster_id ? cfg->cluster_id : "default");
    r->cfg.client_name = strdup(cfg->client_name ? cfg->client_name : "");
    if ((cfg->connection_string && !r->cfg.connection_string) || !r->cfg.cluster_id ||
        !r->cfg.client_name) {
        remote_free(r);
        return NULL;
    }
    r->max_msg = 4u << 20;
    r->meta[0] = "quark-cluster-id";
    r->meta[1] = r->cfg.cluster_id;
    r->meta[2] = NULL;
    return r;
}

quark_err qk_remote_new(const qk_remote_cfg *cfg, qk_remote **out)
{
    const char *cs = cfg->connection_string ? cfg->connection_string : "localhost:7000";
    qk_remote_cfg c = *cfg;
    c.connection_string = cs;
    qk_remote *r = remote_alloc(&c);
    if (!r)
        return qk_error(QUARK_ENOMEM, "out of memory creating a client");
    if (parse_endpoints(r, cs) != 0) {
        remote_free(r);
        return qk_error(QUARK_EINVAL, "connection string '%s' is not a comma-separated list "
                        "of HOST:PORT", cs);
    }
    r->primary = r->conns[0];
    if (c.direct_sockets > 0) /* NULL: none */
        r->direct = qk_direct_new(r->cfg.cluster_id, r->cfg.client_name, r->max_msg,
                                  c.direct_sockets, c.transport == QUARK_TRANSPORT_GRPC,
                                  c.poll_us);
    *out = r;
    return QUARK_OK;
}

quark_err qk_remote_new_peer(const qk_remote_cfg *cfg, const qk_remote_hooks *hooks,
                             qk_remote **out)
{
    qk_remote_cfg c = *cfg;
    c.connection_string = NULL;
    c.transport = QUARK_TRANSPORT_TCP;
    c.direct_sockets = 0;
    qk_remote *r = remote_alloc(&c);
    if (!r)
        return qk_error(QUARK_ENOMEM, "out of memory creating a silo's peer link");
    r->peer = true;
    r->hooks = *hooks;
    *out = r;
    return QUARK_OK;
}

quark_err qk_remote_connect(qk_remote *r)
{
    if (r->thread_started_)
        return atomic_load(&r->connected) || r->peer
                   ? QUARK_OK
                   : qk_error(QUARK_EUNAVAILABLE, "reconnecting to the cluster: %s",
                              r->first_error);
    qk_mpsc_init(&r->inbox);
    qk_arena_init(&r->arena, 16384);
    if (uv_loop_init(&r->loop) != 0)
        return qk_error(QUARK_ENOMEM, "out of memory connecting");
    uv_async_init(&r->loop, &r->wake, on_wake);
    r->wake.data = r;
    uv_timer_init(&r->loop, &r->tick);
    r->tick.data = r;
    uv_timer_start(&r->tick, on_tick, QK_TICK_MS, QK_TICK_MS);
    r->first_done = 0;
    r->seed_failures = 0;
    r->want_watch = !r->peer && r->cfg.routing != QUARK_ROUTE_PINNED;
    atomic_store(&r->stopping, 0);
    if (r->nseeds) {
        r->cur_seed = 0;
        r->primary = r->conns[0];
    }
    qk_direct_reopen(r->direct);
    if (uv_thread_create(&r->thread, io_main, r) != 0)
        return qk_error(QUARK_ENOMEM, "could not start the client's I/O thread");
    r->thread_started_ = true;
    if (r->peer)
        return QUARK_OK;
    /* Wait until one silo says hello, or every one has failed once. */
    uv_mutex_lock(&r->mu);
    while (r->first_done == 0)
        uv_cond_wait(&r->cv, &r->mu);
    int ok = r->first_done == 1;
    uv_mutex_unlock(&r->mu);
    if (!ok) {
        quark_err rc = qk_error(r->first_code == QUARK_ECLUSTER ? QUARK_ECLUSTER
                                                                : QUARK_EUNAVAILABLE,
                                "no silo answered at %s (last error: %s)",
                                r->cfg.connection_string, r->first_error);
        qk_remote_disconnect(r);
        return rc;
    }
    return QUARK_OK;
}

void qk_remote_disconnect(qk_remote *r)
{
    if (!r->thread_started_)
        return;
    atomic_store(&r->stopping, 1);
    qk_direct_shutdown(r->direct); /* direct calls in progress end now */
    uv_async_send(&r->wake);
    uv_thread_join(&r->thread);
    r->thread_started_ = false;
    atomic_store(&r->connected, 0);
    uv_loop_close(&r->loop);
    /* Back to the seeds: connections learnt from views are forgotten. */
    for (size_t i = r->nconns; i-- > 0;) {
        qk_rconn *k = r->conns[i];
        free(k->in);
        free(k->out);
        free(k->wbuf);
        k->in = k->out = k->wbuf = NULL;
        k->in_len = k->in_cap = k->out_len = k->out_cap = k->wbuf_cap = 0;
        k->state = RC_IDLE;
        k->failures = 0;
        k->reconnect_at_ms = 0;
        k->member = false;
        k->silo_id[0] = '\0';
        k->next_id = 0;
        conn_drop_lanes(k);
        if (!k->seed) {
            r->conns[i] = r->conns[--r->nconns];
            conn_free(k);
        }
    }
    qk_view_unref(r->view);
    r->view = NULL;
    publish_view(r);
    r->source = NULL;
    r->primary = r->nseeds ? r->conns[0] : NULL;
    publish_primary(r);
    qk_dlheap_destroy(&r->heap);
    qk_arena_destroy(&r->arena);
}

void qk_remote_free(qk_remote *r)
{
    if (!r)
        return;
    qk_remote_disconnect(r);
    while (r->all_subs)
        rsub_free(r, r->all_subs);
    remote_free(r);
}

int qk_remote_connected(const qk_remote *r)
{
    return atomic_load(&((qk_remote *)r)->connected);
}

/* Build a call: the whole REQUEST frame, ready to go. */
static qk_rcall *make_call(qk_remote *r, quark_ref *ref, const quark_interface *iface,
                           unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                           quark_err *err)
{
    const quark_method_desc *md = &iface->methods[method];
    size_t args_len = qk_msg_size(md, QK_IN, req);
    if (args_len > r->max_msg) {
        *err = qk_error(QUARK_ETOOBIG, "the request of %s is %zu bytes, over the maximum "
                        "message size of %zu", md->name, args_len, r->max_msg);
        return NULL;
    }
    size_t mlen = strlen(md->name);
    size_t len = qk_wire_request_size(ref->id_len, ref->type_len, mlen, args_len, deadline_ms);
    qk_rcall *c = malloc(sizeof *c + QK_FRAME_HEADER + len);
    if (!c) {
        *err = qk_error(QUARK_ENOMEM, "out of memory making a call");
        return NULL;
    }
    memset(c, 0, sizeof *c);
    qk_frame_header(c->frame, QK_FRAME_REQUEST, 0, len);
    qk_wire_encode_request(c->frame + QK_FRAME_HEADER, ref->data, ref->id_len, ref->type_name,
                           ref->type_len, md->name, mlen, md, req, args_len, deadline_ms);
    c->len = QK_FRAME_HEADER + len;
    c->idempotent = (md->flags & QUARK_METHOD_IDEMPOTENT) != 0;
    c->reply_desc = md->output;
    c->md = md;
    c->method = md->name;
    c->hash = ref->hash;
    c->has_hash = true;
    c->dl.at_ms = qk_now_ms_coarse() + deadline_ms;
    return c;
}

static void submit(qk_remote *r, qk_rcall *c)
{
    if (tls_remote == r) { /* from a callback on the I/O thread: no queue, no wake */
        if (c->dl.at_ms)
            qk_dlheap_insert(&r->heap, &c->dl);
        send_call(r, c);
        return;
    }
    qk_mpsc_push(&r->inbox, &c->qnode);
    if (atomic_load_explicit(&r->sleeping, memory_order_seq_cst))
        uv_async_send(&r->wake);
}

/* The silo a direct call goes to, from what the I/O thread published;
 * false if not known (then the call goes the multiplexed way). */
static bool direct_route(qk_remote *r, uint64_t hash, char *addr, size_t cap)
{
    bool ok = false;
    uv_mutex_lock(&r->route_mu);
    qk_view *v = r->pub_view;
    if (r->cfg.routing != QUARK_ROUTE_PINNED && v) {
        int o = qk_view_owner(v, hash);
        if (o >= 0 && o != v->self && strlen(v->members[o].addr) < cap) {
            strcpy(addr, v->members[o].addr);
            ok = true;
        }
    } else if (r->pub_primary[0] && strlen(r->pub_primary) < cap) {
        strcpy(addr, r->pub_primary);
        ok = true;
    }
    uv_mutex_unlock(&r->route_mu);
    return ok;
}

/* Try call c on a socket of the calling thread's own (direct.h). Returns
 * true when the call is over (its outcome in *rc and *reply); false when it
 * must go the multiplexed way (c is then still ours). */
static bool direct_call(qk_remote *r, qk_rcall *c, quark_ref *ref, ProtobufCMessage **reply,
                        quark_err *rc)
{
    char addr[QK_ADDR_MAX];
    if (!r->direct || atomic_load(&r->stopping) || !direct_route(r, c->hash, addr, sizeof addr))
        return false;
    qk_dsock *held = NULL;
    qk_dc_result res;
    qk_dc_status st = qk_direct_call(r->direct, addr, c->hash, c->frame, c->len, c->dl.at_ms,
                                     &held, &res);
    unsigned max = r->cfg.retry.max_attempts ? r->cfg.retry.max_attempts : 1;
    switch (st) {
    case QK_DC_NOT_SENT:
        return false;
    case QK_DC_ANSWERED: {
        if (res.grpc_status) { /* (gRPC) the status says it all */
            res.resp.error_code = (int32_t)qk_grpc_err_of(res.grpc_status);
            res.resp.actor_error = false;
            res.resp.error_message.p = res.why;
            res.resp.error_message.n = strlen(res.why);
        }
        quark_err err = (quark_err)res.resp.error_code;
        if (err == QUARK_EUNAVAILABLE && !res.resp.actor_error && max > 1) {
            /* It did not run (ownership moving, silo stopping): once more,
             * the multiplexed way, after a backoff. */
            qk_direct_release(r->direct, held);
            c->attempts = 1;
            c->retry_at_ms = qk_now_ms_coarse() + backoff_of(r, 1);
            return false;
        }
        if (err != QUARK_OK) {
            const qk_wire_str *m = &res.resp.error_message;
            *rc = m->n ? qk_error(err, "%.*s", (int)m->n, (const char *)m->p)
                       : qk_error(err, "%s", quark_strerror(err));
        } else if (reply) {
            *reply = protobuf_c_message_unpack(c->reply_desc, NULL, res.resp.result_len,
                                               res.resp.result);
            *rc = *reply ? QUARK_OK
                         : qk_error(QUARK_EPROTO, "the reply of %s could not be decoded as %s",
                                    c->method, c->reply_desc->name);
            if (*reply)
                qk_error_clear();
        } else {
            *rc = QUARK_OK;
            qk_error_clear();
        }
        qk_direct_release(r->direct, held);
        break;
    }
    case QK_DC_LOST:
        if (c->idempotent && max > 1) {
            c->attempts = 1; /* safe to run again */
            return false;
        }
        *rc = qk_error(QUARK_EUNKNOWN, "connection to %s lost (%s) after %s was sent: its "
                       "outcome is unknown (not retried: the method is not @quark.idempotent)",
                       addr, res.why, c->method);
        break;
    case QK_DC_TIMEOUT:
    default:
        *rc = qk_error(QUARK_ETIMEDOUT, "deadline exceeded: %s '%s' did not reply to %s in "
                       "time", ref->type_name, ref->data, c->method);
        break;
    }
    free(c);
    return true;
}

quark_err qk_remote_call(qk_remote *r, quark_ref *ref, const quark_interface *iface,
                         unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                         ProtobufCMessage **reply)
{
    if (tls_remote == r)
        return qk_error(QUARK_EWOULDBLOCK, "blocking call from a client callback would stall "
                        "the client's I/O thread: use the _async form");
    quark_err err = QUARK_OK;
    qk_rcall *c = make_call(r, ref, iface, method, req, deadline_ms, &err);
    if (!c)
        return err;
    if (direct_call(r, c, ref, reply, &err))
        return err;
    qk_waiter *wt = qk_waiter_new();
    if (!wt) {
        free(c);
        return qk_error(QUARK_ENOMEM, "out of memory making a call");
    }
    c->answer = &wt->op;
    uint64_t at = c->dl.at_ms;
    submit(r, c);
    return qk_waiter_finish(wt, at + 50, true, iface->methods[method].output, reply, ref->type_name,
                            ref->data, iface->methods[method].name);
}

quark_err qk_remote_call_async(qk_remote *r, quark_ref *ref, const quark_interface *iface,
                               unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                               quark__trampoline_fn tramp, void (*fn)(void), void *arg)
{
    quark_err err = QUARK_OK;
    qk_rcall *c = make_call(r, ref, iface, method, req, deadline_ms, &err);
    if (!c)
        return err;
    qk_op_init(&c->own, callback_done, NULL, QK_OP_LEND, NULL, 0);
    c->answer = &c->own;
    c->tramp = tramp;
    c->fn = fn;
    c->arg = arg;
    submit(r, c);
    return QUARK_OK;
}

quark_err qk_remote_subscribe(qk_remote *r, const char *type, const char *id, quark_event_fn fn,
                              void *arg, qk_rsub **out)
{
    size_t idl = strlen(id);
    if (idl == 0 || idl > QUARK_ID_MAX)
        return qk_error(QUARK_EINVAL, "actor id must be 1..%d bytes (got %zu)", QUARK_ID_MAX, idl);
    Quark__StreamRequest sr = QUARK__STREAM_REQUEST__INIT;
    sr.actor_id = (char *)id;
    sr.actor_type = (char *)type;
    size_t len = protobuf_c_message_get_packed_size(&sr.base);
    qk_rsub *rs = calloc(1, sizeof *rs);
    qk_rcall *c = calloc(1, sizeof *c + QK_FRAME_HEADER + len);
    if (!rs || !c) {
        free(rs);
        free(c);
        return qk_error(QUARK_ENOMEM, "out of memory subscribing");
    }
    qk_frame_header(c->frame, QK_FRAME_SUBSCRIBE, 0, len);
    protobuf_c_message_pack(&sr.base, c->frame + QK_FRAME_HEADER);
    c->len = QK_FRAME_HEADER + len;
    c->kind = RC_OP_SUB;
    c->rsub = rs;
    c->method = "StreamActorEvents";
    /* Events are published where the actor lives: subscribe at its owner. */
    c->hash = qk_key_hash(qk_type_name_hash(type, strlen(type)), id, idl);
    c->has_hash = true;
    rs->env = c;
    rs->owner = r;
    rs->fn = fn;
    rs->arg = arg;
    submit(r, c);
    *out = rs;
    return QUARK_OK;
}

void qk_remote_unsubscribe(qk_rsub *rs)
{
    qk_rcall *c = calloc(1, sizeof *c);
    if (!c)
        return; /* the subscription keeps running until the client is freed */
    c->kind = RC_OP_UNSUB;
    c->rsub = rs;
    submit(rs->owner, c);
}

/* ---- peer mode ---- */

void qk_remote_gossip(qk_remote *r, const char *addr, const uint8_t *p, size_t n,
                      uint32_t timeout_ms)
{
    qk_rcall *c = calloc(1, sizeof *c + QK_FRAME_HEADER + n);
    if (!c)
        return;
    c->target = strdup(addr);
    if (!c->target) {
        free(c);
        return;
    }
    qk_frame_header(c->frame, QK_FRAME_GOSSIP, 0, n);
    memcpy(c->frame + QK_FRAME_HEADER, p, n);
    c->len = QK_FRAME_HEADER + n;
    c->kind = RC_OP_GOSSIP;
    c->method = "gossip";
    qk_op_init(&c->own, gossip_done, NULL, QK_OP_LEND, NULL, 0);
    c->answer = &c->own;
    c->dl.at_ms = qk_now_ms_coarse() + timeout_ms;
    qk_dlheap_insert(&r->heap, &c->dl);
    send_call(r, c);
}

quark_err qk_remote_forward(qk_remote *r, qk_op *answer, const qk_msg *m, const char *owner,
                            uint32_t deadline_ms)
{
    const qk_type_entry *e = m->type;
    const char *method = e->iface->methods[m->method].name;
    size_t mlen = strlen(method);
    size_t len = qk_wire_forward_size(m->id_len, e->name_len, mlen, m->args_len, deadline_ms,
                                      m->chain, m->chain_len, m->hops + 1u);
    qk_rcall *c = malloc(sizeof *c + QK_FRAME_HEADER + len);
    char *target = c ? strdup(owner) : NULL;
    if (!c || !target) {
        free(c);
        free(target);
        return qk_error(QUARK_ENOMEM, "out of memory forwarding a call");
    }
    memset(c, 0, sizeof *c);
    qk_frame_header(c->frame, QK_FRAME_REQUEST, 0, len);
    qk_wire_encode_forward(c->frame + QK_FRAME_HEADER, m->id, m->id_len, e->name, e->name_len,
                           method, mlen, m->args, m->args_len, deadline_ms, m->chain,
                           m->chain_len, m->hops + 1u);
    c->len = QK_FRAME_HEADER + len;
    c->kind = RC_OP_FWD;
    c->target = target;
    c->answer = answer;
    c->idempotent = (e->iface->methods[m->method].flags & QUARK_METHOD_IDEMPOTENT) != 0;
    c->method = method;
    c->hash = m->hash;
    c->has_hash = true;
    c->dl.at_ms = qk_now_ms_coarse() + deadline_ms;
    submit(r, c);
    return QUARK_OK;
}
