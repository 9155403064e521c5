/*
 * direct.c - blocking calls on caller-owned sockets (see direct.h).
 *
 * The pool is a list of silos (by address), each with its worker count
 * (learnt from the first HELLO_OK) and its idle sockets. One mutex guards
 * the lists; it is never held across a system call that can block, except
 * the shutdown() that wakes calls in progress at disconnect (so a caller
 * cannot close a descriptor under it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "quark/actor_service.pb-c.h"
#include "core/buf.h"
#include "core/common.h"
#include "core/spin.h"
#include "transport/direct.h"
#include "transport/frame.h"
#include "transport/grpc_codec.h"
#include "transport/sock.h"

#define QK_DIRECT_CONNECT_MS 3000
#define QK_DIRECT_ADDR_MAX 300

struct qk_dsock {
    qk_dsock *next;              /* the silo's idle list */
    qk_dsock *all_prev, *all_next;
    struct qk_dsilo *silo;
    int fd;
    unsigned shard;              /* the worker serving it */
    bool busy;
    uint64_t next_id;
    uint8_t *in;
    size_t in_len, in_cap, in_off;
    /* gRPC */
    qk_grpc_client *g;
    uint8_t *out;                /* the session's output, to write */
    size_t out_len, out_cap;
    bool oom;
    bool done;                   /* our call's on_response ran */
    int status;                  /* its grpc-status */
    uint64_t last_in_ms;         /* bytes last read (keepalive) */
    bool pinged;                 /* a keepalive PING went since */
    uint8_t *rbuf;               /* its response message / grpc-message */
    size_t rlen, rcap;
};

typedef struct qk_dsilo {
    struct qk_dsilo *next;
    char addr[QK_DIRECT_ADDR_MAX];
    unsigned workers;            /* 0 until a HELLO_OK said */
    unsigned total;              /* sockets, idle or busy (or being opened) */
    bool gone;                   /* no longer a silo calls go to (qk_direct_retain) */
    qk_dsock *idle;
} qk_dsilo;

struct qk_direct {
    uv_mutex_t mu;
    bool closed;
    bool grpc;
    const char *meta[3];         /* gRPC: quark-cluster-id metadata */
    unsigned per_worker;
    uint32_t poll_us;
    uint32_t keepalive_ms, keepalive_timeout_ms; /* 0: none (remote.h) */
    size_t max_msg;
    char *cluster_id, *client_name;
    qk_dsilo *silos;
    qk_dsock *all;
};

qk_direct *qk_direct_new(const char *cluster_id, const char *client_name, size_t max_msg,
                         unsigned per_worker, bool grpc, uint32_t poll_us, uint32_t keepalive_ms,
                         uint32_t keepalive_timeout_ms)
{
    qk_direct *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->cluster_id = strdup(cluster_id ? cluster_id : "default");
    d->client_name = strdup(client_name ? client_name : "");
    if (!d->cluster_id || !d->client_name || uv_mutex_init(&d->mu) != 0) {
        free(d->cluster_id);
        free(d->client_name);
        free(d);
        return NULL;
    }
    d->per_worker = per_worker;
    d->poll_us = poll_us;
    d->keepalive_ms = keepalive_ms;
    d->keepalive_timeout_ms = keepalive_timeout_ms;
    d->max_msg = max_msg;
    d->grpc = grpc;
    d->meta[0] = "quark-cluster-id";
    d->meta[1] = d->cluster_id;
    d->meta[2] = NULL;
    return d;
}

static void sock_free(qk_dsock *s)
{
    if (s->g)
        qk_grpc_client_free(s->g);
    free(s->in);
    free(s->out);
    free(s->rbuf);
    free(s);
}

/* Under d->mu: forget s (busy or not), close it. */
static void sock_drop_locked(qk_direct *d, qk_dsock *s)
{
    if (s->all_prev)
        s->all_prev->all_next = s->all_next;
    else if (d->all == s)
        d->all = s->all_next;
    if (s->all_next)
        s->all_next->all_prev = s->all_prev;
    s->silo->total--;
    close(s->fd);
    sock_free(s);
}

static void sock_drop(qk_direct *d, qk_dsock *s)
{
    uv_mutex_lock(&d->mu);
    sock_drop_locked(d, s);
    uv_mutex_unlock(&d->mu);
}

void qk_direct_shutdown(qk_direct *d)
{
    if (!d)
        return;
    uv_mutex_lock(&d->mu);
    d->closed = true;
    for (qk_dsilo *si = d->silos; si; si = si->next) {
        while (si->idle) {
            qk_dsock *s = si->idle;
            si->idle = s->next;
            sock_drop_locked(d, s);
        }
    }
    for (qk_dsock *s = d->all; s; s = s->all_next)
        shutdown(s->fd, SHUT_RDWR); /* busy: its caller sees the end and drops it */
    uv_mutex_unlock(&d->mu);
}

/* Under d->mu: free silo entries that are gone and hold no socket. */
static void silos_prune_locked(qk_direct *d)
{
    for (qk_dsilo **pp = &d->silos; *pp;) {
        qk_dsilo *si = *pp;
        if (si->gone && si->total == 0) {
            *pp = si->next;
            free(si);
            continue;
        }
        pp = &si->next;
    }
}

void qk_direct_retain(qk_direct *d, const char *const *addrs, size_t n)
{
    if (!d)
        return;
    uv_mutex_lock(&d->mu);
    for (qk_dsilo *si = d->silos; si; si = si->next) {
        si->gone = true;
        for (size_t i = 0; i < n && si->gone; i++)
            si->gone = strcmp(addrs[i], si->addr) != 0;
        while (si->gone && si->idle) {
            qk_dsock *s = si->idle;
            si->idle = s->next;
            sock_drop_locked(d, s);
        }
    }
    silos_prune_locked(d);
    uv_mutex_unlock(&d->mu);
}

void qk_direct_reopen(qk_direct *d)
{
    if (!d)
        return;
    uv_mutex_lock(&d->mu);
    d->closed = false;
    uv_mutex_unlock(&d->mu);
}

void qk_direct_free(qk_direct *d)
{
    if (!d)
        return;
    qk_direct_shutdown(d);
    /* Busy sockets belong to calls still running: the client is being freed,
     * so there are none (quark_client_free's contract). */
    while (d->all)
        sock_drop_locked(d, d->all);
    while (d->silos) {
        qk_dsilo *si = d->silos;
        d->silos = si->next;
        free(si);
    }
    uv_mutex_destroy(&d->mu);
    free(d->cluster_id);
    free(d->client_name);
    free(d);
}

/* ---- waiting for answers ---- */

/* Wait for an answer on fd until at_ms (1 ready, 0 timeout, -1 error):
 * polling first, for up to d->poll_us, while this thread has its core to
 * itself (core/spin.h); the answer is often a few microseconds away and a
 * sleeping thread takes far longer to wake. */
/* A call starts on s: the keepalive's clock starts with it. */
static qk_dsock *sock_taken(qk_dsock *s)
{
    s->last_in_ms = qk_now_ms_coarse();
    s->pinged = false;
    return s;
}

static QK_TLS qk_spin tls_spin;
static QK_TLS uint32_t tls_spin_us = UINT32_MAX;

static size_t g_flush(qk_dsock *s, uint64_t at_ms, bool *all);

/* While a call waits: a socket silent for keepalive_ms is sent a PING, one
 * silent for keepalive_timeout_ms is given up (-1, *why says so): a silo
 * that froze does not hold the caller until the deadline. */
static int wait_quiet(const qk_direct *d, qk_dsock *s, uint64_t at_ms, const char **why)
{
    static QK_TLS char text[120];
    for (;;) {
        uint64_t now = qk_now_ms_coarse(), until = at_ms;
        if (d->keepalive_ms) {
            if (now - s->last_in_ms >= d->keepalive_timeout_ms) {
                snprintf(text, sizeof text, "the silo sent nothing for %u ms, not even a PONG "
                         "(keepalive)", d->keepalive_timeout_ms);
                *why = text;
                return -1;
            }
            if (!s->pinged && now - s->last_in_ms >= d->keepalive_ms) {
                s->pinged = true;
                bool all;
                if (s->g) {
                    qk_grpc_client_ping(s->g);
                    g_flush(s, at_ms, &all);
                } else {
                    uint8_t h[QK_FRAME_HEADER];
                    qk_frame_header(h, QK_FRAME_PING, 0, 0);
                    qk_sock_write_all(s->fd, h, sizeof h, at_ms);
                }
            }
            uint64_t next = s->last_in_ms + (s->pinged ? d->keepalive_timeout_ms : d->keepalive_ms);
            if (next < until)
                until = next;
        }
        int w = qk_sock_wait(s->fd, POLLIN, until);
        if (w != 0 || until == at_ms)
            return w;
    }
}

static int wait_answer(const qk_direct *d, qk_dsock *s, uint64_t at_ms, const char **why)
{
    int fd = s->fd;
    if (tls_spin_us != d->poll_us) {
        qk_spin_init(&tls_spin, d->poll_us);
        tls_spin_us = d->poll_us;
    }
    uint64_t until = qk_spin_until(&tls_spin);
    while (until) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 0) > 0) {
            qk_spin_found(&tls_spin, true);
            return 1;
        }
        if (qk_now_ns() >= until) {
            qk_spin_found(&tls_spin, false);
            break;
        }
        qk_cpu_relax();
    }
    return wait_quiet(d, s, at_ms, why);
}

/* Read until one whole frame is in s->in (from s->in_off); 1 ok with *f set,
 * 0 timeout, -1 connection ended or broken (why says). */
static int read_frame(qk_direct *d, qk_dsock *s, uint64_t at_ms, qk_frame *f, const char **why)
{
    for (;;) {
        long used = qk_frame_parse(s->in + s->in_off, s->in_len - s->in_off, d->max_msg + 4096,
                                   f, why);
        if (used > 0) {
            s->in_off += (size_t)used;
            return 1;
        }
        if (used < 0)
            return -1;
        if (s->in_off && s->in_off == s->in_len)
            s->in_off = s->in_len = 0;
        if (qk_buf_reserve(&s->in, &s->in_cap, s->in_len, 16384, 16384) != 0) {
            *why = "out of memory";
            return -1;
        }
        ssize_t r = recv(s->fd, s->in + s->in_len, s->in_cap - s->in_len, 0);
        if (r > 0) {
            s->in_len += (size_t)r;
            s->last_in_ms = qk_now_ms_coarse();
            s->pinged = false;
            continue;
        }
        if (r == 0) {
            *why = "closed by the silo";
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            *why = strerror(errno);
            return -1;
        }
        const char *silent = NULL;
        int w = wait_answer(d, s, at_ms, &silent);
        if (w <= 0) {
            *why = w == 0 ? "deadline" : silent ? silent : strerror(errno);
            return w;
        }
    }
}

/* ---- opening a socket ---- */

/* A connected socket to si (not yet in any list); *at_ms is lowered to the
 * connect timeout. */
static qk_dsock *sock_connect(qk_dsilo *si, uint64_t *at_ms)
{
    uint64_t limit = qk_now_ms_coarse() + QK_DIRECT_CONNECT_MS;
    if (limit < *at_ms)
        *at_ms = limit;
    int fd = qk_sock_connect(si->addr, *at_ms, NULL, 0);
    if (fd < 0)
        return NULL;
    qk_dsock *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return NULL;
    }
    s->fd = fd;
    s->silo = si;
    sock_taken(s); /* the handshake waits with the keepalive's clock too */
    return s;
}

/* Connect, say HELLO asking for worker `shard` (UINT32_MAX: any), learn
 * which worker serves it. NULL if anything fails. */
static qk_dsock *sock_open(qk_direct *d, qk_dsilo *si, unsigned shard, uint64_t at_ms)
{
    qk_dsock *s = sock_connect(si, &at_ms);
    if (!s)
        return NULL;
    int fd = s->fd;
    Quark__TcpHello h = QUARK__TCP_HELLO__INIT;
    h.cluster_id = d->cluster_id;
    h.client_name = d->client_name;
    h.version = 1;
    h.worker = shard == UINT32_MAX ? 0 : shard + 1;
    uint8_t buf[QK_FRAME_MAGIC_LEN + QK_FRAME_HEADER + 512];
    size_t len = protobuf_c_message_get_packed_size(&h.base);
    Quark__TcpHelloReply *hr = NULL;
    const char *why = NULL;
    qk_frame f;
    if (len > 512)
        goto fail;
    memcpy(buf, QK_FRAME_MAGIC, QK_FRAME_MAGIC_LEN);
    qk_frame_header(buf + QK_FRAME_MAGIC_LEN, QK_FRAME_HELLO, 0, len);
    protobuf_c_message_pack(&h.base, buf + QK_FRAME_MAGIC_LEN + QK_FRAME_HEADER);
    len += QK_FRAME_MAGIC_LEN + QK_FRAME_HEADER;
    if (qk_sock_write_all(fd, buf, len, at_ms) != len || read_frame(d, s, at_ms, &f, &why) != 1 ||
        f.type != QK_FRAME_HELLO_OK)
        goto fail;
    hr = quark__tcp_hello_reply__unpack(NULL, f.len, f.payload);
    if (!hr || hr->error_code || hr->workers == 0 || hr->workers > 1024 || hr->worker == 0 ||
        hr->worker > hr->workers)
        goto fail;
    s->shard = hr->worker - 1;
    uv_mutex_lock(&d->mu);
    si->workers = hr->workers;
    uv_mutex_unlock(&d->mu);
    quark__tcp_hello_reply__free_unpacked(hr, NULL);
    return s;
fail:
    if (hr)
        quark__tcp_hello_reply__free_unpacked(hr, NULL);
    close(fd);
    sock_free(s);
    return NULL;
}

/* ---- gRPC sockets ---- */

static void g_keep(qk_dsock *s, const void *p, size_t n)
{
    if (qk_buf_reserve(&s->rbuf, &s->rcap, 0, n + 1, 256) != 0) {
        s->oom = true;
        s->rlen = 0;
        return;
    }
    if (n)
        memcpy(s->rbuf, p, n);
    s->rbuf[n] = 0;
    s->rlen = n;
}

static void g_on_response(void *ud, void *call_ud, int st, const char *gmsg, const uint8_t *msg,
                          size_t len)
{
    (void)call_ud;
    qk_dsock *s = ud;
    s->done = true;
    s->status = st;
    if (st == 0)
        g_keep(s, msg, len);
    else
        g_keep(s, gmsg, strlen(gmsg));
}

static void g_on_stream_msg(void *ud, void *call_ud, const uint8_t *msg, size_t len)
{
    (void)ud, (void)call_ud, (void)msg, (void)len; /* direct sockets make unary calls only */
}

static void g_on_stream_end(void *ud, void *call_ud, int st, const char *gmsg)
{
    (void)ud, (void)call_ud, (void)st, (void)gmsg;
}

static const qk_grpc_client_cbs g_cbs = {.on_response = g_on_response,
                                         .on_stream_msg = g_on_stream_msg,
                                         .on_stream_end = g_on_stream_end};

static void g_out(void *wud, const uint8_t *p, size_t n)
{
    qk_dsock *s = wud;
    if (qk_buf_reserve(&s->out, &s->out_cap, s->out_len, n, 4096) != 0) {
        s->oom = true;
        return;
    }
    memcpy(s->out + s->out_len, p, n);
    s->out_len += n;
}

/* Write what the session has to say; returns the bytes written (all of it
 * when it returns s->out_len's old value). */
static size_t g_flush(qk_dsock *s, uint64_t at_ms, bool *all)
{
    s->out_len = 0;
    qk_grpc_client_flush(s->g, g_out, s);
    size_t n = s->oom ? 0 : qk_sock_write_all(s->fd, s->out, s->out_len, at_ms);
    *all = !s->oom && n == s->out_len;
    return n;
}

/* Take in what the silo sent while the socket sat idle (SETTINGS, PING);
 * false if the socket is not fit for a call (closed, GOAWAY, garbage). */
static bool g_idle_ok(qk_dsock *s)
{
    uint8_t b[4096];
    for (;;) {
        ssize_t r = recv(s->fd, b, sizeof b, MSG_DONTWAIT);
        if (r > 0) {
            if (qk_grpc_client_recv(s->g, b, (size_t)r) != 0)
                return false;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && qk_grpc_client_usable(s->g);
    }
}

/* A gRPC socket to `si`, asking for worker `shard` (UINT32_MAX: any, the
 * worker count is not known yet) in its first SETTINGS frame. */
static qk_dsock *sock_open_grpc(qk_direct *d, qk_dsilo *si, unsigned shard, uint64_t at_ms)
{
    qk_dsock *s = sock_connect(si, &at_ms);
    if (!s)
        return NULL;
    s->g = qk_grpc_client_new(&g_cbs, s, si->addr, d->max_msg + 4096,
                              shard == UINT32_MAX ? 0 : shard + 1);
    bool all = false;
    if (!s->g || (g_flush(s, at_ms, &all), !all)) { /* the preface and SETTINGS */
        close(s->fd);
        sock_free(s);
        return NULL;
    }
    s->shard = UINT32_MAX; /* which worker reads it: learnt from its first answer */
    return s;
}

static qk_dc_status grpc_call(qk_direct *d, qk_dsock *s, const char *addr, const uint8_t *body,
                              size_t len, uint64_t at_ms, qk_dc_result *res)
{
    s->done = false;
    s->oom = false;
    int32_t sid = qk_grpc_client_call(s->g, "/quark.ActorService/InvokeActor", 0, d->meta, body,
                                      len, 0, s);
    bool all = false;
    if (sid < 0 || g_flush(s, at_ms, &all) == 0) {
        sock_drop(d, s);
        return QK_DC_NOT_SENT;
    }
    if (!all) {
        snprintf(res->why, sizeof res->why, "writing to %s failed", addr);
        sock_drop(d, s);
        return QK_DC_LOST;
    }
    while (!s->done) {
        if (qk_buf_reserve(&s->in, &s->in_cap, 0, 65536, 65536) != 0) {
            snprintf(res->why, sizeof res->why, "out of memory");
            sock_drop(d, s);
            return QK_DC_LOST;
        }
        ssize_t r = recv(s->fd, s->in, s->in_cap, 0);
        if (r > 0) {
            s->last_in_ms = qk_now_ms_coarse();
            s->pinged = false;
            if (qk_grpc_client_recv(s->g, s->in, (size_t)r) != 0 && !s->done) {
                snprintf(res->why, sizeof res->why, "HTTP/2 error from %s", addr);
                sock_drop(d, s);
                return QK_DC_LOST;
            }
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            const char *silent = NULL;
            int w = wait_answer(d, s, at_ms, &silent);
            if (w > 0)
                continue;
            snprintf(res->why, sizeof res->why, "%s",
                     w == 0 ? "deadline" : silent ? silent : strerror(errno));
            sock_drop(d, s);
            return w == 0 ? QK_DC_TIMEOUT : QK_DC_LOST;
        }
        snprintf(res->why, sizeof res->why, "%s", r == 0 ? "closed by the silo" : strerror(errno));
        sock_drop(d, s);
        return QK_DC_LOST;
    }
    (void)g_flush(s, at_ms, &all); /* acknowledgements the answer called for */
    if (s->oom) {
        snprintf(res->why, sizeof res->why, "out of memory keeping the answer");
        sock_drop(d, s);
        return QK_DC_LOST;
    }
    res->grpc_status = s->status;
    if (s->status != 0) {
        snprintf(res->why, sizeof res->why, "%s", (const char *)s->rbuf);
    } else if (qk_wire_decode_response(s->rbuf, s->rlen, &res->resp) != 0) {
        snprintf(res->why, sizeof res->why, "the silo's response could not be decoded");
        sock_drop(d, s);
        return QK_DC_LOST;
    } else if (res->resp.workers && res->resp.workers <= 1024 && res->resp.served_by &&
               res->resp.served_by <= res->resp.workers) {
        s->shard = res->resp.served_by - 1;
        uv_mutex_lock(&d->mu);
        s->silo->workers = res->resp.workers;
        uv_mutex_unlock(&d->mu);
    }
    return QK_DC_ANSWERED;
}

/* ---- calls ---- */

static qk_dsilo *silo_get_locked(qk_direct *d, const char *addr)
{
    for (qk_dsilo *si = d->silos; si; si = si->next)
        if (!strcmp(si->addr, addr)) {
            si->gone = false; /* calls go there again */
            return si;
        }
    if (strlen(addr) >= QK_DIRECT_ADDR_MAX)
        return NULL;
    qk_dsilo *si = calloc(1, sizeof *si);
    if (!si)
        return NULL;
    strcpy(si->addr, addr);
    si->next = d->silos;
    d->silos = si;
    return si;
}

static unsigned shard_of(uint64_t hash, unsigned workers)
{
    return (unsigned)(((hash >> 32) * (uint64_t)workers) >> 32);
}

/* Under d->mu: an idle socket of si served by worker `shard`, dropping the
 * ones a restarted silo no longer has the worker for; NULL if none. */
static qk_dsock *take_idle_locked(qk_direct *d, qk_dsilo *si, unsigned workers, unsigned shard)
{
    for (qk_dsock **pp = &si->idle; *pp;) {
        qk_dsock *x = *pp;
        if (workers && x->shard != UINT32_MAX && x->shard >= workers) {
            *pp = x->next; /* the silo restarted with fewer workers */
            sock_drop_locked(d, x);
            continue;
        }
        if (workers && x->shard == shard) {
            *pp = x->next;
            return x;
        }
        pp = &x->next;
    }
    return NULL;
}

/* May an idle socket take a call? One the silo closed (stop, restart) or
 * wrote to (GOAWAY) must not: it could not tell "never got there" from
 * "ran, then the connection died". */
static bool idle_usable(qk_dsock *s)
{
    if (s->g)
        return g_idle_ok(s);
    char b;
    ssize_t p = recv(s->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return p < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* An idle socket of `si` for the actor `hash`, or a new one; NULL if the
 * pool has none to spare. */
static qk_dsock *acquire(qk_direct *d, const char *addr, uint64_t hash, uint64_t at_ms)
{
    /* Dropping a stale idle socket costs no attempt (the list only
     * shrinks); opening one on the wrong worker does. */
    for (int attempt = 0; attempt < 3;) {
        uv_mutex_lock(&d->mu);
        qk_dsilo *si = d->closed ? NULL : silo_get_locked(d, addr);
        if (!si) {
            uv_mutex_unlock(&d->mu);
            return NULL;
        }
        unsigned workers = si->workers;
        unsigned shard = workers ? shard_of(hash, workers) : UINT32_MAX;
        unsigned cap = d->per_worker * (workers ? workers : 1);
        qk_dsock *s = take_idle_locked(d, si, workers, shard);
        if (!s && si->total >= cap && d->grpc && si->idle) {
            /* gRPC: no socket on the actor's worker to spare; one on
             * another worker still saves the client's hand-offs. */
            s = si->idle;
            si->idle = s->next;
        }
        if (s) {
            s->busy = true;
            uv_mutex_unlock(&d->mu);
            if (idle_usable(s))
                return sock_taken(s);
            sock_drop(d, s);
            continue;
        }
        if (si->total >= cap) {
            uv_mutex_unlock(&d->mu);
            return NULL;
        }
        si->total++; /* reserved while we connect */
        uv_mutex_unlock(&d->mu);
        s = d->grpc ? sock_open_grpc(d, si, shard, at_ms) : sock_open(d, si, shard, at_ms);
        uv_mutex_lock(&d->mu);
        if (!s || d->closed) {
            si->total--;
            uv_mutex_unlock(&d->mu);
            if (s) {
                close(s->fd);
                sock_free(s);
            }
            return NULL;
        }
        s->all_next = d->all;
        if (d->all)
            d->all->all_prev = s;
        d->all = s;
        if (!s->g && si->workers && s->shard != shard_of(hash, si->workers)) {
            /* We learnt the worker count just now and got another worker:
             * keep it for its own actors, open the right one next. */
            s->next = si->idle;
            si->idle = s;
            uv_mutex_unlock(&d->mu);
            attempt++;
            continue;
        }
        s->busy = true;
        uv_mutex_unlock(&d->mu);
        return sock_taken(s);
    }
    return NULL;
}

void qk_direct_release(qk_direct *d, qk_dsock *s)
{
    uv_mutex_lock(&d->mu);
    if (d->closed || s->silo->gone) {
        bool gone = s->silo->gone;
        sock_drop_locked(d, s);
        if (gone)
            silos_prune_locked(d);
    } else {
        s->busy = false;
        s->next = s->silo->idle;
        s->silo->idle = s;
    }
    uv_mutex_unlock(&d->mu);
}

qk_dc_status qk_direct_call(qk_direct *d, const char *addr, uint64_t hash, uint8_t *frame,
                            size_t len, uint64_t deadline_at_ms, qk_dsock **held,
                            qk_dc_result *res)
{
    *held = NULL;
    res->why[0] = '\0';
    if (!d || d->per_worker == 0)
        return QK_DC_NOT_SENT;
    res->grpc_status = 0;
    qk_dsock *s = acquire(d, addr, hash, deadline_at_ms);
    if (!s)
        return QK_DC_NOT_SENT;
    if (s->g) {
        qk_dc_status st = grpc_call(d, s, addr, frame + QK_FRAME_HEADER, len - QK_FRAME_HEADER,
                                    deadline_at_ms, res);
        if (st == QK_DC_ANSWERED)
            *held = s;
        return st;
    }
    uint64_t id = ++s->next_id;
    for (int i = 0; i < 8; i++)
        frame[8 + i] = (uint8_t)(id >> (56 - 8 * i));
    size_t sent = qk_sock_write_all(s->fd, frame, len, deadline_at_ms);
    if (sent == 0) {
        sock_drop(d, s);
        return QK_DC_NOT_SENT;
    }
    if (sent < len) {
        snprintf(res->why, sizeof res->why, "writing to %s failed", addr);
        sock_drop(d, s);
        return QK_DC_LOST;
    }
    for (;;) {
        qk_frame f;
        const char *why = NULL;
        int rc = read_frame(d, s, deadline_at_ms, &f, &why);
        if (rc <= 0) {
            snprintf(res->why, sizeof res->why, "%s", why ? why : "connection failed");
            sock_drop(d, s); /* a late answer must not meet the next call */
            return rc == 0 ? QK_DC_TIMEOUT : QK_DC_LOST;
        }
        if (f.type != QK_FRAME_RESPONSE || f.id != id)
            continue; /* GOAWAY (the silo is stopping; our answer may still come), PONG */
        if (qk_wire_decode_response(f.payload, f.len, &res->resp) != 0) {
            snprintf(res->why, sizeof res->why, "the silo's response could not be decoded");
            sock_drop(d, s);
            return QK_DC_LOST;
        }
        *held = s;
        return QK_DC_ANSWERED;
    }
}
