/*
 * quark_bench.c - quark-bench: calls/s and latency percentiles of CounterActor.
 *
 *   quark-bench --inproc --workload w1        1 call in flight, one counter
 *   quark-bench --inproc --workload w2        64 in flight (async), 10,000 ids
 *   quark-bench --inproc --workload activate  1,000,000 fresh counters
 *   quark-bench --connect HOST:PORT --transport tcp --workload w1|w2|activate
 *                                             (activate: a fresh counter per call;
 *                                             --inflight 1 gives first-call latency)
 *                                             the same against a counter-silo
 *   --type DurableCounter                     the counter whose value is
 *                                             persistent state (each Increment
 *                                             stored before its reply)
 *   --storage SPEC                            in process: the silo's storage
 *
 * Every run ends with one machine-readable line:
 *   RESULT workload=<w> transport=inproc calls_per_s=<n> p50_us=<n> p99_us=<n>
 *          [bytes_per_activation=<n>]
 * Latency is taken per call with the monotonic clock, from issue to reply.
 */
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "counter_actor.h"

typedef struct opts {
    const char *workload;
    const char *transport;  /* "inproc", "tcp" */
    long calls;
    int inflight;
    int keys;
    unsigned workers;
} opts;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, quark_err rc)
{
    fprintf(stderr, "quark-bench: %s: %s (%s)\n", what, quark_errname(rc), quark_last_error());
    exit(1);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(uint32_t *lat, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1));
    return lat[i] / 1000.0;
}

static const char *g_transport = "inproc";
static const char *g_type = NULL; /* NULL: the interface's own name (CounterActor) */

static quark_err counter_ref(quark_client *c, const char *id, quark_ref **out)
{
    return quark_ref_new(c, &quark_examples_CounterActor_interface, g_type, id, out);
}

static void report(const char *w, double secs, long calls, uint32_t *lat, size_t n, long bytes_per_act)
{
    qsort(lat, n, sizeof *lat, cmp_u32);
    double cps = calls / secs;
    printf("%s: %ld calls in %.3f s = %.0f calls/s; latency p50 %.1f us, p90 %.1f us, p99 %.1f us, "
           "p99.9 %.1f us, max %.1f us\n",
           w, calls, secs, cps, pct_us(lat, n, 0.50), pct_us(lat, n, 0.90), pct_us(lat, n, 0.99),
           pct_us(lat, n, 0.999), n ? lat[n - 1] / 1000.0 : 0.0);
    printf("RESULT workload=%s transport=%s calls_per_s=%.0f p50_us=%.1f p99_us=%.1f", w, g_transport, cps,
           pct_us(lat, n, 0.50), pct_us(lat, n, 0.99));
    if (bytes_per_act >= 0)
        printf(" bytes_per_activation=%ld", bytes_per_act);
    printf("\n");
}

/* ---- w1: one call in flight ---- */

static void run_w1(quark_client *c, const opts *o)
{
    quark_ref *r;
    quark_err rc = counter_ref(c, "w1-counter", &r);
    if (rc)
        die("ref", rc);
    Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    req.delta = 1;
    uint32_t *lat = malloc(sizeof *lat * (size_t)o->calls);
    /* warm-up: activation and caches */
    for (int i = 0; i < 1000; i++) {
        Quark__Examples__CounterValue *v;
        if ((rc = quark_examples_CounterActor_Increment(r, &req, &v)))
            die("Increment", rc);
        quark_msg_free(v);
    }
    uint64_t t0 = now_ns();
    for (long i = 0; i < o->calls; i++) {
        uint64_t a = now_ns();
        Quark__Examples__CounterValue *v;
        if ((rc = quark_examples_CounterActor_Increment(r, &req, &v)))
            die("Increment", rc);
        quark_msg_free(v);
        lat[i] = (uint32_t)(now_ns() - a);
    }
    double secs = (now_ns() - t0) / 1e9;
    report("w1", secs, o->calls, lat, (size_t)o->calls, -1);
    free(lat);
    quark_ref_free(r);
}

/* ---- w2 / activate: N calls in flight through the async API ---- */

typedef struct slot {
    struct bench *b;
    uint64_t start;
    uint64_t rng;
    uint32_t *lat;    /* this slot's latencies */
    long done, quota;
} slot;

typedef struct bench {
    quark_ref **refs;
    int keys;
    int fresh;        /* activate: a new id per call */
    quark_client *client;
    atomic_long next_id;
    atomic_int finished;
    int nslots;
    sem_t all_done;   /* posted by the last slot: the main thread sleeps, no polling */
    Quark__Examples__IncrementRequest req;
} bench;

static void issue(slot *s);

static void on_reply(quark_err err, const char *errmsg, const Quark__Examples__CounterValue *v,
                     void *arg)
{
    (void)v;
    slot *s = arg;
    if (err != QUARK_OK) {
        fprintf(stderr, "quark-bench: call failed: %s\n", errmsg);
        exit(1);
    }
    s->lat[s->done++] = (uint32_t)(now_ns() - s->start);
    if (s->done < s->quota)
        issue(s);
    else if (atomic_fetch_add(&s->b->finished, 1) + 1 == s->b->nslots)
        sem_post(&s->b->all_done);
}

static void issue(slot *s)
{
    bench *b = s->b;
    quark_ref *r;
    quark_ref *tmp = NULL;
    if (b->fresh) {
        char id[32];
        snprintf(id, sizeof id, "act-%d-%ld", (int)getpid(), atomic_fetch_add(&b->next_id, 1));
        quark_err rc = counter_ref(b->client, id, &tmp);
        if (rc)
            die("ref", rc);
        r = tmp;
    } else {
        s->rng ^= s->rng << 13;
        s->rng ^= s->rng >> 7;
        s->rng ^= s->rng << 17;
        r = b->refs[s->rng % (uint64_t)b->keys];
    }
    s->start = now_ns();
    quark_err rc = quark_examples_CounterActor_Increment_async(r, &b->req, on_reply, s);
    if (rc)
        die("Increment_async", rc);
    quark_ref_free(tmp);
}

static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

static void run_async(quark_silo *silo, quark_client *c, const opts *o, int fresh)
{
    bench b = {.keys = o->keys, .fresh = fresh, .client = c};
    quark__examples__increment_request__init(&b.req);
    b.req.delta = 1;
    if (!fresh) {
        b.refs = malloc(sizeof *b.refs * (size_t)o->keys);
        char id[32];
        for (int i = 0; i < o->keys; i++) {
            snprintf(id, sizeof id, "counter-%d", i);
            quark_err rc = counter_ref(c, id, &b.refs[i]);
            if (rc)
                die("ref", rc);
        }
        /* Activate every key first: w2 measures calls, not activations. */
        for (int i = 0; i < o->keys; i++) {
            Quark__Examples__CounterValue *v;
            quark_err rc = quark_examples_CounterActor_Increment(b.refs[i], &b.req, &v);
            if (rc)
                die("warm-up", rc);
            quark_msg_free(v);
        }
    }
    int n = o->inflight;
    b.nslots = n;
    sem_init(&b.all_done, 0, 0);
    slot *slots = calloc((size_t)n, sizeof *slots);
    uint32_t *lat = malloc(sizeof *lat * (size_t)o->calls);
    long per = o->calls / n, extra = o->calls % n, off = 0;
    for (int i = 0; i < n; i++) {
        slots[i].b = &b;
        slots[i].rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        slots[i].quota = per + (i < extra ? 1 : 0);
        slots[i].lat = lat + off;
        off += slots[i].quota;
    }
    long rss0 = rss_bytes();
    uint64_t t0 = now_ns();
    for (int i = 0; i < n; i++)
        if (slots[i].quota)
            issue(&slots[i]);
        else if (atomic_fetch_add(&b.finished, 1) + 1 == n)
            sem_post(&b.all_done);
    while (sem_wait(&b.all_done) != 0)
        ;
    double secs = (now_ns() - t0) / 1e9;
    long bytes_per_act = -1;
    if (fresh && silo) { /* in process: what an activation costs in memory */
        long rss1 = rss_bytes();
        size_t live = quark_silo_activation_count(silo, g_type ? g_type
                                                              : quark_examples_CounterActor_TYPE_NAME);
        if (live != (size_t)o->calls)
            fprintf(stderr, "quark-bench: %zu activations live, expected %ld\n", live, o->calls);
        /* Beyond the state itself: the in-memory counter's struct, or the
         * decoded CounterState message of DurableCounter. */
        long state = g_type ? (long)sizeof(Quark__Examples__CounterState)
                            : (long)sizeof(struct counter_state);
        bytes_per_act = (rss1 - rss0) / (live ? (long)live : 1) - state;
        printf("activate: %zu live activations, RSS grew %.1f MiB\n", live, (rss1 - rss0) / 1048576.0);
    }
    report(fresh ? "activate" : "w2", secs, o->calls, lat, (size_t)o->calls, bytes_per_act);
    free(lat);
    free(slots);
    if (b.refs) {
        for (int i = 0; i < o->keys; i++)
            quark_ref_free(b.refs[i]);
        free(b.refs);
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: quark-bench --inproc --workload w1|w2|activate [--calls N] [--inflight N]\n"
            "                   [--keys N] [--workers N] [--type NAME] [--storage SPEC]\n"
            "       quark-bench --connect HOST:PORT[,HOST:PORT...] --transport tcp|grpc\n"
            "                   --workload w1|w2|activate [--routing owner|pinned] [--poll-us US]\n"
            "                   [--type NAME] [...]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    opts o = {.workload = NULL, .calls = 0, .inflight = 0, .keys = 10000, .workers = 0};
    int inproc = 0;
    const char *connect = NULL;
    const char *routing = "owner";
    long poll_us = -1; /* -1: the client's default */
    const char *storage = NULL;
    o.transport = "inproc";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--inproc"))
            inproc = 1;
        else if (!strcmp(a, "--connect") && v)
            connect = argv[++i];
        else if (!strcmp(a, "--transport") && v)
            o.transport = argv[++i];
        else if (!strcmp(a, "--workload") && v)
            o.workload = argv[++i];
        else if (!strcmp(a, "--calls") && v)
            o.calls = atol(argv[++i]);
        else if (!strcmp(a, "--inflight") && v)
            o.inflight = atoi(argv[++i]);
        else if (!strcmp(a, "--keys") && v)
            o.keys = atoi(argv[++i]);
        else if (!strcmp(a, "--routing") && v)
            routing = argv[++i];
        else if (!strcmp(a, "--workers") && v)
            o.workers = (unsigned)atoi(argv[++i]);
        else if (!strcmp(a, "--poll-us") && v)
            poll_us = atol(argv[++i]);
        else if (!strcmp(a, "--type") && v)
            g_type = argv[++i];
        else if (!strcmp(a, "--storage") && v)
            storage = argv[++i];
        else
            usage();
    }
    if (inproc == !!connect || !o.workload)
        usage();
    if (connect && strcmp(o.transport, "tcp") != 0 && strcmp(o.transport, "grpc") != 0)
        usage();
    int w1 = !strcmp(o.workload, "w1"), w2 = !strcmp(o.workload, "w2"),
        act = !strcmp(o.workload, "activate");
    if (!w1 && !w2 && !act)
        usage();
    if (strcmp(routing, "owner") != 0 && strcmp(routing, "pinned") != 0)
        usage();
    if (!o.calls)
        o.calls = connect ? (w1 ? 100000 : 1000000) : (w1 ? 1000000 : w2 ? 5000000 : 1000000);
    if (!o.inflight)
        o.inflight = w1 ? 1 : 64;

    quark_silo *silo = NULL;
    quark_err rc;
    quark_client_opts co;
    quark_client_opts_init(&co);
    if (inproc) {
        quark_silo_opts so;
        quark_silo_opts_init(&so);
        so.workers = o.workers;
        so.storage = storage;
        so.idle_timeout_ms = 3600 * 1000; /* nothing is collected during a run */
        rc = quark_silo_create(&so, &silo);
        if (rc || (rc = quark_silo_start(silo)))
            die("silo", rc);
        co.embedded = silo;
    } else {
        g_transport = o.transport;
        co.connection_string = connect;
        co.transport = strcmp(o.transport, "grpc") == 0 ? QUARK_TRANSPORT_GRPC : QUARK_TRANSPORT_TCP;
        co.routing = strcmp(routing, "pinned") == 0 ? QUARK_ROUTE_PINNED : QUARK_ROUTE_OWNER;
        if (poll_us >= 0)
            co.poll_us = (uint32_t)poll_us;
    }
    quark_client *c;
    if ((rc = quark_client_create(&co, &c)) || (rc = quark_client_connect(c)))
        die("client", rc);
    printf("quark-bench: workload %s, %s, %ld calls, %d in flight%s\n", o.workload,
           inproc ? "in-process" : connect, o.calls, o.inflight,
           co.routing == QUARK_ROUTE_PINNED ? ", pinned to the first silo (it forwards)" : "");
    if (w1)
        run_w1(c, &o);
    else
        run_async(silo, c, &o, act);
    quark_client_free(c);
    if (silo)
        quark_silo_free(silo);
    return 0;
}
