/*
 * silo_proc.h - a silo process for the tests that run one (counter-silo):
 * spawned with its stdout on a pipe, ready once it printed its
 * "listening ... (port N" line; stopped by its PID.
 */
#ifndef QUARK_TEST_SILO_PROC_H
#define QUARK_TEST_SILO_PROC_H

#include <signal.h>
#include <stdbool.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

extern char **environ;

typedef struct silo_proc {
    pid_t pid;
    int port;
    FILE *out;                     /* its stdout */
} silo_proc;

/* Spawn argv (argv[0] the program) and wait for a line holding `ready`
 * (a program that listens says "listening ... (port N": port gets N). */
static inline void silo_proc_start_until(silo_proc *sp, char *const argv[], const char *ready)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    assert_int_equal(posix_spawn(&sp->pid, argv[0], &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    sp->out = fdopen(fds[0], "r");
    char line[256];
    sp->port = 0;
    bool seen = false;
    while (!seen && fgets(line, sizeof line, sp->out)) {
        char *p = strstr(line, "(port ");
        if (p)
            sp->port = atoi(p + 6);
        seen = strstr(line, ready) != NULL;
    }
    assert_true(seen);
}

static inline void silo_proc_start(silo_proc *sp, char *const argv[])
{
    silo_proc_start_until(sp, argv, "listening");
    assert_true(sp->port > 0);
}

/* Send sig, wait for it to exit; its wait status. Once only: a second stop
 * (a teardown after a failed assertion on the first) returns 0. */
static inline int silo_proc_stop(silo_proc *sp, int sig)
{
    int status = 0;
    if (sp->pid > 0) {
        kill(sp->pid, sig);
        waitpid(sp->pid, &status, 0);
        sp->pid = 0;
    }
    if (sp->out) {
        fclose(sp->out);
        sp->out = NULL;
    }
    return status;
}

#endif
