/*
 * probe_actor.c - the Probe test actor: it checks the runtime's guarantees
 * from the inside (overlapping turns, read-only interleaving, call chains,
 * timers, hooks) and reports what it saw in its replies.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "probe_actor.h"

atomic_long probe_activations;
atomic_long probe_deactivations;

struct probe {
    int work_active, work_max;
    int peek_active, peek_max;
    int violations;
    int64_t ticks, stop_after;
    quark_timer *timer;
};

struct pending {
    quark_deferred *call;
    int64_t tag;
    int read_only;
};

static void work_done(quark_actor *self, void *arg)
{
    struct probe *st = quark_actor_state(self);
    struct pending *p = arg;
    Quark__Test__WorkReply rep = QUARK__TEST__WORK_REPLY__INIT;
    rep.tag = p->tag;
    rep.seen = st->violations;
    if (p->read_only) {
        st->peek_active--;
        rep.max_overlap = st->peek_max;
    } else {
        st->work_active--;
        rep.max_overlap = st->work_max;
    }
    quark_reply(p->call, &rep.base);
    free(p);
}

static quark_err defer_for(quark_actor *self, const Quark__Test__WorkRequest *req, int read_only)
{
    struct pending *p = malloc(sizeof *p);
    if (!p)
        return QUARK_ENOMEM;
    p->call = quark_actor_defer(self);
    p->tag = req->tag;
    p->read_only = read_only;
    quark_err rc = quark_actor_timer_start(self, req->delay_ms > 0 ? (uint64_t)req->delay_ms : 1,
                                           0, work_done, p, NULL);
    if (rc != QUARK_OK) {
        quark_reply_error(p->call, rc, "timer: %s", quark_last_error());
        free(p);
    }
    return QUARK_PENDING;
}

static quark_err probe_work(quark_actor *self, const Quark__Test__WorkRequest *req,
                            Quark__Test__WorkReply *reply)
{
    (void)reply;
    struct probe *st = quark_actor_state(self);
    if (st->work_active || st->peek_active)
        st->violations++;
    if (++st->work_active > st->work_max)
        st->work_max = st->work_active;
    return defer_for(self, req, 0);
}

static quark_err probe_peek(quark_actor *self, const Quark__Test__WorkRequest *req,
                            Quark__Test__WorkReply *reply)
{
    (void)reply;
    struct probe *st = quark_actor_state(self);
    if (st->work_active)
        st->violations++;
    if (++st->peek_active > st->peek_max)
        st->peek_max = st->peek_active;
    return defer_for(self, req, 1);
}

struct relay {
    quark_deferred *call;
    quark_actor *self;
};

static void relay_done(quark_err err, const char *errmsg, const Quark__Test__RelayReply *r,
                       void *arg)
{
    struct relay *rl = arg;
    if (err != QUARK_OK) {
        quark_reply_error(rl->call, err, "%s", errmsg);
    } else {
        Quark__Test__RelayReply rep = QUARK__TEST__RELAY_REPLY__INIT;
        rep.n_visited = r->n_visited + 1;
        rep.visited = quark_actor_alloc(rl->self, rep.n_visited * sizeof(char *));
        for (size_t i = 0; i < r->n_visited; i++)
            rep.visited[i] = r->visited[i];
        rep.visited[r->n_visited] = (char *)quark_actor_id(rl->self);
        quark_reply(rl->call, &rep.base);
    }
    free(rl);
}

static quark_err probe_relay(quark_actor *self, const Quark__Test__RelayRequest *req,
                             Quark__Test__RelayReply *reply)
{
    if (req->n_path == 0) {
        reply->n_visited = 1;
        reply->visited = quark_actor_alloc(self, sizeof(char *));
        reply->visited[0] = (char *)quark_actor_id(self);
        return QUARK_OK;
    }
    quark_ref *next;
    quark_err rc = quark_test_Probe_ref(quark_actor_client(self), req->path[0], &next);
    if (rc != QUARK_OK)
        return quark_actor_fail(self, rc, "%s", quark_last_error());
    Quark__Test__RelayRequest fwd = QUARK__TEST__RELAY_REQUEST__INIT;
    fwd.n_path = req->n_path - 1;
    fwd.path = req->path + 1;
    struct relay *rl = malloc(sizeof *rl);
    rl->self = self;
    rl->call = quark_actor_defer(self);
    rc = quark_test_Probe_Relay_async(next, &fwd, relay_done, rl);
    quark_ref_free(next);
    if (rc != QUARK_OK) {
        quark_reply_error(rl->call, rc, "%s", quark_last_error());
        free(rl);
    }
    return QUARK_PENDING;
}

static void on_tick(quark_actor *self, void *arg)
{
    (void)arg;
    struct probe *st = quark_actor_state(self);
    st->ticks++;
    if (st->stop_after && st->ticks >= st->stop_after) {
        quark_timer_stop(st->timer);
        st->timer = NULL;
    }
}

static quark_err probe_start_timer(quark_actor *self, const Quark__Test__TimerRequest *req,
                                   Quark__Test__Count *reply)
{
    struct probe *st = quark_actor_state(self);
    st->ticks = 0;
    st->stop_after = req->stop_after;
    quark_err rc = quark_actor_timer_start(self, (uint64_t)req->due_ms, (uint64_t)req->period_ms,
                                           on_tick, NULL, req->period_ms ? &st->timer : NULL);
    reply->n = st->ticks;
    return rc;
}

static quark_err probe_ticks(quark_actor *self, const Quark__Test__Empty *req,
                             Quark__Test__Count *reply)
{
    (void)req;
    reply->n = ((struct probe *)quark_actor_state(self))->ticks;
    return QUARK_OK;
}

static quark_err probe_fail(quark_actor *self, const Quark__Test__FailRequest *req,
                            Quark__Test__Empty *reply)
{
    (void)reply;
    return quark_actor_fail(self, QUARK_EACTOR, "%s", req->message);
}

static quark_err probe_leave(quark_actor *self, const Quark__Test__Empty *req,
                             Quark__Test__Empty *reply)
{
    (void)req;
    (void)reply;
    quark_actor_deactivate(self);
    return QUARK_OK;
}

static quark_err probe_block(quark_actor *self, const Quark__Test__WorkRequest *req,
                             Quark__Test__Empty *reply)
{
    (void)self;
    (void)reply;
    usleep((useconds_t)req->delay_ms * 1000u);
    return QUARK_OK;
}

static quark_err probe_never(quark_actor *self, const Quark__Test__Empty *req,
                             Quark__Test__Empty *reply)
{
    (void)req;
    (void)reply;
    quark_actor_defer(self);
    return QUARK_PENDING;
}

static void failcall_done(quark_err err, const char *errmsg, const Quark__Test__Count *reply,
                          void *arg)
{
    (void)err;
    (void)errmsg;
    (void)reply;
    (void)arg; /* never runs: its caller is gone (the activation failed) */
}

static quark_err probe_activate(quark_actor *self)
{
    atomic_fetch_add(&probe_activations, 1);
    if (strncmp(quark_actor_id(self), "failcall-", 9) == 0) {
        /* Calls out, asks to be deactivated, then fails: nothing of it may
         * outlive it (its outcall's answer, its place on the ready list). */
        quark_ref *other;
        Quark__Test__Empty e = QUARK__TEST__EMPTY__INIT;
        if (quark_test_Probe_ref(quark_actor_client(self), "target-of-failcall", &other) ==
            QUARK_OK) {
            quark_test_Probe_Ticks_async(other, &e, failcall_done, NULL);
            quark_ref_free(other);
        }
        quark_actor_deactivate(self);
        return quark_actor_fail(self, QUARK_EACTOR, "refusing to activate '%s' after a call",
                                quark_actor_id(self));
    }
    if (strncmp(quark_actor_id(self), "fail-", 5) == 0)
        return quark_actor_fail(self, QUARK_EACTOR, "refusing to activate '%s'",
                                quark_actor_id(self));
    return QUARK_OK;
}

static void probe_deactivate(quark_actor *self)
{
    (void)self;
    atomic_fetch_add(&probe_deactivations, 1);
}

static const quark_test_Probe_methods probe_methods = {
    .Work = probe_work,
    .Peek = probe_peek,
    .Relay = probe_relay,
    .StartTimer = probe_start_timer,
    .Ticks = probe_ticks,
    .Fail = probe_fail,
    .Leave = probe_leave,
    .Block = probe_block,
    .Never = probe_never,
    .Missing = NULL,
};

QUARK_ACTOR_TYPE(probe_actor,
                 .interface = &quark_test_Probe_interface,
                 .methods = &probe_methods,
                 .map_to_interface = 1,
                 .state_size = sizeof(struct probe),
                 .on_activate = probe_activate,
                 .on_deactivate = probe_deactivate)
