/*
 * cluster_test.c - several counter-silo processes as one cluster, on
 * 127.0.0.1, driven through the public API only.
 *
 * Every case starts its own three silos (fresh cluster id, fresh ports, one
 * seed list naming all three) and stops them at the end; the teardown kills
 * whatever a failed case left running. The cases:
 *   formation       all three see three members
 *   placement       10,000 counters through an owner-routed client: each
 *                   activated once, spread over the silos, hardly forwarded
 *   pinned          one pinned client per silo, same counters: forwarded to
 *                   the owner, never activated twice, no increment lost
 *   actor_to_actor  AddTo: a call from an actor to a counter on any silo
 *   kill            kill -9 of a silo under load: bounded call times, only
 *                   "retry-able" errors, recovery within detection time, the
 *                   silo's return (new incarnation, no duplicate left behind)
 *   leave           SIGTERM of a silo under idempotent load: zero errors
 * The placement, pinned, kill and leave cases run over TCP and over gRPC;
 * formation, placement, kill and leave again with the member table in a real
 * redis-server, with one more case there:
 *   pause           SIGSTOP of a silo past the failure timeout, then SIGCONT:
 *                   declared dead, back as a new incarnation
 * The cluster_redis_dir group has the directory and the reminders in that
 * Redis too (the cases there are described where they are defined), among
 * them reminders: DurableCounter's durable reminders through kill -9 of a
 * silo and of the whole cluster. reminder_errors (gossip, one silo,
 * reminders in memory): Remind's errors, and a tick and its end.
 *
 * Waits poll a condition (never a fixed sleep hoping); the only sleeps are
 * the durations a scenario is meant to last (load running past a point).
 * The silos' "view" lines are echoed prefixed with "# silo N", which is what
 * to read when a case fails.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "counter_actor.h"
#include "storage/redis_server.h"

extern char **environ;

enum {
    N_SILOS = 3,
    ALL = 7,                /* bit i = silo i+1 */
    HEARTBEAT_MS = 200,
    FAILURE_TIMEOUT_MS = 2000,
    WINDOW = 256,           /* async calls in flight */
};

static quark_transport g_transport = QUARK_TRANSPORT_TCP;
static char g_cluster[64];  /* fresh per case */
static char g_seeds[128];   /* "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3" */
/* The cluster_redis group: the silos find each other in this server's
 * member table (--membership), with no seeds. */
static redis_server g_redis;
static char g_membership[64]; /* "" gossip */
static char g_directory[64];  /* "" hash */
static char g_dir_ttl[16];    /* --directory-ttl-ms of the case, "" the default */
static char g_storage[64];    /* --storage of the case, "" the default (memory) */
static char g_reminders[64];  /* --reminders of the group, "" the default (memory) */
static const char *g_silo_bin = COUNTER_SILO; /* or PROBE_SILO (the chaos case) */
static const char *g_load_type; /* the load's actor type (NULL: CounterActor) */
static uint64_t g_case_t0;  /* start of the running case, for the echoed lines */

static const char *tname(void)
{
    return g_transport == QUARK_TRANSPORT_TCP ? "tcp" : "grpc";
}

/* Poll `cond` every 10 ms for up to `ms` (status fetches open a connection
 * each: a 1 ms loop would load the silos we are measuring). */
#define POLL_UNTIL(cond, ms)                                       \
    ({                                                             \
        uint64_t pu_end_ = tu_now_ms() + (ms);                     \
        int pu_ok_ = 0;                                            \
        while (!(pu_ok_ = !!(cond)) && tu_now_ms() < pu_end_)      \
            tu_sleep_ms(10);                                       \
        pu_ok_;                                                    \
    })

/* ------------------------------------------------------------------ */
/* ports                                                              */
/* ------------------------------------------------------------------ */

static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int port_from_kernel(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* A free port, kept for the whole case (a restarted silo reuses it). Taken
 * below the kernel's ephemeral range when there is room: a port from that
 * range can be handed to an outgoing connection (the clients' and silos'
 * reconnect attempts) while its silo is down, and then the restarted silo
 * could not bind it, or a connect to it would connect to itself. */
static int pick_port(const int *taken, int n_taken)
{
    int lo = 32768;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d", &lo) != 1)
            lo = 32768;
        fclose(f);
    }
    static unsigned seed;
    if (!seed)
        seed = (unsigned)getpid() * 2654435761u ^ (unsigned)tu_now_ms();
    for (int attempt = 0; lo > 12000 && attempt < 200; attempt++) {
        int p = 10000 + (int)(rand_r(&seed) % (unsigned)(lo - 10000));
        bool dup = false;
        for (int i = 0; i < n_taken; i++)
            dup |= taken[i] == p;
        if (!dup && port_free(p))
            return p;
    }
    for (;;) {
        int p = port_from_kernel();
        bool dup = false;
        for (int i = 0; i < n_taken; i++)
            dup |= taken[i] == p;
        if (!dup)
            return p;
    }
}

/* ------------------------------------------------------------------ */
/* silo processes                                                     */
/* ------------------------------------------------------------------ */

typedef struct silo {
    int idx;                /* 0..2, printed as silo idx+1 */
    int port;
    char addr[32];          /* "127.0.0.1:port" */
    pid_t pid;              /* 0: not running */
    FILE *out;              /* its stdout */
    pthread_t reader;
    atomic_int listening;   /* saw its "listening" line */
    atomic_int eof;         /* its stdout closed */
} silo;

static silo g_silo[N_SILOS];
static const char *g_key_file[N_SILOS]; /* --cluster-key-file of each, or NULL */

/* Drain a silo's stdout for as long as it runs (a full pipe would block
 * it), note its "listening" line, echo everything else. */
static void *silo_reader(void *p)
{
    silo *s = p;
    char line[4096];
    while (fgets(line, sizeof line, s->out)) {
        if (strstr(line, "listening") && strstr(line, "(port "))
            atomic_store(&s->listening, 1);
        printf("# silo %d +%llums: %s%s", s->idx + 1,
               (unsigned long long)(tu_now_ms() - g_case_t0), line,
               strchr(line, '\n') ? "" : "\n");
        fflush(stdout);
    }
    atomic_store(&s->eof, 1);
    return NULL;
}

/* Start silo i on its port with the case's seeds; returns once it listens. */
static void silo_spawn(int i)
{
    silo *s = &g_silo[i];
    assert_int_equal(s->pid, 0);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    char hb[16], ft[16];
    snprintf(hb, sizeof hb, "%d", HEARTBEAT_MS);
    snprintf(ft, sizeof ft, "%d", FAILURE_TIMEOUT_MS);
    bool redis = g_membership[0] != '\0';
    char *argv[32] = {(char *)g_silo_bin, "--listen", s->addr, "--cluster-id", g_cluster,
                      redis ? "--membership" : "--seeds", redis ? g_membership : g_seeds,
                      "--heartbeat-ms", hb, "--failure-timeout-ms", ft, "--workers", "2"};
    int n = 13;
    if (g_directory[0]) {
        argv[n++] = "--directory";
        argv[n++] = g_directory;
    }
    if (g_dir_ttl[0]) {
        argv[n++] = "--directory-ttl-ms";
        argv[n++] = g_dir_ttl;
    }
    if (g_storage[0]) {
        argv[n++] = "--storage";
        argv[n++] = g_storage;
    }
    if (g_reminders[0]) {
        argv[n++] = "--reminders";
        argv[n++] = g_reminders;
    }
    if (g_key_file[i]) {
        argv[n++] = "--cluster-key-file";
        argv[n++] = (char *)g_key_file[i];
    }
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    pid_t pid;
    int rc = posix_spawn(&pid, g_silo_bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        fail_msg("posix_spawn %s: %s", g_silo_bin, strerror(rc));
    }
    s->pid = pid;
    s->out = fdopen(fds[0], "r");
    atomic_store(&s->listening, 0);
    atomic_store(&s->eof, 0);
    assert_int_equal(pthread_create(&s->reader, NULL, silo_reader, s), 0);
    assert_true(TU_WAIT_UNTIL(atomic_load(&s->listening) || atomic_load(&s->eof), 20000));
    if (!atomic_load(&s->listening))
        fail_msg("silo %d (%s) exited or never said it listens", i + 1, s->addr);
}

/* Signal silo i, wait for it to exit; returns its wait status. */
static int silo_signal(int i, int sig)
{
    silo *s = &g_silo[i];
    int status = 0;
    if (!s->pid)
        return -1;
    kill(s->pid, sig);
    while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
        ;
    s->pid = 0;
    pthread_join(s->reader, NULL); /* EOF follows the exit */
    fclose(s->out);
    s->out = NULL;
    return status;
}

static void assert_exited_0(int status, int i)
{
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("silo %d did not exit 0 (wait status 0x%x)", i + 1, status);
}

/* ------------------------------------------------------------------ */
/* status                                                             */
/* ------------------------------------------------------------------ */

static quark_silo_status *status_of(int i)
{
    quark_silo_status *st = NULL;
    if (quark_status_fetch(g_silo[i].addr, g_cluster, 1000, &st) != QUARK_OK)
        return NULL;
    return st;
}

/* Silo i reports exactly the silos of `want` (bit mask) as its members. If
 * `inc` is given, the incarnations it reports are stored by silo index. */
static bool reports_members(int i, unsigned want, uint64_t inc[N_SILOS])
{
    quark_silo_status *st = status_of(i);
    if (!st)
        return false;
    size_t n_want = (size_t)__builtin_popcount(want);
    bool ok = st->n_members == n_want;
    for (size_t m = 0; ok && m < st->n_members; m++) {
        int found = -1;
        for (int j = 0; j < N_SILOS; j++)
            if ((want & (1u << j)) && st->members[m].address &&
                !strcmp(st->members[m].address, g_silo[j].addr))
                found = j;
        ok = found >= 0;
        if (ok && inc)
            inc[found] = st->members[m].incarnation;
    }
    quark_status_free(st);
    return ok;
}

/* Every silo of `who` reports exactly `want` as members. */
static bool all_report(unsigned who, unsigned want)
{
    for (int i = 0; i < N_SILOS; i++)
        if ((who & (1u << i)) && !reports_members(i, want, NULL))
            return false;
    return true;
}

typedef struct totals {
    uint64_t activations, forwarded;
    uint64_t act[N_SILOS], fwd[N_SILOS];
} totals;

/* Sum the counters of the silos of `who`; false if one did not answer. */
static bool totals_of(unsigned who, totals *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < N_SILOS; i++) {
        if (!(who & (1u << i)))
            continue;
        quark_silo_status *st = status_of(i);
        if (!st)
            return false;
        t->act[i] = st->activations;
        t->fwd[i] = st->forwarded;
        t->activations += st->activations;
        t->forwarded += st->forwarded;
        quark_status_free(st);
    }
    return true;
}

static totals must_totals(unsigned who)
{
    totals t;
    if (!totals_of(who, &t))
        fail_msg("a silo did not report its status: %s", quark_last_error());
    return t;
}

/* ------------------------------------------------------------------ */
/* case set-up                                                        */
/* ------------------------------------------------------------------ */

static int case_setup(void **state)
{
    (void)state;
    static int n_case;
    g_case_t0 = tu_now_ms();
    snprintf(g_cluster, sizeof g_cluster, "ct-%d-%d", (int)getpid(), ++n_case);
    int ports[N_SILOS];
    for (int i = 0; i < N_SILOS; i++) {
        ports[i] = pick_port(ports, i);
        g_silo[i] = (silo){.idx = i, .port = ports[i]};
        snprintf(g_silo[i].addr, sizeof g_silo[i].addr, "127.0.0.1:%d", ports[i]);
    }
    snprintf(g_seeds, sizeof g_seeds, "%s,%s,%s", g_silo[0].addr, g_silo[1].addr,
             g_silo[2].addr);
    return 0;
}

static void rp_cleanup(void);

/* Whatever a case left running (it failed) is killed. */
static int case_teardown(void **state)
{
    (void)state;
    rp_cleanup();
    for (int i = 0; i < N_SILOS; i++)
        g_key_file[i] = NULL;
    g_dir_ttl[0] = '\0';
    g_storage[0] = '\0';
    g_silo_bin = COUNTER_SILO;
    g_load_type = NULL;
    for (int i = 0; i < N_SILOS; i++)
        if (g_silo[i].pid)
            silo_signal(i, SIGKILL);
    return 0;
}

/* Start the three silos and wait until all see all; returns the ms it took
 * from the last one listening. */
static uint64_t cluster_up(void)
{
    for (int i = 0; i < N_SILOS; i++)
        silo_spawn(i);
    uint64_t t0 = tu_now_ms();
    if (!POLL_UNTIL(all_report(ALL, ALL), 10000))
        fail_msg("the 3 silos did not all report 3 members within 10 s");
    return tu_now_ms() - t0;
}

/* SIGTERM every running silo: each must exit 0. */
static void cluster_down(void)
{
    for (int i = 0; i < N_SILOS; i++)
        if (g_silo[i].pid)
            assert_exited_0(silo_signal(i, SIGTERM), i);
}

/* ------------------------------------------------------------------ */
/* clients and calls                                                  */
/* ------------------------------------------------------------------ */

/* A client of the silos of `silos` (bit mask) with the given routing. */
static quark_client *client_new(quark_routing routing, unsigned silos)
{
    char cs[128] = "";
    for (int i = 0; i < N_SILOS; i++)
        if (silos & (1u << i)) {
            if (cs[0])
                strcat(cs, ",");
            strcat(cs, g_silo[i].addr);
        }
    quark_client_opts co;
    quark_client_opts_init(&co);
    co.connection_string = cs;
    co.cluster_id = g_cluster;
    co.transport = g_transport;
    co.routing = routing;
    co.retry.initial_backoff_ms = 20;
    co.retry.max_backoff_ms = 200;
    co.default_deadline_ms = 10000;
    quark_client *c;
    TU_OK(quark_client_create(&co, &c));
    TU_OK(quark_client_connect(c));
    return c;
}

enum { M_INC, M_GET };

/* One blocking call of Increment(delta) or Get on `ref`; *value gets the
 * reply's value (-1 on error). */
static quark_err call1(quark_ref *ref, int method, int64_t delta, int64_t *value)
{
    Quark__Examples__CounterValue *v = NULL;
    quark_err err;
    if (method == M_INC) {
        Quark__Examples__IncrementRequest req = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
        req.delta = delta;
        err = quark_examples_CounterActor_Increment(ref, &req, &v);
    } else {
        Quark__Examples__GetRequest req = QUARK__EXAMPLES__GET_REQUEST__INIT;
        err = quark_examples_CounterActor_Get(ref, &req, &v);
    }
    if (value)
        *value = err == QUARK_OK && v ? v->value : -1;
    quark_msg_free(v);
    return err;
}

/* A blocking call on counter `id` through a temporary reference. */
static quark_err call_id(quark_client *c, const char *id, int method, int64_t delta,
                         int64_t *value)
{
    quark_ref *r;
    quark_err err = quark_examples_CounterActor_ref(c, id, &r);
    if (err != QUARK_OK)
        return err;
    err = call1(r, method, delta, value);
    quark_ref_free(r);
    return err;
}

/* ---- a window of async calls over "prefix-0".."prefix-(n-1)" ---- */

typedef struct batch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inflight, done;
    int errors, wrong;   /* failed calls; replies other than `expect` */
    int64_t expect;      /* < 0: any value */
    quark_err first_err;
    char first_msg[256];
} batch;

static void batch_note_error(batch *b, quark_err err, const char *msg)
{
    if (b->errors++ == 0) {
        b->first_err = err;
        snprintf(b->first_msg, sizeof b->first_msg, "%s", msg ? msg : "");
    }
}

static void batch_cb(quark_err err, const char *msg, const Quark__Examples__CounterValue *v,
                     void *arg)
{
    batch *b = arg;
    pthread_mutex_lock(&b->mu);
    if (err != QUARK_OK)
        batch_note_error(b, err, msg);
    else if (b->expect >= 0 && (!v || v->value != b->expect))
        b->wrong++;
    b->inflight--;
    b->done++;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Wait (at most until `end`) until at most `max` calls are in flight. */
static bool batch_wait(batch *b, int max, uint64_t end)
{
    bool ok = true;
    pthread_mutex_lock(&b->mu);
    while (b->inflight > max && ok) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        ok = tu_now_ms() < end;
    }
    pthread_mutex_unlock(&b->mu);
    return ok;
}

/* Increment (by 1) or Get each of the n counters once, WINDOW calls in
 * flight; returns the finished batch (the caller frees it). */
static batch *batch_run(quark_client *c, int method, const char *prefix, int n, int64_t expect)
{
    batch *b = calloc(1, sizeof *b);
    assert_non_null(b);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->expect = expect;
    uint64_t end = tu_now_ms() + 120000;
    char id[48];
    Quark__Examples__IncrementRequest inc = QUARK__EXAMPLES__INCREMENT_REQUEST__INIT;
    inc.delta = 1;
    Quark__Examples__GetRequest get = QUARK__EXAMPLES__GET_REQUEST__INIT;
    for (int i = 0; i < n; i++) {
        if (!batch_wait(b, WINDOW - 1, end))
            fail_msg("%s: calls did not complete within 120 s", prefix); /* b leaks: callbacks may still run */
        snprintf(id, sizeof id, "%s-%d", prefix, i);
        quark_ref *r;
        TU_OK(quark_examples_CounterActor_ref(c, id, &r));
        pthread_mutex_lock(&b->mu);
        b->inflight++;
        pthread_mutex_unlock(&b->mu);
        quark_err err = method == M_INC
                            ? quark_examples_CounterActor_Increment_async(r, &inc, batch_cb, b)
                            : quark_examples_CounterActor_Get_async(r, &get, batch_cb, b);
        quark_ref_free(r);
        if (err != QUARK_OK) { /* the callback will not run */
            pthread_mutex_lock(&b->mu);
            b->inflight--;
            b->done++;
            batch_note_error(b, err, quark_last_error());
            pthread_mutex_unlock(&b->mu);
        }
    }
    if (!batch_wait(b, 0, end))
        fail_msg("%s: calls did not complete within 120 s", prefix);
    assert_int_equal(b->done, n);
    return b;
}

static void batch_check(batch *b, const char *what)
{
    if (b->errors)
        fail_msg("%s: %d of %d calls failed, first %s: %s", what, b->errors, b->done,
                 quark_errname(b->first_err), b->first_msg);
    if (b->wrong)
        fail_msg("%s: %d of %d replies were not %lld", what, b->wrong, b->done,
                 (long long)b->expect);
}

static void batch_free(batch *b)
{
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}

/* ---- load generator: threads looping blocking calls, recording each ---- */

typedef struct rec {
    uint64_t start, dur;  /* ms (monotonic), ms */
    quark_err err;
    int id;               /* counter index */
    char *msg;            /* the error's message (failed calls only) */
} rec;

typedef struct loader {
    pthread_t th;
    quark_client *c;
    int idx, method, n_ids;
    const char *prefix;
    uint32_t deadline_ms;
    atomic_int *stop;
    atomic_long *ok_calls;
    int setup_err;        /* a reference could not be made */
    rec *recs;
    size_t n, cap;
} loader;

static void *loader_main(void *p)
{
    loader *l = p;
    quark_ref **refs = calloc((size_t)l->n_ids, sizeof *refs);
    char id[48];
    for (int i = 0; i < l->n_ids; i++) {
        snprintf(id, sizeof id, "%s-%d", l->prefix, i);
        quark_err err = g_load_type ? quark_ref_new(l->c, &quark_examples_CounterActor_interface,
                                                    g_load_type, id, &refs[i])
                                    : quark_examples_CounterActor_ref(l->c, id, &refs[i]);
        if (err != QUARK_OK) {
            l->setup_err = 1;
            goto out;
        }
        quark_ref_set_deadline(refs[i], l->deadline_ms);
    }
    for (unsigned k = (unsigned)l->idx * 97u; !atomic_load(l->stop); k++) {
        int i = (int)(k % (unsigned)l->n_ids);
        uint64_t t0 = tu_now_ms();
        quark_err err = call1(refs[i], l->method, 1, NULL);
        uint64_t t1 = tu_now_ms();
        if (l->n == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 4096;
            l->recs = realloc(l->recs, l->cap * sizeof *l->recs);
        }
        l->recs[l->n++] = (rec){.start = t0, .dur = t1 - t0, .err = err, .id = i,
                                .msg = err != QUARK_OK ? strdup(quark_last_error()) : NULL};
        if (err == QUARK_OK)
            atomic_fetch_add(l->ok_calls, 1);
    }
out:
    for (int i = 0; i < l->n_ids; i++)
        if (refs[i])
            quark_ref_free(refs[i]);
    free(refs);
    return NULL;
}

typedef struct load {
    int n;
    loader *l;
    atomic_int stop;
    atomic_long ok_calls;
} load;

static void load_start(load *ld, quark_client *c, int threads, int method, const char *prefix,
                       int n_ids, uint32_t deadline_ms)
{
    ld->n = threads;
    ld->l = calloc((size_t)threads, sizeof *ld->l);
    atomic_store(&ld->stop, 0);
    atomic_store(&ld->ok_calls, 0);
    for (int t = 0; t < threads; t++) {
        ld->l[t] = (loader){.c = c, .idx = t, .method = method, .n_ids = n_ids,
                            .prefix = prefix, .deadline_ms = deadline_ms, .stop = &ld->stop,
                            .ok_calls = &ld->ok_calls};
        assert_int_equal(pthread_create(&ld->l[t].th, NULL, loader_main, &ld->l[t]), 0);
    }
}

static void load_stop(load *ld)
{
    atomic_store(&ld->stop, 1);
    for (int t = 0; t < ld->n; t++)
        pthread_join(ld->l[t].th, NULL);
    for (int t = 0; t < ld->n; t++)
        if (ld->l[t].setup_err)
            fail_msg("load thread %d could not make its references", t);
}

static void load_free(load *ld)
{
    for (int t = 0; t < ld->n; t++) {
        for (size_t k = 0; k < ld->l[t].n; k++)
            free(ld->l[t].recs[k].msg);
        free(ld->l[t].recs);
    }
    free(ld->l);
}

/* Iterate the records of all threads. */
#define FOR_EACH_REC(ld, r)                                          \
    for (int fe_t_ = 0; fe_t_ < (ld)->n; fe_t_++)                    \
        for (rec *r = (ld)->l[fe_t_].recs; r < (ld)->l[fe_t_].recs + (ld)->l[fe_t_].n; r++)

/* ------------------------------------------------------------------ */
/* the cases                                                          */
/* ------------------------------------------------------------------ */

static void test_formation(void **state)
{
    (void)state;
    uint64_t ms = cluster_up();
    quark_silo_status *st = status_of(0);
    assert_non_null(st);
    char line[1024];
    quark_status_format(st, line, sizeof line);
    quark_status_free(st);
    printf("# formation: 3 silos saw 3 members %llu ms after the last one listened (%s)\n",
           (unsigned long long)ms, line);
    cluster_down();
}

enum { N_PLACE = 10000 };

static void test_placement(void **state)
{
    (void)state;
    cluster_up();
    quark_client *c = client_new(QUARK_ROUTE_OWNER, ALL);

    /* The client learns the membership from the silos; until it has, a
     * call may go to a silo that forwards it. Wait (Get on 64 of the
     * counters, which only activates them at 0) until a round of calls
     * adds no forwarded call: from then on the client knows the owners. */
    uint64_t fwd_before = must_totals(ALL).forwarded;
    int rounds = 0;
    for (;;) {
        batch *b = batch_run(c, M_GET, "c", 64, 0);
        batch_check(b, "warm-up Get");
        batch_free(b);
        rounds++;
        uint64_t f = must_totals(ALL).forwarded;
        if (f == fwd_before)
            break;
        if (rounds >= 100)
            fail_msg("the owner-routed client still had calls forwarded after %d rounds", rounds);
        fwd_before = f;
        tu_sleep_ms(50);
    }

    uint64_t t0 = tu_now_ms();
    batch *b = batch_run(c, M_INC, "c", N_PLACE, 1);
    uint64_t inc_ms = tu_now_ms() - t0;
    batch_check(b, "Increment c-*");
    batch_free(b);

    totals t = must_totals(ALL);
    uint64_t fwd = t.forwarded - fwd_before;
    printf("# placement[%s]: %d increments in %llu ms; activations %llu = %llu + %llu + %llu; "
           "forwarded %llu (%llu during warm-up, %d round(s))\n",
           tname(), N_PLACE, (unsigned long long)inc_ms, (unsigned long long)t.activations,
           (unsigned long long)t.act[0], (unsigned long long)t.act[1],
           (unsigned long long)t.act[2], (unsigned long long)fwd,
           (unsigned long long)fwd_before, rounds);
    assert_int_equal(t.activations, N_PLACE);
    for (int i = 0; i < N_SILOS; i++)
        if (t.act[i] < N_PLACE / 5)
            fail_msg("silo %d hosts %llu of %d activations (< 20%%)", i + 1,
                     (unsigned long long)t.act[i], N_PLACE);
    if (fwd >= N_PLACE / 100)
        fail_msg("%llu of %d owner-routed calls were forwarded (>= 1%%)",
                 (unsigned long long)fwd, N_PLACE);

    t0 = tu_now_ms();
    b = batch_run(c, M_GET, "c", N_PLACE, 1);
    batch_check(b, "Get c-*");
    batch_free(b);
    printf("# placement[%s]: Get of all %d = 1 in %llu ms\n", tname(), N_PLACE,
           (unsigned long long)(tu_now_ms() - t0));
    assert_int_equal(must_totals(ALL).activations, N_PLACE);

    quark_client_free(c);
    cluster_down();
}

enum { N_PINNED_IDS = 50, PINNED_ROUNDS = 100 };

typedef struct pinned_arg {
    pthread_t th;
    quark_client *c;
    int errors;
    quark_err first_err;
    char first_msg[256];
} pinned_arg;

static void *pinned_main(void *p)
{
    pinned_arg *a = p;
    char id[32];
    for (int round = 0; round < PINNED_ROUNDS; round++)
        for (int i = 0; i < N_PINNED_IDS; i++) {
            snprintf(id, sizeof id, "p-%d", i);
            quark_err err = call_id(a->c, id, M_INC, 1, NULL);
            if (err != QUARK_OK && a->errors++ == 0) {
                a->first_err = err;
                snprintf(a->first_msg, sizeof a->first_msg, "%s", quark_last_error());
            }
        }
    return NULL;
}

static void test_pinned(void **state)
{
    (void)state;
    cluster_up();
    pinned_arg a[N_SILOS];
    for (int i = 0; i < N_SILOS; i++)
        a[i] = (pinned_arg){.c = client_new(QUARK_ROUTE_PINNED, 1u << i)};
    uint64_t t0 = tu_now_ms();
    for (int i = 0; i < N_SILOS; i++)
        assert_int_equal(pthread_create(&a[i].th, NULL, pinned_main, &a[i]), 0);
    for (int i = 0; i < N_SILOS; i++)
        pthread_join(a[i].th, NULL);
    uint64_t ms = tu_now_ms() - t0;
    for (int i = 0; i < N_SILOS; i++)
        if (a[i].errors)
            fail_msg("client pinned to silo %d: %d calls failed, first %s: %s", i + 1,
                     a[i].errors, quark_errname(a[i].first_err), a[i].first_msg);

    /* Every increment counted once, whichever client reads. */
    char id[32];
    for (int i = 0; i < N_PINNED_IDS; i++) {
        snprintf(id, sizeof id, "p-%d", i);
        int64_t v;
        TU_OK(call_id(a[i % N_SILOS].c, id, M_GET, 0, &v));
        if (v != N_SILOS * PINNED_ROUNDS)
            fail_msg("%s = %lld, wanted %d", id, (long long)v, N_SILOS * PINNED_ROUNDS);
    }
    totals t = must_totals(ALL);
    printf("# pinned[%s]: %d increments in %llu ms; activations %llu (%llu/%llu/%llu); "
           "forwarded %llu/%llu/%llu\n",
           tname(), N_SILOS * PINNED_ROUNDS * N_PINNED_IDS, (unsigned long long)ms,
           (unsigned long long)t.activations, (unsigned long long)t.act[0],
           (unsigned long long)t.act[1], (unsigned long long)t.act[2],
           (unsigned long long)t.fwd[0], (unsigned long long)t.fwd[1],
           (unsigned long long)t.fwd[2]);
    assert_int_equal(t.activations, N_PINNED_IDS); /* each id activated once */
    for (int i = 0; i < N_SILOS; i++)
        if (t.fwd[i] == 0)
            fail_msg("silo %d forwarded nothing, though its client called every id", i + 1);

    for (int i = 0; i < N_SILOS; i++)
        quark_client_free(a[i].c);
    cluster_down();
}

enum { N_A2A = 200 };

static void test_actor_to_actor(void **state)
{
    (void)state;
    cluster_up();
    quark_client *c = client_new(QUARK_ROUTE_PINNED, 1u << 0);
    char id[32], target[32];
    uint64_t t0 = tu_now_ms();
    for (int i = 0; i < N_A2A; i++) {
        snprintf(id, sizeof id, "a-%d", i);
        snprintf(target, sizeof target, "t-%d", i);
        quark_ref *r;
        TU_OK(quark_examples_CounterActor_ref(c, id, &r));
        Quark__Examples__AddToRequest req = QUARK__EXAMPLES__ADD_TO_REQUEST__INIT;
        req.target = target;
        req.delta = 5;
        Quark__Examples__CounterValue *v = NULL;
        quark_err err = quark_examples_CounterActor_AddTo(r, &req, &v);
        quark_ref_free(r);
        if (err != QUARK_OK)
            fail_msg("AddTo(%s -> %s) -> %s: %s", id, target, quark_errname(err),
                     quark_last_error());
        assert_int_equal(v->value, 5);
        quark_msg_free(v);
    }
    uint64_t ms = tu_now_ms() - t0;
    for (int i = 0; i < N_A2A; i++) {
        snprintf(target, sizeof target, "t-%d", i);
        int64_t v;
        TU_OK(call_id(c, target, M_GET, 0, &v));
        assert_int_equal(v, 5);
    }
    totals t = must_totals(ALL);
    printf("# actor_to_actor: %d AddTo in %llu ms; activations %llu (%llu/%llu/%llu), "
           "forwarded %llu\n",
           N_A2A, (unsigned long long)ms, (unsigned long long)t.activations,
           (unsigned long long)t.act[0], (unsigned long long)t.act[1],
           (unsigned long long)t.act[2], (unsigned long long)t.forwarded);
    assert_int_equal(t.activations, 2 * N_A2A);
    for (int i = 0; i < N_SILOS; i++) /* the calls did cross silos */
        if (t.act[i] == 0)
            fail_msg("silo %d hosts no counter", i + 1);
    quark_client_free(c);
    cluster_down();
}

enum {
    N_LOAD_IDS = 300,
    LOAD_THREADS = 4,
    CALL_DEADLINE_MS = 4000,
    RECOVERY_MS = FAILURE_TIMEOUT_MS + 3000, /* detection time plus margin */
};

static bool err_after_loss_ok(quark_err e)
{
    return e == QUARK_EUNKNOWN || e == QUARK_EUNAVAILABLE || e == QUARK_ETIMEDOUT;
}

/* Silo 2's view of itself and everyone's view of it: all three report
 * three members, and silo 2 with an incarnation above `old`. */
static bool back_with_new_incarnation(uint64_t old)
{
    for (int i = 0; i < N_SILOS; i++) {
        uint64_t inc[N_SILOS] = {0};
        if (!reports_members(i, ALL, inc) || inc[1] <= old)
            return false;
    }
    return true;
}

static void test_kill(void **state)
{
    (void)state;
    cluster_up();
    quark_silo_status *st = status_of(1);
    assert_non_null(st);
    uint64_t old_inc = st->incarnation;
    quark_status_free(st);

    quark_client *c = client_new(QUARK_ROUTE_OWNER, ALL);
    load ld;
    load_start(&ld, c, LOAD_THREADS, M_INC, "k", N_LOAD_IDS, CALL_DEADLINE_MS);
    /* under way before the kill */
    bool loaded = TU_WAIT_UNTIL(atomic_load(&ld.ok_calls) >= 2000, 30000);

    uint64_t kill_t = tu_now_ms();
    silo_signal(1, SIGKILL);
    bool two = POLL_UNTIL(all_report(1u << 0 | 1u << 2, 1u << 0 | 1u << 2), RECOVERY_MS);
    uint64_t two_ms = tu_now_ms() - kill_t;
    /* keep the load running ~4 s past the point where calls must succeed */
    uint64_t end = kill_t + RECOVERY_MS + 4000;
    if (tu_now_ms() < end)
        tu_sleep_ms((unsigned)(end - tu_now_ms()));
    load_stop(&ld); /* no assertion before this: the threads use `ld` */

    assert_true(loaded);
    size_t n = 0, n_after = 0, n_late = 0, failed = 0, by_kind[3] = {0};
    uint64_t max_dur = 0, last_fail_start = 0;
    bool any_fail = false;
    bool touched[N_LOAD_IDS] = {false};
    FOR_EACH_REC(&ld, r) {
        n++;
        touched[r->id] = true;
        if (r->dur > max_dur)
            max_dur = r->dur;
        if (r->dur > CALL_DEADLINE_MS + 1000)
            fail_msg("a call took %llu ms (deadline %d ms): %s %s",
                     (unsigned long long)r->dur, CALL_DEADLINE_MS, quark_errname(r->err),
                     r->msg ? r->msg : "");
        bool done_before_kill = r->start + r->dur < kill_t;
        if (r->start >= kill_t)
            n_after++;
        if (r->start > kill_t + RECOVERY_MS)
            n_late++;
        if (r->err == QUARK_OK)
            continue;
        failed++;
        by_kind[r->err == QUARK_EUNKNOWN ? 0 : r->err == QUARK_EUNAVAILABLE ? 1 : 2]++;
        if (!any_fail || r->start > last_fail_start)
            last_fail_start = r->start;
        any_fail = true;
        if (done_before_kill)
            fail_msg("a call failed before the kill: %s: %s", quark_errname(r->err), r->msg);
        if (!err_after_loss_ok(r->err))
            fail_msg("a call failed after the kill with %s (%s); only EUNKNOWN, EUNAVAILABLE "
                     "or ETIMEDOUT are expected",
                     quark_errname(r->err), r->msg);
        if (r->start > kill_t + RECOVERY_MS)
            fail_msg("a call started %llu ms after the kill failed: %s: %s",
                     (unsigned long long)(r->start - kill_t), quark_errname(r->err), r->msg);
    }
    printf("# kill[%s]: %zu calls (%zu started after the kill, %zu after kill+%d ms); %zu failed "
           "(EUNKNOWN %zu, EUNAVAILABLE %zu, ETIMEDOUT %zu); longest call %llu ms; last failed "
           "call started %lld ms after the kill; survivors saw 2 members after %llu ms%s\n",
           tname(), n, n_after, n_late, RECOVERY_MS, failed, by_kind[0], by_kind[1], by_kind[2],
           (unsigned long long)max_dur,
           any_fail ? (long long)last_fail_start - (long long)kill_t : -1LL,
           (unsigned long long)two_ms, two ? "" : " (NOT within the limit)");
    if (!two)
        fail_msg("silos 1 and 3 did not report exactly 2 members within %d ms of the kill",
                 RECOVERY_MS);
    if (n_late < 100)
        fail_msg("only %zu calls started after kill + %d ms: the load did not recover",
                 n_late, RECOVERY_MS);
    load_free(&ld);

    /* Silo 2 comes back on its port: a new incarnation everyone sees. */
    uint64_t t0 = tu_now_ms();
    silo_spawn(1);
    if (!POLL_UNTIL(back_with_new_incarnation(old_inc), 10000))
        fail_msg("silo 2 restarted: not all 3 silos report 3 members with silo 2's "
                 "incarnation above %llu within 10 s",
                 (unsigned long long)old_inc);
    uint64_t back_ms = tu_now_ms() - t0;

    /* Every counter answers again. */
    char id[32];
    for (int i = 0; i < N_LOAD_IDS; i++) {
        snprintf(id, sizeof id, "k-%d", i);
        touched[i] = true;
        quark_err err = call_id(c, id, M_INC, 1, NULL);
        if (err != QUARK_OK)
            fail_msg("Increment(%s) after silo 2 came back -> %s: %s", id, quark_errname(err),
                     quark_last_error());
    }
    size_t n_touched = 0;
    for (int i = 0; i < N_LOAD_IDS; i++)
        n_touched += touched[i];
    /* Ownership moved back to silo 2: the silos that stood in for it
     * deactivate what they no longer own, leaving one activation each. */
    totals t = {0};
    t0 = tu_now_ms();
    bool settled = POLL_UNTIL(totals_of(ALL, &t) && t.activations == n_touched, 10000);
    printf("# kill[%s]: silo 2 back (incarnation > %llu) seen by all after %llu ms; "
           "activations %llu (%llu/%llu/%llu) for %zu counters after %llu ms\n",
           tname(), (unsigned long long)old_inc, (unsigned long long)back_ms,
           (unsigned long long)t.activations, (unsigned long long)t.act[0],
           (unsigned long long)t.act[1], (unsigned long long)t.act[2], n_touched,
           (unsigned long long)(tu_now_ms() - t0));
    if (!settled)
        fail_msg("activations stayed at %llu, not %zu (duplicates left after ownership moved "
                 "back)",
                 (unsigned long long)t.activations, n_touched);

    quark_client_free(c);
    cluster_down();
}

/* How many TCP sockets this process holds to 127.0.0.1:`port` (in any
 * state): /proc/self/fd's socket inodes matched against /proc/net/tcp. */
static int my_sockets_to(int port)
{
    unsigned long inodes[1024];
    int ni = 0;
    DIR *dir = opendir("/proc/self/fd");
    assert_non_null(dir);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL && ni < 1024) {
        char path[300], link[64];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n <= 0)
            continue;
        link[n] = '\0';
        unsigned long ino;
        if (sscanf(link, "socket:[%lu]", &ino) == 1)
            inodes[ni++] = ino;
    }
    closedir(dir);
    int count = 0;
    FILE *f = fopen("/proc/net/tcp", "r");
    assert_non_null(f);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned rport, st;
        unsigned long ino;
        if (sscanf(line, " %*d: %*x:%*x %*x:%x %x %*x:%*x %*x:%*x %*x %*u %*u %lu", &rport, &st,
                   &ino) != 3)
            continue;
        for (int i = 0; i < ni; i++)
            if (inodes[i] == ino && (int)rport == port)
                count++;
    }
    fclose(f);
    return count;
}

static void test_leave(void **state)
{
    (void)state;
    cluster_up();
    quark_client *c = client_new(QUARK_ROUTE_OWNER, ALL);
    batch *b = batch_run(c, M_INC, "g", N_LOAD_IDS, 1);
    batch_check(b, "Increment g-*");
    batch_free(b);

    load ld;
    load_start(&ld, c, LOAD_THREADS, M_GET, "g", N_LOAD_IDS, CALL_DEADLINE_MS);
    bool loaded = TU_WAIT_UNTIL(atomic_load(&ld.ok_calls) >= 2000, 30000);

    uint64_t term_t = tu_now_ms();
    int status = silo_signal(2, SIGTERM);
    uint64_t exit_t = tu_now_ms();
    bool two = POLL_UNTIL(all_report(1u << 0 | 1u << 1, 1u << 0 | 1u << 1), 3000);
    uint64_t two_ms = tu_now_ms() - exit_t;
    uint64_t end = exit_t + 3000 + 2000; /* load keeps running past the limit */
    if (tu_now_ms() < end)
        tu_sleep_ms((unsigned)(end - tu_now_ms()));
    load_stop(&ld);

    assert_true(loaded);
    assert_exited_0(status, 2);
    size_t n = 0, n_after = 0, failed = 0;
    uint64_t max_dur = 0;
    const rec *first_fail = NULL;
    FOR_EACH_REC(&ld, r) {
        n++;
        n_after += r->start >= term_t;
        if (r->dur > max_dur)
            max_dur = r->dur;
        if (r->err != QUARK_OK && failed++ == 0)
            first_fail = r;
    }
    printf("# leave[%s]: %zu Get calls (%zu started after SIGTERM), %zu failed; longest %llu "
           "ms; silo 3 exited %llu ms after SIGTERM; the others saw 2 members %llu ms after "
           "its exit%s\n",
           tname(), n, n_after, failed, (unsigned long long)max_dur,
           (unsigned long long)(exit_t - term_t), (unsigned long long)two_ms,
           two ? "" : " (NOT within the limit)");
    if (first_fail)
        fail_msg("%zu Get calls failed during a graceful leave; first, %lld ms after SIGTERM: "
                 "%s: %s",
                 failed, (long long)first_fail->start - (long long)term_t,
                 quark_errname(first_fail->err), first_fail->msg);
    if (max_dur > CALL_DEADLINE_MS + 1000)
        fail_msg("a Get took %llu ms", (unsigned long long)max_dur);
    if (!two)
        fail_msg("silos 1 and 2 did not report exactly 2 members within 3 s of silo 3's exit");
    if (n_after < 100)
        fail_msg("only %zu calls started after the SIGTERM", n_after);
    load_free(&ld);
    /* The client keeps no socket to the silo that left (its blocking calls'
     * own sockets included: they would sit half-closed until disconnect). */
    int left = -1;
    if (!POLL_UNTIL((left = my_sockets_to(g_silo[2].port)) == 0, 5000))
        fail_msg("the client still holds %d sockets to the silo that left", left);

    quark_client_free(c);
    cluster_down();
}

/* ------------------------------------------------------------------ */
/* the cluster key                                                    */
/* ------------------------------------------------------------------ */

static void key_file(char *path, size_t cap, const char *key)
{
    snprintf(path, cap, "/tmp/quark-cluster-key-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_true(write(fd, key, strlen(key)) == (ssize_t)strlen(key));
    close(fd);
}

/* Silos 1 and 2 share a key, silo 3 has another: 1 and 2 form a cluster,
 * 3 (seeded with both, and in their seeds) never joins either side. */
/* SIGSTOP a silo past the failure timeout: the others declare it dead and
 * go on as two; after SIGCONT it finds itself dead and comes back as a new
 * incarnation, and all three see three members again. */
static void test_pause(void **state)
{
    (void)state;
    cluster_up();
    uint64_t inc[N_SILOS] = {0}, inc2[N_SILOS] = {0};
    assert_true(reports_members(0, ALL, inc));
    uint64_t t0 = tu_now_ms();
    kill(g_silo[1].pid, SIGSTOP);
    bool two = POLL_UNTIL(all_report(1u << 0 | 1u << 2, 1u << 0 | 1u << 2), RECOVERY_MS);
    uint64_t two_ms = tu_now_ms() - t0;
    kill(g_silo[1].pid, SIGCONT);
    uint64_t t1 = tu_now_ms();
    bool three = POLL_UNTIL(all_report(ALL, ALL), RECOVERY_MS);
    uint64_t three_ms = tu_now_ms() - t1;
    printf("# pause: the others saw 2 members %llu ms after SIGSTOP, 3 again %llu ms after "
           "SIGCONT\n", (unsigned long long)two_ms, (unsigned long long)three_ms);
    assert_true(two);
    assert_true(three);
    assert_true(reports_members(0, ALL, inc2));
    assert_true(inc2[1] > inc[1]); /* a new incarnation, never the old one */
    assert_true(inc2[0] == inc[0] && inc2[2] == inc[2]);
    cluster_down();
}

static void test_cluster_key(void **state)
{
    (void)state;
    char a[64], b[64];
    key_file(a, sizeof a, "the key of silos 1 and 2\n");
    key_file(b, sizeof b, "another key\n");
    g_key_file[0] = g_key_file[1] = a;
    g_key_file[2] = b;
    for (int i = 0; i < N_SILOS; i++)
        silo_spawn(i);
    if (!POLL_UNTIL(all_report(0x3, 0x3), 10000))
        fail_msg("silos 1 and 2, sharing a key, did not form a cluster of two within 10 s");
    tu_sleep_ms(10 * HEARTBEAT_MS); /* silo 3 gossips to them, they to it, all refused */
    assert_true(all_report(0x3, 0x3));
    assert_true(reports_members(2, 0x4, NULL));
    cluster_down();
    unlink(a);
    unlink(b);
}

/* ---- the Redis directory ---- */

enum { N_STAY = 200 };

/* The directory entry of counter "<prefix>-<i>" ("<silo> <incarnation> <activation>"),
 * read with GET as an operator would; "" if there is none. */
/* `cmd` (GET, PTTL, DEL) on the directory key of counter "<prefix>-<i>",
 * found with KEYS as an operator would; NULL if it has none. */
static redisReply *dir_command(const char *cmd, const char *prefix, int i)
{
    redisReply *keys = rs_command(&g_redis, "KEYS %s/directory/*/%s-%d", g_cluster, prefix, i);
    assert_non_null(keys);
    redisReply *v = NULL;
    if (keys->type == REDIS_REPLY_ARRAY && keys->elements == 1)
        v = rs_command(&g_redis, "%s %s", cmd, keys->element[0]->str);
    else if (keys->type == REDIS_REPLY_ARRAY && keys->elements > 1)
        fail_msg("%zu directory keys for counter %s-%d", keys->elements, prefix, i);
    freeReplyObject(keys);
    return v;
}

static void entry_of_id(const char *prefix, int i, char *out, size_t cap)
{
    out[0] = '\0';
    redisReply *v = dir_command("GET", prefix, i);
    if (v && v->type == REDIS_REPLY_STRING)
        snprintf(out, cap, "%s", v->str);
    if (v)
        freeReplyObject(v);
}

static void entry_of(int i, char *out, size_t cap)
{
    entry_of_id("s", i, out, cap);
}

/* An entry's TTL in ms (PTTL: -2 none, -1 no TTL). */
static long long pttl_of(const char *prefix, int i)
{
    redisReply *v = dir_command("PTTL", prefix, i);
    long long t = v && v->type == REDIS_REPLY_INTEGER ? v->integer : -2;
    if (v)
        freeReplyObject(v);
    return t;
}

static void del_entry(const char *prefix, int i)
{
    redisReply *v = dir_command("DEL", prefix, i);
    assert_non_null(v);
    assert_int_equal(v->integer, 1);
    freeReplyObject(v);
}

enum { N_RENEW = 10, RENEW_TTL_MS = 1500 };

static int64_t must_inc(quark_client *c, const char *prefix, int i)
{
    char id[32];
    snprintf(id, sizeof id, "%s-%d", prefix, i);
    int64_t v = -1;
    quark_err err = call_id(c, id, M_INC, 1, &v);
    if (err != QUARK_OK)
        fail_msg("Increment(%s) -> %s: %s", id, quark_errname(err), quark_last_error());
    return v;
}

/* Entries live while their activations do (renewed every third of the
 * TTL), and an activation whose entry is gone goes: the next call starts a
 * new one (an in-memory counter at 0) with a new entry. */
static void test_dir_renewal(void **state)
{
    (void)state;
    snprintf(g_dir_ttl, sizeof g_dir_ttl, "%d", RENEW_TTL_MS);
    silo_spawn(0);
    if (!POLL_UNTIL(all_report(1u, 1u), 10000))
        fail_msg("silo 1 did not see itself within 10 s");
    quark_client *c = client_new(QUARK_ROUTE_OWNER, 1u);
    char first[N_RENEW][128];
    for (int i = 0; i < N_RENEW; i++) {
        assert_int_equal(must_inc(c, "r", i), 1);
        entry_of_id("r", i, first[i], sizeof first[i]);
        assert_true(first[i][0] != '\0');
    }
    tu_sleep_ms(3 * RENEW_TTL_MS); /* three TTLs: only renewal keeps them */
    for (int i = 0; i < N_RENEW; i++) {
        char now[128];
        entry_of_id("r", i, now, sizeof now);
        long long ttl = pttl_of("r", i);
        if (strcmp(now, first[i]) != 0 || ttl <= 0 || ttl > RENEW_TTL_MS)
            fail_msg("after 3 TTLs the entry of r-%d is '%s' (PTTL %lld), not '%s' renewed", i,
                     now, ttl, first[i]);
        assert_int_equal(must_inc(c, "r", i), 2);
    }
    del_entry("r", 0);
    /* within a renewal period (+ margin) the activation of r-0 is gone */
    tu_sleep_ms(RENEW_TTL_MS / 3 * 2 + 300);
    assert_int_equal(must_inc(c, "r", 0), 1);
    char again[128];
    entry_of_id("r", 0, again, sizeof again);
    printf("# dir_renewal: entries renewed over %d ms (ttl %d); r-0's entry deleted -> "
           "new activation, entry '%s' (was '%s')\n",
           3 * RENEW_TTL_MS, RENEW_TTL_MS, again, first[0]);
    assert_true(again[0] && strcmp(again, first[0]) != 0);
    assert_int_equal(must_inc(c, "r", 1), 3);
    quark_client_free(c);
    cluster_down();
}

/* With the Redis directory an actor stays where it was activated when a
 * silo joins: the in-memory counters keep their values (a moved actor
 * would start again at 0), their entries do not change, the new silo
 * hosts none of them, and each has one activation. */
static void test_dir_stays(void **state)
{
    (void)state;
    silo_spawn(0);
    silo_spawn(1);
    if (!POLL_UNTIL(all_report(3u, 3u), 10000))
        fail_msg("silos 1 and 2 did not see each other within 10 s");
    quark_client *c = client_new(QUARK_ROUTE_OWNER, 3u);
    char id[32];
    static char before[N_STAY][128];
    int on[2] = {0, 0};
    for (int i = 0; i < N_STAY; i++) {
        snprintf(id, sizeof id, "s-%d", i);
        int64_t v = -1;
        quark_err err = call_id(c, id, M_INC, 1, &v);
        if (err != QUARK_OK || v != 1)
            fail_msg("Increment(%s) -> %s %lld: %s", id, quark_errname(err), (long long)v,
                     quark_last_error());
        entry_of(i, before[i], sizeof before[i]);
        if (!before[i][0])
            fail_msg("no directory entry for %s after a call", id);
        for (int k = 0; k < 2; k++)
            if (!strncmp(before[i], g_silo[k].addr, strlen(g_silo[k].addr)) &&
                before[i][strlen(g_silo[k].addr)] == ' ')
                on[k]++;
    }
    printf("# dir_stays: %d counters registered: %d on silo 1, %d on silo 2 (e.g. '%s')\n",
           N_STAY, on[0], on[1], before[0]);
    assert_int_equal(on[0] + on[1], N_STAY);
    assert_true(on[0] > 0 && on[1] > 0);

    silo_spawn(2);
    if (!POLL_UNTIL(all_report(ALL, ALL), 10000))
        fail_msg("the 3 silos did not all report 3 members within 10 s");
    quark_client_free(c);
    c = client_new(QUARK_ROUTE_OWNER, ALL);
    uint64_t t0 = tu_now_ms();
    for (int i = 0; i < N_STAY; i++) {
        snprintf(id, sizeof id, "s-%d", i);
        int64_t v = -1;
        quark_err err = call_id(c, id, M_INC, 1, &v);
        if (err != QUARK_OK || v != 2)
            fail_msg("Increment(%s) after silo 3 joined -> %s %lld (2 if it stayed): %s", id,
                     quark_errname(err), (long long)v, quark_last_error());
        char now[128];
        entry_of(i, now, sizeof now);
        if (strcmp(now, before[i]) != 0)
            fail_msg("the entry of %s changed from '%s' to '%s'", id, before[i], now);
    }
    uint64_t ms = tu_now_ms() - t0;
    totals t = must_totals(ALL);
    printf("# dir_stays: after silo 3 joined, %d increments in %llu ms all = 2; activations "
           "%llu/%llu/%llu; forwarded %llu/%llu/%llu\n",
           N_STAY, (unsigned long long)ms, (unsigned long long)t.act[0],
           (unsigned long long)t.act[1], (unsigned long long)t.act[2],
           (unsigned long long)t.fwd[0], (unsigned long long)t.fwd[1],
           (unsigned long long)t.fwd[2]);
    assert_int_equal(t.activations, N_STAY);
    assert_int_equal(t.act[2], 0);
    assert_true(t.fwd[2] > 0); /* silo 3 owns arcs now: it forwarded to where they stayed */

    /* Those answers said where the actors live (location): the client now
     * sends every blocking call straight there, and no silo forwards any
     * more. (A call that left before the client had the 3-member view went
     * to the silo it connected to and taught it nothing: the first round
     * may still forward those few; the next two forward none.) */
    totals ta = t;
    for (int round = 0; round < 3; round++) {
        if (round == 1)
            ta = must_totals(ALL);
        for (int i = 0; i < N_STAY; i++) {
            snprintf(id, sizeof id, "s-%d", i);
            int64_t v = -1;
            quark_err err = call_id(c, id, M_INC, 1, &v);
            if (err != QUARK_OK || v != 3 + round)
                fail_msg("Increment(%s), round %d -> %s %lld: %s", id, round,
                         quark_errname(err), (long long)v, quark_last_error());
        }
    }
    totals t2 = must_totals(ALL);
    printf("# dir_stays: 3 more rounds: forwarded %llu/%llu/%llu (%llu/%llu/%llu before the "
           "round after the first)\n",
           (unsigned long long)t2.fwd[0], (unsigned long long)t2.fwd[1],
           (unsigned long long)t2.fwd[2], (unsigned long long)ta.fwd[0],
           (unsigned long long)ta.fwd[1], (unsigned long long)ta.fwd[2]);
    assert_true(ta.forwarded - t.forwarded <= 10); /* only calls that left before the view */
    for (int k = 0; k < 3; k++)
        assert_int_equal(t2.fwd[k], ta.fwd[k]);
    /* A new client learns it too, by async (multiplexed) calls. Its first
     * calls may leave before it has the view (they go to the silo it
     * connected to, and what it learns then is not kept); once it has the
     * view, a round teaches it where the rest live, and from then on no
     * round is forwarded. */
    quark_client *c2 = client_new(QUARK_ROUTE_OWNER, ALL);
    uint64_t fwd_round[6];
    int quiet = -1;
    for (int round = 0; round < 6 && quiet < 0; round++) {
        uint64_t f0 = must_totals(ALL).forwarded;
        batch *b = batch_run(c2, M_GET, "s", N_STAY, 5);
        batch_check(b, "Get s-* (a new client)");
        batch_free(b);
        fwd_round[round] = must_totals(ALL).forwarded - f0;
        printf("# dir_stays: a new client's async round %d: %llu forwarded\n", round + 1,
               (unsigned long long)fwd_round[round]);
        if (fwd_round[round] == 0)
            quiet = round;
    }
    if (quiet < 0)
        fail_msg("a new client's async calls were still forwarded after 6 rounds");
    assert_true(fwd_round[0] > 0); /* it had something to learn */
    uint64_t f0 = must_totals(ALL).forwarded;
    batch *b = batch_run(c2, M_GET, "s", N_STAY, 5);
    batch_check(b, "Get s-* (once more)");
    batch_free(b);
    assert_int_equal(must_totals(ALL).forwarded, f0);
    quark_client_free(c2);

    /* A silo that stops gracefully lets go of its activations first: its
     * entries go, and the counters come back (at 0: in memory) elsewhere. */
    assert_exited_0(silo_signal(0, SIGTERM), 0);
    int left = 0;
    for (int i = 0; i < N_STAY; i++) {
        char now[128];
        entry_of(i, now, sizeof now);
        left += !strncmp(now, g_silo[0].addr, strlen(g_silo[0].addr));
    }
    printf("# dir_stays: silo 1 stopped: %d entries still name it\n", left);
    assert_int_equal(left, 0);
    for (int i = 0; i < N_STAY; i++) {
        snprintf(id, sizeof id, "s-%d", i);
        int64_t v = -1;
        quark_err err = call_id(c, id, M_INC, 1, &v);
        if (err != QUARK_OK)
            fail_msg("Increment(%s) after silo 1 stopped -> %s: %s", id, quark_errname(err),
                     quark_last_error());
    }
    t = must_totals(6u);
    assert_int_equal(t.activations, N_STAY);
    quark_client_free(c);
    cluster_down();
}

/* ---- durable reminders ---- */

/* Watching counters: a thread that Gets each of them (async, all at once)
 * every interval_ms and keeps every value it got, with the start and end
 * of the round (the value was current at some point in between; "seen at"
 * below is the end). A value below the one seen before is noted: the
 * values are stored before a reply leaves, so they never go down. */
enum { RP_MAX = 16, RP_DEADLINE_MS = 1000 };

typedef struct rp_obs {
    uint64_t ts, t;         /* its round's start and end, ms (monotonic) */
    int64_t v;
} rp_obs;

typedef struct rpoll rpoll;

typedef struct rp_slot {
    rpoll *p;
    int i;
} rp_slot;

struct rpoll {
    pthread_t th;
    int n;
    unsigned interval_ms;
    quark_ref *refs[RP_MAX];
    rp_slot slot[RP_MAX];
    char ids[RP_MAX][32];
    atomic_int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    int pending;            /* Gets of the round still in flight */
    int64_t got[RP_MAX];    /* the round's values (-1: failed) */
    int64_t last[RP_MAX];   /* the newest value seen (-1: none yet) */
    rp_obs *hist[RP_MAX];   /* every value got */
    size_t nh[RP_MAX], caph[RP_MAX];
    size_t rounds, gets, failed;
    int decreased;
    char decrease_msg[256];
};

static rpoll *g_rp; /* the running one, stopped by the teardown if a case fails */

static void rp_cb(quark_err err, const char *msg, const Quark__Examples__CounterValue *v,
                  void *arg)
{
    (void)msg;
    rp_slot *s = arg;
    rpoll *p = s->p;
    pthread_mutex_lock(&p->mu);
    p->got[s->i] = err == QUARK_OK && v ? v->value : -1;
    p->pending--;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void *rp_main(void *arg)
{
    rpoll *p = arg;
    Quark__Examples__GetRequest get = QUARK__EXAMPLES__GET_REQUEST__INIT;
    while (!atomic_load(&p->stop)) {
        uint64_t ts = tu_now_ms();
        pthread_mutex_lock(&p->mu);
        p->pending = p->n;
        for (int i = 0; i < p->n; i++)
            p->got[i] = -1;
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < p->n; i++)
            if (quark_examples_CounterActor_Get_async(p->refs[i], &get, rp_cb, &p->slot[i]) !=
                QUARK_OK) { /* the callback will not run */
                pthread_mutex_lock(&p->mu);
                p->pending--;
                pthread_mutex_unlock(&p->mu);
            }
        pthread_mutex_lock(&p->mu);
        while (p->pending > 0) /* each callback runs once, within its deadline */
            pthread_cond_wait(&p->cv, &p->mu);
        uint64_t t = tu_now_ms();
        for (int i = 0; i < p->n; i++) {
            p->gets++;
            int64_t v = p->got[i];
            if (v < 0) {
                p->failed++;
                continue;
            }
            if (v < p->last[i] && p->decreased++ == 0)
                snprintf(p->decrease_msg, sizeof p->decrease_msg,
                         "%s went down from %lld to %lld at +%llu ms", p->ids[i],
                         (long long)p->last[i], (long long)v,
                         (unsigned long long)(t - g_case_t0));
            if (p->nh[i] == p->caph[i]) {
                p->caph[i] = p->caph[i] ? 2 * p->caph[i] : 256;
                p->hist[i] = realloc(p->hist[i], p->caph[i] * sizeof *p->hist[i]);
                if (!p->hist[i])
                    abort(); /* out of memory: no assertion off the main thread */
            }
            p->hist[i][p->nh[i]++] = (rp_obs){.ts = ts, .t = t, .v = v};
            p->last[i] = v;
        }
        p->rounds++;
        pthread_mutex_unlock(&p->mu);
        tu_sleep_ms(p->interval_ms);
    }
    return NULL;
}

/* Watch DurableCounter "<prefix>-0".."<prefix>-(n-1)" through c. */
static rpoll *rp_start(quark_client *c, const char *prefix, int n, unsigned interval_ms)
{
    assert_true(n <= RP_MAX && !g_rp);
    rpoll *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->n = n;
    p->interval_ms = interval_ms;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (int i = 0; i < n; i++) {
        snprintf(p->ids[i], sizeof p->ids[i], "%s-%d", prefix, i);
        TU_OK(quark_ref_new(c, &quark_examples_CounterActor_interface, DURABLE_COUNTER_TYPE,
                            p->ids[i], &p->refs[i]));
        quark_ref_set_deadline(p->refs[i], RP_DEADLINE_MS);
        p->slot[i] = (rp_slot){.p = p, .i = i};
        p->last[i] = -1;
    }
    assert_int_equal(pthread_create(&p->th, NULL, rp_main, p), 0);
    g_rp = p;
    return p;
}

/* Stop the thread (the history stays readable). */
static void rp_stop(rpoll *p)
{
    if (atomic_exchange(&p->stop, 1))
        return;
    pthread_join(p->th, NULL);
    if (g_rp == p)
        g_rp = NULL;
}

static void rp_free(rpoll *p)
{
    rp_stop(p);
    for (int i = 0; i < p->n; i++) {
        quark_ref_free(p->refs[i]);
        free(p->hist[i]);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

/* The teardown of a failed case: its client is left alone (not freed), so
 * the references stay valid until the thread is joined. */
static void rp_cleanup(void)
{
    if (g_rp)
        rp_stop(g_rp);
}

static size_t rp_rounds(rpoll *p)
{
    pthread_mutex_lock(&p->mu);
    size_t r = p->rounds;
    pthread_mutex_unlock(&p->mu);
    return r;
}

/* Wait until a whole round began after this call. */
static void rp_fresh(rpoll *p)
{
    size_t r0 = rp_rounds(p);
    if (!TU_WAIT_UNTIL(rp_rounds(p) >= r0 + 2, 10000))
        fail_msg("the counters' watcher did not complete a round within 10 s");
}

static int64_t rp_last(rpoll *p, int i)
{
    pthread_mutex_lock(&p->mu);
    int64_t v = p->last[i];
    pthread_mutex_unlock(&p->mu);
    return v;
}

/* The newest value of counter i seen by time t (-1: none). */
static int64_t rp_value_at(rpoll *p, int i, uint64_t t)
{
    int64_t v = -1;
    pthread_mutex_lock(&p->mu);
    for (size_t k = 0; k < p->nh[i] && p->hist[i][k].t <= t; k++)
        v = p->hist[i][k].v;
    pthread_mutex_unlock(&p->mu);
    return v;
}

/* When counter i was first seen at `v` or more, at or after `after` (0: not yet). */
static uint64_t rp_when_at_least(rpoll *p, int i, int64_t v, uint64_t after)
{
    uint64_t t = 0;
    pthread_mutex_lock(&p->mu);
    for (size_t k = 0; k < p->nh[i] && !t; k++)
        if (p->hist[i][k].t >= after && p->hist[i][k].v >= v)
            t = p->hist[i][k].t;
    pthread_mutex_unlock(&p->mu);
    return t;
}

/* How long after `t` counter i was seen to rise, for sure after t: above
 * its value in the first round that began at or after t (ms after t;
 * UINT64_MAX if it was not). */
static uint64_t rp_rose_after(rpoll *p, int i, uint64_t t)
{
    uint64_t ms = UINT64_MAX;
    pthread_mutex_lock(&p->mu);
    size_t k = 0;
    while (k < p->nh[i] && p->hist[i][k].ts < t)
        k++;
    for (size_t j = k + 1; j < p->nh[i] && ms == UINT64_MAX; j++)
        if (p->hist[i][j].v > p->hist[i][k].v)
            ms = p->hist[i][j].t - t;
    pthread_mutex_unlock(&p->mu);
    return ms;
}

/* Every counter of `mask` (bit i: counter i; ~0u all) was seen at base[i] + d or more. */
static bool rp_all_at_least(rpoll *p, unsigned mask, const int64_t *base, int64_t d)
{
    for (int i = 0; i < p->n; i++)
        if ((mask >> i & 1u) && (rp_last(p, i) < 0 || rp_last(p, i) < base[i] + d))
            return false;
    return true;
}

/* The most ticks of one counter seen to come within less than `win` ms,
 * between from and to: with a period above `win`, 1, unless a tick was
 * fired twice or ran late, next to the following one. */
static int64_t rp_most_within(rpoll *p, int i, uint64_t from, uint64_t to, uint64_t win)
{
    int64_t most = 0;
    pthread_mutex_lock(&p->mu);
    const rp_obs *h = p->hist[i];
    for (size_t k = 1; k < p->nh[i]; k++) {
        if (h[k].t < from || h[k].t > to || h[k].v == h[k - 1].v)
            continue;
        /* the ticks between the round that saw h[k-1] and the one that saw
         * h[j] came within the span of those rounds */
        size_t j = k;
        while (j + 1 < p->nh[i] && h[j + 1].t < h[k - 1].ts + win)
            j++;
        if (h[j].t < h[k - 1].ts + win && h[j].v - h[k - 1].v > most)
            most = h[j].v - h[k - 1].v;
    }
    pthread_mutex_unlock(&p->mu);
    return most;
}

/* How far counter i was ever seen ahead of its schedule: its value minus
 * `base` minus the due times of a reminder of `period` set after `t_set`
 * that had come by then (a due time is at least a period after t_set; 50
 * ms of margin for the silos' wall clock against ours). Above 0, a due
 * time ticked twice (a tick that ran late cannot do that; a duplicate
 * after a skipped tick goes unseen). */
static int64_t rp_ahead(rpoll *p, int i, uint64_t t_set, int64_t base, uint64_t period)
{
    int64_t most = INT64_MIN;
    pthread_mutex_lock(&p->mu);
    for (size_t k = 0; k < p->nh[i]; k++) {
        const rp_obs *o = &p->hist[i][k];
        int64_t due = o->t + 50 > t_set ? (int64_t)((o->t + 50 - t_set) / period) : 0;
        if (o->v - base - due > most)
            most = o->v - base - due;
    }
    pthread_mutex_unlock(&p->mu);
    return most;
}

/* Print when counter i was seen to change between from and to (a case's
 * evidence when ticks came closer than a period). */
static void rp_dump(rpoll *p, int i, uint64_t from, uint64_t to)
{
    char line[2048];
    size_t n = 0;
    pthread_mutex_lock(&p->mu);
    const rp_obs *h = p->hist[i];
    for (size_t k = 1; k < p->nh[i] && n + 40 < sizeof line; k++)
        if (h[k].t >= from && h[k].t <= to && h[k].v != h[k - 1].v)
            n += (size_t)snprintf(line + n, sizeof line - n, " %lld@+%llu..%llu",
                                  (long long)h[k].v,
                                  (unsigned long long)(h[k - 1].t - g_case_t0),
                                  (unsigned long long)(h[k].t - g_case_t0));
    pthread_mutex_unlock(&p->mu);
    printf("#   %s seen going to value@+(last seen before)..(first seen) ms:%s\n", p->ids[i],
           n ? line : " (none)");
}

static void rp_check_never_down(rpoll *p)
{
    pthread_mutex_lock(&p->mu);
    int d = p->decreased;
    char msg[256];
    snprintf(msg, sizeof msg, "%s", p->decrease_msg);
    pthread_mutex_unlock(&p->mu);
    if (d)
        fail_msg("%d time(s) a durable counter's value went down (a stored tick lost?): "
                 "first, %s", d, msg);
}

/* Remind(period) on DurableCounter `id`: the reply's value in *value. */
static quark_err remind_id(quark_client *c, const char *type, const char *id, uint32_t period,
                           int64_t *value)
{
    quark_ref *r;
    quark_err err = quark_ref_new(c, &quark_examples_CounterActor_interface, type, id, &r);
    if (err != QUARK_OK)
        return err;
    Quark__Examples__RemindRequest req = QUARK__EXAMPLES__REMIND_REQUEST__INIT;
    req.period_ms = period;
    Quark__Examples__CounterValue *v = NULL;
    err = quark_examples_CounterActor_Remind(r, &req, &v);
    if (value)
        *value = err == QUARK_OK && v ? v->value : -1;
    quark_msg_free(v);
    quark_ref_free(r);
    return err;
}

/* Get on DurableCounter `id`: true with its value in *value. */
static bool durable_get(quark_client *c, const char *id, int64_t *value)
{
    quark_ref *r;
    if (quark_ref_new(c, &quark_examples_CounterActor_interface, DURABLE_COUNTER_TYPE, id, &r) !=
        QUARK_OK)
        return false;
    quark_err err = call1(r, M_GET, 0, value);
    quark_ref_free(r);
    return err == QUARK_OK;
}

static int64_t must_remind(quark_client *c, const char *id, uint32_t period)
{
    int64_t v = -1;
    quark_err err = remind_id(c, DURABLE_COUNTER_TYPE, id, period, &v);
    if (err != QUARK_OK)
        fail_msg("Remind(%s, %u ms) -> %s: %s", id, period, quark_errname(err),
                 quark_last_error());
    return v;
}

/* The reminders of this case's cluster in Redis, as an operator would read
 * them (SCAN for "<cluster>/reminders/...", HGETALL of each): how many fields
 * there are, and whether each of DurableCounter "<prefix>-<i>" for the i of
 * `want` (bit mask) has exactly one, named "DurableCounter/<id_len>:<id>tick",
 * whose value is "<due> <period> <hash>" with period `period`. */
static int redis_reminders(const char *prefix, unsigned want, uint64_t period, char *why,
                           size_t cap)
{
    int found[RP_MAX] = {0}, total = 0;
    why[0] = '\0';
    char cursor[32] = "0";
    do {
        redisReply *r = rs_command(&g_redis, "SCAN %s MATCH %s/reminders/* COUNT 1000", cursor,
                                   g_cluster);
        assert_non_null(r);
        assert_true(r->type == REDIS_REPLY_ARRAY && r->elements == 2);
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t k = 0; k < r->element[1]->elements; k++) {
            redisReply *h = rs_command(&g_redis, "HGETALL %s", r->element[1]->element[k]->str);
            assert_non_null(h);
            assert_int_equal(h->type, REDIS_REPLY_ARRAY);
            for (size_t f = 0; f + 1 < h->elements; f += 2) {
                const char *field = h->element[f]->str, *val = h->element[f + 1]->str;
                total++;
                int hit = -1;
                for (int i = 0; i < RP_MAX && hit < 0; i++) {
                    char id[32], name[96];
                    snprintf(id, sizeof id, "%s-%d", prefix, i);
                    snprintf(name, sizeof name, "%s/%zu:%stick", DURABLE_COUNTER_TYPE,
                             strlen(id), id);
                    if (!strcmp(field, name))
                        hit = i;
                }
                unsigned long long due, per, hash;
                if (hit < 0 || !(want >> hit & 1u)) {
                    if (!why[0])
                        snprintf(why, cap, "unexpected field '%s' in %s", field,
                                 r->element[1]->element[k]->str);
                    continue;
                }
                found[hit]++;
                if (sscanf(val, "%llu %llu %llu", &due, &per, &hash) != 3 || per != period)
                    if (!why[0])
                        snprintf(why, cap, "field '%s' = '%s', not '<due> %llu <hash>'", field,
                                 val, (unsigned long long)period);
            }
            freeReplyObject(h);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    for (int i = 0; i < RP_MAX; i++)
        if ((want >> i & 1u) && found[i] != 1 && !why[0])
            snprintf(why, cap, "%d fields for %s-%d", found[i], prefix, i);
    return total;
}

/* The value DurableCounter `id` has in the storage (Redis), 0 if none. */
static int64_t stored_value(const char *id)
{
    redisReply *r = rs_command(&g_redis, "HGET %s/state/%s/%s data", g_cluster,
                               DURABLE_COUNTER_TYPE, id);
    assert_non_null(r);
    int64_t v = 0;
    if (r->type == REDIS_REPLY_STRING) {
        Quark__Examples__CounterState *st =
            quark__examples__counter_state__unpack(NULL, r->len, (const uint8_t *)r->str);
        if (!st)
            fail_msg("the stored state of %s does not decode", id);
        v = st->value;
        quark__examples__counter_state__free_unpacked(st, NULL);
    } else if (r->type != REDIS_REPLY_NIL) {
        fail_msg("HGET of the state of %s: reply type %d", id, r->type);
    }
    freeReplyObject(r);
    return v;
}

enum {
    N_REM = 10,
    REM_PERIOD_MS = 1000,
    REM_REFRESH_MS = 1000,  /* the silos' reminder_refresh_ms (the default) */
    REM_POLL_MS = 50,
    /* a counter rises by 2 within this of the death of a silo */
    REM_RECOVERY_MS = FAILURE_TIMEOUT_MS + 2 * REM_PERIOD_MS + 3000,
};

/* Worst, over the counters of `mask`, of when each was first seen at
 * base[i] + d or more after `t0` (ms after t0; UINT64_MAX if one was not),
 * and which counter that was. */
static uint64_t rp_worst(rpoll *p, unsigned mask, const int64_t *base, int64_t d, uint64_t t0,
                         int *which)
{
    uint64_t worst = 0;
    *which = -1;
    for (int i = 0; i < p->n; i++) {
        if (!(mask >> i & 1u))
            continue;
        uint64_t t = rp_when_at_least(p, i, base[i] + d, t0);
        uint64_t ms = t ? t - t0 : UINT64_MAX;
        if (*which < 0 || ms > worst) {
            worst = ms;
            *which = i;
        }
    }
    return worst;
}

static long long ms_or_neg(uint64_t ms)
{
    return ms == UINT64_MAX ? -1LL : (long long)ms;
}

/* Three silos with membership, directory, storage and reminders in Redis;
 * Remind(1 s) on 10 DurableCounters:
 *   (a) each rises by a tick per period;
 *   (b) Redis holds exactly their 10 reminders, where docs/reminders.md says;
 *   (c) kill -9 of the silo hosting most of them, and its restart: each
 *       rises by 2 within failure timeout + 2 periods + 3 s of the kill,
 *       and again by 2 after the restart;
 *   (d) kill -9 of all three, ~4 periods down, started again: each rises
 *       again, and the missed ticks are not replayed (within 1.5 periods
 *       of the first new tick no counter rose by more than 2);
 *   (e) Remind(0) on half: their fields are gone from Redis, and they stop
 *       (at most one tick after reminder_refresh_ms), the others go on.
 * No value ever goes down (every tick's increment is stored before its
 * reply, and so before a Get can see it). */
static void test_reminders(void **state)
{
    (void)state;
    snprintf(g_storage, sizeof g_storage, "%s", g_membership);
    assert_true(g_reminders[0] != '\0'); /* the group's silos keep reminders in Redis */
    const unsigned all = (1u << N_REM) - 1;
    cluster_up();
    quark_client *c = client_new(QUARK_ROUTE_OWNER, ALL);
    char id[32], why[256];
    int64_t base[N_REM];
    uint64_t t_set = tu_now_ms(), t_set_i[N_REM];
    for (int i = 0; i < N_REM; i++) {
        snprintf(id, sizeof id, "rm-%d", i);
        t_set_i[i] = tu_now_ms();
        base[i] = must_remind(c, id, REM_PERIOD_MS);
        assert_int_equal(base[i], 0);
    }
    uint64_t set_ms = tu_now_ms() - t_set;
    rpoll *p = rp_start(c, "rm", N_REM, REM_POLL_MS);

    /* (a) ticks: each at 3 or more (its first tick is a period after its
     * Remind, the owner of its bucket reads it within a refresh) */
    if (!POLL_UNTIL(rp_all_at_least(p, all, base, 3), 3 * REM_PERIOD_MS + REM_REFRESH_MS + 5000))
        fail_msg("not every counter reached 3 within %d ms of its Remind", 3 * REM_PERIOD_MS +
                 REM_REFRESH_MS + 5000);
    int w;
    uint64_t first3 = rp_worst(p, all, base, 3, t_set, &w);
    printf("# reminders: Remind(%d ms) on %d DurableCounters in %llu ms; all at 3 ticks after "
           "%llu ms (the last rm-%d)\n",
           REM_PERIOD_MS, N_REM, (unsigned long long)set_ms, (unsigned long long)first3, w);

    /* (b) in Redis: one field per reminder, in the bucket hashes */
    int total = redis_reminders("rm", all, REM_PERIOD_MS, why, sizeof why);
    printf("# reminders: Redis holds %d reminder fields under %s/reminders/*%s%s\n", total,
           g_cluster, why[0] ? ": " : "", why);
    if (why[0] || total != N_REM)
        fail_msg("the reminders in Redis: %d fields (%d wanted): %s", total, N_REM, why);

    /* (c) kill -9 of the silo hosting most counters, restarted once the
     * others declared it dead */
    int on[N_SILOS] = {0}, victim = 0;
    for (int i = 0; i < N_REM; i++) {
        char e[128];
        entry_of_id("rm", i, e, sizeof e);
        for (int k = 0; k < N_SILOS; k++)
            if (!strncmp(e, g_silo[k].addr, strlen(g_silo[k].addr)) &&
                e[strlen(g_silo[k].addr)] == ' ')
                on[k]++;
    }
    for (int k = 1; k < N_SILOS; k++)
        if (on[k] > on[victim])
            victim = k;
    unsigned others = ALL & ~(1u << victim);
    rp_fresh(p);
    int64_t v_kill[N_REM];
    for (int i = 0; i < N_REM; i++)
        v_kill[i] = rp_last(p, i);
    uint64_t t_kill = tu_now_ms();
    silo_signal(victim, SIGKILL);
    bool two = POLL_UNTIL(all_report(others, others), RECOVERY_MS);
    uint64_t dead_ms = tu_now_ms() - t_kill;
    silo_spawn(victim);
    bool three = POLL_UNTIL(all_report(ALL, ALL), 10000);
    uint64_t t_back = tu_now_ms();
    POLL_UNTIL(rp_all_at_least(p, all, v_kill, 2), 2 * REM_RECOVERY_MS);
    uint64_t worst_kill = rp_worst(p, all, v_kill, 2, t_kill, &w);
    printf("# reminders: silo %d (hosting %d/%d/%d of the counters on silos 1/2/3) killed at "
           "+%llu ms: declared dead after %llu ms, back after %llu ms; every counter rose by 2 "
           "within %lld ms of the kill (the last rm-%d; limit %d ms)\n",
           victim + 1, on[0], on[1], on[2], (unsigned long long)(t_kill - g_case_t0),
           (unsigned long long)dead_ms,
           (unsigned long long)(t_back - t_kill), ms_or_neg(worst_kill), w, REM_RECOVERY_MS);
    if (!two || !three)
        fail_msg("silo %d killed: the others did not report 2 members within %d ms (%d), or "
                 "all 3 again within 10 s of its restart (%d)", victim + 1, RECOVERY_MS, two,
                 three);
    if (worst_kill > REM_RECOVERY_MS)
        fail_msg("rm-%d rose by 2 only %lld ms after silo %d was killed (limit %d ms: "
                 "failure timeout + 2 periods + 3 s)", w, ms_or_neg(worst_kill), victim + 1,
                 REM_RECOVERY_MS);
    /* and on after the restart (the buckets move back to it) */
    rp_fresh(p);
    int64_t v_back[N_REM];
    for (int i = 0; i < N_REM; i++)
        v_back[i] = rp_last(p, i);
    uint64_t t_back2 = tu_now_ms();
    POLL_UNTIL(rp_all_at_least(p, all, v_back, 2), 2 * REM_RECOVERY_MS);
    uint64_t worst_back = rp_worst(p, all, v_back, 2, t_back2, &w);
    int64_t most_c = 0;
    for (int i = 0; i < N_REM; i++) {
        int64_t m = rp_most_within(p, i, t_kill, tu_now_ms(), REM_PERIOD_MS * 9 / 10);
        if (m > most_c)
            most_c = m;
        if (m > 1)
            rp_dump(p, i, t_kill, tu_now_ms());
    }
    printf("# reminders: after silo %d's restart every counter rose by 2 within %lld ms; the "
           "most ticks of one counter seen within 0.9 periods since the kill: %lld\n",
           victim + 1, ms_or_neg(worst_back), (long long)most_c);
    if (worst_back > REM_RECOVERY_MS)
        fail_msg("after silo %d's restart rm-%d rose by 2 only after %lld ms (limit %d ms)",
                 victim + 1, w, ms_or_neg(worst_back), REM_RECOVERY_MS);

    /* (d) the whole cluster down for ~4 periods and up again */
    for (int k = 0; k < N_SILOS; k++)
        silo_signal(k, SIGKILL);
    uint64_t t_down = tu_now_ms();
    int64_t v_down[N_REM];
    for (int i = 0; i < N_REM; i++) {
        snprintf(id, sizeof id, "rm-%d", i);
        v_down[i] = stored_value(id);
    }
    uint64_t up_at = t_down + 4 * REM_PERIOD_MS;
    if (tu_now_ms() < up_at)
        tu_sleep_ms((unsigned)(up_at - tu_now_ms())); /* the length of the outage */
    uint64_t t_up0 = tu_now_ms();
    cluster_up();
    uint64_t t_up = tu_now_ms();
    POLL_UNTIL(rp_all_at_least(p, all, v_down, 1), 2 * REM_RECOVERY_MS);
    uint64_t worst_up = rp_worst(p, all, v_down, 1, t_up, &w);
    int w_first = -1;
    uint64_t t_first = UINT64_MAX;
    for (int i = 0; i < N_REM; i++) {
        uint64_t t = rp_when_at_least(p, i, v_down[i] + 1, t_up0);
        if (t && t < t_first) {
            t_first = t;
            w_first = i;
        }
    }
    if (worst_up > REM_RECOVERY_MS || t_first == UINT64_MAX)
        fail_msg("after the whole cluster's restart rm-%d rose only after %lld ms (limit %d ms)",
                 w, ms_or_neg(worst_up), REM_RECOVERY_MS);
    /* missed ticks are skipped: within 1.5 periods of the first new tick,
     * at most 2 per counter */
    uint64_t window_end = t_first + REM_PERIOD_MS * 3 / 2;
    POLL_UNTIL(tu_now_ms() > window_end + 100, 2 * REM_PERIOD_MS);
    rp_fresh(p);
    int64_t most_rise = 0;
    int w_rise = 0;
    for (int i = 0; i < N_REM; i++) {
        int64_t r = rp_value_at(p, i, window_end) - v_down[i];
        if (r > most_rise) {
            most_rise = r;
            w_rise = i;
        }
    }
    printf("# reminders: all 3 silos killed at +%llu ms, up again %llu ms later (all members "
           "after %llu ms); first new tick (rm-%d) %lld ms after they were all up, every "
           "counter ticked within %lld ms; within 1.5 periods of the first new tick at most "
           "%lld ticks (rm-%d) over the stored values\n",
           (unsigned long long)(t_down - g_case_t0), (unsigned long long)(t_up0 - t_down),
           (unsigned long long)(t_up - t_up0), w_first, (long long)t_first - (long long)t_up,
           ms_or_neg(worst_up), (long long)most_rise, w_rise);
    int64_t most_d = 0;
    for (int i = 0; i < N_REM; i++) {
        int64_t m = rp_most_within(p, i, t_up0, tu_now_ms(), REM_PERIOD_MS * 9 / 10);
        if (m > most_d)
            most_d = m;
        if (m > 1)
            rp_dump(p, i, t_up0, tu_now_ms());
    }
    printf("# reminders: the most ticks of one counter seen within 0.9 periods since the "
           "restart: %lld\n", (long long)most_d);
    if (most_rise > 2)
        fail_msg("rm-%d rose by %lld within 1.5 periods of the first tick after the restart "
                 "(from %lld stored while down): missed ticks replayed, or fired twice",
                 w_rise, (long long)most_rise, (long long)v_down[w_rise]);

    /* (e) Remind(0) on the even half */
    unsigned stopped = 0;
    for (int i = 0; i < N_REM; i += 2)
        stopped |= 1u << i;
    unsigned kept = all & ~stopped;
    int64_t v_unset[N_REM] = {0};
    uint64_t t_ret[N_REM] = {0}, t_unset0 = tu_now_ms(), t_unset_last = 0;
    for (int i = 0; i < N_REM; i++) {
        if (!(stopped >> i & 1u))
            continue;
        snprintf(id, sizeof id, "rm-%d", i);
        v_unset[i] = must_remind(c, id, 0);
        t_ret[i] = t_unset_last = tu_now_ms();
    }
    total = redis_reminders("rm", kept, REM_PERIOD_MS, why, sizeof why);
    if (why[0] || total != N_REM / 2)
        fail_msg("after Remind(0) on half: %d reminder fields in Redis (%d wanted): %s", total,
                 N_REM / 2, why);
    int64_t v_kept[N_REM] = {0};
    uint64_t watch_from = t_unset_last + REM_REFRESH_MS;
    uint64_t watch_end = watch_from + 3 * REM_PERIOD_MS;
    if (tu_now_ms() < watch_end)
        tu_sleep_ms((unsigned)(watch_end - tu_now_ms())); /* the time they are watched */
    rp_fresh(p);
    int64_t most_after = 0, most_total = 0, least_kept = INT64_MAX;
    int w_after = -1;
    for (int i = 0; i < N_REM; i++) {
        int64_t now_v = rp_last(p, i);
        if (stopped >> i & 1u) {
            int64_t at_refresh = rp_value_at(p, i, t_ret[i] + REM_REFRESH_MS);
            if (now_v - at_refresh > most_after) {
                most_after = now_v - at_refresh;
                w_after = i;
            }
            if (now_v - v_unset[i] > most_total)
                most_total = now_v - v_unset[i];
        } else {
            v_kept[i] = rp_value_at(p, i, watch_from);
            if (now_v - v_kept[i] < least_kept)
                least_kept = now_v - v_kept[i];
        }
    }
    printf("# reminders: Remind(0) on %d counters in %llu ms, their fields gone from Redis; "
           "since, at most %lld ticks of one of them (%lld after reminder_refresh_ms); the "
           "other %d rose by at least %lld in the %d ms after\n",
           N_REM / 2, (unsigned long long)(t_unset_last - t_unset0), (long long)most_total,
           (long long)most_after, N_REM / 2, (long long)least_kept, 3 * REM_PERIOD_MS);
    if (most_after > 1)
        fail_msg("rm-%d rose by %lld more after Remind(0) returned and %d ms passed", w_after,
                 (long long)most_after, REM_REFRESH_MS);
    if (least_kept < 2)
        fail_msg("a counter still reminded rose by only %lld in %d ms", (long long)least_kept,
                 3 * REM_PERIOD_MS);
    rp_stop(p);
    pthread_mutex_lock(&p->mu);
    size_t gets = p->gets, failed = p->failed;
    pthread_mutex_unlock(&p->mu);
    /* No due time ticked twice: no value ever above the due times so far. */
    int64_t ahead = INT64_MIN;
    int w_ahead = 0;
    for (int i = 0; i < N_REM; i++) {
        int64_t a = rp_ahead(p, i, t_set_i[i], base[i], REM_PERIOD_MS);
        if (a > ahead) {
            ahead = a;
            w_ahead = i;
        }
    }
    printf("# reminders: the watcher made %zu Gets (%zu failed, the outages); a counter was "
           "at most %lld ticks ahead of its due times (rm-%d; above 0: a due time ticked "
           "twice)\n", gets, failed, (long long)ahead, w_ahead);
    if (ahead > 0) {
        rp_dump(p, w_ahead, t_set, tu_now_ms());
        fail_msg("rm-%d was %lld ticks ahead of its due times: a due time ticked twice",
                 w_ahead, (long long)ahead);
    }
    rp_check_never_down(p);
    rp_free(p);
    quark_client_free(c);
    cluster_down();
}

/* One silo of a gossip cluster, reminders in memory (the default): Remind
 * on CounterActor, which does not implement it, fails clearly; a period
 * below the minimum is refused; DurableCounter's reminder ticks, and stops
 * with Remind(0) (this silo fires it: no refresh to wait for). */
static void test_reminder_errors(void **state)
{
    (void)state;
    silo_spawn(0);
    if (!POLL_UNTIL(all_report(1u, 1u), 10000))
        fail_msg("silo 1 did not see itself within 10 s");
    quark_client *c = client_new(QUARK_ROUTE_OWNER, 1u);
    int64_t v;
    quark_err err = remind_id(c, NULL, "re-0", 1000, &v); /* NULL: CounterActor's own type */
    char msg[512];
    snprintf(msg, sizeof msg, "%s", quark_last_error());
    printf("# reminder_errors: Remind on CounterActor -> %s: %s\n", quark_errname(err), msg);
    if (err != QUARK_EUNIMPLEMENTED || !strstr(msg, "Remind"))
        fail_msg("Remind on CounterActor -> %s (%s), not QUARK_EUNIMPLEMENTED naming Remind",
                 quark_errname(err), msg);
    err = remind_id(c, DURABLE_COUNTER_TYPE, "re-1", 10, &v);
    snprintf(msg, sizeof msg, "%s", quark_last_error());
    printf("# reminder_errors: Remind(10 ms) on DurableCounter -> %s: %s\n", quark_errname(err),
           msg);
    if (err != QUARK_EINVAL || !strstr(msg, "reminder_min_period_ms"))
        fail_msg("Remind(10 ms) -> %s (%s), not QUARK_EINVAL naming reminder_min_period_ms",
                 quark_errname(err), msg);

    assert_int_equal(must_remind(c, "re-1", 1000), 0);
    uint64_t t0 = tu_now_ms();
    int64_t got = -1;
    if (!POLL_UNTIL(durable_get(c, "re-1", &got) && got >= 2, 2 * 1000 + 3000))
        fail_msg("re-1 reached only %lld within 5 s of Remind(1000)", (long long)got);
    uint64_t two_ms = tu_now_ms() - t0;
    int64_t at_unset = must_remind(c, "re-1", 0);
    tu_sleep_ms(2500); /* 2.5 periods in which it must not tick */
    assert_true(durable_get(c, "re-1", &got));
    printf("# reminder_errors: re-1 ticked twice in %llu ms; Remind(0) at %lld, 2.5 periods "
           "later %lld\n", (unsigned long long)two_ms, (long long)at_unset, (long long)got);
    if (got > at_unset + 1)
        fail_msg("re-1 went on from %lld to %lld after Remind(0)", (long long)at_unset,
                 (long long)got);
    quark_client_free(c);
    cluster_down();
}

/* ---- single activation under kill -9 and pauses ---- */

/* When service was back after fault time `t`: the end of the last failed
 * call that ended in [t, until) (a call that ends after the next fault
 * failed for that one), in ms after t (0: none failed), provided every
 * counter had an acknowledged call begun after that (else UINT64_MAX). */
static uint64_t back_after(load *ld, int n_ids, uint64_t t, uint64_t until)
{
    uint64_t settled = t;
    FOR_EACH_REC(ld, r)
        if (r->err != QUARK_OK && r->start + r->dur >= t && r->start + r->dur < until &&
            r->start + r->dur > settled)
            settled = r->start + r->dur;
    for (int i = 0; i < n_ids; i++) {
        bool served = false;
        FOR_EACH_REC(ld, r)
            served |= r->id == i && r->err == QUARK_OK && r->start >= settled && r->start < until;
        if (!served)
            return UINT64_MAX;
    }
    return settled - t;
}


enum {
    CHAOS_MS = 60000,       /* how long the faults go on */
    CHAOS_EVERY_MS = 5000,  /* one fault this often */
    CHAOS_IDS = 40,
    CHAOS_THREADS = 4,
    CHAOS_DEADLINE_MS = 5000,
    CHAOS_BACK_MS = 5000,   /* every counter served again within this of each fault */
    CHAOS_REM = 4,          /* DurableCounters with a reminder through the faults */
};

typedef struct probe_act {
    uint64_t act, start_us, last_call_us;
    size_t calls, late;     /* calls recorded; of them, landing after a later start */
    bool started;
} probe_act;

/* The probe's records of counter p-<i> (tests/cluster/probe_counter.c):
 * no activation began a call at or after the start of a later activation.
 * Returns the overlaps found (each printed) and adds to *acts, *calls. */
static int check_probe(int i, size_t *acts, size_t *calls, size_t *late)
{
    redisReply *r = rs_command(&g_redis, "LRANGE probe/%s/p-%d 0 -1", g_cluster, i);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    probe_act *a = calloc(r->elements + 1, sizeof *a);
    size_t na = 0;
    int overlaps = 0;
    uint64_t newest_start = 0;
    for (size_t k = 0; k < r->elements; k++) {
        char kind;
        unsigned long long act, us;
        if (sscanf(r->element[k]->str, "%c %llx %llu", &kind, &act, &us) != 3)
            fail_msg("p-%d: a probe record '%s' is not '<kind> <act> <us>'", i,
                     r->element[k]->str);
        size_t j = 0;
        while (j < na && a[j].act != act)
            j++;
        if (j == na)
            a[na++] = (probe_act){.act = act};
        if (kind == 's') {
            a[j].started = true;
            a[j].start_us = us;
            if (us > newest_start)
                newest_start = us;
        } else if (kind == 'c') {
            if (!a[j].started)
                fail_msg("p-%d: activation %llx served a call before its start record", i, act);
            a[j].calls++;
            if (us > a[j].last_call_us)
                a[j].last_call_us = us;
            if (us < newest_start && a[j].start_us < newest_start)
                a[j].late++;
        }
    }
    for (size_t x = 0; x < na; x++)
        for (size_t y = 0; y < na; y++) {
            /* y started after x: x's last call must have begun before */
            if (x == y || !a[x].started || !a[y].started || a[y].start_us <= a[x].start_us)
                continue;
            if (a[x].calls && a[x].last_call_us >= a[y].start_us) {
                printf("# chaos: OVERLAP on p-%d: activation %llx (started %llu us) began a "
                       "call at %llu us, %lld us after activation %llx started\n",
                       i, (unsigned long long)a[x].act, (unsigned long long)a[x].start_us,
                       (unsigned long long)a[x].last_call_us,
                       (long long)(a[x].last_call_us - a[y].start_us),
                       (unsigned long long)a[y].act);
                overlaps++;
            }
        }
    for (size_t x = 0; x < na; x++) {
        *calls += a[x].calls;
        *late += a[x].late;
    }
    *acts += na;
    free(a);
    freeReplyObject(r);
    return overlaps;
}

/* Three probe-silos with membership, directory and storage in Redis, under
 * increments of 40 ProbeCounters from 4 threads, while every 5 s for 60 s a
 * random silo is killed with SIGKILL and restarted, or (twice) stopped with
 * SIGSTOP for longer than the failure timeout and continued: no
 * acknowledged increment is lost, no two activations of a counter ever
 * served at once (by the probe's records), every failed call failed with a
 * clear error within its deadline, and every counter was served again
 * within 5 s of each fault. Meanwhile 4 DurableCounters have a reminder of
 * 1 s (reminders in Redis too): they tick through it all (at least 40% of
 * the seconds: ticks missed during faults are skipped) and each ticked
 * again within 5 s of the last fault. */
static void test_chaos(void **state)
{
    (void)state;
    g_silo_bin = PROBE_SILO;
    g_load_type = "ProbeCounter";
    snprintf(g_storage, sizeof g_storage, "%s", g_membership);
    char rs_addr[32];
    snprintf(rs_addr, sizeof rs_addr, "127.0.0.1:%d", g_redis.port);
    setenv("QUARK_PROBE_REDIS", rs_addr, 1);
    setenv("QUARK_PROBE_PREFIX", g_cluster, 1);
    cluster_up();
    quark_client *c = client_new(QUARK_ROUTE_OWNER, ALL);
    /* Durable reminders through the faults: Remind(1 s) on DurableCounters
     * of their own, watched through a client of their own. */
    quark_client *rc = client_new(QUARK_ROUTE_OWNER, ALL);
    for (int i = 0; i < CHAOS_REM; i++) {
        char id[32];
        snprintf(id, sizeof id, "cr-%d", i);
        must_remind(rc, id, REM_PERIOD_MS);
    }
    rpoll *rp = rp_start(rc, "cr", CHAOS_REM, 100);
    size_t r0 = rp_rounds(rp);
    assert_true(TU_WAIT_UNTIL(rp_rounds(rp) >= r0 + 1, 10000));
    load ld;
    load_start(&ld, c, CHAOS_THREADS, M_INC, "p", CHAOS_IDS, CHAOS_DEADLINE_MS);
    bool loaded = TU_WAIT_UNTIL(atomic_load(&ld.ok_calls) >= 500, 30000);

    unsigned seed = getenv("QUARK_CHAOS_SEED") ? (unsigned)atol(getenv("QUARK_CHAOS_SEED"))
                                               : (unsigned)getpid() ^ (unsigned)tu_now_ms();
    printf("# chaos: seed %u (QUARK_CHAOS_SEED repeats the choice of silos)\n", seed);
    enum { N_FAULTS = CHAOS_MS / CHAOS_EVERY_MS };
    uint64_t fault_at[N_FAULTS];
    int fault_silo[N_FAULTS];
    bool paused[N_FAULTS];
    uint64_t t_begin = tu_now_ms();
    for (int k = 0; k < N_FAULTS; k++) {
        uint64_t due = t_begin + (uint64_t)k * CHAOS_EVERY_MS;
        if (tu_now_ms() < due)
            tu_sleep_ms((unsigned)(due - tu_now_ms()));
        int i = (int)(rand_r(&seed) % N_SILOS);
        fault_at[k] = tu_now_ms();
        fault_silo[k] = i;
        paused[k] = k == 3 || k == 8;
        if (paused[k]) { /* past the failure timeout: declared dead while frozen */
            kill(g_silo[i].pid, SIGSTOP);
            tu_sleep_ms(FAILURE_TIMEOUT_MS + 1000);
            kill(g_silo[i].pid, SIGCONT);
        } else {
            silo_signal(i, SIGKILL);
            silo_spawn(i);
        }
    }
    tu_sleep_ms(CHAOS_EVERY_MS);
    uint64_t t_end = tu_now_ms();
    load_stop(&ld);
    rp_stop(rp);
    assert_true(loaded);

    /* The calls: clear errors within their deadline, and per counter how
     * many were acknowledged and how many may or may not have run. */
    size_t n = 0, ok = 0, by_kind[3] = {0};
    long acked[CHAOS_IDS] = {0}, maybe[CHAOS_IDS] = {0};
    uint64_t longest = 0;
    FOR_EACH_REC(&ld, r) {
        n++;
        if (r->dur > longest)
            longest = r->dur;
        if (r->err == QUARK_OK) {
            ok++;
            acked[r->id]++;
            continue;
        }
        if (!err_after_loss_ok(r->err))
            fail_msg("a call failed with %s (%s); only EUNKNOWN, EUNAVAILABLE or ETIMEDOUT are "
                     "expected", quark_errname(r->err), r->msg);
        if (r->dur > CHAOS_DEADLINE_MS + 1000)
            fail_msg("a failed call took %llu ms (deadline %d ms): %s %s",
                     (unsigned long long)r->dur, CHAOS_DEADLINE_MS, quark_errname(r->err),
                     r->msg ? r->msg : "");
        by_kind[r->err == QUARK_EUNKNOWN ? 0 : r->err == QUARK_EUNAVAILABLE ? 1 : 2]++;
        if (r->err != QUARK_EUNAVAILABLE) /* EUNAVAILABLE: it did not run */
            maybe[r->id]++;
    }
    /* Service back: within CHAOS_BACK_MS of each fault no call failed any
     * more, and every counter was served after that, before the next one. */
    uint64_t worst_back = 0;
    for (int k = 0; k < N_FAULTS; k++) {
        uint64_t until = k + 1 < N_FAULTS ? fault_at[k + 1] : t_end;
        uint64_t back = back_after(&ld, CHAOS_IDS, fault_at[k], until);
        if (back > CHAOS_BACK_MS) {
            FOR_EACH_REC(&ld, r)
                if (r->err != QUARK_OK && r->start + r->dur >= fault_at[k] &&
                    r->start + r->dur < until)
                    printf("# chaos: after fault %d: p-%d began +%llu ms, %llu ms: %s %s\n",
                           k + 1, r->id, (unsigned long long)(r->start - fault_at[k]),
                           (unsigned long long)r->dur, quark_errname(r->err), r->msg);
        }
        if (back > CHAOS_BACK_MS)
            fail_msg("after fault %d (%s silo %d) calls failed until %lld ms after it, or a "
                     "counter was not served again before the next fault (-1)", k + 1,
                     paused[k] ? "SIGSTOP of" : "SIGKILL of", fault_silo[k] + 1,
                     back == UINT64_MAX ? -1LL : (long long)back);
        if (back > worst_back)
            worst_back = back;
    }

    /* No acknowledged increment lost: each value is at least what was
     * acknowledged, at most that plus the calls that may have run. */
    if (!POLL_UNTIL(all_report(ALL, ALL), 20000))
        fail_msg("the 3 silos did not all report 3 members within 20 s after the faults");
    long lost = 0, extra = 0;
    for (int i = 0; i < CHAOS_IDS; i++) {
        char id[32];
        snprintf(id, sizeof id, "p-%d", i);
        quark_ref *ref;
        TU_OK(quark_ref_new(c, &quark_examples_CounterActor_interface, "ProbeCounter", id, &ref));
        int64_t v = -1;
        quark_err err = QUARK_EUNAVAILABLE;
        for (int attempt = 0; attempt < 50 && err != QUARK_OK; attempt++) {
            if (attempt)
                tu_sleep_ms(100);
            err = call1(ref, M_GET, 0, &v);
        }
        quark_ref_free(ref);
        if (err != QUARK_OK)
            fail_msg("Get(%s) after the faults -> %s: %s", id, quark_errname(err),
                     quark_last_error());
        if (v < acked[i])
            lost += acked[i] - v;
        if (v > acked[i] + maybe[i])
            extra += v - acked[i] - maybe[i];
    }

    /* No two activations of a counter served at once. */
    int overlaps = 0;
    size_t acts = 0, recorded = 0, late = 0;
    for (int i = 0; i < CHAOS_IDS; i++)
        overlaps += check_probe(i, &acts, &recorded, &late);
    printf("# chaos: %d faults in %d s (%d SIGSTOP), %zu calls, %zu acknowledged, failed: "
           "EUNKNOWN %zu, EUNAVAILABLE %zu, ETIMEDOUT %zu; lost acknowledged increments %ld, "
           "unexplained extra %ld; %zu activations of %d counters, %zu calls recorded (%zu "
           "landing after a later activation's start), overlaps %d; the last failed call "
           "ended at most %llu ms after its fault; longest call %llu ms\n",
           N_FAULTS, CHAOS_MS / 1000, 2, n, ok, by_kind[0], by_kind[1], by_kind[2], lost, extra,
           acts, CHAOS_IDS, recorded, late, overlaps, (unsigned long long)worst_back,
           (unsigned long long)longest);
    assert_int_equal(lost, 0);
    assert_int_equal(extra, 0);
    assert_int_equal(overlaps, 0);

    /* The reminders ticked through the faults (missed ticks allowed: at
     * least 40% of the seconds), and each rose again within CHAOS_BACK_MS
     * of the last fault. */
    double chaos_s = (double)(t_end - t_begin) / 1000.0;
    int64_t least = INT64_MAX, most = 0, most_within = 0;
    uint64_t worst_rem = 0;
    for (int i = 0; i < CHAOS_REM; i++) {
        int64_t rise = rp_value_at(rp, i, t_end) - rp_value_at(rp, i, t_begin);
        if (rise < least)
            least = rise;
        if (rise > most)
            most = rise;
        uint64_t back = rp_rose_after(rp, i, fault_at[N_FAULTS - 1]);
        if (back > worst_rem)
            worst_rem = back;
        int64_t m = rp_most_within(rp, i, t_begin, t_end, REM_PERIOD_MS * 9 / 10);
        if (m > most_within)
            most_within = m;
    }
    printf("# chaos: %d reminders of %d ms rose by %lld to %lld in the %.1f s of faults (at "
           "least %.1f wanted, at most ~%.0f ticks due); after the last fault each rose again "
           "within %lld ms; the most ticks of one seen within 0.9 periods: %lld\n",
           CHAOS_REM, REM_PERIOD_MS, (long long)least, (long long)most, chaos_s, 0.4 * chaos_s,
           chaos_s * 1000.0 / REM_PERIOD_MS, ms_or_neg(worst_rem), (long long)most_within);
    rp_check_never_down(rp);
    if ((double)least < 0.4 * chaos_s)
        fail_msg("a reminder rose by only %lld in %.1f s of faults (< 40%%)", (long long)least,
                 chaos_s);
    if (worst_rem > CHAOS_BACK_MS)
        fail_msg("a reminder did not rise again within %d ms of the last fault (%lld ms)",
                 CHAOS_BACK_MS, ms_or_neg(worst_rem));
    rp_free(rp);
    quark_client_free(rc);
    load_free(&ld);
    quark_client_free(c);
    cluster_down();
    unsetenv("QUARK_PROBE_REDIS");
    unsetenv("QUARK_PROBE_PREFIX");
}

/* ---- Redis faults ---- */

enum { RF_IDS = 40, RF_BACK_MS = 5000 };

static size_t failed_between(load *ld, uint64_t a, uint64_t b)
{
    size_t n = 0;
    FOR_EACH_REC(ld, r)
        n += r->err != QUARK_OK && r->start >= a && r->start < b;
    return n;
}

/* With membership and directory in Redis, under load: SCRIPT FLUSH is not
 * seen by callers; Redis frozen for 10 s (SIGSTOP): calls fail clearly
 * once the silos' leases lapse, and every counter is served again within
 * 5 s of its return; Redis restarted without persistence (member table and
 * entries gone): the silos register again by themselves, and every counter
 * is served again within 5 s. */
static void test_redis_faults(void **state)
{
    (void)state;
    cluster_up();
    quark_client *c = client_new(QUARK_ROUTE_OWNER, ALL);
    load ld;
    load_start(&ld, c, 4, M_INC, "f", RF_IDS, 5000);
    bool loaded = TU_WAIT_UNTIL(atomic_load(&ld.ok_calls) >= 500, 30000);
    tu_sleep_ms(500);

    uint64_t t_flush = tu_now_ms();
    redisReply *r = rs_command(&g_redis, "SCRIPT FLUSH");
    assert_non_null(r);
    freeReplyObject(r);
    tu_sleep_ms(1500); /* heartbeats, registrations, renewals resend their scripts */
    /* and new actors register through the flushed script too */
    for (int i = 0; i < 50; i++) {
        char id[32];
        snprintf(id, sizeof id, "fresh-%d", i);
        quark_err err = call_id(c, id, M_INC, 1, NULL);
        if (err != QUARK_OK)
            fail_msg("Increment(%s) after SCRIPT FLUSH -> %s: %s", id, quark_errname(err),
                     quark_last_error());
    }

    uint64_t t_stop = tu_now_ms();
    rs_kill(&g_redis, SIGSTOP);
    tu_sleep_ms(10000);
    uint64_t t_cont = tu_now_ms();
    rs_kill(&g_redis, SIGCONT);
    tu_sleep_ms(RF_BACK_MS + 2000);

    uint64_t t_restart = tu_now_ms();
    int port = g_redis.port;
    rs_kill(&g_redis, SIGKILL);
    if (rs_start(&g_redis, port) != 0)
        fail_msg("redis-server did not start again on port %d", port);
    tu_sleep_ms(RF_BACK_MS + 2000);
    uint64_t t_end = tu_now_ms();
    load_stop(&ld);
    assert_true(loaded);

    size_t n = 0, failed = 0;
    FOR_EACH_REC(&ld, rr) {
        n++;
        if (rr->err == QUARK_OK)
            continue;
        failed++;
        if (!err_after_loss_ok(rr->err))
            fail_msg("a call failed with %s (%s); only EUNKNOWN, EUNAVAILABLE or ETIMEDOUT are "
                     "expected", quark_errname(rr->err), rr->msg);
        if (rr->dur > 5000 + 1000)
            fail_msg("a failed call took %llu ms (deadline 5000 ms): %s %s",
                     (unsigned long long)rr->dur, quark_errname(rr->err), rr->msg);
    }
    size_t f_flush = failed_between(&ld, t_flush, t_stop);
    size_t f_frozen = failed_between(&ld, t_stop, t_cont);
    size_t f_after = failed_between(&ld, t_cont, t_restart);
    size_t f_restart = failed_between(&ld, t_restart, t_end);
    uint64_t back_cont = back_after(&ld, RF_IDS, t_cont, t_restart);
    uint64_t back_restart = back_after(&ld, RF_IDS, t_restart, t_end);
    const char *sample = NULL;
    FOR_EACH_REC(&ld, rr)
        if (!sample && rr->err != QUARK_OK && rr->start >= t_stop && rr->start < t_cont)
            sample = rr->msg;
    printf("# redis_faults: %zu calls, %zu failed: %zu after SCRIPT FLUSH, %zu while Redis "
           "was frozen 10 s (e.g. '%s'), %zu after it came back (the last failed call ended "
           "%llu ms after it), %zu after a restart without persistence (the last ended %llu ms "
           "after it)\n",
           n, failed, f_flush, f_frozen, sample ? sample : "", f_after,
           (unsigned long long)back_cont, f_restart, (unsigned long long)back_restart);
    assert_int_equal(f_flush, 0);
    if (back_cont > RF_BACK_MS || back_restart > RF_BACK_MS)
        fail_msg("calls still failed more than %d ms after Redis came back (%lld ms) or "
                 "restarted (%lld ms), or a counter was not served after (-1)", RF_BACK_MS,
                 back_cont == UINT64_MAX ? -1LL : (long long)back_cont,
                 back_restart == UINT64_MAX ? -1LL : (long long)back_restart);
    load_free(&ld);
    quark_client_free(c);
    cluster_down();
}

#define CASE(f) cmocka_unit_test_setup_teardown(f, case_setup, case_teardown)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (getenv("QUARK_TEST_FILTER")) /* a developer's run of some cases: "test_dir*" */
        cmocka_set_test_filter(getenv("QUARK_TEST_FILTER"));
    const struct CMUnitTest once[] = {
        CASE(test_formation),
        CASE(test_actor_to_actor),
        CASE(test_cluster_key),
        CASE(test_reminder_errors),
    };
    const struct CMUnitTest per_transport[] = {
        CASE(test_placement),
        CASE(test_pinned),
        CASE(test_kill),
        CASE(test_leave),
    };
    int failed = _cmocka_run_group_tests("cluster", once, sizeof once / sizeof once[0], NULL,
                                         NULL);
    g_transport = QUARK_TRANSPORT_TCP;
    failed += _cmocka_run_group_tests("cluster_tcp", per_transport,
                                      sizeof per_transport / sizeof per_transport[0], NULL, NULL);
    g_transport = QUARK_TRANSPORT_GRPC;
    failed += _cmocka_run_group_tests("cluster_grpc", per_transport,
                                      sizeof per_transport / sizeof per_transport[0], NULL, NULL);
    /* The same cases with the member table in a real redis-server: three
     * silos that were given no seeds form one cluster, a killed one is
     * declared dead by the others' votes and comes back as a new
     * incarnation, a leaving one leaves. */
    const struct CMUnitTest with_redis[] = {
        CASE(test_formation),
        CASE(test_pause),
        CASE(test_placement),
        CASE(test_kill),
        CASE(test_leave),
    };
    g_transport = QUARK_TRANSPORT_TCP;
    if (rs_start(&g_redis, 0) != 0) {
        fprintf(stderr, "could not start redis-server (Debian's redis-server package)\n");
        return failed + 1;
    }
    snprintf(g_membership, sizeof g_membership, "redis://127.0.0.1:%d", g_redis.port);
    failed += _cmocka_run_group_tests("cluster_redis", with_redis,
                                      sizeof with_redis / sizeof with_redis[0], NULL, NULL);
    /* And with the actor directory in that Redis too. */
    const struct CMUnitTest with_redis_dir[] = {
        CASE(test_dir_stays),
        CASE(test_dir_renewal),
        CASE(test_reminders),
        CASE(test_chaos),
        CASE(test_redis_faults),
        CASE(test_placement),
        CASE(test_kill),
        CASE(test_leave),
    };
    snprintf(g_directory, sizeof g_directory, "%s", g_membership);
    snprintf(g_reminders, sizeof g_reminders, "%s", g_membership);
    failed += _cmocka_run_group_tests("cluster_redis_dir", with_redis_dir,
                                      sizeof with_redis_dir / sizeof with_redis_dir[0], NULL,
                                      NULL);
    rs_stop(&g_redis);
    return failed;
}
