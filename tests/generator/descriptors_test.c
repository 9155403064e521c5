/*
 * descriptors_test.c - checks what protoc-gen-quark generated for the
 * .proto files of tests/generator/good, without running anything of the
 * runtime: type names, method names and numbers, flags from annotations,
 * that the message descriptors are protoc-c's own (spelled by protoc-c's
 * naming rules), method table sizes, and the typed signatures (checked by the compiler:
 * this file assigns every generated function to a pointer of the expected
 * type, and -Werror turns a mismatch into a build failure).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nopkg.quark.h"
#include "sub/deep.quark.h"
#include "zoo.quark.h"
#include "zoo_common.quark.h"
#ifdef QG_TEST_HAVE_CPKG
#include "cpkg.quark.h"
#endif

static int failures;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                          \
        }                                                                        \
    } while (0)

#define CHECK_STR(a, b)                                                          \
    do {                                                                         \
        const char *a_ = (a), *b_ = (b);                                         \
        if (a_ == NULL || strcmp(a_, b_) != 0) {                                 \
            fprintf(stderr, "%s:%d: %s is \"%s\", expected \"%s\"\n", __FILE__,  \
                    __LINE__, #a, a_ ? a_ : "(null)", b_);                       \
            failures++;                                                          \
        }                                                                        \
    } while (0)

/* One method descriptor: name, protoc-c descriptors, flags, and that the
 * descriptors describe the proto types named in the .proto. */
static void check_method(const quark_interface *iface, unsigned idx, const char *name,
                         const ProtobufCMessageDescriptor *in,
                         const ProtobufCMessageDescriptor *out, const char *in_proto,
                         const char *out_proto, unsigned flags)
{
    CHECK(idx < iface->n_methods);
    if (idx >= iface->n_methods)
        return;
    const quark_method_desc *m = &iface->methods[idx];
    CHECK_STR(m->name, name);
    CHECK(m->input == in);
    CHECK(m->output == out);
    CHECK_STR(m->input->name, in_proto);
    CHECK_STR(m->output->name, out_proto);
    CHECK(m->input->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC);
    CHECK(m->output->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC);
    if (m->flags != flags)
        fprintf(stderr, "method %s: flags 0x%x, expected 0x%x\n", name, m->flags, flags);
    CHECK(m->flags == flags);
}

static void check_interface(const quark_interface *iface, const char *name,
                            const char *proto_file, unsigned n_methods, size_t table_size)
{
    CHECK(iface->abi == QUARK_GEN_ABI);
    CHECK_STR(iface->name, name);
    CHECK_STR(iface->proto_file, proto_file);
    CHECK(iface->n_methods == n_methods);
    CHECK(iface->methods_table_size == table_size);
    CHECK(iface->dispatch != NULL);
    CHECK((iface->methods != NULL) == (n_methods > 0));
}

/* ---- method numbers are compile-time constants in declaration order ---- */
_Static_assert(my_pkg_v1_Keeper_GetStatus_METHOD == 0, "GetStatus is method 0");
_Static_assert(my_pkg_v1_Keeper_Put_Thing2_METHOD == 1, "Put_Thing2 is method 1");
_Static_assert(my_pkg_v1_Keeper_Echo_METHOD == 2, "Echo is method 2");
_Static_assert(my_pkg_v1_Keeper_Nested_METHOD == 3, "Nested is method 3");
_Static_assert(my_pkg_v1_Keeper_Deferred_METHOD == 4, "Deferred is method 4");
_Static_assert(my_pkg_v1_Keeper_METHOD_COUNT == 5, "Keeper has 5 methods");
_Static_assert(my_pkg_v1_HTTP_Gateway2_fetch_METHOD == 0, "fetch is method 0");
_Static_assert(my_pkg_v1_HTTP_Gateway2_Unimplemented_METHOD == 1, "Unimplemented is 1");
_Static_assert(my_pkg_v1_HTTP_Gateway2_METHOD_COUNT == 2, "Gateway has 2 methods");
_Static_assert(Plain_Hello_METHOD == 0 && Plain_METHOD_COUNT == 1, "Plain has Hello");
_Static_assert(Empty_Service_METHOD_COUNT == 0, "Empty_Service has no method");

/* ---- the method table has the expected member types ---- */
static quark_err keeper_status(quark_actor *self, const Google__Protobuf__Empty *req,
                               MyPkg__V1__HTTPStatus2 *reply)
{
    (void)self, (void)req, (void)reply;
    return QUARK_OK;
}
static quark_err keeper_put(quark_actor *self, const MyPkg__V1__SnakeCaseReq *req,
                            Google__Protobuf__Timestamp *reply)
{
    (void)self, (void)req, (void)reply;
    return QUARK_OK;
}
static quark_err keeper_echo(quark_actor *self, const MyPkg__V1__Echo *req,
                             MyPkg__V1__Echo *reply)
{
    (void)self, (void)req, (void)reply;
    return QUARK_OK;
}
static quark_err keeper_nested(quark_actor *self, const MyPkg__V1__Outer__InnerMsg *req,
                               MyPkg__V1__Outer__InnerMsg__DeepX9 *reply)
{
    (void)self, (void)req, (void)reply;
    return QUARK_OK;
}
static quark_err keeper_deferred(quark_actor *self, const Zoo__Common__Tag *req,
                                 Zoo__Common__Tag *reply)
{
    (void)self, (void)req, (void)reply;
    return QUARK_OK;
}
static const my_pkg_v1_Keeper_methods keeper_table = {
    .GetStatus = keeper_status,
    .Put_Thing2 = keeper_put,
    .Echo = keeper_echo,
    .Nested = keeper_nested,
    .Deferred = keeper_deferred,
};

static void check_signatures(void)
{
    /* blocking proxies */
    quark_err (*b1)(quark_ref *, const Google__Protobuf__Empty *, MyPkg__V1__HTTPStatus2 **) =
        my_pkg_v1_Keeper_GetStatus;
    quark_err (*b2)(quark_ref *, const MyPkg__V1__SnakeCaseReq *,
                    Google__Protobuf__Timestamp **) = my_pkg_v1_Keeper_Put_Thing2;
    quark_err (*b3)(quark_ref *, const MyPkg__V1__Echo *, MyPkg__V1__Echo **) =
        my_pkg_v1_Keeper_Echo;
    quark_err (*b4)(quark_ref *, const MyPkg__V1__Outer__InnerMsg *,
                    MyPkg__V1__Outer__InnerMsg__DeepX9 **) = my_pkg_v1_Keeper_Nested;
    quark_err (*b5)(quark_ref *, const Zoo__Common__Tag *, Zoo__Common__Tag **) =
        my_pkg_v1_Keeper_Deferred;
    quark_err (*b6)(quark_ref *, const PlainRequest *, PlainReply **) = Plain_Hello;
    /* callback types and asynchronous proxies */
    void (*cb)(quark_err, const char *, const MyPkg__V1__HTTPStatus2 *, void *) = NULL;
    my_pkg_v1_HTTP_Gateway2_fetch_cb fetch_cb = cb;
    quark_err (*a1)(quark_ref *, const MyPkg__V1__HTTPStatus2 *,
                    my_pkg_v1_HTTP_Gateway2_fetch_cb, void *) = my_pkg_v1_HTTP_Gateway2_fetch_async;
    /* server-side helpers */
    quark_err (*r1)(quark_deferred *, const Zoo__Common__Tag *) = my_pkg_v1_Keeper_Deferred_reply;
    quark_err (*ref)(quark_client *, const char *, quark_ref **) = my_pkg_v1_Keeper_ref;
    CHECK(b1 && b2 && b3 && b4 && b5 && b6 && a1 && r1 && ref && fetch_cb == NULL);
    CHECK(keeper_table.Echo == keeper_echo);
}

/* The proxies refuse a NULL request before touching the runtime. */
static void check_null_requests(void)
{
    static MyPkg__V1__Echo dummy;
    MyPkg__V1__Echo *reply = &dummy; /* the proxy must reset it */
    CHECK(my_pkg_v1_Keeper_Echo(NULL, NULL, &reply) == QUARK_EINVAL);
    CHECK(reply == NULL);
    CHECK(my_pkg_v1_Keeper_Echo(NULL, NULL, NULL) == QUARK_EINVAL);
    CHECK(my_pkg_v1_Keeper_Echo_async(NULL, NULL, NULL, NULL) == QUARK_EINVAL);
    MyPkg__V1__Echo req = MY_PKG__V1__ECHO__INIT;
    CHECK(my_pkg_v1_Keeper_Echo_async(NULL, &req, NULL, NULL) == QUARK_EINVAL);
}

int main(void)
{
    /* Keeper: type name set by @quark.type_name; messages from this file,
     * zoo_common.proto and the well-known types; every annotation form. */
    CHECK_STR(my_pkg_v1_Keeper_TYPE_NAME, "zoo.Keeper");
    check_interface(&my_pkg_v1_Keeper_interface, "zoo.Keeper", "zoo.proto", 5,
                    sizeof(my_pkg_v1_Keeper_methods));
    CHECK(sizeof(my_pkg_v1_Keeper_methods) == 5 * sizeof(keeper_table.Echo));
    const quark_interface *k = &my_pkg_v1_Keeper_interface;
    check_method(k, my_pkg_v1_Keeper_GetStatus_METHOD, "GetStatus",
                 &google__protobuf__empty__descriptor, &my_pkg__v1__httpstatus2__descriptor,
                 "google.protobuf.Empty", "my_pkg.v1.HTTPStatus2", QUARK_METHOD_READ_ONLY);
    check_method(k, my_pkg_v1_Keeper_Put_Thing2_METHOD, "Put_Thing2",
                 &my_pkg__v1__snake_case_req__descriptor, &google__protobuf__timestamp__descriptor,
                 "my_pkg.v1.snake_case_req", "google.protobuf.Timestamp",
                 QUARK_METHOD_IDEMPOTENT);
    check_method(k, my_pkg_v1_Keeper_Echo_METHOD, "Echo", &my_pkg__v1__echo__descriptor,
                 &my_pkg__v1__echo__descriptor, "my_pkg.v1.Echo", "my_pkg.v1.Echo",
                 QUARK_METHOD_READ_ONLY | QUARK_METHOD_IDEMPOTENT);
    check_method(k, my_pkg_v1_Keeper_Nested_METHOD, "Nested",
                 &my_pkg__v1__outer__inner_msg__descriptor,
                 &my_pkg__v1__outer__inner_msg__deep__x9__descriptor, "my_pkg.v1.Outer.Inner_msg",
                 "my_pkg.v1.Outer.Inner_msg.deep_X9", QUARK_METHOD_IDEMPOTENT);
    check_method(k, my_pkg_v1_Keeper_Deferred_METHOD, "Deferred", &zoo__common__tag__descriptor,
                 &zoo__common__tag__descriptor, "zoo.common.Tag", "zoo.common.Tag", 0);

    /* HTTP_Gateway2: the default type name is the fully qualified name. */
    CHECK_STR(my_pkg_v1_HTTP_Gateway2_TYPE_NAME, "my_pkg.v1.HTTP_Gateway2");
    const quark_interface *g = &my_pkg_v1_HTTP_Gateway2_interface;
    check_interface(g, "my_pkg.v1.HTTP_Gateway2", "zoo.proto", 2,
                    sizeof(my_pkg_v1_HTTP_Gateway2_methods));
    check_method(g, my_pkg_v1_HTTP_Gateway2_fetch_METHOD, "fetch",
                 &my_pkg__v1__httpstatus2__descriptor, &my_pkg__v1__httpstatus2__descriptor,
                 "my_pkg.v1.HTTPStatus2", "my_pkg.v1.HTTPStatus2", 0);
    check_method(g, my_pkg_v1_HTTP_Gateway2_Unimplemented_METHOD, "Unimplemented",
                 &google__protobuf__empty__descriptor, &google__protobuf__empty__descriptor,
                 "google.protobuf.Empty", "google.protobuf.Empty", 0);

    /* nopkg.proto: no package, so the prefix is the bare service name. */
    CHECK_STR(Plain_TYPE_NAME, "Plain");
    check_interface(&Plain_interface, "Plain", "nopkg.proto", 1, sizeof(Plain_methods));
    check_method(&Plain_interface, Plain_Hello_METHOD, "Hello", &plain_request__descriptor,
                 &plain_reply__descriptor, "PlainRequest", "plain_reply", 0);
    check_interface(&Empty_Service_interface, "Empty_Service", "nopkg.proto", 0,
                    sizeof(Empty_Service_methods));

    /* sub/deep.proto: a file below the import root; a type name that needs
     * escaping in a C string literal. */
    CHECK_STR(deep_sub_Deep_Thing_TYPE_NAME, "deep/\"quoted\"\?\?=v2");
    check_interface(&deep_sub_Deep_Thing_interface, "deep/\"quoted\"\?\?=v2", "sub/deep.proto",
                    1, sizeof(deep_sub_Deep_Thing_methods));
    check_method(&deep_sub_Deep_Thing_interface, deep_sub_Deep_Thing_Get_METHOD, "Get",
                 &zoo__common__tag__descriptor, &zoo__common__tag__descriptor, "zoo.common.Tag",
                 "zoo.common.Tag", 0);

#ifdef QG_TEST_HAVE_CPKG
    /* cpkg.proto: (pb_c_file).c_package renames the C types, and
     * (pb_c_msg).base_field_name the ProtobufCMessage member; the Quark
     * prefix and the type name keep the proto package. */
    CHECK_STR(cpkg_orig_Pinger_TYPE_NAME, "cpkg.orig.Pinger");
    const quark_interface *p = &cpkg_orig_Pinger_interface;
    check_interface(p, "cpkg.orig.Pinger", "cpkg.proto", 2, sizeof(cpkg_orig_Pinger_methods));
    check_method(p, cpkg_orig_Pinger_Ping_METHOD, "Ping", &renamed__pkg__ping__descriptor,
                 &renamed__pkg__pong__descriptor, "cpkg.orig.Ping", "cpkg.orig.Pong",
                 QUARK_METHOD_READ_ONLY);
    check_method(p, cpkg_orig_Pinger_Back_METHOD, "Back", &renamed__pkg__pong__descriptor,
                 &renamed__pkg__ping__descriptor, "cpkg.orig.Pong", "cpkg.orig.Ping", 0);
    quark_err (*pp)(quark_ref *, const Renamed__Pkg__Ping *, Renamed__Pkg__Pong **) =
        cpkg_orig_Pinger_Ping;
    CHECK(pp != NULL);
    Renamed__Pkg__Ping ping = RENAMED__PKG__PING__INIT;
    CHECK(ping.hdr.descriptor == &renamed__pkg__ping__descriptor);
#endif

    check_signatures();
    check_null_requests();

    if (failures != 0) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    puts("generator descriptors: all checks passed");
    return 0;
}
