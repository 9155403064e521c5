/*
 * pizza_json.h - the REST API's JSON for orders and drivers (pizza_json.c).
 */
#ifndef PIZZA_JSON_H
#define PIZZA_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "pizza_actors.h"

#define PIZZA_JSON_MAX_ITEMS 50

/* The JSON of an order / a driver (the caller deletes it). */
cJSON *pizza_json_order(const Pizza__Order *o);
cJSON *pizza_json_driver(const Pizza__DriverState *d);

/* RFC 3339 in UTC with milliseconds: "2026-12-08T00:31:14.123Z". */
void pizza_json_time(char *out, size_t cap, int64_t ms);

/* A POST /api/orders body as a CreateOrderRequest (pointing into j and n). */
typedef struct pizza_new_order {
    Pizza__CreateOrderRequest req;
    Pizza__OrderItem items[PIZZA_JSON_MAX_ITEMS];
    Pizza__OrderItem *item_ptrs[PIZZA_JSON_MAX_ITEMS];
    Pizza__Location address;
} pizza_new_order;

/* false: *why (cap bytes) names the field that is missing or wrong. */
bool pizza_json_new_order(const cJSON *j, pizza_new_order *n, char *why, size_t cap);
bool pizza_json_location(const cJSON *o, Pizza__Location *out, const char *name, char *why,
                         size_t cap);

#endif /* PIZZA_JSON_H */
