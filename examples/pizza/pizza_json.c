/*
 * pizza_json.c - the REST API's JSON (examples/pizza/README.md): camelCase
 * keys, statuses by name ("Baking"), times in RFC 3339, money in currency
 * units. Orders and drivers to JSON; a new order's request from JSON, with
 * a message naming the field that is wrong.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "pizza_json.h"

void pizza_json_time(char *out, size_t cap, int64_t ms)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03dZ", base, (int)(ms % 1000));
}

static void add_time(cJSON *o, const char *key, int64_t ms)
{
    char t[40];
    pizza_json_time(t, sizeof t, ms);
    cJSON_AddStringToObject(o, key, t);
}

static cJSON *location(const Pizza__Location *l)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "lat", l->lat);
    cJSON_AddNumberToObject(o, "lon", l->lon);
    return o;
}

cJSON *pizza_json_order(const Pizza__Order *o)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "orderId", o->order_id);
    cJSON_AddStringToObject(j, "customerId", o->customer_id);
    cJSON *items = cJSON_AddArrayToObject(j, "items");
    for (size_t i = 0; i < o->n_items; i++) {
        const Pizza__OrderItem *it = o->items[i];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "pizzaType", it->pizza_type);
        cJSON_AddStringToObject(x, "size", it->size);
        cJSON_AddNumberToObject(x, "quantity", it->quantity);
        cJSON_AddNumberToObject(x, "price", (double)it->price_cents / 100.0);
        cJSON_AddItemToArray(items, x);
    }
    cJSON_AddNumberToObject(j, "totalAmount", (double)o->total_cents / 100.0);
    cJSON_AddStringToObject(j, "status", pizza_order_status_name(o->status));
    if (o->delivery_address)
        cJSON_AddItemToObject(j, "deliveryAddress", location(o->delivery_address));
    if (o->special_instructions && *o->special_instructions)
        cJSON_AddStringToObject(j, "specialInstructions", o->special_instructions);
    if (o->driver_id && *o->driver_id)
        cJSON_AddStringToObject(j, "driverId", o->driver_id);
    if (o->driver_location)
        cJSON_AddItemToObject(j, "driverLocation", location(o->driver_location));
    if (o->cancel_reason && *o->cancel_reason)
        cJSON_AddStringToObject(j, "cancelReason", o->cancel_reason);
    add_time(j, "createdAt", o->created_ms);
    add_time(j, "updatedAt", o->updated_ms);
    cJSON *h = cJSON_AddArrayToObject(j, "history");
    for (size_t i = 0; i < o->n_history; i++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "status", pizza_order_status_name(o->history[i]->status));
        add_time(x, "at", o->history[i]->at_ms);
        cJSON_AddItemToArray(h, x);
    }
    return j;
}

cJSON *pizza_json_driver(const Pizza__DriverState *d)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "driverId", d->driver_id);
    cJSON_AddStringToObject(j, "name", d->name);
    cJSON_AddStringToObject(j, "status", pizza_driver_status_name(d->status));
    if (d->has_location && d->location)
        cJSON_AddItemToObject(j, "location", location(d->location));
    if (d->current_order_id && *d->current_order_id)
        cJSON_AddStringToObject(j, "currentOrderId", d->current_order_id);
    cJSON_AddNumberToObject(j, "deliveredToday", d->delivered_today);
    return j;
}

/* ---- reading a new order ---- */

static bool fail(char *why, size_t cap, const char *fmt, const char *field)
{
    snprintf(why, cap, fmt, field);
    return false;
}

static bool number_in(const cJSON *v, double lo, double hi, double *out)
{
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return false;
    *out = v->valuedouble;
    return true;
}

bool pizza_json_location(const cJSON *o, Pizza__Location *out, const char *name, char *why,
                         size_t cap)
{
    if (!cJSON_IsObject(o)) {
        snprintf(why, cap, "%s must be an object {lat, lon}", name);
        return false;
    }
    pizza__location__init(out);
    if (!number_in(cJSON_GetObjectItem(o, "lat"), -90, 90, &out->lat) ||
        !number_in(cJSON_GetObjectItem(o, "lon"), -180, 180, &out->lon)) {
        snprintf(why, cap, "%s needs lat (a number in -90..90) and lon (-180..180)", name);
        return false;
    }
    return true;
}

bool pizza_json_new_order(const cJSON *j, pizza_new_order *n, char *why, size_t cap)
{
    if (!cJSON_IsObject(j))
        return fail(why, cap, "the body must be a JSON object%s", "");
    pizza__create_order_request__init(&n->req);
    const cJSON *c = cJSON_GetObjectItem(j, "customerId");
    if (!cJSON_IsString(c) || !*c->valuestring || strlen(c->valuestring) > 200)
        return fail(why, cap, "%s must be a string of 1 to 200 characters", "customerId");
    n->req.customer_id = c->valuestring;
    const cJSON *items = cJSON_GetObjectItem(j, "items");
    int ni = cJSON_IsArray(items) ? cJSON_GetArraySize(items) : -1;
    if (ni < 1 || ni > PIZZA_JSON_MAX_ITEMS)
        return fail(why, cap, "%s must be an array of 1 to 50 items", "items");
    for (int i = 0; i < ni; i++) {
        const cJSON *x = cJSON_GetArrayItem(items, i);
        Pizza__OrderItem *it = &n->items[i];
        pizza__order_item__init(it);
        n->item_ptrs[i] = it;
        const cJSON *t = cJSON_GetObjectItem(x, "pizzaType");
        const cJSON *s = cJSON_GetObjectItem(x, "size");
        const cJSON *q = cJSON_GetObjectItem(x, "quantity");
        double qv;
        if (!cJSON_IsObject(x) || !cJSON_IsString(t) || !*t->valuestring ||
            strlen(t->valuestring) > 64) {
            snprintf(why, cap, "items[%d].pizzaType must be a string of 1 to 64 characters", i);
            return false;
        }
        if (!cJSON_IsString(s) || (strcmp(s->valuestring, "small") &&
                                   strcmp(s->valuestring, "medium") &&
                                   strcmp(s->valuestring, "large"))) {
            snprintf(why, cap, "items[%d].size must be \"small\", \"medium\" or \"large\"", i);
            return false;
        }
        if (!number_in(q, 1, 100, &qv) || qv != floor(qv)) {
            snprintf(why, cap, "items[%d].quantity must be a whole number in 1..100", i);
            return false;
        }
        it->pizza_type = t->valuestring;
        it->size = s->valuestring;
        it->quantity = (uint32_t)qv;
    }
    n->req.n_items = (size_t)ni;
    n->req.items = n->item_ptrs;
    if (!pizza_json_location(cJSON_GetObjectItem(j, "deliveryAddress"), &n->address,
                             "deliveryAddress", why, cap))
        return false;
    n->req.delivery_address = &n->address;
    const cJSON *si = cJSON_GetObjectItem(j, "specialInstructions");
    if (si && !cJSON_IsNull(si)) {
        if (!cJSON_IsString(si) || strlen(si->valuestring) > 500)
            return fail(why, cap, "%s must be a string of at most 500 characters",
                        "specialInstructions");
        n->req.special_instructions = si->valuestring;
    }
    return true;
}
