/*
 * addr.c - parse HOST:PORT and comma-separated lists of them (see addr.h).
 */
#define _GNU_SOURCE /* memrchr */
#include <string.h>

#include "core/addr.h"

int qk_addr_parse(const char *s, size_t len, qk_addr *out)
{
    const char *colon = memrchr(s, ':', len);
    if (!colon)
        return -1;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') { /* "[v6]:port" */
        h++;
        hl -= 2;
    }
    size_t pl = len - (size_t)(colon - s) - 1;
    if (hl == 0 || hl >= sizeof out->host || pl == 0 || pl > 5)
        return -1;
    int port = 0;
    for (size_t i = 0; i < pl; i++) {
        char d = colon[1 + i];
        if (d < '0' || d > '9')
            return -1;
        port = port * 10 + (d - '0');
    }
    if (port > 65535)
        return -1;
    memcpy(out->host, h, hl);
    out->host[hl] = '\0';
    memcpy(out->port, colon + 1, pl);
    out->port[pl] = '\0';
    out->portnum = port;
    return 0;
}

int qk_addr_list_each(const char *s, int (*fn)(void *arg, const char *item, size_t len),
                      void *arg)
{
    const char *p = s;
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        size_t len = (size_t)(e - p);
        while (len && p[len - 1] == ' ')
            len--;
        if (len) {
            int rc = fn(arg, p, len);
            if (rc)
                return rc;
        }
        p = e;
    }
    return 0;
}
