/*
 * quark/interface.h - what protoc-gen-quark generates code against.
 *
 * An actor interface is a protobuf service. For each service the generator
 * emits one quark_interface descriptor (its wire name, its methods with their
 * request/reply message descriptors and flags, and a dispatcher), a table of
 * method pointers that an implementation fills in, and typed client proxies.
 *
 * The dispatcher picks a method by index (a switch), decodes the request (with
 * the generated fast codec when the message is simple, see quark_method_desc,
 * else with the turn's allocator), calls the implementation and encodes the reply: no
 * string comparison and no reflection on the call path. Method names are only
 * looked up (in a hash table the registry builds) when a call arrives from the
 * network, where the wire carries the name.
 *
 * Everything named quark__* here exists for generated code; applications
 * use the typed functions the generator emits, or quark_call()/quark_call_async().
 */
#ifndef QUARK_INTERFACE_H
#define QUARK_INTERFACE_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "quark/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct quark_actor quark_actor;   /* an activation, as its methods see it */
typedef struct quark_deferred quark_deferred; /* a deferred incoming call (reply handle) */
typedef struct quark_client quark_client; /* see quark/client.h */
typedef struct quark_ref quark_ref;       /* see quark/client.h */

/* Method flags, declared in the .proto with comment annotations on the rpc
 * (see docs/interfaces.md):
 *   // @quark.read_only   -> QUARK_METHOD_READ_ONLY: may interleave with other
 *                            read-only turns of the same activation.
 *   // @quark.idempotent  -> QUARK_METHOD_IDEMPOTENT: safe to run twice, so the
 *                            client may retry it when the outcome is unknown.
 *   // @quark.write_behind -> QUARK_METHOD_WRITE_BEHIND: its reply leaves at
 *                            once, before the persistent state it changed is
 *                            stored (docs/storage.md); faster, and a crash
 *                            may lose an acknowledged change. */
#define QUARK_METHOD_READ_ONLY 0x1u
#define QUARK_METHOD_IDEMPOTENT 0x2u
#define QUARK_METHOD_WRITE_BEHIND 0x4u

typedef struct quark_method_desc {
    const char *name;                          /* "Increment", as in the .proto */
    const ProtobufCMessageDescriptor *input;   /* request message */
    const ProtobufCMessageDescriptor *output;  /* reply message */
    unsigned flags;                            /* QUARK_METHOD_* */
    /* Fast codecs, for generated code and the runtime only: protoc-gen-quark
     * emits them for a "simple" message (proto3, only singular scalar fields
     * without explicit presence, or no field at all) and leaves them NULL
     * otherwise, where protobuf-c's reflection is used instead. They follow
     * protobuf-c exactly (same bytes out, same struct in):
     *   *_size(msg)          -> protobuf_c_message_get_packed_size(msg)
     *   *_pack(msg, out)     -> protobuf_c_message_pack(msg, out): bytes written
     *   *_unpack(msg, p, n)  -> decodes n bytes at p into *msg, which the caller
     *                           initialised with the message's INIT macro (or
     *                           descriptor->message_init); 0, or -1 if the
     *                           bytes are not a valid message.
     * in_* take the request message (input), out_* the reply (output). */
    size_t (*in_size)(const void *msg);
    size_t (*in_pack)(const void *msg, uint8_t *out);
    int (*in_unpack)(void *msg, const uint8_t *p, size_t n);
    size_t (*out_size)(const void *msg);
    size_t (*out_pack)(const void *msg, uint8_t *out);
    int (*out_unpack)(void *msg, const uint8_t *p, size_t n);
} quark_method_desc;

/* Generated dispatcher: decode args for method number `method`, call the
 * implementation found in `methods` (the interface's <Service>_methods table),
 * encode its reply. Returns what quark__finish() returns. */
typedef quark_err (*quark_dispatch_fn)(quark_actor *self, const void *methods,
                                       unsigned method, const uint8_t *args,
                                       size_t args_len);

typedef struct quark_interface {
    unsigned abi;                      /* QUARK_GEN_ABI of the generator */
    const char *name;                  /* wire name: "quark.examples.CounterActor" */
    const char *proto_file;            /* "counter.proto" */
    unsigned n_methods;
    const quark_method_desc *methods;  /* in declaration order; index = method number */
    size_t methods_table_size;         /* sizeof(<Service>_methods) */
    quark_dispatch_fn dispatch;
} quark_interface;

/* ---- for generated server code ---- */

/* Decode `len` bytes as a `desc` message with the current turn's allocator
 * (freed when the method returns). On failure records a QUARK_EBADARGS
 * message for the caller and returns NULL. */
QUARK_API void *quark__decode(quark_actor *self,
                              const ProtobufCMessageDescriptor *desc,
                              const uint8_t *data, size_t len);

/* A request could not be decoded by the method's in_unpack: records the same
 * QUARK_EBADARGS message quark__decode() does for `len` bytes of `desc`. The
 * dispatcher then returns quark__finish(self, QUARK_EBADARGS, NULL). */
QUARK_API void quark__bad_args(quark_actor *self, const ProtobufCMessageDescriptor *desc,
                               size_t len);

/* Complete the current turn with the method's return code: QUARK_OK encodes
 * `reply` and sends it; QUARK_PENDING (after quark_actor_defer) keeps the
 * caller waiting; an error is sent with the message the method set. */
QUARK_API quark_err quark__finish(quark_actor *self, quark_err rc,
                                  const ProtobufCMessage *reply);

/* The implementation left this method's pointer NULL. */
QUARK_API quark_err quark__unimplemented(quark_actor *self,
                                         const quark_interface *iface,
                                         unsigned method);

/* ---- for generated client code ---- */

/* A typed completion is delivered through a generated trampoline, which
 * casts `fn` back to the method's callback type: no call through a
 * mismatched function pointer type. */
typedef void (*quark__trampoline_fn)(void (*fn)(void), quark_err err,
                                     const char *errmsg,
                                     const ProtobufCMessage *reply, void *arg);

QUARK_API quark_err quark__call_async(quark_ref *ref, const quark_interface *iface,
                                      unsigned method, const ProtobufCMessage *req,
                                      quark__trampoline_fn tramp, void (*fn)(void),
                                      void *arg);

#ifdef __cplusplus
}
#endif
#endif /* QUARK_INTERFACE_H */
