/*
 * pizza_actors.h - Awesome Pizza's actors (examples/pizza/README.md):
 *
 *   pizza.OrderActor       one order, its lifecycle, its events (order_actor.c)
 *   pizza.KitchenActor     "main": confirmed orders waiting for a chef (kitchen_actor.c)
 *   pizza.ChefActor        at most 3 orders at once: prepares and bakes them
 *   pizza.DriverActor      a driver: status, position, the order it delivers (driver_actor.c)
 *   pizza.DispatcherActor  "main": available drivers and where they are; the
 *                          nearest one for each Ready order
 *   pizza.OrderFeedActor   "main": every order's status changes as its events
 *                          (order_actor.c; not stored)
 *
 * Linking the object library registers them all (QUARK_ACTOR_TYPE). Every
 * actor keeps its state in the silo's storage. Calls between them are
 * asynchronous and never wait in a cycle; an order in a state that waits
 * for another actor keeps a durable reminder ("nudge") that asks again, so
 * a crash between two actors' writes delays an order, never strands it.
 */
#ifndef PIZZA_ACTORS_H
#define PIZZA_ACTORS_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <quark/quark.h>

#include "pizza.quark.h"

/* What pizza-silo's flags set (before the silo starts). */
typedef struct pizza_config {
    uint32_t bake_ms;          /* an order's time in the oven (default 5000) */
    uint32_t nudge_ms;         /* period of an order's "nudge" reminder (default 5000) */
    uint32_t chefs;            /* the kitchen's chefs (default 3) */
    double restaurant_lat, restaurant_lon;
} pizza_config;

extern pizza_config pizza_cfg;

#define PIZZA_KITCHEN_ID "main"
#define PIZZA_DISPATCHER_ID "main"
#define PIZZA_FEED_ID "main"
#define PIZZA_CHEF_CAPACITY 3
#define PIZZA_NEAR_M 30.0      /* "arrived": within this many metres */

/* "Baking", as the REST API and the events spell a status. */
const char *pizza_order_status_name(Pizza__OrderStatus s);
const char *pizza_driver_status_name(Pizza__DriverStatus s);
/* The inverse (case-insensitive); false if s names none. */
bool pizza_driver_status_parse(const char *s, Pizza__DriverStatus *out);

/* Great-circle distance in metres. */
double pizza_distance_m(double lat1, double lon1, double lat2, double lon2);

/* Wall clock, ms since the epoch. */
int64_t pizza_now_ms(void);

/* The cluster client of a pizza program (`who`, for its messages) to
 * `cluster` ("H1:P1,..."): created and connecting; while no silo answers it
 * keeps trying, and says so on stderr. NULL on failure (the reason on
 * stderr). */
quark_client *pizza_client_open(const char *who, const char *cluster, const char *cluster_id,
                                uint32_t deadline_ms);

/* Where an MQTT program connects: --broker, --cluster, --cluster-id. */
typedef struct pizza_endpoints {
    const char *broker;        /* "127.0.0.1:1883" */
    const char *cluster;       /* "127.0.0.1:7000" */
    const char *cluster_id;    /* "awesome-pizza" */
} pizza_endpoints;
#define PIZZA_ENDPOINTS_DEFAULT {"127.0.0.1:1883", "127.0.0.1:7000", "awesome-pizza"}

/* Take flag `a` with value `v` if it is one of those; false if not. */
bool pizza_endpoint_flag(pizza_endpoints *e, const char *a, const char *v);

/* Split "HOST:PORT" (port 0..65535, host non-empty) into host[cap] and
 * *port; false if it is not one. */
bool pizza_host_port(const char *s, char *host, size_t cap, int *port);

/* Block SIGTERM and SIGINT in this thread and every thread it starts, so
 * the program's main can wait for them (sigwait / sigtimedwait on *stop). */
void pizza_block_stop_signals(sigset_t *stop);

/* A failed fire-and-forget call between actors: one line on stderr (at
 * most one per second). */
void pizza_log_failure(const char *what, quark_err err, const char *errmsg);

#endif /* PIZZA_ACTORS_H */
