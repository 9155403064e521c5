/*
 * silo.c - pizza-silo: a silo hosting Awesome Pizza's actors.
 *
 *   pizza-silo [--listen HOST:PORT] [--cluster-id ID] [--workers N]
 *              [--seeds H1:P1,...] [--redis redis://H:P] [--data-dir DIR]
 *              [--storage SPEC] [--reminders SPEC] [--bake-ms MS] [--nudge-ms MS]
 *              [--chefs N] [--restaurant LAT,LON] [--heartbeat-ms MS]
 *              [--failure-timeout-ms MS]
 *
 * Alone it keeps the actors' state and reminders in SQLite files under
 * --data-dir (default ./pizza-data): state.db and reminders.db. Several
 * silos form a cluster with --seeds (gossip; give them one --data-dir on
 * one machine, so they share the files) or --redis (membership, actor
 * directory, state and reminders in that Redis: any machines). Prints a
 * line containing "listening" when ready; SIGTERM or SIGINT stops it
 * gracefully.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pizza_actors.h"

static void usage(void)
{
    fprintf(stderr,
            "usage: pizza-silo [--listen HOST:PORT] [--cluster-id ID] [--workers N]\n"
            "                  [--seeds H1:P1,...] [--redis redis://H:P] [--data-dir DIR]\n"
            "                  [--storage SPEC] [--reminders SPEC] [--bake-ms MS] [--nudge-ms MS]\n"
            "                  [--chefs N] [--restaurant LAT,LON] [--heartbeat-ms MS]\n"
            "                  [--failure-timeout-ms MS]\n");
    exit(2);
}

static void on_view(const quark_silo_status *st, void *arg)
{
    (void)arg;
    char line[4096];
    quark_status_format(st, line, sizeof line);
    printf("pizza-silo: %s\n", line);
    fflush(stdout);
}

static uint32_t number(const char *flag, const char *v, uint32_t min, uint32_t max)
{
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    if (*v == '\0' || *end || n < min || n > max) {
        fprintf(stderr, "pizza-silo: %s wants a number in %u..%u (got '%s')\n", flag, min, max,
                v);
        exit(2);
    }
    return (uint32_t)n;
}

int main(int argc, char **argv)
{
    quark_silo_opts so;
    quark_silo_opts_init(&so);
    so.listen = "127.0.0.1:7000";
    so.cluster_id = "awesome-pizza";
    const char *redis = NULL, *data_dir = "pizza-data";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--listen"))
            so.listen = v;
        else if (!strcmp(a, "--cluster-id"))
            so.cluster_id = v;
        else if (!strcmp(a, "--workers"))
            so.workers = number(a, v, 1, 1024);
        else if (!strcmp(a, "--seeds"))
            so.seeds = v;
        else if (!strcmp(a, "--redis"))
            redis = v;
        else if (!strcmp(a, "--data-dir"))
            data_dir = v;
        else if (!strcmp(a, "--storage"))
            so.storage = v;
        else if (!strcmp(a, "--reminders"))
            so.reminders = v;
        else if (!strcmp(a, "--bake-ms"))
            pizza_cfg.bake_ms = number(a, v, 100, 3600000);
        else if (!strcmp(a, "--nudge-ms"))
            pizza_cfg.nudge_ms = number(a, v, 100, 3600000);
        else if (!strcmp(a, "--chefs"))
            pizza_cfg.chefs = number(a, v, 1, 100);
        else if (!strcmp(a, "--heartbeat-ms"))
            so.heartbeat_ms = number(a, v, 1, 600000);
        else if (!strcmp(a, "--failure-timeout-ms"))
            so.failure_timeout_ms = number(a, v, 1, 3600000);
        else if (!strcmp(a, "--restaurant")) {
            if (sscanf(v, "%lf,%lf", &pizza_cfg.restaurant_lat, &pizza_cfg.restaurant_lon) != 2 ||
                pizza_cfg.restaurant_lat < -90 || pizza_cfg.restaurant_lat > 90 ||
                pizza_cfg.restaurant_lon < -180 || pizza_cfg.restaurant_lon > 180) {
                fprintf(stderr, "pizza-silo: --restaurant wants LAT,LON (got '%s')\n", v);
                return 2;
            }
        } else
            usage();
    }
    if (redis) { /* one switch: the whole cluster's shared state in that Redis */
        so.membership = redis;
        so.directory = redis;
        if (!so.storage)
            so.storage = redis;
        if (!so.reminders)
            so.reminders = redis;
    }
    char state_spec[4200], rem_spec[4200];
    if (!so.storage || !so.reminders) {
        if (mkdir(data_dir, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "pizza-silo: cannot create --data-dir %s: %s\n", data_dir,
                    strerror(errno));
            return 1;
        }
        snprintf(state_spec, sizeof state_spec, "sqlite:%s/state.db", data_dir);
        snprintf(rem_spec, sizeof rem_spec, "sqlite:%s/reminders.db", data_dir);
        if (!so.storage)
            so.storage = state_spec;
        if (!so.reminders)
            so.reminders = rem_spec;
    }
    /* The oven and the nudge are reminders: let them be as short as asked. */
    uint32_t shortest = pizza_cfg.bake_ms < pizza_cfg.nudge_ms ? pizza_cfg.bake_ms
                                                               : pizza_cfg.nudge_ms;
    so.reminder_min_period_ms = shortest < 1000 ? shortest : 1000;
    so.on_view = on_view;

    sigset_t stop;
    pizza_block_stop_signals(&stop);

    quark_silo *silo;
    quark_err rc = quark_silo_create(&so, &silo);
    if (rc == QUARK_OK)
        rc = quark_silo_start(silo);
    if (rc != QUARK_OK) {
        fprintf(stderr, "pizza-silo: %s: %s\n", quark_errname(rc), quark_last_error());
        return 1;
    }
    printf("pizza-silo: listening on %s (port %d, cluster '%s', storage %s, reminders %s, "
           "bake %u ms)\n", so.listen, quark_silo_port(silo), so.cluster_id, so.storage,
           so.reminders, pizza_cfg.bake_ms);
    fflush(stdout);
    int sig = 0;
    sigwait(&stop, &sig);
    printf("pizza-silo: %s, stopping\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    fflush(stdout);
    quark_silo_stop(silo);
    quark_silo_free(silo);
    printf("pizza-silo: stopped\n");
    return 0;
}
