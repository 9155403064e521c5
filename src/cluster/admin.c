/*
 * admin.c - a silo's status over the network (quark_status_fetch), and the
 * status helpers of quark/cluster.h.
 *
 * quark_status_fetch is for tools and tests, not the call path: one blocking
 * TCP connection (Quark's protocol: magic, HELLO, STATUS), bounded by a
 * deadline on every step, closed after the answer.
 */
#include <errno.h>
#include <stdbool.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "quark/actor_service.pb-c.h"
#include "quark/cluster.h"
#include "core/common.h"
#include "transport/frame.h"
#include "transport/sock.h"

void quark_status_free(quark_silo_status *st)
{
    if (!st)
        return;
    for (size_t i = 0; st->members && i < st->n_members; i++)
        free(st->members[i].address);
    free(st->members);
    free(st->address);
    free(st);
}

int quark_status_format(const quark_silo_status *st, char *buf, size_t cap)
{
    if (!st || !buf || !cap)
        return -1;
    int n = snprintf(buf, cap, "view v%" PRIu64 " of %s#%" PRIu64 ": %zu member%s", st->view_version,
                     st->address ? st->address : "?", st->incarnation, st->n_members,
                     st->n_members == 1 ? "" : "s");
    for (size_t i = 0; i < st->n_members && n >= 0 && (size_t)n < cap; i++)
        n += snprintf(buf + n, cap - (size_t)n, " %s#%" PRIu64, st->members[i].address,
                      st->members[i].incarnation);
    if (n >= 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, "; %" PRIu64 " activations, %" PRIu64
                      " forwarded, %" PRIu64 " handed between workers", st->activations,
                      st->forwarded, st->handoffs);
    return n;
}

/* ---- the blocking exchange ---- */

/* Read one frame (payload malloc'd into *payload). */
static int read_frame(int fd, uint64_t until, uint8_t *type, uint8_t **payload, size_t *len)
{
    uint8_t hdr[QK_FRAME_HEADER];
    size_t got = 0;
    uint8_t *body = NULL;
    size_t need = sizeof hdr;
    while (got < need) {
        uint8_t *dst = got < sizeof hdr ? hdr + got : body + (got - sizeof hdr);
        size_t want = got < sizeof hdr ? sizeof hdr - got : need - got;
        ssize_t k = recv(fd, dst, want, 0);
        if (k > 0) {
            got += (size_t)k;
            if (got == sizeof hdr) {
                uint32_t l = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
                             (uint32_t)hdr[2] << 8 | hdr[3];
                if (l < 12 || l > (16u << 20))
                    return -1;
                need = 4 + (size_t)l;
                body = malloc(need - sizeof hdr + 1);
                if (!body)
                    return -1;
            }
        } else if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (qk_sock_wait(fd, POLLIN, until) <= 0) {
                free(body);
                return -1;
            }
        } else {
            free(body);
            return -1;
        }
    }
    *type = hdr[4];
    *payload = body;
    *len = need - sizeof hdr;
    return 0;
}

static int send_frame(int fd, uint8_t type, const ProtobufCMessage *m, uint64_t until, bool magic)
{
    size_t len = m ? protobuf_c_message_get_packed_size(m) : 0;
    uint8_t *buf = malloc(QK_FRAME_MAGIC_LEN + QK_FRAME_HEADER + len);
    if (!buf)
        return -1;
    size_t off = 0;
    if (magic) {
        memcpy(buf, QK_FRAME_MAGIC, QK_FRAME_MAGIC_LEN);
        off = QK_FRAME_MAGIC_LEN;
    }
    qk_frame_header(buf + off, type, 1, len);
    if (m)
        protobuf_c_message_pack(m, buf + off + QK_FRAME_HEADER);
    size_t n = off + QK_FRAME_HEADER + len;
    int rc = qk_sock_write_all(fd, buf, n, until) == n ? 0 : -1;
    free(buf);
    return rc;
}

quark_err quark_status_fetch(const char *address, const char *cluster_id, uint32_t timeout_ms,
                             quark_silo_status **out)
{
    if (!address || !out)
        return qk_error(QUARK_EINVAL, "quark_status_fetch: %s is NULL", !address ? "address" : "out");
    *out = NULL;
    uint64_t until = qk_now_ms_coarse() + (timeout_ms ? timeout_ms : 5000);
    char why[400];
    int fd = qk_sock_connect(address, until, why, sizeof why);
    if (fd < 0)
        return qk_error(QUARK_EUNAVAILABLE, "status of %s: %s", address, why);
    quark_err rc = QUARK_OK;
    uint8_t type = 0, *p = NULL;
    size_t len = 0;
    Quark__TcpHello h = QUARK__TCP_HELLO__INIT;
    h.cluster_id = (char *)(cluster_id && *cluster_id ? cluster_id : "default");
    h.client_name = "quark-status";
    h.version = 1;
    if (send_frame(fd, QK_FRAME_HELLO, &h.base, until, true) != 0 ||
        read_frame(fd, until, &type, &p, &len) != 0 || type != QK_FRAME_HELLO_OK) {
        rc = qk_error(QUARK_EUNAVAILABLE, "status of %s: the handshake failed", address);
        goto done;
    }
    Quark__TcpHelloReply *hr = quark__tcp_hello_reply__unpack(NULL, len, p);
    free(p);
    p = NULL;
    if (!hr || hr->error_code) {
        rc = qk_error(hr ? (quark_err)hr->error_code : QUARK_EPROTO, "status of %s: %s", address,
                      hr ? hr->error_message : "bad hello reply");
        if (hr)
            quark__tcp_hello_reply__free_unpacked(hr, NULL);
        goto done;
    }
    quark__tcp_hello_reply__free_unpacked(hr, NULL);
    Quark__SiloStatusRequest sr = QUARK__SILO_STATUS_REQUEST__INIT;
    if (send_frame(fd, QK_FRAME_STATUS, &sr.base, until, false) != 0 ||
        read_frame(fd, until, &type, &p, &len) != 0 || type != QK_FRAME_STATUS_OK) {
        rc = qk_error(QUARK_EUNAVAILABLE, "status of %s: no answer in time", address);
        goto done;
    }
    Quark__SiloStatus *ss = quark__silo_status__unpack(NULL, len, p);
    if (!ss || !ss->view) {
        if (ss)
            quark__silo_status__free_unpacked(ss, NULL);
        rc = qk_error(QUARK_EPROTO, "status of %s: the answer could not be decoded", address);
        goto done;
    }
    quark_silo_status *st = calloc(1, sizeof *st);
    if (st) {
        st->address = strdup(ss->view->from);
        st->incarnation = ss->view->from_incarnation;
        st->view_version = ss->view->version;
        st->n_members = ss->view->n_members;
        st->members = calloc(st->n_members ? st->n_members : 1, sizeof *st->members);
        st->activations = ss->activations;
        st->forwarded = ss->forwarded;
        st->handoffs = ss->handoffs;
        st->uptime_ms = ss->uptime_ms;
        bool ok = st->address && st->members;
        for (size_t i = 0; ok && i < st->n_members; i++) {
            st->members[i].address = strdup(ss->view->members[i]->address);
            st->members[i].incarnation = ss->view->members[i]->incarnation;
            ok = st->members[i].address != NULL;
        }
        if (!ok) {
            quark_status_free(st);
            st = NULL;
        }
    }
    quark__silo_status__free_unpacked(ss, NULL);
    if (!st)
        rc = qk_error(QUARK_ENOMEM, "out of memory reading a status");
    *out = st;
done:
    free(p);
    close(fd);
    if (rc == QUARK_OK)
        qk_error_clear();
    return rc;
}
