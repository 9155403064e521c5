/*
 * quark/version.h - version numbers and the symbol-export macro.
 *
 * libquark is built with hidden visibility; QUARK_API marks what is public.
 */
#ifndef QUARK_VERSION_H
#define QUARK_VERSION_H

#define QUARK_VERSION_MAJOR 0
#define QUARK_VERSION_MINOR 1
#define QUARK_VERSION_PATCH 0
#define QUARK_VERSION_STRING "0.1.0"

/* ABI of generated code: protoc-gen-quark stamps it into every interface
 * descriptor, and the registry refuses descriptors of another ABI. */
#define QUARK_GEN_ABI 2

#if defined(__GNUC__) || defined(__clang__)
#define QUARK_API __attribute__((visibility("default")))
#else
#define QUARK_API
#endif

#endif /* QUARK_VERSION_H */
