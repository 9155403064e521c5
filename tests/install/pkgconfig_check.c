/* pkgconfig_check.c - a program built with only `pkg-config --cflags --libs
 * quark`: the installed headers compile and libquark links and runs. */
#include <quark/quark.h>

#include <stdio.h>
#include <string.h>

int main(void)
{
    const char *msg = quark_strerror(QUARK_ETIMEDOUT);
    const char *name = quark_errname(QUARK_ETIMEDOUT);
    if (msg == NULL || msg[0] == '\0' || strcmp(name, "QUARK_ETIMEDOUT") != 0) {
        fprintf(stderr, "pkgconfig: FAILED: QUARK_ETIMEDOUT is '%s' (%s)\n", msg ? msg : "(null)",
                name);
        return 1;
    }
    /* No actor types in this program. */
    size_t n = quark_registry_list(NULL, 0);
    if (n != 0) {
        fprintf(stderr, "pkgconfig: FAILED: quark_registry_list found %zu types, expected 0\n", n);
        return 1;
    }
    printf("quark %s: QUARK_ETIMEDOUT = %s\n", QUARK_VERSION_STRING, msg);
    printf("pkgconfig: ok\n");
    return 0;
}
