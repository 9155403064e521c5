/*
 * server.h - a silo's network side: listeners, connections, and the two
 * protocols spoken on one port (Quark's TCP framing and gRPC).
 *
 * Every worker listens on the silo's port through its own SO_REUSEPORT
 * socket, so the kernel spreads connections over the workers and each
 * connection lives on one worker loop: reading, decoding, and writing
 * answers happen there without locks. A call decoded from a connection
 * starts with qk_invoke (runtime/ports.h) and a call record of the
 * connection's (conn.c) whose op has the connection's worker as its home:
 * an answer made there is written at once; one made on another worker
 * comes back to it first.
 *
 * The files:
 *   server.c       the listener: binding, per-worker listening sockets and
 *                  accepting, moving a connection to another worker, the
 *                  stop phases; the listener port the runtime calls
 *   conn.c         a connection: lifetime, input, output and writing,
 *                  answers of calls and events of subscriptions
 *   server_tcp.c   Quark's TCP protocol (frame.h) on a connection
 *   server_grpc.c  gRPC (HTTP/2 through grpc_codec.h) on a connection
 * The first bytes tell the protocols apart: "QRK1" is Quark's TCP protocol,
 * the HTTP/2 preface "PRI * HTTP/2.0" is gRPC. Anything else is closed.
 *
 * What the server needs of the cluster (gossip, views, status) it asks
 * through a control table (qk_server_control) that the composition root
 * plugs in: the server calls no cluster code by name.
 */
#ifndef QK_SERVER_H
#define QK_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "runtime/runtime.h"

typedef struct qk_server qk_server;
typedef struct qk_conn qk_conn;

/* ---- what the rest of Quark sees (root/silo.c, cluster/cluster.c) ---- */

/* What the server asks of the cluster. Any worker thread; the buffers
 * returned are malloc'd (the server frees them). */
typedef struct qk_server_control {
    void *arg;
    /* A peer's GOSSIP (a ClusterView): this silo's answer, or NULL with *why. */
    uint8_t *(*gossip)(void *arg, const uint8_t *p, size_t n, size_t *len, const char **why);
    /* The view for clients (WatchCluster) as worker w routes by it; NULL
     * while there is none yet (one is pushed when it comes). */
    uint8_t *(*view)(void *arg, qk_worker *w, size_t *len);
    /* This silo's SiloStatus; NULL if it has none to give. */
    uint8_t *(*status)(void *arg, size_t *len);
    /* The name this silo goes by in views (HELLO_OK's silo_id). */
    const char *(*self_name)(void *arg);
} qk_server_control;

/* A server for silo s (opts.listen set); nothing is bound yet. */
quark_err qk_server_new(quark_silo *s, qk_server **out);
/* Bind one listening socket per worker to opts.listen (port 0: a free
 * one, the same for all). Before the workers start. */
quark_err qk_server_bind(qk_server *srv);
int qk_server_port(const qk_server *srv); /* the bound port, 0 before */
void qk_server_set_control(qk_server *srv, const qk_server_control *ctl);
/* The listener port (ports.h) to plug into the silo, with srv as self. */
extern const qk_listener_ops qk_server_listener;
/* On worker w: send the current view to w's watching connections. */
void qk_server_push_view(qk_server *srv, qk_worker *w);
/* After the silo stopped (or never started). */
void qk_server_free(qk_server *srv);

/* ---- inside the server ---- */

#define QK_READ_CHUNK 65536

/* What a worker holds of the server. Touched by that worker only. */
typedef struct qk_srv_worker {
    uv_tcp_t *listener;           /* its listening socket, or NULL */
    qk_conn *conns;               /* all its connections */
    qk_conn *dirty;               /* connections with output to write */
    uv_timer_t *sweep;            /* closes connections past their timeouts */
} qk_srv_worker;

struct qk_server {
    quark_silo *silo;
    int port;
    int *listen_fds;              /* one SO_REUSEPORT socket per worker, until adopted */
    qk_srv_worker *pw;            /* [silo->nworkers] */
    qk_server_control ctl;
    _Atomic unsigned nconns;      /* open connections, all workers (max_connections) */
};

/* A protocol spoken on a connection (server_tcp.c, server_grpc.c). */
typedef struct qk_proto_ops {
    const char *name;
    /* Consume what is in c->in (it may leave a partial frame there). */
    void (*input)(qk_conn *c);
    /* Answer call `id`: err/actor_error/errmsg, or the encoded result;
     * where: the silo that ran it, when this one forwarded it (NULL: not
     * said; ActorInvocationResponse.location). */
    void (*respond)(qk_conn *c, uint64_t id, quark_err err, const char *errmsg,
                    const uint8_t *result, size_t len, bool actor_error, const char *where);
    /* An event for subscription `sub_id` (an encoded ActorEvent). */
    void (*event)(qk_conn *c, uint64_t sub_id, const uint8_t *ev, size_t len);
    /* The silo ended subscription `sub_id` (it is stopping). */
    void (*stream_end)(qk_conn *c, uint64_t sub_id, quark_err err, const char *why);
    /* A view for the connection's WatchCluster / WATCH stream. */
    void (*send_view)(qk_conn *c, const uint8_t *v, size_t n);
    /* The connection was moved to this worker (qk_server_move_conn) with
     * the bytes in c->in still to read: say what is due first, or NULL. */
    void (*adopted)(qk_conn *c);
    /* The silo ends the connection (err, why: a timeout, a limit): its
     * last words, then it closes. */
    void (*goaway)(qk_conn *c, quark_err err, const char *why);
    /* Stop phase 2: last words before the connection closes, or NULL. */
    void (*stop)(qk_conn *c);
    /* The connection closes: free the protocol's state, or NULL. */
    void (*close)(qk_conn *c);
} qk_proto_ops;

extern const qk_proto_ops qk_proto_tcp;
extern const qk_proto_ops qk_proto_grpc;

struct qk_srv_call;
struct qk_grpc_server;

struct qk_conn {
    uv_tcp_t tcp;
    qk_worker *w;
    qk_server *srv;
    const qk_proto_ops *proto;     /* NULL until the first bytes told */
    qk_conn *next, *prev;          /* the worker's connections */
    qk_conn *dirty_next;
    bool dirty;
    bool closing;
    bool hello_done;               /* TCP: HELLO answered */
    bool hint_done;                /* gRPC: the worker hint was looked for */
    bool writing;
    bool close_after_write;
    bool in_recv;                  /* gRPC: inside the session's recv: no pumping */
    bool watching;                 /* wants the cluster's views (WATCH / WatchCluster) */
    bool over_limit;               /* accepted past max_connections: told so, closed */
    bool member;                   /* TCP: proved the cluster key (AUTH) */
    uint8_t challenge[32];         /* TCP: HELLO_OK's, for AUTH (QK_AUTH_CHALLENGE) */
    uint8_t paused;                /* why it is not read (QK_PAUSE_*), 0: it is */
    uint32_t refs;                 /* the socket + calls in flight + subscribers */
    uint32_t inflight;             /* calls read and not yet answered */
    uint64_t opened_ms;            /* accepted (the handshake's clock) */
    uint64_t last_in_ms;           /* bytes last read (the idle clock) */
    uint64_t partial_ms;           /* TCP: since when a frame is half read, 0: none
                                    * (gRPC: qk_conn_grpc_partial_ms) */
    uint64_t discard;              /* TCP: bytes of an oversized frame still to skip */
    uint64_t watch_id;             /* its frame id, or gRPC stream id */
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;                  /* appended output */
    size_t out_len, out_cap;
    uint8_t *wbuf;                 /* being written */
    size_t wbuf_cap;
    uv_write_t wreq;
    qk_sub *subs;                  /* its event subscriptions (qk_sub.ctx_next) */
    struct qk_srv_call *free_calls;/* call records to reuse */
    struct qk_grpc_server *grpc;   /* gRPC: the connection's HTTP/2 session */
};

/* Why a connection is not read: its peer leaves its answers unread, it
 * has max_connection_calls calls in flight, the silo is stopping. */
enum { QK_PAUSE_OUTPUT = 1, QK_PAUSE_CALLS = 2, QK_PAUSE_STOP = 4 };

/* conn.c */
void qk_conn_init(qk_conn *c, qk_server *srv, qk_worker *w);
void qk_conn_pause(qk_conn *c, unsigned why);
void qk_conn_unpause(qk_conn *c, unsigned why); /* reads again once no reason is left */
/* At max_connection_calls: pause it (QK_PAUSE_CALLS) and say so; the
 * protocols stop taking requests from it (the rest of its input waits). */
bool qk_conn_full(qk_conn *c);
/* At the flush: a connection paused for its calls in flight that has half
 * of them answered takes the input it had left and reads again. */
void qk_conn_resume_input(qk_conn *c);
/* A connection accepted (or adopted) on w: start reading. */
void qk_conn_start(qk_conn *c);
void qk_conn_unref(qk_conn *c);
void qk_conn_close(qk_conn *c);
void qk_conn_closed_cb(uv_handle_t *h); /* uv_close callback of a conn's socket */
/* Append n bytes of output (false: out of memory, the connection closed). */
bool qk_conn_reserve(qk_conn *c, size_t n);
void qk_conn_mark_dirty(qk_conn *c);
void qk_conn_write(qk_conn *c);        /* write the pending output (end of batch) */
/* Once nothing is left to write: close if the connection was told to. */
void qk_conn_close_when_written(qk_conn *c);
/* Decode request p[0..n) and start the call; its answer goes to
 * c->proto->respond (both protocols). timeout_ms 0: none besides the
 * request's own. */
void qk_conn_invoke(qk_conn *c, uint64_t id, const uint8_t *p, size_t n, uint64_t timeout_ms);
/* Subscribe the connection to (type, id) under `sub_id`; QUARK_OK, or the
 * error (quark_last_error()) to tell the subscriber. */
quark_err qk_conn_subscribe(qk_conn *c, uint64_t sub_id, const char *type, const char *id);
void qk_conn_unsubscribe(qk_conn *c, uint64_t sub_id);
/* Start the connection's view stream under `id` (WATCH / WatchCluster). */
void qk_conn_watch(qk_conn *c, uint64_t id);

/* server_tcp.c: with a cluster key, whether c proved it (else c is told
 * and logged that `what` needs it, and closes). */
bool qk_conn_cluster_member(qk_conn *c, const char *what);

/* server_grpc.c: the connection's HTTP/2 handshake is done. */
bool qk_conn_grpc_ready(const qk_conn *c);
/* server_grpc.c: since when its oldest request is half received, 0: none. */
uint64_t qk_conn_grpc_partial_ms(const qk_conn *c);

/* server.c */
/* Hand c's socket, with the bytes still to handle, to worker `to`; false
 * if it cannot move (then it stays here). */
bool qk_server_move_conn(qk_conn *c, unsigned to, const uint8_t *rest, size_t n);

#endif /* QK_SERVER_H */
