/*
 * testutil.h - small helpers shared by the C tests: waiting for a condition
 * (never sleeping a fixed time and hoping), and silo/client set-up.
 */
#ifndef QUARK_TESTUTIL_H
#define QUARK_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <quark/quark.h>

/* Built with ASan or TSan: their allocators hold freed memory (quarantine,
 * shadow), so a process's RSS says little about its own memory. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TU_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TU_SANITIZED 1
#endif
#endif
#ifdef TU_SANITIZED
#define TU_SANITIZED_BUILD 1
#else
#define TU_SANITIZED_BUILD 0
#endif

static inline uint64_t tu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void tu_sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Poll `cond` every millisecond for up to `ms`; true if it became true. Long
 * limits: a slow machine must not fail a test, only a broken one. */
#define TU_WAIT_UNTIL(cond, ms)                                  \
    ({                                                           \
        uint64_t tu_end_ = tu_now_ms() + (ms);                   \
        int tu_ok_ = 0;                                          \
        while (!(tu_ok_ = !!(cond)) && tu_now_ms() < tu_end_)    \
            tu_sleep_ms(1);                                      \
        tu_ok_;                                                  \
    })

/* assert_int_equal with quark_last_error() shown on failure. */
#define TU_OK(expr)                                                                  \
    do {                                                                             \
        quark_err tu_rc_ = (expr);                                                   \
        if (tu_rc_ != QUARK_OK)                                                      \
            fail_msg("%s -> %s: %s", #expr, quark_errname(tu_rc_), quark_last_error()); \
    } while (0)

typedef struct tu_env {
    quark_silo *silo;
    quark_client *client;
} tu_env;

/* A silo of options `so`, started, and an embedded client of it. */
static inline void tu_env_start_opts(tu_env *e, const quark_silo_opts *so)
{
    TU_OK(quark_silo_create(so, &e->silo));
    TU_OK(quark_silo_start(e->silo));
    quark_client_opts co;
    quark_client_opts_init(&co);
    co.embedded = e->silo;
    TU_OK(quark_client_create(&co, &e->client));
    TU_OK(quark_client_connect(e->client));
}

/* A silo of `workers` (idle_ms 0: the default idle timeout) on `storage`
 * (NULL: memory), and an embedded client of it. */
static inline void tu_env_start_on(tu_env *e, unsigned workers, uint32_t idle_ms,
                                   const char *storage)
{
    quark_silo_opts so;
    quark_silo_opts_init(&so);
    so.workers = workers;
    so.storage = storage;
    if (idle_ms)
        so.idle_timeout_ms = idle_ms;
    tu_env_start_opts(e, &so);
}

static inline void tu_env_start(tu_env *e, unsigned workers, uint32_t idle_ms)
{
    tu_env_start_on(e, workers, idle_ms, NULL);
}

static inline void tu_env_stop(tu_env *e)
{
    quark_client_free(e->client);
    TU_OK(quark_silo_stop(e->silo));
    quark_silo_free(e->silo);
}

#endif
