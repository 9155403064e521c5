/*
 * view_codec.c - cluster views on the wire: the ClusterView message of
 * actor_service.proto, as silos send it to watching clients (see
 * view_codec.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quark/actor_service.pb-c.h"
#include "transport/view_codec.h"

uint8_t *qk_view_encode(const qk_view *v, const char *cluster_id, const char *from,
                        uint64_t from_incarnation, size_t *len)
{
    Quark__ClusterView cv = QUARK__CLUSTER_VIEW__INIT;
    /* protobuf-c takes non-const strings but only reads them when packing. */
    cv.cluster_id = (char *)(cluster_id ? cluster_id : "");
    cv.from = (char *)(from ? from : "");
    cv.from_incarnation = from_incarnation;
    cv.version = v->version;
    cv.vnodes = v->vnodes;
    Quark__ClusterMember *ms = NULL, **mp = NULL;
    if (v->n) {
        ms = calloc(v->n, sizeof *ms);
        mp = calloc(v->n, sizeof *mp);
        if (!ms || !mp) {
            free(ms);
            free(mp);
            return NULL;
        }
    }
    for (size_t i = 0; i < v->n; i++) {
        quark__cluster_member__init(&ms[i]);
        ms[i].address = v->members[i].addr;
        ms[i].incarnation = v->members[i].incarnation;
        ms[i].status = QUARK__MEMBER_STATUS__MEMBER_ALIVE;
        mp[i] = &ms[i];
    }
    cv.n_members = v->n;
    cv.members = mp;
    size_t n = quark__cluster_view__get_packed_size(&cv);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf) {
        quark__cluster_view__pack(&cv, buf);
        *len = n;
    }
    free(ms);
    free(mp);
    return buf;
}

/* Why a decode failed, with the cluster ids in it: per thread, valid until
 * the thread's next qk_view_decode. */
static _Thread_local char decode_why[256];

static int addr_ok(const char *a)
{
    return a && a[0] && strlen(a) < QK_ADDR_MAX;
}

qk_view *qk_view_decode(const uint8_t *p, size_t n, const char *cluster_id, char **from,
                        const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    if (from)
        *from = NULL;
    Quark__ClusterView *cv = quark__cluster_view__unpack(NULL, n, p);
    if (!cv) {
        *why = "not a ClusterView (malformed bytes)";
        return NULL;
    }
    qk_view *v = NULL;
    qk_view_member *ms = NULL;
    const char *cid = cv->cluster_id ? cv->cluster_id : "";
    if (cluster_id && strcmp(cid, cluster_id) != 0) {
        snprintf(decode_why, sizeof decode_why, "view from cluster '%.64s', expected '%.64s'",
                 cid, cluster_id);
        *why = decode_why;
        goto out;
    }
    if (cv->n_members) {
        ms = calloc(cv->n_members, sizeof *ms);
        if (!ms) {
            *why = "out of memory";
            goto out;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < cv->n_members; i++) {
        const Quark__ClusterMember *m = cv->members[i];
        if (!addr_ok(m->address)) {
            *why = "a member address is empty or too long";
            goto out;
        }
        if (m->status != QUARK__MEMBER_STATUS__MEMBER_ALIVE)
            continue;
        ms[k].addr = m->address; /* qk_view_new copies */
        ms[k].incarnation = m->incarnation;
        k++;
    }
    v = qk_view_new(ms, k, cv->version, cv->vnodes, NULL);
    if (!v) {
        *why = "out of memory";
        goto out;
    }
    if (from) {
        *from = strdup(cv->from ? cv->from : "");
        if (!*from) {
            qk_view_unref(v);
            v = NULL;
            *why = "out of memory";
        }
    }
out:
    free(ms);
    quark__cluster_view__free_unpacked(cv, NULL);
    return v;
}

