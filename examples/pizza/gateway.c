/*
 * gateway.c - pizza-gateway: Awesome Pizza's REST API over HTTP/1.1
 * (libmicrohttpd, JSON with cJSON), a Quark cluster client inside.
 *
 *   pizza-gateway [--listen HOST:PORT] [--cluster H1:P1,...] [--cluster-id ID]
 *                 [--threads N] [--deadline-ms MS] [--keepalive-ms MS]
 *
 *   POST /api/orders                      201 + Location, the order
 *   GET  /api/orders/{id}                 200 the order | 404
 *   POST /api/orders/{id}/confirm         200 the order | 404 | 409
 *   POST /api/orders/{id}/cancel          {reason}; 200 | 404 | 409
 *   POST /api/orders/{id}/start-delivery  200 | 404 | 409
 *   POST /api/orders/{id}/complete-delivery
 *   GET  /api/orders/{id}/track           Server-Sent Events (sse below)
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
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

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

static enum MHD_Result track(struct MHD_Connection *c, const char *id);

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
    if (!strcmp(act, "track")) {
        if (strcmp(method, MHD_HTTP_METHOD_GET))
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                              "/api/orders/{id}/track takes GET");
        return track(c, id);
    }
    if (strcmp(act, "confirm") && strcmp(act, "cancel") && strcmp(act, "start-delivery") &&
        strcmp(act, "complete-delivery"))
        return send_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no such path");
    if (strcmp(method, MHD_HTTP_METHOD_POST))
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                          "/api/orders/{id}/%s takes POST", act);
    return order_action(c, id, act, b);
}

/* ---- tracking an order: Server-Sent Events ----
 * A stream subscribes to the order's events (quark_subscribe), then reads
 * the order: its first event is the whole order (event: order, id = the
 * order's event count), or, with a Last-Event-ID, the status changes (from
 * the order's history) and the latest driver position after that id. Then
 * each event as it comes (event: status / location, id = its seq), events
 * the snapshot already covers dropped: no gap, no repeat. It ends after
 * Delivered or Cancelled. While there is nothing to send the connection is
 * suspended (no thread waits); a comment every --keepalive-ms lets a client
 * that went away be noticed, and its subscription freed. */

typedef struct sse_chunk {
    struct sse_chunk *next;
    uint64_t seq;            /* an event's seq (0: not an event) */
    bool terminal;           /* Delivered or Cancelled */
    size_t len, off;
    char text[];
} sse_chunk;

typedef struct sse {
    pthread_mutex_t mu;
    struct MHD_Connection *conn; /* NULL once MHD let go of the response */
    bool suspended, ended, ready;
    uint64_t last_seq;       /* the newest event queued (once ready) */
    sse_chunk *head, *tail;
    quark_subscription *sub;
    int refs;                /* the response's and the subscription's (+ a repair's) */
    bool linked;             /* in g_sse */
    bool repairing;          /* a gap is being filled: events wait in held */
    sse_chunk *held, *held_tail;
    char order_id[ID_MAX + 1];
    struct sse *prev, *next; /* every open stream (keepalives) */
} sse;

static pthread_mutex_t g_sse_mu = PTHREAD_MUTEX_INITIALIZER;
static sse *g_sse;
static unsigned g_keepalive_ms = 15000;
static atomic_bool g_stopping;

static void sse_unref(sse *s)
{
    pthread_mutex_lock(&s->mu);
    int left = --s->refs;
    pthread_mutex_unlock(&s->mu);
    if (left)
        return;
    for (sse_chunk *c = s->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    for (sse_chunk *c = s->held, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Under s->mu: something to send (or the end): a suspended reader goes on. */
static void sse_wake(sse *s)
{
    if (s->suspended && s->conn) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
}

/* Under s->mu: queue text. */
static void sse_push(sse *s, const char *text, uint64_t seq, bool terminal)
{
    size_t n = strlen(text);
    sse_chunk *c = malloc(sizeof *c + n);
    if (!c)
        return; /* out of memory: the client resumes from its Last-Event-ID */
    c->next = NULL;
    c->seq = seq;
    c->terminal = terminal;
    c->len = n;
    c->off = 0;
    memcpy(c->text, text, n);
    if (s->tail)
        s->tail->next = c;
    else
        s->head = c;
    s->tail = c;
}

/* One SSE message: "id: N\nevent: E\ndata: JSON\n\n" (j deleted). */
static char *sse_message(uint64_t id, const char *event, cJSON *j)
{
    char *data = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!data)
        return NULL;
    size_t cap = strlen(data) + strlen(event) + 64;
    char *m = malloc(cap);
    if (m)
        snprintf(m, cap, "id: %llu\nevent: %s\ndata: %s\n\n", (unsigned long long)id, event,
                 data);
    free(data);
    return m;
}

static char *status_message(const char *order, Pizza__OrderStatus st, const char *driver,
                            int64_t at, uint64_t seq)
{
    char t[40];
    pizza_json_time(t, sizeof t, at);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "orderId", order);
    cJSON_AddStringToObject(j, "status", pizza_order_status_name(st));
    if (driver && *driver)
        cJSON_AddStringToObject(j, "driverId", driver);
    cJSON_AddStringToObject(j, "at", t);
    return sse_message(seq, "status", j);
}

static char *location_message(const char *order, const char *driver, const Pizza__Location *l,
                              int64_t at, uint64_t seq)
{
    char t[40];
    pizza_json_time(t, sizeof t, at);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "orderId", order);
    cJSON_AddStringToObject(j, "driverId", driver);
    cJSON_AddNumberToObject(j, "lat", l ? l->lat : 0);
    cJSON_AddNumberToObject(j, "lon", l ? l->lon : 0);
    cJSON_AddStringToObject(j, "at", t);
    return sse_message(seq, "location", j);
}

static bool terminal_status(Pizza__OrderStatus st)
{
    return st == PIZZA__ORDER_STATUS__DELIVERED || st == PIZZA__ORDER_STATUS__CANCELLED;
}

static void sse_repair(sse *s);

/* The order's events, on a Quark thread. */
static void sse_event(const quark_event *ev, quark_err end, const char *errmsg, void *arg)
{
    (void)end;
    (void)errmsg;
    sse *s = arg;
    if (!ev) { /* the subscription ended (unsubscribed, or its silo is gone) */
        pthread_mutex_lock(&s->mu);
        s->ended = true; /* a client reconnects with its Last-Event-ID */
        sse_wake(s);
        pthread_mutex_unlock(&s->mu);
        sse_unref(s);
        return;
    }
    char *m = NULL;
    uint64_t seq = 0;
    bool terminal = false;
    if (!strcmp(ev->event_type, "pizza.OrderStatusEvent")) {
        Pizza__OrderStatusEvent *e =
            pizza__order_status_event__unpack(NULL, ev->payload_len, ev->payload);
        if (e) {
            seq = e->seq;
            terminal = terminal_status(e->status);
            m = status_message(e->order_id, e->status, e->driver_id, e->at_ms, e->seq);
            pizza__order_status_event__free_unpacked(e, NULL);
        }
    } else if (!strcmp(ev->event_type, "pizza.DriverLocationEvent")) {
        Pizza__DriverLocationEvent *e =
            pizza__driver_location_event__unpack(NULL, ev->payload_len, ev->payload);
        if (e) {
            seq = e->seq;
            m = location_message(e->order_id, e->driver_id, e->location, e->at_ms, e->seq);
            pizza__driver_location_event__free_unpacked(e, NULL);
        }
    }
    if (!m)
        return;
    bool repair = false;
    pthread_mutex_lock(&s->mu);
    if (s->ready && !s->ended && (s->repairing || seq > s->last_seq + 1)) {
        /* After a gap: held until the order's history fills it. */
        sse tmp = {.head = NULL, .tail = NULL};
        sse_push(&tmp, m, seq, terminal);
        if (tmp.head) {
            if (s->held_tail)
                s->held_tail->next = tmp.head;
            else
                s->held = tmp.head;
            s->held_tail = tmp.head;
        }
        if (!s->repairing) {
            s->repairing = repair = true;
            s->refs++; /* the repair's */
        }
    } else if (!s->ended && (!s->ready || seq > s->last_seq)) {
        sse_push(s, m, seq, terminal);
        if (s->ready) {
            s->last_seq = seq;
            s->ended = terminal;
        }
        sse_wake(s);
    }
    pthread_mutex_unlock(&s->mu);
    free(m);
    if (repair)
        sse_repair(s);
}

/* MHD asks for the next bytes (on its thread). */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sse *s = cls;
    pthread_mutex_lock(&s->mu);
    size_t n = 0;
    while (s->head && n < max) {
        sse_chunk *c = s->head;
        size_t k = c->len - c->off < max - n ? c->len - c->off : max - n;
        memcpy(buf + n, c->text + c->off, k);
        n += k;
        c->off += k;
        if (c->off == c->len) {
            s->head = c->next;
            if (!s->head)
                s->tail = NULL;
            free(c);
        }
    }
    ssize_t ret = (ssize_t)n;
    if (n == 0 && s->ended) {
        ret = MHD_CONTENT_READER_END_OF_STREAM;
    } else if (n == 0) { /* nothing yet: park the connection until an event */
        s->suspended = true;
        MHD_suspend_connection(s->conn);
    }
    pthread_mutex_unlock(&s->mu);
    return ret;
}

/* MHD is done with the response (sent, or the client went away). */
static void sse_free(void *cls)
{
    sse *s = cls;
    pthread_mutex_lock(&g_sse_mu);
    if (s->linked) {
        if (s->prev)
            s->prev->next = s->next;
        else
            g_sse = s->next;
        if (s->next)
            s->next->prev = s->prev;
        s->linked = false;
    }
    pthread_mutex_unlock(&g_sse_mu);
    pthread_mutex_lock(&s->mu);
    s->conn = NULL;
    quark_subscription *sub = s->sub;
    s->sub = NULL;
    pthread_mutex_unlock(&s->mu);
    if (sub)
        quark_unsubscribe(sub); /* its final callback drops its reference */
    sse_unref(s);
}

/* Every --keepalive-ms: a comment on every open stream. */
static void *sse_keepalive(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_stopping)) {
        struct timespec ts = {.tv_sec = g_keepalive_ms / 1000,
                              .tv_nsec = (long)(g_keepalive_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        if (atomic_load(&g_stopping))
            break;
        pthread_mutex_lock(&g_sse_mu);
        for (sse *s = g_sse; s; s = s->next) {
            pthread_mutex_lock(&s->mu);
            if (!s->ended && s->ready) {
                sse_push(s, ": keepalive\n\n", 0, false);
                sse_wake(s);
            }
            pthread_mutex_unlock(&s->mu);
        }
        pthread_mutex_unlock(&g_sse_mu);
    }
    return NULL;
}

/* Under s->mu, after the snapshot: the events it covers (seq <= upto) are
 * dropped from what came meanwhile; the initial messages go first. */
static void sse_start(sse *s, sse_chunk *initial, uint64_t upto)
{
    sse_chunk *kept = NULL, **tail = &kept;
    for (sse_chunk *c = s->head, *n; c; c = n) {
        n = c->next;
        if (c->seq && c->seq <= upto) {
            free(c);
            continue;
        }
        if (c->seq > upto)
            upto = c->seq;
        s->ended |= c->terminal;
        c->next = NULL;
        *tail = c;
        tail = &c->next;
    }
    s->head = initial ? initial : kept;
    if (initial) {
        sse_chunk *t = initial;
        while (t->next)
            t = t->next;
        t->next = kept;
    }
    s->tail = s->head;
    while (s->tail && s->tail->next)
        s->tail = s->tail->next;
    s->last_seq = upto;
    s->ready = true;
}

/* Push what order o's snapshot holds with a number in (lo, hi): its status
 * changes (from its history) and its newest position, in the order of their
 * numbers (older positions are past: only the newest is replayed). */
static void replay(sse *s, const Pizza__Order *o, uint64_t lo, uint64_t hi)
{
    bool loc = o->driver_location && o->driver_location_seq > lo &&
               o->driver_location_seq < hi && !terminal_status(o->status);
    for (size_t i = 0; i <= o->n_history; i++) {
        const Pizza__StatusChange *h = i < o->n_history ? o->history[i] : NULL;
        if (loc && (!h || h->seq > o->driver_location_seq)) {
            char *m = location_message(o->order_id, o->driver_id, o->driver_location,
                                       o->driver_location_ms, o->driver_location_seq);
            if (m)
                sse_push(s, m, o->driver_location_seq, false);
            free(m);
            loc = false;
        }
        if (!h || h->seq <= lo || h->seq >= hi)
            continue;
        char *m = status_message(o->order_id, h->status,
                                 h->status >= PIZZA__ORDER_STATUS__DRIVER_ASSIGNED ? o->driver_id
                                                                                   : NULL,
                                 h->at_ms, h->seq);
        if (m)
            sse_push(s, m, h->seq, terminal_status(h->status));
        free(m);
    }
}

/* A gap was filled from the order's history (or could not be): the held
 * events follow, in order. A turn of nobody: the client's thread. */
static void repaired(quark_err err, const char *errmsg, const Pizza__Order *o, void *arg)
{
    sse *s = arg;
    pthread_mutex_lock(&s->mu);
    uint64_t first = s->held ? s->held->seq : UINT64_MAX;
    if (err == QUARK_OK && o) {
        sse tmp = {.head = NULL, .tail = NULL};
        replay(&tmp, o, s->last_seq, first);
        fprintf(stderr, "pizza-gateway: order %s's stream filled a gap (events %llu..%llu) from "
                "the order\n", s->order_id, (unsigned long long)s->last_seq + 1,
                (unsigned long long)first - 1);
        for (sse_chunk *c = tmp.head; c; c = c->next)
            s->ended |= c->terminal;
        if (tmp.head) {
            if (s->tail)
                s->tail->next = tmp.head;
            else
                s->head = tmp.head;
            s->tail = tmp.tail;
        }
    } else {
        fprintf(stderr, "pizza-gateway: a tracking stream could not fill a gap: %s\n", errmsg);
    }
    for (sse_chunk *c = s->held; c; c = c->next) {
        s->ended |= c->terminal;
        s->last_seq = c->seq;
    }
    if (s->held) {
        if (s->tail)
            s->tail->next = s->held;
        else
            s->head = s->held;
        s->tail = s->held_tail;
    }
    s->held = s->held_tail = NULL;
    s->repairing = false;
    sse_wake(s);
    pthread_mutex_unlock(&s->mu);
    sse_unref(s);
}

/* Events came after a gap (the subscription became active only after the
 * snapshot was read: its request and the read may take different paths):
 * read the order again (asynchronously) to fill it. */
static void sse_repair(sse *s)
{
    quark_ref *r;
    quark_err rc = pizza_OrderActor_ref(g_client, s->order_id, &r);
    if (rc == QUARK_OK) {
        Pizza__GetOrderRequest g = PIZZA__GET_ORDER_REQUEST__INIT;
        rc = pizza_OrderActor_Get_async(r, &g, repaired, s);
        quark_ref_free(r);
    }
    if (rc != QUARK_OK)
        repaired(rc, quark_last_error(), NULL, s);
}

static enum MHD_Result track(struct MHD_Connection *c, const char *id)
{
    const char *lei = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    char *end = NULL;
    uint64_t last_id = lei && *lei >= '0' && *lei <= '9' ? strtoull(lei, &end, 10) : 0;
    if (end && *end)
        last_id = 0; /* not a number: from the start */
    sse *s = calloc(1, sizeof *s);
    if (!s)
        return MHD_NO;
    pthread_mutex_init(&s->mu, NULL);
    s->refs = 2;
    s->conn = c;
    snprintf(s->order_id, sizeof s->order_id, "%s", id);
    quark_err rc = quark_subscribe(g_client, pizza_OrderActor_TYPE_NAME, id, sse_event, s,
                                   &s->sub);
    if (rc != QUARK_OK) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return send_call_error(c, rc);
    }
    Pizza__Order *o = NULL;
    rc = get_order(id, &o);
    if (rc != QUARK_OK || o->status == PIZZA__ORDER_STATUS__ORDER_STATUS_NONE) {
        quark_unsubscribe(s->sub); /* its final callback drops its reference */
        s->sub = NULL;
        sse_unref(s);
        enum MHD_Result r = rc != QUARK_OK ? send_call_error(c, rc)
                                           : send_error(c, MHD_HTTP_NOT_FOUND, "not_found",
                                                        "order %s does not exist", id);
        quark_msg_free(o);
        return r;
    }
    /* What the client has not seen yet, from the snapshot. */
    pthread_mutex_lock(&s->mu);
    sse_chunk *saved_head = s->head, *saved_tail = s->tail;
    s->head = s->tail = NULL;
    pthread_mutex_unlock(&s->mu);
    sse_chunk *initial = NULL;
    {
        sse tmp = {.head = NULL, .tail = NULL};
        sse_push(&tmp, "retry: 1000\n\n", 0, false);
        if (last_id > o->event_seq)
            last_id = 0; /* an id this order never gave (another order's?): from the start */
        if (!last_id) {
            char *m = sse_message(o->event_seq, "order", pizza_json_order(o));
            if (m)
                sse_push(&tmp, m, 0, false);
            free(m);
        } else {
            replay(&tmp, o, last_id, UINT64_MAX);
        }
        initial = tmp.head;
    }
    uint64_t upto = o->event_seq > last_id ? o->event_seq : last_id;
    bool done = terminal_status(o->status);
    quark_msg_free(o);
    pthread_mutex_lock(&s->mu);
    /* Events that came while the snapshot was read (and before). */
    if (saved_head) {
        saved_tail->next = s->head;
        s->head = saved_head;
        if (!s->tail)
            s->tail = saved_tail;
    }
    sse_start(s, initial, upto);
    s->ended |= done;
    pthread_mutex_unlock(&s->mu);

    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read,
                                                               s, sse_free);
    if (!r) {
        sse_free(s);
        return MHD_NO;
    }
    pthread_mutex_lock(&g_sse_mu);
    s->next = g_sse;
    if (g_sse)
        g_sse->prev = s;
    g_sse = s;
    s->linked = true;
    pthread_mutex_unlock(&g_sse_mu);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
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
        if (strcmp(method, MHD_HTTP_METHOD_GET))
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                              "/healthz takes GET");
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
                    "[--cluster-id ID] [--threads N] [--deadline-ms MS] [--keepalive-ms MS]\n");
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
        else if (!strcmp(a, "--keepalive-ms"))
            g_keepalive_ms = (unsigned)atoi(v);
        else
            usage();
    }
    char host[64];
    int port = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (!pizza_host_port(listen, host, sizeof host, &port) || threads < 1 || threads > 64 ||
        deadline < 1) {
        fprintf(stderr, "pizza-gateway: --listen wants HOST:PORT (IPv4), --threads 1..64\n");
        return 2;
    }
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "pizza-gateway: --listen %s is not an IPv4 HOST:PORT\n", listen);
        return 2;
    }
    sa.sin_port = htons((uint16_t)port);
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop;
    pizza_block_stop_signals(&stop);

    if (!(g_client = pizza_client_open("pizza-gateway", cluster, cluster_id, deadline)))
        return 1;
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
            MHD_ALLOW_SUSPEND_RESUME,
        0, NULL, NULL,
        handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "pizza-gateway: cannot listen on %s\n", listen);
        quark_client_free(g_client);
        return 1;
    }
    pthread_t ka;
    if (g_keepalive_ms < 10 || pthread_create(&ka, NULL, sse_keepalive, NULL) != 0) {
        fprintf(stderr, "pizza-gateway: --keepalive-ms must be >= 10\n");
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("pizza-gateway: listening on %s (port %u, cluster %s)\n", listen,
           info ? info->port : (unsigned)port, cluster);
    fflush(stdout);
    int sig = 0;
    sigwait(&stop, &sig);
    /* Stopping: no more keepalives; every stream ends (a suspended one is
     * resumed to do so: MHD must not stop with suspended connections), and
     * MHD gets a moment to write those ends. */
    atomic_store(&g_stopping, true);
    pthread_join(ka, NULL);
    pthread_mutex_lock(&g_sse_mu);
    for (sse *s = g_sse; s; s = s->next) {
        pthread_mutex_lock(&s->mu);
        s->ended = true;
        sse_wake(s);
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&g_sse_mu);
    for (int i = 0; i < 100; i++) { /* up to 1 s for them to close */
        pthread_mutex_lock(&g_sse_mu);
        bool open = g_sse != NULL;
        pthread_mutex_unlock(&g_sse_mu);
        if (!open)
            break;
        struct timespec ms10 = {.tv_nsec = 10 * 1000000L};
        nanosleep(&ms10, NULL);
    }
    MHD_stop_daemon(d);
    quark_client_free(g_client);
    printf("pizza-gateway: stopped\n");
    return 0;
}
