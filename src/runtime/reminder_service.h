/*
 * reminder_service.h - a silo's reminder service (reminder_service.c): its
 * own thread and loop, which alone talks to the reminder store (whose calls
 * block), fires the ticks of the buckets this silo owns, and serves the
 * actors' quark_actor_reminder_set / _unset / _list.
 */
#ifndef QK_REMINDER_SERVICE_H
#define QK_REMINDER_SERVICE_H

#include "runtime/providers.h"
#include "runtime/view.h"

typedef struct qk_rsvc qk_rsvc;

/* The view that decides which buckets this silo fires: a new reference
 * (NULL: no view yet, fire nothing). */
typedef qk_view *(*qk_rsvc_view_fn)(void *arg);

typedef struct qk_rsvc_opts {
    const qk_reminders_ops *ops;
    void *store;
    /* NULL: this silo is alone (no cluster): it fires every reminder. */
    qk_rsvc_view_fn view;
    void *view_arg;
    uint32_t min_period_ms;
    uint32_t refresh_ms;
} qk_rsvc_opts;

/* Make the service of silo s before its workers start (s->reminders is
 * set, requests are queued), and run its thread once the silo runs. */
quark_err qk_rsvc_new(quark_silo *s, const qk_rsvc_opts *o);
quark_err qk_rsvc_run(quark_silo *s);
/* Before the silo's calls stop: the requests queued are served, no tick
 * is fired any more, new requests are refused; the thread is joined. */
void qk_rsvc_stop(quark_silo *s);
/* After the workers were joined (every tick sent was answered). */
void qk_rsvc_free(quark_silo *s);

/* activation.c: run a tick (CALL of the type's reminder method) as a turn
 * of self. Returns what quark__finish returns. */
quark_err qk_reminder_dispatch(quark_actor *self, const uint8_t *args, size_t len);

#endif /* QK_REMINDER_SERVICE_H */
