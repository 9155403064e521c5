/*
 * events.c - actor event streams: publish, subscribe, deliver.
 *
 * Subscriptions to actor (type, id) live in a topic table on the worker that
 * owns that key, the same worker as the actor, so quark_actor_publish finds
 * its subscribers with one local lookup, takes no lock, and activates
 * nothing. A topic outlives activations: subscribing to an idle actor works.
 *
 * Local subscribers (an embedded client) get their callback right there.
 * Remote subscribers (a connection's, through the subscriber port of
 * ports.h) belong to their home worker: the owner sends them EVENT messages
 * and, when they leave, a SUBFREE. Both travel the same FIFO path, so a
 * subscriber is freed only after its last event arrived.
 */
#include <stdlib.h>

#include "runtime.h"

typedef struct qk_topic {
    const qk_type_entry *type;
    uint64_t hash;
    qk_sub *subs;
    uint16_t id_len;
    char id[];
} qk_topic;

/* An embedded client's subscription: the subscriber and its silo. */
typedef struct qk_esub {
    qk_sub *sub;
    quark_silo *silo;
} qk_esub;

/* ---- local subscriber lifetime ---- */

static void local_unref(qk_sub *s)
{
    if (atomic_fetch_sub(&s->refs, 1) == 1)
        free(s);
}

/* The final callback, exactly once, then the topic's reference goes. */
static void local_end(qk_sub *s, quark_err why, const char *msg)
{
    bool was = atomic_exchange(&s->ended, true);
    if (!was)
        s->fn(NULL, why, msg, s->arg);
    local_unref(s);
}

/* ---- topic table (owner worker only) ---- */

static qk_topic **topic_slot(qk_worker *w, const qk_type_entry *t, uint64_t h, const char *id,
                             size_t len)
{
    for (size_t i = h & w->topic_mask;; i = (i + 1) & w->topic_mask) {
        qk_topic *tp = w->topics[i];
        if (!tp || (tp->hash == h && tp->type == t && tp->id_len == len &&
                    memcmp(tp->id, id, len) == 0))
            return &w->topics[i];
    }
}

static qk_topic *topic_get(qk_worker *w, const qk_type_entry *t, uint64_t h, const char *id,
                           size_t len, bool create)
{
    if (!w->topics) {
        if (!create)
            return NULL;
        w->topic_mask = 15;
        w->topics = calloc(w->topic_mask + 1, sizeof *w->topics);
        if (!w->topics)
            return NULL;
    }
    qk_topic **slot = topic_slot(w, t, h, id, len);
    if (*slot || !create)
        return *slot;
    if ((w->topic_count + 1) * 2 > w->topic_mask + 1) {
        size_t ncap = (w->topic_mask + 1) * 2;
        qk_topic **ns = calloc(ncap, sizeof *ns);
        if (!ns)
            return NULL;
        for (size_t i = 0; i <= w->topic_mask; i++) {
            qk_topic *tp = w->topics[i];
            if (!tp)
                continue;
            size_t j = tp->hash & (ncap - 1);
            while (ns[j])
                j = (j + 1) & (ncap - 1);
            ns[j] = tp;
        }
        free(w->topics);
        w->topics = ns;
        w->topic_mask = ncap - 1;
        slot = topic_slot(w, t, h, id, len);
    }
    qk_topic *tp = calloc(1, sizeof *tp + len + 1);
    if (!tp)
        return NULL;
    tp->type = t;
    tp->hash = h;
    tp->id_len = (uint16_t)len;
    memcpy(tp->id, id, len);
    *slot = tp;
    w->topic_count++;
    return tp;
}

static void topic_drop_if_empty(qk_worker *w, qk_topic *tp)
{
    if (tp->subs)
        return;
    size_t i = tp->hash & w->topic_mask;
    while (w->topics[i] != tp)
        i = (i + 1) & w->topic_mask;
    for (size_t j = (i + 1) & w->topic_mask;; j = (j + 1) & w->topic_mask) {
        qk_topic *b = w->topics[j];
        if (!b)
            break;
        size_t home = b->hash & w->topic_mask;
        if (((j - home) & w->topic_mask) >= ((j - i) & w->topic_mask)) {
            w->topics[i] = b;
            i = j;
        }
    }
    w->topics[i] = NULL;
    w->topic_count--;
    free(tp);
}

/* ---- publishing ---- */

static void deliver_local(qk_worker *w, qk_sub *s, const quark_event *ev)
{
    /* Outside any turn, like other callbacks. */
    quark_actor *act = w->cur.act;
    qk_msg *cur = w->cur.msg;
    w->cur.act = NULL;
    w->cur.msg = NULL;
    s->fn(ev, QUARK_OK, NULL, s->arg);
    w->cur.act = act;
    w->cur.msg = cur;
}

quark_err quark_actor_publish(quark_actor *self, const ProtobufCMessage *event)
{
    qk_worker *w = qk_tls_worker;
    if (!self || !event || !w || w->cur.act != self)
        return qk_error(QUARK_EINVAL, "quark_actor_publish: call it from a turn of the actor, "
                        "with an event message");
    self->event_seq++;
    qk_topic *tp = topic_get(w, self->type, self->hash, self->id, self->id_len, false);
    if (!tp)
        return QUARK_OK; /* nobody listens */
    size_t plen = protobuf_c_message_get_packed_size(event);
    uint8_t small[256];
    uint8_t *payload = plen <= sizeof small ? small : malloc(plen);
    if (!payload)
        return qk_error(QUARK_ENOMEM, "out of memory publishing an event");
    protobuf_c_message_pack(event, payload);
    quark_event ev = {.actor_type = self->type->name, .actor_id = self->id,
                      .event_type = event->descriptor->name, .payload = payload,
                      .payload_len = plen, .sequence = self->event_seq};
    for (qk_sub *s = tp->subs; s; s = s->next) {
        if (!s->ops) {
            deliver_local(w, s, &ev);
            continue;
        }
        /* A remote subscriber gets the event on its home worker: the
         * payload and the actor id travel in the message. */
        qk_msg *m = qk_msg_new(plen + self->id_len + 1u);
        if (!m)
            continue; /* a subscriber misses an event under OOM; its sequence shows the gap */
        m->node.kind = QK_MSG_EVENT;
        m->r.ev.sub = s;
        m->r.ev.event_type = event->descriptor->name;
        m->type = self->type;
        m->turn = self->event_seq;
        m->args = m->data;
        m->args_len = (uint32_t)plen;
        memcpy(m->args, payload, plen);
        m->id = (char *)m->data + plen;
        memcpy(m->id, self->id, self->id_len + 1u);
        m->id_len = self->id_len;
        qk_send(s->home, m);
    }
    if (payload != small)
        free(payload);
    return QUARK_OK;
}

/* ---- the owner's side ---- */

static void add_sub(qk_worker *w, qk_sub *s)
{
    qk_topic *tp = topic_get(w, s->type, s->hash, s->actor_id, s->id_len, true);
    if (!tp) {
        if (!s->ops)
            local_end(s, QUARK_ENOMEM, "out of memory subscribing");
        return;
    }
    s->next = tp->subs;
    tp->subs = s;
}

static void remove_sub(qk_worker *w, qk_sub *s)
{
    qk_topic *tp = topic_get(w, s->type, s->hash, s->actor_id, s->id_len, false);
    bool member = false;
    if (tp) {
        for (qk_sub **pp = &tp->subs; *pp; pp = &(*pp)->next) {
            if (*pp == s) {
                *pp = s->next;
                member = true;
                break;
            }
        }
        topic_drop_if_empty(w, tp);
    }
    if (s->ops) {
        qk_msg *m = qk_msg_new(0);
        if (!m)
            return; /* leaks one subscriber record under OOM, never a use after free */
        m->node.kind = QK_MSG_SUBFREE;
        m->r.ev.sub = s;
        qk_send(s->home, m);
    } else {
        if (member)
            local_end(s, QUARK_ECLOSED, "unsubscribed"); /* the topic's reference */
        local_unref(s);                                  /* this UNSUB's reference */
    }
}

void qk_events_deliver(qk_worker *w, qk_msg *m)
{
    qk_sub *s = m->r.ev.sub;
    switch (m->node.kind) {
    case QK_MSG_SUB:
        add_sub(w, s);
        break;
    case QK_MSG_UNSUB:
        remove_sub(w, s);
        break;
    case QK_MSG_EVENT: {
        quark_event ev = {.actor_type = m->type->name, .actor_id = m->id,
                          .event_type = m->r.ev.event_type, .payload = m->args,
                          .payload_len = m->args_len, .sequence = m->turn};
        s->ops->event(s, &ev);
        break;
    }
    case QK_MSG_SUBFREE:
        s->ops->ended(s);
        break;
    default:
        break;
    }
    qk_msg_free(m);
}

void qk_events_stop(qk_worker *w)
{
    for (size_t i = 0; w->topics && i <= w->topic_mask; i++) {
        qk_topic *tp = w->topics[i];
        if (!tp)
            continue;
        while (tp->subs) {
            qk_sub *s = tp->subs;
            tp->subs = s->next;
            if (s->ops) {
                qk_msg *m = qk_msg_new(0);
                if (m) {
                    m->node.kind = QK_MSG_SUBFREE;
                    m->r.ev.sub = s;
                    qk_send(s->home, m);
                }
            } else {
                local_end(s, QUARK_ECLOSED, "the silo is stopping");
            }
        }
        free(tp);
        w->topics[i] = NULL;
    }
    free(w->topics);
    w->topics = NULL;
    w->topic_mask = w->topic_count = 0;
}

/* ---- subscribing ---- */

static quark_err make_sub(quark_silo *silo, const char *type, size_t type_len, const char *id,
                          size_t id_len, qk_sub **out, qk_worker **owner)
{
    const qk_type_entry *e = qk_registry_lookup(type, type_len);
    if (!e)
        return qk_error(QUARK_ENOTYPE, "no actor registered for type name '%.*s'",
                        (int)(type_len > 255 ? 255 : type_len), type);
    if (id_len == 0 || id_len > QUARK_ID_MAX || memchr(id, '\0', id_len))
        return qk_error(QUARK_EINVAL, "actor id must be 1..%d bytes without NUL (got %zu)",
                        QUARK_ID_MAX, id_len);
    qk_sub *s = calloc(1, sizeof *s + id_len + 1);
    if (!s)
        return qk_error(QUARK_ENOMEM, "out of memory subscribing");
    s->type = e;
    s->hash = qk_key_hash(e->name_hash, id, id_len);
    s->id_len = (uint16_t)id_len;
    memcpy(s->actor_id, id, id_len);
    *out = s;
    *owner = &silo->workers[qk_worker_of(silo, s->hash)];
    return QUARK_OK;
}

static quark_err post(qk_worker *owner, qk_sub *s, uint8_t kind)
{
    qk_msg *m = qk_msg_new(0);
    if (!m)
        return qk_error(QUARK_ENOMEM, "out of memory subscribing");
    m->node.kind = kind;
    m->r.ev.sub = s;
    qk_send(owner, m);
    return QUARK_OK;
}

quark_err qk_subscribe_remote(qk_worker *w, const qk_sub_ops *ops, void *ctx, uint64_t sub_id,
                              const char *type, size_t type_len, const char *id, size_t id_len,
                              qk_sub **out)
{
    qk_worker *owner = NULL;
    qk_sub *s = NULL;
    quark_err rc = make_sub(w->silo, type, type_len, id, id_len, &s, &owner);
    if (rc != QUARK_OK)
        return rc;
    s->ops = ops;
    s->home = w;
    s->ctx = ctx;
    s->id = sub_id;
    if ((rc = post(owner, s, QK_MSG_SUB)) != QUARK_OK) {
        free(s);
        return rc;
    }
    *out = s;
    return QUARK_OK;
}

void qk_unsubscribe_remote(qk_sub *s)
{
    if (s->removed)
        return;
    s->removed = true;
    quark_silo *silo = s->home->silo;
    post(&silo->workers[qk_worker_of(silo, s->hash)], s, QK_MSG_UNSUB);
}

void qk_sub_free(qk_sub *s)
{
    free(s);
}

quark_err qk_embedded_subscribe(quark_silo *silo, const char *type_name, const char *id,
                                quark_event_fn fn, void *arg, void **out)
{
    if (atomic_load(&silo->state) != 1)
        return qk_error(QUARK_ECLOSED, "the silo is not running");
    qk_esub *h = calloc(1, sizeof *h);
    if (!h)
        return qk_error(QUARK_ENOMEM, "out of memory subscribing");
    qk_worker *owner = NULL;
    quark_err rc = make_sub(silo, type_name, strlen(type_name), id, strlen(id), &h->sub, &owner);
    if (rc == QUARK_OK) {
        h->sub->fn = fn;
        h->sub->arg = arg;
        atomic_init(&h->sub->refs, 2); /* the handle and the topic */
        atomic_init(&h->sub->ended, false);
        h->silo = silo;
        rc = post(owner, h->sub, QK_MSG_SUB);
        if (rc != QUARK_OK)
            free(h->sub);
    }
    if (rc != QUARK_OK) {
        free(h);
        return rc;
    }
    *out = h;
    return QUARK_OK;
}

void qk_embedded_unsubscribe(void *sub)
{
    qk_esub *h = sub;
    qk_sub *s = h->sub;
    /* Once ended (unsubscribed, or the silo stopped) the silo may be gone:
     * touch nothing but the subscriber's own reference. */
    if (!atomic_load(&s->ended)) {
        atomic_fetch_add(&s->refs, 1); /* for the UNSUB in flight */
        if (post(&h->silo->workers[qk_worker_of(h->silo, s->hash)], s, QK_MSG_UNSUB) != QUARK_OK)
            local_unref(s);
    }
    local_unref(s);
    free(h);
}
