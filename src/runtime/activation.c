/*
 * activation.c - virtual actors on one worker: directory, mailbox, turns.
 *
 * The first CALL for (type, id) creates the activation (one allocation:
 * header, id and state) and runs on_activate. A call runs at once when the
 * activation is free, else waits in its FIFO mailbox. "Free" means: no turn
 * executing, no non-read-only turn waiting for a deferred reply, and, for a
 * non-read-only call, no read-only turn waiting either.
 *
 * A call that cannot run now and whose call chain already holds a waiting
 * turn of this very activation can never run (the turn it waits on waits for
 * it): it fails at once with QUARK_ECYCLE.
 *
 * Activations sit on an LRU list, touched after each turn; the idle sweep
 * collects from the cold end. All of this is owned by the worker thread.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "runtime.h"
#include "runtime/reminder_service.h"

static inline void *act_state(quark_actor *a)
{
    return (char *)a + qk_actor_state_off(a->id_len);
}

/* Free what activate allocated (it begins with the qk_pstate, if any). */
static inline void act_free(quark_actor *a)
{
    free(a->ps ? (void *)a->ps : (void *)a);
}

/* ---- directory: open addressing, linear probing, backward-shift delete ----
 * A slot keeps the key hash beside the pointer, so a probe that is not a hit
 * reads no actor (with thousands of actors those are cache misses). */

static quark_actor *dir_find(qk_worker *w, const qk_type_entry *t, uint64_t h,
                             const char *id, size_t len)
{
    for (size_t i = h & w->mask;; i = (i + 1) & w->mask) {
        const qk_dslot *sl = &w->slots[i];
        quark_actor *a = sl->a;
        if (!a)
            return NULL;
        if (sl->hash == h && a->type == t && a->id_len == len && memcmp(a->id, id, len) == 0)
            return a;
    }
}

static void dir_place(qk_dslot *slots, size_t mask, quark_actor *a)
{
    size_t i = a->hash & mask;
    while (slots[i].a)
        i = (i + 1) & mask;
    slots[i].hash = a->hash;
    slots[i].a = a;
}

static int dir_grow(qk_worker *w)
{
    size_t ncap = (w->mask + 1) * 2;
    qk_dslot *ns = calloc(ncap, sizeof *ns);
    if (!ns)
        return -1;
    for (size_t i = 0; i <= w->mask; i++)
        if (w->slots[i].a)
            dir_place(ns, ncap - 1, w->slots[i].a);
    free(w->slots);
    w->slots = ns;
    w->mask = ncap - 1;
    return 0;
}

static int dir_insert(qk_worker *w, quark_actor *a)
{
    if ((w->count + 1) * 4 > (w->mask + 1) * 3 && dir_grow(w) != 0)
        return -1;
    dir_place(w->slots, w->mask, a);
    w->count++;
    atomic_store_explicit(&w->live, w->count, memory_order_relaxed);
    return 0;
}

static void dir_remove(qk_worker *w, quark_actor *a)
{
    size_t i = a->hash & w->mask;
    while (w->slots[i].a != a)
        i = (i + 1) & w->mask;
    /* Shift back later entries whose home slot is at or before the hole. */
    for (size_t j = (i + 1) & w->mask;; j = (j + 1) & w->mask) {
        qk_dslot *b = &w->slots[j];
        if (!b->a)
            break;
        size_t home = b->hash & w->mask;
        if (((j - home) & w->mask) >= ((j - i) & w->mask)) {
            w->slots[i] = *b;
            i = j;
        }
    }
    w->slots[i].a = NULL;
    w->slots[i].hash = 0;
    w->count--;
    atomic_store_explicit(&w->live, w->count, memory_order_relaxed);
    if (w->count == 0 && w->mask > 1023) { /* give a big empty table back */
        qk_dslot *ns = calloc(64, sizeof *ns);
        if (ns) {
            free(w->slots);
            w->slots = ns;
            w->mask = 63;
        }
    }
}

/* ---- LRU ---- */

static void lru_unlink(qk_worker *w, quark_actor *a)
{
    if (a->lru_prev)
        a->lru_prev->lru_next = a->lru_next;
    else
        w->lru_head = a->lru_next;
    if (a->lru_next)
        a->lru_next->lru_prev = a->lru_prev;
    else
        w->lru_tail = a->lru_prev;
    a->lru_prev = a->lru_next = NULL;
}

static void lru_append(qk_worker *w, quark_actor *a)
{
    a->lru_prev = w->lru_tail;
    a->lru_next = NULL;
    if (w->lru_tail)
        w->lru_tail->lru_next = a;
    else
        w->lru_head = a;
    w->lru_tail = a;
}

static void lru_touch(qk_worker *w, quark_actor *a, uint64_t now)
{
    a->last_used_ms = now;
    if (w->lru_tail != a) {
        lru_unlink(w, a);
        lru_append(w, a);
    }
}

/* ---- turn context ---- */

static void turn_begin(qk_worker *w, quark_actor *a, qk_msg *m, uint32_t turn,
                       const qk_chain_link *chain, uint16_t chain_len)
{
    w->cur.act = a;
    w->cur.msg = m;
    w->cur.turn = turn;
    w->cur.chain = chain;
    w->cur.chain_len = chain_len;
    w->cur.deferred = false;
    w->cur.has_error = false;
    a->flags |= QK_AF_RUNNING;
}

static void turn_end(qk_worker *w, quark_actor *a)
{
    a->flags &= (uint8_t)~QK_AF_RUNNING;
    w->cur.act = NULL;
    w->cur.msg = NULL;
    qk_arena_reset(&w->arena);
}

/* ---- activation lifecycle ---- */

static void timer_close_cb(uv_handle_t *h)
{
    free(QK_CONTAINER_OF(h, quark_timer, uv));
}

static void timer_destroy(quark_timer *t)
{
    uv_timer_stop(&t->uv);
    uv_close((uv_handle_t *)&t->uv, timer_close_cb);
}

static void timers_destroy(quark_actor *a)
{
    while (a->timers) {
        quark_timer *tm = a->timers;
        a->timers = tm->next;
        timer_destroy(tm);
    }
}

/* Before a is freed: off the ready list, and its outcalls orphaned so late
 * answers are dropped (at stop, or an on_activate that called out and
 * failed). */
static void unlink_ready_and_outcalls(qk_worker *w, quark_actor *a)
{
    if (a->flags & QK_AF_READY) {
        quark_actor **pp = &w->ready_head;
        quark_actor *prev = NULL;
        while (*pp != a) {
            prev = *pp;
            pp = &(*pp)->ready_next;
        }
        *pp = a->ready_next;
        if (w->ready_tail == a)
            w->ready_tail = prev;
        a->flags &= (uint8_t)~QK_AF_READY;
    }
    if (a->outcalls) {
        for (size_t i = 0; i < w->heap.len; i++) {
            if (w->heap.a[i]->kind != QK_DL_OUTCALL)
                continue;
            qk_outcall *oc = QK_CONTAINER_OF(w->heap.a[i], qk_outcall, dl);
            if (oc->caller == a) {
                oc->caller = NULL;
                oc->done = true;
            }
        }
    }
}

/* Take a out of the worker's tables and free it: an activation that never
 * became live (its state or its on_activate failed). */
/* The route's released() hook, for an activation it marked. */
static inline void route_release(qk_worker *w, const quark_actor *a)
{
    const quark_silo *s = w->silo;
    if (a->route_tag && s->route && s->route->released)
        s->route->released(s->route_self, w, a);
}

static void discard(qk_worker *w, quark_actor *a)
{
    dir_remove(w, a);
    lru_unlink(w, a);
    unlink_ready_and_outcalls(w, a);
    timers_destroy(a);
    qk_state_destroy(w, a, QUARK_ECLOSED, "the activation failed");
    route_release(w, a);
    act_free(a);
}

/* Run on_activate; on failure *msg (of cap bytes) says why. */
static quark_err run_on_activate(qk_worker *w, quark_actor *a, char *msg, size_t cap)
{
    const quark_actor_type *t = a->type->type;
    if (!t->on_activate)
        return QUARK_OK;
    turn_begin(w, a, NULL, ++a->turn_ctr, NULL, 0);
    quark_err rc = t->on_activate(a);
    if (rc != QUARK_OK)
        snprintf(msg, cap, "activation of %s '%s' failed: %s", a->type->name, a->id,
                 w->cur.has_error ? w->cur.error : quark_strerror(rc));
    turn_end(w, a);
    return rc;
}

/* One allocation: [qk_pstate, if persistent] quark_actor, id, in-memory
 * state [, the persistent message's top level] (state.h). */
static quark_actor *activate(qk_worker *w, qk_msg *m, uint64_t tag)
{
    const quark_actor_type *t = m->type->type;
    size_t off = qk_actor_state_off(m->id_len);
    size_t size = off + QK_ALIGN_UP(t->state_size, 16);
    size_t pre = 0;
    if (t->persistent) {
        size_t extra = qk_state_size(t);
        pre = sizeof(qk_pstate);
        size += extra;
    }
    char *base = malloc(size);
    if (!base) {
        qk_answer_error(w, m, QUARK_ENOMEM, "out of memory activating actor");
        return NULL;
    }
    memset(base, 0, size);
    quark_actor *a = (quark_actor *)(base + pre);
    if (t->persistent)
        a->ps = (qk_pstate *)base;
    a->type = m->type;
    a->worker = w;
    a->hash = m->hash;
    a->route_tag = tag;
    a->id_len = m->id_len;
    memcpy(a->id, m->id, m->id_len + 1u);
    if (dir_insert(w, a) != 0) {
        free(base);
        qk_answer_error(w, m, QUARK_ENOMEM, "out of memory growing the activation directory");
        return NULL;
    }
    lru_append(w, a);
    a->last_used_ms = qk_now_ms_coarse();
    char msg[600];
    quark_err rc = QUARK_OK;
    if (a->ps) {
        rc = qk_state_load(w, a, msg, sizeof msg);
        if (rc == QUARK_PENDING)
            return a; /* the call waits in the mailbox (qk_activation_loaded) */
    }
    if (rc == QUARK_OK && (rc = run_on_activate(w, a, msg, sizeof msg)) != QUARK_OK)
        rc = QUARK_EACTIVATE;
    if (rc != QUARK_OK) {
        /* Nothing stays behind: not in the directory, no timers. The
         * storage's failures are the framework's, on_activate's the actor's. */
        discard(w, a);
        if (rc == QUARK_EACTIVATE)
            qk_answer_actor_error(w, m, rc, msg);
        else
            qk_answer_error(w, m, rc, msg);
        return NULL;
    }
    return a;
}

static void mailbox_append(quark_actor *a, qk_msg *m)
{
    a->mb_len++;
    a->worker->queued++;
    m->next = NULL;
    m->flags |= QK_MF_IN_MAILBOX;
    if (a->mb_tail)
        a->mb_tail->next = m;
    else
        a->mb_head = m;
    a->mb_tail = m;
}

static qk_msg *mailbox_pop(quark_actor *a)
{
    qk_msg *m = a->mb_head;
    if (m) {
        a->mb_len--;
        a->worker->queued--;
        a->mb_head = m->next;
        if (!a->mb_head)
            a->mb_tail = NULL;
        m->flags &= (uint8_t)~QK_MF_IN_MAILBOX;
    }
    return m;
}

/* Take a's whole mailbox (its calls still flagged QK_MF_IN_MAILBOX). */
static qk_msg *mailbox_take(quark_actor *a)
{
    qk_msg *all = a->mb_head;
    a->worker->queued -= a->mb_len;
    a->mb_len = 0;
    a->mb_head = a->mb_tail = NULL;
    return all;
}

/* Answer every call of a mailbox taken out of its activation with err (by
 * whom: QK_BY_*), and free them. */
static void fail_queued(qk_worker *w, qk_msg *queued, quark_err err, uint8_t by,
                        const char *why)
{
    while (queued) {
        qk_msg *m = queued;
        queued = m->next;
        m->flags &= (uint8_t)~QK_MF_IN_MAILBOX;
        qk_heap_remove(w, &m->dl);
        if (!(m->flags & QK_MF_ANSWERED)) {
            qk_outcome o = qk_outcome_error(err, why);
            o.by = by;
            qk_answer(w, m, &o);
        }
        qk_msg_free(m);
    }
}

static const char lease_lapsed[] =
    "this silo's membership lease lapsed (it may have been declared dead): the call did not "
    "run (retry)";

void qk_activation_loaded(qk_worker *w, quark_actor *a, quark_err err, const char *why)
{
    char msg[600];
    if (err == QUARK_OK && !qk_may_run(w, a)) {
        err = QUARK_EUNAVAILABLE;
        why = lease_lapsed;
    } else if (err == QUARK_OK && (err = run_on_activate(w, a, msg, sizeof msg)) != QUARK_OK) {
        err = QUARK_EACTIVATE;
        why = msg;
    }
    if (err == QUARK_OK) {
        qk_pump(w, a);
        return;
    }
    /* The calls that waited fail; nothing stays behind. */
    qk_msg *queued = mailbox_take(a);
    discard(w, a);
    fail_queued(w, queued, err, err == QUARK_EACTIVATE ? QK_BY_ACTOR : QK_BY_RUNTIME, why);
}

/* Free the activation: hooks, timers, deferred calls, queued messages. With
 * `redeliver`, queued calls go back through qk_deliver (a new activation). */
static void destroy(qk_worker *w, quark_actor *a, bool redeliver)
{
    const quark_actor_type *t = a->type->type;
    bool live = !a->ps || !(a->ps->flags & QK_PS_LOADING); /* on_activate ran */
    /* A marked activation whose lease lapsed may be another's now: its
     * on_deactivate is not run (docs/cluster.md). */
    if (t->on_deactivate && live && (!a->route_tag || qk_lease_ok(w))) {
        turn_begin(w, a, NULL, ++a->turn_ctr, NULL, 0);
        t->on_deactivate(a);
        turn_end(w, a);
    }
    timers_destroy(a);
    while (a->deferred) {
        qk_msg *m = a->deferred;
        a->deferred = m->dnext;
        qk_heap_remove(w, &m->dl);
        if (!(m->flags & QK_MF_ANSWERED))
            qk_answer_error(w, m, QUARK_ECLOSED, "the actor was deactivated before it replied");
        qk_msg_free(m);
    }
    qk_msg *queued = mailbox_take(a);
    dir_remove(w, a);
    lru_unlink(w, a);
    unlink_ready_and_outcalls(w, a);
    qk_state_destroy(w, a, QUARK_EUNKNOWN, "the silo stopped before the actor's state was "
                     "stored: the call may or may not have taken effect");
    route_release(w, a);
    act_free(a);
    while (queued) {
        qk_msg *m = queued;
        queued = m->next;
        m->flags &= (uint8_t)~QK_MF_IN_MAILBOX;
        qk_heap_remove(w, &m->dl);
        if (m->flags & QK_MF_ANSWERED) {
            qk_msg_free(m);
        } else if (redeliver && !w->stopping) {
            m->act = NULL;
            qk_deliver(w, m);
        } else {
            qk_answer_error(w, m, QUARK_ECLOSED, "the silo is stopping");
            qk_msg_free(m);
        }
    }
}

static bool collectible(const quark_actor *a)
{
    return !(a->flags & (QK_AF_RUNNING | QK_AF_WAITING)) && a->ro_waiting == 0 &&
           a->outcalls == 0 && !a->mb_head && !a->deferred && qk_state_quiet(a->ps);
}

/* Nothing of it runs or waits (its mailbox aside): an activation whose
 * state write failed may go (state.c, rule 5). */
static bool stilled(const quark_actor *a)
{
    return !(a->flags & (QK_AF_RUNNING | QK_AF_WAITING)) && a->ro_waiting == 0 &&
           a->outcalls == 0 && !a->deferred && qk_state_quiet(a->ps);
}

/* ---- running turns ---- */

static bool can_run(const quark_actor *a, const qk_msg *m)
{
    if (a->flags & (QK_AF_RUNNING | QK_AF_WAITING))
        return false;
    if (QK_UNLIKELY(a->ps && (a->ps->flags & (QK_PS_LOADING | QK_PS_FAILED))))
        return false;
    if (m->node.kind == QK_MSG_CALL && (m->flags & QK_MF_READ_ONLY))
        return true;
    return a->ro_waiting == 0;
}

/* Answer call m of a's turn: at once, or (persistent state, state.c rule 3)
 * held until what it may depend on is stored. True if held (m is then
 * state.c's, flagged QK_MF_HELD). */
static inline bool answer_turn(qk_worker *w, quark_actor *a, qk_msg *m, const qk_outcome *o)
{
    if (QK_LIKELY(!a->ps)) {
        qk_answer(w, m, o);
        return false;
    }
    return qk_state_answer(w, a, m, o);
}

static void run_call(qk_worker *w, quark_actor *a, qk_msg *m)
{
    const quark_interface *ifc = a->type->iface;
    if (QK_UNLIKELY(!qk_may_run(w, a))) {
        qk_answer_error(w, m, QUARK_EUNAVAILABLE, lease_lapsed);
        qk_msg_free(m);
        return;
    }
    m->act = a;
    lru_touch(w, a, qk_worker_now_ms(w)); /* calls, not timer ticks, count as use */
    turn_begin(w, a, m, ++a->turn_ctr, m->chain, m->chain_len);
    quark_err rc = QK_LIKELY((int)m->method != a->type->reminder_method)
                       ? ifc->dispatch(a, a->type->type->methods, m->method, m->args,
                                       m->args_len)
                       : qk_reminder_dispatch(a, m->args, m->args_len);
    bool deferred = w->cur.deferred;
    if (!deferred && m->op && !(m->flags & QK_MF_HELD)) {
        /* A dispatcher that returned without answering (older generated
         * code, a hand-written one): the caller must still hear back. */
        char msg[300];
        snprintf(msg, sizeof msg, "%s.%s returned %s without answering the call",
                 a->type->name, ifc->methods[m->method].name, quark_errname(rc));
        qk_outcome o = qk_outcome_error(rc < 0 ? rc : QUARK_EINTERNAL,
                                        w->cur.has_error ? w->cur.error : msg);
        answer_turn(w, a, m, &o); /* in order with the replies held before it */
    }
    turn_end(w, a);
    if (!deferred && !(m->flags & QK_MF_HELD))
        qk_msg_free(m);
}

static bool chain_has_waiting_turn(const quark_actor *a, const qk_msg *m)
{
    for (uint16_t i = 0; i < m->chain_len; i++) {
        if (m->chain[i].act != a->hash)
            continue;
        for (const qk_msg *d = a->deferred; d; d = d->dnext)
            if (d->turn == m->chain[i].turn)
                return true;
    }
    return false;
}

static void ready_push(qk_worker *w, quark_actor *a)
{
    if (a->flags & QK_AF_READY)
        return;
    a->flags |= QK_AF_READY;
    a->ready_next = NULL;
    if (w->ready_tail)
        w->ready_tail->ready_next = a;
    else
        w->ready_head = a;
    w->ready_tail = a;
}

#define QK_PUMP_BUDGET 64

void qk_ready(qk_worker *w, quark_actor *a)
{
    ready_push(w, a);
}

void qk_pump(qk_worker *w, quark_actor *a)
{
    int budget = QK_PUMP_BUDGET;
    if (QK_UNLIKELY(a->ps && (a->ps->flags & QK_PS_FAILED))) {
        if (stilled(a)) /* its unstored state goes; the calls queued go again */
            destroy(w, a, true);
        return;
    }
    while (a->mb_head && can_run(a, a->mb_head)) {
        if (budget-- == 0) {
            ready_push(w, a);
            return;
        }
        qk_msg *m = mailbox_pop(a);
        qk_heap_remove(w, &m->dl);
        if (m->flags & QK_MF_ANSWERED) { /* timed out while queued */
            qk_msg_free(m);
            continue;
        }
        run_call(w, a, m);
    }
    if ((a->flags & QK_AF_DEACT_REQ) && collectible(a))
        destroy(w, a, true);
}

/* Admission control: a call that would queue past a limit is answered now
 * (it did not run: the caller may retry after a pause). */
static void refuse_overloaded(qk_worker *w, quark_actor *a, qk_msg *m)
{
    const quark_silo_opts *o = &w->silo->opts;
    char msg[400];
    if (a->mb_len >= o->max_mailbox)
        snprintf(msg, sizeof msg, "actor %s '%s' has %u calls queued (max_mailbox): retry later",
                 a->type->name, a->id, (unsigned)a->mb_len);
    else
        snprintf(msg, sizeof msg, "worker %u of this silo has %u calls queued "
                 "(max_worker_queue): retry later", w->index + 1, (unsigned)w->queued);
    qk_answer_error(w, m, QUARK_EOVERLOAD, msg);
    qk_msg_free(m);
}

/* Run CALL m on its activation a (NULL: activate it first, marked `tag`). */
static void deliver_here(qk_worker *w, quark_actor *a, qk_msg *m, uint64_t tag);

static void deliver_call(qk_worker *w, qk_msg *m)
{
    if (w->stopping) {
        qk_answer_error(w, m, QUARK_ECLOSED, "the silo is stopping");
        qk_msg_free(m);
        return;
    }
    const quark_silo *s = w->silo;
    quark_actor *a = dir_find(w, m->type, m->hash, m->id, m->id_len);
    /* an activation the route let go of is not "here" for the route */
    bool here = a && !(a->route_tag && (a->flags & QK_AF_LET_GO));
    if (s->route && s->route->place(s->route_self, w, m, here) == QK_ROUTE_TAKEN)
        return; /* it runs elsewhere (or the route answered it) */
    deliver_here(w, a, m, 0);
}

void qk_deliver_placed(qk_worker *w, qk_msg *m, uint64_t tag)
{
    if (w->stopping) {
        qk_answer_error(w, m, QUARK_ECLOSED, "the silo is stopping");
        qk_msg_free(m);
        return;
    }
    deliver_here(w, dir_find(w, m->type, m->hash, m->id, m->id_len), m, tag);
}

static void deliver_here(qk_worker *w, quark_actor *a, qk_msg *m, uint64_t tag)
{
    if (!a) {
        a = activate(w, m, tag);
        if (!a) {
            qk_msg_free(m);
            return;
        }
    }
    if (!a->mb_head && can_run(a, m)) {
        run_call(w, a, m);
        qk_pump(w, a);
        return;
    }
    if (m->chain_len && chain_has_waiting_turn(a, m)) {
        char msg[400];
        snprintf(msg, sizeof msg,
                 "call cycle: %s '%s' is waiting (through a chain of %u call%s) for "
                 "this very call to %s; it would deadlock. Make one side not wait "
                 "(reply first, then call), or mark the method @quark.read_only",
                 a->type->name, a->id, m->chain_len, m->chain_len == 1 ? "" : "s",
                 a->type->iface->methods[m->method].name);
        qk_answer_error(w, m, QUARK_ECYCLE, msg);
        qk_msg_free(m);
        return;
    }
    const quark_silo_opts *o = &w->silo->opts;
    if (QK_UNLIKELY(a->mb_len >= o->max_mailbox || w->queued >= o->max_worker_queue)) {
        refuse_overloaded(w, a, m);
        return;
    }
    m->act = a;
    mailbox_append(a, m);
    if (m->dl.at_ms)
        qk_heap_insert(w, &m->dl);
}

void qk_deliver(qk_worker *w, qk_msg *m)
{
    switch (m->node.kind) {
    case QK_MSG_CALL:
        deliver_call(w, m);
        break;
    case QK_MSG_TASK:
        m->r.task.fn(w, m->r.task.arg);
        qk_msg_free(m);
        break;
    case QK_MSG_SUB:
    case QK_MSG_UNSUB:
    case QK_MSG_EVENT:
    case QK_MSG_SUBFREE:
        qk_events_deliver(w, m);
        break;
    default:
        qk_msg_free(m);
        break;
    }
}

/* Called by call.c when an outcall completes: run its callback as a turn of
 * the caller, in the context (chain, logical turn) that made the call. */
void qk_run_continuation(qk_worker *w, qk_outcall *oc, quark_err err, const char *errmsg,
                         const ProtobufCMessage *reply)
{
    /* Continuations run from the loop (a REPLY message or a deadline), never
     * from inside another turn. */
    quark_actor *a = oc->caller;
    if (QK_UNLIKELY(!qk_may_run(w, a))) {
        /* Its lease lapsed or the route let go of it: no turn; it goes
         * (what it deferred is answered as it does). */
        a->flags |= QK_AF_DEACT_REQ;
        return;
    }
    turn_begin(w, a, NULL, oc->turn, oc->chain, oc->chain_len);
    oc->tramp(oc->fn, err, errmsg, reply, oc->arg);
    turn_end(w, a);
}

void qk_after_continuation(qk_worker *w, quark_actor *a)
{
    qk_pump(w, a);
}

/* ---- deadlines ---- */

void qk_deadline_fire(qk_worker *w, qk_deadline *d)
{
    if (d->kind == QK_DL_OUTCALL) {
        qk_outcall *oc = QK_CONTAINER_OF(d, qk_outcall, dl);
        if (!oc->done && oc->caller) {
            oc->done = true;
            quark_actor *a = oc->caller;
            qk_run_continuation(w, oc, QUARK_ETIMEDOUT,
                                "deadline exceeded waiting for the reply", NULL);
            qk_after_continuation(w, a);
        }
        return; /* the record is freed when the answer arrives */
    }
    qk_msg *m = QK_CONTAINER_OF(d, qk_msg, dl);
    if (m->flags & QK_MF_ANSWERED)
        return;
    char msg[200];
    snprintf(msg, sizeof msg, "deadline exceeded: %s '%s' did not reply to %s in time",
             m->type->name, m->id, m->type->iface->methods[m->method].name);
    qk_answer_error(w, m, QUARK_ETIMEDOUT, msg);
    m->flags |= QK_MF_ANSWERED; /* held until popped or replied */
}

/* ---- idle collection and stop ---- */

void qk_collect_idle(qk_worker *w, uint64_t now)
{
    uint64_t idle = w->silo->opts.idle_timeout_ms;
    quark_actor *a = w->lru_head;
    while (a && a->last_used_ms + idle <= now) {
        quark_actor *next = a->lru_next;
        if (collectible(a))
            destroy(w, a, false);
        a = next;
    }
}

void qk_let_go(qk_worker *w, quark_actor *a)
{
    /* Calls not started yet go where the route says now, and the
     * activation goes as soon as what it is running is done. */
    qk_msg *queued = mailbox_take(a);
    a->flags |= QK_AF_DEACT_REQ | QK_AF_LET_GO;
    if (collectible(a))
        destroy(w, a, false);
    while (queued) {
        qk_msg *m = queued;
        queued = m->next;
        m->flags &= (uint8_t)~QK_MF_IN_MAILBOX;
        qk_heap_remove(w, &m->dl);
        m->act = NULL;
        if (m->flags & QK_MF_ANSWERED)
            qk_msg_free(m);
        else
            deliver_call(w, m);
    }
}

quark_actor *qk_activation_find(qk_worker *w, const qk_type_entry *t, uint64_t hash,
                                const char *id, size_t id_len)
{
    return dir_find(w, t, hash, id, id_len);
}

void qk_rebalance(qk_worker *w)
{
    const quark_silo *s = w->silo;
    if (!s->route || w->stopping)
        return;
    quark_actor *a = w->lru_head;
    while (a) {
        quark_actor *next = a->lru_next;
        if (!s->route->keeps(s->route_self, w, a->hash))
            qk_let_go(w, a); /* another silo owns it now */
        a = next;
    }
}

void qk_deactivate_all(qk_worker *w, bool force)
{
    /* Every activation is on the LRU list: O(n), however big the table. */
    quark_actor *a = w->lru_head;
    while (a) {
        quark_actor *next = a->lru_next;
        if (force || qk_state_quiet(a->ps)) {
            destroy(w, a, false);
        } else {
            /* Its state is being written: it goes once that is stored
             * (its held replies leave then); what it has queued fails. */
            qk_msg *queued = mailbox_take(a);
            a->flags |= QK_AF_DEACT_REQ;
            fail_queued(w, queued, QUARK_ECLOSED, QK_BY_RUNTIME, "the silo is stopping");
        }
        a = next;
    }
    /* Answer what is still in the local queue (the inbox drains normally). */
    qk_node *n;
    while ((n = w->lq_head) != NULL) {
        w->lq_head = n->next;
        if (!w->lq_head)
            w->lq_tail = NULL;
        qk_dispatch(w, n);
    }
}

/* ---- timers ---- */

/* A tick runs as a turn of its activation right away, even while a call
 * of it is deferred: like the completion of a call the actor made, it is
 * the actor's own work (often the very thing that sends the deferred reply).
 * Only incoming calls wait for their turn. Ticks come from the loop, never
 * from inside another turn. */
void qk_timer_fire(qk_worker *w, quark_timer *t)
{
    quark_actor *a = t->act;
    if (t->stopped || !qk_may_run(w, a))
        return; /* a tick while the lease lapsed is skipped (the activation is going) */
    w->now_ms = qk_now_ms_coarse(); /* the loop may have slept: calls made here need it */
    turn_begin(w, a, NULL, ++a->turn_ctr, NULL, 0);
    t->firing = true;
    t->fn(a, t->arg);
    t->firing = false;
    turn_end(w, a);
    if (t->period == 0 || t->stopped) {
        /* Fired for the last time (or stopped in its tick): unlink, free. */
        quark_timer **pp = &a->timers;
        while (*pp && *pp != t)
            pp = &(*pp)->next;
        if (*pp)
            *pp = t->next;
        timer_destroy(t);
    }
    qk_pump(w, a); /* a deferred reply may have freed it for its next call */
}

static void on_uv_timer(uv_timer_t *h)
{
    quark_timer *t = QK_CONTAINER_OF(h, quark_timer, uv);
    qk_timer_fire(t->act->worker, t);
}

/* ---- the actor API (quark/actor.h) ---- */

void *quark_actor_state(quark_actor *self)
{
    return self ? act_state(self) : NULL;
}

const char *quark_actor_id(const quark_actor *self)
{
    return self ? self->id : NULL;
}

const char *quark_actor_type_name(const quark_actor *self)
{
    return self ? self->type->name : NULL;
}

quark_client *quark_actor_client(quark_actor *self)
{
    return self ? self->worker->silo->self_client : NULL;
}

void *quark_actor_alloc(quark_actor *self, size_t size)
{
    qk_worker *w = qk_turn_of(self);
    return w ? qk_arena_alloc(&w->arena, size) : NULL;
}

quark_err quark_actor_fail(quark_actor *self, quark_err err, const char *fmt, ...)
{
    qk_worker *w = qk_turn_of(self);
    if (w && fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->cur.error, sizeof w->cur.error, fmt, ap);
        va_end(ap);
        w->cur.has_error = true;
    }
    return err;
}

quark_deferred *quark_actor_defer(quark_actor *self)
{
    qk_worker *w = qk_turn_of(self);
    if (!w || !w->cur.msg || w->cur.deferred)
        return NULL;
    qk_msg *m = w->cur.msg;
    w->cur.deferred = true;
    m->flags |= QK_MF_DEFERRED;
    m->turn = w->cur.turn;
    m->dprev = NULL;
    m->dnext = self->deferred;
    if (self->deferred)
        self->deferred->dprev = m;
    self->deferred = m;
    if (m->flags & QK_MF_READ_ONLY)
        self->ro_waiting++;
    else
        self->flags |= QK_AF_WAITING;
    if (m->dl.at_ms)
        qk_heap_insert(w, &m->dl);
    return (quark_deferred *)m;
}

static quark_err reply_common(quark_deferred *call, quark_err err, const char *errmsg,
                              const ProtobufCMessage *reply)
{
    qk_msg *m = (qk_msg *)call;
    if (!m)
        return qk_error(QUARK_EINVAL, "quark_reply: call is NULL");
    quark_actor *a = m->act;
    qk_worker *w = qk_tls_worker;
    if (!w || w != a->worker || w->cur.act != a)
        return qk_error(QUARK_EINVAL, "quark_reply: must be called from a turn of the "
                        "activation that deferred the call (%s '%s')", a->type->name, a->id);
    if (!(m->flags & QK_MF_DEFERRED))
        return qk_error(QUARK_EINVAL, "quark_reply: the call was not deferred or was "
                        "already replied");
    /* Unlink from the deferred list; release the activation. */
    if (m->dprev)
        m->dprev->dnext = m->dnext;
    else
        a->deferred = m->dnext;
    if (m->dnext)
        m->dnext->dprev = m->dprev;
    m->flags &= (uint8_t)~QK_MF_DEFERRED;
    if (m->flags & QK_MF_READ_ONLY)
        a->ro_waiting--;
    else
        a->flags &= (uint8_t)~QK_AF_WAITING;
    qk_heap_remove(w, &m->dl);
    quark_err rc = QUARK_OK;
    if (m->flags & QK_MF_ANSWERED)
        rc = qk_error(QUARK_ETIMEDOUT, "the call's deadline had passed; the reply was dropped");
    else {
        qk_outcome o = {.err = err, .by = err != QUARK_OK ? QK_BY_ACTOR : QK_BY_RUNTIME,
                        .errmsg = errmsg, .reply = reply, .md = qk_msg_method(m)};
        if (answer_turn(w, a, m, &o))
            m = NULL; /* held until the state is stored */
    }
    if (m)
        qk_msg_free(m);
    /* The activation may now take its next message: after this turn ends. */
    if (a->mb_head)
        ready_push(w, a);
    else if ((a->flags & QK_AF_DEACT_REQ))
        ready_push(w, a);
    return rc;
}

quark_err quark_reply(quark_deferred *call, const ProtobufCMessage *reply)
{
    if (!reply)
        return qk_error(QUARK_EINVAL, "quark_reply: reply is NULL");
    return reply_common(call, QUARK_OK, NULL, reply);
}

quark_err quark_reply_error(quark_deferred *call, quark_err err, const char *fmt, ...)
{
    char msg[256] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    if (err >= QUARK_OK)
        err = QUARK_EACTOR;
    return reply_common(call, err, msg[0] ? msg : quark_strerror(err), NULL);
}

void quark_actor_deactivate(quark_actor *self)
{
    qk_worker *w = qk_turn_of(self);
    if (!w)
        return;
    self->flags |= QK_AF_DEACT_REQ;
    ready_push(w, self); /* checked by qk_pump once the turn is over */
}

quark_err quark_actor_timer_start(quark_actor *self, uint64_t due_ms, uint64_t period_ms,
                                  quark_timer_fn fn, void *arg, quark_timer **out)
{
    qk_worker *w = qk_turn_of(self);
    if (!w)
        return qk_error(QUARK_EINVAL, "quark_actor_timer_start: call it from a turn of "
                        "the actor");
    if (!fn)
        return qk_error(QUARK_EINVAL, "quark_actor_timer_start: fn is NULL");
    quark_timer *t = calloc(1, sizeof *t);
    if (!t)
        return qk_error(QUARK_ENOMEM, "out of memory starting a timer");
    uv_timer_init(&w->loop, &t->uv);
    t->act = self;
    t->fn = fn;
    t->arg = arg;
    t->period = period_ms;
    t->next = self->timers;
    self->timers = t;
    uv_timer_start(&t->uv, on_uv_timer, due_ms, period_ms);
    if (out)
        *out = t;
    return QUARK_OK;
}

void quark_timer_stop(quark_timer *t)
{
    if (!t || t->stopped)
        return;
    quark_actor *a = t->act;
    t->stopped = true;
    uv_timer_stop(&t->uv);
    if (t->firing)
        return; /* stopped from its own tick: qk_timer_fire frees it */
    quark_timer **pp = &a->timers;
    while (*pp && *pp != t)
        pp = &(*pp)->next;
    if (*pp)
        *pp = t->next;
    timer_destroy(t);
}

/* ---- generated-code support (quark/interface.h) ---- */

void *quark__decode(quark_actor *self, const ProtobufCMessageDescriptor *desc,
                    const uint8_t *data, size_t len)
{
    qk_worker *w = qk_turn_of(self);
    if (!w)
        return NULL;
    void *msg = protobuf_c_message_unpack(desc, &w->arena.pb, len, data);
    if (!msg)
        quark__bad_args(self, desc, len);
    return msg;
}

void quark__bad_args(quark_actor *self, const ProtobufCMessageDescriptor *desc, size_t len)
{
    qk_worker *w = qk_turn_of(self);
    if (!w)
        return;
    snprintf(w->cur.error, sizeof w->cur.error,
             "arguments of %s.%s could not be decoded as %s (%zu bytes)", self->type->name,
             self->type->iface->methods[w->cur.msg ? w->cur.msg->method : 0].name,
             desc->name, len);
    w->cur.has_error = true;
}

quark_err quark__finish(quark_actor *self, quark_err rc, const ProtobufCMessage *reply)
{
    qk_worker *w = qk_turn_of(self);
    if (!w || !w->cur.msg)
        return QUARK_EINTERNAL;
    qk_msg *m = w->cur.msg;
    if (w->cur.deferred)
        return QUARK_PENDING; /* quark_actor_defer took the reply handle */
    if (rc == QUARK_OK) {
        qk_outcome o = {.reply = reply, .md = &self->type->iface->methods[m->method]};
        answer_turn(w, self, m, &o);
    } else if (rc == QUARK_PENDING) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s.%s returned QUARK_PENDING without calling "
                 "quark_actor_defer() (a bug in the actor)", self->type->name,
                 self->type->iface->methods[m->method].name);
        qk_answer_error(w, m, QUARK_EINTERNAL, msg);
    } else {
        if (rc > 0)
            rc = QUARK_EACTOR;
        /* The method's own error; a failed decode (EBADARGS) is the caller's. */
        qk_outcome o = qk_outcome_error(rc, w->cur.has_error ? w->cur.error : NULL);
        o.by = rc != QUARK_EBADARGS && rc != QUARK_EUNIMPLEMENTED ? QK_BY_ACTOR : QK_BY_RUNTIME;
        answer_turn(w, self, m, &o);
    }
    return rc;
}

quark_err quark__unimplemented(quark_actor *self, const quark_interface *iface, unsigned method)
{
    char msg[300];
    snprintf(msg, sizeof msg, "%s does not implement %s.%s (its methods table leaves it NULL)",
             self->type->type->impl_name ? self->type->type->impl_name : self->type->name,
             iface->name, method < iface->n_methods ? iface->methods[method].name : "?");
    quark_actor_fail(self, QUARK_EUNIMPLEMENTED, "%s", msg);
    return quark__finish(self, QUARK_EUNIMPLEMENTED, NULL);
}
