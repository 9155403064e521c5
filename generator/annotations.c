/*
 * generator/annotations.c - reads the @quark.* annotations of rpc and
 * service comments.
 *
 * Annotations are comment lines rather than custom options so that .proto
 * files stay loadable by stock tools with no extra imports:
 *
 *   // Returns the current value.
 *   // @quark.read_only          (rpc: QUARK_METHOD_READ_ONLY)
 *   // @quark.idempotent         (rpc: QUARK_METHOD_IDEMPOTENT)
 *   // @quark.write_behind       (rpc: QUARK_METHOD_WRITE_BEHIND)
 *   rpc Get(GetRequest) returns (CounterValue);
 *
 *   // @quark.type_name shop.Counter   (service: actor type / wire name)
 *   // @quark.state CounterState       (service: the persistent state message
 *   //                                  of its implementations that keep one)
 *   service CounterActor { ... }
 *
 * An annotation is the first word of a comment line (after the comment
 * markers). Any other word that begins with "@quark." is an error, so a typo
 * never silently drops a flag.
 */
#include <string.h>

#include "model.h"
#include "quark/interface.h"
#include "quark/registry.h"

#define QG_VALID_ANNOTATIONS                                                  \
    "valid annotations are @quark.read_only, @quark.idempotent and "          \
    "@quark.write_behind (on a line "                                          \
    "of an rpc's comment), @quark.type_name <name> and @quark.state <message> " \
    "(on a line of a service's comment)"

static int qg_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static int qg_starts_annotation(const char *word, size_t n)
{
    static const char tag[] = "@quark.";
    return n >= sizeof(tag) - 1 && memcmp(word, tag, sizeof(tag) - 1) == 0;
}

static int qg_word_is(const char *word, size_t n, const char *s)
{
    return strlen(s) == n && memcmp(word, s, n) == 0;
}

/* A type name the registry accepts: 1..QUARK_TYPE_NAME_MAX printable ASCII
 * characters without spaces. */
static int qg_valid_type_name(const char *s, size_t n)
{
    if (n == 0 || n > QUARK_TYPE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

typedef struct qg_line {
    const char **words;
    size_t *lens;
    size_t n;
} qg_line;

/* Split one comment line into words, after the comment markers protoc leaves
 * in (" * " of block comments, extra '/' of "///"). */
static void qg_split_line(const char *p, const char *end, qg_line *line)
{
    size_t max = (size_t)(end - p) / 2 + 1; /* words are separated by spaces */
    line->words = qg_alloc(max * sizeof(*line->words));
    line->lens = qg_alloc(max * sizeof(*line->lens));
    line->n = 0;
    while (p < end && (qg_is_space(*p) || *p == '*' || *p == '/'))
        p++;
    while (p < end) {
        while (p < end && qg_is_space(*p))
            p++;
        if (p == end)
            break;
        const char *w = p;
        while (p < end && !qg_is_space(*p))
            p++;
        line->words[line->n] = w;
        line->lens[line->n] = (size_t)(p - w);
        line->n++;
    }
}

/* @quark.state's argument: a message name, plain or qualified. */
static int qg_valid_message_name(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '.' || s[i] == '_' || (s[i] >= '0' && s[i] <= '9') ||
              (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')))
            return 0;
    return 1;
}

/* A service annotation with one argument into *slot. */
static void qg_service_arg(qg_model *model, const char *where, const qg_line *line,
                           const char *annot, const char *example,
                           int (*valid)(const char *, size_t), const char *what,
                           const char **slot)
{
    if (line->n != 2) {
        qg_error(model, "%s: annotation '%s' takes exactly one argument, %s (as in '%s %s')",
                 where, annot, what, annot, example);
    } else if (!valid(line->words[1], line->lens[1])) {
        qg_error(model, "%s: '%s %.*s': %s", where, annot, (int)line->lens[1], line->words[1],
                 valid == qg_valid_type_name
                     ? "a type name is 1 to 255 printable ASCII characters without spaces"
                     : "not a message name");
    } else {
        char *v = qg_strndup(line->words[1], line->lens[1]);
        if (*slot != NULL && strcmp(*slot, v) != 0)
            qg_error(model, "%s: two different '%s' annotations ('%s' and '%s'); keep one",
                     where, annot, *slot, v);
        else
            *slot = v;
    }
}

static void qg_scan_line(qg_model *model, const char *where, qg_annot_ctx ctx,
                         const qg_line *line, unsigned *flags, qg_service_annots *sa)
{
    size_t first_plain = 0; /* words before this index are already handled */
    if (line->n > 0 && qg_starts_annotation(line->words[0], line->lens[0])) {
        const char *w = line->words[0];
        int n = (int)line->lens[0];
        first_plain = 1;
        unsigned flag = qg_word_is(w, line->lens[0], "@quark.read_only")    ? QUARK_METHOD_READ_ONLY
                        : qg_word_is(w, line->lens[0], "@quark.idempotent") ? QUARK_METHOD_IDEMPOTENT
                        : qg_word_is(w, line->lens[0], "@quark.write_behind")
                            ? QUARK_METHOD_WRITE_BEHIND
                            : 0;
        if (flag) {
            if (ctx != QG_ANNOT_METHOD || flags == NULL) {
                qg_error(model, "%s: annotation '%.*s' belongs on a line of an rpc's comment, "
                         "not on the service; %s", where, n, w, QG_VALID_ANNOTATIONS);
            } else if (line->n > 1) {
                qg_error(model, "%s: annotation '%.*s' takes no argument (found '%.*s'); "
                         "put it on a line of its own", where, n, w,
                         (int)line->lens[1], line->words[1]);
            } else {
                *flags |= flag;
            }
        } else if (qg_word_is(w, line->lens[0], "@quark.type_name") ||
                   qg_word_is(w, line->lens[0], "@quark.state")) {
            int is_type = qg_word_is(w, line->lens[0], "@quark.type_name");
            first_plain = 2;
            if (ctx != QG_ANNOT_SERVICE || sa == NULL)
                qg_error(model, "%s: annotation '%.*s' belongs on a line of the service's "
                         "comment, not on an rpc; %s", where, n, w, QG_VALID_ANNOTATIONS);
            else if (is_type)
                qg_service_arg(model, where, line, "@quark.type_name", "shop.Counter",
                               qg_valid_type_name, "the actor type name", &sa->type_name);
            else
                qg_service_arg(model, where, line, "@quark.state", "CounterState",
                               qg_valid_message_name, "the state message", &sa->state);
        } else {
            qg_error(model, "%s: unknown annotation '%.*s'; %s", where, n, w,
                     QG_VALID_ANNOTATIONS);
        }
    }
    for (size_t i = first_plain; i < line->n; i++) {
        if (qg_starts_annotation(line->words[i], line->lens[i]))
            qg_error(model, "%s: '%.*s' in the middle of a comment line: an annotation must "
                     "be the first word of its own comment line (%s)", where,
                     (int)line->lens[i], line->words[i], QG_VALID_ANNOTATIONS);
    }
}

void qg_scan_annotations(qg_model *model, const char *where, qg_annot_ctx ctx,
                         const char *comment, unsigned *flags, qg_service_annots *sa)
{
    if (comment == NULL)
        return;
    const char *p = comment;
    while (*p != '\0') {
        const char *end = strchr(p, '\n');
        if (end == NULL)
            end = p + strlen(p);
        qg_line line;
        qg_split_line(p, end, &line);
        qg_scan_line(model, where, ctx, &line, flags, sa);
        p = *end == '\n' ? end + 1 : end;
    }
}

void qg_check_detached_comment(qg_model *model, const char *where, const char *comment)
{
    if (comment == NULL)
        return;
    const char *p = comment;
    while ((p = strstr(p, "@quark.")) != NULL) {
        if (p == comment || qg_is_space(p[-1]) || p[-1] == '/' || p[-1] == '*' ||
            p[-1] == '\n') {
            size_t n = 0;
            while (p[n] != '\0' && !qg_is_space(p[n]) && p[n] != '\n')
                n++;
            qg_error(model, "%s: '%.*s' is in a comment separated from it by a blank line, "
                     "where it would be ignored; move it into the comment directly above "
                     "(no blank line in between)", where, (int)n, p);
            return;
        }
        p += 7;
    }
}
