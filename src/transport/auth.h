/*
 * auth.h - the cluster key: how a silo's peer link proves it belongs to the
 * cluster (docs/wire-protocol.md, "Cluster frames").
 *
 * A silo with a key sends QK_AUTH_CHALLENGE random bytes in HELLO_OK; a peer
 * link that has the key answers with an AUTH frame whose proof is
 * HMAC-SHA256(key, "quark-cluster-auth/1" NUL cluster_id NUL challenge).
 * The key itself never crosses the wire.
 */
#ifndef QK_AUTH_H
#define QK_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QK_AUTH_CHALLENGE 32
#define QK_AUTH_PROOF 32

/* Fresh random bytes (false: the system's generator failed). */
bool qk_auth_challenge(uint8_t out[QK_AUTH_CHALLENGE]);
/* The proof of key for this cluster and challenge (false: OpenSSL failed). */
bool qk_auth_proof(const char *key, const char *cluster_id,
                   const uint8_t challenge[QK_AUTH_CHALLENGE], uint8_t out[QK_AUTH_PROOF]);
/* Whether proof (n bytes) is the proof of key (compared in constant time). */
bool qk_auth_check(const char *key, const char *cluster_id,
                   const uint8_t challenge[QK_AUTH_CHALLENGE], const uint8_t *proof, size_t n);

#endif /* QK_AUTH_H */
