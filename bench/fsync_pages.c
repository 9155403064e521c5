/*
 * fsync-pages - what a group commit costs on this disk, by its size.
 *
 * Writes K pages of 4 KiB one after the other into a file of 4 MiB that is
 * already allocated (as SQLite reuses its WAL), then fdatasync, for 2 s per
 * K in 1, 4, 16, 32, 64. If the time of one fdatasync grows with K, a group
 * commit is bound by its bytes, not by its count of syncs.
 *
 *   fsync-pages FILE      (on the disk the storage will use; FILE is removed)
 *
 * Prints one line per K: pages/sync, syncs/s, us/sync, pages/s.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { PAGE = 4096, REGION_PAGES = 1024 };

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int write_page(int fd, const char *buf, long page)
{
    return pwrite(fd, buf, PAGE, (off_t)page * PAGE) == PAGE ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fsync-pages FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    char buf[PAGE];
    memset(buf, 'x', sizeof buf);
    for (long p = 0; p < REGION_PAGES; p++)
        if (write_page(fd, buf, p) != 0) {
            perror("pwrite");
            return 1;
        }
    fsync(fd);
    static const int ks[] = {1, 4, 16, 32, 64};
    long page = 0;
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        int k = ks[i];
        long syncs = 0;
        double t0 = now_us(), t;
        do {
            for (int j = 0; j < k; j++) {
                if (write_page(fd, buf, page) != 0) {
                    perror("pwrite");
                    return 1;
                }
                page = (page + 1) % REGION_PAGES;
            }
            if (fdatasync(fd) != 0) {
                perror("fdatasync");
                return 1;
            }
            syncs++;
        } while ((t = now_us()) - t0 < 2e6);
        double secs = (t - t0) / 1e6;
        printf("pages_per_sync=%d syncs_per_s=%.0f us_per_sync=%.0f pages_per_s=%.0f\n", k,
               (double)syncs / secs, secs * 1e6 / (double)syncs, (double)(syncs * k) / secs);
    }
    close(fd);
    unlink(argv[1]);
    return 0;
}
