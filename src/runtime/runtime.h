/*
 * runtime.h - internal structures of the in-process runtime.
 *
 * The one idea: every activation is owned by exactly one worker thread, and
 * everything about it (directory slot, mailbox, timers, deferred calls,
 * deadlines) is touched only by that thread. Threads talk by moving qk_msg
 * objects: a call travels to the callee's worker, its answer travels back
 * (or, for callers outside any actor, completes right there).
 *
 * Exactly-once rule for calls: every CALL message is answered exactly once by
 * the callee side (qk_answer: a reply, an error, a timeout, or ECLOSED at
 * stop), which finishes the call's op; op.c states the rules every answer
 * follows. The caller side may give up earlier (its own deadline), but it
 * keeps the state the answer needs (waiter refcount, outcall record) until
 * the answer arrives, so nothing is freed twice or written after free.
 */
#ifndef QK_RUNTIME_H
#define QK_RUNTIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

#include "quark/quark.h"
#include "core/arena.h"
#include "core/common.h"
#include "core/dlheap.h"
#include "core/mpsc.h"
#include "core/spin.h"
#include "core/registry_internal.h"
#include "runtime/codec.h"
#include "runtime/op.h"
#include "runtime/ports.h"
#include "runtime/providers.h"
#include "runtime/state.h"

typedef struct qk_worker qk_worker;
typedef struct qk_msg qk_msg;

/* What a worker's deadline heap entry is embedded in. */
enum { QK_DL_MSG = 1, QK_DL_OUTCALL = 2 };

/* Blocking caller: lives on the heap, two references (caller, answerer).
 * Its op has no home and lends the answer: done (waiter_done) keeps a copy
 * in the waiter's own cache line, next to the word the caller polls, so the
 * answer reaches the caller in as few cache-line transfers as can be (a
 * full-size op and answer room there made in-process blocking calls ~40%
 * slower, measured). */
#define QK_WAITER_SPACE 16
typedef struct qk_waiter {
    qk_op op;
    _Atomic uint32_t state;        /* pending, answered, or the caller sleeps */
    _Atomic uint32_t refs;
    qk_outcome res;                /* the answer, once state says so */
    void *heap;                    /* res's bytes when they did not fit in space */
    uint8_t space[QK_WAITER_SPACE];
} qk_waiter;

/* A call an activation made; lives on the caller's worker until answered.
 * Its op's home is that worker: the answer runs there as a turn. */
typedef struct qk_outcall {
    qk_op op;
    qk_deadline dl;
    quark_actor *caller;      /* NULL once the caller is gone (stop) */
    quark__trampoline_fn tramp;
    void (*fn)(void);
    void *arg;
    const ProtobufCMessageDescriptor *reply_desc;
    const quark_method_desc *reply_md; /* its fast decoder, if any */
    uint32_t turn;            /* logical turn of the caller that made it */
    uint16_t chain_len;
    bool done;                /* the callback already ran (deadline) */
    qk_op_room room;          /* the answer comes from another thread */
    qk_chain_link chain[];    /* the caller's context chain */
} qk_outcall;

enum qk_msg_kind {
    QK_MSG_CALL = 1,
    QK_MSG_TASK,    /* run a function on the worker */
    QK_MSG_SUB,     /* add a subscriber (to the worker owning the actor key) */
    QK_MSG_UNSUB,   /* remove one */
    QK_MSG_EVENT,   /* an event for a network subscriber (to its connection's worker) */
    QK_MSG_SUBFREE  /* the owner let go of a network subscriber: free it */
};
enum {
    QK_MF_READ_ONLY = 1,  /* method flag copied at send */
    QK_MF_DEFERRED = 2,   /* in its activation's deferred list */
    QK_MF_ANSWERED = 4,   /* answered (deadline) but still held */
    QK_MF_IN_MAILBOX = 8,
    QK_MF_HELD = 16       /* its reply waits for a state write (state.c) */
};

typedef void (*qk_task_fn)(qk_worker *w, void *arg);

/* Messages one worker has for another, published in one exchange. */
typedef struct qk_outq {
    qk_mpsc_node *first, *last;
    unsigned n;
    bool dirty;   /* listed in the worker's dirty array */
} qk_outq;

/* An async caller outside any actor keeps nothing of its own: its op lives
 * in the CALL message and runs right where the answer is made (op.h:
 * no home, the reply lent), so the reply is never copied. */
typedef struct qk_cbcall {
    qk_op op;
    quark__trampoline_fn tramp;
    void (*fn)(void);
    void *arg;
    const ProtobufCMessageDescriptor *desc;
} qk_cbcall;

struct qk_msg {
    qk_node node;             /* queue links and kind (QK_MSG_*) */
    qk_msg *next;             /* mailbox link */
    qk_deadline dl;
    uint8_t flags, pooled;
    uint16_t method;
    uint16_t chain_len;
    uint16_t id_len;
    uint8_t hops;             /* CALL: times forwarded between silos */
    uint32_t args_len;
    uint32_t turn;            /* CALL, deferred: the turn that deferred it; EVENT: its sequence */
    uint64_t hash;            /* CALL: hash of (type, id) */
    const qk_type_entry *type;
    quark_actor *act;         /* CALL: the activation, once delivered */
    qk_msg *dprev, *dnext;    /* deferred list */
    qk_op *op;                /* CALL: its completion; NULL once answered */
    union {
        qk_cbcall cb;             /* CALL from an async caller outside any actor */
        struct {
            qk_task_fn fn;
            void *arg;
        } task;
        struct {
            struct qk_sub *sub;   /* SUB, UNSUB, EVENT, SUBFREE */
            const char *event_type; /* EVENT: the message's full name */
        } ev;
    } r;
    qk_chain_link *chain;     /* CALL: links (in data) */
    char *id;                 /* CALL, EVENT: the actor id, NUL-terminated (in data) */
    uint8_t *args;            /* CALL: the request; EVENT: the event's payload */
    _Alignas(16) unsigned char data[];
};

enum {
    QK_AF_RUNNING = 1,     /* a turn is executing right now */
    QK_AF_WAITING = 2,     /* a non-read-only turn deferred its reply */
    QK_AF_DEACT_REQ = 4,   /* deactivate when idle */
    QK_AF_READY = 8,       /* on the worker's ready list */
    QK_AF_DEAD = 16,
    QK_AF_LET_GO = 32      /* the route took it away (qk_let_go): it runs no more turns
                            * if the route marked it (route_tag) */
};

struct quark_timer {
    uv_timer_t uv;
    quark_actor *act;
    quark_timer *next;     /* activation's timer list */
    quark_timer_fn fn;
    void *arg;
    uint64_t period;
    bool firing;           /* its tick is running */
    bool stopped;
};

struct quark_actor {
    quark_actor *lru_prev, *lru_next;
    quark_actor *ready_next;
    qk_msg *mb_head, *mb_tail;   /* mailbox */
    qk_msg *deferred;            /* deferred calls not yet replied */
    const qk_type_entry *type;
    qk_worker *worker;
    quark_timer *timers;
    struct qk_pstate *ps;        /* persistent state (state.h), or NULL */
    uint64_t hash;
    uint64_t last_used_ms;
    uint64_t route_tag;          /* the route's mark of this activation (its directory
                                  * entry), 0: none; the route's released() hook sees it */
    uint32_t turn_ctr;
    uint32_t outcalls;           /* calls made and not yet answered */
    uint32_t event_seq;          /* events published (quark_actor_publish) */
    uint16_t ro_waiting;         /* deferred read-only turns */
    uint16_t id_len;
    uint16_t mb_len;             /* calls in the mailbox (<= opts.max_mailbox) */
    uint8_t flags;
    char id[];                   /* then the state, 16-aligned, then *ps */
};

/* Where an activation's in-memory state begins: after its id, which starts
 * at offsetof(id), not at sizeof (the struct's tail padding holds the id's
 * first bytes; an id of up to 12 bytes fits in 128 bytes). */
static inline size_t qk_actor_state_off(size_t id_len)
{
    return QK_ALIGN_UP(offsetof(quark_actor, id) + id_len + 1, 16);
}

/* The turn being run on a worker (NULL act: not inside a turn). */
typedef struct qk_turn {
    quark_actor *act;
    qk_msg *msg;                 /* the call being handled (CALL turns) */
    uint32_t turn;               /* logical turn id */
    uint16_t chain_len;
    const qk_chain_link *chain;  /* context chain of this turn */
    bool deferred;               /* quark_actor_defer was called */
    bool has_error;
    char error[256];             /* message set by quark_actor_fail */
} qk_turn;

/* A directory slot: the actor and its key hash (probes compare the hash
 * without touching the actor). */
typedef struct qk_dslot {
    uint64_t hash;
    quark_actor *a;
} qk_dslot;

struct qk_worker {
    qk_mpsc inbox;                /* from other threads */
    _Atomic int sleeping;
    char pad_[64];
    quark_silo *silo;
    unsigned index;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t dl_timer;
    uv_timer_t idle_timer;        /* collects idle activations, trims the heap */
    uint64_t collect_every_ms, next_collect_ms;
    uint64_t last_work_ms;        /* it last went to sleep after working */
    bool heap_used;               /* it worked since the last trim */
    qk_node *lq_head, *lq_tail;   /* local queue: same-thread sends */
    struct qk_outq *out;          /* per target worker: sends not yet published */
    bool io_pending;              /* the listener has output to write (qk_flush) */
    struct qk_topic **topics;     /* actor key -> subscribers (events.c) */
    size_t topic_mask, topic_count;
    unsigned *dirty;              /* targets with a pending chain */
    unsigned ndirty;
    quark_actor *ready_head, *ready_tail;
    qk_dslot *slots;              /* directory: open addressing */
    size_t mask, count;
    quark_actor *lru_head, *lru_tail;
    uint32_t queued;              /* calls in its activations' mailboxes
                                   * (<= opts.max_worker_queue) */
    qk_dlheap heap;               /* deadlines of calls this worker holds */
    uint64_t dl_armed_ms;         /* when dl_timer fires, UINT64_MAX if not */
    uint64_t now_ms;              /* coarse clock, refreshed every batch */
    /* Until when (qk_now_ms_coarse) this worker's marked activations may run
     * turns, besides the silo's lease: the route's promise that their
     * directory entries are still theirs (UINT64_MAX: no such bound). Set
     * on this worker only. */
    uint64_t route_until;
    qk_arena arena;
    qk_msg *msg_free;             /* recycled small messages */
    unsigned msg_free_n;
    qk_turn cur;
    bool stopping;
    bool exit_loop;
    bool flip;                    /* next_msg: which queue to try first */
    qk_spin spin;                 /* polling before sleeping (network silos) */
    uint64_t exit_by_ms;          /* after exit: give connections until then */
    _Atomic uint64_t handoffs;    /* network calls it read for another worker's actors
                                   * (written by this worker only) */
    _Atomic size_t live;          /* activations (a copy of count for other threads) */
    /* Persistent state (state.c): the storage's per-worker state, states
     * to write at the end of the batch, idle request records, and requests
     * in flight (read by the thread that stops the silo). */
    void *st_pw;
    struct qk_pstate *st_dirty;
    struct qk_state_req *st_free;
    _Atomic unsigned st_busy;
};

struct quark_silo {
    quark_silo_opts opts;
    char *listen_host;            /* copies of opts strings */
    char *cluster_id;
    char *cluster_key;            /* NULL: none (quark_silo_opts.cluster_key) */
    char *seeds;
    char *membership;
    char *directory;
    char *advertise;
    unsigned nworkers;
    qk_worker *workers;
    quark_client *self_client;    /* what quark_actor_client returns */
    _Atomic int state;            /* 0 created, 1 running, 2 stopping, 3 stopped */
    uv_mutex_t lock;              /* start/stop only (root/silo.c) */
    /* The ports (ports.h), plugged in before the workers start. */
    const qk_listener_ops *listener;
    void *listener_self;
    const qk_route_ops *route;
    void *route_self;
    /* Until when (qk_now_ms_coarse) activations the route marked
     * (route_tag) may run turns: the membership's lease, kept by the route
     * (UINT64_MAX: no lease). Checked as each of their turns begins. */
    _Atomic uint64_t lease_until;
    struct qk_rsvc *reminders;    /* reminder_service.h, while it runs */
    const qk_storage_ops *storage; /* providers.h; NULL: no persistent state */
    void *storage_self;
    void *root;                   /* the composition root's parts (root/silo.c) */
};

struct quark_client {
    const qk_client_ops *ops;     /* embedded (call.c) or remote (transport/client.c) */
    void *impl;
    _Atomic int connected;
    uint32_t default_deadline_ms;
    quark_client_opts opts;
};

struct quark_subscription {
    const qk_client_ops *ops;     /* its client's backend (the client may be gone) */
    void *sub;                    /* the backend's */
};

struct quark_ref {
    quark_client *client;
    const quark_interface *iface;
    _Atomic(const qk_type_entry *) entry; /* resolved lazily, cached */
    const char *type_name;        /* points into data or iface->name */
    uint32_t type_len;
    uint32_t deadline_ms;
    uint64_t hash;
    uint16_t id_len;
    char data[];                  /* id NUL, then explicit type name NUL */
};

/* ---- silo.c: the runtime's half of a silo (root/silo.c wires the rest) ---- */
/* A silo with its workers not started (opts validated, strings copied). */
quark_err qk_silo_new(const quark_silo_opts *opts, quark_silo **out);
void qk_silo_set_listener(quark_silo *s, const qk_listener_ops *ops, void *self);
void qk_silo_set_route(quark_silo *s, const qk_route_ops *ops, void *self);
/* Before the workers start: each worker attaches to it then. */
void qk_silo_set_storage(quark_silo *s, const qk_storage_ops *ops, void *self);
/* Start the workers; the silo runs (state 1) when it returns QUARK_OK. */
quark_err qk_silo_run(quark_silo *s);
/* Stopping, in three phases the root sequences (between them it stops the
 * parts that need workers alive, e.g. forwarded calls finishing):
 *   1. qk_silo_stop_calls: new calls are refused (state 2); every worker
 *      quiesces its listener, deactivates its activations (on_deactivate
 *      runs), answers what it holds (ECLOSED) and ends local subscriptions;
 *   2. qk_silo_close_io: listeners write what is pending and close;
 *   3. qk_silo_join: the workers leave their loops, are joined, and what
 *      is still queued is answered; the silo is stopped (state 3). */
void qk_silo_stop_calls(quark_silo *s);
void qk_silo_close_io(quark_silo *s);
void qk_silo_join(quark_silo *s);
void qk_silo_free(quark_silo *s);     /* stopped or never started */

/* ---- worker.c ---- */
extern QK_TLS qk_worker *qk_tls_worker;
quark_err qk_workers_start(quark_silo *s);
void qk_workers_stop_calls(quark_silo *s);
void qk_workers_close_io(quark_silo *s);
void qk_workers_join(quark_silo *s);
/* Queue a message or a finished op for worker w (from any thread). */
void qk_send_node(qk_worker *w, qk_node *n);
static inline void qk_send(qk_worker *w, qk_msg *m)
{
    qk_send_node(w, &m->node);
}
/* Publish the calling worker's batched sends (see worker.c). */
void qk_flush(qk_worker *self);
/* Run `fn(w, arg)` on worker `w` and wait for it (not from a worker); out of
 * memory waits for memory: fn always runs. */
void qk_run_on(qk_worker *w, qk_task_fn fn, void *arg);
/* Run `fn(w, arg)` on worker `w` later (any thread); false if no memory. */
bool qk_post_task(qk_worker *w, qk_task_fn fn, void *arg);
void qk_heap_insert(qk_worker *w, qk_deadline *d);
void qk_heap_remove(qk_worker *w, qk_deadline *d);
/* The worker's idea of now (ms): refreshed before every batch of messages,
 * so a busy worker reads the clock once per batch, not three times a call. */
static inline uint64_t qk_worker_now_ms(const qk_worker *w)
{
    return w->now_ms;
}
static inline void qk_worker_set_now(qk_worker *w)
{
    w->now_ms = qk_now_ms_coarse();
}
static inline unsigned qk_worker_of(const quark_silo *s, uint64_t hash)
{
    return (unsigned)(((hash >> 32) * (uint64_t)s->nworkers) >> 32);
}
/* ports.h: the listener has output for the end of w's batch (on w). */
static inline void qk_worker_io_pending(qk_worker *w)
{
    w->io_pending = true;
}

/* ---- events.c ---- */

/* A subscriber. Remote ones (ops != NULL, ports.h) belong to their home
 * worker, which frees them only after the owner of the topic said SUBFREE
 * (their ended()); local ones (an embedded client's callback) belong to the
 * topic's owner. */
typedef struct qk_sub {
    struct qk_sub *next;          /* in its topic */
    const qk_type_entry *type;
    uint64_t hash;                /* actor key */
    const qk_sub_ops *ops;        /* remote subscriber, or NULL */
    qk_worker *home;              /* remote: the worker its ops run on */
    void *ctx;                    /* remote: its owner's (a connection) */
    struct qk_sub *ctx_next;      /* remote: its owner's list */
    uint64_t id;                  /* remote: its owner's id for it */
    quark_event_fn fn;            /* local subscriber */
    void *arg;
    bool removed;                 /* UNSUB sent */
    /* Local subscribers only: references held by the application's handle,
     * the topic, and each UNSUB in flight; `ended` once the final callback ran. */
    _Atomic int refs;
    _Atomic bool ended;
    uint16_t id_len;
    char actor_id[];
} qk_sub;

void qk_events_deliver(qk_worker *w, qk_msg *m);  /* SUB, UNSUB, EVENT, SUBFREE */
void qk_events_stop(qk_worker *w);                /* end every local subscription */
/* The embedded backend's subscriptions (call.c's client table). */
quark_err qk_embedded_subscribe(quark_silo *s, const char *type, const char *id,
                                quark_event_fn fn, void *arg, void **out);
void qk_embedded_unsubscribe(void *sub);

/* ---- activation.c ---- */
void qk_deliver(qk_worker *w, qk_msg *m);
/* On w, for the route: run CALL m here, activating its actor if it has no
 * activation on w (that activation gets route_tag `tag`), without asking
 * the route again: the route placed it (e.g. its directory registered the
 * activation of this silo). */
void qk_deliver_placed(qk_worker *w, qk_msg *m, uint64_t tag);

/* Do the silo's lease and w's route bound hold now? (A fresh clock: the
 * worker's may predate a pause of the process.) */
static inline bool qk_lease_ok(const qk_worker *w)
{
    uint64_t now = qk_now_ms_coarse();
    return now < atomic_load_explicit(&w->silo->lease_until, memory_order_relaxed) &&
           now < w->route_until;
}

/* May activation a run a turn now? One the route marked only while the
 * lease holds, and not once the route let go of it. */
static inline bool qk_may_run(const qk_worker *w, const quark_actor *a)
{
    return !a->route_tag || (!(a->flags & QK_AF_LET_GO) && qk_lease_ok(w));
}
/* What a worker's queue gave it: a message, or a finished op (its done). */
static inline void qk_dispatch(qk_worker *w, qk_node *n)
{
    if (n->kind == QK_NODE_OP) {
        qk_op *op = QK_CONTAINER_OF(n, qk_op, node);
        op->done(op);
    } else {
        qk_deliver(w, QK_CONTAINER_OF(n, qk_msg, node));
    }
}
void qk_pump(qk_worker *w, quark_actor *a);
/* On w: pump a after what w is doing now (its ready list). */
void qk_ready(qk_worker *w, quark_actor *a);
/* The worker running a turn of `self` now (the calling thread's), or NULL. */
static inline qk_worker *qk_turn_of(quark_actor *self)
{
    qk_worker *w = qk_tls_worker;
    return (w && self && w->cur.act == self) ? w : NULL;
}
/* Stopping: deactivate every activation (force false: those whose state is
 * being written go once it is stored). */
void qk_deactivate_all(qk_worker *w, bool force);
void qk_collect_idle(qk_worker *w, uint64_t now_ms);
void qk_deadline_fire(qk_worker *w, qk_deadline *d);
void qk_timer_fire(qk_worker *w, quark_timer *t);
/* On w, when the route's idea of ownership changed (the cluster's view):
 * deactivate what the route no longer keeps here, and route again the
 * calls queued for it. */
void qk_rebalance(qk_worker *w);
/* On w: activation a goes (the route took it away): the calls queued for it
 * are routed again, and it is deactivated once what it runs is done. */
void qk_let_go(qk_worker *w, quark_actor *a);
/* On w: the activation of (t, id) on w, or NULL. */
quark_actor *qk_activation_find(qk_worker *w, const qk_type_entry *t, uint64_t hash,
                                const char *id, size_t id_len);

/* ---- call.c ---- */
/* The embedded client backend: calls a silo of this process. */
extern const qk_client_ops qk_client_embedded;
/* A client of the given backend (root/client.c, silo.c). */
quark_err qk_client_new(const quark_client_opts *opts, const qk_client_ops *ops, void *impl,
                        quark_client **out);
qk_msg *qk_msg_new(size_t extra);
void qk_msg_free(qk_msg *m);
/* Answer CALL m exactly once: finish its op with `o` (a reply that came
 * after m's deadline becomes QUARK_ETIMEDOUT). Does not free m. */
void qk_answer(qk_worker *w, qk_msg *m, const qk_outcome *o);
/* The framework's error (by QK_BY_RUNTIME), or the actor's (QK_BY_ACTOR). */
static inline void qk_answer_error(qk_worker *w, qk_msg *m, quark_err err, const char *errmsg)
{
    qk_outcome o = qk_outcome_error(err, errmsg);
    qk_answer(w, m, &o);
}
static inline void qk_answer_actor_error(qk_worker *w, qk_msg *m, quark_err err,
                                         const char *errmsg)
{
    qk_outcome o = qk_outcome_error(err, errmsg);
    o.by = QK_BY_ACTOR;
    qk_answer(w, m, &o);
}
void qk_waiter_unref(qk_waiter *wt);
qk_waiter *qk_waiter_new(void);                  /* two references: caller, answerer */
/* The caller's side: wait until answered or deadline_ms, decode, unref. */
quark_err qk_waiter_finish(qk_waiter *wt, uint64_t deadline_ms, bool remote,
                           const ProtobufCMessageDescriptor *out_desc, ProtobufCMessage **reply,
                           const char *type, const char *id, const char *method);
/* activation.c: run an outcall's callback as a turn of its caller, then let
 * the caller take its next message. */
void qk_run_continuation(qk_worker *w, qk_outcall *oc, quark_err err, const char *errmsg,
                         const ProtobufCMessage *reply);
void qk_after_continuation(qk_worker *w, quark_actor *a);

#include "core/hash.h"
#define QK_KEY_SEED 0x6b65795f71726bull
/* Hash of an actor key (type, id): places it on a worker (and, later, on a
 * silo of the cluster). */
static inline uint64_t qk_key_hash(uint64_t type_name_hash, const char *id, size_t len)
{
    return qk_hash(id, len, QK_KEY_SEED ^ type_name_hash);
}

/* The method a CALL message invokes (NULL if unknown). */
static inline const quark_method_desc *qk_msg_method(const qk_msg *m)
{
    return m->type && m->method < m->type->iface->n_methods ? &m->type->iface->methods[m->method]
                                                             : NULL;
}
#endif /* QK_RUNTIME_H */
