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

/* Double buffering for a stream's output: what was appended to *out becomes
 * the buffer being written (*wbuf, returned length), and the old write buffer
 * takes new appends. */
static inline size_t qk_buf_swap(uint8_t **out, size_t *out_cap, size_t *out_len, uint8_t **wbuf,
                                 size_t *wbuf_cap)
{
    uint8_t *b = *out;
    size_t cap = *out_cap, len = *out_len;
    *out = *wbuf;
    *out_cap = *wbuf_cap;
    *out_len = 0;
    *wbuf = b;
    *wbuf_cap = cap;
    return len;
}

#endif /* QK_BUF_H */
