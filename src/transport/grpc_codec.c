/*
 * grpc_codec.c - gRPC over HTTP/2 on nghttp2 1.52, without I/O (see
 * grpc_codec.h for the contract).
 *
 * Layout: message reassembly (qk_rx) and the send queue with its nghttp2 data
 * provider (qk_tx) are shared by both sides; then the server, the client and
 * small helpers (percent-encoding, grpc-timeout, HTTP status mapping).
 *
 * Ownership of a stream record: created when its stream starts (server: on
 * the request's first HEADERS; client: by qk_grpc_client_call), registered
 * as nghttp2 stream user data and kept on the codec's list, freed in
 * on_stream_close or when the codec is freed. API calls find it through
 * nghttp2_session_get_stream_user_data, which returns NULL once the stream is
 * closed, so an answer for a stale stream id finds nothing and is refused.
 */
#include "grpc_codec.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "quark/error.h"
#include "core/common.h" /* qk_now_ms_coarse */

#define QK_STAGE_SIZE (32u * 1024u)      /* output coalescing buffer */
#define QK_STREAM_WINDOW (1 << 20)       /* SETTINGS_INITIAL_WINDOW_SIZE */
#define QK_CONN_WINDOW (16 << 20)        /* connection receive window */
#define QK_PEER_STREAMS_BEFORE_SETTINGS 100
#define QK_KEEP_BUF (64u * 1024u)        /* buffers above this are released when idle */
#define QK_SHUTDOWN_PING "qkshutdn"      /* 8 bytes of opaque PING data */

static const uint8_t qk_empty[1];        /* msg pointer for empty messages */

#define QK_NAME_IS(name, namelen, lit) \
    ((namelen) == sizeof(lit) - 1 && memcmp((name), (lit), sizeof(lit) - 1) == 0)
#define QK_NV(n, v, vlen) \
    { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vlen), NGHTTP2_NV_FLAG_NONE }
#define QK_NVS(n, v) QK_NV(n, v, strlen(v))

static char *qk_strndup(const uint8_t *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* ---- message reassembly ----------------------------------------------- */

enum {
    QK_RX_MORE = 0,        /* all bytes taken, message not complete */
    QK_RX_MSG = 1,         /* a message is complete in rx->buf[0..need) */
    QK_RX_TOOBIG = -1,     /* declared length over max_msg */
    QK_RX_COMPRESSED = -2, /* compressed flag set */
    QK_RX_BADFLAG = -3,    /* reserved flag bits set */
    QK_RX_NOMEM = -4,
    QK_RX_BUDGET = -5      /* the connection's buffering budget is spent */
};

typedef struct qk_rx {
    uint8_t hdr[5];   /* compressed flag + big-endian length */
    uint8_t hdr_n;    /* prefix bytes seen of the current message */
    uint32_t need;    /* payload length of the current message */
    uint32_t have;    /* payload bytes seen */
    size_t cap;
    uint8_t *buf;
} qk_rx;

/* Inside a message (prefix or payload) that is not complete. */
static int qk_rx_partial(const qk_rx *rx)
{
    return rx->hdr_n > 0 && !(rx->hdr_n == 5 && rx->have == rx->need);
}

static void qk_rx_reset(qk_rx *rx)
{
    rx->hdr_n = 0;
    rx->need = rx->have = 0;
}

static void qk_rx_free(qk_rx *rx, size_t *used)
{
    if (used)
        *used -= rx->cap;
    free(rx->buf);
    rx->buf = NULL;
    rx->cap = 0;
    qk_rx_reset(rx);
}

/* Take bytes from (*pp, *plen) up to the end of the current message. The buffer
 * grows with what arrives (never past the declared length), so a peer that
 * announces a large message without sending it costs nothing. `used` (may be
 * NULL) counts buffer bytes against `limit`. */
static int qk_rx_feed(qk_rx *rx, const uint8_t **pp, size_t *plen, size_t max_msg,
                      size_t *used, size_t limit)
{
    const uint8_t *p = *pp;
    size_t n = *plen;
    int r = QK_RX_MORE;

    if (rx->hdr_n < 5) {
        size_t k = 5u - rx->hdr_n;
        if (k > n)
            k = n;
        memcpy(rx->hdr + rx->hdr_n, p, k);
        rx->hdr_n = (uint8_t)(rx->hdr_n + k);
        p += k;
        n -= k;
        if (rx->hdr_n < 5)
            goto out;
        if (rx->hdr[0] == 1)
            return QK_RX_COMPRESSED;
        if (rx->hdr[0] != 0)
            return QK_RX_BADFLAG;
        rx->need = (uint32_t)rx->hdr[1] << 24 | (uint32_t)rx->hdr[2] << 16 |
                   (uint32_t)rx->hdr[3] << 8 | rx->hdr[4];
        rx->have = 0;
        if (rx->need > max_msg)
            return QK_RX_TOOBIG;
    }
    size_t k = rx->need - rx->have;
    if (k > n)
        k = n;
    if (k > 0) {
        size_t want = (size_t)rx->have + k;
        if (want > rx->cap) {
            size_t ncap = rx->cap ? rx->cap : 256;
            while (ncap < want)
                ncap *= 2;
            if (ncap > rx->need)
                ncap = rx->need;
            if (used && *used + (ncap - rx->cap) > limit)
                return QK_RX_BUDGET;
            uint8_t *nb = realloc(rx->buf, ncap);
            if (!nb)
                return QK_RX_NOMEM;
            if (used)
                *used += ncap - rx->cap;
            rx->buf = nb;
            rx->cap = ncap;
        }
        memcpy(rx->buf + rx->have, p, k);
        rx->have += (uint32_t)k;
        p += k;
        n -= k;
    }
    if (rx->have == rx->need)
        r = QK_RX_MSG;
out:
    *pp = p;
    *plen = n;
    return r;
}

static const uint8_t *qk_rx_msg(const qk_rx *rx)
{
    return rx->buf ? rx->buf : qk_empty;
}

/* ---- send queue and data provider ------------------------------------- */

typedef struct qk_tx {
    uint8_t *buf;      /* framed messages; buf[rd..len) not yet given to nghttp2 */
    size_t rd, len, cap;
    uint8_t ended;     /* no more messages: EOF once the queue is drained */
    uint8_t deferred;  /* the provider returned NGHTTP2_ERR_DEFERRED */
    uint8_t trailers;  /* server: send grpc-status trailers at EOF */
    int status;
    char *message;     /* percent-encoded grpc-message, or NULL */
} qk_tx;

static void qk_tx_free(qk_tx *tx)
{
    free(tx->buf);
    free(tx->message);
    tx->buf = NULL;
    tx->message = NULL;
    tx->rd = tx->len = tx->cap = 0;
}

/* Queue one message with its 5-byte prefix. */
static int qk_tx_put(qk_tx *tx, const uint8_t *msg, size_t len)
{
    if (len > UINT32_MAX)
        return QUARK_ETOOBIG;
    size_t need = 5 + len;
    if (tx->rd == tx->len)
        tx->rd = tx->len = 0;
    if (tx->cap - tx->len < need && tx->rd > 0) {
        memmove(tx->buf, tx->buf + tx->rd, tx->len - tx->rd);
        tx->len -= tx->rd;
        tx->rd = 0;
    }
    if (tx->cap - tx->len < need) {
        size_t ncap = tx->cap ? tx->cap * 2 : 256;
        while (ncap < tx->len + need)
            ncap *= 2;
        uint8_t *nb = realloc(tx->buf, ncap);
        if (!nb)
            return QUARK_ENOMEM;
        tx->buf = nb;
        tx->cap = ncap;
    }
    uint8_t *p = tx->buf + tx->len;
    p[0] = 0;
    p[1] = (uint8_t)(len >> 24);
    p[2] = (uint8_t)(len >> 16);
    p[3] = (uint8_t)(len >> 8);
    p[4] = (uint8_t)len;
    if (len)
        memcpy(p + 5, msg, len);
    tx->len += need;
    return 0;
}

static int qk_submit_trailers(nghttp2_session *ng, int32_t id, const qk_tx *tx)
{
    char st[16];
    snprintf(st, sizeof st, "%d", tx->status);
    nghttp2_nv nv[2] = {QK_NVS("grpc-status", st), QK_NVS("grpc-message", "")};
    size_t n = 1;
    if (tx->message)
        nv[n++] = (nghttp2_nv)QK_NVS("grpc-message", tx->message);
    return nghttp2_submit_trailer(ng, id, nv, n);
}

/* nghttp2_data_source_read_callback of both sides: hand out queued bytes;
 * when the queue is empty either wait (DEFERRED, resumed by the next
 * message) or end: EOF, and on the server the trailers are submitted here,
 * after the last DATA, with NO_END_STREAM (they carry END_STREAM). */
static ssize_t qk_tx_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                          uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ud;
    qk_tx *tx = src->ptr;
    size_t avail = tx->len - tx->rd;
    if (avail == 0 && !tx->ended) {
        tx->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = avail < length ? avail : length;
    if (n) {
        memcpy(buf, tx->buf + tx->rd, n);
        tx->rd += n;
    }
    if (tx->rd == tx->len) {
        tx->rd = tx->len = 0;
        if (tx->cap > QK_KEEP_BUF) {
            free(tx->buf);
            tx->buf = NULL;
            tx->cap = 0;
        }
        if (tx->ended) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (tx->trailers) {
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                if (qk_submit_trailers(ng, id, tx) != 0)
                    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            }
        }
    }
    return (ssize_t)n;
}

/* ---- helpers ---------------------------------------------------------- */

static int qk_pct_needs(unsigned char c)
{
    return c < 0x20 || c > 0x7E || c == '%';
}

/* grpc-message encoding: NULL for no message. *nomem set on failure. */
static char *qk_pct_encode(const char *m, int *nomem)
{
    static const char hex[] = "0123456789ABCDEF";
    *nomem = 0;
    if (!m || !*m)
        return NULL;
    size_t n = strlen(m);
    if (n > QK_GRPC_MESSAGE_MAX) {
        n = QK_GRPC_MESSAGE_MAX;
        while (n > 0 && ((unsigned char)m[n] & 0xC0) == 0x80)
            n--;
    }
    size_t out = 0;
    for (size_t i = 0; i < n; i++)
        out += qk_pct_needs((unsigned char)m[i]) ? 3 : 1;
    char *e = malloc(out + 1);
    if (!e) {
        *nomem = 1;
        return NULL;
    }
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)m[i];
        if (qk_pct_needs(c)) {
            e[j++] = '%';
            e[j++] = hex[c >> 4];
            e[j++] = hex[c & 15];
        } else {
            e[j++] = (char)c;
        }
    }
    e[j] = '\0';
    return e;
}

static int qk_hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode %XX sequences; an invalid sequence is kept as it is (gRPC spec). */
static char *qk_pct_decode(const uint8_t *v, size_t n)
{
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (v[i] == '%' && i + 2 < n && (hi = qk_hexval(v[i + 1])) >= 0 &&
            (lo = qk_hexval(v[i + 2])) >= 0) {
            d[j++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            d[j++] = (char)v[i];
        }
    }
    d[j] = '\0';
    return d;
}

int qk_grpc_parse_timeout(const char *v, size_t len, uint64_t *ms)
{
    if (!v || !ms || len < 2 || len > 9)
        return -1;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H': n *= 3600000u; break;
    case 'M': n *= 60000u; break;
    case 'S': n *= 1000u; break;
    case 'm': break;
    case 'u': n = (n + 999u) / 1000u; break;
    case 'n': n = (n + 999999u) / 1000000u; break;
    default: return -1;
    }
    if (n == 0)
        n = 1;
    if (n > QK_GRPC_TIMEOUT_MAX_MS)
        n = QK_GRPC_TIMEOUT_MAX_MS;
    *ms = n;
    return 0;
}

/* Shortest exact-or-rounded-up encoding with at most 8 digits. */
static void qk_fmt_timeout(char *out, size_t cap, uint64_t ms)
{
    const uint64_t max = 99999999u;
    if (ms <= max) {
        snprintf(out, cap, "%llum", (unsigned long long)ms);
        return;
    }
    uint64_t v = (ms + 999u) / 1000u;
    if (v <= max) {
        snprintf(out, cap, "%lluS", (unsigned long long)v);
        return;
    }
    v = (v + 59u) / 60u;
    if (v <= max) {
        snprintf(out, cap, "%lluM", (unsigned long long)v);
        return;
    }
    v = (v + 59u) / 60u;
    snprintf(out, cap, "%lluH", (unsigned long long)(v <= max ? v : max));
}

int qk_grpc_status_from_http(int http_status)
{
    switch (http_status) {
    case 400: return QK_GRPC_INTERNAL;
    case 401: return QK_GRPC_UNAUTHENTICATED;
    case 403: return QK_GRPC_PERMISSION_DENIED;
    case 404: return QK_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504: return QK_GRPC_UNAVAILABLE;
    default: return QK_GRPC_UNKNOWN;
    }
}

/* The one map between Quark errors and gRPC statuses (see the header).
 * qk_grpc_status_of takes the first row of an error, qk_grpc_err_of the
 * first row of a status. */
static const struct {
    quark_err err;
    int status;
} qk_grpc_map[] = {
    {QUARK_OK, QK_GRPC_OK},
    {QUARK_ENOTYPE, QK_GRPC_NOT_FOUND},
    {QUARK_ENOMETHOD, QK_GRPC_UNIMPLEMENTED},
    {QUARK_EUNIMPLEMENTED, QK_GRPC_UNIMPLEMENTED},
    {QUARK_EINVAL, QK_GRPC_INVALID_ARGUMENT},
    {QUARK_EBADARGS, QK_GRPC_INVALID_ARGUMENT},
    {QUARK_ETIMEDOUT, QK_GRPC_DEADLINE_EXCEEDED},
    {QUARK_ETOOBIG, QK_GRPC_RESOURCE_EXHAUSTED},
    {QUARK_EOVERLOAD, QK_GRPC_RESOURCE_EXHAUSTED},
    {QUARK_ECLUSTER, QK_GRPC_FAILED_PRECONDITION},
    {QUARK_ECYCLE, QK_GRPC_ABORTED},
    {QUARK_ECONFLICT, QK_GRPC_ABORTED},
    {QUARK_EUNAVAILABLE, QK_GRPC_UNAVAILABLE},
    {QUARK_ECLOSED, QK_GRPC_UNAVAILABLE},
    {QUARK_ESTORAGE, QK_GRPC_UNAVAILABLE},
    {QUARK_EUNKNOWN, QK_GRPC_UNKNOWN},
    {QUARK_ECLOSED, QK_GRPC_CANCELLED}, /* read only: a cancelled call was closed */
};

int qk_grpc_status_of(quark_err err)
{
    for (size_t i = 0; i < sizeof qk_grpc_map / sizeof qk_grpc_map[0]; i++)
        if (qk_grpc_map[i].err == err)
            return qk_grpc_map[i].status;
    return QK_GRPC_INTERNAL;
}

quark_err qk_grpc_err_of(int grpc_status)
{
    for (size_t i = 0; i < sizeof qk_grpc_map / sizeof qk_grpc_map[0]; i++)
        if (qk_grpc_map[i].status == grpc_status)
            return qk_grpc_map[i].err;
    return QUARK_EINTERNAL;
}

/* application/grpc, application/grpc+proto, application/grpc;params. */
static int qk_is_grpc_content_type(const uint8_t *v, size_t n)
{
    static const char base[] = "application/grpc";
    size_t b = sizeof base - 1;
    if (n < b || memcmp(v, base, b) != 0)
        return 0;
    if (n == b || v[b] == ';')
        return 1;
    return n >= b + 6 && memcmp(v + b, "+proto", 6) == 0 && (n == b + 6 || v[b + 6] == ';');
}

/* Drain nghttp2's output into write(), coalescing small frames. Returns the
 * bytes moved; *fatal is set if nghttp2 failed. */
static size_t qk_flush(nghttp2_session *ng, uint8_t *stage,
                       void (*write)(void *wud, const uint8_t *data, size_t len), void *wud,
                       int *fatal)
{
    size_t total = 0, staged = 0;
    for (;;) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(ng, &p);
        if (n < 0) {
            *fatal = 1;
            break;
        }
        if (n == 0)
            break;
        size_t len = (size_t)n;
        total += len;
        if (staged + len > QK_STAGE_SIZE && staged) {
            write(wud, stage, staged);
            staged = 0;
        }
        if (len >= QK_STAGE_SIZE) {
            write(wud, p, len);
        } else {
            memcpy(stage + staged, p, len);
            staged += len;
        }
    }
    if (staged)
        write(wud, stage, staged);
    return total;
}

static int qk_map_ng_error(int rv)
{
    return rv == NGHTTP2_ERR_NOMEM ? QUARK_ENOMEM : QUARK_EPROTO;
}

/* ---- server ----------------------------------------------------------- */

typedef struct qk_gs_stream {
    struct qk_gs_stream *prev, *next;
    int32_t id;
    uint8_t post;      /* :method is POST */
    uint8_t grpc_ct;   /* content-type is gRPC */
    uint8_t rejected;  /* the codec answered; the rest of the request is ignored */
    uint8_t held;      /* one complete message waits in rx for END_STREAM */
    uint8_t app_holds; /* on_request fired, the final answer not given yet */
    uint8_t answered;  /* response (or Trailers-Only) submitted */
    char *path;
    size_t path_len;
    char *cluster_id;
    uint64_t timeout_ms;
    uint64_t began_ms; /* its HEADERS came (qk_grpc_server_oldest_request_ms) */
    qk_rx rx;
    qk_tx tx;
} qk_gs_stream;

struct qk_grpc_server {
    nghttp2_session *ng;
    qk_grpc_server_cbs cbs;
    void *ud;
    size_t max_msg;
    size_t rx_used;      /* request buffer bytes of all streams */
    qk_gs_stream *streams;
    uint8_t shutting_down, goaway_final, freeing, fatal;
    uint8_t ready;        /* the client's SETTINGS came */
    int32_t goaway_last;  /* last stream id of the final GOAWAY */
    uint8_t stage[QK_STAGE_SIZE];
};

static void srv_stream_free(qk_grpc_server *s, qk_gs_stream *st)
{
    qk_rx_free(&st->rx, &s->rx_used);
    qk_tx_free(&st->tx);
    free(st->path);
    free(st->cluster_id);
    free(st);
}

static void srv_unlink(qk_grpc_server *s, qk_gs_stream *st)
{
    if (st->prev)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
}

static qk_gs_stream *srv_find(qk_grpc_server *s, int32_t id)
{
    if (!s || s->freeing || id <= 0)
        return NULL;
    return nghttp2_session_get_stream_user_data(s->ng, id);
}

static int srv_clamp_status(int status)
{
    return status < 0 || status > QK_GRPC_STATUS_MAX ? QK_GRPC_UNKNOWN : status;
}

/* Trailers-Only response: one HEADERS frame with END_STREAM. */
static int srv_trailers_only(qk_grpc_server *s, qk_gs_stream *st, int status, const char *enc,
                             int accept_identity)
{
    char sb[16];
    snprintf(sb, sizeof sb, "%d", status);
    nghttp2_nv nv[5] = {
        QK_NVS(":status", "200"),
        QK_NVS("content-type", "application/grpc"),
        QK_NVS("grpc-status", sb),
    };
    size_t n = 3;
    if (enc)
        nv[n++] = (nghttp2_nv)QK_NVS("grpc-message", enc);
    if (accept_identity)
        nv[n++] = (nghttp2_nv)QK_NVS("grpc-accept-encoding", "identity");
    st->answered = 1;
    return nghttp2_submit_response(s->ng, st->id, nv, n, NULL);
}

/* The codec answers a request itself (it never reaches the app). */
static void srv_reject(qk_grpc_server *s, qk_gs_stream *st, int status, int accept_identity,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void srv_reject(qk_grpc_server *s, qk_gs_stream *st, int status, int accept_identity,
                       const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    st->rejected = 1;
    qk_rx_free(&st->rx, &s->rx_used);
    int nomem;
    char *enc = qk_pct_encode(msg, &nomem);
    if (srv_trailers_only(s, st, status, enc, accept_identity) != 0)
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    free(enc);
}

/* Not a gRPC request: a plain HTTP error response without grpc-status. */
static void srv_reject_http(qk_grpc_server *s, qk_gs_stream *st, const char *code)
{
    nghttp2_nv nv[2] = {QK_NVS(":status", code), QK_NVS("allow", "POST")};
    size_t n = strcmp(code, "405") == 0 ? 2 : 1;
    st->rejected = 1;
    st->answered = 1;
    qk_rx_free(&st->rx, &s->rx_used);
    if (nghttp2_submit_response(s->ng, st->id, nv, n, NULL) != 0)
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
}

static void srv_end_of_request(qk_grpc_server *s, qk_gs_stream *st)
{
    if (!st || st->rejected || st->app_holds || st->answered)
        return;
    if (st->held) {
        st->app_holds = 1;
        s->cbs.on_request(s->ud, st->id, st->path ? st->path : "", st->path_len, st->timeout_ms,
                          st->cluster_id, qk_rx_msg(&st->rx), st->rx.need);
        /* The stream record lives on (it is only freed in on_stream_close,
         * which cannot run inside this callback); drop what the app has seen. */
        qk_rx_free(&st->rx, &s->rx_used);
        free(st->path);
        free(st->cluster_id);
        st->path = st->cluster_id = NULL;
    } else if (qk_rx_partial(&st->rx)) {
        if (st->rx.hdr_n < 5)
            srv_reject(s, st, QK_GRPC_INTERNAL, 0,
                       "request ended inside a message prefix (%u of 5 bytes)",
                       (unsigned)st->rx.hdr_n);
        else
            srv_reject(s, st, QK_GRPC_INTERNAL, 0,
                       "request ended inside a message (%u of %u bytes)",
                       (unsigned)st->rx.have, (unsigned)st->rx.need);
    } else {
        srv_reject(s, st, QK_GRPC_INTERNAL, 0, "request has no message");
    }
}

static void srv_rx_error(qk_grpc_server *s, qk_gs_stream *st, int r)
{
    switch (r) {
    case QK_RX_TOOBIG:
        srv_reject(s, st, QK_GRPC_RESOURCE_EXHAUSTED, 0,
                   "request message of %u bytes is larger than the limit of %zu bytes",
                   (unsigned)st->rx.need, s->max_msg);
        break;
    case QK_RX_COMPRESSED:
        srv_reject(s, st, QK_GRPC_UNIMPLEMENTED, 1, "compression not supported");
        break;
    case QK_RX_BADFLAG:
        srv_reject(s, st, QK_GRPC_INTERNAL, 0, "invalid message flags 0x%02x",
                   (unsigned)st->rx.hdr[0]);
        break;
    case QK_RX_BUDGET:
        srv_reject(s, st, QK_GRPC_RESOURCE_EXHAUSTED, 0,
                   "the connection is buffering too many request bytes (limit %zu)",
                   (size_t)QK_GRPC_SERVER_RX_BUDGET);
        break;
    default:
        srv_reject(s, st, QK_GRPC_RESOURCE_EXHAUSTED, 0, "out of memory reading the request");
        break;
    }
}

static int srv_on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    qk_grpc_server *s = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (s->goaway_final && frame->hd.stream_id > s->goaway_last) {
        /* Arrived after the final GOAWAY was submitted but before it left:
         * nghttp2 would still take it, yet the GOAWAY tells the client it was
         * not processed (and may be retried elsewhere), so it must not run. */
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    qk_gs_stream *st = calloc(1, sizeof *st);
    if (!st)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    st->id = frame->hd.stream_id;
    st->began_ms = qk_now_ms_coarse();
    if (nghttp2_session_set_stream_user_data(ng, st->id, st) != 0) {
        free(st);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    st->next = s->streams;
    if (s->streams)
        s->streams->prev = st;
    s->streams = st;
    return 0;
}

static int srv_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *ud)
{
    (void)flags;
    (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    qk_gs_stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!st)
        return 0;
    if (QK_NAME_IS(name, namelen, ":method")) {
        st->post = QK_NAME_IS(value, valuelen, "POST");
    } else if (QK_NAME_IS(name, namelen, ":path")) {
        if (!st->path) {
            if (!(st->path = qk_strndup(value, valuelen)))
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            st->path_len = valuelen;
        }
    } else if (QK_NAME_IS(name, namelen, "content-type")) {
        st->grpc_ct = (uint8_t)qk_is_grpc_content_type(value, valuelen);
    } else if (QK_NAME_IS(name, namelen, "grpc-timeout")) {
        uint64_t ms;
        if (qk_grpc_parse_timeout((const char *)value, valuelen, &ms) == 0)
            st->timeout_ms = ms; /* an invalid value is ignored: no deadline */
    } else if (QK_NAME_IS(name, namelen, QK_GRPC_CLUSTER_HEADER)) {
        if (!st->cluster_id && !(st->cluster_id = qk_strndup(value, valuelen)))
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

static int srv_on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                             size_t len, void *ud)
{
    (void)flags;
    qk_grpc_server *s = ud;
    qk_gs_stream *st = nghttp2_session_get_stream_user_data(ng, id);
    if (!st || st->rejected || st->app_holds || st->answered)
        return 0;
    while (len > 0) {
        if (st->held) {
            srv_reject(s, st, QK_GRPC_UNIMPLEMENTED, 0,
                       "client streaming is not supported: the request has more than one "
                       "message");
            return 0;
        }
        int r = qk_rx_feed(&st->rx, &data, &len, s->max_msg, &s->rx_used,
                           QK_GRPC_SERVER_RX_BUDGET);
        if (r == QK_RX_MSG) {
            st->held = 1;
        } else if (r < 0) {
            srv_rx_error(s, st, r);
            return 0;
        }
    }
    return 0;
}

/* The GOAWAY that ends the connection: streams up to the last one received
 * may finish; later ones are refused (they did not run). */
static void srv_final_goaway(qk_grpc_server *s)
{
    if (s->goaway_final)
        return;
    s->shutting_down = 1;
    s->goaway_final = 1;
    s->goaway_last = nghttp2_session_get_last_proc_stream_id(s->ng);
    nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, s->goaway_last, NGHTTP2_NO_ERROR, NULL, 0);
}

static int srv_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    qk_grpc_server *s = ud;
    qk_gs_stream *st;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
        if (st && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (!st->post)
                srv_reject_http(s, st, "405");
            else if (!st->grpc_ct)
                srv_reject_http(s, st, "415");
        }
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
            srv_end_of_request(s, st);
        break;
    case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
            srv_end_of_request(s, nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id));
        break;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            s->ready = 1;
        break;
    case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && s->shutting_down &&
            memcmp(frame->ping.opaque_data, QK_SHUTDOWN_PING, 8) == 0)
            srv_final_goaway(s);
        break;
    default:
        break;
    }
    return 0;
}

/* Once our END_STREAM is out while the client is still sending (the codec
 * answered early), reset the stream so it stops; not earlier, or nghttp2
 * would drop the response headers. */
static int srv_on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    (void)ud;
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && frame->hd.stream_id > 0 &&
        nghttp2_session_get_stream_remote_close(ng, frame->hd.stream_id) == 0)
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int srv_on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    (void)error_code;
    qk_grpc_server *s = ud;
    qk_gs_stream *st = nghttp2_session_get_stream_user_data(ng, id);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    srv_unlink(s, st);
    int holds = st->app_holds;
    st->app_holds = 0;
    if (holds && s->cbs.on_cancel)
        s->cbs.on_cancel(s->ud, id);
    srv_stream_free(s, st);
    return 0;
}

qk_grpc_server *qk_grpc_server_new(const qk_grpc_server_cbs *cbs, void *ud, size_t max_msg,
                                   uint32_t max_streams)
{
    if (!cbs || !cbs->on_request)
        return NULL;
    qk_grpc_server *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cbs = *cbs;
    s->ud = ud;
    s->max_msg = max_msg > UINT32_MAX ? UINT32_MAX : max_msg;

    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0) {
        free(s);
        return NULL;
    }
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        free(s);
        return NULL;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, srv_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, srv_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, srv_on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, srv_on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, srv_on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, srv_on_stream_close);
    nghttp2_option_set_no_closed_streams(opt, 1);
    int rv = nghttp2_session_server_new2(&s->ng, cb, s, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rv != 0) {
        free(s);
        return NULL;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
         max_streams ? max_streams : QK_GRPC_MAX_CONCURRENT_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, QK_STREAM_WINDOW},
    };
    if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0 ||
        nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, QK_CONN_WINDOW) != 0) {
        nghttp2_session_del(s->ng);
        free(s);
        return NULL;
    }
    return s;
}

int qk_grpc_server_recv(qk_grpc_server *s, const uint8_t *data, size_t len)
{
    if (!s || (!data && len))
        return QUARK_EINVAL;
    if (s->fatal)
        return QUARK_EPROTO;
    ssize_t n = nghttp2_session_mem_recv(s->ng, data, len);
    if (n < 0) {
        s->fatal = 1;
        nghttp2_session_terminate_session(
            s->ng, n == NGHTTP2_ERR_NOMEM ? NGHTTP2_INTERNAL_ERROR : NGHTTP2_PROTOCOL_ERROR);
        return qk_map_ng_error((int)n);
    }
    return 0;
}

/* Submit the response headers with the data provider, or wake the provider. */
static int srv_start_or_resume(qk_grpc_server *s, qk_gs_stream *st)
{
    if (!st->answered) {
        nghttp2_nv nv[2] = {QK_NVS(":status", "200"),
                            QK_NVS("content-type", "application/grpc")};
        nghttp2_data_provider prd;
        prd.source.ptr = &st->tx;
        prd.read_callback = qk_tx_read;
        st->tx.trailers = 1;
        if (nghttp2_submit_response(s->ng, st->id, nv, 2, &prd) != 0)
            return QUARK_ENOMEM;
        st->answered = 1;
    } else if (st->tx.deferred) {
        st->tx.deferred = 0;
        if (nghttp2_session_resume_data(s->ng, st->id) != 0)
            return QUARK_ECLOSED;
    }
    return 0;
}

static int srv_finish(qk_grpc_server *s, qk_gs_stream *st, int status, const char *message)
{
    int nomem;
    char *enc = qk_pct_encode(message, &nomem);
    st->app_holds = 0;
    if (nomem) {
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return QUARK_ENOMEM;
    }
    status = srv_clamp_status(status);
    if (!st->answered && st->tx.rd == st->tx.len) {
        int rv = srv_trailers_only(s, st, status, enc, 0);
        free(enc);
        if (rv != 0) {
            nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
            return QUARK_ENOMEM;
        }
        return 0;
    }
    st->tx.ended = 1;
    st->tx.status = status;
    st->tx.message = enc;
    int rv = srv_start_or_resume(s, st);
    if (rv != 0)
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    return rv;
}

int qk_grpc_server_respond(qk_grpc_server *s, int32_t stream_id, int grpc_status,
                           const char *grpc_message, const uint8_t *msg, size_t len)
{
    qk_gs_stream *st = srv_find(s, stream_id);
    if (!st || !st->app_holds)
        return QUARK_ECLOSED;
    if (msg) {
        int rv = qk_tx_put(&st->tx, msg, len);
        if (rv != 0)
            return rv;
    } else if (len) {
        return QUARK_EINVAL;
    }
    return srv_finish(s, st, grpc_status, grpc_message);
}

int qk_grpc_server_stream_send(qk_grpc_server *s, int32_t stream_id, const uint8_t *msg,
                               size_t len)
{
    qk_gs_stream *st = srv_find(s, stream_id);
    if (!st || !st->app_holds)
        return QUARK_ECLOSED;
    if (!msg && len)
        return QUARK_EINVAL;
    int rv = qk_tx_put(&st->tx, msg, len);
    if (rv != 0)
        return rv;
    return srv_start_or_resume(s, st);
}

int qk_grpc_server_stream_end(qk_grpc_server *s, int32_t stream_id, int grpc_status,
                              const char *grpc_message)
{
    qk_gs_stream *st = srv_find(s, stream_id);
    if (!st || !st->app_holds)
        return QUARK_ECLOSED;
    return srv_finish(s, st, grpc_status, grpc_message);
}

size_t qk_grpc_server_stream_queued(qk_grpc_server *s, int32_t stream_id)
{
    qk_gs_stream *st = srv_find(s, stream_id);
    return st ? st->tx.len - st->tx.rd : 0;
}

size_t qk_grpc_server_flush(qk_grpc_server *s,
                            void (*write)(void *wud, const uint8_t *data, size_t len), void *wud)
{
    if (!s || !write || s->freeing)
        return 0;
    int fatal = 0;
    size_t n = qk_flush(s->ng, s->stage, write, wud, &fatal);
    if (fatal)
        s->fatal = 1;
    return n;
}

uint64_t qk_grpc_server_oldest_request_ms(const qk_grpc_server *s)
{
    uint64_t oldest = 0;
    for (const qk_gs_stream *st = s ? s->streams : NULL; st; st = st->next)
        if (!st->app_holds && !st->answered && !st->rejected &&
            (!oldest || st->began_ms < oldest))
            oldest = st->began_ms;
    return oldest;
}

int qk_grpc_server_ready(const qk_grpc_server *s)
{
    return s && s->ready;
}

int qk_grpc_server_want_close(const qk_grpc_server *s)
{
    if (!s)
        return 1;
    if (nghttp2_session_want_write(s->ng))
        return 0;
    return s->fatal || !nghttp2_session_want_read(s->ng);
}

void qk_grpc_server_shutdown(qk_grpc_server *s)
{
    if (!s || s->shutting_down)
        return;
    s->shutting_down = 1;
    if (nghttp2_submit_shutdown_notice(s->ng) != 0 ||
        nghttp2_submit_ping(s->ng, NGHTTP2_FLAG_NONE, (const uint8_t *)QK_SHUTDOWN_PING) != 0)
        srv_final_goaway(s); /* cannot do it in two steps: refuse new streams now */
}

void qk_grpc_server_goaway_now(qk_grpc_server *s)
{
    if (s)
        srv_final_goaway(s);
}

void qk_grpc_server_free(qk_grpc_server *s)
{
    if (!s)
        return;
    s->freeing = 1; /* answers from on_cancel are refused */
    for (qk_gs_stream *st = s->streams; st; st = st->next) {
        if (st->app_holds) {
            st->app_holds = 0;
            if (s->cbs.on_cancel)
                s->cbs.on_cancel(s->ud, st->id);
        }
    }
    nghttp2_session_del(s->ng);
    while (s->streams) {
        qk_gs_stream *st = s->streams;
        s->streams = st->next;
        srv_stream_free(s, st);
    }
    free(s);
}

/* ---- client ----------------------------------------------------------- */

typedef struct qk_gc_call {
    struct qk_gc_call *prev, *next;
    int32_t id;
    void *call_ud;
    uint8_t streaming;
    uint8_t done;      /* the final callback ran, or the call was cancelled */
    uint8_t held;      /* unary: the response message is complete in rx */
    int http_status;   /* 0 until the response headers */
    int grpc_status;   /* -1 until grpc-status */
    char *grpc_message;
    qk_rx rx;
    qk_tx tx;
} qk_gc_call;

struct qk_grpc_client {
    nghttp2_session *ng;
    qk_grpc_client_cbs cbs;
    void *ud;
    size_t max_msg;
    char *authority;
    qk_gc_call *calls;
    uint8_t goaway, dead, fatal;
    uint8_t stage[QK_STAGE_SIZE];
};

static void cli_call_free(qk_gc_call *call)
{
    qk_rx_free(&call->rx, NULL);
    qk_tx_free(&call->tx);
    free(call->grpc_message);
    free(call);
}

static void cli_unlink(qk_grpc_client *c, qk_gc_call *call)
{
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    call->prev = call->next = NULL;
}

/* The one final callback of a call. */
static void cli_complete(qk_grpc_client *c, qk_gc_call *call, int status, const char *message)
{
    if (call->done)
        return;
    call->done = 1;
    if (!message)
        message = "";
    if (call->streaming) {
        c->cbs.on_stream_end(c->ud, call->call_ud, status, message);
    } else if (status == QK_GRPC_OK) {
        c->cbs.on_response(c->ud, call->call_ud, status, message, qk_rx_msg(&call->rx),
                           call->rx.need);
    } else {
        c->cbs.on_response(c->ud, call->call_ud, status, message, NULL, 0);
    }
    qk_rx_free(&call->rx, NULL);
}

/* The client gives up on a call it finds broken: report, then reset the stream. */
static void cli_fail(qk_grpc_client *c, qk_gc_call *call, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void cli_fail(qk_grpc_client *c, qk_gc_call *call, int status, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_complete(c, call, status, msg);
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_CANCEL);
}

/* The server ended its side (END_STREAM): decide the outcome. */
static void cli_end(qk_grpc_client *c, qk_gc_call *call)
{
    if (call->done)
        return;
    if (call->grpc_status < 0) {
        if (call->http_status != 200)
            cli_fail(c, call, qk_grpc_status_from_http(call->http_status),
                     "HTTP status %d from the server instead of a gRPC response",
                     call->http_status);
        else
            cli_fail(c, call, QK_GRPC_INTERNAL, "the server ended the call without grpc-status");
        return;
    }
    /* An error status stands whatever came before it; a success needs the
     * messages to be whole. */
    if (call->grpc_status == QK_GRPC_OK && qk_rx_partial(&call->rx)) {
        cli_fail(c, call, QK_GRPC_INTERNAL, "the response ended inside a message");
        return;
    }
    if (call->grpc_status == QK_GRPC_OK && !call->streaming && !call->held) {
        cli_fail(c, call, QK_GRPC_INTERNAL, "the server sent no message for a unary call");
        return;
    }
    cli_complete(c, call, call->grpc_status, call->grpc_message);
    if (nghttp2_session_get_stream_local_close(c->ng, call->id) == 0)
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_CANCEL);
}

static int cli_parse_int(const uint8_t *v, size_t n, int *out)
{
    if (n == 0 || n > 9)
        return -1;
    int x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return 0;
}

static int cli_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *ud)
{
    (void)flags;
    (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    qk_gc_call *call = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!call || call->done)
        return 0;
    if (QK_NAME_IS(name, namelen, ":status")) {
        int st;
        if (cli_parse_int(value, valuelen, &st) == 0 && st >= 200)
            call->http_status = st;
    } else if (QK_NAME_IS(name, namelen, "grpc-status")) {
        int st;
        call->grpc_status = cli_parse_int(value, valuelen, &st) == 0 ? st : QK_GRPC_UNKNOWN;
    } else if (QK_NAME_IS(name, namelen, "grpc-message")) {
        free(call->grpc_message);
        if (!(call->grpc_message = qk_pct_decode(value, valuelen)))
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

static int cli_on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                             size_t len, void *ud)
{
    (void)flags;
    qk_grpc_client *c = ud;
    qk_gc_call *call = nghttp2_session_get_stream_user_data(ng, id);
    if (!call || call->http_status != 200)
        return 0;
    while (len > 0 && !call->done) {
        if (call->held) {
            cli_fail(c, call, QK_GRPC_INTERNAL,
                     "the server sent more than one message for a unary call");
            return 0;
        }
        int r = qk_rx_feed(&call->rx, &data, &len, c->max_msg, NULL, 0);
        if (r == QK_RX_MSG) {
            if (call->streaming) {
                c->cbs.on_stream_msg(c->ud, call->call_ud, qk_rx_msg(&call->rx), call->rx.need);
                if (call->rx.cap > QK_KEEP_BUF)
                    qk_rx_free(&call->rx, NULL);
                else
                    qk_rx_reset(&call->rx);
            } else {
                call->held = 1;
            }
        } else if (r == QK_RX_TOOBIG) {
            cli_fail(c, call, QK_GRPC_RESOURCE_EXHAUSTED,
                     "response message of %u bytes is larger than the limit of %zu bytes",
                     (unsigned)call->rx.need, c->max_msg);
        } else if (r == QK_RX_COMPRESSED) {
            cli_fail(c, call, QK_GRPC_INTERNAL, "compressed response messages are not supported");
        } else if (r == QK_RX_BADFLAG) {
            cli_fail(c, call, QK_GRPC_INTERNAL, "invalid message flags 0x%02x",
                     (unsigned)call->rx.hdr[0]);
        } else if (r < 0) {
            cli_fail(c, call, QK_GRPC_RESOURCE_EXHAUSTED, "out of memory reading the response");
        }
    }
    return 0;
}

static int cli_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    qk_grpc_client *c = ud;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = 1;
        return 0;
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        qk_gc_call *call = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
        if (call)
            cli_end(c, call);
    }
    return 0;
}

static int cli_on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    qk_grpc_client *c = ud;
    qk_gc_call *call = nghttp2_session_get_stream_user_data(ng, id);
    if (!call)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    cli_unlink(c, call);
    if (!call->done) {
        switch (error_code) {
        case NGHTTP2_REFUSED_STREAM:
            cli_complete(c, call, QK_GRPC_UNAVAILABLE,
                         "the server refused the stream (the call did not run)");
            break;
        case NGHTTP2_CANCEL:
            cli_complete(c, call, QK_GRPC_CANCELLED, "the server cancelled the stream");
            break;
        case NGHTTP2_ENHANCE_YOUR_CALM:
            cli_complete(c, call, QK_GRPC_RESOURCE_EXHAUSTED,
                         "the server reset the stream: ENHANCE_YOUR_CALM");
            break;
        case NGHTTP2_INADEQUATE_SECURITY:
            cli_complete(c, call, QK_GRPC_PERMISSION_DENIED,
                         "the server reset the stream: INADEQUATE_SECURITY");
            break;
        case NGHTTP2_NO_ERROR:
            cli_complete(c, call, QK_GRPC_INTERNAL,
                         "the server closed the stream without a gRPC status");
            break;
        default: {
            char msg[128];
            snprintf(msg, sizeof msg, "the server reset the stream: %s",
                     nghttp2_http2_strerror(error_code));
            cli_complete(c, call, QK_GRPC_INTERNAL, msg);
            break;
        }
        }
    }
    cli_call_free(call);
    return 0;
}

qk_grpc_client *qk_grpc_client_new(const qk_grpc_client_cbs *cbs, void *ud, const char *authority,
                                   size_t max_msg, unsigned worker)
{
    if (!cbs || !authority || !*authority)
        return NULL;
    qk_grpc_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cbs = *cbs;
    c->ud = ud;
    c->max_msg = max_msg > UINT32_MAX ? UINT32_MAX : max_msg;
    if (!(c->authority = qk_strndup((const uint8_t *)authority, strlen(authority)))) {
        free(c);
        return NULL;
    }
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        goto fail;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        goto fail;
    }
    nghttp2_session_callbacks_set_on_header_callback(cb, cli_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cli_on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, cli_on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, cli_on_stream_close);
    /* Until the server's SETTINGS arrive, open at most this many streams
     * (calls beyond wait in nghttp2's queue), as RFC 9113 advises. */
    nghttp2_option_set_peer_max_concurrent_streams(opt, QK_PEER_STREAMS_BEFORE_SETTINGS);
    int rv = nghttp2_session_client_new2(&c->ng, cb, c, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rv != 0)
        goto fail;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, QK_STREAM_WINDOW},
        {QK_H2_SETTINGS_WORKER, worker},
    };
    size_t niv = sizeof iv / sizeof iv[0] - (worker ? 0 : 1);
    if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, niv) != 0 ||
        nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, QK_CONN_WINDOW) != 0) {
        nghttp2_session_del(c->ng);
        goto fail;
    }
    return c;
fail:
    free(c->authority);
    free(c);
    return NULL;
}

/* Metadata the caller may add: a lowercase token that is not one of ours. */
static int cli_metadata_ok(const char *name, const char *value)
{
    static const char *const reserved[] = {
        "content-type", "te", "grpc-timeout", "connection", "keep-alive", "proxy-connection",
        "transfer-encoding", "upgrade", "host", NULL};
    if (!name || !value || !*name)
        return 0;
    for (const char *p = name; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
              ch == '.'))
            return 0;
    }
    for (const char *const *r = reserved; *r; r++)
        if (strcmp(name, *r) == 0)
            return 0;
    for (const char *p = value; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7E)
            return 0;
    return 1;
}

int32_t qk_grpc_client_call(qk_grpc_client *c, const char *path, uint64_t timeout_ms,
                            const char *const *metadata, const uint8_t *msg, size_t len,
                            int streaming, void *call_ud)
{
    if (!c || !path || path[0] != '/' || (!msg && len))
        return QUARK_EINVAL;
    if (streaming ? (!c->cbs.on_stream_msg || !c->cbs.on_stream_end) : !c->cbs.on_response)
        return QUARK_EINVAL;
    if (!qk_grpc_client_usable(c))
        return QUARK_EUNAVAILABLE;
    if (len > UINT32_MAX)
        return QUARK_ETOOBIG;
    size_t nmeta = 0;
    if (metadata) {
        while (metadata[nmeta]) {
            if (!metadata[nmeta + 1] || !cli_metadata_ok(metadata[nmeta], metadata[nmeta + 1]))
                return QUARK_EINVAL;
            nmeta += 2;
        }
    }

    qk_gc_call *call = calloc(1, sizeof *call);
    if (!call)
        return QUARK_ENOMEM;
    call->call_ud = call_ud;
    call->streaming = streaming != 0;
    call->grpc_status = -1;
    if (qk_tx_put(&call->tx, msg ? msg : qk_empty, len) != 0) {
        cli_call_free(call);
        return QUARK_ENOMEM;
    }
    call->tx.ended = 1;

    char tbuf[24];
    nghttp2_nv fixed[24];
    size_t nnv = 7 + nmeta / 2;
    nghttp2_nv *nv = nnv <= sizeof fixed / sizeof fixed[0] ? fixed : malloc(nnv * sizeof *nv);
    if (!nv) {
        cli_call_free(call);
        return QUARK_ENOMEM;
    }
    size_t n = 0;
    nv[n++] = (nghttp2_nv)QK_NVS(":method", "POST");
    nv[n++] = (nghttp2_nv)QK_NVS(":scheme", "http");
    nv[n++] = (nghttp2_nv)QK_NVS(":path", path);
    nv[n++] = (nghttp2_nv)QK_NVS(":authority", c->authority);
    nv[n++] = (nghttp2_nv)QK_NVS("content-type", "application/grpc");
    nv[n++] = (nghttp2_nv)QK_NVS("te", "trailers");
    if (timeout_ms > 0) {
        qk_fmt_timeout(tbuf, sizeof tbuf, timeout_ms);
        nv[n++] = (nghttp2_nv)QK_NVS("grpc-timeout", tbuf);
    }
    for (size_t i = 0; i < nmeta; i += 2) {
        nv[n].name = (uint8_t *)metadata[i];
        nv[n].namelen = strlen(metadata[i]);
        nv[n].value = (uint8_t *)metadata[i + 1];
        nv[n].valuelen = strlen(metadata[i + 1]);
        nv[n].flags = NGHTTP2_NV_FLAG_NONE;
        n++;
    }
    nghttp2_data_provider prd;
    prd.source.ptr = &call->tx;
    prd.read_callback = qk_tx_read;
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, n, &prd, call);
    if (nv != fixed)
        free(nv);
    if (id < 0) {
        cli_call_free(call);
        return id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? QUARK_EUNAVAILABLE : QUARK_ENOMEM;
    }
    call->id = id;
    call->next = c->calls;
    if (c->calls)
        c->calls->prev = call;
    c->calls = call;
    return id;
}

static qk_gc_call *cli_find(qk_grpc_client *c, int32_t id)
{
    qk_gc_call *call = nghttp2_session_get_stream_user_data(c->ng, id);
    if (call)
        return call;
    /* Not opened yet (the HEADERS wait in nghttp2's queue) or gone. */
    for (call = c->calls; call; call = call->next)
        if (call->id == id)
            return call;
    return NULL;
}

void qk_grpc_client_cancel(qk_grpc_client *c, int32_t stream_id)
{
    if (!c || stream_id <= 0)
        return;
    qk_gc_call *call = cli_find(c, stream_id);
    if (!call || call->done)
        return;
    call->done = 1;
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
}

int qk_grpc_client_recv(qk_grpc_client *c, const uint8_t *data, size_t len)
{
    if (!c || (!data && len))
        return QUARK_EINVAL;
    if (c->dead)
        return QUARK_ECLOSED;
    if (c->fatal)
        return QUARK_EPROTO;
    int allowed = nghttp2_session_check_request_allowed(c->ng);
    ssize_t n = nghttp2_session_mem_recv(c->ng, data, len);
    if (n < 0) {
        c->fatal = 1;
        nghttp2_session_terminate_session(
            c->ng, n == NGHTTP2_ERR_NOMEM ? NGHTTP2_INTERNAL_ERROR : NGHTTP2_PROTOCOL_ERROR);
        return qk_map_ng_error((int)n);
    }
    /* A peer's protocol error makes nghttp2 queue a GOAWAY and stop starting
     * streams, without an error code: without a GOAWAY from the server, that
     * switch can only be our own termination. */
    if (allowed && !c->goaway && !nghttp2_session_check_request_allowed(c->ng) &&
        nghttp2_session_get_next_stream_id(c->ng) <= INT32_MAX) {
        c->fatal = 1;
        return QUARK_EPROTO;
    }
    return 0;
}

size_t qk_grpc_client_flush(qk_grpc_client *c,
                            void (*write)(void *wud, const uint8_t *data, size_t len), void *wud)
{
    if (!c || !write || c->dead)
        return 0;
    int fatal = 0;
    size_t n = qk_flush(c->ng, c->stage, write, wud, &fatal);
    if (fatal)
        c->fatal = 1;
    return n;
}

int qk_grpc_client_usable(const qk_grpc_client *c)
{
    return c && !c->dead && !c->goaway && !c->fatal &&
           nghttp2_session_check_request_allowed(c->ng);
}

int qk_grpc_client_ping(qk_grpc_client *c)
{
    return c && nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, NULL) == 0 ? 0 : QUARK_ENOMEM;
}

int qk_grpc_client_want_close(const qk_grpc_client *c)
{
    if (!c || c->dead)
        return 1;
    if (nghttp2_session_want_write(c->ng))
        return 0;
    return c->fatal || !nghttp2_session_want_read(c->ng);
}

void qk_grpc_client_fail_all(qk_grpc_client *c, const char *message)
{
    if (!c)
        return;
    c->dead = 1;
    /* Callbacks may cancel other calls (that only marks them done) but never
     * free a record, so the walk stays valid. */
    for (qk_gc_call *call = c->calls; call; call = call->next)
        cli_complete(c, call, QK_GRPC_UNAVAILABLE, message ? message : "connection lost");
}

void qk_grpc_client_free(qk_grpc_client *c)
{
    if (!c)
        return;
    nghttp2_session_del(c->ng);
    while (c->calls) {
        qk_gc_call *call = c->calls;
        c->calls = call->next;
        cli_call_free(call);
    }
    free(c->authority);
    free(c);
}

/* ---- worker hint ---- */

int qk_grpc_worker_hint(const uint8_t *p, size_t n, unsigned *worker)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const size_t plen = sizeof preface - 1, hlen = 9;
    *worker = 0;
    if (memcmp(p, preface, n < plen ? n : plen) != 0)
        return 0;
    if (n < plen + hlen)
        return -1;
    const uint8_t *h = p + plen;
    uint32_t len = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
    uint32_t stream = ((uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8]) &
                      0x7fffffffu;
    if (h[3] != NGHTTP2_SETTINGS || (h[4] & NGHTTP2_FLAG_ACK) || stream != 0 || len % 6 != 0 ||
        len > 32 * 6)
        return 0;
    if (n < plen + hlen + len)
        return -1;
    for (const uint8_t *e = h + hlen; e < h + hlen + len; e += 6) {
        unsigned id = (unsigned)e[0] << 8 | e[1];
        uint32_t v = (uint32_t)e[2] << 24 | (uint32_t)e[3] << 16 | (uint32_t)e[4] << 8 | e[5];
        if (id == QK_H2_SETTINGS_WORKER)
            *worker = v > 65535 ? 0 : (unsigned)v;
    }
    return 1;
}
