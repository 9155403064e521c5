/*
 * common.h - small helpers shared by every internal module: branch hints,
 * the monotonic clock, allocation wrappers and error recording.
 *
 * Internal symbols are prefixed qk_ and never exported (libquark is built
 * with hidden visibility; only QUARK_API symbols leave the library).
 */
#ifndef QK_COMMON_H
#define QK_COMMON_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "quark/error.h"

#define QK_LIKELY(x) __builtin_expect(!!(x), 1)
#define QK_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define QK_UNUSED(x) ((void)(x))
#define QK_CONTAINER_OF(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))
/* Thread-locals of libquark: initial-exec, so reading one is a plain
 * %fs-relative load instead of a __tls_get_addr call (libquark is linked
 * into programs, not dlopen'ed late; glibc keeps static TLS room for it). */
#define QK_TLS _Thread_local __attribute__((tls_model("initial-exec")))
/* Built with ASan or TSan (gcc defines the first, clang answers the second):
 * their allocators replace glibc's, so glibc-only calls (malloc_trim) are off. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define QK_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define QK_SANITIZED 1
#endif
#endif

#define QK_ALIGN_UP(n, a) (((n) + ((a) - 1)) & ~((size_t)(a) - 1))

/* Monotonic nanoseconds (vDSO, ~20 ns). */
static inline uint64_t qk_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Monotonic milliseconds from the coarse clock (a few ns, ~4 ms steps):
 * good enough for deadlines and idle ages, cheap enough for every call. */
static inline uint64_t qk_now_ms_coarse(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

static inline void qk_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Record `err` with a formatted message as the calling thread's last error
 * (quark_last_error) and return `err`. */
quark_err qk_error(quark_err err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, with a plain string (no formatting). */
quark_err qk_error_str(quark_err err, const char *msg);
/* Clear the thread's last error. */
void qk_error_clear(void);

#endif /* QK_COMMON_H */
