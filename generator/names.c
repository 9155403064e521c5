/*
 * generator/names.c - C names for protoc-gen-quark's output.
 *
 * Message types must be spelled exactly as protoc-c 1.4 spells them, since
 * the generated code refers to protoc-c's declarations:
 *   - the full name (with the package replaced by (pb_c_file).c_package when
 *     that option is set) is split at '.', empty pieces are dropped, and the
 *     pieces are joined with "__";
 *   - type names transform each piece by "camel-casing": '_' is dropped and
 *     the character after it (and the first one) is upper-cased, all others
 *     are kept ("my_pkg" -> "MyPkg", "HTTPStatus2" -> "HTTPStatus2");
 *   - lower-case names (descriptors) and upper-case names (INIT macros)
 *     insert '_' before an upper-case letter that follows a character that
 *     is not upper-case, then change the case of every letter
 *     ("HTTPStatus2" -> "httpstatus2", "deep_X9" -> "deep__x9").
 * Quark's own prefix is simpler: package with '.' -> '_', then '_' and the
 * service name, kept as written.
 */
#include <string.h>

#include "model.h"

static int qg_is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static int qg_is_lower(char c) { return c >= 'a' && c <= 'z'; }
static int qg_is_alnum(char c) { return qg_is_upper(c) || qg_is_lower(c) || (c >= '0' && c <= '9'); }
static char qg_to_upper(char c) { return qg_is_lower(c) ? (char)(c - 'a' + 'A') : c; }
static char qg_to_lower(char c) { return qg_is_upper(c) ? (char)(c - 'A' + 'a') : c; }

typedef enum { QG_CASE_TYPE, QG_CASE_LOWER, QG_CASE_UPPER } qg_case;

/* One '.'-separated piece, transformed. */
static void qg_piece(qg_buf *out, const char *p, size_t n, qg_case how)
{
    if (how == QG_CASE_TYPE) {
        int next_upper = 1;
        for (size_t i = 0; i < n; i++) {
            if (p[i] == '_') {
                next_upper = 1;
            } else if (next_upper) {
                qg_buf_putc(out, qg_to_upper(p[i]));
                next_upper = 0;
            } else {
                qg_buf_putc(out, p[i]);
            }
        }
        return;
    }
    int was_upper = 1; /* no '_' before a leading capital */
    for (size_t i = 0; i < n; i++) {
        int is_upper = qg_is_upper(p[i]);
        if (is_upper && !was_upper)
            qg_buf_putc(out, '_');
        qg_buf_putc(out, how == QG_CASE_LOWER ? qg_to_lower(p[i]) : qg_to_upper(p[i]));
        was_upper = is_upper;
    }
}

/* The full name protoc-c works from: the package part replaced by c_package. */
static char *qg_override_full_name(const char *full_name, const char *package,
                                   const char *c_package)
{
    if (c_package == NULL)
        return qg_strdup(full_name);
    size_t plen = strlen(package);
    if (plen == 0)
        return qg_printf("%s.%s", c_package, full_name);
    return qg_printf("%s%s", c_package, full_name + plen);
}

static char *qg_mangle(const char *full_name, const char *package, const char *c_package,
                       qg_case how)
{
    char *name = qg_override_full_name(full_name, package, c_package);
    qg_buf out = {0};
    const char *p = name;
    while (*p != '\0') {
        const char *dot = strchr(p, '.');
        size_t n = dot != NULL ? (size_t)(dot - p) : strlen(p);
        if (n > 0) {
            if (out.len > 0)
                qg_buf_puts(&out, "__");
            qg_piece(&out, p, n, how);
        }
        p += n;
        if (*p == '.')
            p++;
    }
    return out.data != NULL ? out.data : qg_strdup("");
}

char *qg_c_type_name(const char *full_name, const char *package, const char *c_package)
{
    return qg_mangle(full_name, package, c_package, QG_CASE_TYPE);
}

char *qg_c_lower_name(const char *full_name, const char *package, const char *c_package)
{
    return qg_mangle(full_name, package, c_package, QG_CASE_LOWER);
}

char *qg_c_upper_name(const char *full_name, const char *package, const char *c_package)
{
    return qg_mangle(full_name, package, c_package, QG_CASE_UPPER);
}

char *qg_service_prefix(const char *package, const char *service)
{
    if (package == NULL || *package == '\0')
        return qg_strdup(service);
    char *p = qg_printf("%s_%s", package, service);
    for (char *c = p; *c != '\0'; c++)
        if (*c == '.')
            *c = '_';
    return p;
}

static int qg_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

char *qg_strip_proto(const char *file_name)
{
    size_t n = strlen(file_name);
    if (qg_ends_with(file_name, ".protodevel"))
        n -= strlen(".protodevel");
    else if (qg_ends_with(file_name, ".proto"))
        n -= strlen(".proto");
    return qg_strndup(file_name, n);
}

char *qg_file_identifier(const char *file_name)
{
    qg_buf b = {0};
    for (const char *p = file_name; *p != '\0'; p++) {
        if (qg_is_alnum(*p))
            qg_buf_putc(&b, *p);
        else /* like protoc-c: hex code, so "a-b" and "a_b" stay distinct */
            qg_buf_printf(&b, "_%02x", (unsigned)(unsigned char)*p);
    }
    return b.data != NULL ? b.data : qg_strdup("");
}

void qg_c_escape(qg_buf *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\' || *p == '?') /* '?': no trigraphs */
            qg_buf_printf(b, "\\%c", *p);
        else if (*p >= 0x20 && *p < 0x7f)
            qg_buf_putc(b, (char)*p);
        else
            qg_buf_printf(b, "\\%03o", (unsigned)*p);
    }
}

static const char *const qg_reserved[] = {
    /* C11 keywords */
    "auto", "break", "case", "char", "const", "continue", "default", "do",
    "double", "else", "enum", "extern", "float", "for", "goto", "if", "inline",
    "int", "long", "register", "restrict", "return", "short", "signed",
    "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned",
    "void", "volatile", "while", "_Alignas", "_Alignof", "_Atomic", "_Bool",
    "_Complex", "_Generic", "_Imaginary", "_Noreturn", "_Static_assert",
    "_Thread_local",
    /* C23 keywords, and macros of the standard headers with those names */
    "alignas", "alignof", "bool", "constexpr", "false", "nullptr",
    "static_assert", "thread_local", "true", "typeof", "typeof_unqual",
    "noreturn", "complex", "imaginary", "I",
    /* GNU C keywords and predefined macros of gnu11 */
    "asm", "__asm__", "typeof", "__typeof__", "__attribute__", "linux", "unix",
    "i386",
    /* object-like macros of the C library */
    "NULL", "EOF", "errno", "stdin", "stdout", "stderr",
};

int qg_is_reserved_c_name(const char *name)
{
    for (size_t i = 0; i < sizeof(qg_reserved) / sizeof(qg_reserved[0]); i++)
        if (strcmp(name, qg_reserved[i]) == 0)
            return 1;
    return 0;
}
