/*
 * pizza_test.c - Awesome Pizza's actors across real processes: two
 * pizza-silo processes with membership, directory, state and reminders in a
 * real redis-server (started here), driven by Quark's cluster client.
 *
 *   lifecycle    an order from Created to Delivered by itself: the kitchen
 *                and a chef prepare and bake it, the dispatcher gives it the
 *                nearest available driver, whose positions reach the order
 *                and whose arrival starts and completes the delivery; every
 *                status and position is an event, in order
 *   refusals     transitions not allowed (the message names both statuses),
 *                bad fields, unknown orders and drivers, cancel
 *   kill         a silo is killed with SIGKILL while the order bakes and is
 *                started again: the order still becomes Ready, gets its
 *                driver and is delivered (durable state and reminders)
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../testutil.h"
#include "../silo_proc.h"
#include "../storage/redis_server.h"
#include "pizza_actors.h"

#define N_SILOS 2
#define BAKE_MS 1000
#define REST_LAT 52.5200
#define REST_LON 13.4050
#define ADDR_LAT 52.5300
#define ADDR_LON 13.4200

static redis_server g_rs;
static char g_redis[64];
static char g_cluster[32];
static silo_proc g_silo[N_SILOS];
static int g_port[N_SILOS];

static void silo_start(int i)
{
    char listen[32], bake[16];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", g_port[i]);
    snprintf(bake, sizeof bake, "%d", BAKE_MS);
    char *argv[] = {PIZZA_SILO, "--listen", listen, "--redis", g_redis, "--cluster-id",
                    g_cluster, "--bake-ms", bake, "--nudge-ms", "1000", "--workers", "2",
                    "--heartbeat-ms", "200", "--failure-timeout-ms", "2000", "--restaurant",
                    "52.52,13.405", NULL};
    silo_proc_start(&g_silo[i], argv);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_cluster, sizeof g_cluster, "pz-%d-%u", (int)getpid(), (unsigned)tu_now_ms() % 1000);
    for (int i = 0; i < N_SILOS; i++) {
        g_port[i] = rs_free_port();
        silo_start(i);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N_SILOS; i++)
        silo_proc_stop(&g_silo[i], SIGKILL);
    return 0;
}

static quark_client *client_new(void)
{
    char cs[64];
    snprintf(cs, sizeof cs, "127.0.0.1:%d,127.0.0.1:%d", g_port[0], g_port[1]);
    quark_client_opts co;
    quark_client_opts_init(&co);
    co.connection_string = cs;
    co.cluster_id = g_cluster;
    co.default_deadline_ms = 10000;
    co.retry.initial_backoff_ms = 20;
    co.retry.max_backoff_ms = 200;
    quark_client *c;
    TU_OK(quark_client_create(&co, &c));
    TU_OK(quark_client_connect(c));
    return c;
}

/* ---- calls ---- */

typedef enum { O_GET, O_CONFIRM, O_CANCEL, O_START, O_COMPLETE } order_op;

static quark_err order_call(quark_client *c, const char *id, order_op op, Pizza__Order **out)
{
    quark_ref *r;
    TU_OK(pizza_OrderActor_ref(c, id, &r));
    Pizza__OrderTransition t = PIZZA__ORDER_TRANSITION__INIT;
    t.reason = "changed my mind";
    Pizza__GetOrderRequest g = PIZZA__GET_ORDER_REQUEST__INIT;
    Pizza__Order *o = NULL;
    quark_err rc = op == O_GET       ? pizza_OrderActor_Get(r, &g, &o)
                   : op == O_CONFIRM ? pizza_OrderActor_Confirm(r, &t, &o)
                   : op == O_CANCEL  ? pizza_OrderActor_Cancel(r, &t, &o)
                   : op == O_START   ? pizza_OrderActor_StartDelivery(r, &t, &o)
                                     : pizza_OrderActor_CompleteDelivery(r, &t, &o);
    quark_ref_free(r);
    if (out)
        *out = o;
    else
        quark_msg_free(o);
    return rc;
}

static Pizza__OrderStatus status_of(quark_client *c, const char *id)
{
    Pizza__Order *o = NULL;
    if (order_call(c, id, O_GET, &o) != QUARK_OK)
        return (Pizza__OrderStatus)-1;
    Pizza__OrderStatus s = o->status;
    quark_msg_free(o);
    return s;
}

static quark_err create_order(quark_client *c, const char *id, const char *customer,
                              const char *size, uint32_t qty, Pizza__Order **out)
{
    quark_ref *r;
    TU_OK(pizza_OrderActor_ref(c, id, &r));
    Pizza__OrderItem it = PIZZA__ORDER_ITEM__INIT;
    it.pizza_type = "margherita";
    it.size = (char *)size;
    it.quantity = qty;
    Pizza__OrderItem *items[1] = {&it};
    Pizza__Location addr = PIZZA__LOCATION__INIT;
    addr.lat = ADDR_LAT;
    addr.lon = ADDR_LON;
    Pizza__CreateOrderRequest rq = PIZZA__CREATE_ORDER_REQUEST__INIT;
    rq.customer_id = (char *)customer;
    rq.n_items = 1;
    rq.items = items;
    rq.delivery_address = &addr;
    Pizza__Order *o = NULL;
    quark_err rc = pizza_OrderActor_Create(r, &rq, &o);
    quark_ref_free(r);
    if (out)
        *out = o;
    else
        quark_msg_free(o);
    return rc;
}

static Pizza__DriverState *driver_get(quark_client *c, const char *id)
{
    quark_ref *r;
    TU_OK(pizza_DriverActor_ref(c, id, &r));
    Pizza__GetOrderRequest g = PIZZA__GET_ORDER_REQUEST__INIT;
    Pizza__DriverState *d = NULL;
    TU_OK(pizza_DriverActor_Get(r, &g, &d));
    quark_ref_free(r);
    return d;
}

static void driver_online(quark_client *c, const char *id, const char *name, double lat,
                          double lon)
{
    quark_ref *r;
    TU_OK(pizza_DriverActor_ref(c, id, &r));
    Pizza__RegisterDriverRequest reg = PIZZA__REGISTER_DRIVER_REQUEST__INIT;
    reg.name = (char *)name;
    TU_OK(pizza_DriverActor_Initialize(r, &reg, NULL));
    Pizza__Location l = PIZZA__LOCATION__INIT;
    l.lat = lat;
    l.lon = lon;
    Pizza__DriverLocationUpdate u = PIZZA__DRIVER_LOCATION_UPDATE__INIT;
    u.location = &l;
    TU_OK(pizza_DriverActor_UpdateLocation(r, &u, NULL));
    Pizza__DriverStatusUpdate s = PIZZA__DRIVER_STATUS_UPDATE__INIT;
    s.status = PIZZA__DRIVER_STATUS__AVAILABLE;
    TU_OK(pizza_DriverActor_UpdateStatus(r, &s, NULL));
    quark_ref_free(r);
    /* The driver reports to the dispatcher on its own (asynchronously):
     * wait until the dispatcher has it available, where it is. */
    TU_OK(pizza_DispatcherActor_ref(c, PIZZA_DISPATCHER_ID, &r));
    Pizza__GetOrderRequest g = PIZZA__GET_ORDER_REQUEST__INIT;
    bool known = false;
    for (uint64_t end = tu_now_ms() + 10000; !known && tu_now_ms() < end;) {
        Pizza__DispatcherView *v = NULL;
        TU_OK(pizza_DispatcherActor_Get(r, &g, &v));
        for (size_t i = 0; i < v->n_drivers; i++)
            known |= !strcmp(v->drivers[i]->driver_id, id) &&
                     v->drivers[i]->status == PIZZA__DRIVER_STATUS__AVAILABLE &&
                     v->drivers[i]->has_location;
        quark_msg_free(v);
        if (!known)
            tu_sleep_ms(5);
    }
    quark_ref_free(r);
    if (!known)
        fail_msg("the dispatcher did not learn that driver %s is available within 10 s", id);
}

static void driver_move(quark_client *c, const char *id, double lat, double lon)
{
    quark_ref *r;
    TU_OK(pizza_DriverActor_ref(c, id, &r));
    Pizza__Location l = PIZZA__LOCATION__INIT;
    l.lat = lat;
    l.lon = lon;
    Pizza__DriverLocationUpdate u = PIZZA__DRIVER_LOCATION_UPDATE__INIT;
    u.location = &l;
    TU_OK(pizza_DriverActor_UpdateLocation(r, &u, NULL));
    quark_ref_free(r);
}

/* ---- an order's events ---- */

typedef struct seen {
    pthread_mutex_t mu;
    Pizza__OrderStatus status[32];
    int n_status;
    int n_location;
    uint64_t last_seq;
    bool out_of_order;
} seen;

static void on_event(const quark_event *ev, quark_err end, const char *msg, void *arg)
{
    (void)end;
    (void)msg;
    seen *s = arg;
    if (!ev)
        return;
    pthread_mutex_lock(&s->mu);
    if (!strcmp(ev->event_type, "pizza.OrderStatusEvent")) {
        Pizza__OrderStatusEvent *e =
            pizza__order_status_event__unpack(NULL, ev->payload_len, ev->payload);
        if (e) {
            if (s->n_status < 32)
                s->status[s->n_status++] = e->status;
            s->out_of_order |= e->seq <= s->last_seq;
            s->last_seq = e->seq;
            pizza__order_status_event__free_unpacked(e, NULL);
        }
    } else if (!strcmp(ev->event_type, "pizza.DriverLocationEvent")) {
        Pizza__DriverLocationEvent *e =
            pizza__driver_location_event__unpack(NULL, ev->payload_len, ev->payload);
        if (e) {
            s->n_location++;
            s->out_of_order |= e->seq <= s->last_seq;
            s->last_seq = e->seq;
            pizza__driver_location_event__free_unpacked(e, NULL);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

static bool wait_status(quark_client *c, const char *id, Pizza__OrderStatus want, int ms)
{
    return TU_WAIT_UNTIL(status_of(c, id) == want, ms);
}

/* ---- cases ---- */

static void test_lifecycle(void **state)
{
    (void)state;
    quark_client *c = client_new();
    driver_online(c, "d-far", "Bo", REST_LAT + 0.05, REST_LON); /* ~5.5 km away */
    driver_online(c, "d-near", "Ann", REST_LAT + 0.001, REST_LON); /* ~110 m away */
    seen s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    quark_subscription *sub;
    TU_OK(quark_subscribe(c, pizza_OrderActor_TYPE_NAME, "o-life", on_event, &s, &sub));

    Pizza__Order *o = NULL;
    uint64_t t0 = tu_now_ms();
    TU_OK(create_order(c, "o-life", "c-1", "medium", 2, &o));
    assert_int_equal(o->status, PIZZA__ORDER_STATUS__CREATED);
    assert_int_equal(o->total_cents, 1800);
    quark_msg_free(o);
    TU_OK(order_call(c, "o-life", O_CONFIRM, NULL));
    /* By itself: the kitchen, a chef, the oven, the dispatcher. */
    if (!wait_status(c, "o-life", PIZZA__ORDER_STATUS__DRIVER_ASSIGNED, 20000))
        fail_msg("o-life did not get a driver within 20 s (it is %s)",
                 pizza_order_status_name(status_of(c, "o-life")));
    uint64_t assigned_ms = tu_now_ms() - t0;
    TU_OK(order_call(c, "o-life", O_GET, &o));
    printf("# lifecycle: Created -> DriverAssigned in %llu ms (bake %d ms), driver %s, chef %s\n",
           (unsigned long long)assigned_ms, BAKE_MS, o->driver_id, o->chef_id);
    assert_string_equal(o->driver_id, "d-near"); /* the nearest available one */
    assert_true(strncmp(o->chef_id, "chef-", 5) == 0);
    quark_msg_free(o);

    /* The driver drives: to the restaurant (picked up), halfway, to the door. */
    driver_move(c, "d-near", REST_LAT + 0.0001, REST_LON); /* ~11 m */
    assert_true(wait_status(c, "o-life", PIZZA__ORDER_STATUS__OUT_FOR_DELIVERY, 10000));
    driver_move(c, "d-near", (REST_LAT + ADDR_LAT) / 2, (REST_LON + ADDR_LON) / 2);
    assert_true(TU_WAIT_UNTIL(({
                                  Pizza__Order *x = NULL;
                                  bool moved = order_call(c, "o-life", O_GET, &x) == QUARK_OK &&
                                               x->driver_location &&
                                               x->driver_location->lat > REST_LAT + 0.001;
                                  quark_msg_free(x);
                                  moved;
                              }),
                              10000));
    driver_move(c, "d-near", ADDR_LAT, ADDR_LON + 0.0002); /* ~14 m from the door */
    assert_true(wait_status(c, "o-life", PIZZA__ORDER_STATUS__DELIVERED, 10000));
    Pizza__DriverState *d = NULL;
    assert_true(TU_WAIT_UNTIL((quark_msg_free(d), d = driver_get(c, "d-near"),
                               d->status == PIZZA__DRIVER_STATUS__AVAILABLE),
                              10000));
    assert_int_equal(d->delivered_today, 1);
    assert_string_equal(d->current_order_id, "");
    quark_msg_free(d);

    TU_OK(order_call(c, "o-life", O_GET, &o));
    assert_int_equal(o->n_history, 8);
    const Pizza__OrderStatus want[] = {
        PIZZA__ORDER_STATUS__CREATED,         PIZZA__ORDER_STATUS__CONFIRMED,
        PIZZA__ORDER_STATUS__PREPARING,       PIZZA__ORDER_STATUS__BAKING,
        PIZZA__ORDER_STATUS__READY,           PIZZA__ORDER_STATUS__DRIVER_ASSIGNED,
        PIZZA__ORDER_STATUS__OUT_FOR_DELIVERY, PIZZA__ORDER_STATUS__DELIVERED};
    for (int i = 0; i < 8; i++)
        assert_int_equal(o->history[i]->status, want[i]);
    quark_msg_free(o);
    /* Every change as an event, in order, and the driver's positions. */
    if (!TU_WAIT_UNTIL(({
                           pthread_mutex_lock(&s.mu);
                           int n = s.n_status;
                           pthread_mutex_unlock(&s.mu);
                           n >= 8;
                       }),
                       15000)) {
        pthread_mutex_lock(&s.mu);
        char got[256] = "";
        for (int i = 0; i < s.n_status; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), " %s",
                     pizza_order_status_name(s.status[i]));
        pthread_mutex_unlock(&s.mu);
        fail_msg("the subscriber saw %d status events in 15 s:%s", s.n_status, got);
    }
    quark_unsubscribe(sub);
    pthread_mutex_lock(&s.mu);
    printf("# lifecycle: %d status events, %d location events\n", s.n_status, s.n_location);
    assert_int_equal(s.n_status, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(s.status[i], want[i]);
    assert_true(s.n_location >= 2);
    assert_false(s.out_of_order);
    pthread_mutex_unlock(&s.mu);
    quark_client_free(c);
}

static void expect_error(quark_err rc, quark_err want, const char *a, const char *b)
{
    if (rc != want)
        fail_msg("got %s (%s), wanted %s", quark_errname(rc), quark_last_error(),
                 quark_errname(want));
    if (a && !strstr(quark_last_error(), a))
        fail_msg("'%s' does not name '%s'", quark_last_error(), a);
    if (b && !strstr(quark_last_error(), b))
        fail_msg("'%s' does not name '%s'", quark_last_error(), b);
}

static void test_refusals(void **state)
{
    (void)state;
    quark_client *c = client_new();
    /* Never created: Get says so (and leaves nothing), transitions fail. */
    Pizza__Order *o = NULL;
    TU_OK(order_call(c, "o-nobody", O_GET, &o));
    assert_int_equal(o->status, PIZZA__ORDER_STATUS__ORDER_STATUS_NONE);
    quark_msg_free(o);
    expect_error(order_call(c, "o-nobody", O_CONFIRM, NULL), QUARK_EINVAL, "does not exist",
                 NULL);
    Pizza__DriverState *d = driver_get(c, "d-nobody");
    assert_false(d->registered);
    quark_msg_free(d);

    /* Bad fields. */
    expect_error(create_order(c, "o-bad", "", "medium", 1, NULL), QUARK_EINVAL, "customerId",
                 NULL);
    expect_error(create_order(c, "o-bad", "c", "huge", 1, NULL), QUARK_EINVAL, "size", NULL);
    expect_error(create_order(c, "o-bad", "c", "small", 0, NULL), QUARK_EINVAL, "quantity",
                 NULL);
    assert_int_equal(status_of(c, "o-bad"), PIZZA__ORDER_STATUS__ORDER_STATUS_NONE);

    /* Transitions out of order name both statuses. */
    TU_OK(create_order(c, "o-ref", "c-2", "large", 1, &o));
    assert_int_equal(o->total_cents, 1170);
    quark_msg_free(o);
    expect_error(create_order(c, "o-ref", "c-2", "large", 1, NULL), QUARK_EACTOR,
                 "already exists", NULL);
    expect_error(order_call(c, "o-ref", O_START, NULL), QUARK_EACTOR, "Created",
                 "OutForDelivery");
    expect_error(order_call(c, "o-ref", O_COMPLETE, NULL), QUARK_EACTOR, "Created",
                 "Delivered");
    TU_OK(order_call(c, "o-ref", O_CANCEL, &o));
    assert_int_equal(o->status, PIZZA__ORDER_STATUS__CANCELLED);
    assert_string_equal(o->cancel_reason, "changed my mind");
    quark_msg_free(o);
    TU_OK(order_call(c, "o-ref", O_CANCEL, NULL)); /* again: the same */
    expect_error(order_call(c, "o-ref", O_CONFIRM, NULL), QUARK_EACTOR, "Cancelled",
                 "Confirmed");
    quark_client_free(c);
}

static void test_kill(void **state)
{
    (void)state;
    quark_client *c = client_new();
    driver_online(c, "d-k", "Cy", REST_LAT, REST_LON + 0.001);
    TU_OK(create_order(c, "o-kill", "c-3", "small", 1, NULL));
    TU_OK(order_call(c, "o-kill", O_CONFIRM, NULL));
    if (!TU_WAIT_UNTIL(status_of(c, "o-kill") >= PIZZA__ORDER_STATUS__BAKING, 20000))
        fail_msg("o-kill did not reach Baking");
    /* Kill either silo mid-bake (the one that hosts what is random). */
    int victim = (int)(tu_now_ms() & 1);
    uint64_t t0 = tu_now_ms();
    silo_proc_stop(&g_silo[victim], SIGKILL);
    silo_start(victim);
    if (!wait_status(c, "o-kill", PIZZA__ORDER_STATUS__DRIVER_ASSIGNED, 30000))
        fail_msg("after silo %d was killed, o-kill did not get its driver within 30 s (it is "
                 "%s)", victim + 1, pizza_order_status_name(status_of(c, "o-kill")));
    printf("# kill: silo %d killed while o-kill baked; DriverAssigned %llu ms later\n",
           victim + 1, (unsigned long long)(tu_now_ms() - t0));
    TU_OK(order_call(c, "o-kill", O_START, NULL)); /* a person, through the gateway */
    TU_OK(order_call(c, "o-kill", O_COMPLETE, NULL));
    Pizza__DriverState *d = NULL;
    assert_true(TU_WAIT_UNTIL((quark_msg_free(d), d = driver_get(c, "d-k"),
                               d->status == PIZZA__DRIVER_STATUS__AVAILABLE &&
                                   d->delivered_today == 1),
                              10000));
    quark_msg_free(d);
    quark_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_kill),
    };
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (rs_start(&g_rs, 0) != 0) {
        fprintf(stderr, "could not start redis-server (Debian's redis-server package)\n");
        return 1;
    }
    snprintf(g_redis, sizeof g_redis, "redis://127.0.0.1:%d", g_rs.port);
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    rs_stop(&g_rs);
    return failed;
}
