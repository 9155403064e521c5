/*
 * state.c - persistent actor state: load before the first turn, write at
 * the end of the batch, reply only once stored (docs/storage.md).
 *
 * The rules, for one activation of a type with persistent state:
 *
 *   1. Loaded first. Activating reads the record (qk_state_load); calls
 *      wait in the mailbox until it is there. A failed read fails them and
 *      activates nothing.
 *
 *   2. Changes are written at the end of the batch. A turn that changes the
 *      state marks it (quark_actor_state_changed/_set/_clear) and lists it
 *      on its worker. qk_state_flush, at the end of the worker's batch,
 *      starts one write per listed state (its encoded message, conditional
 *      on the etag it holds) and then asks the storage to commit them all
 *      at once: many turns and many activations, one commit.
 *
 *   3. Write-before-ack. A reply whose turn ran while the state had a
 *      change not yet stored (made by this turn or an earlier one) is held,
 *      tagged with the write that will store that change (wseq + 1 while
 *      the state is dirty, wseq while only a write is in flight), and sent
 *      when that write is stored (dseq reaches it), in order. A reply with
 *      nothing pending goes at once; so does one of a @quark.write_behind
 *      method.
 *
 *   4. One write in flight per activation. Turns go on while it is (rule 3
 *      holds their replies); changes they make are written by the next
 *      write, started when this one is stored, with the new etag.
 *
 *   5. A failed write drops the state. Its error (QUARK_ECONFLICT: someone
 *      else wrote the record; QUARK_ESTORAGE: storage failed) goes to every
 *      held reply; the activation takes no more calls and is destroyed as
 *      soon as nothing of it runs; the calls that waited are delivered
 *      again, to a new activation that reads the record afresh.
 *
 *   6. An activation goes only when quiet (qk_state_quiet): nothing in
 *      flight, nothing to write, nothing held. A silo that stops writes what
 *      is pending first (worker.c).
 *
 * A read or write in flight is a qk_state_req, taken from a per-worker free
 * list when it starts (a state at rest holds none: an idle activation costs
 * only its qk_pstate and its decoded message).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "runtime/runtime.h"
#include "runtime/state.h"

/* One allocation of a decoded state (protobuf-c unpack, state_alloc). */
typedef struct qk_stblock {
    struct qk_stblock *next, *prev;
    _Alignas(16) unsigned char data[];
} qk_stblock;

typedef struct qk_state_req {
    qk_op op;
    qk_op_room room;
    struct qk_state_req *next_free;
    quark_actor *a;                 /* NULL once its activation is gone (forced stop) */
    qk_worker *w;
    qk_state_rec rec;
    uint8_t *wbuf;                  /* the write's bytes (NULL: a read or a clear) */
    uint32_t seq;                   /* the write's sequence number; 0 for a read */
} qk_state_req;

/* ---- decoded state memory ---- */

/* Where an allocation goes: the list of blocks, and once the top level of
 * the message, the room for it in the activation. */
typedef struct st_alloc_ctx {
    qk_stblock **head;
    void *top;                      /* NULL: none (or taken) */
    void *room;                     /* the room itself, never freed */
    size_t top_size;
} st_alloc_ctx;

static void *block_alloc(qk_stblock **head, size_t n)
{
    qk_stblock *b = malloc(sizeof *b + (n ? n : 1));
    if (!b)
        return NULL;
    b->next = *head;
    b->prev = NULL;
    if (*head)
        (*head)->prev = b;
    *head = b;
    return b->data;
}

static void *st_alloc(void *ad, size_t n)
{
    st_alloc_ctx *c = ad;
    if (c->top && n == c->top_size) { /* protobuf-c allocates the top level first */
        void *p = c->top;
        c->top = NULL;
        return p;
    }
    return block_alloc(c->head, n);
}

/* protobuf-c frees its scratch memory (the slabs of members it scanned)
 * before unpack returns, and what it built when a decode fails: give it
 * back now, or a state with many repeated elements would keep it. */
static void st_free(void *ad, void *p)
{
    st_alloc_ctx *c = ad;
    if (!p || p == c->room)
        return;
    qk_stblock *b = (qk_stblock *)((char *)p - offsetof(qk_stblock, data));
    if (b->prev)
        b->prev->next = b->next;
    else
        *c->head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    free(b);
}

static void blocks_free(qk_stblock *b)
{
    while (b) {
        qk_stblock *n = b->next;
        free(b);
        b = n;
    }
}

/* The room for the decoded message's top level in a's allocation. */
static void *top_room(quark_actor *a)
{
    return (char *)a + qk_actor_state_off(a->id_len) + QK_ALIGN_UP(a->type->type->state_size, 16);
}

size_t qk_state_size(const quark_actor_type *t)
{
    return sizeof(qk_pstate) + QK_ALIGN_UP(t->persistent->sizeof_message, 16);
}

/* A message of the type's descriptor decoded from data[0..len) (len 0: the
 * default message), its top level in `top` (NULL: a block too), the rest
 * in fresh blocks; NULL if it does not decode or no memory. */
static ProtobufCMessage *decode_state(const ProtobufCMessageDescriptor *d, const uint8_t *data,
                                      size_t len, void *top, qk_stblock **blocks)
{
    *blocks = NULL;
    st_alloc_ctx c = {.head = blocks, .top = top, .room = top, .top_size = d->sizeof_message};
    ProtobufCAllocator al = {.alloc = st_alloc, .free = st_free, .allocator_data = &c};
    ProtobufCMessage *m;
    if (len == 0) {
        m = st_alloc(&c, d->sizeof_message);
        if (m)
            d->message_init(m);
    } else {
        m = protobuf_c_message_unpack(d, &al, len, data);
    }
    if (!m) {
        blocks_free(*blocks);
        *blocks = NULL;
    }
    return m;
}

/* ---- requests ---- */

static qk_state_req *req_get(qk_worker *w, quark_actor *a, qk_op_fn done)
{
    qk_state_req *r = w->st_free;
    if (r)
        w->st_free = r->next_free;
    else if (!(r = malloc(sizeof *r)))
        return NULL;
    qk_op_init(&r->op, done, w, 0, &r->room);
    r->a = a;
    r->w = w;
    r->wbuf = NULL;
    r->seq = 0;
    r->rec.data = NULL;
    r->rec.len = 0;
    memcpy(r->rec.etag, a->ps->etag, sizeof r->rec.etag);
    atomic_fetch_add_explicit(&w->st_busy, 1, memory_order_relaxed);
    return r;
}

static void req_put(qk_worker *w, qk_state_req *r)
{
    free(r->wbuf);
    r->wbuf = NULL;
    atomic_fetch_sub_explicit(&w->st_busy, 1, memory_order_release);
    r->next_free = w->st_free;
    w->st_free = r;
}

void qk_state_worker_free(qk_worker *w)
{
    while (w->st_free) {
        qk_state_req *r = w->st_free;
        w->st_free = r->next_free;
        free(r);
    }
}

static qk_actor_key key_of(const quark_actor *a)
{
    qk_actor_key k = {.type = a->type->name, .type_len = a->type->name_len,
                      .id = a->id, .id_len = a->id_len, .hash = a->hash};
    return k;
}

/* ---- loading (rule 1) ---- */

/* The read's outcome: install the state, or say why not. */
static quark_err loaded(quark_actor *a, const qk_outcome *o, const char *etag, char *why,
                        size_t cap)
{
    qk_pstate *ps = a->ps;
    const ProtobufCMessageDescriptor *d = a->type->type->persistent;
    if (o->err != QUARK_OK) {
        snprintf(why, cap, "%s", qk_outcome_text(o));
        return o->err;
    }
    qk_stblock *blocks;
    ProtobufCMessage *m = decode_state(d, o->data, o->len, top_room(a), &blocks);
    if (!m) {
        snprintf(why, cap, "the stored state of %s '%s' (%zu bytes, etag %s) does not decode "
                 "as %s (or no memory): it was written by another program or version",
                 a->type->name, a->id, o->len, etag, d->name);
        return QUARK_ESTORAGE;
    }
    ps->msg = m;
    ps->blocks = blocks;
    memcpy(ps->etag, etag, QK_ETAG_MAX);
    ps->etag[QK_ETAG_MAX - 1] = '\0';
    return QUARK_OK;
}

static void load_done(qk_op *op)
{
    qk_state_req *r = QK_CONTAINER_OF(op, qk_state_req, op);
    qk_worker *w = r->w;
    quark_actor *a = r->a;
    if (a) {
        char why[400];
        a->ps->req = NULL;
        a->ps->flags &= (uint8_t)~QK_PS_LOADING;
        quark_err rc = loaded(a, op->out, r->rec.etag, why, sizeof why);
        qk_activation_loaded(w, a, rc, why);
    }
    qk_op_release(op);
    req_put(w, r);
}

quark_err qk_state_load(qk_worker *w, quark_actor *a, char *why, size_t cap)
{
    const quark_silo *s = w->silo;
    if (!s->storage) {
        snprintf(why, cap, "%s has persistent state but this silo has no storage "
                 "(set quark_silo_opts.storage)", a->type->name);
        return QUARK_ESTORAGE;
    }
    qk_state_req *r = req_get(w, a, load_done);
    if (!r) {
        snprintf(why, cap, "out of memory reading the state of %s '%s'", a->type->name, a->id);
        return QUARK_ENOMEM;
    }
    r->rec.etag[0] = '\0';
    qk_actor_key k = key_of(a);
    quark_err rc = s->storage->read(w->st_pw, &k, &r->rec, &r->op);
    if (rc == QUARK_PENDING) {
        a->ps->req = r;
        a->ps->flags |= QK_PS_LOADING;
        return QUARK_PENDING;
    }
    qk_outcome o = {.err = rc, .data = r->rec.data, .len = r->rec.len,
                    .errmsg = rc != QUARK_OK ? quark_last_error() : NULL};
    rc = loaded(a, &o, r->rec.etag, why, cap);
    req_put(w, r);
    return rc;
}

/* ---- holding and releasing replies (rule 3) ---- */

bool qk_state_answer(qk_worker *w, quark_actor *a, qk_msg *m, const qk_outcome *o)
{
    qk_pstate *ps = a->ps;
    const quark_method_desc *md = qk_msg_method(m);
    if (!(ps->flags & QK_PS_DIRTY || ps->req) || (md && (md->flags & QUARK_METHOD_WRITE_BEHIND))) {
        if ((ps->flags & QK_PS_FAILED) && o->err == QUARK_OK)
            qk_answer_error(w, m, QUARK_ESTORAGE, "the actor's state could not be stored "
                            "(see the replies before this one); this reply depended on it");
        else
            qk_answer(w, m, o);
        return false;
    }
    qk_held *h = malloc(sizeof *h);
    if (!h) {
        qk_answer_error(w, m, QUARK_ENOMEM, "out of memory holding a reply until the actor's "
                        "state is stored");
        return false;
    }
    h->heap = NULL;
    qk_outcome_copy(&h->o, o, h->space, sizeof h->space, &h->heap);
    h->m = m;
    h->next = NULL;
    h->seq = (ps->flags & QK_PS_DIRTY) ? (uint16_t)(ps->wseq + 1) : ps->wseq;
    if (ps->held) { /* the ring: held is the last, held->next the first */
        h->next = ps->held->next;
        ps->held->next = h;
    } else {
        h->next = h;
    }
    ps->held = h;
    m->flags |= QK_MF_HELD;
    return true;
}

static void held_free(qk_held *h)
{
    qk_msg_free(h->m);
    free(h->heap);
    free(h);
}

/* Take the first held reply off the ring. */
static qk_held *held_pop(qk_pstate *ps)
{
    qk_held *first = ps->held->next;
    if (first == ps->held)
        ps->held = NULL;
    else
        ps->held->next = first->next;
    return first;
}

/* Send the held replies whose write is stored. */
static void release(qk_worker *w, qk_pstate *ps)
{
    while (ps->held && (int16_t)(ps->dseq - ps->held->next->seq) >= 0) {
        qk_held *h = held_pop(ps);
        qk_answer(w, h->m, &h->o);
        held_free(h);
    }
}

/* Fail every held reply with err. */
static void fail_held(qk_worker *w, qk_pstate *ps, quark_err err, const char *text)
{
    while (ps->held) {
        qk_held *h = held_pop(ps);
        qk_answer_error(w, h->m, err, text);
        held_free(h);
    }
}

/* ---- writing (rules 2, 4, 5) ---- */

/* st_busy counts the requests in flight and the states listed to write: a
 * silo that stops waits until it is 0 on every worker. */
static void list_dirty(qk_worker *w, qk_pstate *ps)
{
    if (ps->flags & QK_PS_LISTED)
        return;
    atomic_fetch_add_explicit(&w->st_busy, 1, memory_order_relaxed);
    ps->flags |= QK_PS_LISTED;
    ps->dirty_next = w->st_dirty;
    w->st_dirty = ps;
}

/* The write of seq ended with o (etag: the new one on success). */
static void written(qk_worker *w, quark_actor *a, uint16_t seq, const qk_outcome *o,
                    const char *etag)
{
    qk_pstate *ps = a->ps;
    ps->req = NULL;
    if (o->err == QUARK_OK) {
        memcpy(ps->etag, etag, QK_ETAG_MAX);
        ps->etag[QK_ETAG_MAX - 1] = '\0';
        ps->dseq = seq;
        release(w, ps);
        if (ps->flags & QK_PS_DIRTY)
            list_dirty(w, ps); /* changed meanwhile: written at the end of this batch */
    } else {
        char text[600];
        snprintf(text, sizeof text, "the state of %s '%s' was not stored: %s; the activation "
                 "is deactivated without it (the next call reloads the stored state)",
                 a->type->name, a->id, qk_outcome_text(o));
        ps->flags |= QK_PS_FAILED;
        ps->flags &= (uint8_t)~QK_PS_DIRTY;
        fail_held(w, ps, o->err, text);
    }
    qk_ready(w, a); /* it may take its next call, or go (asked, failed) */
}

static void write_done(qk_op *op)
{
    qk_state_req *r = QK_CONTAINER_OF(op, qk_state_req, op);
    qk_worker *w = r->w;
    if (r->a)
        written(w, r->a, (uint16_t)r->seq, op->out, r->rec.etag);
    qk_op_release(op);
    req_put(w, r);
}

/* Start the write of a's state; false if it must wait for a later batch. */
static bool start_write(qk_worker *w, quark_actor *a)
{
    qk_pstate *ps = a->ps;
    const quark_silo *s = w->silo;
    qk_state_req *r = req_get(w, a, write_done);
    if (!r)
        return false;
    size_t len = 0;
    if (!(ps->flags & QK_PS_CLEARED)) {
        len = protobuf_c_message_get_packed_size(ps->msg);
        if (!(r->wbuf = malloc(len ? len : 1))) {
            req_put(w, r);
            return false;
        }
        protobuf_c_message_pack(ps->msg, r->wbuf);
    }
    r->seq = ++ps->wseq;
    ps->flags &= (uint8_t)~(QK_PS_DIRTY | QK_PS_CLEARED);
    ps->req = r;
    qk_actor_key k = key_of(a);
    const uint8_t *data = r->wbuf; /* NULL: a clear */
    quark_err rc = s->storage->write(w->st_pw, &k, data, len, &r->rec, &r->op);
    if (rc != QUARK_PENDING) {
        qk_outcome o = qk_outcome_error(rc, rc != QUARK_OK ? quark_last_error() : NULL);
        char etag[QK_ETAG_MAX];
        memcpy(etag, r->rec.etag, sizeof etag);
        uint16_t seq = (uint16_t)r->seq;
        req_put(w, r);
        written(w, a, seq, &o, etag);
    }
    return true;
}

void qk_state_flush(qk_worker *w)
{
    qk_pstate *list = w->st_dirty;
    w->st_dirty = NULL;
    bool started = false;
    while (list) {
        qk_pstate *ps = list;
        list = ps->dirty_next;
        ps->flags &= (uint8_t)~QK_PS_LISTED;
        if ((ps->flags & QK_PS_DIRTY) && !(ps->flags & QK_PS_FAILED) && !ps->req) {
            if (start_write(w, qk_pstate_actor(ps))) {
                started = true;
            } else {
                list_dirty(w, ps); /* no memory now: the next batch tries again */
            }
        }
        /* A state whose write is in flight is listed again when that write
         * is stored. What was started or listed again counted before this
         * leaves st_busy: it never reads 0 while something is pending. */
        atomic_fetch_sub_explicit(&w->st_busy, 1, memory_order_release);
    }
    if (started)
        w->silo->storage->flush(w->st_pw);
}

/* ---- destroying ---- */

void qk_state_destroy(qk_worker *w, quark_actor *a, quark_err err, const char *text)
{
    qk_pstate *ps = a->ps;
    if (!ps)
        return;
    fail_held(w, ps, err, text);
    if (ps->req)
        ps->req->a = NULL; /* a forced stop: the op completes into nothing */
    if (ps->flags & QK_PS_LISTED) {
        qk_pstate **pp = &w->st_dirty;
        while (*pp != ps)
            pp = &(*pp)->dirty_next;
        *pp = ps->dirty_next;
        ps->flags &= (uint8_t)~QK_PS_LISTED;
        atomic_fetch_sub_explicit(&w->st_busy, 1, memory_order_release);
    }
    blocks_free(ps->blocks);
    ps->blocks = NULL;
    ps->msg = NULL;
}

/* ---- the actor API (quark/actor.h) ---- */

ProtobufCMessage *quark_actor_persistent(quark_actor *self)
{
    return self && self->ps ? self->ps->msg : NULL;
}

static void mark_changed(qk_worker *w, qk_pstate *ps, bool cleared)
{
    if (ps->flags & QK_PS_FAILED)
        return; /* dropped already: nothing of it is stored any more */
    ps->flags |= QK_PS_DIRTY;
    if (cleared)
        ps->flags |= QK_PS_CLEARED;
    else
        ps->flags &= (uint8_t)~QK_PS_CLEARED;
    list_dirty(w, ps);
}

void quark_actor_state_changed(quark_actor *self)
{
    qk_worker *w = qk_turn_of(self);
    if (w && self->ps)
        mark_changed(w, self->ps, false);
}

/* Replace the decoded state with data[0..len) decoded afresh: into new
 * blocks (the old message is alive until then), its top level copied into
 * the activation's room after. */
static quark_err replace(quark_actor *a, const uint8_t *data, size_t len)
{
    qk_pstate *ps = a->ps;
    const ProtobufCMessageDescriptor *d = a->type->type->persistent;
    qk_stblock *blocks;
    ProtobufCMessage *m = decode_state(d, data, len, NULL, &blocks);
    if (!m)
        return qk_error(QUARK_ENOMEM, "out of memory replacing the state of %s '%s'",
                        a->type->name, a->id);
    memcpy(top_room(a), m, d->sizeof_message);
    blocks_free(ps->blocks);
    ps->blocks = blocks;
    ps->msg = top_room(a);
    return QUARK_OK;
}

quark_err quark_actor_state_set(quark_actor *self, const ProtobufCMessage *msg)
{
    qk_worker *w = qk_turn_of(self);
    if (!w)
        return qk_error(QUARK_EINVAL, "quark_actor_state_set: call it from a turn of the actor");
    if (!self->ps)
        return qk_error(QUARK_EINVAL, "quark_actor_state_set: %s has no persistent state "
                        "(set .persistent in its QUARK_ACTOR_TYPE)", self->type->name);
    const ProtobufCMessageDescriptor *d = self->type->type->persistent;
    if (!msg || msg->descriptor != d)
        return qk_error(QUARK_EINVAL, "quark_actor_state_set: %s's persistent state is a %s, "
                        "not %s", self->type->name, d->name,
                        msg ? msg->descriptor->name : "NULL");
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = qk_arena_alloc(&w->arena, len ? len : 1);
    if (!buf)
        return qk_error(QUARK_ENOMEM, "out of memory copying the state of %s '%s'",
                        self->type->name, self->id);
    protobuf_c_message_pack(msg, buf);
    quark_err rc = replace(self, buf, len);
    if (rc == QUARK_OK)
        mark_changed(w, self->ps, false);
    return rc;
}

void quark_actor_state_clear(quark_actor *self)
{
    qk_worker *w = qk_turn_of(self);
    if (!w || !self->ps)
        return;
    if (replace(self, NULL, 0) == QUARK_OK)
        mark_changed(w, self->ps, true);
}

void *quark_actor_state_alloc(quark_actor *self, size_t size)
{
    if (!self || !self->ps)
        return NULL;
    return block_alloc(&self->ps->blocks, size);
}

const char *quark_actor_state_etag(const quark_actor *self)
{
    return self && self->ps ? self->ps->etag : "";
}
