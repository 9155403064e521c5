/*
 * op.h - qk_op, the completion of an operation: one primitive through which
 * every answer reaches whoever waits for it (the rules are at the top of
 * op.c).
 *
 * An operation is started by one party and finished by another, often on
 * another thread: a call made by an application thread and answered by the
 * worker that ran it, a call an actor made, a call that came from the
 * network, a call this silo forwarded to its owner, a call a cluster client
 * sent. Whoever starts it allocates its qk_op first (embedded in its own
 * record: a waiter, an outcall, a connection's call slot), so finishing
 * needs nothing that can fail.
 */
#ifndef QK_OP_H
#define QK_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "quark/quark.h"
#include "core/mpsc.h"
#include "runtime/codec.h"

struct qk_worker;

/* What a worker's queues carry: a message (qk_msg) or a finished op. */
typedef struct qk_node {
    qk_mpsc_node qnode;     /* inbox link (atomic) */
    struct qk_node *next;   /* local queue link */
    uint8_t kind;           /* a QK_MSG_* kind, or QK_NODE_OP */
} qk_node;

enum { QK_NODE_OP = 64 };

/* Whose error an outcome's err is. */
enum { QK_BY_RUNTIME = 0, QK_BY_ACTOR = 1 };

/* What an operation ended with. A finisher passes one (everything in it lent
 * for the call); a finished op holds one (valid until qk_op_release). */
typedef struct qk_outcome {
    quark_err err;
    uint8_t by;                    /* QK_BY_*: raised by the framework or by the actor */
    bool started;                  /* a call that had begun running (it deferred its reply) */
    const char *errmsg;            /* err != OK: the text; NULL means quark_strerror(err) */
    const quark_method_desc *md;   /* encodes `reply` (NULL: protobuf-c's reflection) */
    const ProtobufCMessage *reply; /* OK: the reply as a message, or else */
    const uint8_t *data;           /* OK: the reply already encoded, data[0..len) */
    size_t len;
    /* The silo that ran a call this silo forwarded, for the caller's route
     * (NULL: not said; see cluster.c's fwd_done). */
    const char *where;
} qk_outcome;

/* qk_op_init flags. */
enum {
    QK_OP_INLINE = 1, /* done may run on the finishing thread when that is the home */
    QK_OP_LEND = 2    /* when done runs on the finishing thread, the answer is lent
                       * (no copy); without it the op always gets its own copy */
};

typedef struct qk_op qk_op;
typedef void (*qk_op_fn)(qk_op *op);

/* Room for the copy of an answer (rule 4 of op.c), lent by the starter of an
 * op that may be finished away from where done runs: a small answer goes
 * into `space`, a larger one to the heap. An op whose done always runs
 * right away with the answer lent (no home, QK_OP_LEND) needs none. */
#define QK_ANSWER_SPACE 64
typedef struct qk_op_room {
    qk_outcome copy;
    void *heap;                    /* a copy that did not fit in space, or NULL */
    uint8_t space[QK_ANSWER_SPACE];
} qk_op_room;

struct qk_op {
    qk_node node;                  /* travels to `home` (kind QK_NODE_OP) */
    uint8_t flags;                 /* QK_OP_* */
    qk_op_fn done;                 /* runs once the op is finished (op.c) */
    struct qk_worker *home;        /* where done runs; NULL: the finishing thread */
    /* Set by finishing: the outcome done reads. It points at the finisher's
     * own (lent: valid while done runs right away) or at room->copy. */
    const qk_outcome *out;
    qk_op_room *room;              /* NULL: the answer is always lent */
#ifndef NDEBUG
    _Atomic int finished;          /* checks the exactly-once rule */
#endif
};

/* Prepare `op` before starting the work it completes; `room` (NULL only for
 * an op with no home that takes QK_OP_LEND) holds a copied answer. */
static inline void qk_op_init(qk_op *op, qk_op_fn done, struct qk_worker *home, unsigned flags,
                              qk_op_room *room)
{
    op->node.kind = QK_NODE_OP;
    op->flags = (uint8_t)flags;
    op->done = done;
    op->home = home;
    op->out = NULL; /* finishing sets it */
    op->room = room;
    if (room)
        room->heap = NULL;
#ifndef NDEBUG
    atomic_init(&op->finished, 0);
#endif
}

/* Finish `op` with `o` (see the rules in op.c). Any thread; exactly once. */
void qk_op_finish(qk_op *op, const qk_outcome *o);

/* Give back the heap copy of the answer, if any (done, when it is through
 * with op->out). */
static inline void qk_op_release(qk_op *op)
{
    if (op->room && op->room->heap) {
        free(op->room->heap);
        op->room->heap = NULL;
    }
}

/* Rule 4's copy, for a done that keeps a lent answer itself: *dst becomes
 * o with its reply encoded (or its error text) in space[0..cap) when it
 * fits, else in a heap buffer stored in *heap (the caller frees it); if that
 * cannot be had, *dst is QUARK_ENOMEM. */
void qk_outcome_copy(qk_outcome *dst, const qk_outcome *o, uint8_t *space, size_t cap,
                     void **heap);

/* ---- reading an outcome ---- */

/* The error text: errmsg, or the code's description. */
static inline const char *qk_outcome_text(const qk_outcome *o)
{
    return o->errmsg && *o->errmsg ? o->errmsg : quark_strerror(o->err);
}
/* Size of the encoded reply (0 for an error or no reply). */
size_t qk_outcome_size(const qk_outcome *o);
/* Write the encoded reply (qk_outcome_size bytes) to out. */
void qk_outcome_pack(const qk_outcome *o, uint8_t *out);
/* The reply as a message of `desc`: the lent message itself, or the bytes
 * decoded into `arena` (with md's fast decoder when it has one). NULL if
 * the bytes do not decode. */
const ProtobufCMessage *qk_outcome_decode(const qk_outcome *o, const quark_method_desc *md,
                                          const ProtobufCMessageDescriptor *desc,
                                          ProtobufCAllocator *arena);
static inline const ProtobufCMessage *qk_outcome_reply(const qk_outcome *o,
                                                       const quark_method_desc *md,
                                                       const ProtobufCMessageDescriptor *desc,
                                                       ProtobufCAllocator *arena)
{
    if (!o->reply) /* encoded: decode it */
        return qk_msg_unpack_reply(md, desc, arena, o->data, o->len);
    if (o->reply->descriptor == desc)
        return o->reply; /* lent, and of the type wanted: as it is */
    return qk_outcome_decode(o, md, desc, arena);
}

/* Outcomes a finisher often gives. */
static inline qk_outcome qk_outcome_error(quark_err err, const char *errmsg)
{
    qk_outcome o = {.err = err, .errmsg = errmsg};
    return o;
}

#endif /* QK_OP_H */
