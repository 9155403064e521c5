/*
 * bridge.c - pizza-mqtt-bridge: drivers' MQTT messages to their actors, and
 * every order's status to MQTT (libmosquitto, JSON with cJSON).
 *
 *   pizza-mqtt-bridge [--broker HOST:PORT] [--cluster H1:P1,...]
 *                     [--cluster-id ID] [--client-id ID]
 *
 * Subscribes with QoS 1 to
 *   pizza/drivers/{id}/location  {lat, lon, timestamp?}  -> DriverActor.UpdateLocation
 *   pizza/drivers/{id}/status    {status: Available|Busy|OnBreak|Offline}
 *                                                        -> DriverActor.UpdateStatus
 * (a driver comes online by publishing Available), and publishes each
 * order's change, retained, on pizza/orders/{id}/status {orderId, status,
 * driverId?, at} (it follows pizza.OrderFeedActor "main"). A bad topic or payload is
 * dropped with a log line (at most one a second) and counted; a message
 * whose call failed is dropped the same way (its error in the log). The
 * broker's restarts are survived (libmosquitto reconnects, 1 s to 10 s
 * back-off, and the session keeps the subscriptions), and so are silos'
 * failures (the cluster client reconnects; the feed is subscribed again).
 * SIGTERM or SIGINT stops it and prints the counts.
 */
#include <mosquitto.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pizza_json.h"

static quark_client *g_client;
static struct mosquitto *g_mq;
static _Atomic uint64_t g_received, g_ok, g_dropped, g_published;
static _Atomic int64_t g_last_log;
static _Atomic bool g_feed_lost = true; /* (re)subscribe to the feed */
static _Atomic uintptr_t g_feed_gen;    /* which subscription is the current one */
static quark_subscription *g_feed;      /* the main thread's */

static void drop(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void drop(const char *fmt, ...)
{
    atomic_fetch_add(&g_dropped, 1);
    int64_t now = pizza_now_ms(), last = atomic_load(&g_last_log);
    if (now - last < 1000 || !atomic_compare_exchange_strong(&g_last_log, &last, now))
        return;
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "pizza-mqtt-bridge: dropped: %s (%llu dropped so far)\n", msg,
            (unsigned long long)atomic_load(&g_dropped));
}

/* ---- MQTT -> drivers ---- */

static void driver_done(quark_err err, const char *errmsg, const Pizza__DriverState *d,
                        void *arg)
{
    (void)d;
    (void)arg;
    if (err == QUARK_OK)
        atomic_fetch_add(&g_ok, 1);
    else
        drop("a driver's update failed: %s: %s", quark_errname(err), errmsg);
}

static bool valid_id(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg)
{
    (void)m;
    (void)arg;
    atomic_fetch_add(&g_received, 1);
    /* pizza/drivers/{id}/{location|status} */
    const char *t = msg->topic;
    if (strncmp(t, "pizza/drivers/", 14)) {
        drop("topic %.100s is not pizza/drivers/{id}/...", t);
        return;
    }
    const char *id = t + 14, *slash = strchr(id, '/');
    if (!slash || !valid_id(id, (size_t)(slash - id))) {
        drop("topic %.100s: the driver id must be 1 to 64 of A-Z a-z 0-9 . _ -", t);
        return;
    }
    char driver[65];
    memcpy(driver, id, (size_t)(slash - id));
    driver[slash - id] = '\0';
    const char *kind = slash + 1;
    bool location = !strcmp(kind, "location");
    if (!location && strcmp(kind, "status")) {
        drop("topic %.100s is neither .../location nor .../status", t);
        return;
    }
    cJSON *j = msg->payloadlen > 0 && msg->payloadlen <= 4096
                   ? cJSON_ParseWithLength(msg->payload, (size_t)msg->payloadlen)
                   : NULL;
    if (!cJSON_IsObject(j)) {
        drop("%s: the payload is not a JSON object (of at most 4 KiB)", t);
        cJSON_Delete(j);
        return;
    }
    quark_ref *r;
    quark_err rc = pizza_DriverActor_ref(g_client, driver, &r);
    if (rc != QUARK_OK) {
        drop("%s: %s", t, quark_last_error());
        cJSON_Delete(j);
        return;
    }
    char why[200];
    if (location) {
        Pizza__Location l;
        if (!pizza_json_location(j, &l, "the location", why, sizeof why)) {
            drop("%s: %s", t, why);
        } else {
            Pizza__DriverLocationUpdate u = PIZZA__DRIVER_LOCATION_UPDATE__INIT;
            u.driver_id = driver;
            u.location = &l;
            const cJSON *ts = cJSON_GetObjectItem(j, "timestamp");
            u.at_ms = cJSON_IsNumber(ts) && ts->valuedouble > 0 && ts->valuedouble < 1e15
                          ? (int64_t)ts->valuedouble
                          : pizza_now_ms();
            rc = pizza_DriverActor_UpdateLocation_async(r, &u, driver_done, NULL);
        }
    } else {
        const cJSON *s = cJSON_GetObjectItem(j, "status");
        Pizza__DriverStatus st;
        if (!cJSON_IsString(s) || !pizza_driver_status_parse(s->valuestring, &st)) {
            drop("%s: status must be Available, Busy, OnBreak or Offline", t);
        } else {
            Pizza__DriverStatusUpdate u = PIZZA__DRIVER_STATUS_UPDATE__INIT;
            u.status = st;
            rc = pizza_DriverActor_UpdateStatus_async(r, &u, driver_done, NULL);
        }
    }
    if (rc != QUARK_OK)
        drop("%s: %s", t, quark_last_error());
    quark_ref_free(r);
    cJSON_Delete(j);
}

static void on_connect(struct mosquitto *m, void *arg, int rc)
{
    (void)arg;
    if (rc != 0) {
        fprintf(stderr, "pizza-mqtt-bridge: the broker refused the connection: %s\n",
                mosquitto_connack_string(rc));
        return;
    }
    int mid;
    mosquitto_subscribe(m, &mid, "pizza/drivers/+/location", 1);
    mosquitto_subscribe(m, &mid, "pizza/drivers/+/status", 1);
    printf("pizza-mqtt-bridge: connected to the broker, subscribed\n");
    fflush(stdout);
}

/* ---- orders -> MQTT ---- */

static void on_feed(const quark_event *ev, quark_err end, const char *errmsg, void *arg)
{
    if (!ev) { /* the current one ended (its silo went away): subscribe again */
        if ((uintptr_t)arg == atomic_load(&g_feed_gen)) {
            fprintf(stderr, "pizza-mqtt-bridge: the order feed ended (%s): subscribing "
                            "again\n", errmsg ? errmsg : quark_errname(end));
            atomic_store(&g_feed_lost, true);
        }
        return;
    }
    Pizza__OrderStatusEvent *e =
        pizza__order_status_event__unpack(NULL, ev->payload_len, ev->payload);
    if (!e)
        return;
    char topic[128], at[40];
    snprintf(topic, sizeof topic, "pizza/orders/%.64s/status", e->order_id);
    pizza_json_time(at, sizeof at, e->at_ms);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "orderId", e->order_id);
    cJSON_AddStringToObject(j, "status", pizza_order_status_name(e->status));
    if (e->driver_id && *e->driver_id)
        cJSON_AddStringToObject(j, "driverId", e->driver_id);
    cJSON_AddStringToObject(j, "at", at);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    pizza__order_status_event__free_unpacked(e, NULL);
    if (!text)
        return;
    if (mosquitto_publish(g_mq, NULL, topic, (int)strlen(text), text, 1, true) ==
        MOSQ_ERR_SUCCESS)
        atomic_fetch_add(&g_published, 1);
    free(text);
}

static void usage(void)
{
    fprintf(stderr, "usage: pizza-mqtt-bridge [--broker HOST:PORT] [--cluster H1:P1,...] "
                    "[--cluster-id ID] [--client-id ID]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    pizza_endpoints ep = PIZZA_ENDPOINTS_DEFAULT;
    const char *client_id = "pizza-mqtt-bridge";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v)
            usage();
        if (pizza_endpoint_flag(&ep, a, v))
            continue;
        if (!strcmp(a, "--client-id"))
            client_id = v;
        else
            usage();
    }
    char host[256];
    int port;
    if (!pizza_host_port(ep.broker, host, sizeof host, &port) || port == 0) {
        fprintf(stderr, "pizza-mqtt-bridge: --broker wants HOST:PORT (got '%s')\n", ep.broker);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop;
    pizza_block_stop_signals(&stop);

    if (!(g_client = pizza_client_open("pizza-mqtt-bridge", ep.cluster, ep.cluster_id, 5000)))
        return 1;

    mosquitto_lib_init();
    /* A persistent session: the broker keeps the subscriptions and queues
     * QoS 1 messages while the bridge reconnects. */
    g_mq = mosquitto_new(client_id, false, NULL);
    if (!g_mq) {
        fprintf(stderr, "pizza-mqtt-bridge: out of memory\n");
        return 1;
    }
    mosquitto_connect_callback_set(g_mq, on_connect);
    mosquitto_message_callback_set(g_mq, on_message);
    mosquitto_reconnect_delay_set(g_mq, 1, 10, true);
    int mrc = mosquitto_connect_async(g_mq, host, port, 30);
    if (mrc != MOSQ_ERR_SUCCESS)
        fprintf(stderr, "pizza-mqtt-bridge: the broker at %s is not reachable yet (%s); it "
                        "keeps trying\n", ep.broker, mosquitto_strerror(mrc));
    if (mosquitto_loop_start(g_mq) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "pizza-mqtt-bridge: cannot start the MQTT thread\n");
        return 1;
    }
    printf("pizza-mqtt-bridge: running (broker %s, cluster %s)\n", ep.broker, ep.cluster);
    fflush(stdout);

    /* The main thread: the feed's subscription (again whenever it ends),
     * and the stop signal. */
    struct timespec tick = {.tv_sec = 0, .tv_nsec = 200 * 1000000L};
    for (;;) {
        if (atomic_exchange(&g_feed_lost, false)) {
            uintptr_t gen = atomic_fetch_add(&g_feed_gen, 1) + 1;
            if (g_feed)
                quark_unsubscribe(g_feed);
            g_feed = NULL;
            if (quark_subscribe(g_client, pizza_OrderFeedActor_TYPE_NAME, PIZZA_FEED_ID, on_feed,
                                (void *)gen, &g_feed) != QUARK_OK) {
                g_feed = NULL;
                atomic_store(&g_feed_lost, true); /* the next tick tries again */
            }
        }
        if (sigtimedwait(&stop, NULL, &tick) > 0)
            break;
    }
    atomic_fetch_add(&g_feed_gen, 1); /* its end is ours */
    if (g_feed)
        quark_unsubscribe(g_feed);
    mosquitto_disconnect(g_mq);
    mosquitto_loop_stop(g_mq, true); /* no message callback (which calls actors) after this */
    quark_client_free(g_client);     /* no feed callback (which publishes) after this */
    mosquitto_destroy(g_mq);
    mosquitto_lib_cleanup();
    printf("pizza-mqtt-bridge: stopped: %llu messages, %llu driver updates, %llu dropped, %llu "
           "order changes published\n",
           (unsigned long long)atomic_load(&g_received), (unsigned long long)atomic_load(&g_ok),
           (unsigned long long)atomic_load(&g_dropped),
           (unsigned long long)atomic_load(&g_published));
    return 0;
}
