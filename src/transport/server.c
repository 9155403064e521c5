/*
 * server.c - the silo's network side: listeners, connections, TCP protocol.
 *
 * Every worker listens on the silo's port through its own SO_REUSEPORT
 * socket, so the kernel spreads connections over the workers and each
 * connection lives on one worker loop: reading, decoding, and writing
 * answers happen there without locks. A call decoded from a connection is an
 * ordinary CALL message (reply kind QK_RK_NET) sent to the worker that owns
 * the actor; its answer comes back to the connection's worker as a NETOUT
 * message (or is written at once when both are the same worker).
 *
 * The first bytes tell the protocols apart: "QRK1" is Quark's TCP protocol
 * (frame.h), the HTTP/2 preface "PRI * HTTP/2.0" is gRPC. Anything else is
 * closed. Output is coalesced: answers are appended to a per-connection
 * buffer and written once per loop batch (qk_server_flush). A peer that
 * does not read its answers stops being read (backpressure) instead of
 * growing the silo's memory.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "quark/actor_service.pb-c.h"
#include "core/addr.h"
#include "core/buf.h"
#include "runtime/runtime.h"
#include "transport/frame.h"
#include "transport/grpc_codec.h"
#include "transport/wire.h"
#include "cluster/cluster.h"

#define QK_READ_CHUNK 65536

enum { QK_PROTO_DETECT = 0, QK_PROTO_TCP = 1, QK_PROTO_GRPC = 2 };

typedef struct qk_conn {
    uv_tcp_t tcp;
    qk_worker *w;
    struct qk_conn *next, *prev;   /* the worker's connections */
    struct qk_conn *dirty_next;
    bool dirty;
    bool closing;
    bool hello_done;
    bool hint_done;                /* gRPC: the worker hint was looked for */
    bool read_paused;
    bool writing;
    bool close_after_write;
    uint8_t proto;
    uint32_t refs;                 /* the socket + calls in flight; owner worker only */
    uint64_t discard;              /* bytes of an oversized frame still to skip */
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;                  /* appended answers */
    size_t out_len, out_cap;
    uint8_t *wbuf;                 /* being written */
    size_t wbuf_cap;
    uv_write_t wreq;
    qk_sub *subs;                  /* its event subscriptions */
    struct qk_srv_call *free_calls;/* call records to reuse (they hold no reference) */
    qk_grpc_server *grpc;          /* the HTTP/2 session of a gRPC connection */
    bool in_recv;                  /* inside qk_grpc_server_recv: no flushing */
    bool watching;                 /* wants the cluster's views (WATCH / WatchCluster) */
    uint64_t watch_id;             /* its frame id, or gRPC stream id */
} qk_conn;

/* ---- binding (silo start, main thread) ---- */

static int open_listener(const struct sockaddr *sa, socklen_t salen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, sa, salen) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

quark_err qk_server_bind(quark_silo *s)
{
    if (!s->opts.listen)
        return QUARK_OK;
    qk_addr la;
    if (qk_addr_parse(s->opts.listen, strlen(s->opts.listen), &la) != 0)
        return qk_error(QUARK_EINVAL, "listen address '%s' is not HOST:PORT", s->opts.listen);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(la.host, la.port, &hints, &ai);
    if (gai != 0 || !ai)
        return qk_error(QUARK_EINVAL, "cannot resolve listen host '%s': %s", la.host,
                        gai_strerror(gai));
    s->listen_fds = calloc(s->nworkers, sizeof *s->listen_fds);
    if (!s->listen_fds) {
        freeaddrinfo(ai);
        return qk_error(QUARK_ENOMEM, "out of memory binding");
    }
    struct sockaddr_storage ss;
    socklen_t sl = (socklen_t)ai->ai_addrlen;
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    for (unsigned i = 0; i < s->nworkers; i++) {
        int fd = open_listener((struct sockaddr *)&ss, sl);
        if (fd < 0) {
            int e = errno;
            for (unsigned j = 0; j < i; j++)
                close(s->listen_fds[j]);
            free(s->listen_fds);
            s->listen_fds = NULL;
            return qk_error(QUARK_EUNAVAILABLE, "cannot listen on %s: %s", s->opts.listen,
                            strerror(e));
        }
        s->listen_fds[i] = fd;
        if (i == 0) { /* port 0: every other socket joins the chosen port */
            struct sockaddr_storage bound;
            socklen_t bl = sizeof bound;
            getsockname(fd, (struct sockaddr *)&bound, &bl);
            int p = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                                : ntohs(((struct sockaddr_in *)&bound)->sin_port);
            s->port = p;
            if (ss.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)p);
            else
                ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)p);
        }
    }
    return QUARK_OK;
}

int quark_silo_port(const quark_silo *s)
{
    return s ? s->port : 0;
}

/* ---- connection lifetime ---- */

/* The state of one call read from a connection, until its answer is
 * written: the call's op (home: the connection's worker; answers made there
 * are written at once, lent), the request id to answer, room for a small
 * answer. Recycled by the connection. */
typedef struct qk_srv_call {
    qk_op op;
    struct qk_conn *conn;
    uint64_t id;
    struct qk_srv_call *next_free;
    uint8_t space[QK_ANSWER_SPACE];
} qk_srv_call;

static void conn_unref(qk_conn *c)
{
    if (--c->refs == 0) {
        while (c->free_calls) {
            qk_srv_call *sc = c->free_calls;
            c->free_calls = sc->next_free;
            free(sc);
        }
        free(c->in);
        free(c->out);
        free(c->wbuf);
        free(c);
    }
}

qk_worker *qk_conn_worker(const qk_conn *c)
{
    return c->w;
}

static void on_conn_closed(uv_handle_t *h)
{
    qk_conn *c = (qk_conn *)h;
    conn_unref(c); /* the socket's reference */
}

static void conn_close(qk_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    qk_worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    for (qk_sub *s = c->subs; s; s = s->conn_next)
        qk_net_unsubscribe(w, s); /* each comes back as SUBFREE */
    if (c->grpc) {
        qk_grpc_server *g = c->grpc;
        c->grpc = NULL; /* its on_cancel calls see a closing connection */
        qk_grpc_server_free(g);
    }
}

/* ---- output ---- */

static int out_reserve(qk_conn *c, size_t n)
{
    return qk_buf_reserve(&c->out, &c->out_cap, c->out_len, n, 4096);
}

static void mark_dirty(qk_conn *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->dirty_next = c->w->dirty_conns;
        c->w->dirty_conns = c;
    }
    if (!c->read_paused && c->out_len > c->w->silo->opts.max_output_buffer) {
        c->read_paused = true; /* the peer does not read: stop reading it */
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

/* Append one frame: header + a packed protobuf message. */
static void send_frame(qk_conn *c, uint8_t type, uint64_t id, const ProtobufCMessage *msg)
{
    if (c->closing)
        return;
    size_t len = msg ? protobuf_c_message_get_packed_size(msg) : 0;
    if (out_reserve(c, QK_FRAME_HEADER + len) != 0) {
        conn_close(c);
        return;
    }
    qk_frame_header(c->out + c->out_len, type, id, len);
    if (msg)
        protobuf_c_message_pack(msg, c->out + c->out_len + QK_FRAME_HEADER);
    c->out_len += QK_FRAME_HEADER + len;
    mark_dirty(c);
}

static void on_written(uv_write_t *req, int status);
static void conn_resume_read(qk_conn *c);

static void maybe_resume_read(qk_conn *c)
{
    if (!c->closing && c->read_paused && c->out_len < c->w->silo->opts.max_output_buffer / 4) {
        c->read_paused = false;
        conn_resume_read(c);
    }
}

/* Write the pending output: at once if the socket takes it all (the common
 * case; uv_write would also change the epoll registration twice per write),
 * else the rest through uv_write. */
static void start_write(qk_conn *c)
{
    if (c->writing || c->closing || c->out_len == 0)
        return;
    uv_buf_t all = uv_buf_init((char *)c->out, (unsigned)c->out_len);
    int nw = uv_try_write((uv_stream_t *)&c->tcp, &all, 1);
    if (nw < 0 && nw != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    size_t done = nw > 0 ? (size_t)nw : 0;
    if (done == c->out_len) {
        c->out_len = 0;
        if (c->close_after_write)
            conn_close(c);
        else
            maybe_resume_read(c);
        return;
    }
    size_t len = qk_buf_swap(&c->out, &c->out_cap, &c->out_len, &c->wbuf, &c->wbuf_cap);
    uv_buf_t buf = uv_buf_init((char *)c->wbuf + done, (unsigned)(len - done));
    c->writing = true;
    c->refs++;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) {
        c->writing = false;
        c->refs--;
        conn_close(c);
    }
}

static void on_written(uv_write_t *req, int status)
{
    qk_conn *c = QK_CONTAINER_OF(req, qk_conn, wreq);
    c->writing = false;
    if (status < 0 || c->closing) {
        conn_close(c);
    } else if (c->out_len) {
        start_write(c);
    } else if (c->close_after_write) {
        conn_close(c);
    }
    maybe_resume_read(c);
    conn_unref(c);
}

void qk_server_flush(qk_worker *w)
{
    qk_conn *c = w->dirty_conns;
    w->dirty_conns = NULL;
    while (c) {
        qk_conn *n = c->dirty_next;
        c->dirty = false;
        start_write(c);
        c = n;
    }
}

/* ---- answers ---- */

/* An answer's error text: the given message, or the code's description.
 * Returns its length (0 on success, when there is no message). */
static size_t error_text(quark_err err, const char **errmsg)
{
    if (err == QUARK_OK)
        return 0;
    if (!*errmsg || !**errmsg)
        *errmsg = quark_strerror(err);
    return strlen(*errmsg);
}

/* Append a RESPONSE frame, encoded in place (transport/wire.h). */
static void respond(qk_conn *c, uint64_t id, quark_err err, const char *errmsg,
                    const uint8_t *result, size_t len, bool app_error)
{
    if (c->closing)
        return;
    size_t mlen = error_text(err, &errmsg);
    if (err != QUARK_OK)
        len = 0;
    size_t body = qk_wire_response_size(err, mlen, len, app_error);
    if (out_reserve(c, QK_FRAME_HEADER + body) != 0) {
        conn_close(c);
        return;
    }
    uint8_t *o = c->out + c->out_len;
    qk_frame_header(o, QK_FRAME_RESPONSE, id, body);
    qk_wire_encode_response(o + QK_FRAME_HEADER, err, errmsg, mlen, result, len, app_error);
    c->out_len += QK_FRAME_HEADER + body;
    mark_dirty(c);
}

static void grpc_pump(qk_conn *c);

void qk_net_respond(qk_conn *c, uint64_t id, quark_err err, const char *errmsg,
                    const uint8_t *result, size_t len, bool app_error)
{
    if (c->closing)
        return;
    if (c->proto == QK_PROTO_TCP) {
        respond(c, id, err, errmsg, result, len, app_error);
        return;
    }
    if (!c->grpc)
        return;
    if (err != QUARK_OK && !app_error) {
        qk_grpc_server_respond(c->grpc, (int32_t)id, qk_grpc_status_of(err),
                               errmsg && *errmsg ? errmsg : quark_strerror(err), NULL, 0);
    } else {
        /* Success, or the actor's own error: an ActorInvocationResponse. */
        size_t mlen = error_text(err, &errmsg);
        if (err != QUARK_OK)
            len = 0;
        size_t n = qk_wire_response_size(err, mlen, len, app_error);
        uint8_t small[512];
        uint8_t *buf = n + 4 <= sizeof small ? small : malloc(n + 4);
        if (buf) {
            qk_wire_encode_response(buf, err, errmsg, mlen, result, len, app_error);
            /* Which worker read it, and how many there are: a Quark gRPC
             * client keeps its own sockets on the actor's worker with this
             * (a gRPC connection cannot ask for one). */
            unsigned by = c->w->index + 1, nw = c->w->silo->nworkers;
            if (by < 128 && nw < 128) {
                buf[n++] = 5 << 3;
                buf[n++] = (uint8_t)by;
                buf[n++] = 6 << 3;
                buf[n++] = (uint8_t)nw;
            }
            qk_grpc_server_respond(c->grpc, (int32_t)id, 0, NULL, buf, n);
            if (buf != small)
                free(buf);
        }
    }
    grpc_pump(c);
}

/* A call's answer, on its connection's worker (op.c): write it. */
static void srv_call_done(qk_op *op)
{
    qk_srv_call *sc = QK_CONTAINER_OF(op, qk_srv_call, op);
    qk_conn *c = sc->conn;
    const qk_outcome *o = op->out;
    quark_err err = o->err;
    bool app = o->by == QK_BY_ACTOR && err != QUARK_OK;
    if (err == QUARK_ECLOSED) {
        /* For a remote caller: did it run? Never started -> it may go
         * elsewhere; started (deferred) -> nobody can say. */
        err = o->started ? QUARK_EUNKNOWN : QUARK_EUNAVAILABLE;
        app = false;
    }
    if (!c->closing) {
        if (o->reply && err == QUARK_OK) { /* lent as a message: encode it here */
            size_t len = qk_outcome_size(o);
            uint8_t small[512];
            uint8_t *buf = len <= sizeof small ? small : malloc(len);
            if (buf) {
                qk_outcome_pack(o, buf);
                qk_net_respond(c, sc->id, QUARK_OK, NULL, buf, len, false);
                if (buf != small)
                    free(buf);
            } else {
                qk_net_respond(c, sc->id, QUARK_ENOMEM, "out of memory encoding the reply",
                               NULL, 0, false);
            }
        } else {
            qk_net_respond(c, sc->id, err, err == QUARK_OK ? NULL : qk_outcome_text(o), o->data,
                           o->len, app);
        }
    }
    qk_op_release(op);
    sc->next_free = c->free_calls;
    c->free_calls = sc;
    conn_unref(c);
}

/* ---- events ---- */

void qk_net_event(qk_conn *c, uint64_t sub_id, const uint8_t *ev, size_t len)
{
    if (c->closing)
        return;
    if (c->proto == QK_PROTO_GRPC) {
        if (c->grpc) {
            qk_grpc_server_stream_send(c->grpc, (int32_t)sub_id, ev, len);
            grpc_pump(c);
        }
        return;
    }
    if (out_reserve(c, QK_FRAME_HEADER + len) != 0) {
        conn_close(c);
        return;
    }
    qk_frame_header(c->out + c->out_len, QK_FRAME_EVENT, sub_id, len);
    memcpy(c->out + c->out_len + QK_FRAME_HEADER, ev, len);
    c->out_len += QK_FRAME_HEADER + len;
    mark_dirty(c);
}

void qk_net_sub_freed(qk_conn *c, qk_sub *s)
{
    for (qk_sub **pp = &c->subs; *pp; pp = &(*pp)->conn_next) {
        if (*pp == s) {
            *pp = s->conn_next;
            break;
        }
    }
    if (!c->closing && !s->removed) {
        /* The silo ended it (stopping): tell the subscriber. */
        if (c->proto == QK_PROTO_GRPC && c->grpc) {
            qk_grpc_server_stream_end(c->grpc, (int32_t)s->id, 14, "the silo is stopping");
            grpc_pump(c);
        } else if (c->proto == QK_PROTO_TCP) {
            Quark__ActorInvocationResponse r = QUARK__ACTOR_INVOCATION_RESPONSE__INIT;
            r.error_code = QUARK_ECLOSED;
            r.error_message = "the silo is stopping";
            send_frame(c, QK_FRAME_STREAM_END, s->id, &r.base);
        }
    }
    free(s);
    conn_unref(c);
}

static void tcp_subscribe(qk_conn *c, const qk_frame *f)
{
    Quark__StreamRequest *rq = quark__stream_request__unpack(NULL, f->len, f->payload);
    quark_err rc;
    qk_sub *s = NULL;
    if (!rq) {
        rc = qk_error(QUARK_EPROTO, "the subscription request could not be decoded");
    } else {
        rc = qk_net_subscribe(c->w, c, f->id, rq->actor_type, strlen(rq->actor_type),
                              rq->actor_id, strlen(rq->actor_id), &s);
        quark__stream_request__free_unpacked(rq, NULL);
    }
    if (rc != QUARK_OK) {
        Quark__ActorInvocationResponse r = QUARK__ACTOR_INVOCATION_RESPONSE__INIT;
        r.error_code = rc;
        r.error_message = (char *)quark_last_error();
        send_frame(c, QK_FRAME_STREAM_END, f->id, &r.base);
        return;
    }
    c->refs++; /* released by SUBFREE */
    s->conn_next = c->subs;
    c->subs = s;
}

static void tcp_unsubscribe(qk_conn *c, uint64_t id)
{
    for (qk_sub *s = c->subs; s; s = s->conn_next) {
        if (s->id == id && !s->removed) {
            qk_net_unsubscribe(c->w, s);
            return;
        }
    }
}

/* ---- TCP protocol ---- */

static void send_hello_ok(qk_conn *c, quark_err code, const char *msg)
{
    quark_silo *s = c->w->silo;
    Quark__TcpHelloReply r = QUARK__TCP_HELLO_REPLY__INIT;
    r.version = 1;
    r.silo_id = (char *)qk_cluster_self(s); /* as views name it (not --listen's text) */
    r.error_code = code;
    r.error_message = (char *)(msg ? msg : "");
    r.workers = s->nworkers;
    r.worker = c->w->index + 1;
    send_frame(c, QK_FRAME_HELLO_OK, 0, &r.base);
    if (code)
        c->close_after_write = true;
    else
        c->hello_done = true;
}

/* Returns the worker the connection asks to move to, or -1 to stay. */
static int tcp_hello(qk_conn *c, const qk_frame *f)
{
    quark_silo *s = c->w->silo;
    Quark__TcpHello *h = quark__tcp_hello__unpack(NULL, f->len, f->payload);
    char msg[300];
    const char *theirs = h && h->cluster_id[0] ? h->cluster_id : "default";
    int move = -1;
    if (!h) {
        send_hello_ok(c, QUARK_EPROTO, "the hello frame could not be decoded");
    } else if (strcmp(theirs, s->cluster_id) != 0) {
        snprintf(msg, sizeof msg, "this silo belongs to cluster '%s', not '%s'", s->cluster_id,
                 theirs);
        send_hello_ok(c, QUARK_ECLUSTER, msg);
    } else if (h->worker > 0 && h->worker <= s->nworkers && h->worker - 1 != c->w->index) {
        move = (int)h->worker - 1; /* its HELLO_OK comes from there */
    } else {
        send_hello_ok(c, QUARK_OK, NULL);
    }
    if (h)
        quark__tcp_hello__free_unpacked(h, NULL);
    return move;
}

/* ---- moving a connection to another worker (shard-aware clients) ----
 * A client that knows which worker owns an actor (worker_of(hash) is fixed
 * by the HELLO_OK's `workers`) opens one connection per worker and asks, in
 * its HELLO, to be served by that worker. The accepting worker hands the
 * socket over: calls on it then run where they arrive, without crossing
 * threads. */

typedef struct qk_adopt {
    int fd;
    uint8_t proto;         /* QK_PROTO_TCP or QK_PROTO_GRPC */
    size_t n;              /* TCP: bytes read after the HELLO; gRPC: all read */
    uint8_t data[];
} qk_adopt;

static void on_connection_common(qk_worker *w, qk_conn *c);
static void tcp_input(qk_conn *c);
static void grpc_input(qk_conn *c);

static void adopt_task(qk_worker *w, void *arg)
{
    qk_adopt *ad = arg;
    qk_conn *c = NULL;
    if (w->stopping || !w->listener || !(c = calloc(1, sizeof *c))) {
        close(ad->fd);
        free(ad);
        return;
    }
    uv_tcp_init(&w->loop, &c->tcp);
    c->w = w;
    c->refs = 1;
    if (uv_tcp_open(&c->tcp, ad->fd) != 0) {
        close(ad->fd);
        free(ad);
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    c->proto = ad->proto;
    c->hint_done = true;
    on_connection_common(w, c);
    if (c->proto == QK_PROTO_TCP)
        send_hello_ok(c, QUARK_OK, NULL);
    if (ad->n) {
        if (qk_buf_reserve(&c->in, &c->in_cap, 0, ad->n, QK_READ_CHUNK) != 0) {
            conn_close(c);
        } else {
            memcpy(c->in, ad->data, ad->n);
            c->in_len = ad->n;
            if (c->proto == QK_PROTO_TCP)
                tcp_input(c);
            else
                grpc_input(c);
        }
    }
    free(ad);
}

/* Hand c's socket (and the bytes still to handle: after a TCP HELLO, or all
 * of a gRPC connection's so far) to worker `to`; false if it cannot move
 * (then it stays here). */
static bool move_conn(qk_conn *c, unsigned to, const uint8_t *rest, size_t n)
{
    int fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return false;
    qk_adopt *ad = malloc(sizeof *ad + n);
    qk_msg *m = qk_msg_new(0);
    int nfd = ad && m ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (nfd < 0) {
        free(ad);
        if (m)
            qk_msg_free(m);
        return false;
    }
    ad->fd = nfd;
    ad->proto = c->proto;
    ad->n = n;
    if (n)
        memcpy(ad->data, rest, n);
    m->node.kind = QK_MSG_TASK;
    m->r.task.fn = adopt_task;
    m->r.task.arg = ad;
    conn_close(c); /* closes our descriptor; the socket lives on in nfd */
    qk_send(&c->w->silo->workers[to], m);
    return true;
}

static void goaway(qk_conn *c, quark_err err, const char *why)
{
    Quark__ActorInvocationResponse r = QUARK__ACTOR_INVOCATION_RESPONSE__INIT;
    r.error_code = err;
    r.error_message = (char *)why;
    send_frame(c, QK_FRAME_GOAWAY, 0, &r.base);
    c->close_after_write = true;
}

/* Decode a request in place and start the call (both protocols). */
static void invoke(qk_conn *c, uint64_t id, const uint8_t *p, size_t n, uint64_t timeout_ms)
{
    qk_wire_request rq;
    qk_chain_link chain[QK_CHAIN_MAX];
    if (qk_wire_decode_request(p, n, &rq, chain, QK_CHAIN_MAX) != 0) {
        qk_net_respond(c, id, QUARK_EBADARGS, "the ActorInvocationRequest could not be decoded",
                       NULL, 0, false);
        return;
    }
    uint64_t dl = rq.deadline_ms;
    if (timeout_ms && (!dl || timeout_ms < dl))
        dl = timeout_ms;
    if (dl > UINT32_MAX)
        dl = UINT32_MAX;
    qk_srv_call *sc = c->free_calls;
    if (sc)
        c->free_calls = sc->next_free;
    else if (!(sc = malloc(sizeof *sc))) {
        qk_net_respond(c, id, QUARK_ENOMEM, "out of memory accepting a call", NULL, 0, false);
        return;
    }
    qk_op_init(&sc->op, srv_call_done, c->w, QK_OP_INLINE | QK_OP_LEND, sc->space,
               sizeof sc->space);
    sc->conn = c;
    sc->id = id;
    /* A chain as deep as we carry is refused by qk_invoke (ECYCLE). */
    qk_invoke_req ir = {.type = rq.actor_type.p, .type_len = rq.actor_type.n,
                        .actor_id = rq.actor_id.p, .id_len = rq.actor_id.n,
                        .method = rq.method.p, .method_len = rq.method.n,
                        .args = rq.args, .args_len = rq.args_len, .deadline_ms = (uint32_t)dl,
                        .chain = chain,
                        .chain_len = rq.n_chain > QK_CHAIN_MAX ? QK_CHAIN_MAX : rq.n_chain,
                        .hops = rq.hops};
    quark_err rc = qk_invoke(c->w, &ir, &sc->op);
    if (rc != QUARK_OK) {
        sc->next_free = c->free_calls;
        c->free_calls = sc;
        qk_net_respond(c, id, rc, quark_last_error(), NULL, 0, false);
        return;
    }
    c->refs++; /* the call's: released when its answer is written */
}

static void tcp_request(qk_conn *c, const qk_frame *f)
{
    invoke(c, f->id, f->payload, f->len, 0);
}

/* Append a frame whose payload is already encoded. */
static void send_raw(qk_conn *c, uint8_t type, uint64_t id, const uint8_t *p, size_t len)
{
    if (c->closing)
        return;
    if (out_reserve(c, QK_FRAME_HEADER + len) != 0) {
        conn_close(c);
        return;
    }
    qk_frame_header(c->out + c->out_len, type, id, len);
    if (len)
        memcpy(c->out + c->out_len + QK_FRAME_HEADER, p, len);
    c->out_len += QK_FRAME_HEADER + len;
    mark_dirty(c);
}

/* ---- cluster frames ---- */

static void tcp_gossip(qk_conn *c, const qk_frame *f)
{
    size_t n = 0;
    const char *why = NULL;
    uint8_t *rep = qk_cluster_gossip_in(c->w->silo, f->payload, f->len, &n, &why);
    if (!rep) {
        goaway(c, QUARK_EPROTO, why ? why : "gossip refused");
        return;
    }
    send_raw(c, QK_FRAME_GOSSIP_ACK, f->id, rep, n);
    free(rep);
}

/* Send the worker's current view to one watching connection. */
static void send_view(qk_conn *c, const uint8_t *v, size_t n)
{
    if (c->proto == QK_PROTO_TCP) {
        send_raw(c, QK_FRAME_VIEW, c->watch_id, v, n);
    } else if (c->grpc) {
        qk_grpc_server_stream_send(c->grpc, (int32_t)c->watch_id, v, n);
        grpc_pump(c);
    }
}

static void start_watching(qk_conn *c, uint64_t id)
{
    c->watching = true;
    c->watch_id = id;
    size_t n = 0;
    uint8_t *v = qk_cluster_view_for_clients(c->w, &n);
    if (v) /* else: the first view is on its way (qk_server_push_view) */
        send_view(c, v, n);
    free(v);
}

void qk_server_push_view(qk_worker *w)
{
    uint8_t *v = NULL;
    size_t n = 0;
    for (qk_conn *c = w->conns; c; c = c->next) {
        if (!c->watching || c->closing)
            continue;
        if (!v && !(v = qk_cluster_view_for_clients(w, &n)))
            return;
        send_view(c, v, n);
    }
    free(v);
}

static void tcp_status(qk_conn *c, const qk_frame *f)
{
    size_t n = 0;
    uint8_t *st = qk_cluster_status_pack(c->w->silo, &n);
    if (!st) {
        goaway(c, QUARK_EUNAVAILABLE, "this silo has no status to give (not a cluster member)");
        return;
    }
    send_raw(c, QK_FRAME_STATUS_OK, f->id, st, n);
    free(st);
}

/* Consume what is in c->in. */
static void tcp_input(qk_conn *c)
{
    quark_silo *s = c->w->silo;
    size_t off = 0;
    while (!c->closing && !c->close_after_write) {
        if (c->discard) { /* skipping an oversized frame */
            size_t k = c->in_len - off < c->discard ? c->in_len - off : (size_t)c->discard;
            off += k;
            c->discard -= k;
            if (c->discard)
                break;
            continue;
        }
        qk_frame f;
        const char *why = NULL;
        long used = qk_frame_parse(c->in + off, c->in_len - off, s->opts.max_message_size + 4096,
                                   &f, &why);
        if (used == 0)
            break;
        if (used < 0) {
            const uint8_t *h = c->in + off;
            uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
            if (used == QK_FRAME_TOO_BIG && h[4] == QK_FRAME_REQUEST) {
                /* Refuse this one request and skip its bytes; the rest goes on. */
                uint64_t id = 0;
                for (int i = 0; i < 8; i++)
                    id = id << 8 | h[8 + i];
                char msg[200];
                snprintf(msg, sizeof msg, "message of %u bytes is larger than this silo's "
                         "maximum of %zu", len, s->opts.max_message_size);
                respond(c, id, QUARK_ETOOBIG, msg, NULL, 0, false);
                c->discard = 4 + (uint64_t)len;
                continue;
            }
            goaway(c, QUARK_EPROTO, why ? why : "malformed frame");
            break;
        }
        off += (size_t)used;
        if (!c->hello_done) {
            if (f.type != QK_FRAME_HELLO) {
                goaway(c, QUARK_EPROTO, "the first frame must be HELLO");
                break;
            }
            int move = tcp_hello(c, &f);
            if (move >= 0 && !move_conn(c, (unsigned)move, c->in + off, c->in_len - off))
                send_hello_ok(c, QUARK_OK, NULL); /* could not move: served here */
            continue;
        }
        switch (f.type) {
        case QK_FRAME_REQUEST:
            tcp_request(c, &f);
            break;
        case QK_FRAME_SUBSCRIBE:
            tcp_subscribe(c, &f);
            break;
        case QK_FRAME_UNSUBSCRIBE:
            tcp_unsubscribe(c, f.id);
            break;
        case QK_FRAME_PING:
            send_frame(c, QK_FRAME_PONG, f.id, NULL);
            break;
        case QK_FRAME_GOSSIP:
            tcp_gossip(c, &f);
            break;
        case QK_FRAME_WATCH:
            start_watching(c, f.id);
            break;
        case QK_FRAME_STATUS:
            tcp_status(c, &f);
            break;
        case QK_FRAME_GOAWAY:
            c->close_after_write = true;
            break;
        default:
            goaway(c, QUARK_EPROTO, "unexpected frame type from a client");
            break;
        }
    }
    if (off) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    if (c->close_after_write && !c->writing && c->out_len == 0)
        conn_close(c);
}

/* ---- gRPC (HTTP/2 through grpc_codec) ---- */

static void grpc_write(void *wud, const uint8_t *data, size_t len)
{
    qk_conn *c = wud;
    if (c->closing || out_reserve(c, len) != 0)
        return;
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    mark_dirty(c);
}

/* Move the session's output into the connection's buffer. */
static void grpc_pump(qk_conn *c)
{
    /* Never from inside the session's own callbacks (an answer given during
     * on_request): nghttp2 must not send while it is receiving; grpc_input
     * pumps once recv returns. */
    if (!c->grpc || c->closing || c->in_recv)
        return;
    qk_grpc_server_flush(c->grpc, grpc_write, c);
    if (qk_grpc_server_want_close(c->grpc)) {
        c->close_after_write = true;
        if (!c->writing && c->out_len == 0)
            conn_close(c);
    }
}

#define QK_PATH_INVOKE "/quark.ActorService/InvokeActor"
#define QK_PATH_STREAM "/quark.ActorService/StreamActorEvents"
#define QK_PATH_WATCH "/quark.ActorService/WatchCluster"
#define QK_PATH_STATUS "/quark.ActorService/GetSiloStatus"

static void grpc_on_request(void *ud, int32_t stream_id, const char *path, size_t path_len,
                            uint64_t timeout_ms, const char *cluster_id, const uint8_t *msg,
                            size_t len)
{
    qk_conn *c = ud;
    qk_worker *w = c->w;
    quark_silo *s = w->silo;
    char why[300];
    if (cluster_id && *cluster_id && strcmp(cluster_id, s->cluster_id) != 0) {
        snprintf(why, sizeof why, "this silo belongs to cluster '%s', not '%.100s'",
                 s->cluster_id, cluster_id);
        qk_grpc_server_respond(c->grpc, stream_id, qk_grpc_status_of(QUARK_ECLUSTER), why, NULL, 0);
        return;
    }
    bool invoke_path =
        path_len == sizeof QK_PATH_INVOKE - 1 && memcmp(path, QK_PATH_INVOKE, path_len) == 0;
    bool stream = path_len == sizeof QK_PATH_STREAM - 1 && memcmp(path, QK_PATH_STREAM, path_len) == 0;
    bool watch = path_len == sizeof QK_PATH_WATCH - 1 && memcmp(path, QK_PATH_WATCH, path_len) == 0;
    bool status =
        path_len == sizeof QK_PATH_STATUS - 1 && memcmp(path, QK_PATH_STATUS, path_len) == 0;
    if (watch) {
        start_watching(c, (uint64_t)stream_id);
    } else if (status) {
        size_t n = 0;
        uint8_t *st = qk_cluster_status_pack(s, &n);
        if (st)
            qk_grpc_server_respond(c->grpc, stream_id, 0, NULL, st, n);
        else
            qk_grpc_server_respond(c->grpc, stream_id, 14, "this silo has no status to give",
                                   NULL, 0);
        free(st);
    } else if (invoke_path) {
        invoke(c, (uint64_t)stream_id, msg, len, timeout_ms);
    } else if (stream) {
        Quark__StreamRequest *rq = quark__stream_request__unpack(NULL, len, msg);
        qk_sub *sub = NULL;
        quark_err rc = rq ? qk_net_subscribe(w, c, (uint64_t)stream_id, rq->actor_type,
                                             strlen(rq->actor_type), rq->actor_id,
                                             strlen(rq->actor_id), &sub)
                          : qk_error(QUARK_EBADARGS, "the StreamRequest could not be decoded");
        if (rq)
            quark__stream_request__free_unpacked(rq, NULL);
        if (rc != QUARK_OK) {
            qk_grpc_server_stream_end(c->grpc, stream_id, qk_grpc_status_of(rc), quark_last_error());
        } else {
            c->refs++; /* released by SUBFREE */
            sub->conn_next = c->subs;
            c->subs = sub;
        }
    } else {
        snprintf(why, sizeof why, "unknown method %.*s (this server offers %s, %s, %s and %s)",
                 (int)(path_len > 100 ? 100 : path_len), path, QK_PATH_INVOKE, QK_PATH_STREAM,
                 QK_PATH_WATCH, QK_PATH_STATUS);
        qk_grpc_server_respond(c->grpc, stream_id, 12, why, NULL, 0);
    }
}

static void grpc_on_cancel(void *ud, int32_t stream_id)
{
    qk_conn *c = ud;
    if (c->closing)
        return;
    if (c->watching && c->watch_id == (uint64_t)stream_id)
        c->watching = false;
    /* A subscriber going away; a cancelled call's answer is simply ignored. */
    for (qk_sub *s = c->subs; s; s = s->conn_next) {
        if (s->id == (uint64_t)stream_id && !s->removed) {
            qk_net_unsubscribe(c->w, s);
            return;
        }
    }
}

static const qk_grpc_server_cbs grpc_cbs = {.on_request = grpc_on_request,
                                            .on_cancel = grpc_on_cancel};

static void grpc_input(qk_conn *c)
{
    if (!c->hint_done) {
        /* A Quark client's lane asks for a worker in its first SETTINGS
         * frame: move before the HTTP/2 session starts (it moves with the
         * bytes read so far and starts there). */
        unsigned want;
        int got = qk_grpc_worker_hint(c->in, c->in_len, &want);
        if (got < 0)
            return; /* the rest of the SETTINGS frame is on its way */
        c->hint_done = true;
        if (want >= 1 && want <= c->w->silo->nworkers && want - 1 != c->w->index &&
            move_conn(c, want - 1, c->in, c->in_len)) {
            c->in_len = 0;
            return;
        }
    }
    if (!c->grpc) {
        c->grpc = qk_grpc_server_new(&grpc_cbs, c, c->w->silo->opts.max_message_size);
        if (!c->grpc) {
            conn_close(c);
            return;
        }
    }
    c->in_recv = true;
    int rc = qk_grpc_server_recv(c->grpc, c->in, c->in_len);
    c->in_recv = false;
    c->in_len = 0;
    grpc_pump(c);
    if (rc != 0 && !c->closing) {
        c->close_after_write = true;
        if (!c->writing && c->out_len == 0)
            conn_close(c);
    }
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    qk_conn *c = (qk_conn *)h;
    if (c->in_cap - c->in_len < QK_READ_CHUNK) {
        size_t cap = c->in_cap ? c->in_cap : QK_READ_CHUNK;
        while (cap - c->in_len < QK_READ_CHUNK)
            cap *= 2;
        uint8_t *b = realloc(c->in, cap);
        if (!b) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        c->in = b;
        c->in_cap = cap;
    }
    *buf = uv_buf_init((char *)c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    qk_conn *c = (qk_conn *)st;
    if (n < 0) {
        conn_close(c);
        return;
    }
    /* The loop may have slept for long: deadlines of the calls decoded
     * below are counted from now, not from the last batch. */
    c->w->now_ms = qk_now_ms_coarse();
    c->in_len += (size_t)n;
    if (c->proto == QK_PROTO_DETECT) {
        if (c->in_len < 4)
            return;
        if (memcmp(c->in, QK_FRAME_MAGIC, 4) == 0) {
            c->proto = QK_PROTO_TCP;
            memmove(c->in, c->in + 4, c->in_len - 4);
            c->in_len -= 4;
        } else if (memcmp(c->in, "PRI ", 4) == 0) {
            c->proto = QK_PROTO_GRPC;
        } else {
            conn_close(c); /* neither protocol: nothing to say to it */
            return;
        }
    }
    if (c->proto == QK_PROTO_TCP)
        tcp_input(c);
    else
        grpc_input(c);
    /* Give back a large input buffer once it is drained. */
    if (c->in_len == 0 && c->in_cap > 4 * QK_READ_CHUNK) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

static void conn_resume_read(qk_conn *c)
{
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_connection(uv_stream_t *server, int status)
{
    qk_worker *w = server->data;
    if (status < 0)
        return;
    qk_conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    uv_tcp_init(&w->loop, &c->tcp);
    c->w = w;
    c->refs = 1;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    on_connection_common(w, c);
}

static void on_connection_common(qk_worker *w, qk_conn *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

void qk_server_worker_start(qk_worker *w)
{
    quark_silo *s = w->silo;
    if (!s->listen_fds)
        return;
    w->listener = calloc(1, sizeof *w->listener);
    if (!w->listener)
        return;
    uv_tcp_init(&w->loop, w->listener);
    w->listener->data = w;
    if (uv_tcp_open(w->listener, s->listen_fds[w->index]) != 0 ||
        uv_listen((uv_stream_t *)w->listener, 1024, on_connection) != 0) {
        fprintf(stderr, "quark: worker %u could not listen\n", w->index);
    }
}

static void free_handle(uv_handle_t *h)
{
    free(h);
}

/* Stop phase 1: accept nothing more and read no new requests; answers to
 * calls already in flight still go out. */
void qk_server_worker_quiesce(qk_worker *w)
{
    if (w->listener) {
        uv_close((uv_handle_t *)w->listener, free_handle);
        w->listener = NULL;
    }
    for (qk_conn *c = w->conns; c; c = c->next)
        uv_read_stop((uv_stream_t *)&c->tcp);
}

/* Stop phase 2: write what is pending, then close each connection. */
void qk_server_worker_stop(qk_worker *w)
{
    for (qk_conn *c = w->conns; c; c = c->next) {
        if (c->grpc) { /* the final GOAWAY now: reading has stopped, so no PING
                          * round trip can complete; what it refuses never ran */
            qk_grpc_server_goaway_now(c->grpc);
            grpc_pump(c);
        }
    }
    qk_server_flush(w);
    qk_conn *c = w->conns;
    while (c) {
        qk_conn *n = c->next;
        c->close_after_write = true;
        if (!c->writing && c->out_len == 0)
            conn_close(c);
        c = n;
    }
}

int qk_server_worker_busy(const qk_worker *w)
{
    return w->conns != NULL;
}
