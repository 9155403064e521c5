/*
 * peer.c - a silo's peer link (remote.h, peer mode): gossip to another
 * silo, forward a call to the silo that owns its actor, route by the
 * cluster's view. The cluster module (cluster/cluster.c) and the gossip
 * membership provider (cluster/gossip.c) drive it from the link's I/O thread
 * (its tick hook) and from the workers (forwards).
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "transport/remote_internal.h"

quark_err qk_remote_gossip(qk_remote *r, const char *addr, const uint8_t *p, size_t n,
                           uint32_t timeout_ms, qk_op *answer)
{
    qk_rcall *c = calloc(1, sizeof *c + QK_FRAME_HEADER + n);
    if (!c || !(c->target = strdup(addr))) {
        free(c);
        return qk_error(QUARK_ENOMEM, "out of memory sending gossip");
    }
    qk_frame_header(c->frame, QK_FRAME_GOSSIP, 0, n);
    memcpy(c->frame + QK_FRAME_HEADER, p, n);
    c->len = QK_FRAME_HEADER + n;
    c->kind = RC_OP_GOSSIP;
    c->method = "gossip";
    c->answer = answer;
    c->dl.at_ms = qk_now_ms_coarse() + timeout_ms;
    qk_dlheap_insert(&r->heap, &c->dl);
    qk_rm_send_call(r, c);
    return QUARK_OK;
}

uv_loop_t *qk_remote_loop(qk_remote *r)
{
    return &r->loop;
}

quark_err qk_remote_forward(qk_remote *r, qk_op *answer, const qk_msg *m, const char *owner,
                            uint32_t deadline_ms)
{
    const qk_type_entry *e = m->type;
    const char *method = e->iface->methods[m->method].name;
    size_t mlen = strlen(method);
    size_t len = qk_wire_forward_size(m->id_len, e->name_len, mlen, m->args_len, deadline_ms,
                                      m->chain, m->chain_len, m->hops + 1u);
    qk_rcall *c = malloc(sizeof *c + QK_FRAME_HEADER + len);
    char *target = c ? strdup(owner) : NULL;
    if (!c || !target) {
        free(c);
        free(target);
        return qk_error(QUARK_ENOMEM, "out of memory forwarding a call");
    }
    memset(c, 0, sizeof *c);
    qk_frame_header(c->frame, QK_FRAME_REQUEST, 0, len);
    qk_wire_encode_forward(c->frame + QK_FRAME_HEADER, m->id, m->id_len, e->name, e->name_len,
                           method, mlen, m->args, m->args_len, deadline_ms, m->chain,
                           m->chain_len, m->hops + 1u);
    c->len = QK_FRAME_HEADER + len;
    c->kind = RC_OP_FWD;
    c->target = target;
    c->answer = answer;
    c->idempotent = (e->iface->methods[m->method].flags & QUARK_METHOD_IDEMPOTENT) != 0;
    c->method = method;
    c->hash = m->hash;
    c->has_hash = true;
    c->dl.at_ms = qk_now_ms_coarse() + deadline_ms;
    qk_rm_submit(r, c);
    return QUARK_OK;
}

void qk_remote_install_view(qk_remote *r, qk_view *v)
{
    qk_rm_set_view(r, v);
}
