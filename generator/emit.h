/*
 * generator/emit.h - turns one file of the model into the text of its
 * foo.quark.h and foo.quark.c.
 */
#ifndef QUARK_GENERATOR_EMIT_H
#define QUARK_GENERATOR_EMIT_H

#include "model.h"

typedef struct qg_emitted {
    const char *header_name;  /* "sub/foo.quark.h" */
    const char *header;
    const char *source_name;  /* "sub/foo.quark.c" */
    const char *source;
} qg_emitted;

/* Emit the pair of `file` (a file to generate of a model without errors).
 * A file without services gets a valid pair that declares nothing. */
void qg_emit_file(const qg_file *file, qg_emitted *out);

#endif /* QUARK_GENERATOR_EMIT_H */
