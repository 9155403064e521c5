/*
 * generator/model.c - builds protoc-gen-quark's service model from the
 * CodeGeneratorRequest and validates it.
 *
 * The model holds every file of the request (the files to generate and all
 * their imports), every message type with its protoc-c C names, and, for the
 * files to generate, their services and methods with the flags read from
 * annotations. Validation reports every problem it finds (not only the
 * first), each naming the file, service and method:
 *   - streaming methods of any kind (actor methods are unary);
 *   - proto3 'optional' fields (protoc-c 1.4.1 cannot generate them);
 *   - bad @quark.* annotations;
 *   - two services of the run mapped to the same actor type name;
 *   - method names that cannot be C struct members (keywords, macros);
 *   - generated C identifiers that would be defined twice.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "quark/interface.h"
#include "quark/registry.h"

/* Field number of protoc-c's options extensions (protobuf-c/protobuf-c.proto):
 * (pb_c_file) on FileOptions and (pb_c_msg) on MessageOptions. */
#define QG_PB_C_EXTENSION 1019u
#define QG_PB_C_FILE_NO_GENERATE 1u
#define QG_PB_C_FILE_C_PACKAGE 6u
#define QG_PB_C_MSG_BASE_FIELD_NAME 3u

/* Path elements of SourceCodeInfo locations (descriptor.proto field numbers). */
#define QG_FILE_SERVICE_FIELD 6
#define QG_SERVICE_METHOD_FIELD 2

void qg_error(qg_model *model, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qg_buf_vprintf(&model->errors, fmt, ap);
    va_end(ap);
    qg_buf_putc(&model->errors, '\n');
    model->n_errors++;
}

static const char *qg_str(const char *s)
{
    return s != NULL ? s : "";
}

/* ---- protoc-c options, found among the unknown fields of *Options ---- */

static int qg_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

typedef struct qg_pb_c_opt {
    int found;
    uint64_t varint;        /* varint sub-fields */
    const uint8_t *bytes;   /* length-delimited sub-fields */
    size_t len;
} qg_pb_c_opt;

/* Look for sub-field `sub` of extension QG_PB_C_EXTENSION in `options`
 * (the last occurrence wins, as protobuf merging does for scalars). */
static qg_pb_c_opt qg_pb_c_option(const ProtobufCMessage *options, uint32_t sub)
{
    qg_pb_c_opt opt = {0};
    if (options == NULL)
        return opt;
    for (unsigned i = 0; i < options->n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *u = &options->unknown_fields[i];
        if (u->tag != QG_PB_C_EXTENSION || u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
            continue;
        /* libprotobuf-c keeps the length prefix in the unknown field's data */
        const uint8_t *p = u->data, *end = u->data + u->len;
        uint64_t n;
        const uint8_t *q = p;
        if (qg_varint(&q, end, &n) && n == (uint64_t)(end - q))
            p = q;
        while (p < end) {
            uint64_t key, v;
            if (!qg_varint(&p, end, &key))
                break;
            unsigned wire = (unsigned)(key & 7);
            uint64_t field = key >> 3;
            if (wire == 0) {
                if (!qg_varint(&p, end, &v))
                    break;
                if (field == sub) {
                    opt.found = 1;
                    opt.varint = v;
                }
            } else if (wire == 2) {
                if (!qg_varint(&p, end, &v) || v > (uint64_t)(end - p))
                    break;
                if (field == sub) {
                    opt.found = 1;
                    opt.bytes = p;
                    opt.len = (size_t)v;
                }
                p += v;
            } else if (wire == 1 && end - p >= 8) {
                p += 8;
            } else if (wire == 5 && end - p >= 4) {
                p += 4;
            } else {
                break;
            }
        }
    }
    return opt;
}

/* ---- messages ---- */

static void qg_add_messages(qg_model *model, qg_file *file, const char *scope,
                            size_t n, Google__Protobuf__DescriptorProto *const *msgs,
                            size_t *cap)
{
    for (size_t i = 0; i < n; i++) {
        const qg_message_desc *d = msgs[i];
        const char *name = qg_str(d->name);
        char *full = *scope != '\0' ? qg_printf("%s.%s", scope, name) : qg_strdup(name);
        if (model->n_msgs == *cap) {
            size_t ncap = *cap ? *cap * 2 : 64;
            qg_msg *grown = qg_alloc(ncap * sizeof(*grown));
            if (model->n_msgs > 0)
                memcpy(grown, model->msgs, model->n_msgs * sizeof(*grown));
            model->msgs = grown;
            *cap = ncap;
        }
        qg_msg *m = &model->msgs[model->n_msgs++];
        m->full_name = full;
        m->desc = d;
        m->file = file;
        m->c_type = qg_c_type_name(full, file->package, file->c_package);
        m->c_descriptor = qg_printf("%s__descriptor",
                                    qg_c_lower_name(full, file->package, file->c_package));
        m->c_init = qg_printf("%s__INIT", qg_c_upper_name(full, file->package, file->c_package));
        qg_pb_c_opt base = qg_pb_c_option(d->options != NULL ? &d->options->base : NULL,
                                          QG_PB_C_MSG_BASE_FIELD_NAME);
        m->base_field = base.found ? qg_strndup((const char *)base.bytes, base.len) : "base";
        qg_add_messages(model, file, full, d->n_nested_type, d->nested_type, cap);
    }
}

static int qg_msg_cmp(const void *a, const void *b)
{
    return strcmp(((const qg_msg *)a)->full_name, ((const qg_msg *)b)->full_name);
}

static int qg_msg_key_cmp(const void *key, const void *elem)
{
    return strcmp((const char *)key, ((const qg_msg *)elem)->full_name);
}

/* The message called `type_name` (".pkg.Msg" as in descriptors), or NULL. */
static const qg_msg *qg_find_msg(const qg_model *model, const char *type_name)
{
    if (type_name == NULL || model->n_msgs == 0)
        return NULL;
    if (*type_name == '.')
        type_name++;
    return bsearch(type_name, model->msgs, model->n_msgs, sizeof(qg_msg), qg_msg_key_cmp);
}

/* ---- comments ---- */

static const Google__Protobuf__SourceCodeInfo__Location *
qg_find_location(const qg_file_desc *fd, const int32_t *path, size_t n)
{
    if (fd->source_code_info == NULL)
        return NULL;
    for (size_t i = 0; i < fd->source_code_info->n_location; i++) {
        const Google__Protobuf__SourceCodeInfo__Location *loc = fd->source_code_info->location[i];
        if (loc->n_path == n && memcmp(loc->path, path, n * sizeof(int32_t)) == 0)
            return loc;
    }
    return NULL;
}

/* Run the annotation scanner on every comment attached to one element. */
static void qg_read_comments(qg_model *model, const char *where, qg_annot_ctx ctx,
                             const Google__Protobuf__SourceCodeInfo__Location *loc,
                             unsigned *flags, qg_service_annots *sa, const char **comment)
{
    if (loc == NULL)
        return;
    qg_scan_annotations(model, where, ctx, loc->leading_comments, flags, sa);
    qg_scan_annotations(model, where, ctx, loc->trailing_comments, flags, sa);
    for (size_t i = 0; i < loc->n_leading_detached_comments; i++)
        qg_check_detached_comment(model, where, loc->leading_detached_comments[i]);
    if (comment != NULL)
        *comment = loc->leading_comments;
}

/* ---- services ---- */

static void qg_build_method(qg_model *model, qg_service *svc, size_t si, size_t mi)
{
    const qg_file *file = svc->file;
    const qg_method_desc *d = svc->desc->method[mi];
    qg_method *m = &svc->methods[mi];
    m->desc = d;
    m->name = qg_str(d->name);
    char *where = qg_printf("%s: service %s, method %s", file->name, svc->full_name, m->name);

    int cs = d->has_client_streaming && d->client_streaming;
    int ss = d->has_server_streaming && d->server_streaming;
    if (cs || ss)
        qg_error(model, "%s: %s methods are not supported: actor methods are unary; publish "
                 "events with actor event streams instead", where,
                 cs && ss ? "bidirectional-streaming (bidi)"
                          : cs ? "client-streaming" : "server-streaming");

    if (qg_is_reserved_c_name(m->name))
        qg_error(model, "%s: the method name '%s' is a C keyword or standard macro and cannot "
                 "name a member of the %s_methods table; rename the method", where, m->name,
                 svc->prefix);

    m->input = qg_find_msg(model, d->input_type);
    m->output = qg_find_msg(model, d->output_type);
    const qg_msg *io[2] = {m->input, m->output};
    const char *io_type[2] = {d->input_type, d->output_type};
    for (int k = 0; k < 2; k++) {
        if (io[k] == NULL)
            qg_error(model, "%s: %s type '%s' not found in the request", where,
                     k == 0 ? "request" : "reply", qg_str(io_type[k]));
        else if (io[k]->file->no_generate)
            qg_error(model, "%s: %s type %s is declared in %s, which sets "
                     "(pb_c_file).no_generate, so protoc-c generates no C type for it", where,
                     k == 0 ? "request" : "reply", io[k]->full_name, io[k]->file->name);
    }

    int32_t path[4] = {QG_FILE_SERVICE_FIELD, (int32_t)si, QG_SERVICE_METHOD_FIELD, (int32_t)mi};
    qg_read_comments(model, where, QG_ANNOT_METHOD, qg_find_location(file->desc, path, 4),
                     &m->flags, NULL, &m->comment);
}

static void qg_build_services(qg_model *model, qg_file *file)
{
    const qg_file_desc *fd = file->desc;
    file->n_services = fd->n_service;
    file->services = qg_alloc((fd->n_service + 1) * sizeof(qg_service));
    for (size_t si = 0; si < fd->n_service; si++) {
        qg_service *svc = &file->services[si];
        svc->desc = fd->service[si];
        svc->file = file;
        svc->name = qg_str(svc->desc->name);
        svc->full_name = *file->package != '\0' ? qg_printf("%s.%s", file->package, svc->name)
                                                : svc->name;
        svc->prefix = qg_service_prefix(file->package, svc->name);
        char *where = qg_printf("%s: service %s", file->name, svc->full_name);
        int32_t path[2] = {QG_FILE_SERVICE_FIELD, (int32_t)si};
        qg_service_annots sa = {0};
        unsigned unused_flags = 0;
        qg_read_comments(model, where, QG_ANNOT_SERVICE, qg_find_location(fd, path, 2),
                         &unused_flags, &sa, &svc->comment);
        const char *type_name = sa.type_name;
        if (sa.state != NULL) {
            /* Relative to the package (as protoc resolves names), or fully
             * qualified. */
            if (*file->package != '\0')
                svc->state = qg_find_msg(model, qg_printf(".%s.%s", file->package, sa.state));
            if (svc->state == NULL)
                svc->state = qg_find_msg(model, qg_printf(".%s", sa.state));
            if (svc->state == NULL)
                qg_error(model, "%s: '@quark.state %s': no message %s in package '%s' nor "
                         "with that full name in this file or its imports", where, sa.state,
                         sa.state, file->package);
            else if (svc->state->file->no_generate)
                qg_error(model, "%s: '@quark.state %s': it is declared in %s, which sets "
                         "(pb_c_file).no_generate", where, sa.state, svc->state->file->name);
        }
        svc->type_name_overridden = type_name != NULL;
        svc->type_name = type_name != NULL ? type_name : svc->full_name;
        if (strlen(svc->type_name) > QUARK_TYPE_NAME_MAX)
            qg_error(model, "%s: the actor type name '%s' is longer than %d characters; "
                     "set a shorter one with '@quark.type_name <name>'", where,
                     svc->type_name, QUARK_TYPE_NAME_MAX);

        svc->n_methods = svc->desc->n_method;
        svc->methods = qg_alloc((svc->n_methods + 1) * sizeof(qg_method));
        for (size_t mi = 0; mi < svc->n_methods; mi++)
            qg_build_method(model, svc, si, mi);
    }
}

/* ---- checks across services ---- */

static void qg_check_type_names(qg_model *model)
{
    const qg_service **all = NULL;
    size_t n = 0;
    for (size_t f = 0; f < model->n_files; f++)
        n += model->files[f].generate ? model->files[f].n_services : 0;
    all = qg_alloc((n + 1) * sizeof(*all));
    n = 0;
    for (size_t f = 0; f < model->n_files; f++)
        if (model->files[f].generate)
            for (size_t s = 0; s < model->files[f].n_services; s++)
                all[n++] = &model->files[f].services[s];
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(all[i]->type_name, all[j]->type_name) != 0)
                continue;
            qg_error(model, "%s: service %s: services %s (%s) and %s (%s) both map to the "
                     "actor type name '%s'; each service needs its own type name: change "
                     "or remove the @quark.type_name annotation", all[i]->file->name,
                     all[i]->full_name, all[j]->full_name, all[j]->file->name,
                     all[i]->full_name, all[i]->file->name, all[i]->type_name);
            break; /* one report per service */
        }
    }
}

/* Mark in `seen` every message reachable from message index `start` through
 * message-typed fields (including itself). */
static void qg_reach(const qg_model *model, size_t start, unsigned char *seen, size_t *stack)
{
    size_t top = 0;
    if (seen[start])
        return;
    seen[start] = 1;
    stack[top++] = start;
    while (top > 0) {
        const qg_msg *m = &model->msgs[stack[--top]];
        for (size_t i = 0; i < m->desc->n_field; i++) {
            const Google__Protobuf__FieldDescriptorProto *f = m->desc->field[i];
            if (!f->has_type || (f->type != GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE &&
                                 f->type != GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_GROUP))
                continue;
            const qg_msg *t = qg_find_msg(model, f->type_name);
            if (t == NULL)
                continue;
            size_t ti = (size_t)(t - model->msgs);
            if (!seen[ti]) {
                seen[ti] = 1;
                stack[top++] = ti; /* each index is pushed at most once */
            }
        }
    }
}

typedef struct qg_use {
    const qg_service *svc;
    const qg_method *method;
    unsigned char *in_request;  /* per message: reachable from the request */
    unsigned char *in_reply;
} qg_use;

static void qg_check_proto3_optional(qg_model *model)
{
    size_t n_uses = 0;
    for (size_t f = 0; f < model->n_files; f++)
        if (model->files[f].generate)
            for (size_t s = 0; s < model->files[f].n_services; s++)
                n_uses += model->files[f].services[s].n_methods;
    qg_use *uses = qg_alloc((n_uses + 1) * sizeof(*uses));
    size_t *stack = qg_alloc((model->n_msgs + 1) * sizeof(*stack));
    unsigned char *reached = qg_alloc(model->n_msgs + 1);
    n_uses = 0;
    for (size_t f = 0; f < model->n_files; f++) {
        if (!model->files[f].generate)
            continue;
        for (size_t s = 0; s < model->files[f].n_services; s++) {
            const qg_service *svc = &model->files[f].services[s];
            for (size_t k = 0; k < svc->n_methods; k++) {
                qg_use *u = &uses[n_uses++];
                u->svc = svc;
                u->method = &svc->methods[k];
                u->in_request = qg_alloc(model->n_msgs + 1);
                u->in_reply = qg_alloc(model->n_msgs + 1);
                if (u->method->input != NULL)
                    qg_reach(model, (size_t)(u->method->input - model->msgs), u->in_request, stack);
                if (u->method->output != NULL)
                    qg_reach(model, (size_t)(u->method->output - model->msgs), u->in_reply, stack);
                for (size_t i = 0; i < model->n_msgs; i++)
                    reached[i] |= u->in_request[i] | u->in_reply[i];
            }
        }
    }
    for (size_t i = 0; i < model->n_msgs; i++) {
        const qg_msg *m = &model->msgs[i];
        if (!m->file->generate && !reached[i])
            continue;
        for (size_t k = 0; k < m->desc->n_field; k++) {
            const Google__Protobuf__FieldDescriptorProto *fld = m->desc->field[k];
            if (!(fld->has_proto3_optional && fld->proto3_optional))
                continue;
            qg_buf users = {0};
            for (size_t u = 0; u < n_uses; u++) {
                if (!uses[u].in_request[i] && !uses[u].in_reply[i])
                    continue;
                qg_buf_printf(&users, "%sservice %s, method %s (%s%s%s)",
                              users.len ? "; " : "", uses[u].svc->full_name,
                              uses[u].method->name,
                              uses[u].in_request[i] ? "in its request" : "",
                              uses[u].in_request[i] && uses[u].in_reply[i] ? " and " : "",
                              uses[u].in_reply[i] ? "in its reply" : "");
                if (uses[u].svc->file != m->file)
                    qg_buf_printf(&users, " of %s", uses[u].svc->file->name);
            }
            qg_error(model, "%s: message %s, field %s: proto3 'optional' fields are not "
                     "supported (protoc-c 1.4.1 cannot generate them); drop 'optional', or "
                     "declare the field inside a one-field oneof, or use a wrapper type such "
                     "as google.protobuf.Int32Value; %s%s", m->file->name, m->full_name,
                     qg_str(fld->name), users.len ? "used by " : "not used by any service",
                     qg_buf_str(&users));
        }
    }
}

typedef struct qg_ident {
    const char *id;
    const qg_service *svc;
    const qg_method *method;  /* NULL for per-service identifiers */
    const char *role;
    size_t order;
} qg_ident;

typedef struct qg_idents {
    qg_ident *v;
    size_t n, cap;
} qg_idents;

static void qg_ident_add(qg_idents *ids, const char *id, const qg_service *svc,
                         const qg_method *method, const char *role)
{
    if (ids->n == ids->cap) {
        size_t ncap = ids->cap ? ids->cap * 2 : 64;
        qg_ident *grown = qg_alloc(ncap * sizeof(*grown));
        if (ids->n > 0)
            memcpy(grown, ids->v, ids->n * sizeof(*grown));
        ids->v = grown;
        ids->cap = ncap;
    }
    ids->v[ids->n] = (qg_ident){id, svc, method, role, ids->n};
    ids->n++;
}

static int qg_ident_cmp(const void *a, const void *b)
{
    const qg_ident *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    if (c != 0)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

static char *qg_origin(const qg_ident *id)
{
    if (id->method != NULL)
        return qg_printf("service %s, method %s", id->svc->full_name, id->method->name);
    return qg_printf("service %s", id->svc->full_name);
}

/* Every file-scope identifier the generated .h and .c define must be unique
 * across the run. */
static void qg_check_identifiers(qg_model *model)
{
    qg_idents ids = {0};
    for (size_t f = 0; f < model->n_files; f++) {
        if (!model->files[f].generate)
            continue;
        for (size_t s = 0; s < model->files[f].n_services; s++) {
            const qg_service *svc = &model->files[f].services[s];
            const char *P = svc->prefix;
            qg_ident_add(&ids, qg_printf("%s_TYPE_NAME", P), svc, NULL, "its type name macro");
            qg_ident_add(&ids, qg_printf("%s_interface", P), svc, NULL, "its interface descriptor");
            qg_ident_add(&ids, qg_printf("%s_methods", P), svc, NULL, "its method table type");
            qg_ident_add(&ids, qg_printf("%s_METHOD_COUNT", P), svc, NULL, "its method count");
            qg_ident_add(&ids, qg_printf("%s_ref", P), svc, NULL, "its reference helper");
            qg_ident_add(&ids, qg_printf("%s_dispatch", P), svc, NULL, "its dispatcher");
            qg_ident_add(&ids, qg_printf("%s_method_descs", P), svc, NULL, "its method descriptors");
            for (size_t k = 0; k < svc->n_methods; k++) {
                const qg_method *m = &svc->methods[k];
                const char *M = m->name;
                qg_ident_add(&ids, qg_printf("%s_%s_METHOD", P, M), svc, m, "its method index");
                qg_ident_add(&ids, qg_printf("%s_%s", P, M), svc, m, "its blocking proxy");
                qg_ident_add(&ids, qg_printf("%s_%s_reply", P, M), svc, m, "its deferred-reply helper");
                qg_ident_add(&ids, qg_printf("%s_%s_cb", P, M), svc, m, "its callback type");
                qg_ident_add(&ids, qg_printf("%s_%s_async", P, M), svc, m, "its asynchronous proxy");
                qg_ident_add(&ids, qg_printf("%s_%s_trampoline", P, M), svc, m, "its callback trampoline");
            }
        }
    }
    if (ids.n == 0)
        return;
    qsort(ids.v, ids.n, sizeof(qg_ident), qg_ident_cmp);
    qg_buf reported = {0}; /* "\n<origin a>|<origin b>\n...": pairs already reported */
    qg_buf_putc(&reported, '\n');
    for (size_t i = 0; i < ids.n;) {
        size_t j = i + 1;
        while (j < ids.n && strcmp(ids.v[j].id, ids.v[i].id) == 0)
            j++;
        for (size_t k = i + 1; k < j; k++) {
            const qg_ident *a = &ids.v[i], *b = &ids.v[k];
            char *oa = qg_origin(a), *ob = qg_origin(b);
            char *key = qg_printf("\n%s|%s\n", oa, ob);
            if (strstr(qg_buf_str(&reported), key) != NULL)
                continue;
            qg_buf_puts(&reported, key + 1);
            char *other = a->svc->file != b->svc->file
                              ? qg_printf("%s of %s", oa, a->svc->file->name) : oa;
            qg_error(model, "%s: %s: the generated C identifier '%s' (%s) is also generated for "
                     "%s (%s); rename the %s so that every generated name is unique",
                     b->svc->file->name, ob, b->id, b->role, other, a->role,
                     b->method != NULL ? "method" : "service or package");
        }
        i = j;
    }
}

/* ---- the model ---- */

static int qg_in_list(const char *name, size_t n, char *const *list)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, list[i]) == 0)
            return 1;
    return 0;
}

size_t qg_model_build(qg_model *model, const Google__Protobuf__Compiler__CodeGeneratorRequest *req)
{
    memset(model, 0, sizeof(*model));
    model->n_files = req->n_proto_file;
    model->files = qg_alloc((req->n_proto_file + 1) * sizeof(qg_file));
    size_t msg_cap = 0;
    for (size_t i = 0; i < req->n_proto_file; i++) {
        qg_file *f = &model->files[i];
        f->desc = req->proto_file[i];
        f->name = qg_str(f->desc->name);
        f->package = qg_str(f->desc->package);
        const ProtobufCMessage *opts = f->desc->options != NULL ? &f->desc->options->base : NULL;
        qg_pb_c_opt cpkg = qg_pb_c_option(opts, QG_PB_C_FILE_C_PACKAGE);
        if (cpkg.found)
            f->c_package = qg_strndup((const char *)cpkg.bytes, cpkg.len);
        f->no_generate = qg_pb_c_option(opts, QG_PB_C_FILE_NO_GENERATE).varint != 0;
        f->generate = qg_in_list(f->name, req->n_file_to_generate, req->file_to_generate);
        qg_add_messages(model, f, f->package, f->desc->n_message_type, f->desc->message_type,
                        &msg_cap);
    }
    if (model->n_msgs > 0)
        qsort(model->msgs, model->n_msgs, sizeof(qg_msg), qg_msg_cmp);

    for (size_t i = 0; i < model->n_files; i++)
        if (model->files[i].generate)
            qg_build_services(model, &model->files[i]);

    qg_check_type_names(model);
    qg_check_proto3_optional(model);
    qg_check_identifiers(model);
    return model->n_errors;
}
