/*
 * order_actor.c - pizza.OrderActor: one order and its lifecycle
 *
 *   Created -> Confirmed -> Preparing -> Baking -> Ready -> DriverAssigned
 *           -> OutForDelivery -> Delivered,   Cancelled before OutForDelivery.
 *
 * Confirm queues it in the kitchen; a chef moves it to Preparing and Baking;
 * its "bake" reminder makes it Ready after pizza_cfg.bake_ms and asks the
 * dispatcher for the nearest driver; the driver (or a person, through the
 * gateway) starts and completes the delivery. Every change is stored before
 * the reply leaves and published as an OrderStatusEvent; driver positions as
 * DriverLocationEvents. While it waits for another actor (Confirmed, Ready)
 * its "nudge" reminder asks that actor again, so an order survives a crash
 * between two actors' writes.
 */
#include <stdio.h>
#include <string.h>

#include "pizza_actors.h"

#define state_of pizza_OrderActor_state

/* ---- small things ---- */

/* A copy of s in the state's memory ("" for NULL). */
static char *state_str(quark_actor *self, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    char *p = quark_actor_state_alloc(self, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s ? s : "", n + 1);
    return p;
}

static void fed(quark_err err, const char *errmsg, const Pizza__Ack *a, void *arg)
{
    (void)a;
    (void)arg;
    if (err != QUARK_OK)
        pizza_log_failure("telling the order feed", err, errmsg);
}

/* Every change goes to the feed too (pizza-mqtt-bridge follows it). */
static void feed(quark_actor *self, const Pizza__OrderStatusEvent *ev)
{
    quark_ref *f;
    if (pizza_OrderFeedActor_ref(quark_actor_client(self), PIZZA_FEED_ID, &f) != QUARK_OK)
        return;
    quark_err rc = pizza_OrderFeedActor_Publish_async(f, ev, fed, NULL);
    if (rc != QUARK_OK)
        pizza_log_failure("telling the order feed", rc, quark_last_error());
    quark_ref_free(f);
}

/* The event of o's latest status change (history's last: its seq). */
static void publish_status(quark_actor *self, const Pizza__Order *o)
{
    const Pizza__StatusChange *c = o->history[o->n_history - 1];
    Pizza__OrderStatusEvent ev = PIZZA__ORDER_STATUS_EVENT__INIT;
    ev.order_id = (char *)quark_actor_id(self);
    ev.status = c->status;
    ev.at_ms = c->at_ms;
    ev.seq = c->seq;
    ev.driver_id = o->driver_id;
    quark_actor_publish(self, &ev.base);
    feed(self, &ev);
}

/* Move o to status s now: history, updated_ms, the event. The caller says
 * quark_actor_state_changed (set_status does). */
static quark_err set_status(quark_actor *self, Pizza__Order *o, Pizza__OrderStatus s)
{
    int64_t now = pizza_now_ms();
    Pizza__StatusChange **h = quark_actor_state_alloc(self, (o->n_history + 1) * sizeof *h);
    Pizza__StatusChange *c = quark_actor_state_alloc(self, sizeof *c);
    if (!h || !c)
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory changing order %s",
                                quark_actor_id(self));
    pizza__status_change__init(c);
    c->status = s;
    c->at_ms = now;
    c->seq = ++o->event_seq;
    if (o->n_history)
        memcpy(h, o->history, o->n_history * sizeof *h);
    h[o->n_history] = c;
    o->history = h;
    o->n_history++;
    o->status = s;
    o->updated_ms = now;
    quark_actor_state_changed(self);
    publish_status(self, o);
    return QUARK_OK;
}

static const char *verb_of(Pizza__OrderStatus to)
{
    switch (to) {
    case PIZZA__ORDER_STATUS__CONFIRMED: return "confirmed";
    case PIZZA__ORDER_STATUS__PREPARING: return "prepared";
    case PIZZA__ORDER_STATUS__BAKING: return "baked";
    case PIZZA__ORDER_STATUS__READY: return "ready";
    case PIZZA__ORDER_STATUS__DRIVER_ASSIGNED: return "given a driver";
    case PIZZA__ORDER_STATUS__OUT_FOR_DELIVERY: return "out for delivery";
    case PIZZA__ORDER_STATUS__DELIVERED: return "delivered";
    case PIZZA__ORDER_STATUS__CANCELLED: return "cancelled";
    default: return "changed";
    }
}

/* May o go from its status to `to`? QUARK_OK, or the error (EINVAL: no such
 * order; EACTOR: not from its status, the message names both). */
static quark_err check(quark_actor *self, const Pizza__Order *o, Pizza__OrderStatus to,
                       Pizza__OrderStatus from)
{
    if (o->status == PIZZA__ORDER_STATUS__ORDER_STATUS_NONE)
        return quark_actor_fail(self, QUARK_EINVAL, "order %s does not exist",
                                quark_actor_id(self));
    if (o->status != from)
        return quark_actor_fail(self, QUARK_EACTOR, "order %s is %s: it cannot be %s (only "
                                "from %s to %s)", quark_actor_id(self),
                                pizza_order_status_name(o->status), verb_of(to),
                                pizza_order_status_name(from), pizza_order_status_name(to));
    return QUARK_OK;
}

static void fill_reply(Pizza__Order *reply, const Pizza__Order *o)
{
    *reply = *o; /* lent: the reply is encoded before the state can change */
}

/* ---- calls to other actors, fire and forget (each logs its failure) ---- */

static void kitchen_enqueued(quark_err err, const char *errmsg, const Pizza__KitchenView *v,
                             void *arg)
{
    (void)v;
    (void)arg;
    if (err != QUARK_OK)
        pizza_log_failure("queueing an order in the kitchen (its nudge asks again)", err, errmsg);
}

static void enqueue_in_kitchen(quark_actor *self)
{
    quark_ref *k;
    if (pizza_KitchenActor_ref(quark_actor_client(self), PIZZA_KITCHEN_ID, &k) != QUARK_OK)
        return;
    Pizza__EnqueueRequest rq = PIZZA__ENQUEUE_REQUEST__INIT;
    rq.order_id = (char *)quark_actor_id(self);
    quark_err rc = pizza_KitchenActor_Enqueue_async(k, &rq, kitchen_enqueued, NULL);
    if (rc != QUARK_OK)
        pizza_log_failure("queueing an order in the kitchen", rc, quark_last_error());
    quark_ref_free(k);
}

static void dispatcher_asked(quark_err err, const char *errmsg, const Pizza__DispatcherView *v,
                             void *arg)
{
    (void)v;
    (void)arg;
    if (err != QUARK_OK)
        pizza_log_failure("asking the dispatcher for a driver (the nudge asks again)", err,
                          errmsg);
}

static void request_driver(quark_actor *self, const Pizza__Order *o)
{
    quark_ref *d;
    if (pizza_DispatcherActor_ref(quark_actor_client(self), PIZZA_DISPATCHER_ID, &d) !=
        QUARK_OK)
        return;
    Pizza__DriverRequest rq = PIZZA__DRIVER_REQUEST__INIT;
    rq.order_id = (char *)quark_actor_id(self);
    rq.address = o->delivery_address;
    quark_err rc = pizza_DispatcherActor_RequestDriver_async(d, &rq, dispatcher_asked, NULL);
    if (rc != QUARK_OK)
        pizza_log_failure("asking the dispatcher for a driver", rc, quark_last_error());
    quark_ref_free(d);
}

static void reminder_done(quark_actor *self, quark_err err, const char *errmsg, void *arg)
{
    (void)self;
    if (err != QUARK_OK)
        pizza_log_failure(arg, err, errmsg);
}

static void unset_reminder(quark_actor *self, const char *name)
{
    quark_err rc = quark_actor_reminder_unset(self, name, reminder_done,
                                              (void *)"removing an order's reminder");
    if (rc != QUARK_OK)
        pizza_log_failure("removing an order's reminder", rc, quark_last_error());
}

/* An ended order (Delivered, Cancelled) keeps its nudge until its chef
 * and its driver both acknowledged that it no longer needs them (their
 * slot, their delivery): `pending` counts the answers of this round. */
typedef struct order_mem {
    uint8_t pending;
} order_mem;

static void acked(quark_actor *self, quark_err err, const char *what, const char *errmsg)
{
    order_mem *m = quark_actor_state(self);
    if (err != QUARK_OK) {
        pizza_log_failure(what, err, errmsg); /* the next nudge tells it again */
        return;
    }
    Pizza__OrderStatus s = pizza_OrderActor_state(self)->status;
    if (m->pending && --m->pending == 0 &&
        (s == PIZZA__ORDER_STATUS__DELIVERED || s == PIZZA__ORDER_STATUS__CANCELLED))
        unset_reminder(self, "nudge"); /* nothing left to do */
}

static void chef_told(quark_err err, const char *errmsg, const Pizza__TakeReply *r, void *arg)
{
    (void)r;
    acked(arg, err, "telling a chef an order is done", errmsg);
}

static bool tell_chef_done(quark_actor *self, const char *chef)
{
    quark_ref *c;
    if (!chef || !*chef || pizza_ChefActor_ref(quark_actor_client(self), chef, &c) != QUARK_OK)
        return false;
    Pizza__DoneRequest rq = PIZZA__DONE_REQUEST__INIT;
    rq.order_id = (char *)quark_actor_id(self);
    quark_err rc = pizza_ChefActor_Done_async(c, &rq, chef_told, self);
    if (rc != QUARK_OK)
        pizza_log_failure("telling a chef an order is done", rc, quark_last_error());
    quark_ref_free(c);
    return rc == QUARK_OK;
}

static void driver_told(quark_err err, const char *errmsg, const Pizza__DriverState *r, void *arg)
{
    (void)r;
    acked(arg, err, "telling a driver its delivery ended", errmsg);
}

static bool tell_driver_done(quark_actor *self, const char *driver, bool delivered)
{
    quark_ref *d;
    if (!driver || !*driver ||
        pizza_DriverActor_ref(quark_actor_client(self), driver, &d) != QUARK_OK)
        return false;
    Pizza__DeliveryDoneRequest rq = PIZZA__DELIVERY_DONE_REQUEST__INIT;
    rq.order_id = (char *)quark_actor_id(self);
    rq.delivered = delivered;
    quark_err rc = pizza_DriverActor_DeliveryDone_async(d, &rq, driver_told, self);
    if (rc != QUARK_OK)
        pizza_log_failure("telling a driver its delivery ended", rc, quark_last_error());
    quark_ref_free(d);
    return rc == QUARK_OK;
}

static void chef_asked(quark_err err, const char *errmsg, const Pizza__TakeReply *r, void *arg)
{
    (void)r;
    (void)arg;
    if (err != QUARK_OK)
        pizza_log_failure("asking a chef about an order (the nudge asks again)", err, errmsg);
}

/* Preparing, and the chef's steps were lost (a crash, a failed call): the
 * chef takes it again (a chef that has it carries on with it). */
static void ask_chef(quark_actor *self, const char *chef)
{
    quark_ref *c;
    if (!chef || !*chef || pizza_ChefActor_ref(quark_actor_client(self), chef, &c) != QUARK_OK)
        return;
    Pizza__TakeRequest rq = PIZZA__TAKE_REQUEST__INIT;
    rq.order_id = (char *)quark_actor_id(self);
    quark_err rc = pizza_ChefActor_Take_async(c, &rq, chef_asked, NULL);
    if (rc != QUARK_OK)
        pizza_log_failure("asking a chef about an order", rc, quark_last_error());
    quark_ref_free(c);
}

/* An ended order tells its chef and its driver (each acknowledges; until
 * both did, the nudge tells them again). */
static void let_go(quark_actor *self, const Pizza__Order *o)
{
    order_mem *m = quark_actor_state(self);
    m->pending = 0;
    m->pending += tell_chef_done(self, o->chef_id);
    m->pending += tell_driver_done(self, o->driver_id,
                                   o->status == PIZZA__ORDER_STATUS__DELIVERED);
    if (!m->pending && !(o->chef_id && *o->chef_id) && !(o->driver_id && *o->driver_id))
        unset_reminder(self, "nudge");
}

/* A reply deferred until a reminder is stored: then the order as it is. */
static void reply_when_stored(quark_actor *self, quark_err err, const char *errmsg, void *arg)
{
    quark_deferred *call = arg;
    if (err != QUARK_OK) {
        quark_reply_error(call, err, "%s", errmsg);
        return;
    }
    quark_reply(call, &state_of(self)->base);
}

/* Set reminder `name` and reply with the order once it is stored. */
static quark_err reply_after_reminder(quark_actor *self, const char *name, uint64_t due,
                                      uint64_t period)
{
    quark_deferred *call = quark_actor_defer(self);
    quark_err rc = quark_actor_reminder_set(self, name, due, period, reply_when_stored, call);
    if (rc != QUARK_OK)
        quark_reply_error(call, rc, "%s", quark_last_error());
    return QUARK_PENDING;
}

/* ---- the methods ---- */

static int64_t price_of(const Pizza__OrderItem *it)
{
    int64_t base = !strcmp(it->pizza_type, "margherita") ? 900
                   : !strcmp(it->pizza_type, "pepperoni") ? 1100
                                                          : 1000;
    if (!strcmp(it->size, "small"))
        return base * 8 / 10;
    if (!strcmp(it->size, "large"))
        return base * 13 / 10;
    return base;
}

static quark_err order_create(quark_actor *self, const Pizza__CreateOrderRequest *req,
                              Pizza__Order *reply)
{
    Pizza__Order *o = state_of(self);
    const char *id = quark_actor_id(self);
    if (o->status != PIZZA__ORDER_STATUS__ORDER_STATUS_NONE)
        return quark_actor_fail(self, QUARK_EACTOR, "order %s already exists (it is %s)", id,
                                pizza_order_status_name(o->status));
    if (!req->customer_id || !*req->customer_id)
        return quark_actor_fail(self, QUARK_EINVAL, "customerId is missing");
    if (req->n_items == 0 || req->n_items > 50)
        return quark_actor_fail(self, QUARK_EINVAL, "items must hold 1 to 50 items (got %zu)",
                                req->n_items);
    const Pizza__Location *a = req->delivery_address;
    if (!a || a->lat < -90 || a->lat > 90 || a->lon < -180 || a->lon > 180)
        return quark_actor_fail(self, QUARK_EINVAL, "deliveryAddress must have lat in "
                                "-90..90 and lon in -180..180");
    Pizza__Order n = PIZZA__ORDER__INIT;
    Pizza__OrderItem **items = quark_actor_alloc(self, req->n_items * sizeof *items);
    Pizza__OrderItem *iv = quark_actor_alloc(self, req->n_items * sizeof *iv);
    if (!items || !iv)
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory creating order %s", id);
    for (size_t i = 0; i < req->n_items; i++) {
        const Pizza__OrderItem *it = req->items[i];
        if (!it->pizza_type || !*it->pizza_type)
            return quark_actor_fail(self, QUARK_EINVAL, "items[%zu].pizzaType is missing", i);
        if (!it->size || (strcmp(it->size, "small") && strcmp(it->size, "medium") &&
                          strcmp(it->size, "large")))
            return quark_actor_fail(self, QUARK_EINVAL, "items[%zu].size must be small, "
                                    "medium or large", i);
        if (it->quantity < 1 || it->quantity > 100)
            return quark_actor_fail(self, QUARK_EINVAL, "items[%zu].quantity must be 1..100 "
                                    "(got %u)", i, it->quantity);
        iv[i] = *it;
        iv[i].price_cents = price_of(it);
        items[i] = &iv[i];
        n.total_cents += iv[i].price_cents * it->quantity;
    }
    int64_t now = pizza_now_ms();
    Pizza__StatusChange created = PIZZA__STATUS_CHANGE__INIT;
    created.status = PIZZA__ORDER_STATUS__CREATED;
    created.at_ms = now;
    created.seq = 1;
    Pizza__StatusChange *hist[1] = {&created};
    Pizza__Location addr = *a;
    n.order_id = (char *)id;
    n.customer_id = req->customer_id;
    n.n_items = req->n_items;
    n.items = items;
    n.status = PIZZA__ORDER_STATUS__CREATED;
    n.delivery_address = &addr;
    n.special_instructions = req->special_instructions ? req->special_instructions : "";
    n.created_ms = now;
    n.updated_ms = now;
    n.n_history = 1;
    n.history = hist;
    n.event_seq = 1;
    quark_err rc = quark_actor_state_set(self, &n.base);
    if (rc != QUARK_OK)
        return quark_actor_fail(self, rc, "%s", quark_last_error());
    o = state_of(self);
    publish_status(self, o);
    fill_reply(reply, o);
    return QUARK_OK;
}

static quark_err order_get(quark_actor *self, const Pizza__GetOrderRequest *req,
                           Pizza__Order *reply)
{
    (void)req;
    const Pizza__Order *o = state_of(self);
    if (o->status == PIZZA__ORDER_STATUS__ORDER_STATUS_NONE) {
        reply->order_id = (char *)quark_actor_id(self); /* status NONE: no such order */
        quark_actor_deactivate(self); /* nothing was stored: leave nothing behind */
        return QUARK_OK;
    }
    fill_reply(reply, o);
    return QUARK_OK;
}

static quark_err order_confirm(quark_actor *self, const Pizza__OrderTransition *req,
                               Pizza__Order *reply)
{
    (void)req;
    (void)reply; /* deferred: reply_after_reminder answers */
    Pizza__Order *o = state_of(self);
    if (o->status == PIZZA__ORDER_STATUS__CONFIRMED) /* again: its nudge again too */
        return reply_after_reminder(self, "nudge", pizza_cfg.nudge_ms, pizza_cfg.nudge_ms);
    quark_err rc = check(self, o, PIZZA__ORDER_STATUS__CONFIRMED, PIZZA__ORDER_STATUS__CREATED);
    if (rc == QUARK_OK)
        rc = set_status(self, o, PIZZA__ORDER_STATUS__CONFIRMED);
    if (rc != QUARK_OK)
        return rc;
    enqueue_in_kitchen(self);
    /* Until a chef has it, the nudge asks the kitchen again. */
    return reply_after_reminder(self, "nudge", pizza_cfg.nudge_ms, pizza_cfg.nudge_ms);
}

/* A step by a chef or a driver (req->by): idempotent for the same one. */
static quark_err step(quark_actor *self, const Pizza__OrderTransition *req, Pizza__Order *reply,
                      Pizza__OrderStatus from, Pizza__OrderStatus to, char **who)
{
    Pizza__Order *o = state_of(self);
    const char *by = req->by ? req->by : "";
    if (who && !*by)
        return quark_actor_fail(self, QUARK_EINVAL, "by (who does it) is missing");
    if (o->status == to && (!who || !strcmp(*who, by))) {
        fill_reply(reply, o);
        return QUARK_OK;
    }
    quark_err rc = check(self, o, to, from);
    if (rc != QUARK_OK)
        return rc;
    if (who && !(*who = state_str(self, by)))
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
    rc = set_status(self, o, to);
    if (rc != QUARK_OK)
        return rc;
    fill_reply(reply, o);
    return QUARK_OK;
}

static quark_err order_start_preparing(quark_actor *self, const Pizza__OrderTransition *req,
                                       Pizza__Order *reply)
{
    Pizza__Order *o = state_of(self);
    return step(self, req, reply, PIZZA__ORDER_STATUS__CONFIRMED, PIZZA__ORDER_STATUS__PREPARING,
                &o->chef_id);
}

static quark_err order_start_baking(quark_actor *self, const Pizza__OrderTransition *req,
                                    Pizza__Order *reply)
{
    Pizza__Order *o = state_of(self);
    if (o->status == PIZZA__ORDER_STATUS__BAKING) {
        fill_reply(reply, o);
        return QUARK_OK;
    }
    if (o->status == PIZZA__ORDER_STATUS__PREPARING && req->by && *req->by &&
        strcmp(req->by, o->chef_id))
        return quark_actor_fail(self, QUARK_EACTOR, "order %s is prepared by %s, not %s",
                                quark_actor_id(self), o->chef_id, req->by);
    quark_err rc = step(self, req, reply, PIZZA__ORDER_STATUS__PREPARING,
                        PIZZA__ORDER_STATUS__BAKING, NULL);
    if (rc != QUARK_OK)
        return rc;
    /* Out of the oven after bake_ms: a durable reminder, so a crash does
     * not leave it in the oven. */
    uint32_t bake = pizza_cfg.bake_ms;
    return reply_after_reminder(self, "bake", bake, bake);
}

static quark_err order_assign_driver(quark_actor *self, const Pizza__OrderTransition *req,
                                     Pizza__Order *reply)
{
    Pizza__Order *o = state_of(self);
    return step(self, req, reply, PIZZA__ORDER_STATUS__READY,
                PIZZA__ORDER_STATUS__DRIVER_ASSIGNED, &o->driver_id);
}

static quark_err order_start_delivery(quark_actor *self, const Pizza__OrderTransition *req,
                                      Pizza__Order *reply)
{
    return step(self, req, reply, PIZZA__ORDER_STATUS__DRIVER_ASSIGNED,
                PIZZA__ORDER_STATUS__OUT_FOR_DELIVERY, NULL);
}

static quark_err order_complete_delivery(quark_actor *self, const Pizza__OrderTransition *req,
                                         Pizza__Order *reply)
{
    Pizza__Order *o = state_of(self);
    bool was = o->status == PIZZA__ORDER_STATUS__DELIVERED;
    /* Its driver at the door delivers it even if the pick-up was not heard
     * (a lost StartDelivery): both steps now. */
    if (o->status == PIZZA__ORDER_STATUS__DRIVER_ASSIGNED && req->by && *req->by &&
        !strcmp(req->by, o->driver_id)) {
        quark_err rc = set_status(self, o, PIZZA__ORDER_STATUS__OUT_FOR_DELIVERY);
        if (rc != QUARK_OK)
            return rc;
    }
    quark_err rc = step(self, req, reply, PIZZA__ORDER_STATUS__OUT_FOR_DELIVERY,
                        PIZZA__ORDER_STATUS__DELIVERED, NULL);
    if (rc != QUARK_OK || was)
        return rc;
    let_go(self, o); /* the driver is free (told again by the nudge until it says so) */
    return quark_actor_reminder_set(self, "nudge", pizza_cfg.nudge_ms, pizza_cfg.nudge_ms,
                                    reminder_done, (void *)"setting an order's nudge") == QUARK_OK
               ? QUARK_OK
               : quark_actor_fail(self, QUARK_ENOMEM, "%s", quark_last_error());
}

static quark_err order_cancel(quark_actor *self, const Pizza__OrderTransition *req,
                              Pizza__Order *reply)
{
    Pizza__Order *o = state_of(self);
    if (o->status == PIZZA__ORDER_STATUS__CANCELLED) {
        fill_reply(reply, o);
        return QUARK_OK;
    }
    if (o->status == PIZZA__ORDER_STATUS__ORDER_STATUS_NONE)
        return quark_actor_fail(self, QUARK_EINVAL, "order %s does not exist",
                                quark_actor_id(self));
    if (o->status >= PIZZA__ORDER_STATUS__OUT_FOR_DELIVERY)
        return quark_actor_fail(self, QUARK_EACTOR, "order %s is %s: it cannot be cancelled "
                                "(only before OutForDelivery)", quark_actor_id(self),
                                pizza_order_status_name(o->status));
    Pizza__OrderStatus was = o->status;
    if (!(o->cancel_reason = state_str(self, req->reason)))
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
    quark_err rc = set_status(self, o, PIZZA__ORDER_STATUS__CANCELLED);
    if (rc != QUARK_OK)
        return rc;
    if (was == PIZZA__ORDER_STATUS__BAKING)
        unset_reminder(self, "bake");
    /* Its chef and driver (if any) let go; the nudge tells them again until
     * they said so, then ends. */
    let_go(self, o);
    if (quark_actor_reminder_set(self, "nudge", pizza_cfg.nudge_ms, pizza_cfg.nudge_ms,
                                 reminder_done, (void *)"setting an order's nudge") != QUARK_OK)
        pizza_log_failure("setting an order's nudge", QUARK_ENOMEM, quark_last_error());
    fill_reply(reply, o);
    return QUARK_OK;
}

static quark_err order_update_driver_location(quark_actor *self,
                                              const Pizza__DriverLocationUpdate *req,
                                              Pizza__Order *reply)
{
    Pizza__Order *o = state_of(self);
    if (o->status != PIZZA__ORDER_STATUS__DRIVER_ASSIGNED &&
        o->status != PIZZA__ORDER_STATUS__OUT_FOR_DELIVERY)
        return quark_actor_fail(self, QUARK_EACTOR, "order %s is %s: it follows no driver",
                                quark_actor_id(self), pizza_order_status_name(o->status));
    if (!req->driver_id || strcmp(req->driver_id, o->driver_id) || !req->location)
        return quark_actor_fail(self, QUARK_EINVAL, "order %s is delivered by %s, not %s",
                                quark_actor_id(self), o->driver_id,
                                req->driver_id ? req->driver_id : "(none)");
    if (!o->driver_location) {
        if (!(o->driver_location = quark_actor_state_alloc(self, sizeof *o->driver_location)))
            return quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
        pizza__location__init(o->driver_location);
    }
    o->driver_location->lat = req->location->lat;
    o->driver_location->lon = req->location->lon;
    int64_t at = req->at_ms ? req->at_ms : pizza_now_ms();
    o->updated_ms = pizza_now_ms();
    Pizza__DriverLocationEvent ev = PIZZA__DRIVER_LOCATION_EVENT__INIT;
    ev.order_id = (char *)quark_actor_id(self);
    ev.driver_id = o->driver_id;
    ev.location = o->driver_location;
    ev.at_ms = at;
    ev.seq = ++o->event_seq;
    o->driver_location_seq = ev.seq;
    o->driver_location_ms = at;
    quark_actor_state_changed(self);
    quark_actor_publish(self, &ev.base);
    fill_reply(reply, o);
    return QUARK_OK;
}

/* ---- reminders: out of the oven, and the nudge ---- */

/* Out of the oven: Ready, the chef's slot free, a driver asked for; the
 * nudge asks again until one has it. */
static quark_err out_of_oven(quark_actor *self, Pizza__Order *o)
{
    quark_err rc = set_status(self, o, PIZZA__ORDER_STATUS__READY);
    if (rc != QUARK_OK)
        return rc;
    unset_reminder(self, "bake");
    tell_chef_done(self, o->chef_id);
    request_driver(self, o);
    rc = quark_actor_reminder_set(self, "nudge", pizza_cfg.nudge_ms, pizza_cfg.nudge_ms,
                                  reminder_done, (void *)"setting an order's nudge");
    return rc == QUARK_OK ? QUARK_OK : quark_actor_fail(self, rc, "%s", quark_last_error());
}

static quark_err order_on_reminder(quark_actor *self, const quark_reminder_tick *tick)
{
    Pizza__Order *o = state_of(self);
    if (!strcmp(tick->name, "bake")) {
        if (o->status != PIZZA__ORDER_STATUS__BAKING) {
            unset_reminder(self, "bake");
            return QUARK_OK;
        }
        return out_of_oven(self, o);
    }
    /* "nudge": whatever this order waits for, ask again. */
    switch (o->status) {
    case PIZZA__ORDER_STATUS__CONFIRMED:
        enqueue_in_kitchen(self);
        break;
    case PIZZA__ORDER_STATUS__PREPARING:
        ask_chef(self, o->chef_id);
        break;
    case PIZZA__ORDER_STATUS__BAKING: { /* its bake reminder may be lost: the oven's time */
        int64_t since = o->n_history ? o->history[o->n_history - 1]->at_ms : o->updated_ms;
        int64_t left = since + (int64_t)pizza_cfg.bake_ms - pizza_now_ms();
        if (left <= 0)
            return out_of_oven(self, o);
        quark_actor_reminder_set(self, "bake", (uint64_t)left, pizza_cfg.bake_ms, reminder_done,
                                 (void *)"setting an order's bake reminder");
        break;
    }
    case PIZZA__ORDER_STATUS__READY:
        request_driver(self, o);
        break;
    case PIZZA__ORDER_STATUS__DELIVERED:
    case PIZZA__ORDER_STATUS__CANCELLED:
        let_go(self, o); /* until its chef and driver acknowledged */
        break;
    case PIZZA__ORDER_STATUS__DRIVER_ASSIGNED:
    case PIZZA__ORDER_STATUS__OUT_FOR_DELIVERY:
        break; /* its driver has it */
    default:
        unset_reminder(self, tick->name);
        break;
    }
    return QUARK_OK;
}

static const pizza_OrderActor_methods order_methods = {
    .Create = order_create,
    .Get = order_get,
    .Confirm = order_confirm,
    .Cancel = order_cancel,
    .StartPreparing = order_start_preparing,
    .StartBaking = order_start_baking,
    .AssignDriver = order_assign_driver,
    .StartDelivery = order_start_delivery,
    .CompleteDelivery = order_complete_delivery,
    .UpdateDriverLocation = order_update_driver_location,
};

QUARK_ACTOR_TYPE(pizza_order_actor, .interface = &pizza_OrderActor_interface,
                 .methods = &order_methods, .map_to_interface = 1,
                 .state_size = sizeof(order_mem), .persistent = pizza_OrderActor_STATE,
                 .on_reminder = order_on_reminder)

/* ---- the feed: every order's changes as one actor's events ---- */

static quark_err feed_publish(quark_actor *self, const Pizza__OrderStatusEvent *ev,
                              Pizza__Ack *reply)
{
    (void)reply;
    return quark_actor_publish(self, &ev->base);
}

static const pizza_OrderFeedActor_methods feed_methods = {.Publish = feed_publish};

QUARK_ACTOR_TYPE(pizza_order_feed, .interface = &pizza_OrderFeedActor_interface,
                 .methods = &feed_methods, .map_to_interface = 1)
