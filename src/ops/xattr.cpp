// Extended attributes. The *xattr() calls do not accept O_PATH fds, so they
// go through the /proc/self/fd link of the inode.
#include "ops/ops.hpp"

#include <sys/xattr.h>

#include <cerrno>
#include <vector>

namespace splicefs::ops {

namespace {

// Replies with the size (size == 0) or the data, from a call filling `buf`.
template <typename Call> void reply_xattr_data(fuse_req_t req, size_t size, Call call) {
    std::vector<char> buf(size);
    const ssize_t n = call(size ? buf.data() : nullptr, size);
    if (n < 0)
        fuse_reply_err(req, errno);
    else if (size == 0)
        fuse_reply_xattr(req, static_cast<size_t>(n));
    else
        fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
}

} // namespace

void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
              int flags) {
    if (refused_in_synthetic_root(req, ino)) return;
    const PathFd fd = path_fd_or_reply(req, fs_of(req).inodes.get(ino));
    if (!fd) return;
    const auto path = fd.proc_path();
    fuse_reply_err(req, ::setxattr(path.c_str(), name, value, size, flags) < 0 ? errno : 0);
}

void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
    const PathFd fd = path_fd_or_reply(req, fs_of(req).inodes.get(ino));
    if (!fd) return;
    const auto path = fd.proc_path();
    reply_xattr_data(
        req, size, [&](char* buf, size_t len) { return ::getxattr(path.c_str(), name, buf, len); });
}

void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
    const PathFd fd = path_fd_or_reply(req, fs_of(req).inodes.get(ino));
    if (!fd) return;
    const auto path = fd.proc_path();
    reply_xattr_data(req, size,
                     [&](char* buf, size_t len) { return ::listxattr(path.c_str(), buf, len); });
}

void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
    if (refused_in_synthetic_root(req, ino)) return;
    const PathFd fd = path_fd_or_reply(req, fs_of(req).inodes.get(ino));
    if (!fd) return;
    const auto path = fd.proc_path();
    fuse_reply_err(req, ::removexattr(path.c_str(), name) < 0 ? errno : 0);
}

} // namespace splicefs::ops
