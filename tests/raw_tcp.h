/*
 * raw_tcp.h - speaking Quark's TCP protocol by hand (docs/wire-protocol.md),
 * for the tests that play a broken or hostile peer: connect, frame headers,
 * reading frames, the HELLO handshake, waiting for the silo to hang up.
 */
#ifndef QUARK_TEST_RAW_TCP_H
#define QUARK_TEST_RAW_TCP_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"

static inline int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Big-endian frame header (frame.h). */
static inline void put_frame_header(uint8_t *h, uint8_t type, uint64_t id, uint32_t payload)
{
    uint32_t len = payload + 12;
    h[0] = (uint8_t)(len >> 24);
    h[1] = (uint8_t)(len >> 16);
    h[2] = (uint8_t)(len >> 8);
    h[3] = (uint8_t)len;
    h[4] = type;
    h[5] = h[6] = h[7] = 0;
    for (int i = 0; i < 8; i++)
        h[8 + i] = (uint8_t)(id >> (56 - 8 * i));
}

static inline void read_full(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        assert_true(k > 0);
        got += (size_t)k;
    }
}

/* Read one frame; returns its payload (malloc'd) and sets type/id/len. */
static inline uint8_t *read_frame(int fd, uint8_t *type, uint64_t *id, size_t *len)
{
    uint8_t h[16];
    read_full(fd, h, 16);
    uint32_t l = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    *type = h[4];
    *id = 0;
    for (int i = 0; i < 8; i++)
        *id = *id << 8 | h[8 + i];
    *len = l - 12;
    uint8_t *p = malloc(*len + 1);
    read_full(fd, p, *len);
    return p;
}

/* A raw TCP-protocol connection past its handshake (empty TcpHello: cluster
 * "default"). */
static inline int raw_hello(int port)
{
    int fd = raw_connect(port);
    uint8_t h[16], type;
    uint64_t id;
    size_t len;
    assert_true(write(fd, "QRK1", 4) == 4);
    put_frame_header(h, 1, 0, 0);
    assert_true(write(fd, h, 16) == 16);
    free(read_frame(fd, &type, &id, &len));
    assert_int_equal(type, 2);
    return fd;
}

/* Read what the silo sends until it closes fd, for at most timeout_ms: the
 * ms it took (-1: still open then). The bytes read go to buf (up to cap,
 * *got of them), so a test can look at its last words. */
static inline long raw_wait_closed(int fd, unsigned timeout_ms, uint8_t *buf, size_t cap,
                                   size_t *got)
{
    uint64_t t0 = tu_now_ms();
    size_t n = 0;
    for (;;) {
        uint64_t el = tu_now_ms() - t0;
        if (el >= timeout_ms)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(timeout_ms - el)) <= 0)
            continue;
        uint8_t tmp[4096];
        ssize_t k = read(fd, tmp, sizeof tmp);
        if (k <= 0) {
            if (got)
                *got = n;
            return (long)(tu_now_ms() - t0);
        }
        for (ssize_t i = 0; i < k && n < cap; i++)
            buf[n++] = tmp[i];
    }
    if (got)
        *got = n;
    return -1;
}

#endif
