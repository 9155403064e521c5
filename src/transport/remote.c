/*
 * remote.c - the cluster client's network side (both transports): the call
 * tables, sending and completing calls, the I/O thread, and creating,
 * connecting and disconnecting a remote. remote_internal.h lists the other
 * files of this machinery (connections, routing, the client and peer APIs).
 *
 * A remote client owns one I/O thread running a libuv loop and one
 * connection per silo it talks to. Application threads build a complete
 * REQUEST frame, push it on a lock-free queue and wake the loop; the loop
 * picks the connection (routing, below), gives the call a request id,
 * appends it to that connection's output (written once per loop turn) and
 * keeps it in the connection's table until its RESPONSE. Blocking callers
 * wait on a futex; callbacks run on the I/O thread.
 *
 * Routing. Until the client knows the cluster, every call goes to the
 * "primary" connection: one silo of the connection string, tried in turn.
 * Once connected it watches the cluster (WATCH frame, or gRPC WatchCluster):
 * the silo sends its view of the live members at once and at every change.
 * With a view, each call goes straight to the silo that owns its actor
 * (consistent hashing over the members, runtime/view.h); a connection per
 * member is opened as needed. Calls whose owner is unreachable wait on that
 * connection until it answers again, the view drops the silo (they then go
 * to the new owner), or their deadline. If the watched silo goes away, the
 * client watches another member; if none is reachable it forgets the view
 * and starts over from the connection string. With QUARK_ROUTE_PINNED the
 * client never watches: everything goes to the primary, which forwards.
 *
 * Completion: every call ends through its op (runtime/op.c): a blocking
 * caller's waiter (woken where the answer is read), an async caller's
 * callback (run on the I/O thread, the reply lent), or a forwarding silo's
 * record (its worker gets the answer).
 *
 * Delivery: a call is sent again only when it surely did not run (never
 * written to a socket, or answered QUARK_EUNAVAILABLE by a silo that did not
 * run it: then after a jittered backoff, so a view change can land) or when
 * its method is @quark.idempotent. Otherwise a lost connection completes it
 * with QUARK_EUNKNOWN: at most once.
 *
 * With the gRPC transport the same machinery drives one HTTP/2 session per
 * connection (grpc_codec.h) instead of frames: a call is a stream of
 * /quark.ActorService/InvokeActor, its id is the stream id, the cluster id
 * travels as quark-cluster-id metadata on every call.
 *
 * Peer mode: a silo's own link to the other silos (cluster/cluster.c). Always
 * TCP, no connection string: it connects to the silos it gossips with and to
 * the owners of the calls it forwards.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "transport/remote_internal.h"


QK_TLS qk_remote *qk_rm_tls; /* set on the I/O thread */

static size_t slot_of(const qk_rconn *k, uint64_t id)
{
    return (size_t)qk_fmix64(id) & k->mask;
}

static int table_put(qk_rconn *k, qk_rcall *c)
{
    if ((k->count + 1) * 2 > k->mask + 1) {
        size_t ncap = (k->mask + 1) * 2;
        qk_rcall **ns = calloc(ncap, sizeof *ns);
        if (!ns)
            return -1;
        qk_rcall **old = k->slots;
        size_t oldn = k->mask + 1;
        k->slots = ns;
        k->mask = ncap - 1;
        for (size_t i = 0; i < oldn; i++) {
            if (!old[i])
                continue;
            size_t j = slot_of(k, old[i]->id);
            while (ns[j])
                j = (j + 1) & k->mask;
            ns[j] = old[i];
        }
        free(old);
    }
    size_t i = slot_of(k, c->id);
    while (k->slots[i])
        i = (i + 1) & k->mask;
    k->slots[i] = c;
    k->count++;
    c->in_table = true;
    return 0;
}

qk_rcall *qk_rm_table_find(qk_rconn *k, uint64_t id)
{
    for (size_t i = slot_of(k, id);; i = (i + 1) & k->mask) {
        qk_rcall *c = k->slots[i];
        if (!c || c->id == id)
            return c;
    }
}

qk_rcall *qk_rm_table_take(qk_rconn *k, uint64_t id)
{
    size_t i = slot_of(k, id);
    for (;; i = (i + 1) & k->mask) {
        qk_rcall *c = k->slots[i];
        if (!c)
            return NULL;
        if (c->id == id)
            break;
    }
    qk_rcall *found = k->slots[i];
    for (size_t j = (i + 1) & k->mask;; j = (j + 1) & k->mask) {
        qk_rcall *b = k->slots[j];
        if (!b)
            break;
        size_t home = slot_of(k, b->id);
        if (((j - home) & k->mask) >= ((j - i) & k->mask)) {
            k->slots[i] = b;
            i = j;
        }
    }
    k->slots[i] = NULL;
    k->count--;
    found->in_table = false;
    return found;
}

/* Take any one call out of the table (draining it), or NULL. */
qk_rcall *qk_rm_table_take_any(qk_rconn *k)
{
    if (!k->count)
        return NULL;
    for (size_t i = 0; i <= k->mask; i++)
        if (k->slots[i])
            return qk_rm_table_take(k, k->slots[i]->id);
    return NULL;
}

void qk_rm_rcall_free(qk_rcall *c)
{
    free(c->target);
    free(c);
}

/* Finish call c (out of every list and table) through its op, and free it. */
void qk_rm_complete_ex(qk_remote *r, qk_rcall *c, quark_err err, bool actor_error,
                       const char *errmsg, const uint8_t *result, size_t len)
{
    qk_dlheap_remove(&r->heap, &c->dl);
    if (c->answer) {
        qk_outcome o = {.err = err, .by = actor_error ? QK_BY_ACTOR : QK_BY_RUNTIME,
                        .errmsg = errmsg, .data = result, .len = err == QUARK_OK ? len : 0};
        qk_op_finish(c->answer, &o);
    }
    qk_rm_rcall_free(c);
}

void qk_rm_complete(qk_remote *r, qk_rcall *c, quark_err err, const char *errmsg,
                    const uint8_t *result, size_t len)
{
    qk_rm_complete_ex(r, c, err, false, errmsg, result, len);
}

void qk_rm_sub_end(qk_rsub *rs, quark_err why, const char *msg)
{
    if (rs->ended)
        return;
    rs->ended = true;
    rs->env = NULL;
    rs->fn(NULL, why, msg, rs->arg);
}

static void list_push(qk_rcall **head, qk_rcall **tail, qk_rcall *c)
{
    c->next = NULL;
    if (*tail)
        (*tail)->next = c;
    else
        *head = c;
    *tail = c;
}

static void list_remove(qk_rcall **head, qk_rcall **tail, qk_rcall *c)
{
    qk_rcall **pp = head, *prev = NULL;
    while (*pp && *pp != c) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = c->next;
        if (tail && *tail == c)
            *tail = prev;
    }
}

uint64_t qk_rm_backoff_of(const qk_remote *r, unsigned failures)
{
    const quark_retry_policy *p = &r->cfg.retry;
    uint64_t max = p->max_backoff_ms ? p->max_backoff_ms : 2000;
    uint64_t b = p->initial_backoff_ms ? p->initial_backoff_ms : 50;
    for (unsigned i = 1; i < failures && b < max; i++)
        b *= 2;
    if (b > max)
        b = max;
    return b / 2 + (uint64_t)rand() % (b / 2 + 1); /* jitter: [b/2, b] */
}

/* A call is in the table and its bytes in the output: count the attempt and
 * remember it as unsent until the next write takes it. */
static void mark_queued(qk_rconn *k, qk_rcall *c)
{
    c->attempts++;
    c->conn = k;
    c->next = NULL;
    if (k->unsent_tail)
        k->unsent_tail->next = c;
    else
        k->unsent = c;
    k->unsent_tail = c;
}

static const char *grpc_path(const qk_rcall *c)
{
    switch (c->kind) {
    case RC_OP_SUB: return "/quark.ActorService/StreamActorEvents";
    case RC_OP_WATCH: return "/quark.ActorService/WatchCluster";
    default: return "/quark.ActorService/InvokeActor";
    }
}

static void fail_unsendable(qk_remote *r, qk_rcall *c, quark_err err, const char *why)
{
    if (c->kind == RC_OP_SUB) {
        qk_rm_sub_end(c->rsub, err, why);
        qk_rm_rcall_free(c);
    } else if (c->kind == RC_OP_WATCH) {
        if (c->conn && c->conn->watch == c)
            c->conn->watch = NULL;
        if (r->source == c->conn)
            r->source = NULL;
        r->want_watch = true;
        qk_rm_rcall_free(c);
    } else {
        qk_rm_complete(r, c, err, why, NULL, 0);
    }
}

/* Put one call on the wire of connection k (which is READY). */
void qk_rm_send_on(qk_rconn *k, qk_rcall *c)
{
    qk_remote *r = k->r;
    if (k->grpc) {
        /* No grpc-timeout header: the deadline travels in the request body
         * (deadline_ms), which the silo honours, and the client enforces it
         * itself; a header whose value changes on every call would cost a
         * format and an unindexable HPACK literal each time. */
        int32_t sid = qk_grpc_client_call(k->grpc, grpc_path(c), 0, r->meta,
                                          c->frame + QK_FRAME_HEADER, c->len - QK_FRAME_HEADER,
                                          c->kind == RC_OP_SUB || c->kind == RC_OP_WATCH, c);
        if (sid < 0) {
            fail_unsendable(r, c, (quark_err)sid, "the call could not be sent");
            return;
        }
        c->id = (uint64_t)sid;
        if (table_put(k, c) != 0) { /* keep nothing we cannot find again */
            qk_grpc_client_cancel(k->grpc, sid);
            fail_unsendable(r, c, QUARK_ENOMEM, "out of memory sending a call");
            return;
        }
        mark_queued(k, c);
        return;
    }
    c->id = ++k->next_id;
    /* the id lives at bytes 8..15 of the frame header */
    for (int i = 0; i < 8; i++)
        c->frame[8 + i] = (uint8_t)(c->id >> (56 - 8 * i));
    if (table_put(k, c) != 0 || qk_rm_out_append(k, c->frame, c->len) != 0) {
        if (c->in_table)
            qk_rm_table_take(k, c->id);
        fail_unsendable(r, c, QUARK_ENOMEM, "out of memory sending a call");
        return;
    }
    mark_queued(k, c);
}

/* Send (or queue) one call where it belongs now. */
void qk_rm_send_call(qk_remote *r, qk_rcall *c)
{
    const char *why;
    qk_rconn *k = qk_rm_route(r, c, &why);
    if (!k) {
        fail_unsendable(r, c, QUARK_EUNAVAILABLE,
                        why ? why : "no silo to send the call to (out of memory?)");
        return;
    }
    c->conn = k;
    if (k->state != RC_READY) {
        list_push(&k->waiting, &k->waiting_tail, c);
        qk_rm_ensure_connecting(k);
        return;
    }
    qk_rm_send_on(k, c);
}

/* Send again, after a jittered backoff, a call a silo said it did not run. */
void qk_rm_retry_later(qk_remote *r, qk_rcall *c)
{
    c->written = false;
    c->conn = NULL;
    c->retry_at_ms = qk_now_ms_coarse() + qk_rm_backoff_of(r, c->attempts);
    c->next = r->delayed;
    r->delayed = c;
}

/* Route each call of `list` afresh. With `gone` (why its connection will not
 * be used again): a forward leaves its explicit target for the view's owner,
 * and gossip for that silo is dropped. */
void qk_rm_resend(qk_remote *r, qk_rcall *list, const char *gone)
{
    while (list) {
        qk_rcall *c = list;
        list = c->next;
        c->conn = NULL;
        if (gone && c->kind == RC_OP_GOSSIP) {
            qk_rm_complete(r, c, QUARK_EUNAVAILABLE, gone, NULL, 0);
            continue;
        }
        if (gone && c->target && c->kind == RC_OP_FWD && !c->attempts)
            c->attempts = 1; /* route by hash now */
        qk_rm_send_call(r, c);
    }
}

static void rsub_free(qk_remote *r, qk_rsub *rs)
{
    for (qk_rsub **pp = &r->all_subs; *pp; pp = &(*pp)->all_next) {
        if (*pp == rs) {
            *pp = rs->all_next;
            break;
        }
    }
    free(rs);
}

static void unsub_op(qk_remote *r, qk_rsub *rs)
{
    rs->released = true;
    qk_rcall *env = rs->env;
    if (env && env->in_table) {
        qk_rconn *k = env->conn;
        qk_rm_table_take(k, env->id);
        if (k->grpc) {
            qk_grpc_client_cancel(k->grpc, (int32_t)env->id);
        } else {
            uint8_t hdr[QK_FRAME_HEADER];
            qk_frame_header(hdr, QK_FRAME_UNSUBSCRIBE, env->id, 0);
            qk_rm_out_append(k, hdr, sizeof hdr);
        }
        qk_rm_rcall_free(env);
    } else if (env) { /* still waiting for a connection */
        if (env->conn)
            list_remove(&env->conn->waiting, &env->conn->waiting_tail, env);
        qk_rm_rcall_free(env);
    }
    qk_rm_sub_end(rs, QUARK_ECLOSED, "unsubscribed");
    rsub_free(r, rs);
}

/* Take in what application threads submitted; true if there was any. */
static bool drain_inbox(qk_remote *r)
{
    qk_mpsc_node *n;
    bool any = false;
    while ((n = qk_mpsc_pop(&r->inbox)) != NULL) {
        any = true;
        qk_rcall *c = QK_CONTAINER_OF(n, qk_rcall, qnode);
        if (c->kind == RC_OP_UNSUB) {
            unsub_op(r, c->rsub);
            qk_rm_rcall_free(c);
            continue;
        }
        if (c->kind == RC_OP_SUB) {
            c->rsub->all_next = r->all_subs;
            r->all_subs = c->rsub;
            if (atomic_load(&r->stopping)) {
                c->rsub->env = NULL;
                qk_rm_sub_end(c->rsub, QUARK_ECLOSED, "the client is disconnecting");
                qk_rm_rcall_free(c);
            } else {
                qk_rm_send_call(r, c);
            }
            continue;
        }
        if (atomic_load(&r->stopping)) {
            qk_rm_complete(r, c, QUARK_ECLOSED, "the client is disconnecting", NULL, 0);
            continue;
        }
        qk_dlheap_insert(&r->heap, &c->dl);
        if (c->retry_at_ms) { /* a direct call the silo did not run: after a backoff */
            c->next = r->delayed;
            r->delayed = c;
            continue;
        }
        qk_rm_send_call(r, c);
    }
    qk_rm_flush_all(r);
    return any;
}

static void on_wake(uv_async_t *h)
{
    (void)h; /* io_main drains the inbox */
}

static void expire(qk_remote *r, qk_rcall *c, uint64_t now)
{
    (void)now;
    char msg[600];
    if (c->in_table) {
        qk_rconn *k = c->conn;
        qk_rm_table_take(k, c->id);
        if (k->grpc)
            qk_grpc_client_cancel(k->grpc, (int32_t)c->id);
        snprintf(msg, sizeof msg, "deadline exceeded: no reply to %s from %s in time", c->method,
                 k->addr);
        qk_rm_complete(r, c, QUARK_ETIMEDOUT, msg, NULL, 0);
        return;
    }
    const char *where = c->conn ? c->conn->addr : "the cluster";
    if (c->conn) { /* waiting for a connection: it never left this process */
        list_remove(&c->conn->waiting, &c->conn->waiting_tail, c);
        snprintf(msg, sizeof msg, "no silo reachable before the deadline of %s (waited for %s)",
                 c->method, where);
    } else { /* delayed retry */
        list_remove(&r->delayed, NULL, c);
        snprintf(msg, sizeof msg, "deadline of %s reached while retrying (the silo had "
                 "answered that it could not run it)", c->method);
    }
    qk_rm_complete(r, c, c->written ? QUARK_ETIMEDOUT : QUARK_EUNAVAILABLE, msg, NULL, 0);
}

static void on_tick(uv_timer_t *t)
{
    qk_remote *r = t->data;
    uint64_t now = qk_now_ms_coarse();
    qk_deadline *d;
    while ((d = qk_dlheap_pop_expired(&r->heap, now)) != NULL)
        expire(r, QK_CONTAINER_OF(d, qk_rcall, dl), now);
    /* Retries whose backoff is over. */
    qk_rcall **pp = &r->delayed;
    qk_rcall *due = NULL;
    while (*pp) {
        qk_rcall *c = *pp;
        if (c->retry_at_ms <= now) {
            *pp = c->next;
            c->next = due;
            due = c;
        } else {
            pp = &c->next;
        }
    }
    while (due) {
        qk_rcall *n = due->next;
        qk_rm_send_call(r, due);
        due = n;
    }
    bool stopping = atomic_load(&r->stopping);
    for (size_t i = 0; i < r->nconns; i++) {
        qk_rconn *k = r->conns[i];
        /* A silo that never answers (no RST, no SYN-ACK): give up on it after
         * a bounded time instead of the kernel's minutes. */
        if ((k->state == RC_CONNECTING || k->state == RC_HELLO) &&
            now - k->attempt_started_ms > QK_CONNECT_TIMEOUT_MS)
            qk_rm_conn_lost(k, "no answer within the connect timeout");
        qk_rm_keepalive(k, now);
        if (k->state == RC_IDLE && !stopping && now >= k->reconnect_at_ms &&
            (k == r->primary || k->waiting || (k->member && !r->peer)))
            qk_rm_start_connect(k);
    }
    if (r->want_watch && !r->source)
        qk_rm_pick_source(r);
    if (r->hooks.tick)
        r->hooks.tick(r->hooks.arg, now);
    qk_rm_flush_all(r);
}

/* The client is disconnecting: end c (a subscription ends, a watch goes). */
static void fail_closed(qk_remote *r, qk_rcall *c, quark_err err, const char *why)
{
    if (c->kind == RC_OP_SUB) {
        qk_rm_sub_end(c->rsub, QUARK_ECLOSED, "the client disconnected");
        qk_rm_rcall_free(c);
    } else if (c->kind == RC_OP_WATCH) {
        qk_rm_rcall_free(c);
    } else {
        qk_rm_complete(r, c, err, why, NULL, 0);
    }
}

static void fail_all(qk_remote *r)
{
    for (size_t i = 0; i < r->nconns; i++) {
        qk_rconn *k = r->conns[i];
        qk_rcall *c;
        while ((c = qk_rm_table_take_any(k)) != NULL)
            fail_closed(r, c, c->written ? QUARK_EUNKNOWN : QUARK_ECLOSED,
                        "the client disconnected before the reply came");
        k->watch = NULL;
        while (k->waiting) {
            c = k->waiting;
            k->waiting = c->next;
            fail_closed(r, c, QUARK_ECLOSED, "the client disconnected before the call was sent");
        }
        k->waiting_tail = NULL;
        if (k->grpc) {
            qk_grpc_client_free(k->grpc);
            k->grpc = NULL;
        }
        if (k->tcp)
            uv_close((uv_handle_t *)k->tcp, qk_rm_on_tcp_closed);
        k->tcp = NULL;
        k->state = RC_IDLE;
    }
    while (r->delayed) {
        qk_rcall *c = r->delayed;
        r->delayed = c->next;
        qk_rm_complete(r, c, QUARK_ECLOSED,
                       "the client disconnected before the call was sent again",
                       NULL, 0);
    }
}

static void io_main(void *arg)
{
    qk_remote *r = arg;
    qk_rm_tls = r;
    qk_spin_init(&r->spin, r->peer ? 0 : r->cfg.poll_us);
    if (r->primary)
        qk_rm_start_connect(r->primary);
    /* Drain, run the loop, then sleep in epoll, announcing it so that
     * submitters know to wake us (they skip the eventfd write otherwise). */
    while (!atomic_load(&r->stopping)) {
        if (drain_inbox(r))
            r->io_event = true;
        uv_run(&r->loop, UV_RUN_NOWAIT);
        qk_rm_flush_all(r);
        if (!qk_mpsc_empty(&r->inbox))
            continue;
        /* Poll a little before sleeping while the core is ours (spin.h):
         * the next answers are often a few microseconds away. Only after
         * calls or answers moved: a tick alone is no reason to poll. */
        uint64_t until = r->io_event ? qk_spin_until(&r->spin) : 0;
        r->io_event = false;
        bool more = false;
        while (until && !atomic_load(&r->stopping)) {
            r->io_event = false;
            uv_run(&r->loop, UV_RUN_NOWAIT);
            if ((more = r->io_event || !qk_mpsc_empty(&r->inbox)))
                break;
            if (qk_now_ns() >= until)
                break;
        }
        if (until)
            qk_spin_found(&r->spin, more);
        if (more) {
            qk_rm_flush_all(r);
            continue;
        }
        atomic_store_explicit(&r->sleeping, 1, memory_order_seq_cst);
        if (qk_mpsc_empty(&r->inbox) && !atomic_load(&r->stopping))
            uv_run(&r->loop, UV_RUN_ONCE);
        atomic_store_explicit(&r->sleeping, 0, memory_order_relaxed);
    }
    uv_timer_stop(&r->tick);
    /* Stopping: fail what is left, close the connections. */
    drain_inbox(r);
    fail_all(r);
    /* Subscriptions the application still holds are freed by quark_unsubscribe
     * (if it comes) or with the client. */
    r->source = NULL;
    if (r->hooks.stop)
        r->hooks.stop(r->hooks.arg);
    uv_close((uv_handle_t *)&r->wake, NULL);
    uv_close((uv_handle_t *)&r->tick, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    qk_rm_tls = NULL;
}

static int add_seed(void *arg, const char *item, size_t len)
{
    qk_remote *r = arg;
    qk_rconn *k = qk_rm_conn_new(r, item, len);
    if (!k)
        return -1;
    k->seed = true;
    r->nseeds++;
    return 0;
}

static int parse_endpoints(qk_remote *r, const char *cs)
{
    if (qk_addr_list_each(cs, add_seed, r) != 0)
        return -1;
    return r->nseeds ? 0 : -1;
}

static void remote_free_conns(qk_remote *r)
{
    for (size_t i = 0; i < r->nconns; i++)
        qk_rm_conn_free(r->conns[i]);
    free(r->conns);
    r->conns = NULL;
    r->nconns = r->conns_cap = r->nseeds = 0;
}

static void remote_free(qk_remote *r)
{
    remote_free_conns(r);
    qk_direct_free(r->direct);
    free((void *)r->loc);
    uv_mutex_destroy(&r->mu);
    uv_cond_destroy(&r->cv);
    uv_mutex_destroy(&r->route_mu);
    free((char *)r->cfg.connection_string);
    free((char *)r->cfg.cluster_id);
    free((char *)r->cfg.client_name);
    if (r->cfg.cluster_key)
        explicit_bzero((char *)r->cfg.cluster_key, strlen(r->cfg.cluster_key));
    free((char *)r->cfg.cluster_key);
    free(r);
}

static qk_remote *remote_alloc(const qk_remote_cfg *cfg)
{
    qk_remote *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    uv_mutex_init(&r->mu);
    uv_cond_init(&r->cv);
    uv_mutex_init(&r->route_mu);
    r->cfg = *cfg;
    r->cfg.connection_string = cfg->connection_string ? strdup(cfg->connection_string) : NULL;
    r->cfg.cluster_id = strdup(cfg->cluster_id && *cfg->cluster_id ? cfg->cluster_id : "default");
    r->cfg.client_name = strdup(cfg->client_name ? cfg->client_name : "");
    r->cfg.cluster_key = cfg->cluster_key ? strdup(cfg->cluster_key) : NULL;
    if ((cfg->connection_string && !r->cfg.connection_string) || !r->cfg.cluster_id ||
        !r->cfg.client_name || (cfg->cluster_key && !r->cfg.cluster_key)) {
        remote_free(r);
        return NULL;
    }
    if (r->cfg.keepalive_ms && !r->cfg.keepalive_timeout_ms)
        r->cfg.keepalive_timeout_ms = 5 * r->cfg.keepalive_ms;
    r->max_msg = 4u << 20;
    r->meta[0] = "quark-cluster-id";
    r->meta[1] = r->cfg.cluster_id;
    r->meta[2] = NULL;
    return r;
}

quark_err qk_remote_new(const qk_remote_cfg *cfg, qk_remote **out)
{
    const char *cs = cfg->connection_string ? cfg->connection_string : "localhost:7000";
    qk_remote_cfg c = *cfg;
    c.connection_string = cs;
    qk_remote *r = remote_alloc(&c);
    if (!r)
        return qk_error(QUARK_ENOMEM, "out of memory creating a client");
    if (parse_endpoints(r, cs) != 0) {
        remote_free(r);
        return qk_error(QUARK_EINVAL, "connection string '%s' is not a comma-separated list "
                        "of HOST:PORT", cs);
    }
    r->primary = r->conns[0];
    r->loc = calloc(QK_LOC_SLOTS, sizeof *r->loc); /* NULL: it routes by the ring alone */
    if (c.direct_sockets > 0) /* NULL: none */
        r->direct = qk_direct_new(r->cfg.cluster_id, r->cfg.client_name, r->max_msg,
                                  c.direct_sockets, c.transport == QUARK_TRANSPORT_GRPC,
                                  c.poll_us, r->cfg.keepalive_ms, r->cfg.keepalive_timeout_ms);
    *out = r;
    return QUARK_OK;
}

quark_err qk_remote_new_peer(const qk_remote_cfg *cfg, const qk_remote_hooks *hooks,
                             qk_remote **out)
{
    qk_remote_cfg c = *cfg;
    c.connection_string = NULL;
    c.transport = QUARK_TRANSPORT_TCP;
    c.direct_sockets = 0;
    qk_remote *r = remote_alloc(&c);
    if (!r)
        return qk_error(QUARK_ENOMEM, "out of memory creating a silo's peer link");
    r->peer = true;
    r->hooks = *hooks;
    *out = r;
    return QUARK_OK;
}

quark_err qk_remote_connect(qk_remote *r)
{
    if (r->thread_started_)
        return atomic_load(&r->connected) || r->peer
                   ? QUARK_OK
                   : qk_error(QUARK_EUNAVAILABLE, "reconnecting to the cluster: %s",
                              r->first_error);
    qk_mpsc_init(&r->inbox);
    qk_arena_init(&r->arena, 16384);
    if (uv_loop_init(&r->loop) != 0)
        return qk_error(QUARK_ENOMEM, "out of memory connecting");
    uv_async_init(&r->loop, &r->wake, on_wake);
    r->wake.data = r;
    uv_timer_init(&r->loop, &r->tick);
    r->tick.data = r;
    uv_timer_start(&r->tick, on_tick, QK_TICK_MS, QK_TICK_MS);
    r->first_done = 0;
    r->seed_failures = 0;
    r->want_watch = !r->peer && r->cfg.routing != QUARK_ROUTE_PINNED;
    atomic_store(&r->stopping, 0);
    if (r->nseeds) {
        r->cur_seed = 0;
        r->primary = r->conns[0];
    }
    qk_direct_reopen(r->direct);
    if (uv_thread_create(&r->thread, io_main, r) != 0)
        return qk_error(QUARK_ENOMEM, "could not start the client's I/O thread");
    r->thread_started_ = true;
    if (r->peer)
        return QUARK_OK;
    /* Wait until one silo says hello, or every one has failed once. */
    uv_mutex_lock(&r->mu);
    while (r->first_done == 0)
        uv_cond_wait(&r->cv, &r->mu);
    int ok = r->first_done == 1;
    uv_mutex_unlock(&r->mu);
    if (!ok) {
        quark_err rc = qk_error(r->first_code == QUARK_ECLUSTER ? QUARK_ECLUSTER
                                                                : QUARK_EUNAVAILABLE,
                                "no silo answered at %s (last error: %s)",
                                r->cfg.connection_string, r->first_error);
        qk_remote_disconnect(r);
        return rc;
    }
    return QUARK_OK;
}

void qk_remote_disconnect(qk_remote *r)
{
    if (!r->thread_started_)
        return;
    atomic_store(&r->stopping, 1);
    qk_direct_shutdown(r->direct); /* direct calls in progress end now */
    uv_async_send(&r->wake);
    uv_thread_join(&r->thread);
    r->thread_started_ = false;
    atomic_store(&r->connected, 0);
    uv_loop_close(&r->loop);
    /* Back to the seeds: connections learnt from views are forgotten. */
    for (size_t i = r->nconns; i-- > 0;) {
        qk_rconn *k = r->conns[i];
        free(k->in);
        free(k->out);
        free(k->wbuf);
        k->in = k->out = k->wbuf = NULL;
        k->in_len = k->in_cap = k->out_len = k->out_cap = k->wbuf_cap = 0;
        k->state = RC_IDLE;
        k->failures = 0;
        k->reconnect_at_ms = 0;
        k->member = false;
        k->silo_id[0] = '\0';
        k->next_id = 0;
        qk_rm_conn_drop_lanes(k);
        if (!k->seed) {
            r->conns[i] = r->conns[--r->nconns];
            qk_rm_conn_free(k);
        }
    }
    qk_view_unref(r->view);
    r->view = NULL;
    qk_rm_publish_view(r);
    r->source = NULL;
    r->primary = r->nseeds ? r->conns[0] : NULL;
    qk_rm_publish_primary(r);
    qk_dlheap_destroy(&r->heap);
    qk_arena_destroy(&r->arena);
}

void qk_remote_free(qk_remote *r)
{
    if (!r)
        return;
    qk_remote_disconnect(r);
    while (r->all_subs)
        rsub_free(r, r->all_subs);
    remote_free(r);
}

int qk_remote_connected(const qk_remote *r)
{
    return atomic_load(&((qk_remote *)r)->connected);
}

void qk_rm_submit(qk_remote *r, qk_rcall *c)
{
    if (qk_rm_tls == r) { /* from a callback on the I/O thread: no queue, no wake */
        if (c->dl.at_ms)
            qk_dlheap_insert(&r->heap, &c->dl);
        qk_rm_send_call(r, c);
        return;
    }
    qk_mpsc_push(&r->inbox, &c->qnode);
    if (atomic_load_explicit(&r->sleeping, memory_order_seq_cst))
        uv_async_send(&r->wake);
}
