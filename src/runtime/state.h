/*
 * state.h - persistent actor state on a worker (state.c): loading it before
 * the first turn, writing it at the end of a batch, holding replies until
 * what they may depend on is stored.
 */
#ifndef QK_STATE_H
#define QK_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/op.h"
#include "runtime/providers.h"

struct qk_worker;
struct qk_msg;
struct qk_state_req;

enum {
    QK_PS_LOADING = 1,  /* the record is being read: calls wait */
    QK_PS_DIRTY = 2,    /* changed since the last write started */
    QK_PS_CLEARED = 4,  /* cleared, and not changed since: the write deletes */
    QK_PS_FAILED = 8,   /* a write failed: the state is dropped, the activation goes */
    QK_PS_LISTED = 16   /* on the worker's list of states to write */
};

/* A reply held until the write it waits for is stored. */
typedef struct qk_held {
    struct qk_held *next;
    struct qk_msg *m;          /* the call */
    uint16_t seq;              /* the write it waits for */
    qk_outcome o;              /* the answer, copied */
    void *heap;                /* o's bytes when they did not fit in space */
    uint8_t space[40];
} qk_held;

/* The persistent state of one activation. It comes first in the
 * activation's allocation, right before the quark_actor (qk_pstate_actor),
 * and the decoded message's top level lives in it too (after the in-memory
 * state): an idle activation costs this, and the message's own fields. */
typedef struct qk_pstate {
    ProtobufCMessage *msg;          /* the state, decoded */
    struct qk_stblock *blocks;      /* what else msg was decoded into (and state_alloc) */
    struct qk_pstate *dirty_next;   /* the worker's list of states to write */
    struct qk_state_req *req;       /* the read or write in flight, or NULL */
    qk_held *held;                  /* replies waiting for a write: the last, whose
                                     * next is the first (a ring), or NULL */
    uint16_t wseq;                  /* writes started */
    uint16_t dseq;                  /* writes stored */
    uint8_t flags;                  /* QK_PS_* */
    char etag[QK_ETAG_MAX];         /* of the stored record this state matches */
} qk_pstate;

_Static_assert(sizeof(qk_pstate) % 16 == 0, "the quark_actor after it stays 16-aligned");

static inline quark_actor *qk_pstate_actor(qk_pstate *ps)
{
    return (quark_actor *)(ps + 1);
}

/* Bytes an activation of type t (with persistent state) needs beyond its
 * quark_actor, id and in-memory state: the qk_pstate before it and the
 * room for the decoded message's top level after. */
size_t qk_state_size(const quark_actor_type *t);

/* On w, while activating a (a->ps set, zeroed): read its record. QUARK_OK:
 * loaded. QUARK_PENDING: loading (calls wait in the mailbox; activation.c's
 * qk_activation_loaded runs when it is done). An error: nothing is left to
 * undo; *why (of cap bytes) says what failed. */
quark_err qk_state_load(struct qk_worker *w, quark_actor *a, char *why, size_t cap);

/* On w: answer call m of a with o (false: m is still the caller's), or
 * hold the answer until the state it may depend on is stored (true: m is
 * flagged QK_MF_HELD and freed once answered). */
bool qk_state_answer(struct qk_worker *w, quark_actor *a, struct qk_msg *m, const qk_outcome *o);

/* On w, at the end of a batch: start the writes of the states changed. */
void qk_state_flush(struct qk_worker *w);

/* Nothing in flight, nothing to write, no reply held: a may go. */
static inline bool qk_state_quiet(const qk_pstate *ps)
{
    return !ps || (!ps->req && !(ps->flags & QK_PS_DIRTY) && !ps->held);
}

/* On w, as a is destroyed: fail what is held (err, text), free the state;
 * an op still in flight (a forced stop) finds its activation gone. */
void qk_state_destroy(struct qk_worker *w, quark_actor *a, quark_err err, const char *text);

/* On w when it stops: free its idle request records. */
void qk_state_worker_free(struct qk_worker *w);

/* activation.c: the read started by qk_state_load is done (err OK: the
 * state is there; else why says what failed). */
void qk_activation_loaded(struct qk_worker *w, quark_actor *a, quark_err err, const char *why);

#endif /* QK_STATE_H */
