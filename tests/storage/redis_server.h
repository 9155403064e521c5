/*
 * redis_server.h - a real redis-server for a test: started on a free
 * 127.0.0.1 port with no persistence (unless asked), in a directory of its
 * own; killed, paused, restarted on the same port; always stopped.
 */
#ifndef QUARK_TEST_REDIS_SERVER_H
#define QUARK_TEST_REDIS_SERVER_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "testutil.h"

extern char **environ;

typedef struct redis_server {
    pid_t pid;
    int port;
    char dir[256];
} redis_server;

static inline int rs_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    int port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* A synchronous command on a fresh connection (NULL if it cannot connect). */
static inline redisReply *rs_command(const redis_server *r, const char *fmt, ...)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return rep;
}

static inline int rs_ping(const redis_server *r)
{
    redisReply *rep = rs_command(r, "PING");
    int ok = rep && rep->type == REDIS_REPLY_STATUS && !strcmp(rep->str, "PONG");
    if (rep)
        freeReplyObject(rep);
    return ok;
}

/* Start (port 0: a free one; else that one again). */
static inline int rs_start(redis_server *r, int port)
{
    if (!r->dir[0]) {
        snprintf(r->dir, sizeof r->dir, "/tmp/quark-redis-XXXXXX");
        if (!mkdtemp(r->dir))
            return -1;
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        r->port = port ? port : rs_free_port();
        char ps[16];
        snprintf(ps, sizeof ps, "%d", r->port);
        char *argv[] = {"redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", r->dir, "--daemonize", "no",
                        "--loglevel", "warning", NULL};
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        /* Not the test's output: a server left behind (a killed test) must
         * not hold ctest's pipe open. */
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
        if (posix_spawnp(&r->pid, "redis-server", &fa, NULL, argv, environ) != 0) {
            posix_spawn_file_actions_destroy(&fa);
            return -1;
        }
        posix_spawn_file_actions_destroy(&fa);
        if (TU_WAIT_UNTIL(rs_ping(r), 10000))
            return 0;
        kill(r->pid, SIGKILL); /* the port was taken meanwhile: another one */
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
        if (port)
            tu_sleep_ms(200);
    }
    return -1;
}

static inline void rs_kill(redis_server *r, int sig)
{
    if (r->pid > 0) {
        kill(r->pid, sig);
        if (sig == SIGKILL || sig == SIGTERM) {
            waitpid(r->pid, NULL, 0);
            r->pid = 0;
        }
    }
}

static inline void rs_stop(redis_server *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGCONT);
        rs_kill(r, SIGKILL);
    }
    if (r->dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", r->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", r->dir);
        r->dir[0] = '\0';
    }
}

/* A test program's main over one server: start it (spec gets its
 * "redis://127.0.0.1:PORT"), run the group, stop it. */
static inline int rs_run_group(redis_server *r, char *spec, size_t cap, const char *name,
                               const struct CMUnitTest *tests, size_t n)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (rs_start(r, 0) != 0) {
        fprintf(stderr, "could not start redis-server (Debian's redis-server package)\n");
        return 1;
    }
    snprintf(spec, cap, "redis://127.0.0.1:%d", r->port);
    int failed = _cmocka_run_group_tests(name, tests, n, NULL, NULL);
    rs_stop(r);
    return failed;
}

#endif
