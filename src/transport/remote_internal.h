/*
 * remote_internal.h - what the files of the cluster client's machinery share
 * (remote.c's design note says how it works).
 *
 *   remote.c        call tables, completing calls, sending, the I/O thread,
 *                   creating / connecting / disconnecting a remote
 *   remote_conn.c   one connection to one silo: connect, HELLO, read, write,
 *                   lose it (and what happens to its calls)
 *   remote_route.c  where a call goes: the view, lanes, the watched silo
 *   client.c        the client API (and backend table) on top
 *   peer.c          the silo-to-silo peer link API on top
 *
 * Everything here runs on the remote's I/O thread unless it says otherwise.
 */
#ifndef QK_REMOTE_INTERNAL_H
#define QK_REMOTE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

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
#include "transport/view_codec.h"

#define QK_TICK_MS 5
#define QK_CONNECT_TIMEOUT_MS 3000

enum { RC_OP_CALL = 0, RC_OP_SUB, RC_OP_UNSUB, RC_OP_WATCH, RC_OP_GOSSIP, RC_OP_FWD };

struct qk_rsub {
    struct qk_rcall *env;         /* the SUBSCRIBE envelope while active */
    quark_event_fn fn;
    void *arg;
    bool ended;                   /* its final callback ran */
    bool released;                /* the application let go (quark_unsubscribe) */
    struct qk_remote *owner;
    struct qk_rsub *all_next;
};

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
    uint64_t last_in_ms;          /* bytes last read (keepalive) */
    uint64_t pinged_ms;           /* a keepalive PING was sent then, 0: none since */
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

#define QK_LOC_SLOTS 16384 /* 128 KiB */

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
    uint32_t pub_gen;             /* its generation (view_gen when published) */
    char pub_primary[QK_ADDR_MAX];/* the primary while it is READY, else "" */
    /* Where actors live that do not live on their placement owner (the
     * cluster's directory is in a server, not the ring): the silo that ran
     * a call another silo forwarded, as the answer told (its location). A
     * slot packs the key's top 40 bits, the member's index in the view and
     * that view's generation (12 bits each); it holds for that view only.
     * Two ways per set. Written and read by the I/O thread and by direct
     * callers, lock-free (a stale slot only costs one more hop). Clients
     * only (NULL in a peer link, or out of memory). */
    uint32_t view_gen;            /* of r->view (I/O thread) */
    _Atomic uint64_t *loc;        /* QK_LOC_SLOTS */
};

/* The remote whose I/O thread this is (NULL on any other thread). */
extern QK_TLS qk_remote *qk_rm_tls;

/* ---- remote.c: call tables, completing calls, sending, the I/O thread, lifecycle ---- */

qk_rcall *qk_rm_table_find(qk_rconn *k, uint64_t id);
qk_rcall *qk_rm_table_take(qk_rconn *k, uint64_t id);
qk_rcall *qk_rm_table_take_any(qk_rconn *k);
void qk_rm_rcall_free(qk_rcall *c);
void qk_rm_complete_ex(qk_remote *r, qk_rcall *c, quark_err err, bool actor_error,
                       const char *errmsg, const uint8_t *result, size_t len);
void qk_rm_complete(qk_remote *r, qk_rcall *c, quark_err err, const char *errmsg,
                    const uint8_t *result, size_t len);
void qk_rm_sub_end(qk_rsub *rs, quark_err why, const char *msg);
uint64_t qk_rm_backoff_of(const qk_remote *r, unsigned failures);
void qk_rm_send_on(qk_rconn *k, qk_rcall *c);
void qk_rm_send_call(qk_remote *r, qk_rcall *c);
void qk_rm_retry_later(qk_remote *r, qk_rcall *c);
void qk_rm_resend(qk_remote *r, qk_rcall *list, const char *gone);
void qk_rm_submit(qk_remote *r, qk_rcall *c);

/* ---- remote_conn.c: connections (connect, HELLO, reading, writing, losing one) ---- */

qk_rconn *qk_rm_conn_new(qk_remote *r, const char *addr, size_t len);
qk_rconn *qk_rm_conn_get(qk_remote *r, const char *addr);
void qk_rm_conn_free(qk_rconn *k);
void qk_rm_conn_free_if_unused(qk_rconn *k);
void qk_rm_conn_drop_lanes(qk_rconn *k);
void qk_rm_ensure_connecting(qk_rconn *k);
int qk_rm_out_append(qk_rconn *k, const uint8_t *p, size_t n);
void qk_rm_flush_all(qk_remote *r);
void qk_rm_on_tcp_closed(uv_handle_t *h);
void qk_rm_conn_lost(qk_rconn *k, const char *why);
void qk_rm_keepalive(qk_rconn *k, uint64_t now); /* on the tick */
void qk_rm_start_connect(qk_rconn *k);

/* ---- remote_route.c: where calls go (views, lanes, the watched silo, the primary) ---- */

qk_rconn *qk_rm_route(qk_remote *r, qk_rcall *c, const char **why);
void qk_rm_publish_view(qk_remote *r);
void qk_rm_publish_primary(qk_remote *r);
void qk_rm_set_view(qk_remote *r, qk_view *v);
/* The member of view v (generation gen) that ran the last call for key
 * `hash` a silo forwarded (-1: not known): where its next calls go. */
int qk_rm_located(const qk_remote *r, const qk_view *v, uint32_t gen, uint64_t hash);
/* Forget where the actor of `hash` lives (its silo said the call did not
 * run there): the next call goes by the ring again. */
void qk_rm_unlocate(qk_remote *r, uint64_t hash);
/* A response told where the call for `hash` ran (location p[0..n)). */
void qk_rm_locate(qk_remote *r, const qk_view *v, uint32_t gen, uint64_t hash, const char *p,
                  size_t n);
void qk_rm_pick_source(qk_remote *r);
void qk_rm_handle_view(qk_rconn *k, qk_rcall *c, const uint8_t *p, size_t n);
void qk_rm_watch_ended(qk_rconn *k, qk_rcall *c);

#endif /* QK_REMOTE_INTERNAL_H */
