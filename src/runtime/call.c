/*
 * call.c - making calls in this process and delivering their answers: the
 * embedded client backend, calls from the network (qk_invoke), answering.
 *
 * A call is one allocation (qk_msg + chain + id + packed request) sent to the
 * worker that owns (type, id). Its answer goes back through the call's op
 * (op.c), which the caller prepared:
 *   - a blocking application thread waits on a futex in a refcounted waiter
 *     (the op has no home: done wakes the caller where the answer is made);
 *   - an async caller outside any actor gets its callback run right where the
 *     answer is produced (the callee's worker), the reply lent (qk_cbcall);
 *   - an actor (a call made during a turn) gets its answer on its own worker
 *     (the outcall's op has that home), and its callback runs as a turn there;
 *   - a call from the network or forwarded by another silo has the op of the
 *     connection or link that brought it (qk_invoke).
 * Deadlines: the callee's worker times out what it holds (queued or deferred
 * calls); a blocking waiter also gives up on its own; an actor caller's worker
 * times out its outcalls. Every CALL is answered exactly once (qk_answer).
 */
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime.h"

/* How long a blocking caller polls before it sleeps on the futex: long
 * enough for an in-process answer (a few us), pointless for a network one,
 * where it would only take a core from the threads doing the work. Bounded
 * by time, not iterations: `pause` costs 10 to 140 cycles depending on the CPU. */
#define QK_WAIT_SPIN_NS_LOCAL 100000
#define QK_WAIT_SPIN_NS_REMOTE 0

/* Messages up to QK_MSG_SMALL bytes (almost all calls and replies) are
 * recycled through the current worker's free list: allocated on one worker
 * and freed on another, they would overflow glibc's per-thread caches and
 * take its slow path (and its arena lock) on every call. The header is 240
 * bytes: a call fits when its chain, id and request take up to 144 bytes. */
#define QK_MSG_SMALL 384
#define QK_MSG_FREE_MAX 4096

/* Zero a new message's header; `r` is its sender's to fill. */
static inline void msg_clear(qk_msg *m)
{
    memset(m, 0, offsetof(qk_msg, r));
    m->chain = NULL;
    m->id = NULL;
    m->args = NULL;
}

qk_msg *qk_msg_new(size_t extra)
{
    size_t size = sizeof(qk_msg) + extra;
    qk_worker *w = qk_tls_worker;
    qk_msg *m;
    if (size <= QK_MSG_SMALL) {
        if (w && w->msg_free) {
            m = w->msg_free;
            w->msg_free = m->next;
            w->msg_free_n--;
        } else {
            m = malloc(QK_MSG_SMALL);
        }
        if (QK_UNLIKELY(!m))
            return NULL;
        msg_clear(m);
        m->pooled = 1;
        return m;
    }
    m = malloc(size);
    if (QK_LIKELY(m != NULL))
        msg_clear(m);
    return m;
}

void qk_msg_free(qk_msg *m)
{
    qk_worker *w = qk_tls_worker;
    if (m->pooled && w && w->msg_free_n < QK_MSG_FREE_MAX) {
        m->next = w->msg_free;
        w->msg_free = m;
        w->msg_free_n++;
        return;
    }
    free(m);
}

static void futex_wake(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val, uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
                          .tv_nsec = (long)(ns % 1000000000ull)};
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, &ts, NULL, 0);
}

void qk_waiter_unref(qk_waiter *wt)
{
    if (atomic_fetch_sub_explicit(&wt->refs, 1, memory_order_acq_rel) == 1) {
        free(wt->heap);
        free(wt);
    }
}

/* A waiter's state (the futex word): the caller says when it sleeps, so
 * the answerer makes the wake-up system call only then, not for a caller
 * that is still polling (most in-process calls). */
enum { WT_PENDING = 0, WT_ANSWERED = 1, WT_SLEEPING = 2 };

/* The waiter's op is done (on whichever thread answered): wake the caller. */
static void waiter_done(qk_op *op)
{
    qk_waiter *wt = QK_CONTAINER_OF(op, qk_waiter, op);
    qk_outcome_copy(&wt->res, op->out, wt->space, sizeof wt->space, &wt->heap);
    if (atomic_exchange_explicit(&wt->state, WT_ANSWERED, memory_order_acq_rel) == WT_SLEEPING)
        futex_wake(&wt->state);
    qk_waiter_unref(wt);
}

qk_waiter *qk_waiter_new(void)
{
    qk_waiter *wt = malloc(sizeof *wt);
    if (!wt)
        return NULL;
    qk_op_init(&wt->op, waiter_done, NULL, QK_OP_LEND, NULL);
    wt->heap = NULL;
    atomic_init(&wt->state, WT_PENDING);
    atomic_init(&wt->refs, 2);
    return wt;
}

void qk_answer(qk_worker *w, qk_msg *m, const qk_outcome *o)
{
    qk_op *op = m->op;
    if (QK_UNLIKELY(!op))
        return; /* answered already */
    m->op = NULL;
    qk_outcome x;
    if (QK_LIKELY(o->err == QUARK_OK)) {
        if (QK_UNLIKELY(m->dl.at_ms && qk_worker_now_ms(w) > m->dl.at_ms)) {
            x = qk_outcome_error(QUARK_ETIMEDOUT, "deadline exceeded: the reply came after the "
                                 "call's deadline and was dropped");
        } else if (QK_LIKELY(!o->reply || o->md)) {
            qk_op_finish(op, o); /* the usual answer: as given */
            return;
        } else {
            x = *o;
            x.md = qk_msg_method(m);
        }
    } else {
        x = *o;
    }
    x.started = (m->flags & QK_MF_DEFERRED) != 0;
    qk_op_finish(op, &x);
}

/* The answer of an async caller outside any actor: run its callback here,
 * outside the callee's turn (with no current activation, nothing it does
 * touches the turn state). */
static void cbcall_done(qk_op *op)
{
    qk_cbcall *cb = QK_CONTAINER_OF(op, qk_cbcall, op);
    qk_worker *w = qk_tls_worker;
    quark_actor *act = w->cur.act;
    qk_msg *cur = w->cur.msg;
    w->cur.act = NULL;
    w->cur.msg = NULL;
    const qk_outcome *o = op->out;
    if (o->err != QUARK_OK) {
        cb->tramp(cb->fn, o->err, qk_outcome_text(o), NULL, cb->arg);
    } else {
        qk_msg *m = QK_CONTAINER_OF(cb, qk_msg, r.cb);
        const ProtobufCMessage *reply =
            qk_outcome_reply(o, qk_msg_method(m), cb->desc, &w->arena.pb);
        if (reply)
            cb->tramp(cb->fn, QUARK_OK, NULL, reply, cb->arg);
        else
            cb->tramp(cb->fn, QUARK_EPROTO, "the reply could not be decoded", NULL, cb->arg);
    }
    w->cur.act = act;
    w->cur.msg = cur;
    qk_op_release(op);
}

/* The answer of an actor's call, on the caller's worker. */
static void outcall_done(qk_op *op)
{
    qk_outcall *oc = QK_CONTAINER_OF(op, qk_outcall, op);
    qk_worker *w = qk_tls_worker;
    quark_actor *a = oc->caller;
    qk_heap_remove(w, &oc->dl);
    if (a)
        a->outcalls--;
    if (a && !oc->done) {
        oc->done = true;
        const qk_outcome *o = op->out;
        quark_err err = o->err;
        const char *errmsg = err == QUARK_OK ? NULL : qk_outcome_text(o);
        const ProtobufCMessage *msg = NULL;
        if (err == QUARK_OK) {
            msg = qk_outcome_reply(o, oc->reply_md, oc->reply_desc, &w->arena.pb);
            if (!msg) {
                err = QUARK_EPROTO;
                errmsg = "the reply could not be decoded";
            }
        }
        qk_run_continuation(w, oc, err, errmsg, msg);
    }
    qk_op_release(op);
    free(oc);
    if (a)
        qk_after_continuation(w, a); /* its next message; it may now be collectible */
}

/* ---- building a call ---- */

typedef struct qk_prep {
    quark_silo *silo;
    const qk_type_entry *entry;
    unsigned method;        /* index in entry's interface */
    uint64_t deadline_ms;
} qk_prep;

/* The embedded backend's part of preparing a call (client.c checked the
 * arguments): the type and method on this silo, the absolute deadline. */
static quark_err prepare(quark_silo *s, quark_ref *ref, const quark_interface *iface,
                         unsigned method, uint32_t dl, qk_prep *p)
{
    if (QK_UNLIKELY(atomic_load_explicit(&s->state, memory_order_acquire) != 1))
        return qk_error(QUARK_ECLOSED, "the silo is not running");
    const quark_method_desc *md = &iface->methods[method];
    const qk_type_entry *e = atomic_load_explicit(&ref->entry, memory_order_acquire);
    if (QK_UNLIKELY(!e)) {
        e = qk_registry_lookup(ref->type_name, ref->type_len);
        if (!e)
            return qk_error(QUARK_ENOTYPE, "no actor registered for type name '%s'",
                            ref->type_name);
        atomic_store_explicit(&ref->entry, e, memory_order_release);
    }
    p->method = method;
    if (QK_UNLIKELY(e->iface != iface && strcmp(e->iface->name, iface->name) != 0)) {
        int idx = qk_entry_method_index(e, md->name, strlen(md->name));
        if (idx < 0)
            return qk_error(QUARK_ENOMETHOD, "actor type '%s' has no method '%s'", e->name,
                            md->name);
        p->method = (unsigned)idx;
    }
    p->silo = s;
    p->entry = e;
    qk_worker *self = qk_tls_worker;
    p->deadline_ms = (self ? qk_worker_now_ms(self) : qk_now_ms_coarse()) + dl;
    return QUARK_OK;
}

static qk_msg *build(quark_ref *ref, const qk_prep *p, const ProtobufCMessage *req,
                     const qk_chain_link *chain, uint16_t chain_len, const qk_chain_link *top)
{
    const quark_method_desc *md = &p->entry->iface->methods[p->method];
    size_t args_len = qk_msg_size(md, QK_IN, req);
    size_t n_links = chain_len + (top ? 1u : 0u);
    size_t chain_bytes = n_links * sizeof(qk_chain_link);
    qk_msg *m = qk_msg_new(chain_bytes + ref->id_len + 1u + args_len);
    if (QK_UNLIKELY(!m))
        return NULL;
    m->node.kind = QK_MSG_CALL;
    m->type = p->entry;
    m->method = (uint16_t)p->method;
    if (md->flags & QUARK_METHOD_READ_ONLY)
        m->flags |= QK_MF_READ_ONLY;
    m->hash = ref->hash;
    m->dl.kind = QK_DL_MSG;
    m->dl.at_ms = p->deadline_ms;
    m->chain = (qk_chain_link *)(void *)m->data;
    if (chain_len)
        memcpy(m->chain, chain, chain_len * sizeof *chain);
    if (top)
        m->chain[chain_len] = *top;
    m->chain_len = (uint16_t)n_links;
    m->id = (char *)m->data + chain_bytes;
    memcpy(m->id, ref->data, ref->id_len + 1u);
    m->id_len = ref->id_len;
    m->args = (uint8_t *)m->id + ref->id_len + 1;
    m->args_len = (uint32_t)qk_msg_pack(md, QK_IN, req, m->args);
    return m;
}

static inline qk_worker *target(const qk_prep *p, const quark_ref *ref)
{
    return &p->silo->workers[qk_worker_of(p->silo, ref->hash)];
}

static quark_err embedded_call(void *impl, quark_ref *ref, const quark_interface *iface,
                               unsigned method, const ProtobufCMessage *req, uint32_t dl,
                               ProtobufCMessage **reply)
{
    qk_prep p;
    quark_err rc = prepare(impl, ref, iface, method, dl, &p);
    if (rc != QUARK_OK)
        return rc;
    qk_waiter *wt = qk_waiter_new();
    if (!wt)
        return qk_error(QUARK_ENOMEM, "out of memory making a call");
    qk_msg *m = build(ref, &p, req, NULL, 0, NULL);
    if (!m) {
        free(wt);
        return qk_error(QUARK_ENOMEM, "out of memory making a call");
    }
    m->op = &wt->op;
    qk_send(target(&p, ref), m);

    return qk_waiter_finish(wt, p.deadline_ms, false, iface->methods[method].output, reply,
                            p.entry->name, ref->data, p.entry->iface->methods[p.method].name);
}

quark_err qk_waiter_finish(qk_waiter *wt, uint64_t deadline_ms, bool remote,
                           const ProtobufCMessageDescriptor *out_desc, ProtobufCMessage **reply,
                           const char *type, const char *id, const char *method)
{
    /* Spin briefly when the answer is often microseconds away, then sleep. */
    uint64_t spin_ns = remote ? QK_WAIT_SPIN_NS_REMOTE : QK_WAIT_SPIN_NS_LOCAL;
    if (spin_ns) {
        uint64_t until = qk_now_ns() + spin_ns;
        do {
            for (int i = 0; i < 32; i++) {
                if (atomic_load_explicit(&wt->state, memory_order_acquire) == WT_ANSWERED)
                    goto answered;
                qk_cpu_relax();
            }
        } while (qk_now_ns() < until);
    }
    uint64_t until = (deadline_ms + 5) * 1000000ull;
    for (;;) {
        uint32_t st = atomic_load_explicit(&wt->state, memory_order_acquire);
        if (st == WT_ANSWERED)
            goto answered;
        uint64_t now = qk_now_ns();
        if (now >= until)
            break;
        /* Say we sleep; if the answer came meanwhile, the exchange fails. */
        if (st == WT_PENDING &&
            !atomic_compare_exchange_strong_explicit(&wt->state, &st, WT_SLEEPING,
                                                     memory_order_acq_rel,
                                                     memory_order_acquire))
            continue;
        futex_wait(&wt->state, WT_SLEEPING, until - now);
    }
    qk_waiter_unref(wt); /* the answer, when it comes, frees the rest */
    return qk_error(QUARK_ETIMEDOUT, "deadline exceeded: %s '%s' did not reply to %s in time",
                    type, id, method);
answered:;
    const qk_outcome *o = &wt->res;
    quark_err rc = o->err;
    if (rc != QUARK_OK) {
        qk_error_str(rc, qk_outcome_text(o));
    } else if (reply) {
        *reply = protobuf_c_message_unpack(out_desc, NULL, o->len, o->data);
        if (!*reply)
            rc = qk_error(QUARK_EPROTO, "the reply of %s could not be decoded as %s", method,
                          out_desc->name);
        else
            qk_error_clear();
    } else {
        qk_error_clear();
    }
    qk_waiter_unref(wt);
    return rc;
}

static quark_err embedded_call_async(void *impl, quark_ref *ref, const quark_interface *iface,
                                     unsigned method, const ProtobufCMessage *req, uint32_t dl,
                                     quark__trampoline_fn tramp, void (*fn)(void), void *arg)
{
    qk_prep p;
    quark_err rc = prepare(impl, ref, iface, method, dl, &p);
    if (rc != QUARK_OK)
        return rc;
    qk_worker *w = qk_tls_worker;
    qk_msg *m;
    if (w && w->cur.act && w->silo == p.silo) {
        /* A call made by an actor: its answer comes back as a turn. */
        quark_actor *a = w->cur.act;
        if (w->cur.chain_len + 1u > QK_CHAIN_MAX)
            return qk_error(QUARK_ECYCLE, "call chain deeper than %d calls (a runaway "
                            "recursion between actors?)", QK_CHAIN_MAX);
        qk_outcall *oc = malloc(sizeof *oc + w->cur.chain_len * sizeof(qk_chain_link));
        if (!oc)
            return qk_error(QUARK_ENOMEM, "out of memory making a call");
        qk_chain_link top = {.act = a->hash, .turn = w->cur.turn};
        m = build(ref, &p, req, w->cur.chain, w->cur.chain_len, &top);
        if (!m) {
            free(oc);
            return qk_error(QUARK_ENOMEM, "out of memory making a call");
        }
        qk_op_init(&oc->op, outcall_done, w, 0, &oc->room);
        memset(&oc->dl, 0, sizeof oc->dl);
        oc->dl.kind = QK_DL_OUTCALL;
        oc->dl.at_ms = p.deadline_ms;
        oc->caller = a;
        oc->tramp = tramp;
        oc->fn = fn;
        oc->arg = arg;
        oc->reply_desc = p.entry->iface->methods[p.method].output;
        oc->reply_md = &p.entry->iface->methods[p.method];
        oc->turn = w->cur.turn;
        oc->chain_len = w->cur.chain_len;
        oc->done = false;
        if (w->cur.chain_len)
            memcpy(oc->chain, w->cur.chain, w->cur.chain_len * sizeof(qk_chain_link));
        a->outcalls++;
        qk_heap_insert(w, &oc->dl);
        m->op = &oc->op;
    } else {
        m = build(ref, &p, req, NULL, 0, NULL);
        if (!m)
            return qk_error(QUARK_ENOMEM, "out of memory making a call");
        qk_cbcall *cb = &m->r.cb;
        qk_op_init(&cb->op, cbcall_done, NULL, QK_OP_LEND, NULL);
        cb->tramp = tramp;
        cb->fn = fn;
        cb->arg = arg;
        cb->desc = iface->methods[method].output;
        m->op = &cb->op;
    }
    qk_send(target(&p, ref), m);
    return QUARK_OK;
}

quark_err qk_invoke(qk_worker *w, const qk_invoke_req *rq, qk_op *op)
{
    quark_silo *s = w->silo;
    if (atomic_load_explicit(&s->state, memory_order_acquire) != 1)
        return qk_error(QUARK_EUNAVAILABLE, "the silo is stopping; the call did not run");
    const qk_type_entry *e = qk_registry_lookup(rq->type, rq->type_len);
    if (!e)
        return qk_error(QUARK_ENOTYPE, "no actor registered for type name '%.*s'",
                        (int)(rq->type_len > 255 ? 255 : rq->type_len), rq->type);
    int mi = qk_entry_method_index(e, rq->method, rq->method_len);
    if (mi == e->reminder_method && rq->hops == 0)
        mi = -1; /* ticks come from silos (forwarded) or this one, never from a client */
    if (mi < 0)
        return qk_error(QUARK_ENOMETHOD, "actor type '%s' has no method '%.*s'", e->name,
                        (int)(rq->method_len > 128 ? 128 : rq->method_len), rq->method);
    size_t id_len = rq->id_len;
    if (id_len == 0 || id_len > QUARK_ID_MAX || memchr(rq->actor_id, '\0', id_len))
        return qk_error(QUARK_EINVAL, "actor id must be 1..%d bytes without NUL (got %zu)",
                        QUARK_ID_MAX, id_len);
    if (rq->chain_len > QK_CHAIN_MAX - 1)
        return qk_error(QUARK_ECYCLE, "call chain deeper than %d calls", QK_CHAIN_MAX);
    size_t chain_bytes = rq->chain_len * sizeof(qk_chain_link);
    qk_msg *m = qk_msg_new(chain_bytes + id_len + 1 + rq->args_len);
    if (!m)
        return qk_error(QUARK_ENOMEM, "out of memory accepting a call");
    uint32_t dl = rq->deadline_ms && rq->deadline_ms < s->opts.default_deadline_ms
                      ? rq->deadline_ms : s->opts.default_deadline_ms;
    m->node.kind = QK_MSG_CALL;
    m->type = e;
    m->method = (uint16_t)mi;
    if (e->iface->methods[mi].flags & QUARK_METHOD_READ_ONLY)
        m->flags |= QK_MF_READ_ONLY;
    m->hash = qk_key_hash(e->name_hash, rq->actor_id, id_len);
    m->dl.kind = QK_DL_MSG;
    m->dl.at_ms = qk_worker_now_ms(w) + dl;
    m->chain = (qk_chain_link *)(void *)m->data;
    if (rq->chain_len)
        memcpy(m->chain, rq->chain, chain_bytes);
    m->chain_len = (uint16_t)rq->chain_len;
    m->id = (char *)m->data + chain_bytes;
    memcpy(m->id, rq->actor_id, id_len);
    m->id[id_len] = '\0';
    m->id_len = (uint16_t)id_len;
    m->args = (uint8_t *)m->id + id_len + 1;
    if (rq->args_len)
        memcpy(m->args, rq->args, rq->args_len);
    m->args_len = (uint32_t)rq->args_len;
    m->hops = (uint8_t)(rq->hops > 255 ? 255 : rq->hops);
    m->op = op;
    qk_worker *to = &s->workers[qk_worker_of(s, m->hash)];
    if (to == w) /* it runs after the rest of the batch is read: warm its slot */
        __builtin_prefetch(&w->slots[m->hash & w->mask]);
    else /* one writer: no locked add */
        atomic_store_explicit(&w->handoffs,
                              atomic_load_explicit(&w->handoffs, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    qk_send(to, m);
    return QUARK_OK;
}

/* ---- the embedded client backend (ports.h) ---- */

static quark_err embedded_connect(void *impl)
{
    quark_silo *s = impl;
    if (atomic_load(&s->state) != 1)
        return qk_error(QUARK_EUNAVAILABLE, "the embedded silo is not running: call "
                        "quark_silo_start() first");
    return QUARK_OK;
}

static void embedded_disconnect(void *impl)
{
    (void)impl;
}

static int embedded_connected(void *impl)
{
    quark_silo *s = impl;
    return atomic_load(&s->state) == 1;
}

static void embedded_free(void *impl)
{
    (void)impl; /* the silo is the application's */
}

static quark_err embedded_subscribe(void *impl, const char *type, const char *id,
                                    quark_event_fn fn, void *arg, void **sub)
{
    return qk_embedded_subscribe(impl, type, id, fn, arg, sub);
}


const qk_client_ops qk_client_embedded = {
    .name = "embedded",
    .connect = embedded_connect,
    .disconnect = embedded_disconnect,
    .connected = embedded_connected,
    .free = embedded_free,
    .call = embedded_call,
    .call_async = embedded_call_async,
    .subscribe = embedded_subscribe,
    .unsubscribe = qk_embedded_unsubscribe,
};
