/*
 * reminder_service.c - durable reminders on a silo (docs/reminders.md).
 *
 * One thread with its own loop per silo. It alone calls the reminder store
 * (providers.h: every call blocks), so no worker ever waits for it:
 *
 *   - actors' requests (set, unset, list) are queued to it; it runs them
 *     against the store and finishes each one's op, whose done runs on the
 *     actor's worker as a turn of the actor (like a call's completion);
 *   - it keeps the reminders of the buckets this silo owns (the placement
 *     owner of each bucket's point under the view; every bucket for a silo
 *     alone or a store of this process only) in a table and a heap by next
 *     tick, reads those buckets again every refresh_ms and whenever the
 *     view changes, and fires each tick as a call of the type's reminder
 *     method through the silo's own client: routed like any call, so it
 *     runs where the actor lives, activating it.
 *
 * A tick's time is a pure function of the stored due time and period: the
 * first due + k * period at or after now. So nothing is written per tick,
 * a new owner fires the same schedule, and ticks missed while nobody owned
 * a bucket are skipped rather than replayed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quark/actor.h"
#include "quark/client.h"
#include "quark/reminder.pb-c.h"
#include "runtime.h"
#include "runtime/reminder_service.h"

#define VIEW_CHECK_MS 100   /* how often the view is compared */
#define LOG_EVERY_MS 5000   /* at most one line per this, of each kind (LOG_*) */
enum { LOG_TICK, LOG_STORE, LOG_OTHER, LOG_KINDS };
#define DUE_MAX_MS (100ull * 365 * 24 * 3600 * 1000) /* 100 years */

enum { RQ_SET, RQ_UNSET, RQ_LIST };

/* An actor's request, from its turn to the service and back. */
typedef struct rreq {
    struct rreq *next;
    int kind;
    qk_outcall *oc;            /* its completion: a turn of the actor */
    quark_actor *self;
    quark_reminder_fn done;
    quark_reminder_list_fn list_fn;
    void *arg;
    qk_reminder rem;           /* key.type: the registered name (lives on);
                                * key.id and name: in buf */
    /* Set by the service before it finishes the op. */
    quark_err err;
    char errmsg[256];
    quark_reminder_info *list;
    size_t n, cap;
    char buf[];                /* id NUL name NUL */
} rreq;

/* A reminder this silo fires. */
typedef struct rent {
    struct rent *hnext;        /* table chain */
    size_t hidx;               /* place in the heap */
    uint64_t fh;               /* hash of field */
    uint64_t key_hash, due_ms, period_ms, next_ms;
    uint32_t bucket, seen;
    const qk_type_entry *te;   /* resolved at the first tick */
    quark_ref *ref;
    size_t flen;
    char *type, *id, *name;
    char field[];              /* field NUL type NUL id NUL name NUL */
} rent;

struct qk_rsvc {
    quark_silo *silo;
    qk_rsvc_opts o;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t fire_t, check_t;
    uv_mutex_t mu;
    rreq *q_head, *q_tail;     /* under mu */
    bool stopping;             /* under mu */
    bool thread_started;
    /* The thread's own. */
    rent **tab;
    size_t tmask, count;
    rent **heap;
    size_t hlen, hcap;
    bool owned[QK_REMINDER_BUCKETS];
    bool have_view;
    uint64_t view_version;
    int view_self;
    size_t view_n;
    uint32_t gen;
    uint64_t next_reload_ms;   /* monotonic */
    _Atomic uint64_t last_log_ms[LOG_KINDS];
    _Atomic bool warned_local; /* the once-only warning of a local store in a cluster */
    _Atomic uint64_t ticks, failed;
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The first due + k * period at or after t. */
static uint64_t tick_at_or_after(uint64_t due, uint64_t period, uint64_t t)
{
    if (due >= t)
        return due;
    return due + (t - due + period - 1) / period * period;
}

static void rs_log(qk_rsvc *r, int kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void rs_log(qk_rsvc *r, int kind, const char *fmt, ...)
{
    uint64_t now = qk_now_ms_coarse();
    uint64_t last = atomic_load(&r->last_log_ms[kind]);
    if (last && now < last + LOG_EVERY_MS)
        return;
    if (!atomic_compare_exchange_strong(&r->last_log_ms[kind], &last, now))
        return;
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "quark: reminders: %s\n", line);
}

/* A tick still queued when the next is due is of no use: its deadline is
 * one period (1 s to 30 s). */
static uint32_t tick_deadline(uint64_t period_ms)
{
    return period_ms < 1000 ? 1000 : period_ms > 30000 ? 30000 : (uint32_t)period_ms;
}

/* ---- the heap of next ticks ---- */

static void heap_set(qk_rsvc *r, size_t i, rent *e)
{
    r->heap[i] = e;
    e->hidx = i;
}

static void sift_up(qk_rsvc *r, size_t i)
{
    rent *e = r->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (r->heap[p]->next_ms <= e->next_ms)
            break;
        heap_set(r, i, r->heap[p]);
        i = p;
    }
    heap_set(r, i, e);
}

static void sift_down(qk_rsvc *r, size_t i)
{
    rent *e = r->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= r->hlen)
            break;
        if (c + 1 < r->hlen && r->heap[c + 1]->next_ms < r->heap[c]->next_ms)
            c++;
        if (e->next_ms <= r->heap[c]->next_ms)
            break;
        heap_set(r, i, r->heap[c]);
        i = c;
    }
    heap_set(r, i, e);
}

static bool heap_push(qk_rsvc *r, rent *e)
{
    if (r->hlen == r->hcap) {
        size_t cap = r->hcap ? r->hcap * 2 : 64;
        rent **h = realloc(r->heap, cap * sizeof *h);
        if (!h)
            return false;
        r->heap = h;
        r->hcap = cap;
    }
    heap_set(r, r->hlen++, e);
    sift_up(r, e->hidx);
    return true;
}

static void heap_remove(qk_rsvc *r, rent *e)
{
    size_t i = e->hidx;
    rent *last = r->heap[--r->hlen];
    if (i == r->hlen)
        return;
    heap_set(r, i, last);
    sift_up(r, i);
    sift_down(r, last->hidx);
}

/* The next tick of e changed: its place in the heap too. */
static void heap_fix(qk_rsvc *r, rent *e)
{
    sift_up(r, e->hidx);
    sift_down(r, e->hidx);
}

/* ---- the table of reminders fired here, by field ---- */

static rent *tab_find(const qk_rsvc *r, const char *f, size_t flen, uint64_t fh)
{
    if (!r->tab)
        return NULL;
    for (rent *e = r->tab[fh & r->tmask]; e; e = e->hnext)
        if (e->fh == fh && e->flen == flen && memcmp(e->field, f, flen) == 0)
            return e;
    return NULL;
}

static bool tab_grow(qk_rsvc *r)
{
    size_t n = r->tab ? (r->tmask + 1) * 2 : 256;
    rent **t = calloc(n, sizeof *t);
    if (!t)
        return false;
    for (size_t i = 0; r->tab && i <= r->tmask; i++) {
        for (rent *e = r->tab[i], *next; e; e = next) {
            next = e->hnext;
            e->hnext = t[e->fh & (n - 1)];
            t[e->fh & (n - 1)] = e;
        }
    }
    free(r->tab);
    r->tab = t;
    r->tmask = n - 1;
    return true;
}

/* The table's key of (type, id, name): "<type>\0<id>\0<name>", unambiguous
 * as none of them holds a NUL. out holds type_len + id_len + name_len + 2. */
static size_t field_of(char *out, const qk_actor_key *k, const char *name, size_t name_len)
{
    char *p = out;
    memcpy(p, k->type, k->type_len);
    p += k->type_len;
    *p++ = '\0';
    memcpy(p, k->id, k->id_len);
    p += k->id_len;
    *p++ = '\0';
    memcpy(p, name, name_len);
    return (size_t)(p - out) + name_len;
}

static void rent_free(rent *e)
{
    quark_ref_free(e->ref);
    free(e);
}

static void tab_remove(qk_rsvc *r, rent *e)
{
    rent **pp = &r->tab[e->fh & r->tmask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    r->count--;
    heap_remove(r, e);
    rent_free(e);
}

/* Fire rm from now on (or follow its new due time and period). */
static void schedule(qk_rsvc *r, const qk_reminder *rm, uint64_t now)
{
    const qk_actor_key *k = &rm->key;
    /* What the store holds is not trusted (another program, another
     * version may have written it): a period of 0 would divide by zero, a
     * huge one wrap the arithmetic and fire without end. */
    if (rm->period_ms < 1 || rm->period_ms > DUE_MAX_MS || rm->due_ms > now + DUE_MAX_MS ||
        k->type_len == 0 || k->id_len == 0 || rm->name_len == 0) {
        rs_log(r, LOG_STORE, "a stored reminder of %.*s '%.*s' is not valid (period %llu ms, "
               "due %llu): it is ignored", (int)(k->type_len > 100 ? 100 : k->type_len),
               k->type, (int)(k->id_len > 100 ? 100 : k->id_len), k->id,
               (unsigned long long)rm->period_ms, (unsigned long long)rm->due_ms);
        return;
    }
    size_t cap = k->type_len + k->id_len + rm->name_len + 24;
    char stackf[512];
    char *f = cap <= sizeof stackf ? stackf : malloc(cap);
    if (!f) {
        rs_log(r, LOG_OTHER, "out of memory keeping a reminder: it is read again in %u ms",
               r->o.refresh_ms);
        return;
    }
    size_t flen = field_of(f, k, rm->name, rm->name_len);
    uint64_t fh = qk_hash(f, flen, 0x72656d696e646572ull);
    rent *e = tab_find(r, f, flen, fh);
    if (e) {
        e->seen = r->gen;
        if (e->due_ms != rm->due_ms || e->period_ms != rm->period_ms) {
            e->due_ms = rm->due_ms;
            e->period_ms = rm->period_ms;
            e->next_ms = tick_at_or_after(e->due_ms, e->period_ms, now);
            heap_fix(r, e);
            if (e->ref)
                quark_ref_set_deadline(e->ref, tick_deadline(e->period_ms));
        }
        goto out;
    }
    if (r->count + 1 > (r->tab ? r->tmask + 1 : 0) && !tab_grow(r))
        goto oom;
    e = malloc(sizeof *e + flen + 1 + k->type_len + 1 + k->id_len + 1 + rm->name_len + 1);
    if (!e)
        goto oom;
    memset(e, 0, sizeof *e);
    e->fh = fh;
    e->key_hash = k->hash;
    e->due_ms = rm->due_ms;
    e->period_ms = rm->period_ms;
    e->next_ms = tick_at_or_after(e->due_ms, e->period_ms, now);
    e->bucket = qk_reminder_bucket(k->hash);
    e->seen = r->gen;
    e->flen = flen;
    char *p = e->field;
    memcpy(p, f, flen);
    p[flen] = '\0';
    p += flen + 1;
    e->type = p;
    memcpy(p, k->type, k->type_len);
    p[k->type_len] = '\0';
    p += k->type_len + 1;
    e->id = p;
    memcpy(p, k->id, k->id_len);
    p[k->id_len] = '\0';
    p += k->id_len + 1;
    e->name = p;
    memcpy(p, rm->name, rm->name_len);
    p[rm->name_len] = '\0';
    if (!heap_push(r, e)) {
        free(e);
        goto oom;
    }
    e->hnext = r->tab[fh & r->tmask];
    r->tab[fh & r->tmask] = e;
    r->count++;
    goto out;
oom:
    rs_log(r, LOG_OTHER, "out of memory keeping a reminder: it is read again in %u ms", r->o.refresh_ms);
out:
    if (f != stackf)
        free(f);
}

static void unschedule(qk_rsvc *r, const qk_actor_key *k, const char *name, size_t name_len)
{
    size_t cap = k->type_len + k->id_len + name_len + 24;
    char *f = malloc(cap);
    if (!f)
        return; /* the next reload drops it */
    size_t flen = field_of(f, k, name, name_len);
    rent *e = tab_find(r, f, flen, qk_hash(f, flen, 0x72656d696e646572ull));
    if (e)
        tab_remove(r, e);
    free(f);
}

/* ---- firing ---- */

static void tick_done(quark_err err, const char *errmsg, const ProtobufCMessage *reply, void *arg)
{
    (void)reply;
    qk_rsvc *r = arg;
    if (err != QUARK_OK) {
        atomic_fetch_add(&r->failed, 1);
        rs_log(r, LOG_TICK, "a tick failed: %s", errmsg ? errmsg : quark_strerror(err));
    }
}

static void fire_one(qk_rsvc *r, rent *e, uint64_t scheduled)
{
    if (!e->ref) {
        e->te = qk_registry_lookup(e->type, strlen(e->type));
        if (!e->te || e->te->reminder_method < 0) {
            rs_log(r, LOG_TICK, "reminder '%s' of %s '%s' cannot tick here: %s", e->name, e->type, e->id,
                   e->te ? "the type has no on_reminder" : "no actor type of that name is "
                   "registered in this silo");
            return;
        }
        if (quark_ref_new(r->silo->self_client, e->te->iface, e->type, e->id, &e->ref) !=
            QUARK_OK) {
            rs_log(r, LOG_TICK, "reminder '%s' of %s '%s': %s", e->name, e->type, e->id,
                   quark_last_error());
            return;
        }
        quark_ref_set_deadline(e->ref, tick_deadline(e->period_ms));
    }
    Quark__ReminderTick tk = QUARK__REMINDER_TICK__INIT;
    tk.name = e->name;
    tk.period_ms = e->period_ms;
    tk.scheduled_ms = scheduled;
    atomic_fetch_add(&r->ticks, 1);
    quark_err rc = quark_call_async(e->ref, e->te->iface, (unsigned)e->te->reminder_method,
                                    &tk.base, tick_done, r);
    if (rc != QUARK_OK) {
        atomic_fetch_add(&r->failed, 1);
        rs_log(r, LOG_TICK, "reminder '%s' of %s '%s' did not tick: %s", e->name, e->type, e->id,
               quark_last_error());
    }
}

static void on_fire(uv_timer_t *t);

static void arm_at(qk_rsvc *r)
{
    if (!r->hlen) {
        uv_timer_stop(&r->fire_t);
        return;
    }
    uint64_t now = wall_ms();
    uint64_t at = r->heap[0]->next_ms;
    uv_timer_start(&r->fire_t, on_fire, at > now ? at - now : 0, 0);
}

static void on_fire(uv_timer_t *t)
{
    qk_rsvc *r = t->data;
    uint64_t now = wall_ms();
    while (r->hlen && r->heap[0]->next_ms <= now) {
        rent *e = r->heap[0];
        fire_one(r, e, e->next_ms);
        uint64_t next = e->next_ms + e->period_ms;
        if (next <= now) /* missed ticks are skipped, not replayed */
            next = tick_at_or_after(e->due_ms, e->period_ms, now + 1);
        e->next_ms = next;
        sift_down(r, 0);
    }
    arm_at(r);
}

/* ---- which buckets, and reading them ---- */

static uint64_t bucket_point(uint32_t b)
{
    return qk_fmix64(0x72656d696e646572ull + b);
}

/* Did the view change since the buckets were read? Sets owned[] if so. */
static bool view_changed(qk_rsvc *r)
{
    if (r->o.ops->local || !r->o.view) {
        if (r->have_view)
            return false;
        r->have_view = true;
        for (uint32_t b = 0; b < QK_REMINDER_BUCKETS; b++)
            r->owned[b] = true;
        return true;
    }
    qk_view *v = r->o.view(r->o.view_arg);
    int self = v ? v->self : -1;
    size_t n = v ? v->n : 0;
    uint64_t version = v ? v->version : 0;
    bool changed = !r->have_view || version != r->view_version || self != r->view_self ||
                   n != r->view_n;
    if (changed) {
        r->have_view = true;
        r->view_version = version;
        r->view_self = self;
        r->view_n = n;
        for (uint32_t b = 0; b < QK_REMINDER_BUCKETS; b++)
            r->owned[b] = self >= 0 && qk_view_owner(v, bucket_point(b)) == self;
    }
    qk_view_unref(v);
    return changed;
}

typedef struct load_ctx {
    qk_rsvc *r;
    uint64_t now;
} load_ctx;

static void on_loaded(void *arg, const qk_reminder *rm)
{
    load_ctx *c = arg;
    schedule(c->r, rm, c->now);
}

/* Read every bucket this silo owns: what is stored is fired, what is not
 * any more is dropped. A bucket that could not be read keeps what was
 * known of it (the store is down: fire from memory meanwhile). */
static void reload(qk_rsvc *r)
{
    bool loaded[QK_REMINDER_BUCKETS] = {false};
    load_ctx c = {.r = r, .now = wall_ms()};
    r->gen++;
    for (uint32_t b = 0; b < QK_REMINDER_BUCKETS; b++) {
        if (!r->owned[b])
            continue;
        quark_err rc = r->o.ops->load_bucket(r->o.store, b, on_loaded, &c);
        if (rc != QUARK_OK) {
            rs_log(r, LOG_STORE, "reading the reminders failed (they are read again in %u ms): %s",
                   r->o.refresh_ms, quark_last_error());
            break; /* the store is unreachable: the others would wait as long */
        }
        loaded[b] = true;
    }
    for (size_t i = 0; r->tab && i <= r->tmask; i++) {
        for (rent *e = r->tab[i], *next; e; e = next) {
            next = e->hnext;
            if (!r->owned[e->bucket] || (loaded[e->bucket] && e->seen != r->gen))
                tab_remove(r, e);
        }
    }
    r->next_reload_ms = qk_now_ms_coarse() + r->o.refresh_ms;
    arm_at(r);
}

static void on_check(uv_timer_t *t)
{
    qk_rsvc *r = t->data;
    if (view_changed(r) || qk_now_ms_coarse() >= r->next_reload_ms)
        reload(r);
}

/* ---- actors' requests ---- */

static void collect(void *arg, const qk_reminder *rm)
{
    rreq *q = arg;
    if (q->err != QUARK_OK)
        return;
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 8;
        quark_reminder_info *l = realloc(q->list, cap * sizeof *l);
        if (!l) {
            q->err = QUARK_ENOMEM;
            return;
        }
        q->list = l;
        q->cap = cap;
    }
    char *name = malloc(rm->name_len + 1);
    if (!name) {
        q->err = QUARK_ENOMEM;
        return;
    }
    memcpy(name, rm->name, rm->name_len);
    name[rm->name_len] = '\0';
    q->list[q->n++] = (quark_reminder_info){
        .name = name, .due_ms = rm->due_ms, .period_ms = rm->period_ms};
}

/* Give q back to its actor without touching the store: err (ECLOSED: the
 * silo stops; a request whose caller's deadline passed is not run). */
static void refuse(rreq *q, quark_err err, const char *why)
{
    q->err = err;
    snprintf(q->errmsg, sizeof q->errmsg, "%s", why);
    qk_outcome o = {.err = QUARK_OK};
    qk_op_finish(&q->oc->op, &o);
}

static void serve(qk_rsvc *r, rreq *q)
{
    quark_err rc = QUARK_OK;
    if (qk_now_ms_coarse() >= q->oc->dl.at_ms) { /* its caller was told ETIMEDOUT */
        refuse(q, QUARK_ETIMEDOUT, "the reminder store did not answer in time");
        return;
    }
    switch (q->kind) {
    case RQ_SET:
        rc = r->o.ops->upsert(r->o.store, &q->rem);
        if (rc == QUARK_OK && r->owned[qk_reminder_bucket(q->rem.key.hash)]) {
            schedule(r, &q->rem, wall_ms());
            arm_at(r);
        }
        break;
    case RQ_UNSET: {
        bool existed = false;
        rc = r->o.ops->remove(r->o.store, &q->rem.key, q->rem.name, q->rem.name_len, &existed);
        if (rc == QUARK_OK) {
            unschedule(r, &q->rem.key, q->rem.name, q->rem.name_len);
            arm_at(r);
        }
        break;
    }
    default:
        rc = r->o.ops->list(r->o.store, &q->rem.key, collect, q);
        if (rc == QUARK_OK && q->err == QUARK_ENOMEM)
            rc = qk_error(QUARK_ENOMEM, "out of memory listing reminders");
        break;
    }
    q->err = rc;
    if (rc != QUARK_OK)
        snprintf(q->errmsg, sizeof q->errmsg, "%s", quark_last_error());
    qk_outcome o = {.err = QUARK_OK};
    qk_op_finish(&q->oc->op, &o); /* q is the actor's worker's now */
}

static void on_wake(uv_async_t *h)
{
    qk_rsvc *r = h->data;
    uv_mutex_lock(&r->mu);
    rreq *q = r->q_head;
    r->q_head = r->q_tail = NULL;
    bool stopping = r->stopping;
    uv_mutex_unlock(&r->mu);
    while (q) {
        rreq *next = q->next;
        if (stopping) /* nothing waits for the store any more */
            refuse(q, QUARK_ECLOSED, "the silo is stopping: the reminder was not changed");
        else
            serve(r, q);
        q = next;
    }
    if (stopping) {
        uv_close((uv_handle_t *)&r->wake, NULL);
        uv_close((uv_handle_t *)&r->fire_t, NULL);
        uv_close((uv_handle_t *)&r->check_t, NULL);
    }
}

static void rs_thread(void *arg)
{
    qk_rsvc *r = arg;
    on_check(&r->check_t); /* read the buckets at once */
    uv_run(&r->loop, UV_RUN_DEFAULT);
}

quark_err qk_rsvc_new(quark_silo *s, const qk_rsvc_opts *o)
{
    qk_rsvc *r = calloc(1, sizeof *r);
    if (!r)
        return qk_error(QUARK_ENOMEM, "out of memory making the reminder service");
    r->silo = s;
    r->o = *o;
    r->view_self = -1;
    if (uv_loop_init(&r->loop) != 0) {
        free(r);
        return qk_error(QUARK_ENOMEM, "the reminder service's loop could not be made");
    }
    uv_mutex_init(&r->mu);
    uv_async_init(&r->loop, &r->wake, on_wake);
    uv_timer_init(&r->loop, &r->fire_t);
    uv_timer_init(&r->loop, &r->check_t);
    r->wake.data = r->fire_t.data = r->check_t.data = r;
    uv_timer_start(&r->check_t, on_check, VIEW_CHECK_MS, VIEW_CHECK_MS);
    s->reminders = r;
    return QUARK_OK;
}

quark_err qk_rsvc_run(quark_silo *s)
{
    qk_rsvc *r = s->reminders;
    if (uv_thread_create(&r->thread, rs_thread, r) != 0)
        return qk_error(QUARK_ENOMEM, "the reminder service's thread could not be started");
    r->thread_started = true;
    return QUARK_OK;
}

void qk_rsvc_stop(quark_silo *s)
{
    qk_rsvc *r = s->reminders;
    if (!r)
        return;
    uv_mutex_lock(&r->mu);
    bool was = r->stopping;
    r->stopping = true;
    uv_mutex_unlock(&r->mu);
    if (was)
        return;
    if (r->thread_started) {
        uv_async_send(&r->wake);
        uv_thread_join(&r->thread);
        return;
    }
    /* It never ran (the silo's start failed after its workers ran): answer
     * what was queued, close its handles here. */
    uv_mutex_lock(&r->mu);
    rreq *q = r->q_head;
    r->q_head = r->q_tail = NULL;
    uv_mutex_unlock(&r->mu);
    while (q) {
        rreq *next = q->next;
        refuse(q, QUARK_ECLOSED, "the silo is stopping: the reminder was not changed");
        q = next;
    }
    uv_close((uv_handle_t *)&r->wake, NULL);
    uv_close((uv_handle_t *)&r->fire_t, NULL);
    uv_close((uv_handle_t *)&r->check_t, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
}

void qk_rsvc_free(quark_silo *s)
{
    qk_rsvc *r = s->reminders;
    if (!r)
        return;
    qk_rsvc_stop(s);
    for (size_t i = 0; r->tab && i <= r->tmask; i++) {
        for (rent *e = r->tab[i], *next; e; e = next) {
            next = e->hnext;
            rent_free(e);
        }
    }
    free(r->tab);
    free(r->heap);
    uv_loop_close(&r->loop);
    uv_mutex_destroy(&r->mu);
    free(r);
    s->reminders = NULL;
}

/* ---- the actor's side (on its worker) ---- */

static void rreq_free(rreq *q)
{
    for (size_t i = 0; i < q->n; i++)
        free((void *)q->list[i].name);
    free(q->list);
    free(q);
}

/* Runs as a turn of the actor (qk_run_continuation): with the service's
 * answer, or with the deadline's error (then q's results are not read:
 * the service may still be writing them). */
static void rreq_tramp(void (*fn)(void), quark_err err, const char *errmsg,
                       const ProtobufCMessage *reply, void *arg)
{
    (void)fn;
    (void)reply;
    rreq *q = arg;
    bool ok = err == QUARK_OK;
    if (ok) {
        err = q->err;
        errmsg = err == QUARK_OK ? NULL : q->errmsg;
    }
    if (q->kind == RQ_LIST)
        q->list_fn(q->self, err, errmsg, err == QUARK_OK ? q->list : NULL,
                   err == QUARK_OK ? q->n : 0, q->arg);
    else if (q->done)
        q->done(q->self, err, errmsg, q->arg);
}

static void rreq_done(qk_op *op)
{
    qk_outcall *oc = QK_CONTAINER_OF(op, qk_outcall, op);
    rreq *q = oc->arg;
    qk_worker *w = qk_tls_worker;
    quark_actor *a = oc->caller;
    qk_heap_remove(w, &oc->dl);
    if (a)
        a->outcalls--;
    if (a && !oc->done) {
        oc->done = true;
        qk_run_continuation(w, oc, QUARK_OK, NULL, NULL);
    }
    qk_op_release(op);
    rreq_free(q);
    free(oc);
    if (a)
        qk_after_continuation(w, a);
}

static quark_err request(quark_actor *self, int kind, const char *what, const char *name,
                         uint64_t due_ms, uint64_t period_ms, quark_reminder_fn done,
                         quark_reminder_list_fn list_fn, void *arg)
{
    qk_worker *w = qk_turn_of(self);
    if (!w)
        return qk_error(QUARK_EINVAL, "%s: not called on a turn of the actor", what);
    qk_rsvc *r = w->silo->reminders;
    const qk_type_entry *te = self->type;
    if (te->reminder_method < 0)
        return qk_error(QUARK_EINVAL, "%s: actor type '%s' has no on_reminder "
                        "(quark_actor_type), so it cannot have reminders", what, te->name);
    if (!r)
        return qk_error(QUARK_ECLOSED, "%s: this silo has no reminder service (it is not "
                        "running)", what);
    size_t name_len = 0;
    if (kind != RQ_LIST) {
        name_len = name ? strlen(name) : 0;
        if (name_len == 0 || name_len > QUARK_REMINDER_NAME_MAX)
            return qk_error(QUARK_EINVAL, "%s: a reminder name is 1..%d bytes (got %zu)", what,
                            QUARK_REMINDER_NAME_MAX, name_len);
    } else if (!list_fn) {
        return qk_error(QUARK_EINVAL, "%s: fn is NULL", what);
    }
    if (kind == RQ_SET) {
        if (period_ms < r->o.min_period_ms)
            return qk_error(QUARK_EINVAL, "%s: period %llu ms of reminder '%s' is below this "
                            "silo's minimum of %u ms (reminder_min_period_ms)", what,
                            (unsigned long long)period_ms, name, r->o.min_period_ms);
        if (due_ms > DUE_MAX_MS || period_ms > DUE_MAX_MS)
            return qk_error(QUARK_EINVAL, "%s: due time or period of reminder '%s' is more "
                            "than 100 years", what, name);
    }
    size_t id_len = self->id_len;
    rreq *q = calloc(1, sizeof *q + id_len + 1 + name_len + 1);
    qk_outcall *oc = malloc(sizeof *oc + w->cur.chain_len * sizeof(qk_chain_link));
    if (!q || !oc) {
        free(q);
        free(oc);
        return qk_error(QUARK_ENOMEM, "%s: out of memory", what);
    }
    q->kind = kind;
    q->oc = oc;
    q->self = self;
    q->done = done;
    q->list_fn = list_fn;
    q->arg = arg;
    memcpy(q->buf, self->id, id_len);
    q->buf[id_len] = '\0';
    char *nm = q->buf + id_len + 1;
    if (name_len)
        memcpy(nm, name, name_len);
    nm[name_len] = '\0';
    q->rem.key = (qk_actor_key){.type = te->name, .type_len = te->name_len, .id = q->buf,
                                .id_len = id_len, .hash = self->hash};
    q->rem.name = nm;
    q->rem.name_len = name_len;
    q->rem.due_ms = kind == RQ_SET ? wall_ms() + due_ms : 0;
    q->rem.period_ms = period_ms;

    qk_op_init(&oc->op, rreq_done, w, 0, &oc->room);
    memset(&oc->dl, 0, sizeof oc->dl);
    oc->dl.kind = QK_DL_OUTCALL;
    oc->dl.at_ms = qk_worker_now_ms(w) + w->silo->opts.default_deadline_ms;
    oc->caller = self;
    oc->tramp = rreq_tramp;
    oc->fn = NULL;
    oc->arg = q;
    oc->reply_desc = NULL;
    oc->reply_md = NULL;
    oc->turn = w->cur.turn;
    oc->chain_len = w->cur.chain_len;
    oc->done = false;
    if (w->cur.chain_len)
        memcpy(oc->chain, w->cur.chain, w->cur.chain_len * sizeof(qk_chain_link));

    if (kind == RQ_SET && r->o.ops->local && r->o.view && !atomic_exchange(&r->warned_local, true))
        fprintf(stderr, "quark: reminders: this silo is in a cluster but keeps reminders in "
                "its own memory: each silo fires only what was set on it, and a reminder "
                "set or unset on another silo is not seen here. Give every silo the same "
                "shared store (quark_silo_opts.reminders, e.g. redis://HOST:PORT)\n");
    uv_mutex_lock(&r->mu);
    bool stopping = r->stopping;
    if (!stopping) {
        if (r->q_tail)
            r->q_tail->next = q;
        else
            r->q_head = q;
        r->q_tail = q;
        self->outcalls++;
        qk_heap_insert(w, &oc->dl);
    }
    uv_mutex_unlock(&r->mu);
    if (stopping) {
        free(q);
        free(oc);
        return qk_error(QUARK_ECLOSED, "%s: the silo is stopping", what);
    }
    uv_async_send(&r->wake);
    return QUARK_OK;
}

quark_err quark_actor_reminder_set(quark_actor *self, const char *name, uint64_t due_ms,
                                   uint64_t period_ms, quark_reminder_fn done, void *arg)
{
    return request(self, RQ_SET, "quark_actor_reminder_set", name, due_ms, period_ms, done,
                   NULL, arg);
}

quark_err quark_actor_reminder_unset(quark_actor *self, const char *name, quark_reminder_fn done,
                                     void *arg)
{
    return request(self, RQ_UNSET, "quark_actor_reminder_unset", name, 0, 0, done, NULL, arg);
}

quark_err quark_actor_reminder_list(quark_actor *self, quark_reminder_list_fn fn, void *arg)
{
    return request(self, RQ_LIST, "quark_actor_reminder_list", NULL, 0, 0, NULL, fn, arg);
}

/* ---- a tick, as a turn ---- */

quark_err qk_reminder_dispatch(quark_actor *self, const uint8_t *args, size_t len)
{
    Quark__ReminderTick *t = quark__decode(self, &quark__reminder_tick__descriptor, args, len);
    if (!t)
        return quark__finish(self, QUARK_EBADARGS, NULL);
    quark_reminder_tick tick = {.name = t->name, .period_ms = t->period_ms,
                                .scheduled_ms = t->scheduled_ms};
    quark_err rc = self->type->type->on_reminder(self, &tick);
    Quark__ReminderTickReply rep = QUARK__REMINDER_TICK_REPLY__INIT;
    return quark__finish(self, rc, rc == QUARK_OK ? &rep.base : NULL);
}
