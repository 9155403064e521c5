/*
 * remote_conn.c - one connection of a remote (a client, or a silo's peer
 * link) to one silo: connecting, the TCP HELLO (or a gRPC session), reading
 * answers and stream frames, writing what is queued, and losing the
 * connection: its calls are sent again when they surely did not run (or are
 * idempotent), completed with QUARK_EUNKNOWN otherwise (remote.c's delivery
 * rules).
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "transport/auth.h"
#include "transport/remote_internal.h"

static void on_written(uv_write_t *req, int status);
static void finish_call(qk_remote *r, qk_rcall *c, quark_err err, bool actor_error,
                        const char *errmsg, size_t errlen, const uint8_t *result, size_t len);
static void finish_encoded(qk_rconn *k, qk_rcall *c, const uint8_t *p, size_t n);
static void deliver_event(qk_remote *r, qk_rcall *c, const uint8_t *p, size_t n);
static void learn_workers(qk_rconn *k, unsigned workers, unsigned served_by);

qk_rconn *qk_rm_conn_new(qk_remote *r, const char *addr, size_t len)
{
    if (r->nconns == r->conns_cap) {
        size_t cap = r->conns_cap ? r->conns_cap * 2 : 8;
        qk_rconn **n = realloc(r->conns, cap * sizeof *n);
        if (!n)
            return NULL;
        r->conns = n;
        r->conns_cap = cap;
    }
    qk_rconn *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    qk_addr a;
    if (len >= sizeof k->addr || qk_addr_parse(addr, len, &a) != 0) {
        free(k);
        return NULL;
    }
    memcpy(k->host, a.host, sizeof k->host);
    memcpy(k->port, a.port, sizeof k->port);
    memcpy(k->addr, addr, len);
    k->addr[len] = '\0';
    k->r = r;
    k->mask = 63;
    k->slots = calloc(k->mask + 1, sizeof *k->slots);
    if (!k->slots) {
        free(k);
        return NULL;
    }
    r->conns[r->nconns++] = k;
    return k;
}

/* The connection to the silo known as `addr` (by its own name or ours). */
static qk_rconn *conn_find(qk_remote *r, const char *addr)
{
    for (size_t i = 0; i < r->nconns; i++) {
        qk_rconn *k = r->conns[i];
        if (k->lane)
            continue;
        /* By either name: a silo whose HELLO_OK names it otherwise than the
         * view does must not get a new connection per call. */
        if (!strcmp(k->silo_id, addr) || !strcmp(k->addr, addr))
            return k;
    }
    return NULL;
}

qk_rconn *qk_rm_conn_get(qk_remote *r, const char *addr)
{
    qk_rconn *k = conn_find(r, addr);
    return k ? k : qk_rm_conn_new(r, addr, strlen(addr));
}

/* Free a connection that is closed and holds nothing (not a seed). */
static bool conn_busy(const qk_rconn *k)
{
    return k->state != RC_IDLE || k->tcp || k->count || k->waiting;
}

/* Free k's memory (it is out of r->conns, or all of them go). */
void qk_rm_conn_free(qk_rconn *k)
{
    free(k->lanes);
    free(k->slots);
    free(k->in);
    free(k->out);
    free(k->wbuf);
    free(k);
}

static void conn_destroy(qk_rconn *k)
{
    qk_remote *r = k->r;
    for (size_t i = 0; i < r->nconns; i++) {
        if (r->conns[i] == k) {
            r->conns[i] = r->conns[--r->nconns];
            break;
        }
    }
    qk_rm_conn_free(k);
}

/* Free a connection that is closed and holds nothing (not a seed), with its
 * lanes (a lane goes only with its silo connection). */
void qk_rm_conn_free_if_unused(qk_rconn *k)
{
    qk_remote *r = k->r;
    if (k->lane) {
        if (!k->parent && !conn_busy(k))
            conn_destroy(k); /* an orphan */
        return;
    }
    if (k->seed || k->member || conn_busy(k) || k == r->primary || k == r->source)
        return;
    for (unsigned i = 0; k->lanes && i < k->workers; i++)
        if (k->lanes[i] && conn_busy(k->lanes[i]))
            return;
    for (unsigned i = 0; k->lanes && i < k->workers; i++)
        if (k->lanes[i])
            conn_destroy(k->lanes[i]);
    conn_destroy(k);
}

/* Drop a silo connection's lanes (all idle: the client stopped). */
void qk_rm_conn_drop_lanes(qk_rconn *k)
{
    free(k->lanes);
    k->lanes = NULL;
    k->workers = k->served_by = 0;
}

void qk_rm_ensure_connecting(qk_rconn *k)
{
    if (k->state == RC_IDLE && !atomic_load(&k->r->stopping) &&
        qk_now_ms_coarse() >= k->reconnect_at_ms)
        qk_rm_start_connect(k);
}

static void g_on_response(void *ud, void *call_ud, int st, const char *gmsg, const uint8_t *msg,
                          size_t len)
{
    qk_rconn *k = ud;
    qk_rcall *c = call_ud;
    qk_rm_table_take(k, c->id);
    if (st != 0)
        finish_call(k->r, c, qk_grpc_err_of(st), false, gmsg, strlen(gmsg), NULL, 0);
    else
        finish_encoded(k, c, msg, len);
}

static void g_on_stream_msg(void *ud, void *call_ud, const uint8_t *msg, size_t len)
{
    qk_rconn *k = ud;
    qk_rcall *c = call_ud;
    if (c->kind == RC_OP_WATCH)
        qk_rm_handle_view(k, c, msg, len);
    else
        deliver_event(k->r, c, msg, len);
}

static void g_on_stream_end(void *ud, void *call_ud, int st, const char *gmsg)
{
    qk_rconn *k = ud;
    qk_rcall *c = call_ud;
    qk_rm_table_take(k, c->id);
    if (c->kind == RC_OP_WATCH) {
        qk_rm_watch_ended(k, c);
        return;
    }
    qk_rm_sub_end(c->rsub, st == 0 ? QUARK_ECLOSED : qk_grpc_err_of(st), gmsg);
    qk_rm_rcall_free(c);
}

static const qk_grpc_client_cbs g_cbs = {.on_response = g_on_response,
                                         .on_stream_msg = g_on_stream_msg,
                                         .on_stream_end = g_on_stream_end};

int qk_rm_out_append(qk_rconn *k, const uint8_t *p, size_t n)
{
    if (qk_buf_reserve(&k->out, &k->out_cap, k->out_len, n, 16384) != 0)
        return -1;
    memcpy(k->out + k->out_len, p, n);
    k->out_len += n;
    return 0;
}

static void g_write(void *wud, const uint8_t *data, size_t len)
{
    /* Out of memory drops output; the calls' deadlines complete them. */
    (void)qk_rm_out_append(wud, data, len);
}

static void flush(qk_rconn *k)
{
    if (k->grpc && !k->in_recv_)
        qk_grpc_client_flush(k->grpc, g_write, k);
    if (k->writing || k->out_len == 0 || k->state < RC_HELLO)
        return;
    for (qk_rcall *c = k->unsent; c; c = c->next)
        c->written = true; /* from now on it may reach the silo */
    k->unsent = k->unsent_tail = NULL;
    /* At once if the socket takes it all (uv_write would also change the
     * epoll registration twice per write), else the rest through uv_write. */
    uv_buf_t all = uv_buf_init((char *)k->out, (unsigned)k->out_len);
    int nw = uv_try_write((uv_stream_t *)k->tcp, &all, 1);
    if (nw < 0 && nw != UV_EAGAIN) {
        qk_rm_conn_lost(k, uv_strerror(nw));
        return;
    }
    size_t done = nw > 0 ? (size_t)nw : 0;
    if (done == k->out_len) {
        k->out_len = 0;
        return;
    }
    size_t len = qk_buf_swap(&k->out, &k->out_cap, &k->out_len, &k->wbuf, &k->wbuf_cap);
    uv_buf_t buf = uv_buf_init((char *)k->wbuf + done, (unsigned)(len - done));
    k->writing = true;
    k->wreq.data = k;
    if (uv_write(&k->wreq, (uv_stream_t *)k->tcp, &buf, 1, on_written) != 0) {
        k->writing = false;
        qk_rm_conn_lost(k, "write failed");
    }
}

void qk_rm_flush_all(qk_remote *r)
{
    for (size_t i = 0; i < r->nconns; i++)
        flush(r->conns[i]);
}

static void on_written(uv_write_t *req, int status)
{
    qk_rconn *k = req->data;
    k->writing = false;
    if (status < 0) {
        if (status != UV_ECANCELED)
            qk_rm_conn_lost(k, uv_strerror(status));
        return;
    }
    flush(k);
}

void qk_rm_on_tcp_closed(uv_handle_t *h)
{
    free(h);
}

static void first_result(qk_remote *r, int result, quark_err code, const char *why)
{
    uv_mutex_lock(&r->mu);
    if (r->first_done == 0 || (result == 1 && r->first_done != 1)) {
        r->first_code = code;
        if (result < 0 && why)
            snprintf(r->first_error, sizeof r->first_error, "%s", why);
        r->first_done = result;
        uv_cond_broadcast(&r->cv);
    }
    uv_mutex_unlock(&r->mu);
}

/* The primary moves to the next seed. */
static void next_primary(qk_remote *r)
{
    if (!r->nseeds)
        return;
    r->cur_seed = (r->cur_seed + 1) % r->nseeds;
    r->primary = r->conns[r->cur_seed];
    qk_rm_publish_primary(r);
}

/* The calls k had sent when it was lost: those that surely did not run (or
 * may run again) come back in a list to route afresh; the others end here. */
static qk_rcall *take_lost_calls(qk_rconn *k, const char *why)
{
    qk_remote *r = k->r;
    char msg[600];
    unsigned max = r->cfg.retry.max_attempts ? r->cfg.retry.max_attempts : 1;
    qk_rcall *c, *again = NULL;
    while ((c = qk_rm_table_take_any(k)) != NULL) {
        if (c->kind == RC_OP_WATCH) {
            qk_rm_rcall_free(c);
        } else if (c->kind == RC_OP_SUB) {
            snprintf(msg, sizeof msg, "connection to %s lost (%s): the subscription ended; "
                     "subscribe again to continue", k->addr, why);
            qk_rm_sub_end(c->rsub, QUARK_EUNAVAILABLE, msg);
            qk_rm_rcall_free(c);
        } else if (c->kind == RC_OP_GOSSIP) {
            qk_rm_complete(r, c, QUARK_EUNAVAILABLE, why, NULL, 0);
        } else if (!c->written || (c->idempotent && c->attempts < max)) {
            c->next = again; /* did not run, or safe to run again */
            again = c;
        } else {
            snprintf(msg, sizeof msg, "connection to %s lost (%s) after %s was sent: its "
                     "outcome is unknown (not retried: the method is not @quark.idempotent)",
                     k->addr, why, c->method);
            qk_rm_complete(r, c, QUARK_EUNKNOWN, msg, NULL, 0);
        }
    }
    return again;
}

void qk_rm_conn_lost(qk_rconn *k, const char *why)
{
    qk_remote *r = k->r;
    if (k->state == RC_IDLE)
        return;
    int was_ready = k->state == RC_READY;
    k->state = RC_IDLE;
    uv_close((uv_handle_t *)k->tcp, qk_rm_on_tcp_closed);
    k->tcp = NULL;
    k->in_len = k->out_len = 0;
    k->unsent = k->unsent_tail = NULL;
    k->writing = false;
    if (k->watch && !k->watch->in_table) /* (in the table: freed with it below) */
        qk_rm_rcall_free(k->watch);
    k->watch = NULL; /* our view source is gone: watch another member below */
    bool source_lost = r->source == k;
    if (source_lost)
        r->source = NULL;
    qk_rcall *again = take_lost_calls(k, why); /* every call in the table was sent on k */
    if (k->grpc) {
        qk_grpc_client_free(k->grpc); /* runs no callback: every call was handled above */
        k->grpc = NULL;
    }
    k->failures++;
    k->reconnect_at_ms = qk_now_ms_coarse() + (was_ready ? 0 : qk_rm_backoff_of(r, k->failures));
    if (k == r->primary && !was_ready) {
        r->seed_failures++;
        char msg[600];
        snprintf(msg, sizeof msg, "%s: %s", k->addr, why);
        if (r->seed_failures >= r->nseeds)
            first_result(r, -1, k->refusal ? k->refusal : QUARK_EUNAVAILABLE, msg);
    }
    if (k == r->primary && !r->view)
        next_primary(r);
    if (source_lost || (k == r->primary && !r->view))
        qk_rm_pick_source(r);
    /* Calls that may go again: route them afresh (the owner may be another
     * silo now, or this one once it answers). */
    qk_rm_resend(r, again, NULL);
    if (k->waiting && ((!k->member && k != r->primary) || (k == r->primary && !r->view))) {
        /* Nobody will route here again, or the primary moved on: the waiting
         * calls go where they belong now. */
        qk_rcall *w = k->waiting;
        k->waiting = k->waiting_tail = NULL;
        qk_rm_resend(r, w, k == r->primary ? NULL : why);
    }
    if (!atomic_load(&r->connected) || was_ready) {
        bool any = false;
        for (size_t i = 0; i < r->nconns; i++)
            any |= r->conns[i]->state == RC_READY;
        atomic_store(&r->connected, any);
    }
    qk_rm_publish_primary(r);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    qk_rconn *k = h->data;
    if (k->in_cap - k->in_len < 65536) {
        size_t cap = k->in_cap ? k->in_cap * 2 : 131072;
        uint8_t *b = realloc(k->in, cap);
        if (!b) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        k->in = b;
        k->in_cap = cap;
    }
    *buf = uv_buf_init((char *)k->in + k->in_len, (unsigned)(k->in_cap - k->in_len));
}

/* A call's answer arrived (either transport); `c` is out of the table. */
static void finish_call(qk_remote *r, qk_rcall *c, quark_err err, bool actor_error,
                        const char *errmsg, size_t errlen, const uint8_t *result, size_t len)
{
    unsigned max = r->cfg.retry.max_attempts ? r->cfg.retry.max_attempts : 1;
    if (err == QUARK_EUNAVAILABLE && !actor_error && c->has_hash && c->kind == RC_OP_CALL)
        qk_rm_unlocate(r, c->hash); /* not there (any more): by the ring next time */
    if (err == QUARK_EUNAVAILABLE && !actor_error && c->attempts < max &&
        (c->kind == RC_OP_CALL || c->kind == RC_OP_FWD)) {
        qk_rm_retry_later(r, c); /* the silo says it did not run it */
        return;
    }
    char errbuf[512];
    if (err != QUARK_OK) {
        if (errmsg && errlen)
            snprintf(errbuf, sizeof errbuf, "%.*s", (int)(errlen > 511 ? 511 : errlen), errmsg);
        else
            snprintf(errbuf, sizeof errbuf, "%s", quark_strerror(err));
    }
    qk_rm_complete_ex(r, c, err, actor_error, err == QUARK_OK ? NULL : errbuf, result, len);
}

static void finish_encoded(qk_rconn *k, qk_rcall *c, const uint8_t *p, size_t n)
{
    qk_remote *r = k->r;
    qk_wire_response resp;
    if (qk_wire_decode_response(p, n, &resp) != 0) {
        const char *m = "the silo's response could not be decoded";
        finish_call(r, c, QUARK_EPROTO, false, m, strlen(m), NULL, 0);
        return;
    }
    /* gRPC answers say which worker read the call (TCP says it in HELLO_OK). */
    if (k->grpc && resp.workers &&
        ((!k->lane && resp.workers != k->workers) || resp.served_by != k->served_by))
        learn_workers(k, resp.workers, resp.served_by);
    if (resp.location.n && c->has_hash && c->kind == RC_OP_CALL && !r->peer)
        qk_rm_locate(r, r->view, r->view_gen, c->hash, resp.location.p, resp.location.n);
    /* (an async caller's callback decodes into r->arena and resets it) */
    finish_call(r, c, (quark_err)resp.error_code, resp.actor_error, resp.error_message.p,
                resp.error_message.n, resp.result, resp.result_len);
}

static void handle_response(qk_rconn *k, const qk_frame *f)
{
    qk_rcall *c = qk_rm_table_take(k, f->id);
    if (!c) /* already completed (deadline) */
        return;
    if (c->kind == RC_OP_GOSSIP)
        qk_rm_complete(k->r, c, QUARK_OK, NULL, f->payload, f->len);
    else
        finish_encoded(k, c, f->payload, f->len);
}

static void handle_stream(qk_rconn *k, const qk_frame *f)
{
    qk_remote *r = k->r;
    qk_rcall *c = qk_rm_table_find(k, f->id);
    if (!c)
        return;
    if (c->kind == RC_OP_WATCH) {
        if (f->type == QK_FRAME_VIEW)
            qk_rm_handle_view(k, c, f->payload, f->len);
        else if (f->type == QK_FRAME_STREAM_END) {
            qk_rm_table_take(k, f->id);
            qk_rm_watch_ended(k, c);
        }
        return;
    }
    if (c->kind != RC_OP_SUB)
        return;
    if (f->type == QK_FRAME_STREAM_END) {
        qk_rm_table_take(k, f->id);
        Quark__ActorInvocationResponse *e =
            quark__actor_invocation_response__unpack(&r->arena.pb, f->len, f->payload);
        qk_rm_sub_end(c->rsub, e ? (quark_err)e->error_code : QUARK_EPROTO,
                      e ? e->error_message : "bad stream end");
        qk_rm_rcall_free(c);
    } else if (f->type == QK_FRAME_EVENT) {
        deliver_event(r, c, f->payload, f->len);
    }
    qk_arena_reset(&r->arena);
}

static void deliver_event(qk_remote *r, qk_rcall *c, const uint8_t *p, size_t n)
{
    Quark__ActorEvent *ae = quark__actor_event__unpack(&r->arena.pb, n, p);
    if (ae && c->rsub && !c->rsub->ended) {
        quark_event ev = {.actor_type = ae->actor_type, .actor_id = ae->actor_id,
                          .event_type = ae->event_type, .payload = ae->payload.data,
                          .payload_len = ae->payload.len, .sequence = ae->sequence};
        c->rsub->fn(&ev, QUARK_OK, NULL, c->rsub->arg);
    }
    qk_arena_reset(&r->arena);
}

/* The connection is usable: send what waited for it. */
static void conn_ready(qk_rconn *k)
{
    qk_remote *r = k->r;
    k->state = RC_READY;
    k->last_in_ms = qk_now_ms_coarse();
    k->pinged_ms = 0;
    k->failures = 0;
    if (k == r->primary)
        r->seed_failures = 0;
    atomic_store(&r->connected, 1);
    if (k == r->primary)
        qk_rm_publish_primary(r);
    first_result(r, 1, QUARK_OK, NULL);
    if (r->want_watch && !r->source)
        qk_rm_pick_source(r);
    qk_rcall *c = k->waiting;
    k->waiting = k->waiting_tail = NULL;
    while (c) {
        qk_rcall *n = c->next;
        qk_rm_send_on(k, c);
        c = n;
    }
    flush(k);
}

/* What the silo said of its workers (TCP: HELLO_OK; gRPC: every answer):
 * how many it runs and which one serves connection k. */
static void learn_workers(qk_rconn *k, unsigned workers, unsigned served_by)
{
    if (workers > 1024 || served_by > workers)
        workers = served_by = 0;
    if (!k->lane && workers != k->workers) {
        /* A silo that restarted with another worker count: new lanes. */
        qk_rconn **old = k->lanes;
        unsigned n = k->workers;
        k->lanes = NULL;
        for (unsigned i = 0; old && i < n; i++)
            if (old[i])
                old[i]->parent = NULL; /* orphans: freed once idle */
        for (unsigned i = 0; old && i < n; i++)
            if (old[i])
                qk_rm_conn_free_if_unused(old[i]);
        free(old);
        k->workers = workers;
    }
    k->served_by = served_by;
}

/* The silo has a cluster key and so do we: prove it (auth.h) before
 * anything else goes. */
static bool send_auth(qk_rconn *k, const uint8_t *challenge)
{
    Quark__TcpAuth a = QUARK__TCP_AUTH__INIT;
    uint8_t proof[QK_AUTH_PROOF], buf[QK_FRAME_HEADER + QK_AUTH_PROOF + 8];
    if (!qk_auth_proof(k->r->cfg.cluster_key, k->r->cfg.cluster_id, challenge, proof))
        return false;
    a.proof.data = proof;
    a.proof.len = sizeof proof;
    size_t len = quark__tcp_auth__get_packed_size(&a);
    qk_frame_header(buf, QK_FRAME_AUTH, 0, len);
    quark__tcp_auth__pack(&a, buf + QK_FRAME_HEADER);
    return qk_rm_out_append(k, buf, QK_FRAME_HEADER + len) == 0;
}

static void handle_hello(qk_rconn *k, const qk_frame *f)
{
    Quark__TcpHelloReply *h = quark__tcp_hello_reply__unpack(NULL, f->len, f->payload);
    if (!h || h->error_code) {
        char why[400];
        snprintf(why, sizeof why, "refused: %s", h ? h->error_message : "bad hello reply");
        /* A refusal (wrong cluster) is final for this endpoint's attempt. */
        k->refusal = h ? (quark_err)h->error_code : QUARK_EPROTO;
        if (h)
            quark__tcp_hello_reply__free_unpacked(h, NULL);
        qk_rm_conn_lost(k, why);
        return;
    }
    if (h->silo_id && h->silo_id[0] && strlen(h->silo_id) < sizeof k->silo_id)
        strcpy(k->silo_id, h->silo_id);
    learn_workers(k, h->workers, h->worker);
    bool proved = h->challenge.len != QK_AUTH_CHALLENGE || !k->r->cfg.cluster_key ||
                  send_auth(k, h->challenge.data);
    quark__tcp_hello_reply__free_unpacked(h, NULL);
    if (!proved) {
        qk_rm_conn_lost(k, "could not compute the cluster key's proof");
        return;
    }
    conn_ready(k); /* what waited goes after the AUTH */
}

/* The silo ends the connection: say why, as it did. */
static void goaway_received(qk_rconn *k, const qk_frame *f)
{
    Quark__ActorInvocationResponse *r =
        quark__actor_invocation_response__unpack(NULL, f->len, f->payload);
    char why[400];
    snprintf(why, sizeof why, "the silo is going away%s%.300s", r && *r->error_message ? ": " : "",
             r ? r->error_message : "");
    if (r)
        quark__actor_invocation_response__free_unpacked(r, NULL);
    qk_rm_conn_lost(k, why);
}

/* On the tick: PING a ready connection that has been silent for a while;
 * one silent for keepalive_timeout_ms (its silo frozen, or gone without a
 * reset) is lost, and its calls with it (docs/operations.md). */
void qk_rm_keepalive(qk_rconn *k, uint64_t now)
{
    const qk_remote_cfg *cfg = &k->r->cfg;
    if (k->state != RC_READY || !cfg->keepalive_ms)
        return;
    if (now - k->last_in_ms >= cfg->keepalive_timeout_ms) {
        char why[120];
        snprintf(why, sizeof why, "the silo sent nothing for %u ms, not even a PONG (keepalive)",
                 cfg->keepalive_timeout_ms);
        qk_rm_conn_lost(k, why);
        return;
    }
    bool quiet = now - k->last_in_ms >= cfg->keepalive_ms;
    if (!quiet || (k->pinged_ms && now - k->pinged_ms < cfg->keepalive_ms))
        return; /* heard from lately, or pinged lately */
    k->pinged_ms = now;
    if (k->grpc) {
        qk_grpc_client_ping(k->grpc);
    } else {
        uint8_t h[QK_FRAME_HEADER];
        qk_frame_header(h, QK_FRAME_PING, 0, 0);
        if (qk_rm_out_append(k, h, sizeof h) != 0)
            return;
    }
    flush(k);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    qk_rconn *k = st->data;
    k->r->io_event = true;
    if (n > 0) {
        k->last_in_ms = qk_now_ms_coarse();
        k->pinged_ms = 0;
    }
    if (n < 0) {
        qk_rm_conn_lost(k, n == UV_EOF ? "closed by the silo" : uv_strerror((int)n));
        return;
    }
    k->in_len += (size_t)n;
    if (k->grpc) {
        k->in_recv_ = true;
        int rc = qk_grpc_client_recv(k->grpc, k->in, k->in_len);
        k->in_recv_ = false;
        k->in_len = 0;
        if (rc != 0 || qk_grpc_client_want_close(k->grpc)) {
            qk_rm_conn_lost(k, rc != 0 ? "HTTP/2 protocol error from the silo"
                                       : "the silo is going away");
            return;
        }
        flush(k);
        return;
    }
    size_t off = 0;
    while (k->state >= RC_HELLO) {
        qk_frame f;
        const char *why = NULL;
        long used = qk_frame_parse(k->in + off, k->in_len - off, k->r->max_msg + 4096, &f, &why);
        if (used == 0)
            break;
        if (used < 0) {
            qk_rm_conn_lost(k, why ? why : "malformed frame from the silo");
            return;
        }
        off += (size_t)used;
        switch (f.type) {
        case QK_FRAME_HELLO_OK:
            handle_hello(k, &f);
            break;
        case QK_FRAME_RESPONSE:
        case QK_FRAME_GOSSIP_ACK:
            handle_response(k, &f);
            break;
        case QK_FRAME_EVENT:
        case QK_FRAME_STREAM_END:
        case QK_FRAME_VIEW:
            handle_stream(k, &f);
            break;
        case QK_FRAME_GOAWAY:
            goaway_received(k, &f);
            return;
        default:
            break;
        }
    }
    if (k->state == RC_IDLE)
        return;
    memmove(k->in, k->in + off, k->in_len - off);
    k->in_len -= off;
    flush(k);
}

static void on_connect(uv_connect_t *req, int status)
{
    qk_rconn *k = req->data;
    qk_remote *r = k->r;
    if (status == UV_ECANCELED)
        return; /* we closed that attempt ourselves (timeout or stop) */
    if (status < 0) {
        qk_rm_conn_lost(k, uv_strerror(status));
        return;
    }
    k->state = RC_HELLO;
    uv_tcp_nodelay(k->tcp, 1);
    uv_read_start((uv_stream_t *)k->tcp, on_alloc, on_read);
    if (!r->peer && r->cfg.transport == QUARK_TRANSPORT_GRPC) {
        k->grpc = qk_grpc_client_new(&g_cbs, k, k->addr, r->max_msg + 4096,
                                     k->lane ? k->shard + 1 : 0);
        if (!k->grpc) {
            qk_rm_conn_lost(k, "out of memory");
            return;
        }
        conn_ready(k); /* no handshake: the cluster id rides on every call */
        return;
    }
    Quark__TcpHello h = QUARK__TCP_HELLO__INIT;
    h.cluster_id = (char *)r->cfg.cluster_id;
    h.client_name = (char *)r->cfg.client_name;
    h.version = 1;
    h.worker = k->lane ? k->shard + 1 : 0;
    size_t len = protobuf_c_message_get_packed_size(&h.base);
    uint8_t hdr[QK_FRAME_MAGIC_LEN + QK_FRAME_HEADER];
    memcpy(hdr, QK_FRAME_MAGIC, QK_FRAME_MAGIC_LEN);
    qk_frame_header(hdr + QK_FRAME_MAGIC_LEN, QK_FRAME_HELLO, 0, len);
    uint8_t *body = malloc(len ? len : 1);
    if (!body || qk_rm_out_append(k, hdr, sizeof hdr) != 0) {
        free(body);
        qk_rm_conn_lost(k, "out of memory");
        return;
    }
    protobuf_c_message_pack(&h.base, body);
    qk_rm_out_append(k, body, len);
    free(body);
    flush(k);
}

void qk_rm_start_connect(qk_rconn *k)
{
    qk_remote *r = k->r;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(k->host, k->port, &hints, &ai);
    k->tcp = calloc(1, sizeof *k->tcp);
    if (!k->tcp) {
        if (ai)
            freeaddrinfo(ai);
        k->reconnect_at_ms = qk_now_ms_coarse() + qk_rm_backoff_of(r, ++k->failures);
        return;
    }
    uv_tcp_init(&r->loop, k->tcp);
    k->tcp->data = k;
    k->state = RC_CONNECTING;
    k->refusal = QUARK_OK;
    k->attempt_started_ms = qk_now_ms_coarse();
    if (gai != 0 || !ai) {
        qk_rm_conn_lost(k, gai_strerror(gai));
        return;
    }
    k->creq.data = k;
    int rc = uv_tcp_connect(&k->creq, k->tcp, ai->ai_addr, on_connect);
    freeaddrinfo(ai);
    if (rc != 0)
        qk_rm_conn_lost(k, uv_strerror(rc));
}
