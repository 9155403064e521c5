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

static const char *qg_flags_expr(unsigned flags)
{
    if ((flags & QUARK_METHOD_READ_ONLY) && (flags & QUARK_METHOD_IDEMPOTENT))
        return "QUARK_METHOD_READ_ONLY | QUARK_METHOD_IDEMPOTENT";
    if (flags & QUARK_METHOD_READ_ONLY)
        return "QUARK_METHOD_READ_ONLY";
    if (flags & QUARK_METHOD_IDEMPOTENT)
        return "QUARK_METHOD_IDEMPOTENT";
    return "0u";
}

static const char *qg_flags_words(unsigned flags)
{
    if ((flags & QUARK_METHOD_READ_ONLY) && (flags & QUARK_METHOD_IDEMPOTENT))
        return " [read-only, idempotent]";
    if (flags & QUARK_METHOD_READ_ONLY)
        return " [read-only]";
    if (flags & QUARK_METHOD_IDEMPOTENT)
        return " [idempotent]";
    return "";
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
            qg_buf_printf(c, "\",\n     &%s,\n     &%s,\n     %s},\n", m->input->c_descriptor,
                          m->output->c_descriptor, qg_flags_expr(m->flags));
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
    qg_buf_printf(c, "#include \"%s.quark.h\"\n\n", stem);
    if (file->n_services == 0)
        qg_buf_printf(c, "/* %s declares no service: there is nothing to generate. */\n",
                      file->name);
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
