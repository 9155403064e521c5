/*
 * addr.h - "host:port" addresses and comma-separated lists of them: the one
 * parser every part of Quark uses (listen, advertise, seeds, connection
 * strings, the addresses in views). No I/O, no name resolution.
 */
#ifndef QK_ADDR_H
#define QK_ADDR_H

#include <stddef.h>

#define QK_HOST_MAX 256 /* host part, NUL included */
#define QK_PORT_MAX 8   /* "65535" and its NUL, with room */

typedef struct qk_addr {
    char host[QK_HOST_MAX]; /* "[v6]" is given without its brackets */
    char port[QK_PORT_MAX]; /* decimal digits */
    int portnum;            /* 0..65535 */
} qk_addr;

/* Parse s[0..len) as HOST:PORT: a non-empty host, the last colon, a decimal
 * port 0..65535. An IPv6 host may be in brackets ("[::1]:7000"); they are
 * removed. 0, or -1 if it is not that shape or does not fit. */
int qk_addr_parse(const char *s, size_t len, qk_addr *out);

/* Call fn(arg, item, len) for each item of the comma-separated list s, with
 * surrounding spaces trimmed and empty items skipped. Stops at the first
 * non-zero return of fn and returns it; 0 when every item was seen. */
int qk_addr_list_each(const char *s, int (*fn)(void *arg, const char *item, size_t len),
                      void *arg);

#endif /* QK_ADDR_H */
