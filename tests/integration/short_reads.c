/* LD_PRELOAD shim for tests: pread() and pread64() return at most
 * SHORT_READS_MAX bytes (default 5000), as sources such as FUSE or NFS may
 * before the end of a file. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

static size_t most(size_t n) {
    const char* env = getenv("SHORT_READS_MAX");
    const size_t limit = env ? (size_t)strtoul(env, NULL, 10) : 5000;
    return n > limit ? limit : n;
}

ssize_t pread64(int fd, void* buf, size_t n, off_t offset) {
    static ssize_t (*real)(int, void*, size_t, off_t);
    if (!real) real = (ssize_t(*)(int, void*, size_t, off_t))dlsym(RTLD_NEXT, "pread64");
    return real(fd, buf, most(n), offset);
}

ssize_t pread(int fd, void* buf, size_t n, off_t offset) {
    return pread64(fd, buf, n, offset);
}
