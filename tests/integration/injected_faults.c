/* LD_PRELOAD shim for tests: the faults a daemon meets on some machines.
 *   SHORT_READS_MAX=N        pread() and pread64() return at most N bytes, as
 *                            sources such as FUSE or NFS may before the end of
 *                            a file.
 *   PIPE_GROW_FAILS_AFTER=N  F_SETPIPE_SZ succeeds N times, then fails with
 *                            EPERM, as when a user's pipe budget
 *                            (fs.pipe-user-pages-soft) is spent. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

static long env_number(const char* name, long fallback) {
    const char* value = getenv(name);
    return value ? strtol(value, NULL, 10) : fallback;
}

ssize_t pread64(int fd, void* buf, size_t n, off_t offset) {
    static ssize_t (*real)(int, void*, size_t, off_t);
    if (!real) real = (ssize_t(*)(int, void*, size_t, off_t))dlsym(RTLD_NEXT, "pread64");
    const long most = env_number("SHORT_READS_MAX", -1);
    if (most >= 0 && n > (size_t)most) n = (size_t)most;
    return real(fd, buf, n, offset);
}

ssize_t pread(int fd, void* buf, size_t n, off_t offset) {
    return pread64(fd, buf, n, offset);
}

static atomic_long pipe_grows;

int fcntl(int fd, int cmd, ...) {
    static int (*real)(int, int, ...);
    if (!real) real = (int (*)(int, int, ...))dlsym(RTLD_NEXT, "fcntl");
    va_list args;
    va_start(args, cmd);
    const long arg = va_arg(args, long);
    va_end(args);
    if (cmd == F_SETPIPE_SZ) {
        const long allowed = env_number("PIPE_GROW_FAILS_AFTER", -1);
        if (allowed >= 0 && atomic_fetch_add(&pipe_grows, 1) >= allowed) {
            errno = EPERM;
            return -1;
        }
    }
    return real(fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...) {
    va_list args;
    va_start(args, cmd);
    const long arg = va_arg(args, long);
    va_end(args);
    return fcntl(fd, cmd, arg);
}
