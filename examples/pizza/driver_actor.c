/*
 * driver_actor.c - pizza.DriverActor and pizza.DispatcherActor ("main").
 *
 * A driver comes online by saying Available (MQTT through the bridge, or a
 * call); every status change and every position of an available driver is
 * reported to the dispatcher, which keeps who is available and where. A
 * Ready order asks the dispatcher for a driver: the nearest available one to
 * the restaurant is offered the order (Assign); one that accepts tells the
 * order (DriverAssigned), forwards its positions to it, starts the delivery
 * when it is within PIZZA_NEAR_M of the restaurant and completes it within
 * PIZZA_NEAR_M of the address (a person may do both through the gateway).
 * Orders that find no driver wait at the dispatcher, oldest first, until
 * one becomes available.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pizza_actors.h"

/* ---- the driver ---- */

static quark_err driver_store(quark_actor *self, Pizza__DriverState *d)
{
    quark_err rc = quark_actor_state_set(self, &d->base);
    return rc == QUARK_OK ? QUARK_OK : quark_actor_fail(self, rc, "%s", quark_last_error());
}

static void dispatcher_told(quark_err err, const char *errmsg, const Pizza__DispatcherView *v,
                            void *arg)
{
    (void)v;
    (void)arg;
    if (err != QUARK_OK)
        pizza_log_failure("reporting a driver to the dispatcher", err, errmsg);
}

static void report(quark_actor *self)
{
    const Pizza__DriverState *d = pizza_DriverActor_state(self);
    quark_ref *ref;
    if (pizza_DispatcherActor_ref(quark_actor_client(self), PIZZA_DISPATCHER_ID, &ref) !=
        QUARK_OK)
        return;
    Pizza__DriverReport rq = PIZZA__DRIVER_REPORT__INIT;
    rq.driver_id = (char *)quark_actor_id(self);
    rq.status = d->status;
    rq.location = d->location;
    rq.has_location = d->has_location;
    quark_err rc = pizza_DispatcherActor_Report_async(ref, &rq, dispatcher_told, NULL);
    if (rc != QUARK_OK)
        pizza_log_failure("reporting a driver to the dispatcher", rc, quark_last_error());
    quark_ref_free(ref);
}

/* The driver's state to change: a copy in turn memory, registered. */
static Pizza__DriverState *driver_edit(quark_actor *self)
{
    Pizza__DriverState *d = quark_actor_alloc(self, sizeof *d);
    if (!d)
        return NULL;
    *d = *pizza_DriverActor_state(self);
    if (!d->registered) { /* a driver may come online before anyone registered it */
        d->registered = true;
        d->driver_id = (char *)quark_actor_id(self);
        if (!d->name || !*d->name)
            d->name = (char *)quark_actor_id(self);
    }
    return d;
}

/* The dispatcher has the new driver: Initialize's reply (a turn of the
 * driver, which deferred it). */
typedef struct reg_job {
    quark_actor *self;
    quark_deferred *call;
} reg_job;

static void registered(quark_err err, const char *errmsg, const Pizza__DispatcherView *v,
                       void *arg)
{
    (void)v;
    reg_job j = *(reg_job *)arg;
    free(arg);
    if (err != QUARK_OK)
        quark_reply_error(j.call, err, "the dispatcher did not take the driver: %s", errmsg);
    else
        quark_reply(j.call, &pizza_DriverActor_state(j.self)->base);
}

static quark_err driver_register(quark_actor *self, const Pizza__RegisterDriverRequest *req,
                                 Pizza__DriverState *reply)
{
    /* (deferred unless the driver is online: registered() replies) */
    Pizza__DriverState *d = driver_edit(self);
    if (!d)
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
    if (req->name && *req->name)
        d->name = req->name;
    quark_err rc = driver_store(self, d);
    if (rc != QUARK_OK)
        return rc;
    if (d->status != PIZZA__DRIVER_STATUS__OFFLINE) {
        /* Known to the dispatcher already; it may offer this driver an
         * order right away, so the reply does not wait for it (a cycle). */
        report(self);
        *reply = *pizza_DriverActor_state(self);
        return QUARK_OK;
    }
    /* The dispatcher lists every driver: reply once it has this one (an
     * Offline driver is never offered an order, so no call comes back). */
    quark_deferred *call = quark_actor_defer(self);
    reg_job *j = malloc(sizeof *j);
    quark_ref *ref;
    rc = j ? pizza_DispatcherActor_ref(quark_actor_client(self), PIZZA_DISPATCHER_ID, &ref)
           : quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
    if (rc == QUARK_OK) {
        j->self = self;
        j->call = call;
        Pizza__DriverReport rq = PIZZA__DRIVER_REPORT__INIT;
        rq.driver_id = (char *)quark_actor_id(self);
        rq.status = d->status;
        rq.location = d->location;
        rq.has_location = d->has_location;
        rc = pizza_DispatcherActor_Report_async(ref, &rq, registered, j);
        quark_ref_free(ref);
    }
    if (rc != QUARK_OK) {
        free(j);
        quark_reply_error(call, rc, "%s", quark_last_error());
    }
    return QUARK_PENDING;
}

static quark_err driver_get(quark_actor *self, const Pizza__GetOrderRequest *req,
                            Pizza__DriverState *reply)
{
    (void)req;
    const Pizza__DriverState *d = pizza_DriverActor_state(self);
    if (!d->registered) {
        reply->driver_id = (char *)quark_actor_id(self); /* registered false: no such driver */
        quark_actor_deactivate(self);
        return QUARK_OK;
    }
    *reply = *d;
    return QUARK_OK;
}

static quark_err driver_update_status(quark_actor *self, const Pizza__DriverStatusUpdate *req,
                                      Pizza__DriverState *reply)
{
    Pizza__DriverState *d = driver_edit(self);
    if (!d)
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
    if (req->status > PIZZA__DRIVER_STATUS__ON_BREAK)
        return quark_actor_fail(self, QUARK_EINVAL, "status %d is not a driver status",
                                (int)req->status);
    if (d->current_order_id && *d->current_order_id && req->status != PIZZA__DRIVER_STATUS__BUSY)
        return quark_actor_fail(self, QUARK_EACTOR, "driver %s is delivering order %s: it "
                                "stays Busy until the delivery ends", quark_actor_id(self),
                                d->current_order_id);
    d->status = req->status;
    quark_err rc = driver_store(self, d);
    if (rc != QUARK_OK)
        return rc;
    report(self);
    *reply = *pizza_DriverActor_state(self);
    return QUARK_OK;
}

static void order_told(quark_err err, const char *errmsg, const Pizza__Order *o, void *arg)
{
    (void)o;
    if (err != QUARK_OK)
        pizza_log_failure(arg, err, errmsg);
}

typedef enum { TELL_LOCATION, TELL_PICKED_UP, TELL_ARRIVED } tell_kind;

typedef struct loc_job {
    quark_actor *self;
    char order[];
} loc_job;

static void free_driver(quark_actor *self, const char *order);

/* The order's answer to a position, as a turn of the driver: an order that
 * no longer follows this driver (delivered, cancelled, or its DeliveryDone
 * was lost) sets the driver free. */
static void location_told(quark_err err, const char *errmsg, const Pizza__Order *o, void *arg)
{
    (void)o;
    loc_job *j = arg;
    if (err == QUARK_EACTOR || err == QUARK_EINVAL)
        free_driver(j->self, j->order);
    else if (err != QUARK_OK)
        pizza_log_failure("giving an order its driver's position", err, errmsg);
    free(j);
}

static void tell_order(quark_actor *self, const Pizza__DriverState *d, tell_kind k)
{
    quark_ref *o;
    if (pizza_OrderActor_ref(quark_actor_client(self), d->current_order_id, &o) != QUARK_OK)
        return;
    Pizza__OrderTransition t = PIZZA__ORDER_TRANSITION__INIT;
    t.by = (char *)quark_actor_id(self);
    Pizza__DriverLocationUpdate u = PIZZA__DRIVER_LOCATION_UPDATE__INIT;
    u.driver_id = (char *)quark_actor_id(self);
    u.location = d->location;
    u.at_ms = pizza_now_ms();
    quark_err rc;
    switch (k) {
    case TELL_LOCATION: {
        size_t n = strlen(d->current_order_id);
        loc_job *j = malloc(sizeof *j + n + 1);
        rc = QUARK_ENOMEM;
        if (j) {
            j->self = self;
            memcpy(j->order, d->current_order_id, n + 1);
            rc = pizza_OrderActor_UpdateDriverLocation_async(o, &u, location_told, j);
            if (rc != QUARK_OK)
                free(j);
        }
        break;
    }
    case TELL_PICKED_UP:
        rc = pizza_OrderActor_StartDelivery_async(o, &t, order_told,
                                                  (void *)"starting a delivery");
        break;
    default:
        rc = pizza_OrderActor_CompleteDelivery_async(o, &t, order_told,
                                                     (void *)"completing a delivery");
        break;
    }
    if (rc != QUARK_OK)
        pizza_log_failure("telling an order about its driver", rc, quark_last_error());
    quark_ref_free(o);
}

static quark_err driver_update_location(quark_actor *self, const Pizza__DriverLocationUpdate *req,
                                        Pizza__DriverState *reply)
{
    const Pizza__Location *l = req->location;
    if (!l || l->lat < -90 || l->lat > 90 || l->lon < -180 || l->lon > 180)
        return quark_actor_fail(self, QUARK_EINVAL, "a location needs lat in -90..90 and lon "
                                "in -180..180");
    Pizza__DriverState *d = driver_edit(self);
    Pizza__Location *loc = quark_actor_alloc(self, sizeof *loc);
    if (!d || !loc)
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
    pizza__location__init(loc);
    loc->lat = l->lat;
    loc->lon = l->lon;
    d->location = loc;
    d->has_location = true;
    tell_kind k = TELL_LOCATION;
    bool delivering = d->current_order_id && *d->current_order_id;
    if (delivering && !d->picked_up &&
        pizza_distance_m(l->lat, l->lon, pizza_cfg.restaurant_lat, pizza_cfg.restaurant_lon) <=
            PIZZA_NEAR_M) {
        d->picked_up = true; /* at the restaurant: out for delivery */
        k = TELL_PICKED_UP;
    } else if (delivering && d->order_address &&
               pizza_distance_m(l->lat, l->lon, d->order_address->lat, d->order_address->lon) <=
                   PIZZA_NEAR_M) {
        /* At the door (picked up, or the pick-up was not heard: the order
         * takes both steps from its driver). It calls DeliveryDone. */
        k = TELL_ARRIVED;
    }
    quark_err rc = driver_store(self, d);
    if (rc != QUARK_OK)
        return rc;
    d = pizza_DriverActor_state(self);
    if (delivering) {
        tell_order(self, d, TELL_LOCATION);
        if (k != TELL_LOCATION)
            tell_order(self, d, k);
    } else if (d->status == PIZZA__DRIVER_STATUS__AVAILABLE) {
        report(self); /* the dispatcher places available drivers */
    }
    *reply = *d;
    return QUARK_OK;
}

typedef struct assign_job {
    quark_actor *self;
    char order[];
} assign_job;

static void order_took_driver(quark_err err, const char *errmsg, const Pizza__Order *o, void *arg)
{
    (void)o;
    assign_job *j = arg;
    quark_actor *self = j->self; /* a turn of the driver */
    if (err == QUARK_EACTOR || err == QUARK_EINVAL) /* it would not have it (cancelled) */
        free_driver(self, j->order);
    else if (err != QUARK_OK) /* unknown whether it took it: its positions will tell */
        pizza_log_failure("giving an order its driver", err, errmsg);
    free(j);
}

/* The driver's order `order` is over for it: Available again. */
static void free_driver(quark_actor *self, const char *order)
{
    const Pizza__DriverState *cur = pizza_DriverActor_state(self);
    if (!cur->current_order_id || strcmp(cur->current_order_id, order))
        return;
    Pizza__DriverState *d = driver_edit(self);
    if (!d)
        return;
    d->current_order_id = "";
    d->order_address = NULL;
    d->picked_up = false;
    d->status = PIZZA__DRIVER_STATUS__AVAILABLE;
    if (driver_store(self, d) == QUARK_OK)
        report(self);
}

static quark_err driver_assign(quark_actor *self, const Pizza__AssignRequest *req,
                               Pizza__AssignReply *reply)
{
    if (!req->order_id || !*req->order_id || !req->address)
        return quark_actor_fail(self, QUARK_EINVAL, "order_id and address are needed");
    const Pizza__DriverState *cur = pizza_DriverActor_state(self);
    if (cur->current_order_id && !strcmp(cur->current_order_id, req->order_id)) {
        reply->accepted = true; /* asked again */
        return QUARK_OK;
    }
    if (cur->status != PIZZA__DRIVER_STATUS__AVAILABLE || (cur->current_order_id &&
                                                          *cur->current_order_id)) {
        reply->accepted = false;
        reply->why = (char *)pizza_driver_status_name(cur->status);
        return QUARK_OK;
    }
    Pizza__DriverState *d = driver_edit(self);
    size_t len = strlen(req->order_id);
    assign_job *j = malloc(sizeof *j + len + 1);
    if (!d || !j) {
        free(j);
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
    }
    d->current_order_id = req->order_id;
    d->order_address = req->address;
    d->picked_up = false;
    d->status = PIZZA__DRIVER_STATUS__BUSY;
    quark_err rc = driver_store(self, d);
    if (rc != QUARK_OK) {
        free(j);
        return rc;
    }
    reply->accepted = true;
    j->self = self;
    memcpy(j->order, req->order_id, len + 1);
    quark_ref *o;
    rc = pizza_OrderActor_ref(quark_actor_client(self), req->order_id, &o);
    if (rc == QUARK_OK) {
        Pizza__OrderTransition t = PIZZA__ORDER_TRANSITION__INIT;
        t.by = (char *)quark_actor_id(self);
        rc = pizza_OrderActor_AssignDriver_async(o, &t, order_took_driver, j);
        quark_ref_free(o);
    }
    if (rc != QUARK_OK)
        order_took_driver(rc, quark_last_error(), NULL, j);
    return QUARK_OK;
}

static quark_err driver_delivery_done(quark_actor *self, const Pizza__DeliveryDoneRequest *req,
                                      Pizza__DriverState *reply)
{
    const Pizza__DriverState *cur = pizza_DriverActor_state(self);
    if (!req->order_id || !cur->current_order_id || strcmp(cur->current_order_id, req->order_id)) {
        *reply = *cur; /* not (or no longer) this driver's order */
        return QUARK_OK;
    }
    Pizza__DriverState *d = driver_edit(self);
    if (!d)
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
    d->current_order_id = "";
    d->order_address = NULL;
    d->picked_up = false;
    d->delivered_today += req->delivered ? 1u : 0u;
    d->status = PIZZA__DRIVER_STATUS__AVAILABLE;
    quark_err rc = driver_store(self, d);
    if (rc != QUARK_OK)
        return rc;
    report(self);
    *reply = *pizza_DriverActor_state(self);
    return QUARK_OK;
}

static const pizza_DriverActor_methods driver_methods = {
    .Initialize = driver_register,
    .Get = driver_get,
    .UpdateStatus = driver_update_status,
    .UpdateLocation = driver_update_location,
    .Assign = driver_assign,
    .DeliveryDone = driver_delivery_done,
};

QUARK_ACTOR_TYPE(pizza_driver_actor, .interface = &pizza_DriverActor_interface,
                 .methods = &driver_methods, .map_to_interface = 1,
                 .persistent = pizza_DriverActor_STATE)

/* ---- the dispatcher ---- */

/* The dispatcher's state as arrays it can change in this turn. */
typedef struct disp_edit {
    Pizza__DispatcherState s;
    Pizza__DispatchDriver **drivers;
    char **waiting;
    Pizza__Location **addr;
} disp_edit;

/* A copy of the state with room for one more driver and one more waiting
 * order (turn memory; the drivers themselves copied, so they can change). */
static bool disp_begin(quark_actor *self, disp_edit *e)
{
    const Pizza__DispatcherState *cur = pizza_DispatcherActor_state(self);
    e->s = *cur;
    e->drivers = quark_actor_alloc(self, (cur->n_drivers + 1) * sizeof *e->drivers);
    Pizza__DispatchDriver *dv = quark_actor_alloc(self, (cur->n_drivers + 1) * sizeof *dv);
    e->waiting = quark_actor_alloc(self, (cur->n_waiting + 1) * sizeof *e->waiting);
    e->addr = quark_actor_alloc(self, (cur->n_waiting + 1) * sizeof *e->addr);
    if (!e->drivers || !dv || !e->waiting || !e->addr)
        return false;
    for (size_t i = 0; i < cur->n_drivers; i++) {
        dv[i] = *cur->drivers[i];
        e->drivers[i] = &dv[i];
    }
    e->drivers[cur->n_drivers] = &dv[cur->n_drivers];
    if (cur->n_waiting) /* (an empty repeated field's array is NULL) */
        memcpy(e->waiting, cur->waiting, cur->n_waiting * sizeof *e->waiting);
    size_t na = cur->n_waiting_address < cur->n_waiting ? cur->n_waiting_address : cur->n_waiting;
    if (na)
        memcpy(e->addr, cur->waiting_address, na * sizeof *e->addr);
    e->s.drivers = e->drivers;
    e->s.waiting = e->waiting;
    e->s.waiting_address = e->addr;
    e->s.n_waiting_address = na;
    e->s.n_waiting = na;
    return true;
}

static Pizza__DispatchDriver *disp_find(disp_edit *e, const char *id)
{
    for (size_t i = 0; i < e->s.n_drivers; i++)
        if (!strcmp(e->drivers[i]->driver_id, id))
            return e->drivers[i];
    return NULL;
}

static void disp_view(const Pizza__DispatcherState *s, Pizza__DispatcherView *v)
{
    v->n_drivers = s->n_drivers;
    v->drivers = s->drivers;
    v->n_waiting = s->n_waiting;
    v->waiting = s->waiting;
}

/* The nearest available driver not offered an order yet, or NULL. */
static Pizza__DispatchDriver *disp_nearest(disp_edit *e)
{
    Pizza__DispatchDriver *best = NULL;
    double best_m = 0;
    for (size_t i = 0; i < e->s.n_drivers; i++) {
        Pizza__DispatchDriver *d = e->drivers[i];
        if (d->status != PIZZA__DRIVER_STATUS__AVAILABLE || d->reserved)
            continue;
        double m = d->has_location
                       ? pizza_distance_m(d->location->lat, d->location->lon,
                                          pizza_cfg.restaurant_lat, pizza_cfg.restaurant_lon)
                       : 1e12; /* no position yet: last */
        if (!best || m < best_m) {
            best = d;
            best_m = m;
        }
    }
    return best;
}

typedef struct offer_job {
    quark_actor *self;
    char *driver;
    Pizza__Location addr;
    char order[];
} offer_job;

static void disp_offer(quark_actor *self, disp_edit *e, Pizza__DispatchDriver *d,
                       const char *order, const Pizza__Location *addr);

static bool disp_store(quark_actor *self, disp_edit *e)
{
    if (quark_actor_state_set(self, &e->s.base) != QUARK_OK) {
        pizza_log_failure("storing the dispatcher", QUARK_ENOMEM, quark_last_error());
        return false;
    }
    return true;
}

/* Hand waiting orders to available drivers, oldest first. */
static void disp_match(quark_actor *self, disp_edit *e)
{
    while (e->s.n_waiting) {
        Pizza__DispatchDriver *d = disp_nearest(e);
        if (!d)
            return;
        char *order = e->waiting[0];
        Pizza__Location *addr = e->addr[0];
        memmove(e->waiting, e->waiting + 1, (e->s.n_waiting - 1) * sizeof *e->waiting);
        memmove(e->addr, e->addr + 1, (e->s.n_waiting - 1) * sizeof *e->addr);
        e->s.n_waiting--;
        e->s.n_waiting_address--;
        disp_offer(self, e, d, order, addr);
    }
}

static void offer_answered(quark_err err, const char *errmsg, const Pizza__AssignReply *r,
                           void *arg)
{
    offer_job *j = arg;
    quark_actor *self = j->self; /* a turn of the dispatcher */
    disp_edit e;
    if (!disp_begin(self, &e)) {
        free(j);
        return;
    }
    Pizza__DispatchDriver *d = disp_find(&e, j->driver);
    bool taken = err == QUARK_OK && r->accepted;
    if (err != QUARK_OK)
        pizza_log_failure("offering an order to a driver", err, errmsg);
    if (d) {
        d->reserved = false;
        if (taken)
            d->status = PIZZA__DRIVER_STATUS__BUSY;
        else if (err == QUARK_OK)
            d->status = PIZZA__DRIVER_STATUS__OFFLINE; /* it said no: wait for its report */
    }
    if (!taken) { /* back to the front of the queue, for the next driver */
        memmove(e.waiting + 1, e.waiting, e.s.n_waiting * sizeof *e.waiting);
        memmove(e.addr + 1, e.addr, e.s.n_waiting * sizeof *e.addr);
        e.waiting[0] = j->order;
        e.addr[0] = &j->addr;
        e.s.n_waiting++;
        e.s.n_waiting_address++;
        if (err == QUARK_OK)
            disp_match(self, &e);
    }
    disp_store(self, &e);
    free(j);
}

static void disp_offer(quark_actor *self, disp_edit *e, Pizza__DispatchDriver *d,
                       const char *order, const Pizza__Location *addr)
{
    size_t len = strlen(order), dl = strlen(d->driver_id);
    offer_job *j = malloc(sizeof *j + len + 1 + dl + 1);
    if (!j)
        return;
    j->self = self;
    memcpy(j->order, order, len + 1);
    j->driver = j->order + len + 1;
    memcpy(j->driver, d->driver_id, dl + 1);
    pizza__location__init(&j->addr);
    if (addr) {
        j->addr.lat = addr->lat;
        j->addr.lon = addr->lon;
    }
    d->reserved = true;
    (void)e;
    quark_ref *ref;
    quark_err rc = pizza_DriverActor_ref(quark_actor_client(self), d->driver_id, &ref);
    if (rc == QUARK_OK) {
        Pizza__AssignRequest rq = PIZZA__ASSIGN_REQUEST__INIT;
        rq.order_id = j->order;
        rq.address = &j->addr;
        rc = pizza_DriverActor_Assign_async(ref, &rq, offer_answered, j);
        quark_ref_free(ref);
    }
    if (rc != QUARK_OK) {
        d->reserved = false;
        pizza_log_failure("offering an order to a driver", rc, quark_last_error());
        free(j); /* the order's nudge asks again */
    }
}

static quark_err disp_report(quark_actor *self, const Pizza__DriverReport *req,
                             Pizza__DispatcherView *reply)
{
    if (!req->driver_id || !*req->driver_id)
        return quark_actor_fail(self, QUARK_EINVAL, "driver_id is missing");
    disp_edit e;
    if (!disp_begin(self, &e))
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
    Pizza__DispatchDriver *d = disp_find(&e, req->driver_id);
    if (!d) {
        d = e.drivers[e.s.n_drivers++];
        pizza__dispatch_driver__init(d);
        d->driver_id = req->driver_id;
    }
    d->status = req->status;
    if (req->has_location && req->location) {
        d->location = req->location;
        d->has_location = true;
    }
    disp_match(self, &e);
    if (!disp_store(self, &e))
        return quark_actor_fail(self, QUARK_ENOMEM, "%s", quark_last_error());
    disp_view(pizza_DispatcherActor_state(self), reply);
    return QUARK_OK;
}

static quark_err disp_request(quark_actor *self, const Pizza__DriverRequest *req,
                              Pizza__DispatcherView *reply)
{
    if (!req->order_id || !*req->order_id)
        return quark_actor_fail(self, QUARK_EINVAL, "order_id is missing");
    disp_edit e;
    if (!disp_begin(self, &e))
        return quark_actor_fail(self, QUARK_ENOMEM, "out of memory");
    bool waiting = false;
    for (size_t i = 0; i < e.s.n_waiting; i++)
        waiting = waiting || !strcmp(e.waiting[i], req->order_id); /* a nudge: try again */
    Pizza__Location none = PIZZA__LOCATION__INIT;
    if (!waiting) {
        e.waiting[e.s.n_waiting] = req->order_id;
        e.addr[e.s.n_waiting] = req->address ? req->address : &none;
        e.s.n_waiting++;
        e.s.n_waiting_address++;
    }
    disp_match(self, &e);
    if (!disp_store(self, &e))
        return quark_actor_fail(self, QUARK_ENOMEM, "%s", quark_last_error());
    disp_view(pizza_DispatcherActor_state(self), reply);
    return QUARK_OK;
}

static quark_err disp_get(quark_actor *self, const Pizza__GetOrderRequest *req,
                          Pizza__DispatcherView *reply)
{
    (void)req;
    disp_view(pizza_DispatcherActor_state(self), reply);
    return QUARK_OK;
}

/* A restart forgets offers in flight: nobody is reserved any more. */
static quark_err disp_activate(quark_actor *self)
{
    Pizza__DispatcherState *s = pizza_DispatcherActor_state(self);
    for (size_t i = 0; i < s->n_drivers; i++)
        s->drivers[i]->reserved = false;
    return QUARK_OK;
}

static const pizza_DispatcherActor_methods dispatcher_methods = {
    .Report = disp_report,
    .RequestDriver = disp_request,
    .Get = disp_get,
};

QUARK_ACTOR_TYPE(pizza_dispatcher_actor, .interface = &pizza_DispatcherActor_interface,
                 .methods = &dispatcher_methods, .map_to_interface = 1,
                 .persistent = pizza_DispatcherActor_STATE, .on_activate = disp_activate)
