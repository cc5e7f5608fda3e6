// A pipe grown to a size, for carrying one spliced message at a time.
// No project knowledge lives in util/.
#pragma once

#include "util/fd.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>

namespace util {

// Pipe slots count in pages: each splice or vmsplice takes at least one.
inline size_t page_size() {
    static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return size;
}

class Pipe {
  public:
    // Creates the pipe and grows it to hold `bytes`; returns false if it
    // cannot (the pipe then keeps the size it has, see slots()).
    bool open(size_t bytes) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) < 0) return false;
        read_end_.reset(fds[0]);
        write_end_.reset(fds[1]);
        const int size = fcntl(fds[0], F_SETPIPE_SZ, static_cast<int>(bytes));
        if (size < 0) {
            capacity_ = static_cast<size_t>(fcntl(fds[0], F_GETPIPE_SZ));
            return false;
        }
        capacity_ = static_cast<size_t>(size);
        return true;
    }
    int read_fd() const { return read_end_.get(); }
    int write_fd() const { return write_end_.get(); }
    size_t slots() const { return capacity_ / page_size(); }
    // Discards whatever a failed transfer left behind; keeps errno.
    void drain(char* scratch, size_t scratch_size) const {
        const int saved = errno;
        int available = 0;
        while (ioctl(read_fd(), FIONREAD, &available) == 0 && available > 0) {
            if (::read(read_fd(), scratch,
                       std::min(scratch_size, static_cast<size_t>(available))) <= 0)
                break;
        }
        errno = saved;
    }

  private:
    Fd read_end_, write_end_;
    size_t capacity_ = 0;
};

// Reads exactly len bytes; false on end of file or error.
inline bool read_exactly(int fd, char* buf, size_t len) {
    while (len > 0) {
        const ssize_t n = ::read(fd, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        buf += n;
        len -= static_cast<size_t>(n);
    }
    return true;
}

} // namespace util
