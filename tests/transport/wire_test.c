/*
 * wire_test.c - the hand-coded envelope (src/transport/wire.c) against
 * protobuf-c: whatever one encodes the other decodes identically, unknown
 * fields are skipped, and hostile bytes (random, truncated, overlong) give -1,
 * never a read outside the input (run under ASan in CI).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "quark/actor_service.pb-c.h"
#include "transport/wire.h"

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void fill(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        s[i] = (char)('a' + next() % 26);
    s[n] = '\0';
}

static void test_request_matches_protobuf_c(void **state)
{
    (void)state;
    for (int iter = 0; iter < 2000; iter++) {
        char id[300], type[300], method[64], cl[32];
        fill(id, next() % 257);
        fill(type, next() % 256);
        fill(method, next() % 40);
        fill(cl, next() % 10);
        uint8_t args[600];
        size_t alen = next() % 600;
        for (size_t i = 0; i < alen; i++)
            args[i] = (uint8_t)next();
        Quark__ActorInvocationRequest rq = QUARK__ACTOR_INVOCATION_REQUEST__INIT;
        rq.actor_id = id;
        rq.actor_type = type;
        rq.method_name = method;
        rq.serialized_args.data = args;
        rq.serialized_args.len = alen;
        rq.deadline_ms = (uint32_t)(next() % 3 ? next() : 0);
        rq.cluster_id = cl;
        Quark__CallLink links[5], *lp[5];
        rq.n_call_chain = next() % 6;
        for (size_t i = 0; i < rq.n_call_chain; i++) {
            quark__call_link__init(&links[i]);
            links[i].actor = next();
            links[i].turn = (uint32_t)next();
            lp[i] = &links[i];
        }
        rq.call_chain = lp;
        size_t n = quark__actor_invocation_request__get_packed_size(&rq);
        uint8_t *buf = malloc(n + 1);
        quark__actor_invocation_request__pack(&rq, buf);
        qk_wire_request w;
        qk_chain_link chain[8];
        assert_int_equal(qk_wire_decode_request(buf, n, &w, chain, 8), 0);
        assert_int_equal(w.actor_id.n, strlen(id));
        assert_memory_equal(w.actor_id.p, id, w.actor_id.n);
        assert_int_equal(w.actor_type.n, strlen(type));
        assert_memory_equal(w.actor_type.p, type, w.actor_type.n);
        assert_int_equal(w.method.n, strlen(method));
        assert_int_equal(w.cluster_id.n, strlen(cl));
        assert_int_equal(w.args_len, alen);
        if (alen)
            assert_memory_equal(w.args, args, alen);
        assert_int_equal(w.deadline_ms, rq.deadline_ms);
        assert_int_equal(w.n_chain, rq.n_call_chain);
        for (size_t i = 0; i < rq.n_call_chain; i++) {
            assert_int_equal(chain[i].act, links[i].actor);
            assert_int_equal(chain[i].turn, links[i].turn);
        }
        free(buf);
    }
}

/* A stand-in request message for the encoder: any ProtobufCMessage works;
 * StreamRequest has two strings, enough to vary the size. */
static void test_request_encoder_decodes_with_protobuf_c(void **state)
{
    (void)state;
    for (int iter = 0; iter < 1000; iter++) {
        char id[300], type[300], method[64], aid[100];
        fill(id, 1 + next() % 256);
        fill(type, 1 + next() % 255);
        fill(method, 1 + next() % 40);
        fill(aid, next() % 90);
        Quark__StreamRequest args = QUARK__STREAM_REQUEST__INIT;
        args.actor_id = aid;
        size_t alen = quark__stream_request__get_packed_size(&args);
        uint32_t dl = (uint32_t)(next() % 2 ? next() : 0);
        size_t n = qk_wire_request_size(strlen(id), strlen(type), strlen(method), alen, dl);
        uint8_t *buf = malloc(n);
        uint8_t *end = qk_wire_encode_request(buf, id, strlen(id), type, strlen(type), method,
                                              strlen(method), NULL, &args.base, alen, dl);
        assert_int_equal(end - buf, n);
        Quark__ActorInvocationRequest *rq = quark__actor_invocation_request__unpack(NULL, n, buf);
        assert_non_null(rq);
        assert_string_equal(rq->actor_id, id);
        assert_string_equal(rq->actor_type, type);
        assert_string_equal(rq->method_name, method);
        assert_int_equal(rq->deadline_ms, dl);
        Quark__StreamRequest *back = quark__stream_request__unpack(NULL, rq->serialized_args.len,
                                                                   rq->serialized_args.data);
        assert_non_null(back);
        assert_string_equal(back->actor_id, aid);
        quark__stream_request__free_unpacked(back, NULL);
        quark__actor_invocation_request__free_unpacked(rq, NULL);
        free(buf);
    }
}

/* A forwarded request (packed args, chain, hops) reads back the same with
 * protobuf-c and with our decoder. */
static void test_forward_encoder(void **state)
{
    (void)state;
    for (int iter = 0; iter < 1000; iter++) {
        char id[300], type[300], method[64];
        fill(id, 1 + next() % 256);
        fill(type, 1 + next() % 255);
        fill(method, 1 + next() % 40);
        uint8_t args[200];
        size_t alen = next() % 200;
        for (size_t i = 0; i < alen; i++)
            args[i] = (uint8_t)next();
        qk_chain_link chain[5];
        size_t nc = next() % 6;
        for (size_t i = 0; i < nc; i++) {
            chain[i].act = next() % 3 ? ((uint64_t)next() << 32 | next()) : 0;
            chain[i].turn = (uint32_t)(next() % 3 ? next() : 0);
            chain[i].pad_ = 0;
        }
        uint32_t dl = (uint32_t)(next() % 2 ? next() : 0);
        uint32_t hops = (uint32_t)(next() % 4);
        size_t n = qk_wire_forward_size(strlen(id), strlen(type), strlen(method), alen, dl, chain,
                                        nc, hops);
        uint8_t *buf = malloc(n + 1);
        uint8_t *end = qk_wire_encode_forward(buf, id, strlen(id), type, strlen(type), method,
                                              strlen(method), args, alen, dl, chain, nc, hops);
        assert_int_equal(end - buf, n);
        Quark__ActorInvocationRequest *rq = quark__actor_invocation_request__unpack(NULL, n, buf);
        assert_non_null(rq);
        assert_string_equal(rq->actor_id, id);
        assert_string_equal(rq->actor_type, type);
        assert_string_equal(rq->method_name, method);
        assert_int_equal(rq->deadline_ms, dl);
        assert_int_equal(rq->hops, hops);
        assert_int_equal(rq->serialized_args.len, alen);
        if (alen)
            assert_memory_equal(rq->serialized_args.data, args, alen);
        assert_int_equal(rq->n_call_chain, nc);
        for (size_t i = 0; i < nc; i++) {
            assert_int_equal(rq->call_chain[i]->actor, chain[i].act);
            assert_int_equal(rq->call_chain[i]->turn, chain[i].turn);
        }
        quark__actor_invocation_request__free_unpacked(rq, NULL);
        qk_wire_request w;
        qk_chain_link back[8];
        assert_int_equal(qk_wire_decode_request(buf, n, &w, back, 8), 0);
        assert_int_equal(w.hops, hops);
        assert_int_equal(w.n_chain, nc);
        for (size_t i = 0; i < nc; i++) {
            assert_int_equal(back[i].act, chain[i].act);
            assert_int_equal(back[i].turn, chain[i].turn);
        }
        free(buf);
    }
}

static void test_response_both_ways(void **state)
{
    (void)state;
    int32_t codes[] = {0, -1, -12, -21, 1, INT32_MIN, INT32_MAX};
    for (int iter = 0; iter < 1000; iter++) {
        int32_t err = codes[next() % 7];
        bool actor = err != 0 && (next() & 1);
        char msg[200];
        fill(msg, err ? next() % 150 : 0);
        uint8_t res[300];
        size_t rlen = err ? 0 : next() % 300;
        for (size_t i = 0; i < rlen; i++)
            res[i] = (uint8_t)next();
        char where[40];
        snprintf(where, sizeof where, "10.0.0.%u:%u", (unsigned)(next() % 256),
                 (unsigned)(next() % 65536));
        const char *loc = next() & 1 ? where : NULL;
        size_t n = qk_wire_response_size(err, strlen(msg), rlen, actor, loc);
        uint8_t *buf = malloc(n + 1);
        assert_int_equal(
            qk_wire_encode_response(buf, err, msg, strlen(msg), res, rlen, actor, loc) - buf, n);
        Quark__ActorInvocationResponse *r = quark__actor_invocation_response__unpack(NULL, n, buf);
        assert_non_null(r);
        assert_int_equal(r->error_code, err);
        assert_int_equal(r->actor_error, actor);
        assert_string_equal(r->error_message, msg);
        assert_int_equal(r->serialized_result.len, rlen);
        assert_string_equal(r->location, loc ? loc : "");
        /* protobuf-c's encoding, our decoder (with the gRPC worker hint) */
        r->served_by = (uint32_t)(next() % 3);
        r->workers = (uint32_t)(next() % 300);
        size_t m = quark__actor_invocation_response__get_packed_size(r);
        uint8_t *buf2 = malloc(m + 1);
        quark__actor_invocation_response__pack(r, buf2);
        qk_wire_response w;
        assert_int_equal(qk_wire_decode_response(buf2, m, &w), 0);
        assert_int_equal(w.error_code, err);
        assert_int_equal(w.actor_error, actor);
        assert_int_equal(w.error_message.n, strlen(msg));
        assert_int_equal(w.result_len, rlen);
        assert_int_equal(w.served_by, r->served_by);
        assert_int_equal(w.workers, r->workers);
        assert_int_equal(w.location.n, strlen(r->location));
        assert_memory_equal(w.location.p, r->location, w.location.n);
        if (rlen)
            assert_memory_equal(w.result, res, rlen);
        quark__actor_invocation_response__free_unpacked(r, NULL);
        free(buf);
        free(buf2);
    }
}

static void test_unknown_fields_skipped(void **state)
{
    (void)state;
    /* field 2 "t", unknown varint field 20, unknown fixed32 field 21, unknown
     * fixed64 field 22, unknown bytes field 23, field 3 "m" */
    const uint8_t in[] = {0x12, 1, 't', 0xa0, 0x01, 0x05, 0xad, 0x01, 1, 2, 3, 4,
                          0xb1, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0xba, 0x01, 2, 9, 9, 0x1a, 1, 'm'};
    qk_wire_request w;
    qk_chain_link ch[1];
    assert_int_equal(qk_wire_decode_request(in, sizeof in, &w, ch, 1), 0);
    assert_int_equal(w.actor_type.n, 1);
    assert_int_equal(w.method.n, 1);
    assert_int_equal(w.method.p[0], 'm');
    assert_int_equal(w.actor_id.n, 0);
}

static void test_hostile_bytes(void **state)
{
    (void)state;
    qk_wire_request w;
    qk_wire_response r;
    qk_chain_link ch[4];
    /* Lengths past the end, overlong varints, groups, field 0. */
    const uint8_t past[] = {0x0a, 0x7f, 'a'};
    assert_int_equal(qk_wire_decode_request(past, sizeof past, &w, ch, 4), -1);
    const uint8_t huge[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(qk_wire_decode_request(huge, sizeof huge, &w, ch, 4), -1);
    const uint8_t overlong[] = {0x28, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    assert_int_equal(qk_wire_decode_request(overlong, sizeof overlong, &w, ch, 4), -1);
    const uint8_t group[] = {0x0b};
    assert_int_equal(qk_wire_decode_request(group, sizeof group, &w, ch, 4), -1);
    const uint8_t field0[] = {0x02, 0x00};
    assert_int_equal(qk_wire_decode_response(field0, sizeof field0, &r), -1);
    const uint8_t wrongtype[] = {0x08, 0x01}; /* field 1 as a varint */
    assert_int_equal(qk_wire_decode_request(wrongtype, sizeof wrongtype, &w, ch, 4), -1);
    /* Every prefix of a valid encoding, and random bytes: -1 or 0, never a
     * crash or an out-of-bounds read (ASan watches). */
    Quark__ActorInvocationRequest rq = QUARK__ACTOR_INVOCATION_REQUEST__INIT;
    rq.actor_id = "some-id";
    rq.actor_type = "quark.examples.CounterActor";
    rq.method_name = "Increment";
    rq.deadline_ms = 30000;
    size_t n = quark__actor_invocation_request__get_packed_size(&rq);
    uint8_t *buf = malloc(n);
    quark__actor_invocation_request__pack(&rq, buf);
    for (size_t k = 0; k < n; k++) {
        uint8_t *cut = malloc(k ? k : 1); /* exact size: ASan sees any overrun */
        memcpy(cut, buf, k);
        int rc = qk_wire_decode_request(cut, k, &w, ch, 4);
        assert_true(rc == 0 || rc == -1);
        free(cut);
    }
    free(buf);
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = next() % 64;
        uint8_t *junk = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++)
            junk[i] = (uint8_t)next();
        int a = qk_wire_decode_request(junk, len, &w, ch, 4);
        int b = qk_wire_decode_response(junk, len, &r);
        assert_true((a == 0 || a == -1) && (b == 0 || b == -1));
        free(junk);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_matches_protobuf_c),
        cmocka_unit_test(test_request_encoder_decodes_with_protobuf_c),
        cmocka_unit_test(test_forward_encoder),
        cmocka_unit_test(test_response_both_ways),
        cmocka_unit_test(test_unknown_fields_skipped),
        cmocka_unit_test(test_hostile_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
