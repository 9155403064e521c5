/*
 * gateway_test.c - pizza-gateway's REST API over real sockets: a pizza-silo
 * process (SQLite in a temporary directory) and a pizza-gateway process,
 * spoken to with plain HTTP/1.1 requests.
 *
 *   orders      create (201 + Location), get, 404, confirm, 409 for a
 *               transition the status does not allow, cancel with a reason
 *   bad_input   bad JSON, each missing or invalid field, a body over 64 KiB,
 *               malformed ids, unknown paths (404), wrong methods (405)
 *   drivers     register (201 + Location), get, list, 404
 *   lifecycle   an order placed and driven through REST to Delivered, its
 *               driver made available the way the MQTT bridge does; tracked
 *               over Server-Sent Events from before it was confirmed (the
 *               whole order first, then every status in order, the stream
 *               ending after Delivered) and resumed with a Last-Event-ID (the
 *               rest, no gap, no repeat)
 *   outage      the silo killed: /healthz and calls answer 503 within the
 *               deadline (never hang); started again on its files: the order
 *               is still there
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../testutil.h"
#include "../silo_proc.h"
#include "../storage/redis_server.h"
#include "pizza_actors.h"

static char g_dir[64];
static silo_proc g_silo, g_gw;
static int g_silo_port, g_gw_port;
static char g_cluster[32];

static void silo_start(void)
{
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", g_silo_port);
    char *argv[] = {PIZZA_SILO, "--listen", listen, "--data-dir", g_dir, "--cluster-id",
                    g_cluster, "--bake-ms", "1000", "--nudge-ms", "1000", "--workers", "2",
                    "--restaurant", "52.52,13.405", NULL};
    silo_proc_start(&g_silo, argv);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/quark-gw-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_cluster, sizeof g_cluster, "gw-%d", (int)getpid());
    g_silo_port = rs_free_port();
    silo_start();
    char listen[32], cluster[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", rs_free_port());
    snprintf(cluster, sizeof cluster, "127.0.0.1:%d", g_silo_port);
    char *argv[] = {PIZZA_GATEWAY, "--listen", listen, "--cluster", cluster, "--cluster-id",
                    g_cluster, "--deadline-ms", "1500", NULL};
    silo_proc_start(&g_gw, argv);
    g_gw_port = g_gw.port;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    silo_proc_stop(&g_gw, SIGTERM);
    silo_proc_stop(&g_silo, SIGKILL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- a small HTTP/1.1 client: one request per connection ---- */

typedef struct resp {
    int status;
    char head[4096];
    char *body;       /* NUL-terminated, malloc'd */
    size_t len;
    cJSON *json;      /* the body parsed, or NULL */
} resp;

static void resp_free(resp *r)
{
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

static void http(const char *method, const char *path, const char *body, size_t blen, resp *r)
{
    memset(r, 0, sizeof *r);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_gw_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr, "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", method,
                     path, body ? blen : 0);
    assert_int_equal(send(fd, hdr, (size_t)n, MSG_NOSIGNAL), n);
    for (size_t off = 0; body && off < blen;) {
        ssize_t w = send(fd, body + off, blen - off, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server may answer (and close) before reading it all */
        off += (size_t)w;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t got = recv(fd, buf + len, cap - len - 1, 0);
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    close(fd);
    buf[len] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    assert_non_null(end);
    size_t hl = (size_t)(end - buf);
    memcpy(r->head, buf, hl < sizeof r->head - 1 ? hl : sizeof r->head - 1);
    assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &r->status), 1);
    r->len = len - hl - 4;
    r->body = malloc(r->len + 1);
    memcpy(r->body, end + 4, r->len + 1);
    r->json = cJSON_Parse(r->body);
    free(buf);
}

static void req(const char *method, const char *path, const char *body, resp *r)
{
    http(method, path, body, body ? strlen(body) : 0, r);
}

static const char *str(const resp *r, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->json, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* An error answer: its status, {error, message} with message naming `a`. */
static void expect(const char *method, const char *path, const char *body, int status,
                   const char *a)
{
    resp r;
    req(method, path, body, &r);
    if (r.status != status)
        fail_msg("%s %s -> %d %s (wanted %d)", method, path, r.status, r.body, status);
    assert_non_null(r.json);
    assert_true(*str(&r, "error"));
    if (a && !strstr(str(&r, "message"), a))
        fail_msg("%s %s: '%s' does not name '%s'", method, path, str(&r, "message"), a);
    resp_free(&r);
}

#define ORDER_BODY \
    "{\"customerId\":\"c-1\",\"items\":[{\"pizzaType\":\"margherita\",\"size\":\"large\"," \
    "\"quantity\":2}],\"deliveryAddress\":{\"lat\":52.53,\"lon\":13.42}}"

/* POST an order; its id into id[]. */
static void place(char *id, size_t cap)
{
    resp r;
    req("POST", "/api/orders", ORDER_BODY, &r);
    if (r.status != 201)
        fail_msg("POST /api/orders -> %d %s", r.status, r.body);
    snprintf(id, cap, "%s", str(&r, "orderId"));
    char want[128];
    snprintf(want, sizeof want, "Location: /api/orders/%s", id);
    assert_non_null(strstr(r.head, want));
    resp_free(&r);
}

static const char *status_of(const char *id, resp *r)
{
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s", id);
    req("GET", path, NULL, r);
    return str(r, "status");
}

/* ---- cases ---- */

static void test_orders(void **state)
{
    (void)state;
    char id[64], path[160];
    place(id, sizeof id);
    resp r;
    assert_string_equal(status_of(id, &r), "Created");
    assert_int_equal(r.status, 200);
    assert_true(cJSON_GetObjectItem(r.json, "totalAmount")->valuedouble == 23.4);
    assert_string_equal(str(&r, "customerId"), "c-1");
    assert_true(strlen(str(&r, "createdAt")) == 24); /* 2026-12-08T00:31:14.123Z */
    resp_free(&r);
    expect("GET", "/api/orders/order-nobody", NULL, 404, "does not exist");
    snprintf(path, sizeof path, "/api/orders/%s/start-delivery", id);
    expect("POST", path, NULL, 409, "Created");
    snprintf(path, sizeof path, "/api/orders/%s/confirm", id);
    req("POST", path, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(str(&r, "status"), "Confirmed");
    resp_free(&r);
    snprintf(path, sizeof path, "/api/orders/%s/cancel", id);
    req("POST", path, "{\"reason\":\"too hungry to wait\"}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(str(&r, "status"), "Cancelled");
    assert_string_equal(str(&r, "cancelReason"), "too hungry to wait");
    resp_free(&r);
    snprintf(path, sizeof path, "/api/orders/%s/confirm", id);
    expect("POST", path, NULL, 409, "Cancelled");
    expect("POST", "/api/orders/order-nobody/confirm", NULL, 404, "does not exist");
    /* A 404 leaves no order behind. */
    expect("GET", "/api/orders/order-nobody", NULL, 404, NULL);
}

static void test_bad_input(void **state)
{
    (void)state;
    expect("POST", "/api/orders", "{not json", 400, "JSON");
    expect("POST", "/api/orders", "[1,2]", 400, "object");
    expect("POST", "/api/orders",
           "{\"items\":[{\"pizzaType\":\"x\",\"size\":\"small\",\"quantity\":1}],"
           "\"deliveryAddress\":{\"lat\":1,\"lon\":1}}", 400, "customerId");
    expect("POST", "/api/orders", "{\"customerId\":\"c\",\"items\":[],"
           "\"deliveryAddress\":{\"lat\":1,\"lon\":1}}", 400, "items");
    expect("POST", "/api/orders", "{\"customerId\":\"c\",\"items\":[{\"pizzaType\":\"x\","
           "\"size\":\"huge\",\"quantity\":1}],\"deliveryAddress\":{\"lat\":1,\"lon\":1}}", 400,
           "size");
    expect("POST", "/api/orders", "{\"customerId\":\"c\",\"items\":[{\"pizzaType\":\"x\","
           "\"size\":\"small\",\"quantity\":0}],\"deliveryAddress\":{\"lat\":1,\"lon\":1}}", 400,
           "quantity");
    expect("POST", "/api/orders", "{\"customerId\":\"c\",\"items\":[{\"pizzaType\":\"x\","
           "\"size\":\"small\",\"quantity\":1.5}],\"deliveryAddress\":{\"lat\":1,\"lon\":1}}",
           400, "quantity");
    expect("POST", "/api/orders", "{\"customerId\":\"c\",\"items\":[{\"pizzaType\":\"x\","
           "\"size\":\"small\",\"quantity\":1}],\"deliveryAddress\":{\"lat\":91,\"lon\":1}}",
           400, "deliveryAddress");
    expect("POST", "/api/orders", "{\"customerId\":\"c\",\"items\":[{\"pizzaType\":\"x\","
           "\"size\":\"small\",\"quantity\":1}]}", 400, "deliveryAddress");
    size_t big = 70 * 1024;
    char *b = malloc(big);
    memset(b, ' ', big);
    b[0] = '{';
    b[big - 1] = '}';
    resp r;
    http("POST", "/api/orders", b, big, &r);
    free(b);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(str(&r, "message"), "65536"));
    resp_free(&r);
    expect("GET", "/api/orders/bad%20id", NULL, 400, "order id");
    expect("GET", "/api/nothing", NULL, 404, NULL);
    expect("GET", "/api/orders/x/eat", NULL, 404, NULL);
    expect("DELETE", "/api/orders", NULL, 405, "POST");
    expect("POST", "/api/orders/x", NULL, 405, "GET");
    expect("GET", "/api/orders/x/confirm", NULL, 405, "POST");
    expect("PUT", "/api/drivers", NULL, 405, NULL);
    expect("POST", "/api/orders/x/cancel", "{\"reason\":42}", 400, "reason");
}

static void test_drivers(void **state)
{
    (void)state;
    expect("POST", "/api/drivers", "{\"driverId\":\"a b\",\"name\":\"Ann\"}", 400, "driverId");
    expect("POST", "/api/drivers", "{\"driverId\":\"d-1\"}", 400, "name");
    resp r;
    req("POST", "/api/drivers", "{\"driverId\":\"d-1\",\"name\":\"Ann\"}", &r);
    assert_int_equal(r.status, 201);
    assert_non_null(strstr(r.head, "Location: /api/drivers/d-1"));
    assert_string_equal(str(&r, "status"), "Offline");
    resp_free(&r);
    req("GET", "/api/drivers/d-1", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(str(&r, "name"), "Ann");
    resp_free(&r);
    req("GET", "/api/drivers", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(cJSON_IsArray(r.json));
    bool found = false;
    for (int i = 0; i < cJSON_GetArraySize(r.json); i++) {
        const cJSON *d = cJSON_GetObjectItem(cJSON_GetArrayItem(r.json, i), "driverId");
        found |= cJSON_IsString(d) && !strcmp(d->valuestring, "d-1");
    }
    assert_true(found);
    resp_free(&r);
    expect("GET", "/api/drivers/d-nobody", NULL, 404, "does not exist");
}

/* Make a driver available at (lat, lon) the way the MQTT bridge does:
 * DriverActor calls. */
static void driver_available(const char *id, double lat, double lon)
{
    char cs[32];
    snprintf(cs, sizeof cs, "127.0.0.1:%d", g_silo_port);
    quark_client_opts co;
    quark_client_opts_init(&co);
    co.connection_string = cs;
    co.cluster_id = g_cluster;
    quark_client *c;
    TU_OK(quark_client_create(&co, &c));
    TU_OK(quark_client_connect(c));
    quark_ref *r;
    TU_OK(pizza_DriverActor_ref(c, id, &r));
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
    quark_client_free(c);
}

/* ---- Server-Sent Events ---- */

/* Open GET path (with a Last-Event-ID when last > 0); the socket. */
static int sse_open(const char *path, unsigned long last)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_gw_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char rq[512], lei[64] = "";
    if (last)
        snprintf(lei, sizeof lei, "Last-Event-ID: %lu\r\n", last);
    int n = snprintf(rq, sizeof rq, "GET %s HTTP/1.1\r\nHost: localhost\r\nAccept: "
                     "text/event-stream\r\n%sConnection: close\r\n\r\n", path, lei);
    assert_int_equal(send(fd, rq, (size_t)n, MSG_NOSIGNAL), n);
    return fd;
}

/* Read until `until` was seen (NULL: until the server ends the stream, or
 * 30 s of silence); what was read before (prefix, malloc'd or NULL) comes
 * first. */
static char *sse_read_until(int fd, char *prefix, const char *until)
{
    size_t cap = 1 << 16, len = prefix ? strlen(prefix) : 0;
    char *buf = malloc(cap > len * 2 ? cap : (cap = len * 2 + 4096));
    if (prefix)
        memcpy(buf, prefix, len);
    buf[len] = '\0';
    free(prefix);
    while (!until || !strstr(buf, until)) {
        if (len + 4096 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t got = recv(fd, buf + len, cap - len - 1, 0);
        if (got <= 0)
            break;
        len += (size_t)got;
        buf[len] = '\0';
    }
    if (!until)
        close(fd);
    return buf;
}

typedef struct sse_seen {
    int n;
    unsigned long id[64];
    char event[64][16];
    char status[64][24];
} sse_seen;

/* The messages of a stream: each "id:", "event:" and the status in "data:". */
static void sse_parse(const char *text, sse_seen *s)
{
    memset(s, 0, sizeof *s);
    for (const char *p = strstr(text, "\r\n\r\n"); p && s->n < 64; p = strstr(p, "\nid: ")) {
        p = strstr(p, "id: ");
        if (!p)
            break;
        int i = s->n++;
        s->id[i] = strtoul(p + 4, NULL, 10);
        sscanf(strstr(p, "event: ") + 7, "%15s", s->event[i]);
        const char *st = strstr(p, "\"status\":\"");
        const char *next = strstr(p + 4, "\nid: ");
        if (st && (!next || st < next))
            sscanf(st + 10, "%23[^\"]", s->status[i]);
        p += 4;
    }
}

static void test_lifecycle(void **state)
{
    (void)state;
    resp r;
    req("POST", "/api/drivers", "{\"driverId\":\"d-rest\",\"name\":\"Rita\"}", &r);
    assert_int_equal(r.status, 201);
    resp_free(&r);
    driver_available("d-rest", 52.5201, 13.4051);
    char id[64], path[160];
    place(id, sizeof id);
    snprintf(path, sizeof path, "/api/orders/%s/track", id);
    int live = sse_open(path, 0); /* tracked from before it is confirmed */
    char *head = sse_read_until(live, NULL, "event: order"); /* it is open */
    assert_non_null(strstr(head, "event: order"));
    snprintf(path, sizeof path, "/api/orders/%s/confirm", id);
    req("POST", path, NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    bool assigned = TU_WAIT_UNTIL(({
                                      bool a = !strcmp(status_of(id, &r), "DriverAssigned");
                                      if (a)
                                          assert_string_equal(str(&r, "driverId"), "d-rest");
                                      resp_free(&r);
                                      a;
                                  }),
                                  20000);
    if (!assigned)
        fail_msg("the order did not get its driver within 20 s (it is %s)", status_of(id, &r));
    snprintf(path, sizeof path, "/api/orders/%s/start-delivery", id);
    req("POST", path, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(str(&r, "status"), "OutForDelivery");
    resp_free(&r);
    snprintf(path, sizeof path, "/api/orders/%s/complete-delivery", id);
    req("POST", path, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(str(&r, "status"), "Delivered");
    const cJSON *h = cJSON_GetObjectItem(r.json, "history");
    assert_int_equal(cJSON_GetArraySize(h), 8);
    resp_free(&r);

    /* The live stream: the whole order, then each change, then the end. */
    static const char *const order[] = {"Confirmed", "Preparing", "Baking", "Ready",
                                        "DriverAssigned", "OutForDelivery", "Delivered"};
    char *text = sse_read_until(live, head, NULL);
    assert_non_null(strstr(text, "Content-Type: text/event-stream"));
    sse_seen s;
    sse_parse(text, &s);
    printf("# track: %d messages, the first '%s' (id %lu), the last '%s' (id %lu)\n", s.n,
           s.event[0], s.id[0], s.status[s.n - 1], s.id[s.n - 1]);
    assert_string_equal(s.event[0], "order");
    assert_string_equal(s.status[0], "Created");
    int k = 0;
    for (int i = 1; i < s.n; i++) {
        assert_true(s.id[i] > s.id[i - 1]); /* in order, no repeat */
        if (!strcmp(s.event[i], "status")) {
            assert_true(k < 7);
            assert_string_equal(s.status[i], order[k]);
            k++;
        }
    }
    assert_int_equal(k, 7); /* every change, and the stream ended after Delivered */
    free(text);
    /* Resumed after id 3: the rest of the statuses, then the end. */
    snprintf(path, sizeof path, "/api/orders/%s/track", id);
    text = sse_read_until(sse_open(path, 3), NULL, NULL);
    sse_parse(text, &s);
    assert_true(s.n >= 1);
    assert_int_equal(s.id[0], 4);
    assert_string_equal(s.status[s.n - 1], "Delivered");
    for (int i = 1; i < s.n; i++)
        assert_true(s.id[i] > s.id[i - 1]);
    free(text);
    expect("GET", "/api/orders/order-nobody/track", NULL, 404, "does not exist");
    expect("POST", path, NULL, 405, "GET");
    assert_true(TU_WAIT_UNTIL(({
                                  req("GET", "/api/drivers/d-rest", NULL, &r);
                                  bool ok = !strcmp(str(&r, "status"), "Available") &&
                                            cJSON_GetObjectItem(r.json, "deliveredToday")
                                                    ->valueint == 1;
                                  resp_free(&r);
                                  ok;
                              }),
                              10000));
}

static void test_outage(void **state)
{
    (void)state;
    char id[64], path[160];
    place(id, sizeof id);
    silo_proc_stop(&g_silo, SIGKILL);
    snprintf(path, sizeof path, "/api/orders/%s", id);
    uint64_t t0 = tu_now_ms();
    expect("GET", path, NULL, 503, NULL);
    uint64_t ms = tu_now_ms() - t0;
    printf("# outage: GET with the silo killed -> 503 in %llu ms (deadline 1500 ms)\n",
           (unsigned long long)ms);
    assert_true(ms < 10000);
    resp r;
    assert_true(TU_WAIT_UNTIL((req("GET", "/healthz", NULL, &r), r.status == 503 ? (resp_free(&r), 1)
                                                                                 : (resp_free(&r), 0)),
                              15000));
    silo_start(); /* on the same files */
    assert_true(TU_WAIT_UNTIL(({
                                  bool ok = !strcmp(status_of(id, &r), "Created");
                                  resp_free(&r);
                                  ok;
                              }),
                              20000));
    req("GET", "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_orders),   cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_drivers),  cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_outage),
    };
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    return cmocka_run_group_tests(tests, setup, teardown);
}
