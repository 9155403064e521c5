/*
 * redis_link.h - one asynchronous Redis connection on a libuv loop, for the
 * providers that keep their data in Redis (membership, directory,
 * reminders).
 *
 * hiredis's async API on the owner's loop (hiredis/adapters/libuv.h):
 * nothing blocks, commands issued in one turn of the loop leave in one
 * write, replies come in order. The link adds what every provider needs:
 *   - the address: "redis://HOST:PORT[/DB]", HOST resolved once (hiredis
 *     would resolve on every connect, blocking the loop);
 *   - connecting, SELECT, and reconnecting with a growing back-off (20 ms
 *     doubling to 1 s) after a refusal, a reset, or a server silent for
 *     timeout_ms with commands in flight;
 *   - scripts: given at creation, loaded on every connection, run by
 *     EVALSHA; a NOSCRIPT answer (a restarted server, SCRIPT FLUSH) sends
 *     the same command again with EVAL, once, without the caller knowing.
 * Every command's callback runs exactly once, on the loop: with the reply,
 * or with NULL and why (lost, silent, closing): such a command may or may
 * not have run. A command refused before it is sent (not connected) is an
 * error return, and its callback never runs.
 *
 * Not thread-safe: everything on the loop's thread.
 */
#ifndef QK_REDIS_LINK_H
#define QK_REDIS_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>
#include <hiredis/hiredis.h>

#include "quark/error.h"

typedef struct qk_redis_addr {
    char host[64];                 /* an IP address */
    int port;
    int db;
} qk_redis_addr;

/* Parse "redis://HOST:PORT[/DB]" (what = who asks, for the message). */
quark_err qk_redis_addr_parse(const char *spec, const char *what, qk_redis_addr *out);

/* "<cluster_id>/<what>" (malloc'd; NULL: out of memory): the keys of a
 * cluster ("default" when cluster_id is NULL or ""). */
char *qk_redis_key(const char *cluster_id, const char *what);
/* An actor's key "<prefix><type>/<id>", NUL-terminated, into dst (room for
 * pl + type_len + 1 + id_len + 1 bytes). A type name has no '/', so the id
 * after it may hold any bytes. */
void qk_redis_actor_key(char *dst, const char *prefix, size_t pl, const char *type,
                        size_t type_len, const char *id, size_t id_len);

typedef struct qk_redis qk_redis;

/* r NULL: the command failed after it was sent (why says how: it may or
 * may not have run). */
typedef void (*qk_redis_cb)(void *arg, const redisReply *r, const char *why);

/* A link to a (connecting at once). scripts[0..n) are kept (not copied). */
qk_redis *qk_redis_new(const qk_redis_addr *a, uv_loop_t *loop, const char *const *scripts,
                       size_t nscripts, unsigned timeout_ms);
/* Fails what is in flight (callbacks run now), closes the connection and
 * its handles; the loop must run once more for them to go. */
void qk_redis_free(qk_redis *r);

/* Does it take commands now? Connected, or connecting (they leave once the
 * connection is made, or fail with it). why: the reason it does not. */
bool qk_redis_up(const qk_redis *r, const char **why);

/* A command (argv[0..argc), lens). Not connected: QUARK_EUNAVAILABLE,
 * nothing queued, the callback not called. */
quark_err qk_redis_command(qk_redis *r, qk_redis_cb cb, void *arg, int argc,
                           const char *const *argv, const size_t *lens);
/* Script number `script` with nkeys keys then args (argv: keys then args). */
quark_err qk_redis_script(qk_redis *r, unsigned script, qk_redis_cb cb, void *arg, int nkeys,
                          int argc, const char *const *argv, const size_t *lens);

#endif /* QK_REDIS_LINK_H */
