/*
 * sock.c - blocking socket I/O with a deadline (see sock.h).
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/addr.h"
#include "core/common.h"
#include "transport/sock.h"

/* What is left of the time until at_ms, for poll(2): +1 for the coarse
 * clock's step, at most 10 minutes a wait. */
static int remaining_ms(uint64_t at_ms)
{
    uint64_t now = qk_now_ms_coarse();
    if (now >= at_ms)
        return 0;
    uint64_t left = at_ms - now;
    return left > 600000 ? 600000 : (int)left + 1;
}

int qk_sock_wait(int fd, short events, uint64_t at_ms)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, remaining_ms(at_ms));
        if (rc > 0)
            return 1;
        if (rc == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

size_t qk_sock_write_all(int fd, const uint8_t *p, size_t n, uint64_t at_ms)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(fd, p + off, n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
            qk_sock_wait(fd, POLLOUT, at_ms) > 0)
            continue;
        break;
    }
    return off;
}

int qk_sock_connect(const char *addr, uint64_t at_ms, char *why, size_t wcap)
{
    char dummy[1];
    if (!why) {
        why = dummy;
        wcap = sizeof dummy;
    }
    qk_addr a;
    if (qk_addr_parse(addr, strlen(addr), &a) != 0) {
        snprintf(why, wcap, "'%s' is not HOST:PORT", addr);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(a.host, a.port, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(why, wcap, "cannot resolve %s: %s", a.host, gai_strerror(gai));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, wcap, "socket: %s", strerror(errno));
        freeaddrinfo(ai);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (rc != 0 && errno == EINPROGRESS) {
        int w = qk_sock_wait(fd, POLLOUT, at_ms);
        if (w <= 0) {
            snprintf(why, wcap, w == 0 ? "no answer from %s in time" : "cannot connect to %s",
                     addr);
            close(fd);
            return -1;
        }
        int err = 0;
        socklen_t el = sizeof err;
        rc = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0 ? 0 : -1;
        errno = err;
    }
    if (rc != 0) {
        snprintf(why, wcap, "cannot connect to %s: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}
