/*
 * sock.h - blocking socket I/O with a deadline, for the callers that own
 * their socket outright: direct calls (direct.c) and status fetches
 * (cluster/admin.c). Sockets are non-blocking; every wait is a poll(2)
 * bounded by a deadline on qk_now_ms_coarse()'s clock. The event loops
 * (server.c, remote.c) never use these.
 */
#ifndef QK_SOCK_H
#define QK_SOCK_H

#include <stddef.h>
#include <stdint.h>

/* Wait for `events` (POLLIN, POLLOUT) on fd until at_ms: 1 ready, 0 the
 * deadline passed, -1 error (errno). */
int qk_sock_wait(int fd, short events, uint64_t at_ms);

/* Write all of p[0..n) by at_ms; returns the bytes written (fewer only on an
 * error or at the deadline). Never raises SIGPIPE. */
size_t qk_sock_write_all(int fd, const uint8_t *p, size_t n, uint64_t at_ms);

/* Connect to "host:port" by at_ms: a non-blocking, close-on-exec TCP socket
 * with TCP_NODELAY, or -1 with `why` (if not NULL) saying what failed. */
int qk_sock_connect(const char *addr, uint64_t at_ms, char *why, size_t wcap);

#endif /* QK_SOCK_H */
