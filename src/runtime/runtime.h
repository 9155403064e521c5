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
 * stop). The caller side may give up earlier (its own deadline), but it
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

typedef struct qk_worker qk_worker;
typedef struct qk_msg qk_msg;

/* What a worker's deadline heap entry is embedded in. */
enum { QK_DL_MSG = 1, QK_DL_OUTCALL = 2 };

/* Blocking caller: lives on the heap, two references (caller, answerer). */
typedef struct qk_waiter {
    _Atomic uint32_t state; /* 0 pending, 1 answered: also the futex word */
    _Atomic uint32_t refs;
    quark_err err;
    char *errmsg;           /* malloc'd, or NULL */
    uint8_t *reply;         /* malloc'd packed reply, or NULL */
    size_t reply_len;
} qk_waiter;

/* A call an activation made; lives on the caller's worker until answered. */
typedef struct qk_outcall {
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
    qk_chain_link chain[];    /* the caller's context chain */
} qk_outcall;

enum qk_msg_kind {
    QK_MSG_CALL = 1,
    QK_MSG_REPLY,   /* answer to an actor's call, for its worker */
    QK_MSG_TASK,    /* run a function on the worker */
    QK_MSG_NETOUT,  /* answer to a network call, for the connection's worker */
    QK_MSG_SUB,     /* add a subscriber (to the worker owning the actor key) */
    QK_MSG_UNSUB,   /* remove one */
    QK_MSG_EVENT,   /* an event for a network subscriber (to its connection's worker) */
    QK_MSG_SUBFREE, /* the owner let go of a network subscriber: free it */
    QK_MSG_FWDANS   /* the answer to a call this worker forwarded to another silo */
};
enum qk_reply_kind {
    QK_RK_NONE = 0,
    QK_RK_WAITER,   /* blocking application thread */
    QK_RK_CALLBACK, /* async caller outside any actor */
    QK_RK_ACTOR,    /* an actor: REPLY to its worker */
    QK_RK_NET       /* a remote caller: answer on its connection (transport/server.c) */
};
enum {
    QK_MF_READ_ONLY = 1,  /* method flag copied at send */
    QK_MF_DEFERRED = 2,   /* in its activation's deferred list */
    QK_MF_ANSWERED = 4,   /* answered (deadline) but still held */
    QK_MF_IN_MAILBOX = 8,
    QK_MF_APP_ERROR = 16  /* NETOUT: the error came from the actor, not the runtime */
};

typedef void (*qk_task_fn)(qk_worker *w, void *arg);

/* Messages one worker has for another, published in one exchange. */
typedef struct qk_outq {
    qk_mpsc_node *first, *last;
    unsigned n;
    bool dirty;   /* listed in the worker's dirty array */
} qk_outq;

struct qk_msg {
    qk_mpsc_node qnode;       /* inbox link (atomic) */
    qk_msg *next;             /* local queue / mailbox link */
    qk_deadline dl;
    uint8_t kind, rk, flags, pooled;
    uint16_t method;
    uint16_t chain_len;
    uint16_t id_len;
    uint8_t hops;             /* CALL: times forwarded between silos */
    uint32_t args_len;
    int32_t err;              /* REPLY: the answer's code */
    uint32_t turn;            /* CALL, deferred: the turn that deferred it */
    uint64_t hash;            /* CALL: hash of (type, id) */
    const qk_type_entry *type;
    quark_actor *act;         /* CALL: the activation, once delivered */
    qk_msg *dprev, *dnext;    /* deferred list */
    union {
        qk_waiter *waiter;
        struct {
            quark__trampoline_fn tramp;
            void (*fn)(void);
            void *arg;
            const ProtobufCMessageDescriptor *desc;
        } cb;
        struct {
            qk_outcall *oc;
            qk_worker *w;     /* the caller's worker */
        } actor;
        struct {
            qk_task_fn fn;
            void *arg;
        } task;
        struct {
            struct qk_conn *conn; /* owned by conn->w */
            uint64_t id;          /* request id on that connection */
        } net;
        struct qk_sub *sub;       /* SUB, UNSUB, EVENT, SUBFREE */
        struct {
            qk_msg *orig;         /* FWDANS: the forwarded CALL */
        } fwd;
    } r;
    qk_chain_link *chain;     /* CALL: links (in data) */
    char *id;                 /* CALL: NUL-terminated (in data); REPLY: errmsg */
    uint8_t *args;            /* CALL: request; REPLY: packed reply */
    _Alignas(16) unsigned char data[];
};

enum {
    QK_AF_RUNNING = 1,     /* a turn is executing right now */
    QK_AF_WAITING = 2,     /* a non-read-only turn deferred its reply */
    QK_AF_DEACT_REQ = 4,   /* deactivate when idle */
    QK_AF_READY = 8,       /* on the worker's ready list */
    QK_AF_DEAD = 16
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
    uint64_t hash;
    uint64_t last_used_ms;
    uint32_t turn_ctr;
    uint32_t outcalls;           /* calls made and not yet answered */
    uint32_t event_seq;          /* events published (quark_actor_publish) */
    uint16_t ro_waiting;         /* deferred read-only turns */
    uint16_t id_len;
    uint8_t flags;
    char id[];                   /* then the state, 16-aligned */
};

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
    uv_timer_t idle_timer;
    qk_msg *lq_head, *lq_tail;    /* local queue: same-thread sends */
    struct qk_outq *out;          /* per target worker: sends not yet published */
    struct qk_conn *dirty_conns;  /* connections with output to write */
    uv_tcp_t *listener;           /* this worker's listening socket, or NULL */
    struct qk_conn *conns;        /* all connections of this worker */
    struct qk_topic **topics;     /* actor key -> subscribers (events.c) */
    size_t topic_mask, topic_count;
    unsigned *dirty;              /* targets with a pending chain */
    unsigned ndirty;
    quark_actor *ready_head, *ready_tail;
    qk_dslot *slots;              /* directory: open addressing */
    size_t mask, count;
    quark_actor *lru_head, *lru_tail;
    qk_dlheap heap;               /* deadlines of calls this worker holds */
    uint64_t dl_armed_ms;         /* when dl_timer fires, UINT64_MAX if not */
    uint64_t now_ms;              /* coarse clock, refreshed every batch */
    qk_arena arena;
    qk_msg *msg_free;             /* recycled small messages */
    unsigned msg_free_n;
    qk_turn cur;
    bool stopping;
    bool exit_loop;
    bool flip;                    /* next_msg: which queue to try first */
    qk_spin spin;                 /* polling before sleeping (network silos) */
    uint64_t exit_by_ms;          /* after exit: give connections until then */
    bool app_error;               /* the answer being sent is the actor's own error */
    struct qk_view *view;         /* the cluster as this worker routes by (NULL: alone) */
    _Atomic uint64_t forwarded;   /* calls this worker forwarded to their owner */
    _Atomic uint64_t handoffs;    /* network calls it read for another worker's actors
                                   * (written by this worker only) */
    _Atomic size_t live;          /* activations (a copy of count for other threads) */
};

struct quark_silo {
    quark_silo_opts opts;
    char *listen_host;            /* copies of opts strings */
    char *cluster_id;
    int port;                     /* bound port, 0 if not listening */
    int *listen_fds;              /* one SO_REUSEPORT socket per worker */
    unsigned nworkers;
    qk_worker *workers;
    quark_client *self_client;    /* what quark_actor_client returns */
    _Atomic int state;            /* 0 created, 1 running, 2 stopping, 3 stopped */
    uv_mutex_t lock;              /* start/stop only */
    struct qk_cluster *cluster;   /* membership and forwarding (cluster/cluster.c) */
    char *seeds;                  /* copies of opts strings */
    char *advertise;
};

struct quark_client {
    quark_silo *silo;             /* embedded: the silo it calls */
    struct qk_remote *remote;     /* otherwise: the network side (transport/remote.c) */
    _Atomic int connected;
    uint32_t default_deadline_ms;
    quark_client_opts opts;
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

/* ---- worker.c ---- */
extern QK_TLS qk_worker *qk_tls_worker;
quark_err qk_workers_start(quark_silo *s);
void qk_workers_stop(quark_silo *s);
void qk_send(qk_worker *w, qk_msg *m);
/* Publish the calling worker's batched sends (see worker.c). */
void qk_flush(qk_worker *self);
/* Run `fn(w, arg)` on worker `w` and wait for it (not from a worker). */
void qk_run_on(qk_worker *w, qk_task_fn fn, void *arg);
void qk_heap_insert(qk_worker *w, qk_deadline *d);
void qk_heap_remove(qk_worker *w, qk_deadline *d);
/* The worker's idea of now (ms): refreshed before every batch of messages,
 * so a busy worker reads the clock once per batch, not three times a call. */
static inline uint64_t qk_worker_now_ms(const qk_worker *w)
{
    return w->now_ms;
}
static inline unsigned qk_worker_of(const quark_silo *s, uint64_t hash)
{
    return (unsigned)(((hash >> 32) * (uint64_t)s->nworkers) >> 32);
}

/* ---- transport/server.c ---- */
quark_err qk_server_bind(quark_silo *s);                 /* in quark_silo_start */
void qk_server_worker_start(qk_worker *w);              /* on each worker */
void qk_server_worker_quiesce(qk_worker *w);            /* stop accepting and reading */
void qk_server_worker_stop(qk_worker *w);               /* write what is left, close */
int qk_server_worker_busy(const qk_worker *w);          /* connections still open */
void qk_net_respond(struct qk_conn *c, uint64_t id, quark_err err, const char *errmsg,
                    const uint8_t *result, size_t len, bool app_error);
void qk_server_flush(qk_worker *w);                     /* write dirty conns */
void qk_net_answer(qk_worker *w, qk_msg *m, quark_err err, const char *errmsg,
                   const ProtobufCMessage *reply);
void qk_net_deliver(qk_worker *w, qk_msg *m);           /* QK_MSG_NETOUT */
void qk_conn_ref(struct qk_conn *c);                     /* owner worker only */
qk_worker *qk_conn_worker(const struct qk_conn *c);      /* the worker that owns it */
/* call.c: start a call that arrived from the network. Answers (also
 * immediate errors) go through qk_net_answer. */
void qk_net_invoke(qk_worker *w, struct qk_conn *conn, uint64_t id, const char *type,
                   size_t type_len, const char *actor_id, size_t id_len, const char *method,
                   size_t method_len, const uint8_t *args, size_t args_len, uint32_t deadline_ms,
                   const qk_chain_link *chain, size_t chain_len, uint32_t hops);
/* Send the current view to this worker's watching connections. */
void qk_server_push_view(qk_worker *w);

/* ---- events.c ---- */

/* A subscriber. Network ones (conn != NULL) belong to their connection's
 * worker, which frees them only after the owner of the topic said SUBFREE;
 * local ones (an embedded client's callback) belong to the topic's owner. */
typedef struct qk_sub {
    struct qk_sub *next;          /* in its topic */
    struct qk_sub *conn_next;     /* in its connection's list */
    const qk_type_entry *type;
    uint64_t hash;                /* actor key */
    struct qk_conn *conn;         /* network subscriber, or NULL */
    uint64_t id;                  /* subscription id on that connection */
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

/* Subscribe / unsubscribe on behalf of a connection (conn worker only). */
quark_err qk_net_subscribe(qk_worker *w, struct qk_conn *conn, uint64_t sub_id, const char *type,
                           size_t type_len, const char *id, size_t id_len, qk_sub **out);
void qk_net_unsubscribe(qk_worker *w, qk_sub *sub);
void qk_events_deliver(qk_worker *w, qk_msg *m);  /* SUB, UNSUB, EVENT, SUBFREE */
void qk_events_stop(qk_worker *w);                /* end every local subscription */
/* transport/server.c: an event for a network subscriber, on its conn's worker */
void qk_net_event(struct qk_conn *conn, uint64_t sub_id, const uint8_t *ev, size_t len);
void qk_net_sub_freed(struct qk_conn *conn, qk_sub *sub);

/* ---- activation.c ---- */
void qk_deliver(qk_worker *w, qk_msg *m);
void qk_pump(qk_worker *w, quark_actor *a);
void qk_deactivate_all(qk_worker *w);
void qk_collect_idle(qk_worker *w, uint64_t now_ms);
void qk_deadline_fire(qk_worker *w, qk_deadline *d);
void qk_timer_fire(qk_worker *w, quark_timer *t);
/* The view changed: deactivate what this silo no longer owns and send the
 * calls queued for it to their new owner. */
void qk_rebalance(qk_worker *w);

/* ---- call.c ---- */
qk_msg *qk_msg_new(size_t extra);
void qk_msg_free(qk_msg *m);
/* Answer a CALL exactly once (see the rule above). Does not free it. */
void qk_answer(qk_worker *w, qk_msg *m, quark_err err, const char *errmsg,
               const ProtobufCMessage *reply);
/* Complete an outcall on its caller's worker (REPLY message or deadline). */
void qk_outcall_complete(qk_worker *w, qk_outcall *oc, quark_err err,
                         const char *errmsg, const uint8_t *reply, size_t len);
void qk_waiter_unref(qk_waiter *wt);
qk_waiter *qk_waiter_new(void);                  /* two references: caller, answerer */
/* The answerer's side: record the answer (copying the reply), wake, unref. */
void qk_waiter_complete(qk_waiter *wt, quark_err err, const char *errmsg, const uint8_t *reply,
                        size_t len);
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
