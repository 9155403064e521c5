/*
 * generator/util.c - allocation pool, formatted strings and text buffers for
 * protoc-gen-quark. Every allocation is chained in one list so the plugin
 * frees everything before it exits (it must stay clean under LeakSanitizer,
 * since sanitized builds build the plugin with the sanitizer too).
 */
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct qg_block {
    struct qg_block *next;
    /* max_align_t keeps the payload suitably aligned for any type */
    max_align_t payload[];
} qg_block;

static qg_block *qg_blocks;

static void qg_oom(void)
{
    fputs("protoc-gen-quark: out of memory\n", stderr);
    exit(1);
}

void *qg_alloc(size_t size)
{
    if (size > (size_t)-1 - sizeof(qg_block))
        qg_oom();
    qg_block *b = calloc(1, sizeof(qg_block) + size);
    if (b == NULL)
        qg_oom();
    b->next = qg_blocks;
    qg_blocks = b;
    return b->payload;
}

/* Resize memory from qg_alloc (used by the buffers only). */
static void *qg_realloc(void *p, size_t size)
{
    if (p == NULL)
        return qg_alloc(size);
    qg_block *old = (qg_block *)((char *)p - offsetof(qg_block, payload));
    qg_block **link = &qg_blocks;
    while (*link != old)
        link = &(*link)->next;
    if (size > (size_t)-1 - sizeof(qg_block))
        qg_oom();
    qg_block *b = realloc(old, sizeof(qg_block) + size);
    if (b == NULL)
        qg_oom();
    *link = b;
    return b->payload;
}

void qg_free_all(void)
{
    while (qg_blocks != NULL) {
        qg_block *next = qg_blocks->next;
        free(qg_blocks);
        qg_blocks = next;
    }
}

char *qg_strndup(const char *s, size_t n)
{
    char *d = qg_alloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *qg_strdup(const char *s)
{
    return qg_strndup(s, strlen(s));
}

char *qg_printf(const char *fmt, ...)
{
    qg_buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    qg_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return b.data != NULL ? b.data : qg_strdup("");
}

static void qg_buf_reserve(qg_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    b->data = qg_realloc(b->data, cap);
    b->cap = cap;
}

void qg_buf_vprintf(qg_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        fputs("protoc-gen-quark: bad format string\n", stderr);
        exit(1);
    }
    qg_buf_reserve(b, (size_t)n);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void qg_buf_printf(qg_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qg_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void qg_buf_puts(qg_buf *b, const char *s)
{
    size_t n = strlen(s);
    qg_buf_reserve(b, n);
    memcpy(b->data + b->len, s, n + 1);
    b->len += n;
}

void qg_buf_putc(qg_buf *b, char c)
{
    qg_buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

const char *qg_buf_str(const qg_buf *b)
{
    return b->data != NULL ? b->data : "";
}
