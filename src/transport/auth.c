/*
 * auth.c - the cluster key's challenge and proof (auth.h), with OpenSSL's
 * libcrypto: RAND_bytes and HMAC-SHA256.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "transport/auth.h"

static const char label[] = "quark-cluster-auth/1";

bool qk_auth_challenge(uint8_t out[QK_AUTH_CHALLENGE])
{
    return RAND_bytes(out, QK_AUTH_CHALLENGE) == 1;
}

bool qk_auth_proof(const char *key, const char *cluster_id,
                   const uint8_t challenge[QK_AUTH_CHALLENGE], uint8_t out[QK_AUTH_PROOF])
{
    /* label NUL cluster_id NUL challenge: no two inputs read alike. */
    size_t cl = strlen(cluster_id), n = sizeof label + cl + 1 + QK_AUTH_CHALLENGE;
    uint8_t *msg = malloc(n);
    if (!msg)
        return false;
    memcpy(msg, label, sizeof label);
    memcpy(msg + sizeof label, cluster_id, cl + 1);
    memcpy(msg + sizeof label + cl + 1, challenge, QK_AUTH_CHALLENGE);
    unsigned int len = 0;
    bool ok = HMAC(EVP_sha256(), key, (int)strlen(key), msg, n, out, &len) && len == QK_AUTH_PROOF;
    free(msg);
    return ok;
}

bool qk_auth_check(const char *key, const char *cluster_id,
                   const uint8_t challenge[QK_AUTH_CHALLENGE], const uint8_t *proof, size_t n)
{
    uint8_t want[QK_AUTH_PROOF];
    return n == QK_AUTH_PROOF && qk_auth_proof(key, cluster_id, challenge, want) &&
           CRYPTO_memcmp(want, proof, QK_AUTH_PROOF) == 0;
}
