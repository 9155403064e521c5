/*
 * worker.c - worker threads: the loop, message passing, the deadline heap.
 *
 * Each worker runs a libuv loop: its timers and, in a silo that serves the
 * network, its sockets (the listener port, ports.h). Messages and finished
 * ops from other threads arrive on a lock-free MPSC inbox; what a worker
 * sends itself goes on a plain local queue. Before blocking in the loop a worker spins
 * briefly, then announces `sleeping` and re-checks its inbox; a sender pushes
 * and then reads `sleeping`, waking the loop through uv_async only when the
 * worker really sleeps (both sides seq_cst: one of them sees the other).
 *
 * A worker batches what it sends to other workers: messages collect in a
 * per-target chain while it works and are published with one atomic exchange
 * (and at most one wake-up) per target when the batch ends, the chain gets
 * long, or the worker runs out of work. Cross-thread cost is then paid per
 * batch, not per call.
 */
#include <stdlib.h>
#include <malloc.h> /* malloc_trim (glibc) */

#include "runtime.h"

QK_TLS qk_worker *qk_tls_worker;

#define QK_BATCH 256        /* messages handled between loop polls */
/* In a silo that serves the network, a batch ends (its answers are written,
 * the sockets polled) every 16 messages: the client starts on the first
 * answers while the silo runs the rest, instead of the two taking turns on a
 * whole window of calls. TCP w2 on 2 vCPUs: 790-840k calls/s with 256,
 * 900-990k with 16, 750-850k with 4 or 32 (docs/benchmarks.md). */
#define QK_NET_BATCH 16
#define QK_OUT_MAX 32       /* publish a target's chain once this long */

static void publish(qk_worker *target, qk_mpsc_node *first, qk_mpsc_node *last)
{
    qk_mpsc_push_chain(&target->inbox, first, last);
    if (atomic_load_explicit(&target->sleeping, memory_order_seq_cst))
        uv_async_send(&target->wake);
}

static void flush_one(qk_worker *self, unsigned t)
{
    qk_outq *q = &self->out[t];
    if (q->n) {
        publish(&self->silo->workers[t], q->first, q->last);
        q->first = q->last = NULL;
        q->n = 0;
    }
}

void qk_flush(qk_worker *self)
{
    if (self->st_dirty) /* first: writes that complete at once release answers */
        qk_state_flush(self);
    for (unsigned i = 0; i < self->ndirty; i++) {
        flush_one(self, self->dirty[i]);
        self->out[self->dirty[i]].dirty = false;
    }
    self->ndirty = 0;
    if (self->io_pending) {
        self->io_pending = false;
        self->silo->listener->flush(self->silo->listener_self, self);
    }
}

void qk_send_node(qk_worker *w, qk_node *m)
{
    qk_worker *self = qk_tls_worker;
    if (self == w) {
        m->next = NULL;
        if (w->lq_tail)
            w->lq_tail->next = m;
        else
            w->lq_head = m;
        w->lq_tail = m;
        return;
    }
    if (self && self->silo == w->silo && self->out) {
        qk_outq *q = &self->out[w->index];
        atomic_store_explicit(&m->qnode.next, NULL, memory_order_relaxed);
        if (q->n == 0) {
            q->first = &m->qnode;
            if (!q->dirty) {
                q->dirty = true;
                self->dirty[self->ndirty++] = w->index;
            }
        } else {
            atomic_store_explicit(&q->last->next, &m->qnode, memory_order_relaxed);
        }
        q->last = &m->qnode;
        if (++q->n >= QK_OUT_MAX)
            flush_one(self, w->index); /* stays listed in dirty */
        return;
    }
    publish(w, &m->qnode, &m->qnode);
}

static qk_node *pop_local(qk_worker *w)
{
    qk_node *m = w->lq_head;
    if (m) {
        w->lq_head = m->next;
        if (!w->lq_head)
            w->lq_tail = NULL;
    }
    return m;
}

static qk_node *pop_inbox(qk_worker *w)
{
    qk_mpsc_node *n = qk_mpsc_pop(&w->inbox);
    return n ? QK_CONTAINER_OF(n, qk_node, qnode) : NULL;
}

/* Alternate between the local queue and the inbox: a worker whose own calls
 * keep its local queue full must not starve the other threads' messages
 * (their senders would sit idle waiting for the answers). */
static qk_node *next_msg(qk_worker *w)
{
    qk_node *m;
    w->flip = !w->flip;
    if (w->flip) {
        if ((m = pop_inbox(w)) != NULL)
            return m;
        return pop_local(w);
    }
    if ((m = pop_local(w)) != NULL)
        return m;
    return pop_inbox(w);
}

/* Handle up to a batch of messages and ready activations; returns how many. */
static int run_batch(qk_worker *w)
{
    int n = 0, max = w->silo->listener ? QK_NET_BATCH : QK_BATCH;
    w->now_ms = qk_now_ms_coarse();
    while (n < max) {
        qk_node *m = next_msg(w);
        if (!m) {
            quark_actor *a = w->ready_head;
            if (!a)
                break;
            w->ready_head = a->ready_next;
            if (!w->ready_head)
                w->ready_tail = NULL;
            a->flags &= (uint8_t)~QK_AF_READY;
            qk_pump(w, a);
            n++;
            continue;
        }
        qk_dispatch(w, m);
        n++;
    }
    return n;
}

static int has_work(qk_worker *w)
{
    /* st_dirty: states whose write could not start (no memory) try again */
    return w->lq_head || w->ready_head || w->st_dirty || !qk_mpsc_empty(&w->inbox);
}

static void on_wake(uv_async_t *h)
{
    (void)h; /* the loop in worker_main drains the inbox */
}

static void arm_dl_timer(qk_worker *w, uint64_t at_ms);

void qk_heap_insert(qk_worker *w, qk_deadline *d)
{
    if (qk_dlheap_insert(&w->heap, d) && d->at_ms < w->dl_armed_ms)
        arm_dl_timer(w, d->at_ms);
}

void qk_heap_remove(qk_worker *w, qk_deadline *d)
{
    qk_dlheap_remove(&w->heap, d);
}

static void on_dl_timer(uv_timer_t *t)
{
    qk_worker *w = t->data;
    w->dl_armed_ms = UINT64_MAX;
    uint64_t now = w->now_ms = qk_now_ms_coarse();
    qk_deadline *d;
    while ((d = qk_dlheap_pop_expired(&w->heap, now)) != NULL)
        qk_deadline_fire(w, d);
    if (w->heap.len)
        arm_dl_timer(w, w->heap.a[0]->at_ms);
}

static void arm_dl_timer(qk_worker *w, uint64_t at_ms)
{
    uint64_t now = qk_now_ms_coarse();
    w->dl_armed_ms = at_ms;
    /* +5 ms: the coarse clock steps by up to 4 ms. */
    uv_timer_start(&w->dl_timer, on_dl_timer, at_ms > now ? at_ms - now + 5 : 1, 0);
}

/* ---- idle collection ---- */

/* A worker that has been idle for a second since it last worked gives the
 * heap's free pages back (glibc keeps them otherwise): the memory a burst
 * took returns when it ends, at no cost while the worker is busy. */
#define QK_TRIM_AFTER_MS 1000

static void on_idle_timer(uv_timer_t *t)
{
    qk_worker *w = t->data;
    w->now_ms = qk_now_ms_coarse();
    if (w->now_ms >= w->next_collect_ms) {
        w->next_collect_ms = w->now_ms + w->collect_every_ms;
        qk_collect_idle(w, w->now_ms);
    }
#if defined(__GLIBC__) && !defined(QK_SANITIZED)
    if (w->heap_used && w->now_ms - w->last_work_ms >= QK_TRIM_AFTER_MS) {
        w->heap_used = false;
        malloc_trim(0);
    }
#endif
}

/* ---- the thread ---- */

/* After the exit task, a worker stays a little longer while its listener
 * still writes the last answers. */
static bool io_busy(const qk_worker *w)
{
    const quark_silo *s = w->silo;
    return s->listener && s->listener->worker_busy(s->listener_self, w);
}

static void worker_main(void *arg)
{
    qk_worker *w = arg;
    quark_silo *s = w->silo;
    qk_tls_worker = w;
    w->now_ms = qk_now_ms_coarse();
    qk_spin_init(&w->spin, s->listener ? s->opts.poll_us : 0);
    if (s->listener)
        s->listener->worker_start(s->listener_self, w);
    bool worked = false; /* since it last slept: a timer alone is no reason to poll */
    while (!w->exit_loop || (io_busy(w) && qk_now_ms_coarse() < w->exit_by_ms)) {
        int n = run_batch(w);
        qk_flush(w);
        if (n > 0) {
            worked = true;
            uv_run(&w->loop, UV_RUN_NOWAIT);
            qk_flush(w);
            continue;
        }
        /* Poll a little before sleeping (opts.poll_us): the next message is
         * often a few microseconds away. In process, the queues; in a silo
         * that serves the network, the sockets too, and only while this
         * worker has its core to itself (spin.h): a polling worker on a
         * contended machine takes the core from the thread about to send. */
        if (!s->listener && s->opts.poll_us) {
            uint64_t spin_until = qk_now_ns() + (uint64_t)s->opts.poll_us * 1000u;
            while (!has_work(w) && qk_now_ns() < spin_until)
                for (int i = 0; i < 64; i++)
                    qk_cpu_relax();
            if (has_work(w))
                continue;
        } else if (s->listener && worked) {
            uint64_t spin_until = qk_spin_until(&w->spin);
            while (spin_until && !has_work(w) && !w->exit_loop && qk_now_ns() < spin_until) {
                uv_run(&w->loop, UV_RUN_NOWAIT);
                qk_flush(w);
            }
            if (spin_until)
                qk_spin_found(&w->spin, has_work(w));
            if (has_work(w))
                continue;
        }
        atomic_store_explicit(&w->sleeping, 1, memory_order_seq_cst);
        if (has_work(w)) {
            atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
            continue;
        }
        if (worked) {
            w->heap_used = true;
            w->last_work_ms = qk_now_ms_coarse();
        }
        worked = false;
        uv_run(&w->loop, UV_RUN_ONCE);
        atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
        qk_flush(w);
    }
    qk_tls_worker = NULL;
}

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

static void worker_destroy(qk_worker *w)
{
    if (w->st_pw) { /* not detached yet: a start that failed */
        w->silo->storage->detach(w->silo->storage_self, w->st_pw);
        w->st_pw = NULL;
    }
    uv_close((uv_handle_t *)&w->wake, close_cb);
    uv_close((uv_handle_t *)&w->dl_timer, close_cb);
    uv_close((uv_handle_t *)&w->idle_timer, close_cb);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    free(w->slots);
    qk_dlheap_destroy(&w->heap);
    free(w->out);
    free(w->dirty);
    while (w->msg_free) {
        qk_msg *m = w->msg_free;
        w->msg_free = m->next;
        free(m);
    }
    qk_arena_destroy(&w->arena);
    qk_state_worker_free(w);
}

static int worker_init(quark_silo *s, qk_worker *w, unsigned index)
{
    memset(w, 0, sizeof *w);
    w->silo = s;
    w->index = index;
    w->route_until = UINT64_MAX;
    qk_mpsc_init(&w->inbox);
    if (uv_loop_init(&w->loop) != 0)
        return -1;
    uv_async_init(&w->loop, &w->wake, on_wake);
    uv_timer_init(&w->loop, &w->dl_timer);
    uv_timer_init(&w->loop, &w->idle_timer);
    w->dl_timer.data = w;
    w->idle_timer.data = w;
    w->dl_armed_ms = UINT64_MAX;
    w->mask = 63;
    w->slots = calloc(w->mask + 1, sizeof *w->slots);
    w->out = calloc(s->nworkers, sizeof *w->out);
    w->dirty = calloc(s->nworkers, sizeof *w->dirty);
    qk_arena_init(&w->arena, 16384);
    if (!w->slots || !w->out || !w->dirty || !w->arena.chunks)
        return -1;
    if (s->storage && !(w->st_pw = s->storage->attach(s->storage_self, w, &w->loop)))
        return -1;
    uint64_t every = s->opts.idle_timeout_ms / 4;
    if (every < 10)
        every = 10;
    if (every > 30000)
        every = 30000;
    w->collect_every_ms = every;
    w->next_collect_ms = qk_now_ms_coarse() + every;
    uint64_t tick = every < QK_TRIM_AFTER_MS ? every : QK_TRIM_AFTER_MS;
    uv_timer_start(&w->idle_timer, on_idle_timer, tick, tick);
    return 0;
}

quark_err qk_workers_start(quark_silo *s)
{
    s->workers = calloc(s->nworkers, sizeof *s->workers);
    if (!s->workers)
        return qk_error(QUARK_ENOMEM, "out of memory creating %u workers", s->nworkers);
    for (unsigned i = 0; i < s->nworkers; i++) {
        if (worker_init(s, &s->workers[i], i) != 0) {
            for (unsigned j = 0; j <= i; j++)
                worker_destroy(&s->workers[j]);
            free(s->workers);
            s->workers = NULL;
            return qk_error(QUARK_ENOMEM, "could not initialise worker %u", i);
        }
    }
    for (unsigned i = 0; i < s->nworkers; i++) {
        if (uv_thread_create(&s->workers[i].thread, worker_main, &s->workers[i]) != 0) {
            /* Stop the ones already running, then give everything back. */
            for (unsigned j = 0; j < i; j++)
                qk_run_on(&s->workers[j], NULL, NULL);
            for (unsigned j = 0; j < s->nworkers; j++) {
                if (j < i)
                    uv_thread_join(&s->workers[j].thread);
                worker_destroy(&s->workers[j]);
            }
            free(s->workers);
            s->workers = NULL;
            return qk_error(QUARK_ENOMEM, "could not start worker thread %u", i);
        }
    }
    return QUARK_OK;
}

/* ---- running a task on a worker and waiting for it ---- */

typedef struct qk_task_sync {
    qk_task_fn fn;
    void *arg;
    uv_mutex_t mu;
    uv_cond_t cv;
    int done;
} qk_task_sync;

static void task_trampoline(qk_worker *w, void *arg)
{
    qk_task_sync *ts = arg;
    if (ts->fn) {
        ts->fn(w, ts->arg);
    } else { /* fn NULL: leave the loop */
        w->exit_loop = true;
        w->exit_by_ms = qk_now_ms_coarse() + 2000;
    }
    uv_mutex_lock(&ts->mu);
    ts->done = 1;
    uv_cond_signal(&ts->cv);
    uv_mutex_unlock(&ts->mu);
}

void qk_run_on(qk_worker *w, qk_task_fn fn, void *arg)
{
    qk_task_sync ts = {.fn = fn, .arg = arg};
    uv_mutex_init(&ts.mu);
    uv_cond_init(&ts.cv);
    /* The callers (start and stop phases, the cluster's stop) rely on fn
     * having run: out of memory waits for memory instead of skipping it. */
    qk_msg *m;
    while (!(m = qk_msg_new(0)))
        uv_sleep(1);
    m->node.kind = QK_MSG_TASK;
    m->r.task.fn = task_trampoline;
    m->r.task.arg = &ts;
    qk_send(w, m);
    uv_mutex_lock(&ts.mu);
    while (!ts.done)
        uv_cond_wait(&ts.cv, &ts.mu);
    uv_mutex_unlock(&ts.mu);
    uv_mutex_destroy(&ts.mu);
    uv_cond_destroy(&ts.cv);
}

/* ---- running a task later ---- */

bool qk_post_task(qk_worker *w, qk_task_fn fn, void *arg)
{
    qk_msg *m = qk_msg_new(0);
    if (!m)
        return false;
    m->node.kind = QK_MSG_TASK;
    m->r.task.fn = fn;
    m->r.task.arg = arg;
    qk_send(w, m);
    return true;
}

/* ---- stopping ---- */

static void stop_task(qk_worker *w, void *arg)
{
    (void)arg;
    quark_silo *s = w->silo;
    if (s->listener)
        s->listener->worker_quiesce(s->listener_self, w);
    w->stopping = true;
    qk_state_flush(w); /* what changed is written before its activation goes */
    qk_deactivate_all(w, false);
    qk_events_stop(w);
    qk_flush(w); /* answers for other workers' connections leave now */
}

static void stop_rest_task(qk_worker *w, void *arg)
{
    (void)arg;
    qk_deactivate_all(w, true);
    qk_flush(w);
}

/* How long a stopping silo waits for the state writes in flight. */
#define QK_STOP_WRITES_MS 10000

static void close_io_task(qk_worker *w, void *arg)
{
    (void)arg;
    quark_silo *s = w->silo;
    if (s->listener)
        s->listener->worker_stop(s->listener_self, w);
}

/* Answer whatever is still queued once all threads are gone. Answers may
 * produce REPLY messages for other workers' inboxes: loop until all are
 * empty. Runs on the stopping thread, which plays each worker in turn. */
static void drain_after_join(quark_silo *s)
{
    int again = 1;
    while (again) {
        again = 0;
        for (unsigned i = 0; i < s->nworkers; i++) {
            qk_worker *w = &s->workers[i];
            qk_tls_worker = w;
            w->now_ms = qk_now_ms_coarse();
            qk_node *m;
            while ((m = next_msg(w)) != NULL) {
                qk_dispatch(w, m);
                again = 1;
            }
            qk_flush(w);
            qk_tls_worker = NULL;
        }
    }
}

/* Phase 1: every worker deactivates its activations (hooks run there)
 * and from then on answers calls with QUARK_ECLOSED. */
void qk_workers_stop_calls(quark_silo *s)
{
    for (unsigned i = 0; s->workers && i < s->nworkers; i++)
        qk_run_on(&s->workers[i], stop_task, NULL);
    if (!s->workers || !s->storage)
        return;
    /* Activations whose state is being written go once it is stored (their
     * replies leave then); after a bound, whatever is left goes anyway. */
    uint64_t until = qk_now_ms_coarse() + QK_STOP_WRITES_MS;
    for (;;) { /* until every worker has nothing to write at once */
        bool busy = false;
        for (unsigned i = 0; i < s->nworkers; i++)
            busy |= atomic_load_explicit(&s->workers[i].st_busy, memory_order_acquire) != 0;
        if (!busy || qk_now_ms_coarse() >= until)
            break;
        uv_sleep(1);
    }
    for (unsigned i = 0; i < s->nworkers; i++)
        qk_run_on(&s->workers[i], stop_rest_task, NULL);
}

/* Phase 2: the listener writes the answers it got and closes. */
void qk_workers_close_io(quark_silo *s)
{
    for (unsigned i = 0; s->workers && i < s->nworkers; i++)
        qk_run_on(&s->workers[i], close_io_task, NULL);
}

/* Phase 3: leave the loops, join, answer what is left, free the workers. */
void qk_workers_join(quark_silo *s)
{
    if (!s->workers)
        return;
    for (unsigned i = 0; i < s->nworkers; i++)
        qk_run_on(&s->workers[i], NULL, NULL);
    for (unsigned i = 0; i < s->nworkers; i++)
        uv_thread_join(&s->workers[i].thread);
    /* A storage finishes what it still has in flight as it detaches; the
     * drain then runs those completions. */
    for (unsigned i = 0; i < s->nworkers; i++) {
        qk_worker *w = &s->workers[i];
        if (w->st_pw) {
            qk_tls_worker = w;
            s->storage->detach(s->storage_self, w->st_pw);
            w->st_pw = NULL;
            qk_tls_worker = NULL;
        }
    }
    drain_after_join(s);
    for (unsigned i = 0; i < s->nworkers; i++)
        worker_destroy(&s->workers[i]);
    free(s->workers);
    s->workers = NULL;
}
