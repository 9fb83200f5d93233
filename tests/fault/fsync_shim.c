/* Fault injection for the durability tests, loaded into the real server with LD_PRELOAD.
 *
 * fsync and fdatasync behave normally unless, in the directory named by FSYNC_SHIM_DIR:
 *   - a file `fail` exists: they fail with EIO, as a dying disk would;
 *   - a file `hang` exists: they create `entered` and wait until `hang` is removed, as a disk
 *     that takes forever would.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int exists(const char *dir, const char *name) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static void touch(const char *dir, const char *name) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    if (fd >= 0) close(fd);
}

/* 0: go on to the real call; -1: fail with EIO. */
static int injected(void) {
    const char *dir = getenv("FSYNC_SHIM_DIR");
    if (!dir) return 0;
    if (exists(dir, "fail")) {
        errno = EIO;
        return -1;
    }
    if (exists(dir, "hang")) {
        touch(dir, "entered");
        struct timespec pause = {0, 1000000};
        while (exists(dir, "hang")) nanosleep(&pause, NULL);
    }
    return 0;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (injected() < 0) return -1;
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (injected() < 0) return -1;
    return real(fd);
}
