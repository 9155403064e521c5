/*
 * server.c - the silo's listener: binding, one listening socket per worker,
 * accepting, moving a connection to another worker, the stop phases; and
 * the listener port (runtime/ports.h) through which the runtime drives it.
 *
 * Every worker listens on the silo's port through its own SO_REUSEPORT
 * socket, bound before the workers start (so port 0 resolves once, for
 * all): the kernel spreads connections over the workers. A client that
 * knows which worker owns an actor asks for that worker (TCP HELLO
 * `worker`, gRPC SETTINGS 0xf051); the accepting worker then hands the
 * socket over (qk_server_move_conn), and calls on it run where they
 * arrive, without crossing threads. See server.h for the other files.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/addr.h"
#include "core/buf.h"
#include "transport/server.h"

quark_err qk_server_new(quark_silo *s, qk_server **out)
{
    qk_server *srv = calloc(1, sizeof *srv);
    if (!srv || !(srv->pw = calloc(s->nworkers, sizeof *srv->pw))) {
        free(srv);
        return qk_error(QUARK_ENOMEM, "out of memory creating the silo's server");
    }
    srv->silo = s;
    *out = srv;
    return QUARK_OK;
}

void qk_server_set_control(qk_server *srv, const qk_server_control *ctl)
{
    srv->ctl = *ctl;
}

int qk_server_port(const qk_server *srv)
{
    return srv ? srv->port : 0;
}

void qk_server_free(qk_server *srv)
{
    if (!srv)
        return;
    /* The workers adopted (and closed) every socket they started with;
     * the rest were never taken. */
    for (unsigned i = 0; srv->listen_fds && i < srv->silo->nworkers; i++)
        if (srv->listen_fds[i] >= 0)
            close(srv->listen_fds[i]);
    free(srv->listen_fds);
    free(srv->pw);
    free(srv);
}

/* ---- binding (silo start, before the workers) ---- */

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

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

static int port_of(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)ss)->sin6_port)
                                     : ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

quark_err qk_server_bind(qk_server *srv)
{
    quark_silo *s = srv->silo;
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
    srv->listen_fds = calloc(s->nworkers, sizeof *srv->listen_fds);
    if (!srv->listen_fds) {
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
                close(srv->listen_fds[j]);
            free(srv->listen_fds);
            srv->listen_fds = NULL;
            return qk_error(QUARK_EUNAVAILABLE, "cannot listen on %s: %s", s->opts.listen,
                            strerror(e));
        }
        srv->listen_fds[i] = fd;
        if (i == 0) { /* port 0: every other socket joins the chosen port */
            struct sockaddr_storage bound;
            socklen_t bl = sizeof bound;
            getsockname(fd, (struct sockaddr *)&bound, &bl);
            srv->port = port_of(&bound);
            set_port(&ss, srv->port);
        }
    }
    return QUARK_OK;
}

/* ---- accepting ---- */

static void on_connection(uv_stream_t *server, int status)
{
    qk_worker *w = server->data;
    qk_server *srv = w->silo->listener_self;
    if (status < 0)
        return;
    qk_conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    qk_conn_init(c, srv, w);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, qk_conn_closed_cb);
        return;
    }
    qk_conn_start(c);
}

/* ---- moving a connection to another worker ---- */

typedef struct qk_adopt {
    int fd;
    const qk_proto_ops *proto;
    size_t n;              /* TCP: bytes read after the HELLO; gRPC: all read */
    uint8_t data[];
} qk_adopt;

static void adopt_task(qk_worker *w, void *arg)
{
    qk_adopt *ad = arg;
    qk_server *srv = w->silo->listener_self;
    qk_conn *c = NULL;
    if (w->stopping || !srv->pw[w->index].listener || !(c = calloc(1, sizeof *c))) {
        close(ad->fd);
        free(ad);
        return;
    }
    qk_conn_init(c, srv, w);
    if (uv_tcp_open(&c->tcp, ad->fd) != 0) {
        close(ad->fd);
        free(ad);
        uv_close((uv_handle_t *)&c->tcp, qk_conn_closed_cb);
        return;
    }
    c->proto = ad->proto;
    c->hint_done = true;
    qk_conn_start(c);
    if (c->proto->adopted)
        c->proto->adopted(c);
    if (ad->n) {
        if (qk_buf_reserve(&c->in, &c->in_cap, 0, ad->n, QK_READ_CHUNK) != 0) {
            qk_conn_close(c);
        } else {
            memcpy(c->in, ad->data, ad->n);
            c->in_len = ad->n;
            c->proto->input(c);
        }
    }
    free(ad);
}

bool qk_server_move_conn(qk_conn *c, unsigned to, const uint8_t *rest, size_t n)
{
    int fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return false;
    qk_adopt *ad = malloc(sizeof *ad + n);
    int nfd = ad ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (nfd < 0) {
        free(ad);
        return false;
    }
    ad->fd = nfd;
    ad->proto = c->proto;
    ad->n = n;
    if (n)
        memcpy(ad->data, rest, n);
    /* Stop reading here before the other worker starts: closes our
     * descriptor; the socket lives on in nfd. */
    qk_conn_close(c);
    if (!qk_post_task(&c->w->silo->workers[to], adopt_task, ad)) {
        close(nfd); /* out of memory: the connection is lost, as if reset */
        free(ad);
    }
    return true;
}

/* ---- views for watching connections ---- */

void qk_server_push_view(qk_server *srv, qk_worker *w)
{
    uint8_t *v = NULL;
    size_t n = 0;
    for (qk_conn *c = srv->pw[w->index].conns; c; c = c->next) {
        if (!c->watching || c->closing)
            continue;
        if (!v && (!srv->ctl.view || !(v = srv->ctl.view(srv->ctl.arg, w, &n))))
            return;
        c->proto->send_view(c, v, n);
    }
    free(v);
}

/* ---- the listener port (runtime/ports.h) ---- */

static void free_handle(uv_handle_t *h)
{
    free(h);
}

/* ---- timeouts ---- */

static void srv_flush_conns(qk_server *srv, qk_worker *w);

static bool handshaken(const qk_conn *c)
{
    return c->proto == &qk_proto_tcp ? c->hello_done
                                     : c->proto && qk_conn_grpc_ready(c);
}

/* Every connection of the worker against its clocks (server.h). */
static void on_sweep(uv_timer_t *t)
{
    qk_worker *w = t->data;
    qk_server *srv = w->silo->listener_self;
    const quark_silo_opts *o = &w->silo->opts;
    qk_worker_set_now(w);
    uint64_t now = w->now_ms;
    char why[200];
    qk_conn *c = srv->pw[w->index].conns;
    while (c) {
        qk_conn *next = c->next; /* c may close (and leave the list) */
        uint64_t partial;
        why[0] = '\0';
        if (c->closing || c->close_after_write) {
            /* told already */
        } else if (!handshaken(c) && now - c->opened_ms >= o->handshake_timeout_ms) {
            snprintf(why, sizeof why, "no handshake (%s) within %u ms of connecting",
                     c->proto == &qk_proto_tcp ? "HELLO" : c->proto ? "HTTP/2 SETTINGS"
                                                                     : "protocol bytes",
                     o->handshake_timeout_ms);
        } else if (!c->paused && (partial = c->proto == &qk_proto_grpc ? qk_conn_grpc_partial_ms(c)
                                                                    : c->partial_ms) &&
                   now - partial >= o->frame_timeout_ms) {
            /* (not while the silo itself stopped reading it) */
            snprintf(why, sizeof why, "a %s was started and not finished within %u ms",
                     c->proto == &qk_proto_grpc ? "request" : "frame", o->frame_timeout_ms);
        } else if (!c->inflight && !c->subs && !c->watching && !c->out_len && !c->writing &&
                   now - c->last_in_ms >= o->idle_connection_ms) {
            snprintf(why, sizeof why, "idle for %u ms (send PING to keep a connection open)",
                     o->idle_connection_ms);
        }
        if (why[0]) {
            if (c->proto && c->proto->goaway)
                c->proto->goaway(c, QUARK_ETIMEDOUT, why);
            else
                qk_conn_close(c);
        }
        c = next;
    }
    srv_flush_conns(srv, w);
}

static void start_sweep(qk_server *srv, qk_worker *w)
{
    const quark_silo_opts *o = &w->silo->opts;
    uint32_t least = o->handshake_timeout_ms;
    if (o->frame_timeout_ms < least)
        least = o->frame_timeout_ms;
    if (o->idle_connection_ms < least)
        least = o->idle_connection_ms;
    uint64_t every = least / 4 < 20 ? 20 : least / 4 > 1000 ? 1000 : least / 4;
    qk_srv_worker *pw = &srv->pw[w->index];
    if (!(pw->sweep = calloc(1, sizeof *pw->sweep)))
        return; /* no timeouts on this worker: out of memory at start */
    uv_timer_init(&w->loop, pw->sweep);
    pw->sweep->data = w;
    uv_timer_start(pw->sweep, on_sweep, every, every);
    uv_unref((uv_handle_t *)pw->sweep);
}

static void srv_worker_start(void *self, qk_worker *w)
{
    qk_server *srv = self;
    qk_srv_worker *pw = &srv->pw[w->index];
    if (!srv->listen_fds)
        return;
    pw->listener = calloc(1, sizeof *pw->listener);
    if (!pw->listener)
        return;
    uv_tcp_init(&w->loop, pw->listener);
    pw->listener->data = w;
    start_sweep(srv, w);
    int fd = srv->listen_fds[w->index];
    srv->listen_fds[w->index] = -1; /* libuv owns it now */
    if (uv_tcp_open(pw->listener, fd) != 0 ||
        uv_listen((uv_stream_t *)pw->listener, 1024, on_connection) != 0) {
        fprintf(stderr, "quark: worker %u could not listen\n", w->index);
    }
}

/* Stop phase 1: accept nothing more and read no new requests; answers to
 * calls already in flight still go out. */
static void srv_worker_quiesce(void *self, qk_worker *w)
{
    qk_server *srv = self;
    qk_srv_worker *pw = &srv->pw[w->index];
    if (pw->listener) {
        uv_close((uv_handle_t *)pw->listener, free_handle);
        pw->listener = NULL;
    }
    for (qk_conn *c = pw->conns; c; c = c->next)
        qk_conn_pause(c, QK_PAUSE_STOP);
    if (pw->sweep) {
        uv_close((uv_handle_t *)pw->sweep, free_handle);
        pw->sweep = NULL;
    }
}

static void srv_flush(void *self, qk_worker *w)
{
    srv_flush_conns(self, w);
}

static void srv_flush_conns(qk_server *srv, qk_worker *w)
{
    qk_srv_worker *pw = &srv->pw[w->index];
    qk_conn *c = pw->dirty;
    pw->dirty = NULL;
    while (c) {
        qk_conn *n = c->dirty_next;
        c->dirty = false;
        qk_conn_resume_input(c);
        qk_conn_write(c);
        qk_conn_unref(c); /* the dirty list's */
        c = n;
    }
}

/* Stop phase 2: last words (gRPC's final GOAWAY), write what is pending,
 * then close each connection. */
static void srv_worker_stop(void *self, qk_worker *w)
{
    qk_server *srv = self;
    qk_srv_worker *pw = &srv->pw[w->index];
    for (qk_conn *c = pw->conns; c; c = c->next)
        if (c->proto && c->proto->stop)
            c->proto->stop(c);
    srv_flush(self, w);
    qk_conn *c = pw->conns;
    while (c) {
        qk_conn *n = c->next;
        c->close_after_write = true;
        qk_conn_close_when_written(c);
        c = n;
    }
}

static bool srv_worker_busy(void *self, const qk_worker *w)
{
    qk_server *srv = self;
    return srv->pw[w->index].conns != NULL;
}

const qk_listener_ops qk_server_listener = {
    .worker_start = srv_worker_start,
    .worker_quiesce = srv_worker_quiesce,
    .worker_stop = srv_worker_stop,
    .worker_busy = srv_worker_busy,
    .flush = srv_flush,
};
