/*
 * generator/util.h - small helpers shared by the protoc-gen-quark sources:
 * allocation that never returns NULL (everything is released at exit by
 * qg_free_all), formatted strings and a growable text buffer.
 */
#ifndef QUARK_GENERATOR_UTIL_H
#define QUARK_GENERATOR_UTIL_H

#include <stdarg.h>
#include <stddef.h>

#if defined(__GNUC__) || defined(__clang__)
#define QG_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define QG_PRINTF(fmt, args)
#endif

/* Zeroed memory that lives until qg_free_all(); exits the plugin when out of
 * memory (there is nothing sensible to do then). */
void *qg_alloc(size_t size);
char *qg_strdup(const char *s);
char *qg_strndup(const char *s, size_t n);
char *qg_printf(const char *fmt, ...) QG_PRINTF(1, 2);
void qg_free_all(void);

/* A growable NUL-terminated text buffer (memory owned by the qg_alloc pool). */
typedef struct qg_buf {
    char *data;
    size_t len;
    size_t cap;
} qg_buf;

void qg_buf_puts(qg_buf *b, const char *s);
void qg_buf_putc(qg_buf *b, char c);
void qg_buf_printf(qg_buf *b, const char *fmt, ...) QG_PRINTF(2, 3);
void qg_buf_vprintf(qg_buf *b, const char *fmt, va_list ap) QG_PRINTF(2, 0);
/* The text so far ("" for an empty buffer); stays valid until the next append. */
const char *qg_buf_str(const qg_buf *b);

#endif /* QUARK_GENERATOR_UTIL_H */
