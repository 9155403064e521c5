/*
 * quark/error.h - the one error enum of Quark and how to read an error.
 *
 * Every fallible Quark function returns a quark_err: QUARK_OK (0) on success,
 * a negative code on failure. The code says what kind of failure it was (so a
 * program can branch on it); the message says what exactly went wrong and how
 * to fix it (so a person can act on it). Messages of failed calls made on a
 * thread are kept per thread and read with quark_last_error(); asynchronous
 * completions receive their message as an argument.
 */
#ifndef QUARK_ERROR_H
#define QUARK_ERROR_H

#include "quark/version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum quark_err {
    QUARK_OK = 0,
    /* Not an error: an actor method returns it after quark_actor_defer() to
     * say "I will reply later" (see quark/actor.h). */
    QUARK_PENDING = 1,

    QUARK_EINVAL = -1,        /* a bad argument (NULL, empty or too long id, ...) */
    QUARK_ENOMEM = -2,        /* out of memory */
    QUARK_ENOTYPE = -3,       /* no actor registered for the type name */
    QUARK_ENOMETHOD = -4,     /* the actor type has no method of that name/index */
    QUARK_EBADARGS = -5,      /* the arguments could not be decoded */
    QUARK_EDUPLICATE = -6,    /* a type name registered twice */
    QUARK_ETIMEDOUT = -7,     /* the call's deadline passed */
    QUARK_ECYCLE = -8,        /* a call cycle (A -> B -> A) that would deadlock */
    QUARK_ENOTCONNECTED = -9, /* the client is not connected */
    QUARK_ECLOSED = -10,      /* the silo or client is stopping or stopped */
    QUARK_EACTIVATE = -11,    /* the actor's on_activate hook failed */
    QUARK_EACTOR = -12,       /* the actor method reported an application error */
    QUARK_EUNIMPLEMENTED = -13, /* the method is declared but not implemented */
    QUARK_EWOULDBLOCK = -14,  /* a blocking call on a Quark worker thread */
    QUARK_ETOOBIG = -15,      /* a message larger than the configured maximum */
    QUARK_EUNAVAILABLE = -16, /* no silo answered; the call surely did not run */
    QUARK_EUNKNOWN = -17,     /* outcome unknown: the call may or may not have run */
    QUARK_EPROTO = -18,       /* a peer broke the wire protocol */
    QUARK_ECLUSTER = -19,     /* the peer belongs to another cluster */
    QUARK_EBUSY = -20,        /* the resource is in use (e.g. started twice) */
    QUARK_EINTERNAL = -21,    /* a bug in Quark: please report it */
    QUARK_ECONFLICT = -22,    /* stored state changed under the activation (ETag mismatch) */
    QUARK_ESTORAGE = -23,     /* storage failed or is unreachable: nothing was stored */
    QUARK_EOVERLOAD = -24     /* too many calls queued: it did not run; retry after a pause */
} quark_err;

/* Short, constant description of a code ("deadline exceeded"). Never NULL. */
QUARK_API const char *quark_strerror(quark_err err);

/* Symbolic name of a code ("QUARK_ETIMEDOUT"). Never NULL. */
QUARK_API const char *quark_errname(quark_err err);

/* The detailed message of the last failure reported on the calling thread
 * (for example "no actor registered for type name 'shop.Order'"). Valid until
 * the next Quark call on this thread. Never NULL; "" after a success. */
QUARK_API const char *quark_last_error(void);

#ifdef __cplusplus
}
#endif
#endif /* QUARK_ERROR_H */
