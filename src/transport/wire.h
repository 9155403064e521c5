/*
 * wire.h - the hot envelope messages of actor_service.proto, coded by hand.
 *
 * Every remote call crosses the wire as an ActorInvocationRequest and comes
 * back as an ActorInvocationResponse. protobuf-c's generic (reflection-driven)
 * code allocates and walks descriptors for each; these functions produce and
 * read the very same protobuf encoding directly: the decoder points into the
 * received bytes (zero copy, no allocation), the encoders write straight into
 * the output buffer. Unknown fields are skipped, so newer peers interoperate;
 * every length is checked against the input, so hostile bytes only ever get
 * a -1. Everything else on the wire still goes through protobuf-c.
 */
#ifndef QK_WIRE_H
#define QK_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/codec.h"

typedef struct qk_wire_str {
    const char *p; /* not NUL-terminated */
    size_t n;
} qk_wire_str;

typedef struct qk_wire_request {
    qk_wire_str actor_id, actor_type, method, cluster_id;
    const uint8_t *args;
    size_t args_len;
    uint32_t deadline_ms;
    uint32_t hops;       /* times forwarded between silos */
    size_t n_chain;      /* links found (may exceed what fit in `chain`) */
} qk_wire_request;

/* Decode an ActorInvocationRequest from p[0..n). Up to `cap` call-chain
 * links are stored in `chain`. 0, or -1 if the bytes are not a valid
 * encoding. */
int qk_wire_decode_request(const uint8_t *p, size_t n, qk_wire_request *r,
                           qk_chain_link *chain, size_t cap);

/* Encoded size of an ActorInvocationRequest with these fields (args_len =
 * size of the request message), and the encoder: `write_args` packs the
 * method's request message at the given position. Returns the end. */
size_t qk_wire_request_size(size_t id_len, size_t type_len, size_t method_len, size_t args_len,
                            uint32_t deadline_ms);
uint8_t *qk_wire_encode_request(uint8_t *out, const char *id, size_t id_len, const char *type,
                                size_t type_len, const char *method, size_t method_len,
                                const quark_method_desc *md, /* its fast codec, or NULL */
                                const ProtobufCMessage *args_msg, size_t args_len,
                                uint32_t deadline_ms);

/* A request forwarded between silos: the packed arguments as received, the
 * caller's chain, and the hop count. */
size_t qk_wire_forward_size(size_t id_len, size_t type_len, size_t method_len, size_t args_len,
                            uint32_t deadline_ms, const qk_chain_link *chain, size_t n_chain,
                            uint32_t hops);
uint8_t *qk_wire_encode_forward(uint8_t *out, const char *id, size_t id_len, const char *type,
                                size_t type_len, const char *method, size_t method_len,
                                const uint8_t *args, size_t args_len, uint32_t deadline_ms,
                                const qk_chain_link *chain, size_t n_chain, uint32_t hops);

typedef struct qk_wire_response {
    const uint8_t *result;
    size_t result_len;
    qk_wire_str error_message;
    int32_t error_code;
    bool actor_error;    /* the actor raised it (not the framework) */
    uint32_t served_by;  /* gRPC: 1 + the worker that read the call, 0 if not said */
    uint32_t workers;    /* gRPC: the silo's worker count, 0 if not said */
    qk_wire_str location; /* the silo that ran a forwarded call ("" if not said) */
} qk_wire_response;

int qk_wire_decode_response(const uint8_t *p, size_t n, qk_wire_response *r);
/* where: the silo that ran a call this one forwarded (NULL: not said). */
size_t qk_wire_response_size(int32_t err, size_t msg_len, size_t result_len, bool actor_error,
                             const char *where);
uint8_t *qk_wire_encode_response(uint8_t *out, int32_t err, const char *msg, size_t msg_len,
                                 const uint8_t *result, size_t result_len, bool actor_error,
                                 const char *where);

#endif /* QK_WIRE_H */
