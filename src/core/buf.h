/*
 * buf.h - growing a byte buffer (connection output on both sides of the wire).
 */
#ifndef QK_BUF_H
#define QK_BUF_H

#include <stdint.h>
#include <stdlib.h>

/* Make room for `len + more` bytes in *buf (capacity *cap, doubling from
 * `first`). 0 on success, -1 out of memory (the buffer is unchanged). */
static inline int qk_buf_reserve(uint8_t **buf, size_t *cap, size_t len, size_t more,
                                 size_t first)
{
    if (len + more <= *cap)
        return 0;
    size_t n = *cap ? *cap : first;
    while (n < len + more)
        n *= 2;
    uint8_t *b = realloc(*buf, n);
    if (!b)
        return -1;
    *buf = b;
    *cap = n;
    return 0;
}

#endif /* QK_BUF_H */
