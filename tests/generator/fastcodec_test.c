/*
 * fastcodec_test.c - the size/pack/unpack functions protoc-gen-quark emits
 * for "simple" messages (good/scalars.proto), against protobuf-c: the same
 * bytes out for random values (extremes, negative int32 and enums, -0.0, NaN
 * bit patterns), each side decodes what the other wrote, unknown fields of
 * every wire type are skipped, wrong wire types, truncations and random bytes
 * are refused cleanly (run it under ASan), and a message that is not simple
 * gets no hooks.
 */
#include <float.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scalars.quark.h"

static int failures;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            if (failures < 20)                                                   \
                fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                        #cond);                                                  \
            failures++;                                                          \
        }                                                                        \
    } while (0)

/* xorshift64*: reproducible */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* A 64-bit value: often an extreme or small, sometimes any. */
static uint64_t rnd64(void)
{
    switch (rnd() % 10) {
    case 0:
        return 0;
    case 1:
        return (uint64_t)INT64_MIN;
    case 2:
        return (uint64_t)INT64_MAX;
    case 3:
        return UINT64_MAX;
    case 4:
        return rnd() % 300;
    case 5:
        return (uint64_t)-(int64_t)(rnd() % 300);
    case 6:
        return rnd() >> (rnd() % 64);
    default:
        return rnd();
    }
}

static uint32_t rnd32(void)
{
    switch (rnd() % 8) {
    case 0:
        return 0;
    case 1:
        return (uint32_t)INT32_MIN;
    case 2:
        return (uint32_t)INT32_MAX;
    case 3:
        return UINT32_MAX;
    case 4:
        return (uint32_t)(rnd() % 300);
    case 5:
        return (uint32_t)-(int32_t)(rnd() % 300);
    default:
        return (uint32_t)(rnd() >> (rnd() % 33));
    }
}

static float rndf(void)
{
    static const uint32_t bits[] = {0x00000000u, 0x80000000u /* -0.0 */, 0x7fc00000u /* NaN */,
                                    0xffc00001u, 0x7f800001u /* signalling NaN */,
                                    0x7f800000u /* inf */, 0xff800000u, 0x00000001u,
                                    0x3f800000u};
    uint32_t u = rnd() % 2 ? bits[rnd() % (sizeof bits / sizeof bits[0])] : (uint32_t)rnd();
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static double rndd(void)
{
    static const uint64_t bits[] = {0, 0x8000000000000000ull /* -0.0 */,
                                    0x7ff8000000000000ull /* NaN */, 0xfff8000000000001ull,
                                    0x7ff0000000000001ull, 0x7ff0000000000000ull,
                                    0x0000000000000001ull, 0x3ff0000000000000ull};
    uint64_t u = rnd() % 2 ? bits[rnd() % (sizeof bits / sizeof bits[0])] : rnd();
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static Qg__Scalars__Color rnd_color(void)
{
    static const int32_t v[] = {0, 1, 2, -5, INT32_MIN, INT32_MAX, 77};
    return (Qg__Scalars__Color)v[rnd() % (sizeof v / sizeof v[0])];
}

static int rnd_bool(void)
{
    return (int)(rnd() % 2);
}

static void rnd_varints(Qg__Scalars__VarintsRequest *m)
{
    *m = (Qg__Scalars__VarintsRequest)QG__SCALARS__VARINTS_REQUEST__INIT;
    int sparse = rnd() % 3 == 0; /* many fields left at their default */
    if (!sparse || rnd_bool())
        m->i32 = (int32_t)rnd32();
    if (!sparse || rnd_bool())
        m->i64 = (int64_t)rnd64();
    if (!sparse || rnd_bool())
        m->u32 = rnd32();
    if (!sparse || rnd_bool())
        m->u64 = rnd64();
    if (!sparse || rnd_bool())
        m->s32 = (int32_t)rnd32();
    if (!sparse || rnd_bool())
        m->s64 = (int64_t)rnd64();
    if (!sparse || rnd_bool())
        m->flag = rnd_bool();
    if (!sparse || rnd_bool())
        m->color = rnd_color();
    if (!sparse || rnd_bool())
        m->camelcase = (int32_t)rnd32();
}

static void rnd_fixed(Qg__Scalars__FixedReply *m)
{
    *m = (Qg__Scalars__FixedReply)QG__SCALARS__FIXED_REPLY__INIT;
    int sparse = rnd() % 3 == 0;
    if (!sparse || rnd_bool())
        m->d = rndd();
    if (!sparse || rnd_bool())
        m->f = rndf();
    if (!sparse || rnd_bool())
        m->fx32 = rnd32();
    if (!sparse || rnd_bool())
        m->fx64 = rnd64();
    if (!sparse || rnd_bool())
        m->sfx32 = (int32_t)rnd32();
    if (!sparse || rnd_bool())
        m->sfx64 = (int64_t)rnd64();
    if (!sparse || rnd_bool())
        m->color = rnd_color();
    if (!sparse || rnd_bool())
        m->ok = rnd_bool();
}

static int varints_equal(const Qg__Scalars__VarintsRequest *a, const Qg__Scalars__VarintsRequest *b)
{
    return a->i32 == b->i32 && a->i64 == b->i64 && a->u32 == b->u32 && a->u64 == b->u64 &&
           a->s32 == b->s32 && a->s64 == b->s64 && !a->flag == !b->flag &&
           a->color == b->color && a->camelcase == b->camelcase;
}

/* Same bits (NaN payloads included), except that -0.0 is the default like
 * 0.0 and is not written, so it comes back as 0.0. */
static int double_same(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0 || (a == 0 && b == 0);
}

static int float_same(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0 || (a == 0 && b == 0);
}

static int fixed_equal(const Qg__Scalars__FixedReply *a, const Qg__Scalars__FixedReply *b)
{
    return double_same(a->d, b->d) && float_same(a->f, b->f) &&
           a->fx32 == b->fx32 && a->fx64 == b->fx64 && a->sfx32 == b->sfx32 &&
           a->sfx64 == b->sfx64 && a->color == b->color && !a->ok == !b->ok;
}

static const quark_method_desc *method(unsigned i)
{
    return &qg_scalars_Scalars_interface.methods[i];
}

/* Append an unknown field (a number in 3000..3999, which no message uses) of wire
 * type wt. */
static size_t put_varint(uint8_t *o, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        o[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    o[n++] = (uint8_t)v;
    return n;
}

static size_t put_unknown(uint8_t *o, unsigned wt)
{
    size_t n = put_varint(o, (uint64_t)(3000 + rnd() % 1000) << 3 | wt);
    switch (wt) {
    case 0:
        n += put_varint(o + n, rnd64());
        break;
    case 1:
        for (int i = 0; i < 8; i++)
            o[n++] = (uint8_t)rnd();
        break;
    case 2: {
        size_t len = rnd() % 20;
        n += put_varint(o + n, len);
        for (size_t i = 0; i < len; i++)
            o[n++] = (uint8_t)rnd();
        break;
    }
    default: /* 5 */
        for (int i = 0; i < 4; i++)
            o[n++] = (uint8_t)rnd();
        break;
    }
    return n;
}

/* Decode `n` bytes in an exactly sized heap copy (ASan sees overreads). */
static int unpack_exact(int (*fn)(void *, const uint8_t *, size_t), void *msg,
                        const uint8_t *bytes, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (n)
        memcpy(copy, bytes, n);
    int rc = fn(msg, n ? copy : NULL, n);
    free(copy);
    return rc;
}

static void test_hooks_present(void)
{
    const quark_method_desc *v = method(qg_scalars_Scalars_Varints_METHOD);
    CHECK(v->in_size && v->in_pack && v->in_unpack);
    CHECK(v->out_size && v->out_pack && v->out_unpack);
    const quark_method_desc *p = method(qg_scalars_Scalars_Ping_METHOD);
    CHECK(p->in_size && p->in_pack && p->in_unpack); /* empty: simple */
    CHECK(p->out_size && p->out_pack && p->out_unpack);
    const quark_method_desc *mx = method(qg_scalars_Scalars_Mixed_METHOD);
    CHECK(!mx->in_size && !mx->in_pack && !mx->in_unpack); /* NotSimple */
    CHECK(mx->out_size && mx->out_pack && mx->out_unpack);
    const quark_method_desc *b = method(qg_scalars_Scalars_Back_METHOD);
    CHECK(b->in_size && b->in_pack && b->in_unpack);
    CHECK(!b->out_size && !b->out_pack && !b->out_unpack);
}

/* One message both ways: pack equality, decoding each other's bytes, with
 * unknown fields, wrong wire types and truncations. */
static void check_message(const ProtobufCMessage *orig, const quark_method_desc *md, int out,
                          int (*equal)(const void *, const void *))
{
    size_t (*size_fn)(const void *) = out ? md->out_size : md->in_size;
    size_t (*pack_fn)(const void *, uint8_t *) = out ? md->out_pack : md->in_pack;
    int (*unpack_fn)(void *, const uint8_t *, size_t) = out ? md->out_unpack : md->in_unpack;
    const ProtobufCMessageDescriptor *desc = orig->descriptor;

    uint8_t ours[256], theirs[256];
    size_t n = size_fn(orig);
    size_t pn = protobuf_c_message_get_packed_size(orig);
    CHECK(n == pn);
    CHECK(n <= sizeof ours);
    size_t w = pack_fn(orig, ours);
    CHECK(w == n);
    size_t tw = protobuf_c_message_pack(orig, theirs);
    CHECK(tw == pn);
    CHECK(w == tw && memcmp(ours, theirs, w) == 0);

    /* ours decodes protobuf-c's bytes */
    ProtobufCMessage *m = malloc(desc->sizeof_message);
    desc->message_init(m);
    CHECK(unpack_exact(unpack_fn, m, theirs, tw) == 0);
    CHECK(equal(m, orig));

    /* protobuf-c decodes ours */
    ProtobufCMessage *pm = protobuf_c_message_unpack(desc, NULL, w, ours);
    CHECK(pm != NULL);
    if (pm)
        CHECK(equal(pm, orig));
    protobuf_c_message_free_unpacked(pm, NULL);

    /* unknown fields of every wire type, before, between and after */
    uint8_t big[1024];
    size_t bn = 0;
    for (int k = 0; k < 3; k++)
        bn += put_unknown(big + bn, (unsigned[]){0, 1, 2, 5}[rnd() % 4]);
    memcpy(big + bn, ours, w);
    bn += w;
    static const unsigned wts[] = {0, 1, 2, 5};
    for (int k = 0; k < 4; k++)
        bn += put_unknown(big + bn, wts[k]);
    desc->message_init(m);
    CHECK(unpack_exact(unpack_fn, m, big, bn) == 0);
    CHECK(equal(m, orig));
    pm = protobuf_c_message_unpack(desc, NULL, bn, big);
    CHECK(pm != NULL);
    protobuf_c_message_free_unpacked(pm, NULL);

    /* every truncation: 0 or -1, and the same verdict as protobuf-c */
    for (size_t cut = 0; cut < bn; cut++) {
        desc->message_init(m);
        int rc = unpack_exact(unpack_fn, m, big, cut);
        CHECK(rc == 0 || rc == -1);
        pm = protobuf_c_message_unpack(desc, NULL, cut, big);
        CHECK((rc == 0) == (pm != NULL));
        protobuf_c_message_free_unpacked(pm, NULL);
    }

    /* the last occurrence wins: the message twice, then again with the
     * second copy's fields (protobuf-c agrees) */
    if (2 * w <= sizeof big) {
        memcpy(big, theirs, w);
        memcpy(big + w, ours, w);
        desc->message_init(m);
        CHECK(unpack_exact(unpack_fn, m, big, 2 * w) == 0);
        CHECK(equal(m, orig));
    }
    free(m);
}

static int eq_varints(const void *a, const void *b)
{
    return varints_equal(a, b);
}

static int eq_fixed(const void *a, const void *b)
{
    return fixed_equal(a, b);
}

static int eq_empty(const void *a, const void *b)
{
    (void)a;
    (void)b;
    return 1;
}

static void test_roundtrips(void)
{
    const quark_method_desc *v = method(qg_scalars_Scalars_Varints_METHOD);
    const quark_method_desc *b = method(qg_scalars_Scalars_Back_METHOD);
    for (int i = 0; i < 5000; i++) {
        Qg__Scalars__VarintsRequest vr;
        rnd_varints(&vr);
        check_message(&vr.base, v, 0, eq_varints);
        Qg__Scalars__FixedReply fr;
        rnd_fixed(&fr);
        check_message(&fr.base, v, 1, eq_fixed);
        check_message(&fr.base, b, 0, eq_fixed);
    }
    Qg__Scalars__Empty e = QG__SCALARS__EMPTY__INIT;
    for (int i = 0; i < 200; i++)
        check_message(&e.base, method(qg_scalars_Scalars_Ping_METHOD), 0, eq_empty);

    /* fixed cases */
    Qg__Scalars__VarintsRequest vr = QG__SCALARS__VARINTS_REQUEST__INIT;
    vr.i32 = -1;
    uint8_t buf[256];
    size_t n = v->in_pack(&vr, buf);
    CHECK(n == 11); /* tag + 10-byte varint */
    vr.i32 = 0;
    vr.color = QG__SCALARS__COLOR__COLOR_NEGATIVE;
    CHECK(v->in_size(&vr) == 11);
    vr.color = 0;
    vr.flag = 1;
    CHECK(v->in_size(&vr) == 6); /* 5-byte tag */
    vr.flag = 0;
    vr.s32 = -1;
    n = v->in_pack(&vr, buf);
    CHECK(n == 3 && buf[2] == 1); /* 2-byte tag, zigzag 1 */
    vr.s32 = 0;
    CHECK(v->in_size(&vr) == 0);
    Qg__Scalars__FixedReply fr = QG__SCALARS__FIXED_REPLY__INIT;
    fr.d = -0.0; /* protobuf-c compares by value: -0.0 is the default, not written */
    CHECK(v->out_size(&fr) == 0 && protobuf_c_message_get_packed_size(&fr.base) == 0);
    fr.f = -0.0f;
    CHECK(v->out_size(&fr) == 0 && protobuf_c_message_get_packed_size(&fr.base) == 0);
    fr.d = 0.0 / 0.0; /* NaN is written */
    CHECK(v->out_size(&fr) == 9 && protobuf_c_message_get_packed_size(&fr.base) == 9);
}

/* bool: any non-zero varint is true, even one whose bits are past 64 */
static void test_bool_and_varints(void)
{
    const quark_method_desc *v = method(qg_scalars_Scalars_Varints_METHOD);
    Qg__Scalars__FixedReply fr = QG__SCALARS__FIXED_REPLY__INIT;
    uint8_t b1[] = {0x38, 0x80, 0x80, 0x00}; /* ok = 0 in 3 bytes */
    CHECK(unpack_exact(v->out_unpack, &fr, b1, sizeof b1) == 0 && !fr.ok);
    uint8_t b2[] = {0x38, 0x80, 0x80, 0x01};
    CHECK(unpack_exact(v->out_unpack, &fr, b2, sizeof b2) == 0 && fr.ok == 1);
    uint8_t b3[] = {0x38, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02};
    CHECK(unpack_exact(v->out_unpack, &fr, b3, sizeof b3) == 0 && fr.ok == 1);
    /* 11-byte varint */
    uint8_t b4[] = {0x38, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    CHECK(unpack_exact(v->out_unpack, &fr, b4, sizeof b4) == -1);
    /* int32 from a 10-byte negative varint and from a larger value: low 32 bits */
    Qg__Scalars__VarintsRequest vr = QG__SCALARS__VARINTS_REQUEST__INIT;
    uint8_t b5[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    CHECK(unpack_exact(v->in_unpack, &vr, b5, sizeof b5) == 0 && vr.i32 == -1);
    /* groups and wire types 6, 7 are refused, known or not */
    uint8_t b6[] = {0x0b, 0x0c};
    CHECK(unpack_exact(v->in_unpack, &vr, b6, sizeof b6) == -1);
    uint8_t b7[] = {0xc3, 0x3e, 0xc4, 0x3e}; /* field 1000 start/end group */
    CHECK(unpack_exact(v->in_unpack, &vr, b7, sizeof b7) == -1);
    uint8_t b8[] = {0xc6, 0x3e, 0x00};
    CHECK(unpack_exact(v->in_unpack, &vr, b8, sizeof b8) == -1);
    /* field number 0 */
    uint8_t b9[] = {0x00, 0x00};
    CHECK(unpack_exact(v->in_unpack, &vr, b9, sizeof b9) == -1);
    /* a length past the end */
    uint8_t b10[] = {0xc2, 0x3e, 0x05, 0x00};
    CHECK(unpack_exact(v->in_unpack, &vr, b10, sizeof b10) == -1);
    uint8_t b11[] = {0xc2, 0x3e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    CHECK(unpack_exact(v->in_unpack, &vr, b11, sizeof b11) == -1);
}

/* A known field with each wrong wire type is refused, as protobuf-c does
 * (except for bool, which protobuf-c 1.4 reads whatever its wire type). */
static void test_wrong_wire_types(void)
{
    const quark_method_desc *v = method(qg_scalars_Scalars_Varints_METHOD);
    static const struct {
        uint32_t field;
        unsigned wt;
        int out;
    } known[] = {{1, 0, 0},  {2, 0, 0}, {3, 0, 0},  {16, 0, 0}, {17, 0, 0}, {100, 0, 0},
                 {2047, 0, 0}, {536870911, 0, 0}, {20000, 0, 0}, {1, 5, 1}, {2, 5, 1},
                 {3, 1, 1},  {4, 5, 1}, {5, 1, 1},  {6, 0, 1},  {7, 0, 1},  {9, 1, 1}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        for (unsigned wt = 0; wt < 6; wt++) {
            if (wt == known[i].wt || wt == 3 || wt == 4)
                continue;
            uint8_t buf[32];
            size_t n = put_varint(buf, (uint64_t)known[i].field << 3 | wt);
            memset(buf + n, 0, 9);
            if (wt == 0)
                n += 1;
            else if (wt == 1)
                n += 8;
            else if (wt == 2)
                n += 1; /* length 0 */
            else
                n += 4;
            const ProtobufCMessageDescriptor *desc =
                known[i].out ? v->output : v->input;
            ProtobufCMessage *m = malloc(desc->sizeof_message);
            desc->message_init(m);
            int rc = unpack_exact(known[i].out ? v->out_unpack : v->in_unpack, m, buf, n);
            CHECK(rc == -1);
            ProtobufCMessage *pm = protobuf_c_message_unpack(desc, NULL, n, buf);
            /* protobuf-c 1.4 does not check the wire type of a bool (it reads
             * whatever the bytes are); we refuse it like any other field */
            int is_bool = known[i].field == 536870911 || (known[i].out && known[i].field == 7);
            CHECK(pm == NULL || is_bool);
            protobuf_c_message_free_unpacked(pm, NULL);
            free(m);
        }
    }
}

/* Random bytes: 0 or -1, never a crash or an overread. Where both accept,
 * they decode the same; protobuf-c alone accepts a tag whose bits past 32
 * it drops (a field number over 2^29-1), which we refuse. */
static void test_random_bytes(void)
{
    const quark_method_desc *v = method(qg_scalars_Scalars_Varints_METHOD);
    const quark_method_desc *p = method(qg_scalars_Scalars_Ping_METHOD);
    int agree = 0, total = 0;
    for (int i = 0; i < 20000; i++) {
        uint8_t buf[64];
        size_t n = rnd() % sizeof buf;
        for (size_t k = 0; k < n; k++)
            buf[k] = (uint8_t)rnd();
        /* often a plausible tag first */
        if (n > 0 && rnd() % 2)
            buf[0] = (uint8_t)((rnd() % 10) << 3 | rnd() % 6);
        Qg__Scalars__VarintsRequest vr = QG__SCALARS__VARINTS_REQUEST__INIT;
        int rc = unpack_exact(v->in_unpack, &vr, buf, n);
        CHECK(rc == 0 || rc == -1);
        ProtobufCMessage *pm = protobuf_c_message_unpack(v->input, NULL, n, buf);
        total++;
        agree += (rc == 0) == (pm != NULL);
        if ((rc == 0) != (pm != NULL) && total - agree <= 4) {
            printf("  disagree (ours %d, protobuf-c %s):", rc, pm ? "ok" : "fails");
            for (size_t k = 0; k < n; k++)
                printf(" %02x", buf[k]);
            printf("\n");
        }
        if (rc == 0 && pm != NULL)
            CHECK(varints_equal(&vr, (const Qg__Scalars__VarintsRequest *)pm));
        protobuf_c_message_free_unpacked(pm, NULL);
        Qg__Scalars__FixedReply fr = QG__SCALARS__FIXED_REPLY__INIT;
        rc = unpack_exact(v->out_unpack, &fr, buf, n);
        CHECK(rc == 0 || rc == -1);
        pm = protobuf_c_message_unpack(v->output, NULL, n, buf);
        if (rc == 0 && pm != NULL)
            CHECK(fixed_equal(&fr, (const Qg__Scalars__FixedReply *)pm));
        protobuf_c_message_free_unpacked(pm, NULL);
        Qg__Scalars__Empty e = QG__SCALARS__EMPTY__INIT;
        rc = unpack_exact(p->in_unpack, &e, buf, n);
        CHECK(rc == 0 || rc == -1);
    }
    printf("random bytes: ours and protobuf-c agree on %d of %d\n", agree, total);
}

int main(void)
{
    test_hooks_present();
    test_roundtrips();
    test_bool_and_varints();
    test_wrong_wire_types();
    test_random_bytes();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("fastcodec: all checks passed\n");
    return 0;
}
