/*
 * direct.h - blocking calls on caller-owned sockets (TCP transport).
 *
 * A blocking call through the multiplexed connection costs two thread
 * hand-offs on the client (the caller wakes the I/O thread, which later
 * wakes the caller), each a sleep and a wake-up. A direct call skips both:
 * the calling thread takes a socket from a small pool, writes its REQUEST
 * frame and reads its RESPONSE itself, like a hiredis blocking context. The
 * socket asks the silo (HELLO `worker`) to be served by the worker that owns
 * the actor, so the silo does not cross threads either.
 *
 * With the gRPC transport a direct socket is an HTTP/2 connection of its own
 * (grpc_codec.h's client session, driven by the calling thread). It asks
 * for the actor's worker in its first SETTINGS frame (id 0xf051) once the
 * silo's worker count is known (from an earlier answer), and learns which
 * worker read it from its first answer.
 *
 * One call at a time per socket; at most `per_worker` sockets per silo
 * worker. When the pool has no socket to spare, or anything about the silo
 * is not known yet, the call is NOT_SENT and goes the multiplexed way.
 * Delivery rules are the caller's (remote.c): NOT_SENT surely did not run;
 * LOST and TIMEOUT may have.
 */
#ifndef QK_DIRECT_H
#define QK_DIRECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/wire.h"

typedef struct qk_direct qk_direct;
typedef struct qk_dsock qk_dsock;

typedef enum qk_dc_status {
    QK_DC_ANSWERED = 0, /* res->resp holds the answer (until qk_direct_release) */
    QK_DC_NOT_SENT,     /* nothing reached the silo: send it another way */
    QK_DC_LOST,         /* sent, then the connection failed (res->why) */
    QK_DC_TIMEOUT       /* sent, no answer by the deadline */
} qk_dc_status;

typedef struct qk_dc_result {
    qk_wire_response resp;  /* when grpc_status is 0 */
    int grpc_status;        /* gRPC: non-zero when the call failed with that status */
    char why[512];          /* LOST / TIMEOUT: what happened; grpc_status: grpc-message */
} qk_dc_result;

/* per_worker: sockets per silo worker (0 disables direct calls); grpc:
 * HTTP/2 sockets instead of Quark's TCP protocol; poll_us: how long a
 * caller polls for its answer before it sleeps in poll(2) (core/spin.h). */
qk_direct *qk_direct_new(const char *cluster_id, const char *client_name, size_t max_msg,
                         unsigned per_worker, bool grpc, uint32_t poll_us, uint32_t keepalive_ms,
                         uint32_t keepalive_timeout_ms);
/* Disconnect: refuse new calls, close idle sockets and wake calls in
 * progress (they end LOST). */
void qk_direct_shutdown(qk_direct *d);
/* Accept calls again (after a new connect). */
void qk_direct_reopen(qk_direct *d);
/* The silos calls may go to now (the view's members and the primary):
 * idle sockets to any other silo are closed, busy ones when released. */
void qk_direct_retain(qk_direct *d, const char *const *addrs, size_t n);
void qk_direct_free(qk_direct *d);

/* Call the silo `addr` ("host:port") with a complete REQUEST frame (its id
 * is set here). `hash` is the actor key (it picks the worker);
 * `deadline_at_ms` is on qk_now_ms_coarse()'s clock. On ANSWERED, *held is
 * the socket to give back with qk_direct_release once res is read. */
qk_dc_status qk_direct_call(qk_direct *d, const char *addr, uint64_t hash, uint8_t *frame,
                            size_t len, uint64_t deadline_at_ms, qk_dsock **held,
                            qk_dc_result *res);
void qk_direct_release(qk_direct *d, qk_dsock *s);

#endif /* QK_DIRECT_H */
