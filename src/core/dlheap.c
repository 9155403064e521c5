/*
 * dlheap.c - the deadline min-heap (see dlheap.h).
 */
#include <stdlib.h>

#include "dlheap.h"

static void set(qk_dlheap *h, size_t i, qk_deadline *d)
{
    h->a[i] = d;
    d->idx = (uint32_t)i + 1;
}

static void up(qk_dlheap *h, size_t i)
{
    qk_deadline *d = h->a[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->a[p]->at_ms <= d->at_ms)
            break;
        set(h, i, h->a[p]);
        i = p;
    }
    set(h, i, d);
}

static void down(qk_dlheap *h, size_t i)
{
    qk_deadline *d = h->a[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->len)
            break;
        if (c + 1 < h->len && h->a[c + 1]->at_ms < h->a[c]->at_ms)
            c++;
        if (h->a[c]->at_ms >= d->at_ms)
            break;
        set(h, i, h->a[c]);
        i = c;
    }
    set(h, i, d);
}

int qk_dlheap_insert(qk_dlheap *h, qk_deadline *d)
{
    if (d->idx)
        return 0;
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        qk_deadline **a = realloc(h->a, cap * sizeof *a);
        if (!a)
            return 0;
        h->a = a;
        h->cap = cap;
    }
    h->a[h->len++] = d;
    up(h, h->len - 1);
    return 1;
}

void qk_dlheap_remove(qk_dlheap *h, qk_deadline *d)
{
    if (!d->idx)
        return;
    size_t i = d->idx - 1;
    d->idx = 0;
    qk_deadline *last = h->a[--h->len];
    if (i == h->len)
        return;
    h->a[i] = last;
    last->idx = (uint32_t)i + 1;
    up(h, i);
    down(h, last->idx - 1);
}

qk_deadline *qk_dlheap_pop_expired(qk_dlheap *h, uint64_t now_ms)
{
    if (!h->len || h->a[0]->at_ms > now_ms)
        return NULL;
    qk_deadline *d = h->a[0];
    qk_dlheap_remove(h, d);
    return d;
}

void qk_dlheap_destroy(qk_dlheap *h)
{
    free(h->a);
    h->a = NULL;
    h->len = h->cap = 0;
}
