/*
 * kitchen_actor.c - pizza.KitchenActor ("main") and pizza.ChefActor.
 *
 * The kitchen keeps the confirmed orders no chef has taken yet, oldest
 * first, and offers the oldest to its chefs in turn; a chef takes at most
 * PIZZA_CHEF_CAPACITY orders, moves each to Preparing and Baking, and tells
 * the kitchen when one is out of the oven (Done), so it can take the next.
 * Offers leave from a timer turn of the kitchen, never from the turn of the
 * call that queued the order: the chain of calls that leads back to the
 * order (chef -> order) must not contain the order's own call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pizza_actors.h"

/* ---- the kitchen ---- */

typedef struct kitchen_mem {
    bool offering;        /* an offer is out: wait for its answer */
    bool again;           /* something changed meanwhile: offer again after */
    uint32_t tried;       /* chefs that refused the head of the queue */
} kitchen_mem;

static void kitchen_view(const Pizza__KitchenState *k, Pizza__KitchenView *v)
{
    v->n_queue = k->n_queue;
    v->queue = k->queue;
    v->n_chefs = k->n_chefs;
    v->chefs = k->chefs;
}

/* Replace the state with `queue` (turn memory is fine) and the same chefs. */
static quark_err kitchen_store(quark_actor *self, char **queue, size_t n, uint32_t next_chef)
{
    Pizza__KitchenState k = *pizza_KitchenActor_state(self);
    k.queue = queue;
    k.n_queue = n;
    k.next_chef = next_chef;
    quark_err rc = quark_actor_state_set(self, &k.base);
    if (rc != QUARK_OK)
        return quark_actor_fail(self, rc, "%s", quark_last_error());
    return QUARK_OK;
}

/* The chefs "chef-1".."chef-N" the first time the kitchen is used. */
static quark_err kitchen_hire(quark_actor *self)
{
    Pizza__KitchenState *k = pizza_KitchenActor_state(self);
    if (k->n_chefs)
        return QUARK_OK;
    uint32_t n = pizza_cfg.chefs ? pizza_cfg.chefs : 1;
    char **chefs = quark_actor_alloc(self, n * sizeof *chefs);
    char *names = quark_actor_alloc(self, n * 16);
    if (!chefs || !names)
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        chefs[i] = names + i * 16;
        snprintf(chefs[i], 16, "chef-%u", i + 1);
    }
    Pizza__KitchenState c = *k;
    c.chefs = chefs;
    c.n_chefs = n;
    quark_err rc = quark_actor_state_set(self, &c.base);
    return rc == QUARK_OK ? QUARK_OK : quark_actor_fail(self, rc, "%s", quark_last_error());
}

static void offer(quark_actor *self, void *arg);

/* Offer the oldest order again, from a turn of its own. */
static void offer_soon(quark_actor *self)
{
    kitchen_mem *m = quark_actor_state(self);
    if (m->offering) {
        m->again = true;
        return;
    }
    m->offering = true;
    if (quark_actor_timer_start(self, 0, 0, offer, NULL, NULL) != QUARK_OK)
        m->offering = false; /* out of memory: the next Enqueue or ChefFree offers */
}

static void offered(quark_err err, const char *errmsg, const Pizza__TakeReply *r, void *arg)
{
    quark_actor *self = arg; /* runs as a turn of the kitchen */
    kitchen_mem *m = quark_actor_state(self);
    Pizza__KitchenState *k = pizza_KitchenActor_state(self);
    m->offering = false;
    if (err != QUARK_OK)
        pizza_log_failure("offering an order to a chef", err, errmsg);
    if (err == QUARK_OK && r->taken && k->n_queue) {
        /* Taken: off the queue (the chef has stored it). */
        char **rest = quark_actor_alloc(self, (k->n_queue ? k->n_queue : 1) * sizeof *rest);
        if (rest) {
            memcpy(rest, k->queue + 1, (k->n_queue - 1) * sizeof *rest);
            kitchen_store(self, rest, k->n_queue - 1, k->next_chef);
        }
        m->tried = 0;
        m->again = true;
    } else {
        m->tried++; /* full, or unreachable: the next chef */
        m->again = m->tried < k->n_chefs;
    }
    if (m->again) {
        m->again = false;
        offer_soon(self);
    }
}

static void offer(quark_actor *self, void *arg)
{
    (void)arg;
    kitchen_mem *m = quark_actor_state(self);
    Pizza__KitchenState *k = pizza_KitchenActor_state(self);
    if (!k->n_queue || !k->n_chefs) {
        m->offering = false;
        m->tried = 0;
        return;
    }
    uint32_t c = k->next_chef % k->n_chefs;
    k->next_chef = (c + 1) % k->n_chefs; /* in memory: who to ask next */
    quark_ref *chef;
    quark_err rc = pizza_ChefActor_ref(quark_actor_client(self), k->chefs[c], &chef);
    if (rc == QUARK_OK) {
        Pizza__TakeRequest rq = PIZZA__TAKE_REQUEST__INIT;
        rq.order_id = k->queue[0];
        rc = pizza_ChefActor_Take_async(chef, &rq, offered, self);
        quark_ref_free(chef);
    }
    if (rc != QUARK_OK) {
        pizza_log_failure("offering an order to a chef", rc, quark_last_error());
        m->offering = false;
    }
}

static quark_err kitchen_enqueue(quark_actor *self, const Pizza__EnqueueRequest *req,
                                 Pizza__KitchenView *reply)
{
    if (!req->order_id || !*req->order_id)
        return quark_actor_fail(self, QUARK_EINVAL, "order_id is missing");
    quark_err rc = kitchen_hire(self);
    if (rc != QUARK_OK)
        return rc;
    Pizza__KitchenState *k = pizza_KitchenActor_state(self);
    for (size_t i = 0; i < k->n_queue; i++)
        if (!strcmp(k->queue[i], req->order_id)) { /* queued already (a nudge): offer again */
            ((kitchen_mem *)quark_actor_state(self))->tried = 0;
            offer_soon(self);
            kitchen_view(k, reply);
            return QUARK_OK;
        }
    char **q = quark_actor_alloc(self, (k->n_queue + 1) * sizeof *q);
    if (!q)
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
    if (k->n_queue) /* (an empty repeated field's array is NULL) */
        memcpy(q, k->queue, k->n_queue * sizeof *q);
    q[k->n_queue] = req->order_id;
    rc = kitchen_store(self, q, k->n_queue + 1, k->next_chef);
    if (rc != QUARK_OK)
        return rc;
    ((kitchen_mem *)quark_actor_state(self))->tried = 0;
    offer_soon(self);
    kitchen_view(pizza_KitchenActor_state(self), reply);
    return QUARK_OK;
}

static quark_err kitchen_chef_free(quark_actor *self, const Pizza__ChefFreeRequest *req,
                                   Pizza__KitchenView *reply)
{
    (void)req;
    quark_err rc = kitchen_hire(self);
    if (rc != QUARK_OK)
        return rc;
    ((kitchen_mem *)quark_actor_state(self))->tried = 0;
    offer_soon(self);
    kitchen_view(pizza_KitchenActor_state(self), reply);
    return QUARK_OK;
}

static quark_err kitchen_get(quark_actor *self, const Pizza__GetOrderRequest *req,
                             Pizza__KitchenView *reply)
{
    (void)req;
    kitchen_view(pizza_KitchenActor_state(self), reply);
    return QUARK_OK;
}

/* On activation: orders queued before a restart are offered again. */
static quark_err kitchen_activate(quark_actor *self)
{
    if (pizza_KitchenActor_state(self)->n_queue)
        offer_soon(self);
    return QUARK_OK;
}

static const pizza_KitchenActor_methods kitchen_methods = {
    .Enqueue = kitchen_enqueue,
    .ChefFree = kitchen_chef_free,
    .Get = kitchen_get,
};

QUARK_ACTOR_TYPE(pizza_kitchen_actor, .interface = &pizza_KitchenActor_interface,
                 .methods = &kitchen_methods, .map_to_interface = 1,
                 .state_size = sizeof(kitchen_mem), .persistent = pizza_KitchenActor_STATE,
                 .on_activate = kitchen_activate)

/* ---- a chef ---- */

static quark_err chef_store(quark_actor *self, char **orders, size_t n, uint32_t done)
{
    Pizza__ChefState c = *pizza_ChefActor_state(self);
    c.orders = orders;
    c.n_orders = n;
    c.done = done;
    quark_err rc = quark_actor_state_set(self, &c.base);
    return rc == QUARK_OK ? QUARK_OK : quark_actor_fail(self, rc, "%s", quark_last_error());
}

/* Drop `order` from the chef's orders (in this turn). */
static void chef_drop(quark_actor *self, const char *order, bool done)
{
    Pizza__ChefState *c = pizza_ChefActor_state(self);
    char **rest = quark_actor_alloc(self, (c->n_orders ? c->n_orders : 1) * sizeof *rest);
    if (!rest)
        return;
    size_t n = 0;
    bool had = false;
    for (size_t i = 0; i < c->n_orders; i++) {
        if (!strcmp(c->orders[i], order))
            had = true;
        else
            rest[n++] = c->orders[i];
    }
    if (had)
        chef_store(self, rest, n, c->done + (done ? 1u : 0u));
}

static void kitchen_told(quark_err err, const char *errmsg, const Pizza__KitchenView *v,
                         void *arg)
{
    (void)v;
    (void)arg;
    if (err != QUARK_OK)
        pizza_log_failure("telling the kitchen a chef has room", err, errmsg);
}

static void tell_kitchen_free(quark_actor *self)
{
    quark_ref *k;
    if (pizza_KitchenActor_ref(quark_actor_client(self), PIZZA_KITCHEN_ID, &k) != QUARK_OK)
        return;
    Pizza__ChefFreeRequest rq = PIZZA__CHEF_FREE_REQUEST__INIT;
    rq.chef_id = (char *)quark_actor_id(self);
    quark_err rc = pizza_KitchenActor_ChefFree_async(k, &rq, kitchen_told, NULL);
    if (rc != QUARK_OK)
        pizza_log_failure("telling the kitchen a chef has room", rc, quark_last_error());
    quark_ref_free(k);
}

typedef struct chef_job {
    quark_actor *self;
    char order[];
} chef_job;

static void order_step(quark_actor *self, chef_job *j, bool baking);

/* The order's answer to Preparing / Baking, as a turn of the chef. */
static void order_answered(quark_actor *self, chef_job *j, bool baking, quark_err err,
                           const char *errmsg)
{
    if (err == QUARK_EACTOR) {
        /* Not this chef's any more (cancelled, or another chef has it): the
         * slot is free. */
        pizza_log_failure(baking ? "putting an order in the oven" : "starting an order", err,
                          errmsg);
        chef_drop(self, j->order, false);
        tell_kitchen_free(self);
        free(j);
        return;
    }
    if (err != QUARK_OK) {
        /* Unknown whether it happened: the chef keeps it, and the order's
         * nudge asks again (Take of an order the chef has carries on). */
        pizza_log_failure(baking ? "putting an order in the oven" : "starting an order", err,
                          errmsg);
        free(j);
        return;
    }
    if (!baking) {
        order_step(self, j, true);
        return;
    }
    free(j); /* in the oven: the order's reminder takes it out and says Done */
}

static void preparing_answered(quark_err err, const char *errmsg, const Pizza__Order *o,
                               void *arg)
{
    (void)o;
    chef_job *j = arg;
    order_answered(j->self, j, false, err, errmsg);
}

static void baking_answered(quark_err err, const char *errmsg, const Pizza__Order *o, void *arg)
{
    (void)o;
    chef_job *j = arg;
    order_answered(j->self, j, true, err, errmsg);
}

static void order_step(quark_actor *self, chef_job *j, bool baking)
{
    quark_ref *o;
    quark_err rc = pizza_OrderActor_ref(quark_actor_client(self), j->order, &o);
    if (rc == QUARK_OK) {
        Pizza__OrderTransition t = PIZZA__ORDER_TRANSITION__INIT;
        t.by = (char *)quark_actor_id(self);
        rc = baking ? pizza_OrderActor_StartBaking_async(o, &t, baking_answered, j)
                    : pizza_OrderActor_StartPreparing_async(o, &t, preparing_answered, j);
        quark_ref_free(o);
    }
    if (rc != QUARK_OK)
        order_answered(self, j, baking, rc, quark_last_error());
}

static chef_job *job_new(quark_actor *self, const char *order)
{
    size_t len = strlen(order);
    chef_job *j = malloc(sizeof *j + len + 1);
    if (j) {
        j->self = self;
        memcpy(j->order, order, len + 1);
    }
    return j;
}

/* A held order's status, as a turn of the chef: one no longer its own (or
 * no longer in its hands) frees its slot; one still Confirmed is started
 * again. */
static void checked(quark_err err, const char *errmsg, const Pizza__Order *o, void *arg)
{
    chef_job *j = arg;
    quark_actor *self = j->self;
    if (err != QUARK_OK) {
        pizza_log_failure("a chef checking an order", err, errmsg);
        free(j);
        return;
    }
    bool mine = !strcmp(o->chef_id, quark_actor_id(self));
    if (o->status == PIZZA__ORDER_STATUS__CONFIRMED) {
        order_step(self, j, false); /* (order_answered frees j) */
        return;
    }
    if (!mine || (o->status != PIZZA__ORDER_STATUS__PREPARING &&
                  o->status != PIZZA__ORDER_STATUS__BAKING)) {
        chef_drop(self, j->order, false);
        tell_kitchen_free(self);
    }
    free(j);
}

/* Full: are all its orders still in its hands? (A Done that never came,
 * a step whose answer was lost.) */
static void chef_check(quark_actor *self)
{
    Pizza__ChefState *c = pizza_ChefActor_state(self);
    for (size_t i = 0; i < c->n_orders; i++) {
        chef_job *j = job_new(self, c->orders[i]);
        quark_ref *o;
        if (!j || pizza_OrderActor_ref(quark_actor_client(self), j->order, &o) != QUARK_OK) {
            free(j);
            continue;
        }
        Pizza__GetOrderRequest g = PIZZA__GET_ORDER_REQUEST__INIT;
        if (pizza_OrderActor_Get_async(o, &g, checked, j) != QUARK_OK)
            free(j);
        quark_ref_free(o);
    }
}

static quark_err chef_take(quark_actor *self, const Pizza__TakeRequest *req,
                           Pizza__TakeReply *reply)
{
    if (!req->order_id || !*req->order_id)
        return quark_actor_fail(self, QUARK_EINVAL, "order_id is missing");
    Pizza__ChefState *c = pizza_ChefActor_state(self);
    for (size_t i = 0; i < c->n_orders; i++)
        if (!strcmp(c->orders[i], req->order_id)) { /* has it: carry on with it */
            reply->taken = true;
            reply->load = (uint32_t)c->n_orders;
            chef_job *j = job_new(self, req->order_id);
            if (j)
                order_step(self, j, false); /* both steps are idempotent */
            return QUARK_OK;
        }
    if (c->n_orders >= PIZZA_CHEF_CAPACITY) {
        reply->taken = false;
        reply->load = (uint32_t)c->n_orders;
        chef_check(self);
        return QUARK_OK;
    }
    size_t len = strlen(req->order_id);
    chef_job *j = malloc(sizeof *j + len + 1);
    char **orders = quark_actor_alloc(self, (c->n_orders + 1) * sizeof *orders);
    if (!j || !orders) {
        free(j);
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
    }
    if (c->n_orders)
        memcpy(orders, c->orders, c->n_orders * sizeof *orders);
    orders[c->n_orders] = req->order_id;
    quark_err rc = chef_store(self, orders, c->n_orders + 1, c->done);
    if (rc != QUARK_OK) {
        free(j);
        return rc;
    }
    j->self = self;
    memcpy(j->order, req->order_id, len + 1);
    reply->taken = true;
    reply->load = (uint32_t)pizza_ChefActor_state(self)->n_orders;
    order_step(self, j, false);
    return QUARK_OK;
}

static quark_err chef_done(quark_actor *self, const Pizza__DoneRequest *req,
                           Pizza__TakeReply *reply)
{
    if (!req->order_id || !*req->order_id)
        return quark_actor_fail(self, QUARK_EINVAL, "order_id is missing");
    chef_drop(self, req->order_id, true);
    reply->taken = false;
    reply->load = (uint32_t)pizza_ChefActor_state(self)->n_orders;
    tell_kitchen_free(self);
    return QUARK_OK;
}

static const pizza_ChefActor_methods chef_methods = {
    .Take = chef_take,
    .Done = chef_done,
};

QUARK_ACTOR_TYPE(pizza_chef_actor, .interface = &pizza_ChefActor_interface,
                 .methods = &chef_methods, .map_to_interface = 1,
                 .persistent = pizza_ChefActor_STATE)
