/*
 * generator/main.c - protoc-gen-quark's entry point: reads the
 * CodeGeneratorRequest protoc writes to stdin, builds and checks the service
 * model (model.c), emits foo.quark.h / foo.quark.c for every file to
 * generate (emit.c) and writes the CodeGeneratorResponse to stdout.
 *
 * Problems in the .proto files are reported the way protoc expects: in the
 * response's error field, with exit status 0 (protoc then prints them and
 * fails). Only a broken protocol (unreadable input, unwritable output) exits
 * non-zero.
 *
 *   protoc --plugin=protoc-gen-quark=PATH --quark_out=OUT --c_out=OUT foo.proto
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emit.h"
#include "model.h"
#include "quark/version.h"

typedef Google__Protobuf__Compiler__CodeGeneratorRequest qg_request;
typedef Google__Protobuf__Compiler__CodeGeneratorResponse qg_response;
typedef Google__Protobuf__Compiler__CodeGeneratorResponse__File qg_response_file;

static int qg_read_all(FILE *in, uint8_t **data, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    if (buf == NULL)
        return 0;
    for (;;) {
        if (n == cap) {
            uint8_t *grown = cap <= (size_t)-1 / 2 ? realloc(buf, cap * 2) : NULL;
            if (grown == NULL) {
                free(buf);
                return 0;
            }
            buf = grown;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, in);
        n += got;
        if (got == 0) {
            if (ferror(in)) {
                free(buf);
                return 0;
            }
            break;
        }
    }
    *data = buf;
    *len = n;
    return 1;
}

static qg_response_file *qg_response_file_new(const char *name, const char *content)
{
    qg_response_file *f = qg_alloc(sizeof(*f));
    google__protobuf__compiler__code_generator_response__file__init(f);
    f->name = (char *)name;
    f->content = (char *)content;
    return f;
}

/* Fill `resp` for `req`: generated files, or the error text. */
static void qg_generate(const qg_request *req, qg_response *resp)
{
    if (req->parameter != NULL && *req->parameter != '\0') {
        resp->error = qg_printf("protoc-gen-quark takes no parameter (got '%s'): use "
                                "--quark_out=OUT_DIR", req->parameter);
        return;
    }
    qg_model model;
    if (qg_model_build(&model, req) > 0) {
        char *err = qg_strdup(qg_buf_str(&model.errors));
        size_t n = strlen(err);
        if (n > 0 && err[n - 1] == '\n')
            err[n - 1] = '\0';
        resp->error = err;
        return;
    }
    size_t n_gen = 0;
    for (size_t i = 0; i < model.n_files; i++)
        n_gen += model.files[i].generate != 0;
    resp->file = qg_alloc((2 * n_gen + 1) * sizeof(*resp->file));
    for (size_t i = 0; i < model.n_files; i++) {
        if (!model.files[i].generate)
            continue;
        qg_emitted out;
        qg_emit_file(&model.files[i], &out);
        resp->file[resp->n_file++] = qg_response_file_new(out.header_name, out.header);
        resp->file[resp->n_file++] = qg_response_file_new(out.source_name, out.source);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        if (strcmp(argv[1], "--version") == 0) {
            printf("protoc-gen-quark %s (generated-code ABI %d)\n", QUARK_VERSION_STRING,
                   QUARK_GEN_ABI);
            return 0;
        }
        fprintf(stderr,
                "protoc-gen-quark %s: a protoc plugin, run by protoc:\n"
                "  protoc --plugin=protoc-gen-quark=%s --quark_out=OUT_DIR --c_out=OUT_DIR "
                "-IDIR foo.proto\n",
                QUARK_VERSION_STRING, argv[0]);
        return strcmp(argv[1], "--help") == 0 ? 0 : 2;
    }

    uint8_t *data = NULL;
    size_t len = 0;
    if (!qg_read_all(stdin, &data, &len)) {
        fputs("protoc-gen-quark: cannot read the CodeGeneratorRequest from stdin\n", stderr);
        return 1;
    }
    qg_request *req = google__protobuf__compiler__code_generator_request__unpack(NULL, len, data);
    free(data);
    if (req == NULL) {
        fputs("protoc-gen-quark: stdin is not a CodeGeneratorRequest (this program is run "
              "by protoc: see --help)\n", stderr);
        return 1;
    }

    qg_response resp;
    google__protobuf__compiler__code_generator_response__init(&resp);
    /* We check proto3 'optional' ourselves, to name the services using it. */
    resp.has_supported_features = 1;
    resp.supported_features =
        GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__FEATURE__FEATURE_PROTO3_OPTIONAL;
    qg_generate(req, &resp);

    size_t size = google__protobuf__compiler__code_generator_response__get_packed_size(&resp);
    uint8_t *out = qg_alloc(size + 1);
    google__protobuf__compiler__code_generator_response__pack(&resp, out);
    int ok = fwrite(out, 1, size, stdout) == size && fflush(stdout) == 0;

    google__protobuf__compiler__code_generator_request__free_unpacked(req, NULL);
    qg_free_all();
    if (!ok) {
        fputs("protoc-gen-quark: cannot write the CodeGeneratorResponse to stdout\n", stderr);
        return 1;
    }
    return 0;
}
