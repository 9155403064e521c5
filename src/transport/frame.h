/*
 * frame.h - Quark's framed TCP protocol: the codec (no I/O).
 *
 * A connection starts with the 4-byte magic "QRK1" from the client, then both
 * sides exchange frames:
 *
 *   u32 length   bytes after this field (12 + payload), big-endian
 *   u8  type     QK_FRAME_*
 *   u8  flags    0
 *   u16 reserved 0
 *   u64 id       request id (0 for connection-level frames), big-endian
 *   payload      a protobuf message of proto/quark/actor_service.proto
 *
 * Many requests are in flight on one connection, matched by id; answers come
 * in any order. docs/wire-protocol.md describes the exchange.
 */
#ifndef QK_FRAME_H
#define QK_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define QK_FRAME_MAGIC "QRK1"
#define QK_FRAME_MAGIC_LEN 4
#define QK_FRAME_HEADER 16 /* length field included */

enum qk_frame_type {
    QK_FRAME_HELLO = 1,      /* client -> silo: TcpHello */
    QK_FRAME_HELLO_OK = 2,   /* silo -> client: TcpHelloReply */
    QK_FRAME_REQUEST = 3,    /* ActorInvocationRequest */
    QK_FRAME_RESPONSE = 4,   /* ActorInvocationResponse */
    QK_FRAME_SUBSCRIBE = 5,  /* StreamRequest; id names the subscription */
    QK_FRAME_EVENT = 6,      /* ActorEvent for subscription id */
    QK_FRAME_STREAM_END = 7, /* ActorInvocationResponse: why the stream ended */
    QK_FRAME_UNSUBSCRIBE = 8,/* no payload */
    QK_FRAME_PING = 9,       /* no payload; answered with PONG, same id */
    QK_FRAME_PONG = 10,
    QK_FRAME_GOAWAY = 11,    /* ActorInvocationResponse: why; no new requests */
    QK_FRAME_GOSSIP = 12,    /* silo -> silo: ClusterView (every entry, with status) */
    QK_FRAME_GOSSIP_ACK = 13,/* the receiver's ClusterView, same id */
    QK_FRAME_WATCH = 14,     /* client -> silo: send VIEW frames under this id */
    QK_FRAME_VIEW = 15,      /* silo -> client: ClusterView (live members) */
    QK_FRAME_STATUS = 16,    /* -> silo: SiloStatusRequest */
    QK_FRAME_STATUS_OK = 17, /* silo ->: SiloStatus, same id */
    QK_FRAME_AUTH = 18,      /* silo -> silo: TcpAuth, after HELLO_OK's challenge */
    QK_FRAME_TYPE_MAX = 18
};

typedef struct qk_frame {
    uint8_t type;
    uint64_t id;
    const uint8_t *payload; /* points into the caller's buffer */
    size_t len;
} qk_frame;

/* qk_frame_parse's results besides a frame's length. */
enum {
    QK_FRAME_PARTIAL = 0,   /* not complete yet: read more */
    QK_FRAME_MALFORMED = -1,/* not a frame (bad length, type or flags) */
    QK_FRAME_TOO_BIG = -2   /* a well-formed header announcing more than max_payload */
};

/* Parse one frame from buf[0..n). Returns the bytes it takes (> 0),
 * QK_FRAME_PARTIAL, or QK_FRAME_MALFORMED / QK_FRAME_TOO_BIG (then *why says
 * what is wrong, for a message). */
long qk_frame_parse(const uint8_t *buf, size_t n, size_t max_payload, qk_frame *f,
                    const char **why);

/* Write a frame header for a payload of `len` bytes into out[16]. */
void qk_frame_header(uint8_t out[QK_FRAME_HEADER], uint8_t type, uint64_t id, size_t len);

#endif /* QK_FRAME_H */
