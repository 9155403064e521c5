/*
 * view_codec.h - a cluster view as a ClusterView message (actor_service.proto):
 * what a silo sends its watching clients, and what a client makes of it.
 */
#ifndef QK_VIEW_CODEC_H
#define QK_VIEW_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/view.h"

/* Encode v as a ClusterView with every member ALIVE (what clients get from
 * WatchCluster), into a malloc'd buffer. NULL on out of memory. */
uint8_t *qk_view_encode(const qk_view *v, const char *cluster_id, const char *from,
                        uint64_t from_incarnation, size_t *len);
/* Decode a ClusterView sent to a client: its ALIVE members become a view
 * (self -1). NULL if the bytes are not a ClusterView; *why says why. If
 * `cluster_id` is not NULL it must match. *from (optional) receives a
 * malloc'd copy of the sender's address. */
qk_view *qk_view_decode(const uint8_t *p, size_t n, const char *cluster_id, char **from,
                        const char **why);

#endif /* QK_VIEW_CODEC_H */
