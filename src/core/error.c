/*
 * error.c - error names, descriptions and the per-thread last-error message.
 *
 * One table drives quark_strerror and quark_errname so the two never drift.
 */
#include <stdarg.h>
#include <stdio.h>

#include "common.h"

#define QK_ERRORS(X)                                                             \
    X(QUARK_OK, "success")                                                       \
    X(QUARK_PENDING, "reply pending (deferred)")                                 \
    X(QUARK_EINVAL, "invalid argument")                                          \
    X(QUARK_ENOMEM, "out of memory")                                             \
    X(QUARK_ENOTYPE, "no actor registered for the type name")                    \
    X(QUARK_ENOMETHOD, "unknown method")                                         \
    X(QUARK_EBADARGS, "arguments could not be decoded")                          \
    X(QUARK_EDUPLICATE, "actor type name already registered")                    \
    X(QUARK_ETIMEDOUT, "deadline exceeded")                                      \
    X(QUARK_ECYCLE, "call cycle would deadlock")                                 \
    X(QUARK_ENOTCONNECTED, "client not connected")                               \
    X(QUARK_ECLOSED, "silo or client closed")                                    \
    X(QUARK_EACTIVATE, "actor activation failed")                                \
    X(QUARK_EACTOR, "actor reported an error")                                   \
    X(QUARK_EUNIMPLEMENTED, "method not implemented")                            \
    X(QUARK_EWOULDBLOCK, "blocking call on a Quark worker thread")               \
    X(QUARK_ETOOBIG, "message too large")                                        \
    X(QUARK_EUNAVAILABLE, "no silo available")                                   \
    X(QUARK_EUNKNOWN, "outcome unknown")                                         \
    X(QUARK_EPROTO, "protocol error")                                            \
    X(QUARK_ECLUSTER, "peer belongs to another cluster")                         \
    X(QUARK_EBUSY, "resource busy")                                              \
    X(QUARK_EINTERNAL, "internal error")                                      \
    X(QUARK_ECONFLICT, "stored state changed by another writer (ETag mismatch)") \
    X(QUARK_ESTORAGE, "storage failed or unreachable")                           \
    X(QUARK_EOVERLOAD, "overloaded: too many calls queued")

const char *quark_strerror(quark_err err)
{
    switch (err) {
#define X(code, text) \
    case code:        \
        return text;
        QK_ERRORS(X)
#undef X
    }
    return "unknown error code";
}

const char *quark_errname(quark_err err)
{
    switch (err) {
#define X(code, text) \
    case code:        \
        return #code;
        QK_ERRORS(X)
#undef X
    }
    return "QUARK_E?";
}

static QK_TLS char qk_last_msg[512];

const char *quark_last_error(void)
{
    return qk_last_msg;
}

void qk_error_clear(void)
{
    qk_last_msg[0] = '\0';
}

quark_err qk_error(quark_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(qk_last_msg, sizeof qk_last_msg, fmt, ap);
    va_end(ap);
    return err;
}

quark_err qk_error_str(quark_err err, const char *msg)
{
    size_t n = strlen(msg);
    if (n >= sizeof qk_last_msg)
        n = sizeof qk_last_msg - 1;
    memcpy(qk_last_msg, msg, n);
    qk_last_msg[n] = '\0';
    return err;
}
