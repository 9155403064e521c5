/*
 * wire.c - hand-coded protobuf encoding of the call envelope (see wire.h).
 *
 * Field numbers are those of proto/quark/actor_service.proto:
 *   ActorInvocationRequest  1 actor_id, 2 actor_type, 3 method_name (string),
 *                           4 serialized_args (bytes), 5 deadline_ms (uint32),
 *                           6 call_chain (CallLink: 1 fixed64 actor, 2 uint32 turn),
 *                           7 cluster_id (string), 8 hops (uint32)
 *   ActorInvocationResponse 1 serialized_result (bytes), 2 error_message
 *                           (string), 3 error_code (sint32), 4 actor_error (bool)
 * Proto3 rules: default values are not written; on decode the last
 * occurrence of a field wins and unknown fields are skipped.
 */
#include <string.h>

#include "transport/wire.h"

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* ---- reading ---- */

typedef struct rd {
    const uint8_t *p, *end;
} rd;

static int get_varint(rd *r, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return -1;
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1; /* more than 10 bytes */
}

static int get_len(rd *r, const uint8_t **p, size_t *n)
{
    uint64_t len;
    if (get_varint(r, &len) != 0 || len > (uint64_t)(r->end - r->p))
        return -1;
    *p = r->p;
    *n = (size_t)len;
    r->p += len;
    return 0;
}

static int skip(rd *r, unsigned wt)
{
    uint64_t v;
    const uint8_t *p;
    size_t n;
    switch (wt) {
    case WT_VARINT:
        return get_varint(r, &v);
    case WT_I64:
        if (r->end - r->p < 8)
            return -1;
        r->p += 8;
        return 0;
    case WT_LEN:
        return get_len(r, &p, &n);
    case WT_I32:
        if (r->end - r->p < 4)
            return -1;
        r->p += 4;
        return 0;
    default:
        return -1; /* groups are not proto3 */
    }
}

static int get_key(rd *r, uint32_t *field, unsigned *wt)
{
    uint64_t k;
    if (get_varint(r, &k) != 0 || k >> 32 || (k >> 3) == 0)
        return -1;
    *field = (uint32_t)(k >> 3);
    *wt = (unsigned)(k & 7);
    return 0;
}

static int get_str(rd *r, unsigned wt, qk_wire_str *s)
{
    const uint8_t *p;
    if (wt != WT_LEN || get_len(r, &p, &s->n) != 0)
        return -1;
    s->p = (const char *)p;
    return 0;
}

static int decode_link(const uint8_t *p, size_t n, qk_chain_link *l)
{
    rd r = {p, p + n};
    l->act = 0;
    l->turn = 0;
    l->pad_ = 0;
    while (r.p < r.end) {
        uint32_t f;
        unsigned wt;
        if (get_key(&r, &f, &wt) != 0)
            return -1;
        if (f == 1 && wt == WT_I64) {
            if (r.end - r.p < 8)
                return -1;
            uint64_t v = 0;
            for (int i = 7; i >= 0; i--)
                v = v << 8 | r.p[i];
            l->act = v;
            r.p += 8;
        } else if (f == 2 && wt == WT_VARINT) {
            uint64_t v;
            if (get_varint(&r, &v) != 0)
                return -1;
            l->turn = (uint32_t)v;
        } else if (skip(&r, wt) != 0) {
            return -1;
        }
    }
    return 0;
}

int qk_wire_decode_request(const uint8_t *p, size_t n, qk_wire_request *q,
                           qk_chain_link *chain, size_t cap)
{
    rd r = {p, p + n};
    memset(q, 0, sizeof *q);
    q->actor_id.p = q->actor_type.p = q->method.p = q->cluster_id.p = "";
    while (r.p < r.end) {
        uint32_t f;
        unsigned wt;
        if (get_key(&r, &f, &wt) != 0)
            return -1;
        int rc;
        switch (f) {
        case 1: rc = get_str(&r, wt, &q->actor_id); break;
        case 2: rc = get_str(&r, wt, &q->actor_type); break;
        case 3: rc = get_str(&r, wt, &q->method); break;
        case 7: rc = get_str(&r, wt, &q->cluster_id); break;
        case 4:
            rc = wt == WT_LEN ? get_len(&r, &q->args, &q->args_len) : -1;
            break;
        case 5: {
            uint64_t v = 0;
            rc = wt == WT_VARINT ? get_varint(&r, &v) : -1;
            q->deadline_ms = (uint32_t)v;
            break;
        }
        case 8: {
            uint64_t v = 0;
            rc = wt == WT_VARINT ? get_varint(&r, &v) : -1;
            q->hops = v > 255 ? 255 : (uint32_t)v;
            break;
        }
        case 6: {
            const uint8_t *lp;
            size_t ln;
            rc = wt == WT_LEN ? get_len(&r, &lp, &ln) : -1;
            if (rc == 0) {
                qk_chain_link l;
                rc = decode_link(lp, ln, &l);
                if (rc == 0 && q->n_chain < cap)
                    chain[q->n_chain] = l;
                q->n_chain++;
            }
            break;
        }
        default: rc = skip(&r, wt); break;
        }
        if (rc != 0)
            return -1;
    }
    if (!q->args)
        q->args = (const uint8_t *)"";
    return 0;
}

int qk_wire_decode_response(const uint8_t *p, size_t n, qk_wire_response *s)
{
    rd r = {p, p + n};
    memset(s, 0, sizeof *s);
    s->error_message.p = "";
    s->location.p = "";
    s->result = (const uint8_t *)"";
    while (r.p < r.end) {
        uint32_t f;
        unsigned wt;
        if (get_key(&r, &f, &wt) != 0)
            return -1;
        int rc;
        if (f == 1) {
            rc = wt == WT_LEN ? get_len(&r, &s->result, &s->result_len) : -1;
        } else if (f == 2) {
            rc = get_str(&r, wt, &s->error_message);
        } else if (f == 3) {
            uint64_t v = 0;
            rc = wt == WT_VARINT ? get_varint(&r, &v) : -1;
            uint32_t z = (uint32_t)v; /* sint32: zigzag */
            s->error_code = (int32_t)((z >> 1) ^ (0u - (z & 1)));
        } else if (f == 4) {
            uint64_t v = 0;
            rc = wt == WT_VARINT ? get_varint(&r, &v) : -1;
            s->actor_error = v != 0;
        } else if (f == 7) {
            rc = get_str(&r, wt, &s->location);
        } else if (f == 5 || f == 6) {
            uint64_t v = 0;
            rc = wt == WT_VARINT ? get_varint(&r, &v) : -1;
            *(f == 5 ? &s->served_by : &s->workers) = v > UINT32_MAX ? 0 : (uint32_t)v;
        } else {
            rc = skip(&r, wt);
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- writing ---- */

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *o, uint64_t v)
{
    while (v >= 0x80) {
        *o++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *o++ = (uint8_t)v;
    return o;
}

static size_t len_field_size(size_t n)
{
    return n ? 1 + varint_size(n) + n : 0; /* keys of fields 1..15 take one byte */
}

static uint8_t *put_len_field(uint8_t *o, uint32_t field, const void *p, size_t n)
{
    if (!n)
        return o;
    *o++ = (uint8_t)(field << 3 | WT_LEN);
    o = put_varint(o, n);
    memcpy(o, p, n);
    return o + n;
}

size_t qk_wire_request_size(size_t id_len, size_t type_len, size_t method_len, size_t args_len,
                            uint32_t deadline_ms)
{
    return len_field_size(id_len) + len_field_size(type_len) + len_field_size(method_len) +
           len_field_size(args_len) + (deadline_ms ? 1 + varint_size(deadline_ms) : 0);
}

uint8_t *qk_wire_encode_request(uint8_t *o, const char *id, size_t id_len, const char *type,
                                size_t type_len, const char *method, size_t method_len,
                                const quark_method_desc *md, const ProtobufCMessage *args_msg,
                                size_t args_len,
                                uint32_t deadline_ms)
{
    o = put_len_field(o, 1, id, id_len);
    o = put_len_field(o, 2, type, type_len);
    o = put_len_field(o, 3, method, method_len);
    if (args_len) {
        *o++ = (uint8_t)(4 << 3 | WT_LEN);
        o = put_varint(o, args_len);
        o += qk_msg_pack(md, QK_IN, args_msg, o);
    }
    if (deadline_ms) {
        *o++ = (uint8_t)(5 << 3 | WT_VARINT);
        o = put_varint(o, deadline_ms);
    }
    return o;
}

/* A CallLink: 1 fixed64 actor, 2 uint32 turn. */
static size_t link_size(const qk_chain_link *l)
{
    return (l->act ? 9 : 0) + (l->turn ? 1 + varint_size(l->turn) : 0);
}

size_t qk_wire_forward_size(size_t id_len, size_t type_len, size_t method_len, size_t args_len,
                            uint32_t deadline_ms, const qk_chain_link *chain, size_t n_chain,
                            uint32_t hops)
{
    size_t n = len_field_size(id_len) + len_field_size(type_len) + len_field_size(method_len) +
               len_field_size(args_len) + (deadline_ms ? 1 + varint_size(deadline_ms) : 0) +
               (hops ? 1 + varint_size(hops) : 0);
    for (size_t i = 0; i < n_chain; i++) {
        size_t ln = link_size(&chain[i]);
        n += 1 + varint_size(ln) + ln; /* an empty link is still a (zero-length) element */
    }
    return n;
}

uint8_t *qk_wire_encode_forward(uint8_t *o, const char *id, size_t id_len, const char *type,
                                size_t type_len, const char *method, size_t method_len,
                                const uint8_t *args, size_t args_len, uint32_t deadline_ms,
                                const qk_chain_link *chain, size_t n_chain, uint32_t hops)
{
    o = put_len_field(o, 1, id, id_len);
    o = put_len_field(o, 2, type, type_len);
    o = put_len_field(o, 3, method, method_len);
    o = put_len_field(o, 4, args, args_len);
    if (deadline_ms) {
        *o++ = (uint8_t)(5 << 3 | WT_VARINT);
        o = put_varint(o, deadline_ms);
    }
    for (size_t i = 0; i < n_chain; i++) {
        const qk_chain_link *l = &chain[i];
        *o++ = (uint8_t)(6 << 3 | WT_LEN);
        o = put_varint(o, link_size(l));
        if (l->act) {
            *o++ = (uint8_t)(1 << 3 | WT_I64);
            for (int b = 0; b < 8; b++)
                *o++ = (uint8_t)(l->act >> (8 * b));
        }
        if (l->turn) {
            *o++ = (uint8_t)(2 << 3 | WT_VARINT);
            o = put_varint(o, l->turn);
        }
    }
    if (hops) {
        *o++ = (uint8_t)(8 << 3 | WT_VARINT);
        o = put_varint(o, hops);
    }
    return o;
}

static uint32_t zigzag32(int32_t v)
{
    return ((uint32_t)v << 1) ^ (0u - ((uint32_t)v >> 31));
}

size_t qk_wire_response_size(int32_t err, size_t msg_len, size_t result_len, bool actor_error,
                             const char *where)
{
    return len_field_size(result_len) + len_field_size(msg_len) +
           (err ? 1 + varint_size(zigzag32(err)) : 0) + (err && actor_error ? 2 : 0) +
           (where ? len_field_size(strlen(where)) : 0);
}

uint8_t *qk_wire_encode_response(uint8_t *o, int32_t err, const char *msg, size_t msg_len,
                                 const uint8_t *result, size_t result_len, bool actor_error,
                                 const char *where)
{
    o = put_len_field(o, 1, result, result_len);
    o = put_len_field(o, 2, msg, msg_len);
    if (err) {
        *o++ = (uint8_t)(3 << 3 | WT_VARINT);
        o = put_varint(o, zigzag32(err));
        if (actor_error) {
            *o++ = (uint8_t)(4 << 3 | WT_VARINT);
            *o++ = 1;
        }
    }
    if (where)
        o = put_len_field(o, 7, where, strlen(where));
    return o;
}
