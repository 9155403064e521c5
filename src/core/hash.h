/*
 * hash.h - a fast 64-bit string hash for actor keys and names.
 *
 * Eight bytes per step through a multiply-xorshift mix, then a final
 * avalanche; good spread for short ids ("counter-1234"), which is all the
 * activation directory and the placement ring need. Not for adversarial
 * input: tables that hold network-supplied keys bound their probe lengths.
 */
#ifndef QK_HASH_H
#define QK_HASH_H

#include <stdint.h>
#include <string.h>

static inline uint64_t qk_fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

static inline uint64_t qk_hash(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = seed ^ ((uint64_t)len * 0x9e3779b97f4a7c15ull);
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h ^= qk_fmix64(v + 0x2545f4914f6cdd1dull);
        h = (h << 27 | h >> 37) * 0x9e3779b97f4a7c15ull;
        p += 8;
        len -= 8;
    }
    uint64_t t = 0;
    switch (len) {
    case 7: t |= (uint64_t)p[6] << 48; /* fall through */
    case 6: t |= (uint64_t)p[5] << 40; /* fall through */
    case 5: t |= (uint64_t)p[4] << 32; /* fall through */
    case 4: t |= (uint64_t)p[3] << 24; /* fall through */
    case 3: t |= (uint64_t)p[2] << 16; /* fall through */
    case 2: t |= (uint64_t)p[1] << 8;  /* fall through */
    case 1: t |= (uint64_t)p[0];
        h ^= qk_fmix64(t + 0x2545f4914f6cdd1dull);
        break;
    default: break;
    }
    return qk_fmix64(h);
}

#endif /* QK_HASH_H */
