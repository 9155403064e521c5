/*
 * bridge_test.c - pizza-mqtt-bridge between a real mosquitto (Debian's
 * package, started here on a free port) and a pizza-silo process (SQLite in
 * a temporary directory), with a test MQTT client (libmosquitto) playing a
 * driver's app and a kitchen display.
 *
 *   driver_online  a driver comes online by publishing Available, and its
 *                  position reaches its actor
 *   delivery       MQTT positions -> DriverActor -> OrderActor: picked up at
 *                  the restaurant (OutForDelivery), delivered at the door;
 *                  each change published, retained, on pizza/orders/{id}/status
 *   bad_input      bad topics, ids, JSON and fields are dropped (logged and
 *                  counted), never fatal: a good message still works after
 *   restarts       the broker restarted, then the silo killed and restarted:
 *                  messages reach the actors again after each
 *   stop           SIGTERM: a clean exit, and its counts (8 dropped, 8 order
 *                  changes published)
 */
#include <arpa/inet.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../testutil.h"
#include "../silo_proc.h"
#include "../storage/redis_server.h"
#include "pizza_actors.h"

#define REST_LAT 52.5200
#define REST_LON 13.4050
#define ADDR_LAT 52.5300
#define ADDR_LON 13.4200

static char g_dir[64], g_cluster[32], g_broker[32];
static silo_proc g_silo, g_bridge;
static pid_t g_mosq;
static int g_silo_port, g_mq_port;
static quark_client *g_client;
static struct mosquitto *g_app; /* the test's MQTT client */

/* What the test's client got on pizza/orders/+/status. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_last_status[16][96]; /* "orderId status" */
static int g_n_status;

static void broker_start(void)
{
    char conf[128], text[256];
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", g_dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    snprintf(text, sizeof text, "listener %d 127.0.0.1\nallow_anonymous true\n"
             "persistence false\nlog_dest none\n", g_mq_port);
    fputs(text, f);
    fclose(f);
    char *argv[] = {"/usr/sbin/mosquitto", "-c", conf, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    assert_int_equal(posix_spawn(&g_mosq, argv[0], &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    /* Ready once it accepts connections. */
    bool up = TU_WAIT_UNTIL(({
                                int fd = socket(AF_INET, SOCK_STREAM, 0);
                                struct sockaddr_in a = {.sin_family = AF_INET,
                                                        .sin_port = htons((uint16_t)g_mq_port)};
                                a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                                int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
                                close(fd);
                                ok;
                            }),
                            10000);
    if (!up)
        fail_msg("mosquitto (Debian's mosquitto package) did not start on port %d", g_mq_port);
}

static void broker_stop(void)
{
    if (g_mosq > 0) {
        kill(g_mosq, SIGKILL);
        waitpid(g_mosq, NULL, 0);
        g_mosq = 0;
    }
}

static void silo_start(void)
{
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", g_silo_port);
    char *argv[] = {PIZZA_SILO, "--listen", listen, "--data-dir", g_dir, "--cluster-id",
                    g_cluster, "--bake-ms", "1000", "--nudge-ms", "1000", "--workers", "2",
                    "--restaurant", "52.52,13.405", NULL};
    silo_proc_start(&g_silo, argv);
}

static void on_app_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg)
{
    (void)m;
    (void)arg;
    char id[64] = "", st[32] = "";
    if (sscanf(msg->topic, "pizza/orders/%63[^/]/status", id) != 1 || !msg->payload)
        return;
    const char *p = strstr((const char *)msg->payload, "\"status\":\"");
    if (p)
        sscanf(p + 10, "%31[^\"]", st);
    pthread_mutex_lock(&g_mu);
    snprintf(g_last_status[g_n_status % 16], sizeof g_last_status[0], "%s %s", id, st);
    g_n_status++;
    pthread_mutex_unlock(&g_mu);
}

static bool app_saw(const char *id, const char *status)
{
    char want[96];
    snprintf(want, sizeof want, "%s %s", id, status);
    pthread_mutex_lock(&g_mu);
    bool saw = false;
    for (int i = 0; i < 16; i++)
        saw |= !strcmp(g_last_status[i], want);
    pthread_mutex_unlock(&g_mu);
    return saw;
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/quark-mq-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_cluster, sizeof g_cluster, "mq-%d", (int)getpid());
    g_mq_port = rs_free_port();
    g_silo_port = rs_free_port();
    snprintf(g_broker, sizeof g_broker, "127.0.0.1:%d", g_mq_port);
    broker_start();
    silo_start();
    char cluster[32];
    snprintf(cluster, sizeof cluster, "127.0.0.1:%d", g_silo_port);
    char *argv[] = {PIZZA_BRIDGE, "--broker", g_broker, "--cluster", cluster, "--cluster-id",
                    g_cluster, NULL};
    silo_proc_start_until(&g_bridge, argv, "subscribed"); /* connected to the broker */

    quark_client_opts co;
    quark_client_opts_init(&co);
    co.connection_string = cluster;
    co.cluster_id = g_cluster;
    co.default_deadline_ms = 5000;
    TU_OK(quark_client_create(&co, &g_client));
    TU_OK(quark_client_connect(g_client));

    mosquitto_lib_init();
    g_app = mosquitto_new(NULL, true, NULL);
    assert_non_null(g_app);
    mosquitto_message_callback_set(g_app, on_app_message);
    mosquitto_reconnect_delay_set(g_app, 1, 2, false);
    assert_int_equal(mosquitto_connect(g_app, "127.0.0.1", g_mq_port, 30), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_loop_start(g_app), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_subscribe(g_app, NULL, "pizza/orders/+/status", 1),
                     MOSQ_ERR_SUCCESS);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mosquitto_disconnect(g_app);
    mosquitto_loop_stop(g_app, true);
    mosquitto_destroy(g_app);
    mosquitto_lib_cleanup();
    quark_client_free(g_client);
    silo_proc_stop(&g_bridge, SIGKILL); /* (stopped already by test_stop) */
    silo_proc_stop(&g_silo, SIGKILL);
    broker_stop();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void publish(const char *topic, const char *payload)
{
    int rc = mosquitto_publish(g_app, NULL, topic, (int)strlen(payload), payload, 1, false);
    assert_int_equal(rc, MOSQ_ERR_SUCCESS);
}

/* A position; false if the test's client is not connected (yet). */
static bool try_publish_at(const char *driver, double lat, double lon)
{
    char topic[96], body[96];
    snprintf(topic, sizeof topic, "pizza/drivers/%s/location", driver);
    snprintf(body, sizeof body, "{\"lat\":%.6f,\"lon\":%.6f}", lat, lon);
    return mosquitto_publish(g_app, NULL, topic, (int)strlen(body), body, 1, false) ==
           MOSQ_ERR_SUCCESS;
}

static void publish_at(const char *driver, double lat, double lon)
{
    assert_true(try_publish_at(driver, lat, lon));
}

static Pizza__DriverState *driver(const char *id)
{
    quark_ref *r;
    TU_OK(pizza_DriverActor_ref(g_client, id, &r));
    Pizza__GetOrderRequest g = PIZZA__GET_ORDER_REQUEST__INIT;
    Pizza__DriverState *d = NULL;
    if (pizza_DriverActor_Get(r, &g, &d) != QUARK_OK)
        d = NULL;
    quark_ref_free(r);
    return d;
}

static bool driver_is(const char *id, Pizza__DriverStatus st, double lat)
{
    Pizza__DriverState *d = driver(id);
    bool ok = d && d->status == st && d->has_location && d->location &&
              d->location->lat > lat - 1e-6 && d->location->lat < lat + 1e-6;
    quark_msg_free(d);
    return ok;
}

static Pizza__OrderStatus order_status(const char *id)
{
    quark_ref *r;
    TU_OK(pizza_OrderActor_ref(g_client, id, &r));
    Pizza__GetOrderRequest g = PIZZA__GET_ORDER_REQUEST__INIT;
    Pizza__Order *o = NULL;
    Pizza__OrderStatus s = (Pizza__OrderStatus)-1;
    if (pizza_OrderActor_Get(r, &g, &o) == QUARK_OK)
        s = o->status;
    quark_msg_free(o);
    quark_ref_free(r);
    return s;
}

static void order_new(const char *id)
{
    quark_ref *r;
    TU_OK(pizza_OrderActor_ref(g_client, id, &r));
    Pizza__OrderItem it = PIZZA__ORDER_ITEM__INIT;
    it.pizza_type = "margherita";
    it.size = "medium";
    it.quantity = 1;
    Pizza__OrderItem *items[1] = {&it};
    Pizza__Location addr = PIZZA__LOCATION__INIT;
    addr.lat = ADDR_LAT;
    addr.lon = ADDR_LON;
    Pizza__CreateOrderRequest rq = PIZZA__CREATE_ORDER_REQUEST__INIT;
    rq.customer_id = "c-mq";
    rq.n_items = 1;
    rq.items = items;
    rq.delivery_address = &addr;
    TU_OK(pizza_OrderActor_Create(r, &rq, NULL));
    Pizza__OrderTransition t = PIZZA__ORDER_TRANSITION__INIT;
    TU_OK(pizza_OrderActor_Confirm(r, &t, NULL));
    quark_ref_free(r);
}

/* ---- cases ---- */

static void test_driver_online(void **state)
{
    (void)state;
    publish("pizza/drivers/d-mq1/status", "{\"status\":\"Available\"}");
    publish_at("d-mq1", REST_LAT + 0.0005, REST_LON);
    if (!TU_WAIT_UNTIL(driver_is("d-mq1", PIZZA__DRIVER_STATUS__AVAILABLE, REST_LAT + 0.0005),
                       10000))
        fail_msg("the driver's MQTT messages did not reach its actor within 10 s");
}

static void test_delivery(void **state)
{
    (void)state;
    order_new("o-mq");
    if (!TU_WAIT_UNTIL(order_status("o-mq") == PIZZA__ORDER_STATUS__DRIVER_ASSIGNED, 20000))
        fail_msg("o-mq did not get its driver (it is %s)",
                 pizza_order_status_name(order_status("o-mq")));
    publish_at("d-mq1", REST_LAT, REST_LON + 0.0001); /* at the restaurant: ~7 m */
    assert_true(TU_WAIT_UNTIL(order_status("o-mq") == PIZZA__ORDER_STATUS__OUT_FOR_DELIVERY,
                              10000));
    publish_at("d-mq1", (REST_LAT + ADDR_LAT) / 2, (REST_LON + ADDR_LON) / 2);
    publish_at("d-mq1", ADDR_LAT + 0.0001, ADDR_LON); /* at the door: ~11 m */
    assert_true(TU_WAIT_UNTIL(order_status("o-mq") == PIZZA__ORDER_STATUS__DELIVERED, 10000));
    /* Every change reached MQTT, retained: a display that connects now gets the last. */
    assert_true(TU_WAIT_UNTIL(app_saw("o-mq", "Delivered"), 10000));
    assert_true(app_saw("o-mq", "Baking"));
    Pizza__DriverState *d = driver("d-mq1");
    assert_non_null(d);
    assert_int_equal(d->delivered_today, 1);
    assert_int_equal(d->status, PIZZA__DRIVER_STATUS__AVAILABLE);
    quark_msg_free(d);
}

static void test_bad_input(void **state)
{
    (void)state;
    publish("pizza/drivers/d-mq1/location", "not json");
    publish("pizza/drivers/d-mq1/location", "{\"lat\":\"north\",\"lon\":1}");
    publish("pizza/drivers/d-mq1/location", "{\"lat\":95,\"lon\":1}");
    publish("pizza/drivers/d-mq1/location", "[1,2]");
    publish("pizza/drivers/d-mq1/status", "{\"status\":\"Flying\"}");
    publish("pizza/drivers/d-mq1/status", "{}");
    publish("pizza/drivers/a b/status", "{\"status\":\"Available\"}");
    publish("pizza/drivers/d-mq1/speed", "{\"kmh\":30}");
    publish("pizza/drivers/d-mq1/location", "");
    /* The bridge is still there, and a good message after works. */
    publish_at("d-mq1", REST_LAT + 0.0007, REST_LON);
    assert_true(TU_WAIT_UNTIL(driver_is("d-mq1", PIZZA__DRIVER_STATUS__AVAILABLE,
                                        REST_LAT + 0.0007),
                              10000));
    assert_int_equal(kill(g_bridge.pid, 0), 0);
}

static void test_restarts(void **state)
{
    (void)state;
    /* The broker restarts: both the bridge and the test's client reconnect
     * (persistent session: the bridge's subscriptions are kept). */
    broker_stop();
    broker_start();
    uint64_t t0 = tu_now_ms();
    bool ok = TU_WAIT_UNTIL((try_publish_at("d-mq1", REST_LAT + 0.0011, REST_LON),
                             tu_sleep_ms(200),
                             driver_is("d-mq1", PIZZA__DRIVER_STATUS__AVAILABLE, REST_LAT + 0.0011)),
                            30000);
    if (!ok)
        fail_msg("after the broker restarted, positions did not reach the driver within 30 s");
    printf("# restarts: broker back, a position reached the driver %llu ms later\n",
           (unsigned long long)(tu_now_ms() - t0));
    /* The silo is killed and started again (on its files). */
    silo_proc_stop(&g_silo, SIGKILL);
    silo_start();
    t0 = tu_now_ms();
    ok = TU_WAIT_UNTIL((try_publish_at("d-mq1", REST_LAT + 0.0013, REST_LON), tu_sleep_ms(200),
                        driver_is("d-mq1", PIZZA__DRIVER_STATUS__AVAILABLE, REST_LAT + 0.0013)),
                       30000);
    if (!ok)
        fail_msg("after the silo restarted, positions did not reach the driver within 30 s");
    printf("# restarts: silo back, a position reached the driver %llu ms later\n",
           (unsigned long long)(tu_now_ms() - t0));
}

/* SIGTERM: the bridge stops cleanly and its last line counts what it did:
 * the 8 bad messages it was sent (the 9th, on pizza/drivers/d-mq1/speed, is
 * no topic it subscribes to) and the o-mq's 8 changes it published. */
static void test_stop(void **state)
{
    (void)state;
    kill(g_bridge.pid, SIGTERM);
    char line[512];
    unsigned long long msgs = 0, ok = 0, dropped = 0, pub = 0;
    while (fgets(line, sizeof line, g_bridge.out))
        if (strstr(line, "stopped:"))
            sscanf(strstr(line, "stopped:"), "stopped: %llu messages, %llu driver updates, %llu "
                   "dropped, %llu", &msgs, &ok, &dropped, &pub);
    printf("# bridge: %llu messages, %llu driver updates, %llu dropped, %llu order changes "
           "published\n", msgs, ok, dropped, pub);
    int st = silo_proc_stop(&g_bridge, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_true(dropped >= 8); /* and those of the silo's restart, if any */
    assert_true(pub >= 8);
    assert_true(ok >= 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_driver_online),
        cmocka_unit_test(test_delivery),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_restarts),
        cmocka_unit_test(test_stop),
    };
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    return cmocka_run_group_tests(tests, setup, teardown);
}
