/*
 * generator/model.h - the service model protoc-gen-quark builds from a
 * CodeGeneratorRequest (files, services, methods and the C names of their
 * messages), the checks it runs on it, and the naming helpers (protoc-c's
 * name mangling, Quark prefixes, C string escaping) that emit.c uses.
 */
#ifndef QUARK_GENERATOR_MODEL_H
#define QUARK_GENERATOR_MODEL_H

#include <stddef.h>

#include "google/protobuf/compiler/plugin.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "util.h"

typedef Google__Protobuf__FileDescriptorProto qg_file_desc;
typedef Google__Protobuf__DescriptorProto qg_message_desc;
typedef Google__Protobuf__ServiceDescriptorProto qg_service_desc;
typedef Google__Protobuf__MethodDescriptorProto qg_method_desc;

struct qg_file;

/* A message type of any file of the request, with protoc-c's C names. */
typedef struct qg_msg {
    const char *full_name;          /* "my_pkg.v1.Outer.Inner" (no leading dot) */
    const qg_message_desc *desc;
    const struct qg_file *file;     /* where it is declared */
    const char *c_type;             /* MyPkg__V1__Outer__Inner */
    const char *c_descriptor;       /* my_pkg__v1__outer__inner__descriptor */
    const char *c_init;             /* MY_PKG__V1__OUTER__INNER__INIT */
    const char *base_field;         /* "base" unless (pb_c_msg).base_field_name */
} qg_msg;

typedef struct qg_method {
    const qg_method_desc *desc;
    const char *name;               /* as in the .proto */
    const qg_msg *input;
    const qg_msg *output;
    unsigned flags;                 /* QUARK_METHOD_* */
    const char *comment;            /* leading comment, or NULL */
} qg_method;

typedef struct qg_service {
    const qg_service_desc *desc;
    const struct qg_file *file;
    const char *name;               /* "CounterActor" */
    const char *full_name;          /* "quark.examples.CounterActor" */
    const char *prefix;             /* "quark_examples_CounterActor" */
    const char *type_name;          /* wire / actor type name */
    int type_name_overridden;       /* set by @quark.type_name */
    const qg_msg *state;            /* @quark.state: the persistent state message, or NULL */
    const char *comment;            /* leading comment, or NULL */
    size_t n_methods;
    qg_method *methods;
} qg_service;

typedef struct qg_file {
    const qg_file_desc *desc;
    const char *name;               /* "sub/foo.proto", relative to its proto_path */
    const char *package;            /* "" without a package statement */
    const char *c_package;          /* (pb_c_file).c_package, or NULL */
    int no_generate;                /* (pb_c_file).no_generate */
    int generate;                   /* listed in file_to_generate */
    size_t n_services;
    qg_service *services;
} qg_file;

typedef struct qg_model {
    size_t n_files;
    qg_file *files;
    size_t n_msgs;
    qg_msg *msgs;                   /* sorted by full_name */
    size_t n_errors;
    qg_buf errors;                  /* one line per error */
} qg_model;

/* Build the model of `req` and check it. Returns the number of errors found;
 * their text (one per line, naming file, service and method) is in
 * model->errors. */
size_t qg_model_build(qg_model *model, const Google__Protobuf__Compiler__CodeGeneratorRequest *req);

/* Record one error (a line of model->errors). */
void qg_error(qg_model *model, const char *fmt, ...) QG_PRINTF(2, 3);

/* ---- annotations (annotations.c) ---- */

typedef enum qg_annot_ctx { QG_ANNOT_SERVICE, QG_ANNOT_METHOD } qg_annot_ctx;

/* What a service's annotations say (NULL: not said). */
typedef struct qg_service_annots {
    const char *type_name;          /* @quark.type_name <name> */
    const char *state;              /* @quark.state <message>, as written */
} qg_service_annots;

/* Read the @quark.* annotations of one comment. `where` prefixes error
 * messages ("foo.proto: service a.S, method M"). In method context flags
 * are or-ed into *flags (sa may be NULL); in service context they fill *sa
 * (flags may be NULL). */
void qg_scan_annotations(qg_model *model, const char *where, qg_annot_ctx ctx,
                         const char *comment, unsigned *flags, qg_service_annots *sa);

/* A comment detached from the element by a blank line: any @quark. word in
 * it is an error (it would otherwise be silently ignored). */
void qg_check_detached_comment(qg_model *model, const char *where, const char *comment);

/* ---- names (names.c) ---- */

/* protoc-c's names for the message `full_name` (no leading dot) declared in
 * a file with package `package` and optional (pb_c_file).c_package. */
char *qg_c_type_name(const char *full_name, const char *package, const char *c_package);
char *qg_c_lower_name(const char *full_name, const char *package, const char *c_package);
char *qg_c_upper_name(const char *full_name, const char *package, const char *c_package);

/* Quark's prefix: package with '.' -> '_', '_', service name. */
char *qg_service_prefix(const char *package, const char *service);

/* "sub/foo.proto" -> "sub/foo" (protoc-c's StripProto). */
char *qg_strip_proto(const char *file_name);

/* A C identifier made from a file name (for include guards). */
char *qg_file_identifier(const char *file_name);

/* Append `s` to `b` as the inside of a C string literal. */
void qg_c_escape(qg_buf *b, const char *s);

/* Non-zero if `name` cannot be used as a struct member name: a C keyword or
 * a macro the C library or protobuf-c defines. */
int qg_is_reserved_c_name(const char *name);

#endif /* QUARK_GENERATOR_MODEL_H */
