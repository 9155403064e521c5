/*
 * gateway.c - pizza-gateway: Awesome Pizza's REST API over HTTP/1.1
 * (libmicrohttpd, JSON with cJSON), a Quark cluster client inside.
 *
 *   pizza-gateway [--listen HOST:PORT] [--cluster H1:P1,...] [--cluster-id ID]
 *                 [--threads N] [--deadline-ms MS]
 *
 *   POST /api/orders                      201 + Location, the order
 *   GET  /api/orders/{id}                 200 the order | 404
 *   POST /api/orders/{id}/confirm         200 the order | 404 | 409
 *   POST /api/orders/{id}/cancel          {reason}; 200 | 404 | 409
 *   POST /api/orders/{id}/start-delivery  200 | 404 | 409
 *   POST /api/orders/{id}/complete-delivery
 *   POST /api/drivers                     {driverId, name}: 201 + Location
 *   GET  /api/drivers/{id}                200 | 404
 *   GET  /api/drivers                     every driver the dispatcher knows
 *   GET  /healthz                         200 while the cluster is reachable, else 503
 *
 * Errors are JSON {error, message}: 400 (bad JSON, a missing or invalid
 * field, a body over 64 KiB, a malformed id), 404, 405, 409 (a transition the
 * order's status does not allow), 503 (the cluster cannot be reached or did
 * not answer within --deadline-ms). Requests run on a pool of MHD threads,
 * each making blocking calls to the actors.
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "pizza_json.h"

#define BODY_MAX (64 * 1024)
#define ID_MAX 64

static quark_client *g_client;

/* A request's body, read in chunks (its connection's context). */
typedef struct req_ctx {
    size_t len;
    bool too_big;
    char *buf;
} req_ctx;

/* ---- answers ---- */

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, cJSON *j,
                                 const char *location)
{
    char *text = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!text)
        return MHD_NO;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (location)
        MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, location);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *error,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *error,
                                  const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "error", error);
    cJSON_AddStringToObject(j, "message", msg);
    return send_json(c, status, j, NULL);
}

/* A failed call to the actors, as HTTP. */
static enum MHD_Result send_call_error(struct MHD_Connection *c, quark_err rc)
{
    const char *why = quark_last_error();
    switch (rc) {
    case QUARK_EINVAL:
    case QUARK_EBADARGS:
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", why);
    case QUARK_EACTOR:
        return send_error(c, MHD_HTTP_CONFLICT, "conflict", "%s", why);
    case QUARK_ETIMEDOUT:
    case QUARK_EUNAVAILABLE:
    case QUARK_ENOTCONNECTED:
    case QUARK_ECLOSED:
    case QUARK_EUNKNOWN:
    case QUARK_EOVERLOAD:
    case QUARK_ESTORAGE:
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                          "the pizza cluster did not answer: %s (%s)", why, quark_errname(rc));
    default:
        return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "%s (%s)", why,
                          quark_errname(rc));
    }
}

/* ---- paths ---- */

/* Is s[0..n) an id the API accepts: 1..64 of [A-Za-z0-9._-]? */
static bool valid_id(const char *s, size_t n)
{
    if (n == 0 || n > ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* Split "/api/<coll>/<id>[/<action>]" after prefix: the id into id[], the
 * action (or "") into act[]. false if the shape is wrong. */
static bool split(const char *rest, char *id, char *act, size_t cap)
{
    const char *slash = strchr(rest, '/');
    size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
    if (n >= cap)
        return false;
    memcpy(id, rest, n);
    id[n] = '\0';
    const char *a = slash ? slash + 1 : "";
    if (strlen(a) >= cap || strchr(a, '/'))
        return false;
    strcpy(act, a);
    return true;
}

/* ---- orders ---- */

static quark_err get_order(const char *id, Pizza__Order **o)
{
    quark_ref *r;
    quark_err rc = pizza_OrderActor_ref(g_client, id, &r);
    if (rc != QUARK_OK)
        return rc;
    Pizza__GetOrderRequest g = PIZZA__GET_ORDER_REQUEST__INIT;
    rc = pizza_OrderActor_Get(r, &g, o);
    quark_ref_free(r);
    return rc;
}

static enum MHD_Result order_reply(struct MHD_Connection *c, unsigned status, Pizza__Order *o,
                                   const char *location)
{
    cJSON *j = pizza_json_order(o);
    quark_msg_free(o);
    return send_json(c, status, j, location);
}

static enum MHD_Result create_order(struct MHD_Connection *c, req_ctx *b)
{
    cJSON *j = cJSON_ParseWithLength(b->buf ? b->buf : "", b->len);
    if (!j)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "the body is not valid JSON");
    pizza_new_order *n = malloc(sizeof *n);
    char why[300];
    if (!n) {
        cJSON_Delete(j);
        return MHD_NO;
    }
    if (!pizza_json_new_order(j, n, why, sizeof why)) {
        cJSON_Delete(j);
        free(n);
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", why);
    }
    uint8_t rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        cJSON_Delete(j);
        free(n);
        return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
                          "no random bytes for an order id");
    }
    char id[32];
    snprintf(id, sizeof id, "order-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    quark_ref *r;
    Pizza__Order *o = NULL;
    quark_err rc = pizza_OrderActor_ref(g_client, id, &r);
    if (rc == QUARK_OK) {
        rc = pizza_OrderActor_Create(r, &n->req, &o);
        quark_ref_free(r);
    }
    cJSON_Delete(j);
    free(n);
    if (rc != QUARK_OK)
        return send_call_error(c, rc);
    char loc[64];
    snprintf(loc, sizeof loc, "/api/orders/%s", id);
    return order_reply(c, MHD_HTTP_CREATED, o, loc);
}

static enum MHD_Result order_action(struct MHD_Connection *c, const char *id, const char *act,
                                    req_ctx *b)
{
    Pizza__OrderTransition t = PIZZA__ORDER_TRANSITION__INIT;
    cJSON *j = NULL;
    if (!strcmp(act, "cancel") && b->len) { /* {reason} (optional) */
        j = cJSON_ParseWithLength(b->buf, b->len);
        const cJSON *reason = j ? cJSON_GetObjectItem(j, "reason") : NULL;
        if (!j || !cJSON_IsObject(j) || (reason && !cJSON_IsNull(reason) &&
                                         (!cJSON_IsString(reason) ||
                                          strlen(reason->valuestring) > 500))) {
            cJSON_Delete(j);
            return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                              "the body must be {\"reason\": a string of at most 500 "
                              "characters}");
        }
        if (cJSON_IsString(reason))
            t.reason = reason->valuestring;
    }
    /* Only an order that exists changes (an unknown one is a 404, and no
     * actor is left behind). */
    Pizza__Order *o = NULL;
    quark_err rc = get_order(id, &o);
    if (rc == QUARK_OK && o->status == PIZZA__ORDER_STATUS__ORDER_STATUS_NONE) {
        quark_msg_free(o);
        cJSON_Delete(j);
        return send_error(c, MHD_HTTP_NOT_FOUND, "not_found", "order %s does not exist", id);
    }
    quark_msg_free(o);
    o = NULL;
    quark_ref *r = NULL;
    if (rc == QUARK_OK)
        rc = pizza_OrderActor_ref(g_client, id, &r);
    if (rc == QUARK_OK) {
        if (!strcmp(act, "confirm"))
            rc = pizza_OrderActor_Confirm(r, &t, &o);
        else if (!strcmp(act, "cancel"))
            rc = pizza_OrderActor_Cancel(r, &t, &o);
        else if (!strcmp(act, "start-delivery"))
            rc = pizza_OrderActor_StartDelivery(r, &t, &o);
        else
            rc = pizza_OrderActor_CompleteDelivery(r, &t, &o);
        quark_ref_free(r);
    }
    cJSON_Delete(j);
    if (rc != QUARK_OK)
        return send_call_error(c, rc);
    return order_reply(c, MHD_HTTP_OK, o, NULL);
}

static enum MHD_Result orders(struct MHD_Connection *c, const char *method, const char *rest,
                              req_ctx *b)
{
    if (!*rest) { /* /api/orders */
        if (strcmp(method, MHD_HTTP_METHOD_POST))
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                              "/api/orders takes POST");
        return create_order(c, b);
    }
    char id[128], act[128];
    if (!split(rest, id, act, sizeof id) || !valid_id(id, strlen(id)))
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "an order id is 1 to %d of "
                          "A-Z a-z 0-9 . _ -", ID_MAX);
    if (!*act) {
        if (strcmp(method, MHD_HTTP_METHOD_GET))
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                              "/api/orders/{id} takes GET");
        Pizza__Order *o = NULL;
        quark_err rc = get_order(id, &o);
        if (rc != QUARK_OK)
            return send_call_error(c, rc);
        if (o->status == PIZZA__ORDER_STATUS__ORDER_STATUS_NONE) {
            quark_msg_free(o);
            return send_error(c, MHD_HTTP_NOT_FOUND, "not_found", "order %s does not exist", id);
        }
        return order_reply(c, MHD_HTTP_OK, o, NULL);
    }
    if (strcmp(act, "confirm") && strcmp(act, "cancel") && strcmp(act, "start-delivery") &&
        strcmp(act, "complete-delivery"))
        return send_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no such path");
    if (strcmp(method, MHD_HTTP_METHOD_POST))
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                          "/api/orders/{id}/%s takes POST", act);
    return order_action(c, id, act, b);
}

/* ---- drivers ---- */

static quark_err get_driver(const char *id, Pizza__DriverState **d)
{
    quark_ref *r;
    quark_err rc = pizza_DriverActor_ref(g_client, id, &r);
    if (rc != QUARK_OK)
        return rc;
    Pizza__GetOrderRequest g = PIZZA__GET_ORDER_REQUEST__INIT;
    rc = pizza_DriverActor_Get(r, &g, d);
    quark_ref_free(r);
    return rc;
}

static enum MHD_Result create_driver(struct MHD_Connection *c, req_ctx *b)
{
    cJSON *j = cJSON_ParseWithLength(b->buf ? b->buf : "", b->len);
    if (!j)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "the body is not valid JSON");
    const cJSON *id = cJSON_GetObjectItem(j, "driverId");
    const cJSON *name = cJSON_GetObjectItem(j, "name");
    if (!cJSON_IsObject(j) || !cJSON_IsString(id) ||
        !valid_id(id->valuestring, strlen(id->valuestring))) {
        cJSON_Delete(j);
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "driverId must be 1 to %d "
                          "of A-Z a-z 0-9 . _ -", ID_MAX);
    }
    if (!cJSON_IsString(name) || !*name->valuestring || strlen(name->valuestring) > 200) {
        cJSON_Delete(j);
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                          "name must be a string of 1 to 200 characters");
    }
    quark_ref *r;
    Pizza__DriverState *d = NULL;
    quark_err rc = pizza_DriverActor_ref(g_client, id->valuestring, &r);
    if (rc == QUARK_OK) {
        Pizza__RegisterDriverRequest rq = PIZZA__REGISTER_DRIVER_REQUEST__INIT;
        rq.name = name->valuestring;
        rc = pizza_DriverActor_Initialize(r, &rq, &d);
        quark_ref_free(r);
    }
    char loc[128];
    snprintf(loc, sizeof loc, "/api/drivers/%s", id->valuestring);
    cJSON_Delete(j);
    if (rc != QUARK_OK)
        return send_call_error(c, rc);
    cJSON *out = pizza_json_driver(d);
    quark_msg_free(d);
    return send_json(c, MHD_HTTP_CREATED, out, loc);
}

static enum MHD_Result list_drivers(struct MHD_Connection *c)
{
    quark_ref *r;
    quark_err rc = pizza_DispatcherActor_ref(g_client, PIZZA_DISPATCHER_ID, &r);
    Pizza__DispatcherView *v = NULL;
    if (rc == QUARK_OK) {
        Pizza__GetOrderRequest g = PIZZA__GET_ORDER_REQUEST__INIT;
        rc = pizza_DispatcherActor_Get(r, &g, &v);
        quark_ref_free(r);
    }
    if (rc != QUARK_OK)
        return send_call_error(c, rc);
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < v->n_drivers && rc == QUARK_OK; i++) {
        Pizza__DriverState *d = NULL;
        rc = get_driver(v->drivers[i]->driver_id, &d);
        if (rc == QUARK_OK && d->registered)
            cJSON_AddItemToArray(arr, pizza_json_driver(d));
        quark_msg_free(d);
    }
    quark_msg_free(v);
    if (rc != QUARK_OK) {
        cJSON_Delete(arr);
        return send_call_error(c, rc);
    }
    return send_json(c, MHD_HTTP_OK, arr, NULL);
}

static enum MHD_Result drivers(struct MHD_Connection *c, const char *method, const char *rest,
                               req_ctx *b)
{
    if (!*rest) { /* /api/drivers */
        if (!strcmp(method, MHD_HTTP_METHOD_POST))
            return create_driver(c, b);
        if (!strcmp(method, MHD_HTTP_METHOD_GET))
            return list_drivers(c);
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                          "/api/drivers takes GET and POST");
    }
    char id[128], act[128];
    if (!split(rest, id, act, sizeof id) || !valid_id(id, strlen(id)))
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "a driver id is 1 to %d of "
                          "A-Z a-z 0-9 . _ -", ID_MAX);
    if (*act)
        return send_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no such path");
    if (strcmp(method, MHD_HTTP_METHOD_GET))
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                          "/api/drivers/{id} takes GET");
    Pizza__DriverState *d = NULL;
    quark_err rc = get_driver(id, &d);
    if (rc != QUARK_OK)
        return send_call_error(c, rc);
    if (!d->registered) {
        quark_msg_free(d);
        return send_error(c, MHD_HTTP_NOT_FOUND, "not_found", "driver %s does not exist", id);
    }
    cJSON *j = pizza_json_driver(d);
    quark_msg_free(d);
    return send_json(c, MHD_HTTP_OK, j, NULL);
}

/* ---- the request handler ---- */

static enum MHD_Result route(struct MHD_Connection *c, const char *url, const char *method,
                             req_ctx *b)
{
    if (b->too_big)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "the body is over %d bytes",
                          BODY_MAX);
    if (!strcmp(url, "/healthz")) {
        if (!quark_client_is_connected(g_client))
            return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                              "the pizza cluster cannot be reached");
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "status", "ok");
        return send_json(c, MHD_HTTP_OK, j, NULL);
    }
    if (!strncmp(url, "/api/orders", 11) && (url[11] == '\0' || url[11] == '/'))
        return orders(c, method, url[11] ? url + 12 : "", b);
    if (!strncmp(url, "/api/drivers", 12) && (url[12] == '\0' || url[12] == '/'))
        return drivers(c, method, url[12] ? url + 13 : "", b);
    return send_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no such path: %.200s", url);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *size, void **con_cls)
{
    (void)cls;
    (void)version;
    req_ctx *b = *con_cls;
    if (!b) { /* the headers: the body (if any) comes next */
        if (!(b = calloc(1, sizeof *b)))
            return MHD_NO;
        *con_cls = b;
        return MHD_YES;
    }
    if (*size) { /* a chunk of the body: kept up to BODY_MAX, the rest read and dropped */
        if (!b->too_big && b->len + *size <= BODY_MAX) {
            if (!b->buf && !(b->buf = malloc(BODY_MAX)))
                return MHD_NO;
            memcpy(b->buf + b->len, data, *size);
            b->len += *size;
        } else {
            b->too_big = true;
        }
        *size = 0;
        return MHD_YES;
    }
    return route(c, url, method, b);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)c;
    (void)why;
    req_ctx *b = *con_cls;
    if (b) {
        free(b->buf);
        free(b);
    }
    *con_cls = NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: pizza-gateway [--listen HOST:PORT] [--cluster H1:P1,...] "
                    "[--cluster-id ID] [--threads N] [--deadline-ms MS]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8080", *cluster = "127.0.0.1:7000",
               *cluster_id = "awesome-pizza";
    unsigned threads = 2, deadline = 5000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--listen"))
            listen = v;
        else if (!strcmp(a, "--cluster"))
            cluster = v;
        else if (!strcmp(a, "--cluster-id"))
            cluster_id = v;
        else if (!strcmp(a, "--threads"))
            threads = (unsigned)atoi(v);
        else if (!strcmp(a, "--deadline-ms"))
            deadline = (unsigned)atoi(v);
        else
            usage();
    }
    char host[64];
    int port = 0;
    const char *colon = strrchr(listen, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (!colon || (size_t)(colon - listen) >= sizeof host || threads < 1 || threads > 64 ||
        deadline < 1) {
        fprintf(stderr, "pizza-gateway: --listen wants HOST:PORT (IPv4), --threads 1..64\n");
        return 2;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    port = atoi(colon + 1);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 || port < 0 || port > 65535) {
        fprintf(stderr, "pizza-gateway: --listen %s is not an IPv4 HOST:PORT\n", listen);
        return 2;
    }
    sa.sin_port = htons((uint16_t)port);
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    quark_client_opts co;
    quark_client_opts_init(&co);
    co.connection_string = cluster;
    co.cluster_id = cluster_id;
    co.default_deadline_ms = deadline;
    quark_err rc = quark_client_create(&co, &g_client);
    if (rc == QUARK_OK && quark_client_connect(g_client) != QUARK_OK) /* it keeps trying */
        fprintf(stderr, "pizza-gateway: the cluster at %s is not reachable yet (%s); it "
                        "keeps trying\n", cluster, quark_last_error());
    if (rc != QUARK_OK) {
        fprintf(stderr, "pizza-gateway: %s\n", quark_last_error());
        return 1;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "pizza-gateway: cannot listen on %s\n", listen);
        quark_client_free(g_client);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("pizza-gateway: listening on %s (port %u, cluster %s)\n", listen,
           info ? info->port : (unsigned)port, cluster);
    fflush(stdout);
    int sig = 0;
    sigwait(&stop, &sig);
    MHD_stop_daemon(d);
    quark_client_free(g_client);
    printf("pizza-gateway: stopped\n");
    return 0;
}
