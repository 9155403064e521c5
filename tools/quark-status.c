/*
 * quark-status - print what a silo reports: its view of the cluster, its
 * activations, the calls it forwarded.
 *
 *   quark-status [--cluster-id ID] [--timeout-ms MS] HOST:PORT...
 *
 * One line per silo (see quark_status_format); exit status 1 if any silo
 * did not answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quark/quark.h>

int main(int argc, char **argv)
{
    const char *cluster = "default";
    uint32_t timeout = 5000;
    int rc = 0, n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cluster-id") && i + 1 < argc) {
            cluster = argv[++i];
            continue;
        }
        if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc) {
            timeout = (uint32_t)strtoul(argv[++i], NULL, 10);
            continue;
        }
        if (argv[i][0] == '-') {
            fprintf(stderr, "usage: quark-status [--cluster-id ID] [--timeout-ms MS] HOST:PORT...\n");
            return 2;
        }
        n++;
        quark_silo_status *st;
        quark_err err = quark_status_fetch(argv[i], cluster, timeout, &st);
        if (err != QUARK_OK) {
            printf("%s: %s: %s\n", argv[i], quark_errname(err), quark_last_error());
            rc = 1;
            continue;
        }
        char line[8192];
        quark_status_format(st, line, sizeof line);
        printf("%s\n", line);
        quark_status_free(st);
    }
    if (!n) {
        fprintf(stderr, "usage: quark-status [--cluster-id ID] [--timeout-ms MS] HOST:PORT...\n");
        return 2;
    }
    return rc;
}
