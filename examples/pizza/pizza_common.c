/*
 * pizza_common.c - what the pizza actors share: the configuration
 * pizza-silo sets, status names as the REST API spells them, distances.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>

#include "pizza_actors.h"

pizza_config pizza_cfg = {
    .bake_ms = 5000,
    .nudge_ms = 5000,
    .chefs = 3,
    .restaurant_lat = 52.5200, /* Berlin, Alexanderplatz */
    .restaurant_lon = 13.4050,
};

const char *pizza_order_status_name(Pizza__OrderStatus s)
{
    switch (s) {
    case PIZZA__ORDER_STATUS__CREATED: return "Created";
    case PIZZA__ORDER_STATUS__CONFIRMED: return "Confirmed";
    case PIZZA__ORDER_STATUS__PREPARING: return "Preparing";
    case PIZZA__ORDER_STATUS__BAKING: return "Baking";
    case PIZZA__ORDER_STATUS__READY: return "Ready";
    case PIZZA__ORDER_STATUS__DRIVER_ASSIGNED: return "DriverAssigned";
    case PIZZA__ORDER_STATUS__OUT_FOR_DELIVERY: return "OutForDelivery";
    case PIZZA__ORDER_STATUS__DELIVERED: return "Delivered";
    case PIZZA__ORDER_STATUS__CANCELLED: return "Cancelled";
    default: return "None";
    }
}

static const char *const driver_names[] = {"Offline", "Available", "Busy", "OnBreak"};

const char *pizza_driver_status_name(Pizza__DriverStatus s)
{
    return (unsigned)s < 4 ? driver_names[s] : "Offline";
}

bool pizza_driver_status_parse(const char *s, Pizza__DriverStatus *out)
{
    for (unsigned i = 0; s && i < 4; i++)
        if (!strcasecmp(s, driver_names[i])) {
            *out = (Pizza__DriverStatus)i;
            return true;
        }
    return false;
}

double pizza_distance_m(double lat1, double lon1, double lat2, double lon2)
{
    const double r = 6371000.0, rad = M_PI / 180.0;
    double dlat = (lat2 - lat1) * rad, dlon = (lon2 - lon1) * rad;
    double a = sin(dlat / 2) * sin(dlat / 2) +
               cos(lat1 * rad) * cos(lat2 * rad) * sin(dlon / 2) * sin(dlon / 2);
    return 2 * r * atan2(sqrt(a), sqrt(1 - a));
}

int64_t pizza_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pizza_log_failure(const char *what, quark_err err, const char *errmsg)
{
    static _Atomic int64_t last;
    int64_t now = pizza_now_ms(), l = atomic_load(&last);
    if (now - l < 1000 || !atomic_compare_exchange_strong(&last, &l, now))
        return;
    fprintf(stderr, "pizza: %s failed: %s: %s\n", what, quark_errname(err),
            errmsg ? errmsg : quark_strerror(err));
}

quark_client *pizza_client_open(const char *who, const char *cluster, const char *cluster_id,
                                uint32_t deadline_ms)
{
    quark_client_opts co;
    quark_client_opts_init(&co);
    co.connection_string = cluster;
    co.cluster_id = cluster_id;
    co.default_deadline_ms = deadline_ms;
    quark_client *c;
    if (quark_client_create(&co, &c) != QUARK_OK) {
        fprintf(stderr, "%s: %s\n", who, quark_last_error());
        return NULL;
    }
    if (quark_client_connect(c) != QUARK_OK) /* it keeps trying */
        fprintf(stderr, "%s: the cluster at %s is not reachable yet (%s); it keeps trying\n",
                who, cluster, quark_last_error());
    return c;
}

bool pizza_host_port(const char *s, char *host, size_t cap, int *port)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (!colon || colon == s || (size_t)(colon - s) >= cap || !colon[1])
        return false;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535)
        return false;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (int)p;
    return true;
}

void pizza_block_stop_signals(sigset_t *stop)
{
    sigemptyset(stop);
    sigaddset(stop, SIGTERM);
    sigaddset(stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, stop, NULL);
}

bool pizza_endpoint_flag(pizza_endpoints *e, const char *a, const char *v)
{
    if (!strcmp(a, "--broker"))
        e->broker = v;
    else if (!strcmp(a, "--cluster"))
        e->cluster = v;
    else if (!strcmp(a, "--cluster-id"))
        e->cluster_id = v;
    else
        return false;
    return true;
}
