/*
 * op.c - finishing operations: the one completion rule of Quark.
 *
 * Every call is answered through a qk_op: local and network calls, calls an
 * actor made, calls forwarded to another silo, calls of a cluster client,
 * blocking and asynchronous. The rules:
 *
 *   1. Started means allocated. Whoever starts an operation prepares its op
 *      first (qk_op_init), usually inside a record of its own. A function
 *      that starts an operation reports its own failure through its return
 *      value, and then the op was never started: it is never finished.
 *
 *   2. Exactly once. A started op is finished exactly once (qk_op_finish),
 *      by whoever holds the work at the time: the worker that answers the
 *      call (qk_answer clears the call's op as it finishes it), the peer
 *      link for a forwarded call, the client's I/O thread for a remote call.
 *      Giving up early is not finishing: a caller whose deadline passed
 *      keeps what the op needs (a reference, a record) until it is finished.
 *      Debug builds abort on a second finish.
 *
 *   3. Done runs once, on its home, never inside the starting call. After
 *      the finish, op->done runs exactly once: on the finishing thread when
 *      the op has no home; on its home worker otherwise, right away when the
 *      finisher is already that worker and the op allows QK_OP_INLINE, else
 *      queued to it (its inbox, or its local queue when it is the finisher,
 *      so it runs after the current turn). From then on the op belongs to
 *      done, which frees or recycles it. Since the starting call never
 *      finishes its op (rule 1), done never runs inside it.
 *
 *   4. Finishing never fails. The op is there already, so completing it
 *      needs no memory. The answer itself is lent when done runs right away
 *      and the op takes QK_OP_LEND (valid until done returns). Otherwise it
 *      is copied: into the room the starter lent (qk_op_init's qk_op_room)
 *      when it fits, which covers the usual small reply, else to the heap. When
 *      that heap copy cannot be had, the op finishes with QUARK_ENOMEM and a
 *      fixed text instead. This is the one out-of-memory rule for every kind
 *      of caller: a caller always hears back. (A done that takes the lent
 *      answer and keeps it, as a blocking caller's waiter does, copies it
 *      with the same function, qk_outcome_copy.)
 */
#include <stdio.h>
#include <stdlib.h>

#include "runtime/runtime.h"

size_t qk_outcome_size(const qk_outcome *o)
{
    if (o->err != QUARK_OK)
        return 0;
    if (o->reply)
        return qk_msg_size(o->md, QK_OUT, o->reply);
    return o->len;
}

void qk_outcome_pack(const qk_outcome *o, uint8_t *out)
{
    if (o->err != QUARK_OK)
        return;
    if (o->reply)
        qk_msg_pack(o->md, QK_OUT, o->reply, out);
    else if (o->len)
        memcpy(out, o->data, o->len);
}

const ProtobufCMessage *qk_outcome_decode(const qk_outcome *o, const quark_method_desc *md,
                                          const ProtobufCMessageDescriptor *desc,
                                          ProtobufCAllocator *arena)
{
    if (o->reply) { /* lent, but of another type: through the bytes */
        size_t n = qk_msg_size(o->md, QK_OUT, o->reply);
        uint8_t *tmp = arena->alloc(arena->allocator_data, n ? n : 1);
        if (!tmp)
            return NULL;
        qk_msg_pack(o->md, QK_OUT, o->reply, tmp);
        return qk_msg_unpack_reply(md, desc, arena, tmp, n);
    }
    return qk_msg_unpack_reply(md, desc, arena, o->data, o->len);
}

void qk_outcome_copy(qk_outcome *c, const qk_outcome *o, uint8_t *space, size_t cap,
                     void **heap)
{
    *c = *o;
    c->reply = NULL;
    c->data = NULL;
    c->len = 0;
    c->errmsg = NULL;
    c->where = NULL;
    size_t n = o->err == QUARK_OK ? qk_outcome_size(o) : strlen(qk_outcome_text(o)) + 1;
    size_t wn = o->where ? strlen(o->where) + 1 : 0; /* after the answer's bytes */
    uint8_t *dst = n + wn <= cap ? space : NULL;
    if (!dst && n + wn) {
        dst = malloc(n + wn);
        if (QK_UNLIKELY(!dst)) {
            c->err = QUARK_ENOMEM;
            c->by = QK_BY_RUNTIME;
            c->errmsg = "out of memory passing the answer on (the call may have run)";
            return;
        }
        *heap = dst;
    }
    if (o->err == QUARK_OK) {
        qk_outcome_pack(o, dst);
        c->data = dst;
        c->len = n;
    } else {
        memcpy(dst, qk_outcome_text(o), n);
        c->errmsg = (const char *)dst;
    }
    if (wn) {
        memcpy(dst + n, o->where, wn);
        c->where = (const char *)dst + n;
    }
}

/* Copy o into op's room (rule 4): the encoded reply, or the error text. */
static void copy_answer(qk_op *op, const qk_outcome *o)
{
    qk_op_room *r = op->room;
    if (QK_UNLIKELY(!r)) { /* a starter's bug: it promised its done always runs right away */
        fprintf(stderr, "quark: an op with no room for its answer was finished away from "
                        "its done (see qk_op_init)\n");
        abort();
    }
    qk_outcome_copy(&r->copy, o, r->space, sizeof r->space, &r->heap);
    op->out = &r->copy;
}

void qk_op_finish(qk_op *op, const qk_outcome *o)
{
#ifndef NDEBUG
    if (atomic_exchange(&op->finished, 1)) {
        fprintf(stderr, "quark: an operation was finished twice (the exactly-once rule of "
                        "src/runtime/op.c is broken)\n");
        abort();
    }
#endif
    qk_worker *self = qk_tls_worker;
    bool now = !op->home || (op->home == self && (op->flags & QK_OP_INLINE));
    if (now && (op->flags & QK_OP_LEND)) {
        op->out = o;
        op->done(op);
        return;
    }
    copy_answer(op, o);
    if (now)
        op->done(op);
    else
        qk_send_node(op->home, &op->node);
}

