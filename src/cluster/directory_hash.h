/*
 * directory_hash.h - the hash directory (directory_hash.c): an actor lives
 * on its placement owner under the view.
 */
#ifndef QK_DIRECTORY_HASH_H
#define QK_DIRECTORY_HASH_H

#include "runtime/runtime.h"
#include "runtime/providers.h"

extern const qk_directory_ops qk_directory_hash;

#endif /* QK_DIRECTORY_HASH_H */
