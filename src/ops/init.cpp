// Negotiation with the kernel at mount time.
#include "ops/ops.hpp"

#include <spdlog/spdlog.h>

#include <string>

namespace splicefs::ops {

void init(void* userdata, fuse_conn_info* conn) {
    auto& fs = *static_cast<Filesystem*>(userdata);
    const Limits& limits = fs.limits;
    // Sizes were settled before mounting (limits.cpp, settle_limits); max_read
    // must agree with the max_read mount option.
    conn->max_write = static_cast<unsigned>(limits.max_write);
    conn->max_read = static_cast<unsigned>(limits.max_read);
    conn->max_readahead = static_cast<unsigned>(limits.max_reply);
    conn->max_background = 64;
    conn->congestion_threshold = 48;

    // READ and WRITE never reach libfuse: splicing is decided in the data path.
    conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
    // Let the kernel clear setuid/setgid bits on write and chown, as it does
    // natively; a root daemon writing with CAP_FSETID would keep them.
    conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
    if (fs.opts.cache == CachePolicy::always && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
        conn->want |= FUSE_CAP_WRITEBACK_CACHE;
    else
        conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    fs.writeback_cache = (conn->want & FUSE_CAP_WRITEBACK_CACHE) != 0;
    // Kernel passthrough and shared mmap of direct-I/O files are asked for
    // in the INIT reply itself (passthrough.hpp).
    // FUSE over io_uring (uring.hpp) too: its flag travels in the same word.
    fs.uring.kernel_init(fs.passthrough.kernel_flags2());
    fs.passthrough.negotiate(conn, fs.writeback_cache, fs.uring.negotiate());
    // POSIX ACLs as on the source: the kernel enforces them (it checks
    // permissions only with default_permissions, so only then), caches
    // them, and sees a mode changed by setting one at once. It then leaves
    // the umask to the server, which must not apply it where the parent has
    // a default ACL: the source decides that (CallerUmask).
    const bool kernel_checks = fs.opts.default_permissions || fs.opts.allow_other;
    const uint64_t acl_caps = FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
    if (kernel_checks && (conn->capable & acl_caps) == acl_caps) conn->want |= acl_caps;
    fs.server_applies_umask = (conn->want & acl_caps) == acl_caps;
    // Node ids stay valid while the daemon knows the inode, and LOOKUP of
    // `.` and `..` answers for them: file handles of the mount work.
    if (conn->capable & FUSE_CAP_EXPORT_SUPPORT) conn->want |= FUSE_CAP_EXPORT_SUPPORT;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    // Pages kept across opens (keep_cache) are dropped once the kernel sees
    // the source's mtime or size change.
    if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA) conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
    // (libfuse asks for max_pages from max_write, as settle_limits counted.)
    fs.kernel_protocol =
        std::to_string(conn->proto_major) + "." + std::to_string(conn->proto_minor);
    fs.initialized = true; // after everything INIT writes: the data path and stats read it then
    spdlog::debug("INIT: protocol 7.{}, max_write {}, max_read {}, max_readahead {}",
                  conn->proto_minor, conn->max_write, conn->max_read, conn->max_readahead);
}

} // namespace splicefs::ops
