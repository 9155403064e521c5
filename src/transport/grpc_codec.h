/*
 * grpc_codec.h - gRPC over HTTP/2 (h2c, prior knowledge), server and client
 * side, as a codec that does no I/O: bytes in, events out, bytes to write.
 *
 * It is for the gRPC transport of Quark: a silo serves ActorService to any
 * stock gRPC client (grpc-js, gRPC core) with one qk_grpc_server per accepted
 * connection, and the cluster client calls silos with one qk_grpc_client per
 * connection. The owner (the libuv loop of the transport) feeds received bytes
 * with *_recv, answers or starts calls, and moves the pending output out with
 * *_flush after anything it did. Nothing here blocks, reads a clock or owns a
 * socket, so it is tested by wiring a client to a server in memory.
 *
 * The one idea: nghttp2 does all of HTTP/2 (preface, HPACK, flow control,
 * stream states, GOAWAY), and gRPC is only a thin layer on its callbacks. Each
 * stream carries a small record (nghttp2 stream user data) that reassembles
 * length-prefixed messages from DATA chunks and queues the messages to send;
 * a data provider drains that queue, returns NGHTTP2_ERR_DEFERRED while it is
 * empty (resumed by the next message), and at the end submits the trailers
 * from inside the provider so they can never overtake queued DATA.
 *
 * Threads: a codec object is used by one thread at a time. Callbacks run
 * inside *_recv, *_flush, *_fail_all and qk_grpc_server_free; they may start,
 * answer or cancel calls of the same codec, but must not free it or call
 * *_recv / *_flush re-entrantly.
 *
 * Return codes are quark_err values (quark/error.h): QUARK_EINVAL (bad
 * argument), QUARK_ENOMEM, QUARK_ETOOBIG (a message over 4 GiB - 1),
 * QUARK_ECLOSED (no such open stream, or it was already answered / cancelled),
 * QUARK_EUNAVAILABLE (the connection is going away: GOAWAY or failed),
 * QUARK_EPROTO (the peer broke HTTP/2: flush, then close the connection).
 *
 * gRPC status codes used by the codec itself (numbers as in the gRPC spec):
 *   server, about a request: 8 RESOURCE_EXHAUSTED (message over max_msg),
 *     12 UNIMPLEMENTED (compressed message; more than one request message,
 *     i.e. client streaming), 13 INTERNAL (no message; message truncated by
 *     END_STREAM; reserved compressed-flag bits). Not gRPC at all (no
 *     grpc-status): HTTP 415 for a content-type other than application/grpc,
 *     application/grpc+proto or application/grpc;..., HTTP 405 for a method
 *     other than POST.
 *   client, about a response: 13 INTERNAL for a malformed response (no
 *     grpc-status, truncated or extra message, compressed message), 8 for a
 *     message over max_msg, 14 UNAVAILABLE for a stream the server refused
 *     (REFUSED_STREAM, or above the last stream id of a GOAWAY: it did not
 *     run) and for fail_all, 1 CANCELLED for RST_STREAM CANCEL, and
 *     qk_grpc_status_from_http() for a non-200 response without grpc-status.
 */
#ifndef QK_GRPC_CODEC_H
#define QK_GRPC_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "quark/error.h"

/* gRPC status codes the codec produces or maps. */
enum {
    QK_GRPC_OK = 0,
    QK_GRPC_CANCELLED = 1,
    QK_GRPC_UNKNOWN = 2,
    QK_GRPC_INVALID_ARGUMENT = 3,
    QK_GRPC_DEADLINE_EXCEEDED = 4,
    QK_GRPC_NOT_FOUND = 5,
    QK_GRPC_PERMISSION_DENIED = 7,
    QK_GRPC_RESOURCE_EXHAUSTED = 8,
    QK_GRPC_FAILED_PRECONDITION = 9,
    QK_GRPC_ABORTED = 10,
    QK_GRPC_UNIMPLEMENTED = 12,
    QK_GRPC_INTERNAL = 13,
    QK_GRPC_UNAVAILABLE = 14,
    QK_GRPC_UNAUTHENTICATED = 16,
    QK_GRPC_STATUS_MAX = 16 /* larger codes are sent as 2 UNKNOWN */
};

/* Request header naming the caller's cluster (see proto/quark/actor_service.proto). */
#define QK_GRPC_CLUSTER_HEADER "quark-cluster-id"
/* Concurrent streams a server accepts on one connection (SETTINGS). */
#define QK_GRPC_MAX_CONCURRENT_STREAMS 4096
/* Request bytes a server connection buffers at most, over all its streams;
 * a stream that would go past it fails with 8 RESOURCE_EXHAUSTED. */
#define QK_GRPC_SERVER_RX_BUDGET ((size_t)256 << 20)
/* grpc-message longer than this many bytes is cut (at a UTF-8 boundary). */
#define QK_GRPC_MESSAGE_MAX 4096
/* grpc-timeout values are clamped to this many milliseconds (~49.7 days). */
#define QK_GRPC_TIMEOUT_MAX_MS 0xFFFFFFFFull

/* ---- server ----------------------------------------------------------- */

typedef struct qk_grpc_server qk_grpc_server;

typedef struct qk_grpc_server_cbs {
    /* A request arrived complete: headers, exactly one length-prefixed
     * message, END_STREAM. path (NUL-terminated too), e.g.
     * "/quark.ActorService/InvokeActor"; timeout_ms from grpc-timeout (0 =
     * none); cluster_id is the quark-cluster-id header or NULL; msg/len is the
     * message payload (never NULL). All valid only during the callback. The
     * app answers later (any time, also from inside the callback) with
     * qk_grpc_server_respond or stream_send/stream_end on stream_id. */
    void (*on_request)(void *ud, int32_t stream_id, const char *path, size_t path_len,
                       uint64_t timeout_ms, const char *cluster_id, const uint8_t *msg,
                       size_t len);
    /* The client reset the stream, or the connection is going away
     * (qk_grpc_server_free), before the app finished answering: the app must
     * drop its reference to stream_id; answers for it now return
     * QUARK_ECLOSED. Fires at most once per request, never after the app's
     * final answer (respond / stream_end). May be NULL. */
    void (*on_cancel)(void *ud, int32_t stream_id);
} qk_grpc_server_cbs;

/* A server for one accepted connection; max_msg bounds a request message
 * (payload bytes), max_streams the streams open at once (its
 * SETTINGS_MAX_CONCURRENT_STREAMS; 0: QK_GRPC_MAX_CONCURRENT_STREAMS). Its
 * SETTINGS are queued at once (flush to send them). NULL when out of memory
 * or cbs->on_request is NULL. */
qk_grpc_server *qk_grpc_server_new(const qk_grpc_server_cbs *cbs, void *ud, size_t max_msg,
                                   uint32_t max_streams);

/* When the oldest request still being received (its HEADERS came, not its
 * end) began, on qk_now_ms_coarse's clock; 0: none. */
uint64_t qk_grpc_server_oldest_request_ms(const qk_grpc_server *s);

/* Nonzero once the client's connection preface and first SETTINGS came:
 * the handshake is done. */
int qk_grpc_server_ready(const qk_grpc_server *s);

/* Feed received bytes. Returns 0, or QUARK_EPROTO / QUARK_ENOMEM on a fatal
 * connection error (not an HTTP/2 client, ...): then flush the pending output
 * (a GOAWAY if one can be sent) and close. Also close when want_close says so
 * after a flush (e.g. the peer's protocol error was answered by a GOAWAY). */
int qk_grpc_server_recv(qk_grpc_server *s, const uint8_t *data, size_t len);

/* Unary answer: response headers (:status 200, content-type application/grpc),
 * one message if msg != NULL (len may be 0), then trailers grpc-status and
 * grpc-message (percent-encoded; omitted when NULL or ""). Without a message
 * the answer is a Trailers-Only response (a single HEADERS frame). 0 or
 * QUARK_ECLOSED (unknown, closed, cancelled or already answered stream),
 * QUARK_EINVAL, QUARK_ETOOBIG, QUARK_ENOMEM. */
int qk_grpc_server_respond(qk_grpc_server *s, int32_t stream_id, int grpc_status,
                           const char *grpc_message, const uint8_t *msg, size_t len);

/* Server streaming: queue one message (the response headers go out before the
 * first), any number of times; then qk_grpc_server_stream_end. The message is
 * copied. Same return codes as respond. */
int qk_grpc_server_stream_send(qk_grpc_server *s, int32_t stream_id, const uint8_t *msg,
                               size_t len);
/* End a server stream with its status (Trailers-Only if nothing was sent). */
int qk_grpc_server_stream_end(qk_grpc_server *s, int32_t stream_id, int grpc_status,
                              const char *grpc_message);
/* Bytes queued on stream_id that nghttp2 has not taken yet (flow control
 * holds them while the client reads slowly): a producer of a server stream
 * can pause above a high-water mark. 0 for an unknown stream. */
size_t qk_grpc_server_stream_queued(qk_grpc_server *s, int32_t stream_id);

/* Move pending output out: calls write(wud, data, len) zero or more times
 * (copy the bytes: valid only during the call; small frames are coalesced
 * into one chunk) and returns the total number of bytes. */
size_t qk_grpc_server_flush(qk_grpc_server *s,
                            void (*write)(void *wud, const uint8_t *data, size_t len),
                            void *wud);

/* Nonzero when the connection should be closed: nghttp2 wants neither to read
 * nor to write (after a final GOAWAY with no stream left, or a fatal error). */
int qk_grpc_server_want_close(const qk_grpc_server *s);

/* Begin a graceful shutdown: a GOAWAY announcing it plus a PING; when the
 * PING's ACK comes back (the client has seen the notice), a final GOAWAY with
 * the last stream id received. Streams up to it may finish; want_close
 * becomes true when they have. The owner must keep reading until then (the
 * ACK must arrive), and should still close after a grace period: a client
 * that never answers keeps the connection open. */
void qk_grpc_server_shutdown(qk_grpc_server *s);
/* The final GOAWAY at once (for an owner that stops reading): streams
 * received so far may finish; any the client sent later are refused
 * (REFUSED_STREAM: they did not run, the client may retry them elsewhere).
 * Also ends a shutdown begun with qk_grpc_server_shutdown. Flush right
 * after. */
void qk_grpc_server_goaway_now(qk_grpc_server *s);

/* Free the server. on_cancel fires first for every request the app still
 * holds. Pending output is lost (flush before). */
void qk_grpc_server_free(qk_grpc_server *s);

/* ---- worker hint ------------------------------------------------------ */

/* A SETTINGS identifier from the experimental range (RFC 9113 section 6.5.2:
 * receivers ignore identifiers they do not know) by which a Quark client asks
 * a silo to serve the connection on one worker: value 1 + the worker. A silo
 * reads it from the client's first SETTINGS frame before it starts the
 * HTTP/2 session and hands the socket to that worker (docs/wire-protocol.md,
 * "Shard-aware connections"). */
#define QK_H2_SETTINGS_WORKER 0xf051

/* The worker hint in the first bytes a client sent (preface + SETTINGS):
 * 1 with *worker set (0 if the frame has no hint), 0 when the bytes are not
 * a preface followed by a SETTINGS frame of at most 32 entries (then there
 * is no hint to wait for), -1 when more bytes are needed to tell. */
int qk_grpc_worker_hint(const uint8_t *p, size_t n, unsigned *worker);

/* ---- client ----------------------------------------------------------- */

typedef struct qk_grpc_client qk_grpc_client;

typedef struct qk_grpc_client_cbs {
    /* Unary call done: grpc_status 0 with the message (msg never NULL, len may
     * be 0), or non-zero with grpc_message (decoded; "" when none; never NULL)
     * and msg NULL. Exactly once per call, unless the call was cancelled. */
    void (*on_response)(void *ud, void *call_ud, int grpc_status, const char *grpc_message,
                        const uint8_t *msg, size_t len);
    /* Server streaming: one message (valid only during the callback). */
    void (*on_stream_msg)(void *ud, void *call_ud, const uint8_t *msg, size_t len);
    /* Server streaming: the end, exactly once unless cancelled. */
    void (*on_stream_end)(void *ud, void *call_ud, int grpc_status, const char *grpc_message);
} qk_grpc_client_cbs;

/* A client for one connection to authority ("host:port", sent as :authority);
 * max_msg bounds a response message. The connection preface and SETTINGS
 * are queued at once; worker > 0 adds the QK_H2_SETTINGS_WORKER entry (1 +
 * the silo worker it asks to be served by). NULL when out of memory or an
 * argument is invalid. */
qk_grpc_client *qk_grpc_client_new(const qk_grpc_client_cbs *cbs, void *ud, const char *authority,
                                   size_t max_msg, unsigned worker);

/* Start a call on path ("/pkg.Service/Method") with one request message
 * (copied). Unary when streaming == 0 (on_response), else server streaming
 * (on_stream_msg..., on_stream_end). timeout_ms > 0 adds grpc-timeout.
 * metadata: NULL or a NULL-terminated array of name, value pairs, e.g.
 * {"quark-cluster-id", "prod", NULL}; names lowercase [0-9a-z-_.], values
 * printable ASCII; the codec's own headers (content-type, te, grpc-timeout,
 * pseudo-headers, connection headers) are refused. Returns the stream id
 * (> 0), or QUARK_EINVAL, QUARK_ETOOBIG, QUARK_ENOMEM, or QUARK_EUNAVAILABLE
 * once the server sent GOAWAY or the client failed (open a new connection). */
int32_t qk_grpc_client_call(qk_grpc_client *c, const char *path, uint64_t timeout_ms,
                            const char *const *metadata, const uint8_t *msg, size_t len,
                            int streaming, void *call_ud);

/* Cancel a call: RST_STREAM CANCEL (the request is dropped unsent if it has
 * not left yet); no callback for it afterwards. No-op for a finished call. */
void qk_grpc_client_cancel(qk_grpc_client *c, int32_t stream_id);

/* Feed received bytes: 0, or QUARK_EPROTO / QUARK_ENOMEM on a fatal error
 * (garbage, or a protocol error of the server that nghttp2 answers with a
 * GOAWAY): flush, close, then qk_grpc_client_fail_all. QUARK_ECLOSED after
 * fail_all. */
int qk_grpc_client_recv(qk_grpc_client *c, const uint8_t *data, size_t len);

/* Same contract as qk_grpc_server_flush. */
size_t qk_grpc_client_flush(qk_grpc_client *c,
                            void (*write)(void *wud, const uint8_t *data, size_t len),
                            void *wud);

/* Nonzero when new calls are accepted (no GOAWAY received, not failed). */
int qk_grpc_client_usable(const qk_grpc_client *c);
/* Nonzero when the connection should be closed (see the server's). */
int qk_grpc_client_want_close(const qk_grpc_client *c);
/* Queue an HTTP/2 PING (keepalive: its ACK is input like any other). */
int qk_grpc_client_ping(qk_grpc_client *c);

/* Fail every open call with grpc_status 14 UNAVAILABLE and message (the
 * connection was lost); the callbacks run now, once each. The client accepts
 * no new call afterwards; free it. */
void qk_grpc_client_fail_all(qk_grpc_client *c, const char *message);

/* Free the client. No callback runs: call fail_all first for open calls. */
void qk_grpc_client_free(qk_grpc_client *c);

/* ---- helpers ---------------------------------------------------------- */

/* Parse a grpc-timeout value: 1 to 8 digits and a unit H M S m u n. Sets *ms
 * to the value in milliseconds, rounded up, at least 1 (a valid header never
 * means "no deadline"), at most QK_GRPC_TIMEOUT_MAX_MS. 0, or -1 if invalid. */
int qk_grpc_parse_timeout(const char *v, size_t len, uint64_t *ms);

/* The gRPC status for a non-200 HTTP response without grpc-status (gRPC's
 * "HTTP to gRPC Status Code Mapping"): 400 -> 13 INTERNAL, 401 -> 16
 * UNAUTHENTICATED, 403 -> 7 PERMISSION_DENIED, 404 -> 12 UNIMPLEMENTED,
 * 429, 502, 503, 504 -> 14 UNAVAILABLE, anything else (415 and 405 too)
 * -> 2 UNKNOWN. */
int qk_grpc_status_from_http(int http_status);

/* Quark's errors as gRPC statuses and back, from one table
 * (docs/wire-protocol.md): what a silo sends for a framework error, and what
 * a Quark client makes of a status. The two are inverse where a status
 * stands for one error; a status that stands for several (12 UNIMPLEMENTED:
 * ENOMETHOD, EUNIMPLEMENTED) comes back as the first, one that stands for
 * none (7, 16, an unknown code) as QUARK_EINTERNAL. */
int qk_grpc_status_of(quark_err err);
quark_err qk_grpc_err_of(int grpc_status);

#endif /* QK_GRPC_CODEC_H */
