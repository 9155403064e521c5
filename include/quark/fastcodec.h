/*
 * quark/fastcodec.h - helpers of the fast codecs protoc-gen-quark generates.
 *
 * Not an API: only generated code (*.quark.c) includes this, for the size,
 * pack and unpack functions of simple messages (see quark_method_desc in
 * quark/interface.h). The helpers are static inline in a header, so a file
 * that uses only some of them compiles without unused-function warnings
 * (clang warns about unused static inline functions defined in a .c file).
 * Their encoding is protobuf's wire format; the decoders check every length
 * against the input.
 */
#ifndef QUARK_FASTCODEC_H
#define QUARK_FASTCODEC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline size_t quark__fc_vsize(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *quark__fc_put_varint(uint8_t *o, uint64_t v)
{
    while (v >= 0x80) {
        *o++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *o++ = (uint8_t)v;
    return o;
}

static inline uint8_t *quark__fc_put32(uint8_t *o, uint32_t v)
{
    o[0] = (uint8_t)v;
    o[1] = (uint8_t)(v >> 8);
    o[2] = (uint8_t)(v >> 16);
    o[3] = (uint8_t)(v >> 24);
    return o + 4;
}

static inline uint8_t *quark__fc_put64(uint8_t *o, uint64_t v)
{
    quark__fc_put32(o, (uint32_t)v);
    return quark__fc_put32(o + 4, (uint32_t)(v >> 32));
}

static inline uint32_t quark__fc_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline uint64_t quark__fc_get64(const uint8_t *p)
{
    return (uint64_t)quark__fc_get32(p) | (uint64_t)quark__fc_get32(p + 4) << 32;
}

static inline uint32_t quark__fc_f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline uint64_t quark__fc_d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static inline float quark__fc_u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline double quark__fc_u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* A varint of at most 10 bytes (bits past 64 are dropped, as protobuf-c
 * does); *nz: whether any of its bits is set. NULL if malformed. */
static inline const uint8_t *quark__fc_varint(const uint8_t *p, const uint8_t *end,
                                              uint64_t *v, int *nz)
{
    uint64_t r = 0;
    unsigned any = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (p == end)
            return NULL;
        uint8_t b = *p++;
        any |= b & 0x7fu;
        r |= (uint64_t)(b & 0x7fu) << (7 * i);
        if (!(b & 0x80u)) {
            *v = r;
            if (nz != NULL)
                *nz = any != 0;
            return p;
        }
    }
    return NULL;
}

/* Skip the value of an unknown field of wire type wt. */
static inline const uint8_t *quark__fc_skip(const uint8_t *p, const uint8_t *end,
                                           unsigned wt)
{
    uint64_t v;
    switch (wt) {
    case 0:
        return quark__fc_varint(p, end, &v, NULL);
    case 1:
        return end - p >= 8 ? p + 8 : NULL;
    case 2:
        p = quark__fc_varint(p, end, &v, NULL);
        return p != NULL && v <= (uint64_t)(end - p) ? p + v : NULL;
    case 5:
        return end - p >= 4 ? p + 4 : NULL;
    default:
        return NULL; /* groups (3, 4) and 6, 7 */
    }
}

#endif /* QUARK_FASTCODEC_H */
