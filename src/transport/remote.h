/*
 * remote.h - the cluster client's remote side (see remote.c).
 */
#ifndef QK_REMOTE_H
#define QK_REMOTE_H

#include "quark/quark.h"

typedef struct qk_remote qk_remote;

quark_err qk_remote_new(quark_client *c, qk_remote **out);
quark_err qk_remote_connect(qk_remote *r);      /* blocks until a silo said hello, or all failed */
void qk_remote_disconnect(qk_remote *r);        /* fails what is in flight, joins the thread */
void qk_remote_free(qk_remote *r);
int qk_remote_connected(const qk_remote *r);
quark_err qk_remote_call(qk_remote *r, quark_ref *ref, const quark_interface *iface,
                         unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                         ProtobufCMessage **reply);
quark_err qk_remote_call_async(qk_remote *r, quark_ref *ref, const quark_interface *iface,
                               unsigned method, const ProtobufCMessage *req, uint32_t deadline_ms,
                               quark__trampoline_fn tramp, void (*fn)(void), void *arg);

typedef struct qk_rsub qk_rsub;
quark_err qk_remote_subscribe(qk_remote *r, const char *type, const char *id, quark_event_fn fn,
                              void *arg, qk_rsub **out);
void qk_remote_unsubscribe(qk_rsub *rs);

#endif /* QK_REMOTE_H */
