/*
 * silo.c - counter-silo: a silo hosting CounterActor on the network.
 *
 *   counter-silo --listen HOST:PORT [--cluster-id ID] [--workers N]
 *                [--max-output-buffer BYTES] [--seeds H1:P1,H2:P2,...]
 *                [--advertise HOST:PORT] [--heartbeat-ms MS]
 *                [--failure-timeout-ms MS] [--idle-timeout-ms MS] [--poll-us US]
 *                [--storage SPEC] [--max-mailbox N] [--max-worker-queue N]
 *                [--max-connection-calls N] [--max-connections N]
 *                [--handshake-timeout-ms MS] [--frame-timeout-ms MS]
 *                [--idle-connection-ms MS] [--cluster-key-file FILE]
 *                [--membership gossip|redis://H:P] [--directory hash|redis://H:P]
 *                [--directory-ttl-ms MS] [--redis redis://H:P]
 *                [--reminders memory|sqlite:PATH|redis://H:P]
 *                [--reminder-min-period-ms MS] [--reminder-refresh-ms MS]
 *
 * It hosts CounterActor (in memory) and DurableCounter (the same interface,
 * its value persistent: stored in --storage, "memory" by default; e.g.
 * "sqlite:counter.db" keeps it across restarts and crashes).
 *
 * With --seeds it joins those silos as one cluster (docs/cluster.md); with
 * --membership redis://H:P the silos find each other in that Redis server's
 * member table instead, with no seeds; with --directory redis://H:P an
 * actor's activation is registered there (one per actor, staying where it
 * was activated). It prints a line starting "counter-silo: view" each time
 * its view of the members changes. --redis redis://H:P puts what can be in
 * Redis there (membership, directory, storage and reminders); --membership,
 * --directory, --storage and --reminders override it. DurableCounter's
 * Remind registers a durable reminder (docs/reminders.md) kept in
 * --reminders ("memory" by default).
 *
 * Serves gRPC (ActorService) and Quark's TCP protocol on one port, prints a
 * line containing "listening" when ready, and on SIGTERM or SIGINT stops
 * gracefully (no new connections, in-flight calls answered, on_deactivate
 * run) and exits 0.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counter_actor.h"

static void usage(void)
{
    fprintf(stderr, "usage: counter-silo --listen HOST:PORT [--cluster-id ID] [--workers N]\n"
                    "                    [--max-output-buffer BYTES] [--seeds H1:P1,...]\n"
                    "                    [--advertise HOST:PORT] [--heartbeat-ms MS]\n"
                    "                    [--failure-timeout-ms MS] [--idle-timeout-ms MS]\n"
                    "                    [--poll-us US] [--storage memory|sqlite:PATH|redis://H:P]\n"
                    "                    [--max-mailbox N] [--max-worker-queue N]\n"
                    "                    [--max-connection-calls N] [--max-connections N]\n"
                    "                    [--handshake-timeout-ms MS] [--frame-timeout-ms MS]\n"
                    "                    [--idle-connection-ms MS] [--cluster-key-file FILE]\n"
                    "                    [--membership gossip|redis://H:P]\n"
                    "                    [--directory hash|redis://H:P] [--directory-ttl-ms MS]\n"
                    "                    [--redis redis://H:P]\n"
                    "                    [--reminders memory|sqlite:PATH|redis://H:P]\n"
                    "                    [--reminder-min-period-ms MS] [--reminder-refresh-ms MS]\n");
    exit(2);
}

/* The cluster key: the file's first line (trailing white space dropped). */
static const char *read_key(const char *path)
{
    static char key[1024];
    FILE *f = fopen(path, "r");
    if (!f || !fgets(key, sizeof key, f)) {
        fprintf(stderr, "counter-silo: cannot read the cluster key from %s\n", path);
        exit(2);
    }
    fclose(f);
    size_t n = strlen(key);
    while (n && (key[n - 1] == '\n' || key[n - 1] == '\r' || key[n - 1] == ' ' ||
                 key[n - 1] == '\t'))
        key[--n] = '\0';
    if (!n) {
        fprintf(stderr, "counter-silo: the cluster key in %s is empty\n", path);
        exit(2);
    }
    return key;
}

static void on_view(const quark_silo_status *st, void *arg)
{
    (void)arg;
    char line[4096];
    quark_status_format(st, line, sizeof line);
    printf("counter-silo: %s\n", line);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    quark_silo_opts so;
    const char *redis = NULL; /* --redis: the default of --membership, --directory, --storage */
    quark_silo_opts_init(&so);
    /* The numeric options (docs/configuration.md, docs/operations.md). */
    const struct {
        const char *flag;
        uint32_t *v;
    } nums[] = {
        {"--heartbeat-ms", &so.heartbeat_ms},
        {"--failure-timeout-ms", &so.failure_timeout_ms},
        {"--idle-timeout-ms", &so.idle_timeout_ms},
        {"--poll-us", &so.poll_us},
        {"--max-mailbox", &so.max_mailbox},
        {"--max-worker-queue", &so.max_worker_queue},
        {"--max-connection-calls", &so.max_connection_calls},
        {"--max-connections", &so.max_connections},
        {"--handshake-timeout-ms", &so.handshake_timeout_ms},
        {"--frame-timeout-ms", &so.frame_timeout_ms},
        {"--idle-connection-ms", &so.idle_connection_ms},
        {"--directory-ttl-ms", &so.directory_ttl_ms},
        {"--reminder-min-period-ms", &so.reminder_min_period_ms},
        {"--reminder-refresh-ms", &so.reminder_refresh_ms},
    };
    for (int i = 1; i < argc; i++) {
        size_t k = 0;
        while (k < sizeof nums / sizeof nums[0] && strcmp(argv[i], nums[k].flag) != 0)
            k++;
        if (k < sizeof nums / sizeof nums[0] && i + 1 < argc)
            *nums[k].v = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--listen") && i + 1 < argc)
            so.listen = argv[++i];
        else if (!strcmp(argv[i], "--cluster-id") && i + 1 < argc)
            so.cluster_id = argv[++i];
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc)
            so.workers = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-output-buffer") && i + 1 < argc)
            so.max_output_buffer = (size_t)strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seeds") && i + 1 < argc)
            so.seeds = argv[++i];
        else if (!strcmp(argv[i], "--advertise") && i + 1 < argc)
            so.advertise = argv[++i];
        else if (!strcmp(argv[i], "--storage") && i + 1 < argc)
            so.storage = argv[++i];
        else if (!strcmp(argv[i], "--cluster-key-file") && i + 1 < argc)
            so.cluster_key = read_key(argv[++i]);
        else if (!strcmp(argv[i], "--membership") && i + 1 < argc)
            so.membership = argv[++i];
        else if (!strcmp(argv[i], "--directory") && i + 1 < argc)
            so.directory = argv[++i];
        else if (!strcmp(argv[i], "--reminders") && i + 1 < argc)
            so.reminders = argv[++i];
        else if (!strcmp(argv[i], "--redis") && i + 1 < argc)
            redis = argv[++i];
        else
            usage();
    }
    if (redis && !so.membership)
        so.membership = redis;
    if (redis && !so.directory)
        so.directory = redis;
    if (redis && !so.storage)
        so.storage = redis;
    if (redis && !so.reminders)
        so.reminders = redis;
    if (!so.listen)
        usage();
    so.on_view = on_view;

    /* Block the stop signals in every thread; main waits for them below. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    quark_silo *silo;
    quark_err rc = quark_silo_create(&so, &silo);
    if (rc == QUARK_OK)
        rc = quark_silo_start(silo);
    if (rc != QUARK_OK) {
        fprintf(stderr, "counter-silo: %s: %s\n", quark_errname(rc), quark_last_error());
        return 1;
    }
    printf("counter-silo: listening on %s (port %d, cluster '%s', storage %s)\n", so.listen,
           quark_silo_port(silo), so.cluster_id, so.storage ? so.storage : "memory");
    fflush(stdout);

    int sig = 0;
    sigwait(&stop, &sig);
    printf("counter-silo: %s, stopping\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    fflush(stdout);
    quark_silo_stop(silo);
    printf("counter-silo: stopped (%s activations deactivated)\n", "all");
    quark_silo_free(silo);
    return 0;
}
