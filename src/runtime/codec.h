/*
 * codec.h - what a call carries, as every layer encodes it: the call chain
 * and a method's request and reply messages (their generated fast codecs
 * when there are some, protobuf-c's reflection otherwise). Needs no event
 * loop: the wire codecs (transport/wire.c) use it as the runtime does.
 */
#ifndef QK_CODEC_H
#define QK_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "quark/interface.h"

#define QK_CHAIN_MAX 64 /* deepest call chain carried (then ECYCLE) */

/* One link of a call chain: turn `turn` of the activation hashed `act` is
 * (transitively) waiting for this call. */
typedef struct qk_chain_link {
    uint64_t act;
    uint32_t turn;
    uint32_t pad_;
} qk_chain_link;

/* Size / pack / unpack of a method's request (QK_IN) or reply (QK_OUT)
 * message: the generated fast codec when the method has one and `msg` is of
 * the method's type, protobuf-c's reflection otherwise. */
enum { QK_IN = 0, QK_OUT = 1 };
static inline size_t qk_msg_size(const quark_method_desc *md, int dir, const ProtobufCMessage *msg)
{
    if (md) {
        size_t (*fn)(const void *) = dir == QK_OUT ? md->out_size : md->in_size;
        if (fn && msg->descriptor == (dir == QK_OUT ? md->output : md->input))
            return fn(msg);
    }
    return protobuf_c_message_get_packed_size(msg);
}
static inline size_t qk_msg_pack(const quark_method_desc *md, int dir, const ProtobufCMessage *msg,
                                 uint8_t *out)
{
    if (md) {
        size_t (*fn)(const void *, uint8_t *) = dir == QK_OUT ? md->out_pack : md->in_pack;
        if (fn && msg->descriptor == (dir == QK_OUT ? md->output : md->input))
            return fn(msg, out);
    }
    return protobuf_c_message_pack(msg, out);
}
/* Decode a reply of `desc` into `arena`'s memory (NULL on failure). */
static inline ProtobufCMessage *qk_msg_unpack_reply(const quark_method_desc *md,
                                                    const ProtobufCMessageDescriptor *desc,
                                                    ProtobufCAllocator *arena, const uint8_t *p,
                                                    size_t len)
{
    if (md && md->out_unpack && md->output == desc) {
        ProtobufCMessage *msg = arena->alloc(arena->allocator_data, desc->sizeof_message);
        if (!msg)
            return NULL;
        desc->message_init(msg);
        return md->out_unpack(msg, p, len) == 0 ? msg : NULL;
    }
    return protobuf_c_message_unpack(desc, arena, len, p);
}

#endif /* QK_CODEC_H */
