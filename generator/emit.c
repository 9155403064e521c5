/*
 * generator/emit.c - writes foo.quark.h and foo.quark.c for one .proto file
 * of the model: per service the type name macro, method numbers, the
 * server-side method table and deferred-reply helpers, the interface
 * descriptor with its dispatcher, and the typed client proxies (blocking and
 * asynchronous). The API it targets is include/quark/interface.h and
 * include/quark/client.h.
 */
#include <string.h>

#include "emit.h"
#include "quark/interface.h"
#include "quark/version.h"

/* Write `comment` (a .proto comment) as a C block comment, indented by
 * `indent`, so that nothing inside it can end the block early. */
static void qg_emit_comment(qg_buf *b, const char *indent, const char *comment)
{
    if (comment == NULL)
        return;
    /* skip comments that are only blank lines */
    const char *p = comment;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p == '\0')
        return;
    const char *first_text = p;
    /* up to the last line with text */
    size_t len = strlen(comment);
    while (len > 0 && (comment[len - 1] == ' ' || comment[len - 1] == '\t' ||
                       comment[len - 1] == '\n' || comment[len - 1] == '\r'))
        len--;
    const char *last = comment + len;
    qg_buf_printf(b, "%s/*\n", indent);
    /* from the first line with text */
    p = comment;
    for (const char *q = comment; *q != '\0' && q < first_text; q++)
        if (*q == '\n')
            p = q + 1;
    while (p < last) {
        const char *end = strchr(p, '\n');
        if (end == NULL || end > last)
            end = last;
        size_t n = (size_t)(end - p);
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r'))
            n--;
        qg_buf_printf(b, "%s *", indent);
        for (size_t i = 0; i < n; i++) {
            qg_buf_putc(b, p[i]);
            /* break up comment delimiters, and "??" (trigraphs of strict C) */
            if (i + 1 < n && ((p[i] == '*' && p[i + 1] == '/') ||
                              (p[i] == '/' && p[i + 1] == '*') ||
                              (p[i] == '?' && p[i + 1] == '?')))
                qg_buf_putc(b, ' ');
        }
        qg_buf_putc(b, '\n');
        p = *end == '\n' ? end + 1 : end;
    }
    qg_buf_printf(b, "%s */\n", indent);
}

static const struct {
    unsigned flag;
    const char *expr, *word;
} qg_flag_names[] = {
    {QUARK_METHOD_READ_ONLY, "QUARK_METHOD_READ_ONLY", "read-only"},
    {QUARK_METHOD_IDEMPOTENT, "QUARK_METHOD_IDEMPOTENT", "idempotent"},
    {QUARK_METHOD_WRITE_BEHIND, "QUARK_METHOD_WRITE_BEHIND", "write-behind"},
};

/* "QUARK_METHOD_A | QUARK_METHOD_B", or "0u". */
static const char *qg_flags_expr(unsigned flags)
{
    const char *out = "";
    for (size_t i = 0; i < sizeof qg_flag_names / sizeof qg_flag_names[0]; i++)
        if (flags & qg_flag_names[i].flag)
            out = qg_printf("%s%s%s", out, *out ? " | " : "", qg_flag_names[i].expr);
    return *out ? out : "0u";
}

/* " [read-only, idempotent]", or "". */
static const char *qg_flags_words(unsigned flags)
{
    const char *out = "";
    for (size_t i = 0; i < sizeof qg_flag_names / sizeof qg_flag_names[0]; i++)
        if (flags & qg_flag_names[i].flag)
            out = qg_printf("%s%s%s", out, *out ? ", " : "", qg_flag_names[i].word);
    return *out ? qg_printf(" [%s]", out) : "";
}

/* Write a declarator "head(params...)tail", wrapping the parameters at
 * about 90 columns, aligned after '(' (or indented by 4 when the head is
 * long). */
static void qg_decl(qg_buf *b, const char *indent, const char *head, size_t n,
                    const char *const *params, const char *tail)
{
    size_t col = strlen(indent) + strlen(head) + 1;
    qg_buf_printf(b, "%s%s(", indent, head);
    if (col > 48) {
        qg_buf_printf(b, "\n%s    ", indent);
        col = strlen(indent) + 4;
    }
    size_t line = col;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(params[i]) + 1 + (i + 1 == n ? strlen(tail) : 0);
        if (i > 0) {
            if (line + 1 + len > 90) {
                qg_buf_printf(b, ",\n%*s", (int)col, "");
                line = col;
            } else {
                qg_buf_puts(b, ", ");
                line += 2;
            }
        }
        qg_buf_puts(b, params[i]);
        line += strlen(params[i]);
    }
    qg_buf_printf(b, ")%s\n", tail);
}

/* ---- header ---- */

static void qg_emit_service_header(qg_buf *h, const qg_service *svc)
{
    const char *P = svc->prefix;
    qg_buf_printf(h, "/* ==== service %s ==== */\n\n", svc->full_name);
    qg_emit_comment(h, "", svc->comment);

    qg_buf_printf(h, "/* Actor type name sent on the wire (%s). */\n",
                  svc->type_name_overridden ? "set by @quark.type_name"
                                            : "the fully qualified service name");
    qg_buf_printf(h, "#define %s_TYPE_NAME \"", P);
    qg_c_escape(h, svc->type_name);
    qg_buf_puts(h, "\"\n\n");

    qg_buf_printf(h,
                  "/* The interface: implement it with a %s_methods table and\n"
                  " * QUARK_ACTOR_TYPE(..., .interface = &%s_interface, ...). */\n"
                  "extern const quark_interface %s_interface;\n\n",
                  P, P, P);

    qg_buf_printf(h, "/* Method numbers: indexes into %s_interface.methods. */\nenum {\n", P);
    for (size_t i = 0; i < svc->n_methods; i++)
        qg_buf_printf(h, "    %s_%s_METHOD = %zu,\n", P, svc->methods[i].name, i);
    qg_buf_printf(h, "    %s_METHOD_COUNT = %zu\n};\n\n", P, svc->n_methods);

    qg_buf_printf(h,
                  "/* ---- server side ---- */\n\n"
                  "/* The implementation's methods. Each one fills *reply and returns\n"
                  " * QUARK_OK, fails (return quark_actor_fail(...)), or defers: it takes\n"
                  " * quark_actor_defer(), returns QUARK_PENDING and later answers with\n"
                  " * %s_<Method>_reply(). A NULL entry answers QUARK_EUNIMPLEMENTED. */\n"
                  "typedef struct %s_methods {\n",
                  P, P);
    if (svc->n_methods == 0)
        qg_buf_puts(h, "    char quark__no_methods; /* the service declares no rpc */\n");
    for (size_t i = 0; i < svc->n_methods; i++) {
        const qg_method *m = &svc->methods[i];
        if (i > 0)
            qg_buf_putc(h, '\n');
        qg_emit_comment(h, "    ", m->comment);
        qg_buf_printf(h, "    /* rpc %s(%s) returns (%s)%s */\n", m->name, m->input->full_name,
                      m->output->full_name, qg_flags_words(m->flags));
        const char *params[] = {"quark_actor *self", qg_printf("const %s *req", m->input->c_type),
                                qg_printf("%s *reply", m->output->c_type)};
        qg_decl(h, "    ", qg_printf("quark_err (*%s)", m->name), 3, params, ";");
    }
    qg_buf_printf(h, "} %s_methods;\n", P);

    for (size_t i = 0; i < svc->n_methods; i++) {
        const qg_method *m = &svc->methods[i];
        qg_buf_printf(h, "\n/* Answer a %s call deferred with quark_actor_defer(). */\n", m->name);
        const char *params[] = {"quark_deferred *call",
                                qg_printf("const %s *reply", m->output->c_type)};
        qg_decl(h, "", qg_printf("static inline quark_err %s_%s_reply", P, m->name), 2, params,
                "");
        qg_buf_printf(h, "{\n    return quark_reply(call, reply != NULL ? &reply->%s : NULL);\n}\n",
                      m->output->base_field);
    }

    if (svc->state != NULL) {
        const qg_msg *st = svc->state;
        qg_buf_printf(h,
                      "\n/* The persistent state of implementations that keep one (@quark.state\n"
                      " * %s; docs/storage.md): give .persistent = %s_STATE in their\n"
                      " * QUARK_ACTOR_TYPE, then read and change it through %s_state(self)\n"
                      " * and say so with quark_actor_state_changed(self). */\n"
                      "#define %s_STATE (&%s)\n"
                      "static inline %s *%s_state(quark_actor *self)\n"
                      "{\n"
                      "    ProtobufCMessage *m = quark_actor_persistent(self);\n"
                      "    return m != NULL && m->descriptor == %s_STATE ? (%s *)m : NULL;\n"
                      "}\n",
                      st->full_name, P, P, P, st->c_descriptor, st->c_type, P, P, st->c_type);
    }

    qg_buf_printf(h,
                  "\n/* ---- client side ---- */\n\n"
                  "/* A reference to the actor `id` of type %s_TYPE_NAME (free it with\n"
                  " * quark_ref_free). */\n",
                  P);
    const char *ref_params[] = {"quark_client *client", "const char *id", "quark_ref **out"};
    qg_decl(h, "", qg_printf("static inline quark_err %s_ref", P), 3, ref_params, "");
    qg_buf_printf(h, "{\n    return quark_ref_new(client, &%s_interface, NULL, id, out);\n}\n", P);

    for (size_t i = 0; i < svc->n_methods; i++) {
        const qg_method *m = &svc->methods[i];
        const char *M = m->name;
        const char *req = qg_printf("const %s *req", m->input->c_type);
        qg_buf_printf(h,
                      "\n/* %s, blocking: on success *reply (unless reply is NULL) receives the\n"
                      " * reply, to free with quark_msg_free(). A NULL req gives QUARK_EINVAL. */\n",
                      M);
        const char *call_params[] = {"quark_ref *ref", req,
                                     qg_printf("%s **reply", m->output->c_type)};
        qg_decl(h, "", qg_printf("quark_err %s_%s", P, M), 3, call_params, ";");
        qg_buf_printf(h,
                      "/* %s, asynchronous: cb runs exactly once, on a Quark thread (the reply\n"
                      " * is borrowed until it returns), unless this returns an error. A NULL\n"
                      " * req or cb gives QUARK_EINVAL. */\n",
                      M);
        const char *cb_params[] = {"quark_err err", "const char *errmsg",
                                   qg_printf("const %s *reply", m->output->c_type), "void *arg"};
        qg_decl(h, "", qg_printf("typedef void (*%s_%s_cb)", P, M), 4, cb_params, ";");
        const char *async_params[] = {"quark_ref *ref", req, qg_printf("%s_%s_cb cb", P, M),
                                      "void *arg"};
        qg_decl(h, "", qg_printf("quark_err %s_%s_async", P, M), 4, async_params, ";");
    }
    qg_buf_putc(h, '\n');
}

static void qg_emit_header(const qg_file *file, qg_buf *h)
{
    const char *stem = qg_strip_proto(file->name);
    const char *guard = qg_printf("QUARK_GEN_%s_QUARK_H", qg_file_identifier(stem));
    qg_buf_printf(h, "/* Generated by protoc-gen-quark from %s. DO NOT EDIT. */\n", file->name);
    qg_buf_printf(h,
                  "/*\n"
                  " * Quark actor interfaces of the services of %s: per service an\n"
                  " * interface descriptor, a method table to implement and typed client\n"
                  " * proxies (see quark/interface.h). The messages are protoc-c's.\n"
                  " */\n",
                  file->name);
    qg_buf_printf(h, "#ifndef %s\n#define %s\n\n", guard, guard);
    qg_buf_printf(h, "#include <quark/quark.h>\n\n#include \"%s.pb-c.h\"\n\n", stem);
    qg_buf_printf(h,
                  "#if QUARK_GEN_ABI != %d\n"
                  "#error \"%s.quark.h was generated for another Quark version: regenerate it "
                  "with this Quark's protoc-gen-quark\"\n"
                  "#endif\n\n",
                  QUARK_GEN_ABI, stem);
    qg_buf_puts(h, "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    if (file->n_services == 0)
        qg_buf_printf(h, "/* %s declares no service: there is nothing to generate. */\n\n",
                      file->name);
    for (size_t s = 0; s < file->n_services; s++)
        qg_emit_service_header(h, &file->services[s]);
    qg_buf_puts(h, "#ifdef __cplusplus\n}\n#endif\n");
    qg_buf_printf(h, "#endif /* %s */\n", guard);
}


/* ---- fast codecs for simple messages ---- */

typedef Google__Protobuf__FieldDescriptorProto qg_field;

/* A message gets generated size/pack/unpack functions when it is "simple":
 * proto3, and only singular scalar fields without explicit presence. */
static int qg_msg_is_simple(const qg_msg *m)
{
    const qg_file_desc *fd = m->file->desc;
    if (fd->syntax == NULL || strcmp(fd->syntax, "proto3") != 0)
        return 0;
    for (size_t i = 0; i < m->desc->n_field; i++) {
        const qg_field *f = m->desc->field[i];
        if (f->label != GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_OPTIONAL)
            return 0;
        if (f->has_oneof_index || (f->has_proto3_optional && f->proto3_optional))
            return 0;
        if (!f->has_number || f->number <= 0)
            return 0;
        if (qg_is_reserved_c_name(f->name))
            return 0; /* protoc-c renames it: leave it to protobuf-c */
        switch (f->type) {
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT32:
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT64:
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT32:
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT64:
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT32:
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT64:
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BOOL:
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_ENUM:
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED32:
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED64:
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED32:
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED64:
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FLOAT:
        case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_DOUBLE:
            break;
        default:
            return 0;
        }
    }
    return 1;
}

static const char *qg_codec_name(const qg_msg *m)
{
    return qg_printf("quark__fc_%s", m->c_type);
}

/* protoc-c's member name of a field: the name in lower case. */
static const char *qg_field_c_name(const qg_field *f)
{
    char *n = qg_strdup(f->name);
    for (char *p = n; *p != '\0'; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return n;
}

static unsigned qg_wire_type(const qg_field *f)
{
    switch (f->type) {
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED64:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED64:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_DOUBLE:
        return 1;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED32:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED32:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FLOAT:
        return 5;
    default:
        return 0;
    }
}

static size_t qg_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* The fields sorted by number (protoc-c packs in that order). */
static const qg_field **qg_sorted_fields(const qg_msg *m)
{
    size_t n = m->desc->n_field;
    const qg_field **v = qg_alloc((n ? n : 1) * sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        const qg_field *f = m->desc->field[i];
        size_t j = i;
        while (j > 0 && v[j - 1]->number > f->number) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = f;
    }
    return v;
}

/* For a varint field: the expression of its uint64_t wire value. */
static const char *qg_varint_expr(const qg_field *f, const char *x)
{
    switch (f->type) {
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT32:
        return qg_printf("(uint64_t)(int64_t)%s", x);
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_ENUM:
        return qg_printf("(uint64_t)(int64_t)(int32_t)%s", x);
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT32:
        return qg_printf("(uint64_t)(((uint32_t)%s << 1) ^ (0u - ((uint32_t)%s >> 31)))", x, x);
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT64:
        return qg_printf("(((uint64_t)%s << 1) ^ (0u - ((uint64_t)%s >> 63)))", x, x);
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BOOL:
        return "(uint64_t)1";
    default: /* int64, uint32, uint64 */
        return qg_printf("(uint64_t)%s", x);
    }
}

/* The expression of a fixed field's bits (uint32_t or uint64_t). */
static const char *qg_fixed_expr(const qg_field *f, const char *x)
{
    switch (f->type) {
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FLOAT:
        return qg_printf("quark__fc_f2u(%s)", x);
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_DOUBLE:
        return qg_printf("quark__fc_d2u(%s)", x);
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED64:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED64:
        return qg_printf("(uint64_t)%s", x);
    default:
        return qg_printf("(uint32_t)%s", x);
    }
}

/* proto3: a field is written unless it holds its default. Like protobuf-c,
 * float and double compare by value: -0.0 is not written, NaN is. */
static const char *qg_nonzero_cond(const qg_field *f, const char *x)
{
    if (f->type == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FLOAT ||
        f->type == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_DOUBLE)
        return qg_printf("%s != 0", x);
    if (qg_wire_type(f) != 0)
        return qg_printf("%s != 0", qg_fixed_expr(f, x));
    return qg_printf("%s != 0", x);
}

/* The helpers the codecs use live in a real header (quark/fastcodec.h):
 * static inline functions of a header that go unused draw no warning. */
static void qg_emit_codec_support(qg_buf *c)
{
    qg_buf_puts(c, "/* ---- fast codecs of simple messages (see quark_method_desc) ---- */\n\n"
                   "#include <quark/fastcodec.h>\n\n");
}

static void qg_emit_codec(qg_buf *c, const qg_msg *m)
{
    const char *F = qg_codec_name(m);
    const char *T = m->c_type;
    size_t n = m->desc->n_field;
    const qg_field **fs = qg_sorted_fields(m);

    qg_buf_printf(c, "/* %s */\n", m->full_name);
    /* size */
    qg_buf_printf(c, "static size_t %s_size(const void *msg)\n{\n", F);
    if (n == 0) {
        qg_buf_puts(c, "    (void)msg;\n    return 0;\n}\n\n");
    } else {
        qg_buf_printf(c, "    const %s *m = (const %s *)msg;\n    size_t n = 0;\n", T, T);
        for (size_t i = 0; i < n; i++) {
            const qg_field *f = fs[i];
            const char *x = qg_printf("m->%s", qg_field_c_name(f));
            unsigned wt = qg_wire_type(f);
            size_t tl = qg_varint_len((uint64_t)f->number << 3 | wt);
            if (wt == 0)
                qg_buf_printf(c, "    if (%s)\n        n += %zu + quark__fc_vsize(%s);\n",
                              qg_nonzero_cond(f, x), tl, qg_varint_expr(f, x));
            else
                qg_buf_printf(c, "    if (%s)\n        n += %zu;\n", qg_nonzero_cond(f, x),
                              tl + (wt == 1 ? 8 : 4));
        }
        qg_buf_puts(c, "    return n;\n}\n\n");
    }
    /* pack */
    qg_buf_printf(c, "static size_t %s_pack(const void *msg, uint8_t *out)\n{\n", F);
    if (n == 0) {
        qg_buf_puts(c, "    (void)msg;\n    (void)out;\n    return 0;\n}\n\n");
    } else {
        qg_buf_printf(c, "    const %s *m = (const %s *)msg;\n    uint8_t *o = out;\n", T, T);
        for (size_t i = 0; i < n; i++) {
            const qg_field *f = fs[i];
            const char *x = qg_printf("m->%s", qg_field_c_name(f));
            unsigned wt = qg_wire_type(f);
            uint64_t key = (uint64_t)f->number << 3 | wt;
            qg_buf_printf(c, "    if (%s) {\n        o = quark__fc_put_varint(o, %lluu);\n",
                          qg_nonzero_cond(f, x), (unsigned long long)key);
            if (wt == 0)
                qg_buf_printf(c, "        o = quark__fc_put_varint(o, %s);\n",
                              qg_varint_expr(f, x));
            else
                qg_buf_printf(c, "        o = quark__fc_put%s(o, %s);\n", wt == 1 ? "64" : "32",
                              qg_fixed_expr(f, x));
            qg_buf_puts(c, "    }\n");
        }
        qg_buf_puts(c, "    return (size_t)(o - out);\n}\n\n");
    }
    /* unpack */
    qg_buf_printf(c, "static int %s_unpack(void *msg, const uint8_t *p, size_t len)\n{\n", F);
    if (n == 0)
        qg_buf_puts(c, "    (void)msg;\n");
    else
        qg_buf_printf(c, "    %s *m = (%s *)msg;\n", T, T);
    qg_buf_puts(c,
                "    const uint8_t *end = len != 0 ? p + len : p;\n"
                "    while (p != end) {\n"
                "        uint64_t key;\n"
                "        p = quark__fc_varint(p, end, &key, NULL);\n"
                "        if (p == NULL || (key >> 3) == 0 || (key >> 3) > 0x1fffffffu)\n"
                "            return -1;\n");
    if (n > 0) {
        int has_varint = 0;
        for (size_t i = 0; i < n; i++)
            has_varint |= qg_wire_type(fs[i]) == 0;
        if (has_varint)
            qg_buf_puts(c, "        uint64_t v;\n        int nz;\n");
        qg_buf_puts(c, "        switch (key) {\n");
        for (size_t i = 0; i < n; i++) {
            const qg_field *f = fs[i];
            const char *x = qg_printf("m->%s", qg_field_c_name(f));
            unsigned wt = qg_wire_type(f);
            uint64_t key = (uint64_t)f->number << 3 | wt;
            qg_buf_printf(c, "        case %lluu:\n", (unsigned long long)key);
            if (wt == 0) {
                qg_buf_puts(c, "            p = quark__fc_varint(p, end, &v, &nz);\n"
                               "            if (p == NULL)\n"
                               "                return -1;\n");
                const char *val;
                switch (f->type) {
                case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT32:
                case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_ENUM:
                    val = "(int32_t)(uint32_t)v";
                    break;
                case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT32:
                    val = "(uint32_t)v";
                    break;
                case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT64:
                    val = "(int64_t)v";
                    break;
                case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT32:
                    val = "(int32_t)(((uint32_t)v >> 1) ^ (0u - ((uint32_t)v & 1u)))";
                    break;
                case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT64:
                    val = "(int64_t)((v >> 1) ^ (0u - (v & 1u)))";
                    break;
                case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BOOL:
                    val = "nz ? 1 : 0";
                    break;
                default:
                    val = "v";
                    break;
                }
                qg_buf_printf(c, "            %s = %s;\n", x, val);
            } else {
                const char *get = wt == 1 ? "quark__fc_get64(p)" : "quark__fc_get32(p)";
                const char *val;
                switch (f->type) {
                case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FLOAT:
                    val = qg_printf("quark__fc_u2f(%s)", get);
                    break;
                case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_DOUBLE:
                    val = qg_printf("quark__fc_u2d(%s)", get);
                    break;
                case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED32:
                    val = qg_printf("(int32_t)%s", get);
                    break;
                case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED64:
                    val = qg_printf("(int64_t)%s", get);
                    break;
                default:
                    val = get;
                    break;
                }
                qg_buf_printf(c,
                              "            if (end - p < %d)\n"
                              "                return -1;\n"
                              "            %s = %s;\n"
                              "            p += %d;\n",
                              wt == 1 ? 8 : 4, x, val, wt == 1 ? 8 : 4);
            }
            qg_buf_puts(c, "            break;\n");
        }
        qg_buf_puts(c, "        default:\n            switch (key >> 3) {\n");
        for (size_t i = 0; i < n; i++)
            qg_buf_printf(c, "            case %d:\n", fs[i]->number);
        qg_buf_puts(c,
                    "                return -1; /* a known field with the wrong wire type */\n"
                    "            default:\n"
                    "                break;\n"
                    "            }\n"
                    "            p = quark__fc_skip(p, end, (unsigned)(key & 7u));\n"
                    "            if (p == NULL)\n"
                    "                return -1;\n"
                    "            break;\n"
                    "        }\n");
    } else {
        qg_buf_puts(c,
                    "        p = quark__fc_skip(p, end, (unsigned)(key & 7u));\n"
                    "        if (p == NULL)\n"
                    "            return -1;\n");
    }
    qg_buf_puts(c, "    }\n    return 0;\n}\n\n");
}

/* The simple messages the methods of the file's services use, each once. */
static void qg_emit_codecs(qg_buf *c, const qg_file *file)
{
    size_t cap = 0, n = 0;
    for (size_t s = 0; s < file->n_services; s++)
        cap += 2 * file->services[s].n_methods;
    const qg_msg **done = qg_alloc((cap ? cap : 1) * sizeof(*done));
    for (size_t s = 0; s < file->n_services; s++) {
        const qg_service *svc = &file->services[s];
        for (size_t i = 0; i < svc->n_methods; i++) {
            const qg_msg *io[2] = {svc->methods[i].input, svc->methods[i].output};
            for (int k = 0; k < 2; k++) {
                if (!qg_msg_is_simple(io[k]))
                    continue;
                size_t j = 0;
                while (j < n && done[j] != io[k])
                    j++;
                if (j < n)
                    continue;
                if (n == 0)
                    qg_emit_codec_support(c);
                done[n++] = io[k];
                qg_emit_codec(c, io[k]);
            }
        }
    }
}

/* ---- source ---- */

static void qg_emit_service_source(qg_buf *c, const qg_service *svc)
{
    const char *P = svc->prefix;
    const char *dispatch_params[] = {"quark_actor *self", "const void *methods",
                                     "unsigned method", "const uint8_t *args",
                                     "size_t args_len"};
    const char *dispatch = qg_printf("static quark_err %s_dispatch", P);
    qg_buf_printf(c, "/* ==== service %s ==== */\n\n", svc->full_name);
    qg_decl(c, "", dispatch, 5, dispatch_params, ";");
    qg_buf_putc(c, '\n');

    if (svc->n_methods > 0) {
        qg_buf_printf(c, "static const quark_method_desc %s_method_descs[%s_METHOD_COUNT] = {\n",
                      P, P);
        for (size_t i = 0; i < svc->n_methods; i++) {
            const qg_method *m = &svc->methods[i];
            qg_buf_puts(c, "    {\"");
            qg_c_escape(c, m->name);
            qg_buf_printf(c, "\",\n     &%s,\n     &%s,\n     %s,\n", m->input->c_descriptor,
                          m->output->c_descriptor, qg_flags_expr(m->flags));
            if (qg_msg_is_simple(m->input)) {
                const char *F = qg_codec_name(m->input);
                qg_buf_printf(c, "     %s_size,\n     %s_pack,\n     %s_unpack,\n", F, F, F);
            } else {
                qg_buf_puts(c, "     NULL,\n     NULL,\n     NULL,\n");
            }
            if (qg_msg_is_simple(m->output)) {
                const char *F = qg_codec_name(m->output);
                qg_buf_printf(c, "     %s_size,\n     %s_pack,\n     %s_unpack},\n", F, F, F);
            } else {
                qg_buf_puts(c, "     NULL,\n     NULL,\n     NULL},\n");
            }
        }
        qg_buf_puts(c, "};\n\n");
    }

    qg_buf_printf(c, "const quark_interface %s_interface = {\n", P);
    qg_buf_printf(c, "    .abi = QUARK_GEN_ABI,\n    .name = %s_TYPE_NAME,\n    .proto_file = \"", P);
    qg_c_escape(c, svc->file->name);
    qg_buf_printf(c, "\",\n    .n_methods = %s_METHOD_COUNT,\n", P);
    if (svc->n_methods > 0)
        qg_buf_printf(c, "    .methods = %s_method_descs,\n", P);
    else
        qg_buf_puts(c, "    .methods = NULL,\n");
    qg_buf_printf(c,
                  "    .methods_table_size = sizeof(%s_methods),\n"
                  "    .dispatch = %s_dispatch,\n"
                  "};\n\n",
                  P, P);

    /* dispatcher: decode, call, encode; no string comparison */
    qg_decl(c, "", dispatch, 5, dispatch_params, "");
    qg_buf_printf(c, "{\n    const %s_methods *m = (const %s_methods *)methods;\n", P, P);
    if (svc->n_methods == 0)
        qg_buf_puts(c, "    (void)m;\n    (void)args;\n    (void)args_len;\n");
    else
        qg_buf_printf(c,
                      "    if (m == NULL)\n"
                      "        return quark__unimplemented(self, &%s_interface, method);\n",
                      P);
    qg_buf_puts(c, "    switch (method) {\n");
    for (size_t i = 0; i < svc->n_methods; i++) {
        const qg_method *m = &svc->methods[i];
        if (qg_msg_is_simple(m->input)) {
            qg_buf_printf(c,
                          "    case %s_%s_METHOD: {\n"
                          "        if (m->%s == NULL)\n"
                          "            return quark__unimplemented(self, &%s_interface, method);\n"
                          "        %s req = %s;\n"
                          "        if (%s_unpack(&req, args, args_len) != 0) {\n"
                          "            quark__bad_args(self, &%s, args_len);\n"
                          "            return quark__finish(self, QUARK_EBADARGS, NULL);\n"
                          "        }\n"
                          "        %s rep = %s;\n"
                          "        return quark__finish(self, (m->%s)(self, &req, &rep), &rep.%s);\n"
                          "    }\n",
                          P, m->name, m->name, P, m->input->c_type, m->input->c_init,
                          qg_codec_name(m->input), m->input->c_descriptor, m->output->c_type,
                          m->output->c_init, m->name, m->output->base_field);
            continue;
        }
        qg_buf_printf(c,
                      "    case %s_%s_METHOD: {\n"
                      "        if (m->%s == NULL)\n"
                      "            return quark__unimplemented(self, &%s_interface, method);\n"
                      "        %s *req =\n"
                      "            (%s *)quark__decode(self, &%s, args, args_len);\n"
                      "        if (req == NULL)\n"
                      "            return quark__finish(self, QUARK_EBADARGS, NULL);\n"
                      "        %s rep = %s;\n"
                      "        return quark__finish(self, (m->%s)(self, req, &rep), &rep.%s);\n"
                      "    }\n",
                      P, m->name, m->name, P, m->input->c_type, m->input->c_type,
                      m->input->c_descriptor, m->output->c_type, m->output->c_init, m->name,
                      m->output->base_field);
    }
    qg_buf_printf(c,
                  "    default:\n"
                  "        return quark__unimplemented(self, &%s_interface, method);\n"
                  "    }\n"
                  "}\n",
                  P);

    /* client proxies */
    for (size_t i = 0; i < svc->n_methods; i++) {
        const qg_method *m = &svc->methods[i];
        const char *M = m->name;
        const char *req = qg_printf("const %s *req", m->input->c_type);

        const char *call_params[] = {"quark_ref *ref", req,
                                     qg_printf("%s **reply", m->output->c_type)};
        qg_buf_putc(c, '\n');
        qg_decl(c, "", qg_printf("quark_err %s_%s", P, M), 3, call_params, "");
        qg_buf_printf(c,
                      "{\n"
                      "    if (req == NULL) {\n"
                      "        if (reply != NULL)\n"
                      "            *reply = NULL;\n"
                      "        return QUARK_EINVAL;\n"
                      "    }\n"
                      "    return quark_call(ref, &%s_interface, %s_%s_METHOD, &req->%s,\n"
                      "                      (ProtobufCMessage **)reply);\n"
                      "}\n",
                      P, P, M, m->input->base_field);

        const char *tramp_params[] = {"void (*fn)(void)", "quark_err err", "const char *errmsg",
                                      "const ProtobufCMessage *reply", "void *arg"};
        qg_buf_printf(c, "\n/* Calls the typed callback through its own type. */\n");
        qg_decl(c, "", qg_printf("static void %s_%s_trampoline", P, M), 5, tramp_params, "");
        qg_buf_printf(c, "{\n    ((%s_%s_cb)fn)(err, errmsg, (const %s *)reply, arg);\n}\n", P,
                      M, m->output->c_type);

        const char *async_params[] = {"quark_ref *ref", req, qg_printf("%s_%s_cb cb", P, M),
                                      "void *arg"};
        qg_buf_putc(c, '\n');
        qg_decl(c, "", qg_printf("quark_err %s_%s_async", P, M), 4, async_params, "");
        qg_buf_printf(c,
                      "{\n"
                      "    if (req == NULL || cb == NULL)\n"
                      "        return QUARK_EINVAL;\n"
                      "    return quark__call_async(ref, &%s_interface, %s_%s_METHOD, &req->%s,\n"
                      "                             %s_%s_trampoline, (void (*)(void))cb, arg);\n"
                      "}\n",
                      P, P, M, m->input->base_field, P, M);
    }
    qg_buf_putc(c, '\n');
}

static void qg_emit_source(const qg_file *file, qg_buf *c)
{
    const char *stem = qg_strip_proto(file->name);
    qg_buf_printf(c, "/* Generated by protoc-gen-quark from %s. DO NOT EDIT. */\n", file->name);
    qg_buf_printf(c, "#include \"%s.quark.h\"\n\n#include <string.h>\n\n", stem);
    if (file->n_services == 0)
        qg_buf_printf(c, "/* %s declares no service: there is nothing to generate. */\n",
                      file->name);
    qg_emit_codecs(c, file);
    for (size_t s = 0; s < file->n_services; s++)
        qg_emit_service_source(c, &file->services[s]);
}

void qg_emit_file(const qg_file *file, qg_emitted *out)
{
    const char *stem = qg_strip_proto(file->name);
    qg_buf h = {0}, c = {0};
    qg_emit_header(file, &h);
    qg_emit_source(file, &c);
    out->header_name = qg_printf("%s.quark.h", stem);
    out->header = qg_buf_str(&h);
    out->source_name = qg_printf("%s.quark.c", stem);
    out->source = qg_buf_str(&c);
}
