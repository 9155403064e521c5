/*
 * driver_sim.c - pizza-driver-sim: simulated drivers for the demo and for
 * load, speaking MQTT like a driver's app would.
 *
 *   pizza-driver-sim [--broker HOST:PORT] [--cluster H1:P1,...] [--cluster-id ID]
 *                    [--drivers N] [--prefix P] [--speed-mps M] [--tick-ms MS]
 *                    [--restaurant LAT,LON]
 *
 * Each driver (P1..PN) registers (DriverActor.Initialize), publishes
 * Available and its position near the restaurant on pizza/drivers/{id}/...,
 * and follows pizza/orders/+/status: when an order is DriverAssigned to it,
 * it reads the order's address (OrderActor.Get), drives to the restaurant
 * (the order goes OutForDelivery when it arrives) and on to the address (it
 * is Delivered there), publishing its position every --tick-ms, then waits
 * for the next one. SIGTERM or SIGINT stops it.
 */
#include <math.h>
#include <mosquitto.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pizza_json.h"

#define MAX_DRIVERS 256

typedef enum { IDLE, TO_RESTAURANT, TO_DOOR } leg;

typedef struct sim_driver {
    char id[64];
    double lat, lon;
    leg leg;
    char order[64];
    double dest_lat, dest_lon;   /* the order's address */
} sim_driver;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static sim_driver g_drv[MAX_DRIVERS];
static int g_n = 3;
static char g_prefix[32] = "sim-driver-";
static double g_speed = 150.0; /* m/s: a demo, not a city */
static unsigned g_tick = 200;
static quark_client *g_client;
static struct mosquitto *g_mq;

static void publish_json(const char *topic, cJSON *j)
{
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (text)
        mosquitto_publish(g_mq, NULL, topic, (int)strlen(text), text, 1, false);
    free(text);
}

static void publish_position(const sim_driver *d)
{
    char topic[128];
    snprintf(topic, sizeof topic, "pizza/drivers/%.63s/location", d->id);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "lat", d->lat);
    cJSON_AddNumberToObject(j, "lon", d->lon);
    cJSON_AddNumberToObject(j, "timestamp", (double)pizza_now_ms());
    publish_json(topic, j);
}

static void publish_available(const sim_driver *d)
{
    char topic[128];
    snprintf(topic, sizeof topic, "pizza/drivers/%.63s/status", d->id);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "status", "Available");
    publish_json(topic, j);
}

static sim_driver *find(const char *id)
{
    for (int i = 0; i < g_n; i++)
        if (!strcmp(g_drv[i].id, id))
            return &g_drv[i];
    return NULL;
}

/* An order was given to one of ours: where to? */
static void start_trip(sim_driver *d, const char *order)
{
    quark_ref *r;
    Pizza__Order *o = NULL;
    if (pizza_OrderActor_ref(g_client, order, &r) != QUARK_OK)
        return;
    Pizza__GetOrderRequest g = PIZZA__GET_ORDER_REQUEST__INIT;
    quark_err rc = pizza_OrderActor_Get(r, &g, &o);
    quark_ref_free(r);
    if (rc != QUARK_OK || !o->delivery_address) {
        fprintf(stderr, "pizza-driver-sim: %s cannot read order %s: %s\n", d->id, order,
                quark_last_error());
        quark_msg_free(o);
        return;
    }
    snprintf(d->order, sizeof d->order, "%s", order);
    d->dest_lat = o->delivery_address->lat;
    d->dest_lon = o->delivery_address->lon;
    d->leg = TO_RESTAURANT;
    quark_msg_free(o);
    printf("pizza-driver-sim: %s takes %s\n", d->id, order);
    fflush(stdout);
}

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg)
{
    (void)m;
    (void)arg;
    cJSON *j = msg->payloadlen > 0 ? cJSON_ParseWithLength(msg->payload, (size_t)msg->payloadlen)
                                   : NULL;
    const cJSON *st = cJSON_GetObjectItem(j, "status"), *dr = cJSON_GetObjectItem(j, "driverId"),
                *id = cJSON_GetObjectItem(j, "orderId");
    if (cJSON_IsString(st) && cJSON_IsString(dr) && cJSON_IsString(id)) {
        pthread_mutex_lock(&g_mu);
        sim_driver *d = find(dr->valuestring);
        if (d && !strcmp(st->valuestring, "DriverAssigned") && d->leg == IDLE)
            start_trip(d, id->valuestring);
        else if (d && !strcmp(d->order, id->valuestring) &&
                 (!strcmp(st->valuestring, "Delivered") || !strcmp(st->valuestring, "Cancelled"))) {
            d->leg = IDLE; /* the driver actor is Available again by itself */
            d->order[0] = '\0';
        }
        pthread_mutex_unlock(&g_mu);
    }
    cJSON_Delete(j);
}

static void on_connect(struct mosquitto *m, void *arg, int rc)
{
    (void)arg;
    if (rc != 0)
        return;
    mosquitto_subscribe(m, NULL, "pizza/orders/+/status", 1);
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_n; i++) { /* (again after a broker restart) */
        publish_position(&g_drv[i]);
        publish_available(&g_drv[i]);
    }
    pthread_mutex_unlock(&g_mu);
}

/* One step of `step_m` metres toward (lat, lon); true once there. */
static bool move_toward(sim_driver *d, double lat, double lon, double step_m)
{
    double dist = pizza_distance_m(d->lat, d->lon, lat, lon);
    if (dist <= step_m) {
        d->lat = lat;
        d->lon = lon;
        return true;
    }
    double f = step_m / dist;
    d->lat += (lat - d->lat) * f;
    d->lon += (lon - d->lon) * f;
    return false;
}

static void usage(void)
{
    fprintf(stderr, "usage: pizza-driver-sim [--broker HOST:PORT] [--cluster H1:P1,...] "
                    "[--cluster-id ID] [--drivers N] [--prefix P] [--speed-mps M] "
                    "[--tick-ms MS] [--restaurant LAT,LON]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    pizza_endpoints ep = PIZZA_ENDPOINTS_DEFAULT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v)
            usage();
        if (pizza_endpoint_flag(&ep, a, v))
            continue;
        if (!strcmp(a, "--drivers"))
            g_n = atoi(v);
        else if (!strcmp(a, "--prefix"))
            snprintf(g_prefix, sizeof g_prefix, "%s", v);
        else if (!strcmp(a, "--speed-mps"))
            g_speed = atof(v);
        else if (!strcmp(a, "--tick-ms"))
            g_tick = (unsigned)atoi(v);
        else if (!strcmp(a, "--restaurant")) {
            if (sscanf(v, "%lf,%lf", &pizza_cfg.restaurant_lat, &pizza_cfg.restaurant_lon) != 2)
                usage();
        } else
            usage();
    }
    char host[256];
    int port;
    if (g_n < 1 || g_n > MAX_DRIVERS || g_speed <= 0 || g_tick < 10 ||
        !pizza_host_port(ep.broker, host, sizeof host, &port) || port == 0) {
        fprintf(stderr, "pizza-driver-sim: --drivers 1..%d, --speed-mps > 0, --tick-ms >= 10, "
                        "--broker HOST:PORT\n", MAX_DRIVERS);
        return 2;
    }
    sigset_t stop;
    pizza_block_stop_signals(&stop);
    if (!(g_client = pizza_client_open("pizza-driver-sim", ep.cluster, ep.cluster_id, 5000)))
        return 1;
    /* The drivers wait around the restaurant, a few hundred metres out. */
    for (int i = 0; i < g_n; i++) {
        sim_driver *d = &g_drv[i];
        snprintf(d->id, sizeof d->id, "%s%d", g_prefix, i + 1);
        double a = 2 * M_PI * i / g_n;
        d->lat = pizza_cfg.restaurant_lat + 0.003 * cos(a);
        d->lon = pizza_cfg.restaurant_lon + 0.005 * sin(a);
        quark_ref *r;
        Pizza__RegisterDriverRequest rq = PIZZA__REGISTER_DRIVER_REQUEST__INIT;
        char name[64];
        snprintf(name, sizeof name, "Driver %d", i + 1);
        rq.name = name;
        if (pizza_DriverActor_ref(g_client, d->id, &r) == QUARK_OK) {
            if (pizza_DriverActor_Initialize(r, &rq, NULL) != QUARK_OK)
                fprintf(stderr, "pizza-driver-sim: registering %s: %s\n", d->id,
                        quark_last_error());
            quark_ref_free(r);
        }
    }
    mosquitto_lib_init();
    g_mq = mosquitto_new(NULL, true, NULL);
    if (!g_mq)
        return 1;
    mosquitto_connect_callback_set(g_mq, on_connect);
    mosquitto_message_callback_set(g_mq, on_message);
    mosquitto_reconnect_delay_set(g_mq, 1, 10, true);
    mosquitto_connect_async(g_mq, host, port, 30);
    if (mosquitto_loop_start(g_mq) != MOSQ_ERR_SUCCESS)
        return 1;
    printf("pizza-driver-sim: %d drivers (%s1..%s%d) online around the restaurant\n", g_n,
           g_prefix, g_prefix, g_n);
    fflush(stdout);
    struct timespec tick = {.tv_sec = g_tick / 1000, .tv_nsec = (long)(g_tick % 1000) * 1000000L};
    double step = g_speed * g_tick / 1000.0;
    for (;;) {
        if (sigtimedwait(&stop, NULL, &tick) > 0)
            break;
        pthread_mutex_lock(&g_mu);
        for (int i = 0; i < g_n; i++) {
            sim_driver *d = &g_drv[i];
            if (d->leg == TO_RESTAURANT) {
                if (move_toward(d, pizza_cfg.restaurant_lat, pizza_cfg.restaurant_lon, step))
                    d->leg = TO_DOOR; /* picked up (within 30 m: OutForDelivery) */
                publish_position(d);
            } else if (d->leg == TO_DOOR) {
                move_toward(d, d->dest_lat, d->dest_lon, step);
                publish_position(d); /* at the door: Delivered (then Available) */
            }
        }
        pthread_mutex_unlock(&g_mu);
    }
    mosquitto_disconnect(g_mq);
    mosquitto_loop_stop(g_mq, true);
    mosquitto_destroy(g_mq);
    mosquitto_lib_cleanup();
    quark_client_free(g_client);
    return 0;
}
