#include "passthrough.hpp"

#include "channel.hpp"
#include "creds.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <utility>

namespace splicefs {

namespace {

// Protocol 7.40 (Linux 6.9) definitions, our own: Debian 12's
// linux-libc-dev (6.1) lacks them, and newer headers rename the fields
// (padding became backing_id, unused[0] max_stack_depth). INIT flags beyond
// 32 bits travel in flags2.
constexpr uint64_t init_passthrough = uint64_t{1} << 37;
constexpr uint64_t init_direct_io_allow_mmap = uint64_t{1} << 36;
constexpr uint32_t flags2_of(uint64_t flag) {
    return static_cast<uint32_t>(flag >> 32);
}
constexpr uint32_t fopen_passthrough = 1U << 7;
// The only open flags the kernel accepts next to FOPEN_PASSTHROUGH.
constexpr uint32_t fopen_with_passthrough =
    FOPEN_DIRECT_IO | FOPEN_NOFLUSH | FOPEN_PARALLEL_DIRECT_WRITES;
struct InitOut {
    uint32_t major, minor, max_readahead, flags;
    uint16_t max_background, congestion_threshold;
    uint32_t max_write, time_gran;
    uint16_t max_pages, map_alignment;
    uint32_t flags2, max_stack_depth;
    uint32_t unused[6];
};
static_assert(sizeof(InitOut) == sizeof(fuse_init_out));
static_assert(offsetof(InitOut, flags2) == offsetof(fuse_init_out, flags2));
struct OpenOut {
    uint64_t fh;
    uint32_t open_flags;
    int32_t backing_id;
};
static_assert(sizeof(OpenOut) == sizeof(fuse_open_out));
struct BackingMap {
    int32_t fd;
    uint32_t flags;
    uint64_t padding;
};
const unsigned long backing_open_ioctl = _IOW(FUSE_DEV_IOC_MAGIC, 1, BackingMap);
const unsigned long backing_close_ioctl = _IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t);
// The backing file's filesystem may not be stacked itself (overlayfs gives
// ELOOP), and something may still stack on the mount (overlayfs, at most 2).
constexpr uint32_t max_stack_depth = 1;

// What the reply this thread sends next must carry. libfuse writes a reply
// on the thread that handles the request, from inside the fuse_reply_*()
// call that follows the operation, so a thread-local mark reaches exactly
// that reply.
struct Amendment {
    enum Kind { none, init, open } kind = none;
    uint32_t flags2 = 0;
    int32_t backing_id = 0;
};
thread_local Amendment next_reply;

void amend(const Amendment& a, iovec* iov, int count) {
    if (a.kind == Amendment::none || count != 2) return;
    const auto* out = static_cast<const fuse_out_header*>(iov[0].iov_base);
    if (out->error != 0) return;
    auto* payload = static_cast<char*>(iov[1].iov_base);
    if (a.kind == Amendment::init && iov[1].iov_len >= sizeof(fuse_init_out)) {
        auto* init = reinterpret_cast<fuse_init_out*>(payload);
        init->flags |= FUSE_INIT_EXT;
        init->flags2 |= a.flags2;
        if (a.flags2 & flags2_of(init_passthrough)) init->unused[0] = max_stack_depth;
    } else if (a.kind == Amendment::open && iov[1].iov_len >= sizeof(fuse_open_out)) {
        // OPEN's reply is the fuse_open_out; CREATE's ends with one.
        auto* open =
            reinterpret_cast<fuse_open_out*>(payload + iov[1].iov_len - sizeof(fuse_open_out));
        open->open_flags = (open->open_flags & fopen_with_passthrough) | fopen_passthrough;
        open->padding = static_cast<uint32_t>(a.backing_id);
    }
}

ssize_t write_reply(int fd, iovec* iov, int count, void*) {
    amend(std::exchange(next_reply, {}), iov, count);
    return ReplyRedirect::send(fd, iov, count);
}

ssize_t read_request(int fd, void* buf, size_t len, void*) {
    return ::read(fd, buf, len); // unused: the workers receive requests themselves
}

} // namespace

const char* to_string(OpenPath path) {
    switch (path) {
    case OpenPath::passthrough:
        return "passthrough";
    case OpenPath::off:
        return "passthrough_off";
    case OpenPath::kernel_lacks:
        return "kernel_lacks_passthrough";
    case OpenPath::cache_policy:
        return "cache_policy";
    case OpenPath::not_privileged:
        return "not_privileged";
    case OpenPath::kernel_refused:
        return "kernel_refused";
    case OpenPath::other_open:
        return "other_open_not_passthrough";
    case OpenPath::setid_write:
        return "setuid_setgid_write";
    case OpenPath::count_:
        break;
    }
    return "?";
}

void Passthrough::kernel_init(const fuse_init_in& in, size_t size) {
    const size_t flags2_end = offsetof(fuse_init_in, flags2) + sizeof in.flags2;
    kernel_init_ext_ = (in.flags & FUSE_INIT_EXT) && size >= flags2_end;
    const uint32_t flags2 = kernel_init_ext_ ? in.flags2 : 0;
    kernel_flags2_ = flags2;
    kernel_offers_ = (flags2 & flags2_of(init_passthrough)) != 0;
    kernel_offers_direct_io_mmap_ = (flags2 & flags2_of(init_direct_io_allow_mmap)) != 0;
}

void Passthrough::negotiate(fuse_conn_info* conn, bool writeback_cache, uint32_t other_flags2) {
    writeback_ = writeback_cache;
    uint32_t flags2 = other_flags2;
    if (kernel_offers_direct_io_mmap_) {
        flags2 |= flags2_of(init_direct_io_allow_mmap);
        direct_io_mmap_ = true;
    }
    // The kernel ignores passthrough next to writeback caching.
    if (mode_ == PassthroughMode::auto_ && kernel_offers_ && !writeback_cache) {
#ifdef SPLICEFS_LIBFUSE_PASSTHROUGH
        conn->want |= FUSE_CAP_PASSTHROUGH;
        // libfuse sends one more: the mount's own layer.
        conn->max_backing_stack_depth = max_stack_depth - 1;
#else
        flags2 |= flags2_of(init_passthrough);
#endif
        negotiated_ = true;
    }
    (void)conn;
    if (flags2 != 0) next_reply = {Amendment::init, flags2, 0};
}

int Passthrough::open_backing(fuse_req_t req, int fd) {
#ifdef SPLICEFS_LIBFUSE_PASSTHROUGH
    errno = 0;
    const int id = fuse_passthrough_open(req, fd); // 0 on failure, errno kept (log.cpp)
    return id > 0 ? id : -(errno != 0 ? errno : EIO);
#else
    (void)req;
    BackingMap map{fd, 0, 0};
    const int id = ioctl(fuse_fd_, backing_open_ioctl, &map);
    return id > 0 ? id : -errno;
#endif
}

void Passthrough::close_backing(fuse_req_t req, int backing_id) {
#ifdef SPLICEFS_LIBFUSE_PASSTHROUGH
    if (fuse_passthrough_close(req, backing_id) < 0)
#else
    (void)req;
    auto id = static_cast<uint32_t>(backing_id);
    if (ioctl(fuse_fd_, backing_close_ioctl, &id) < 0)
#endif
        spdlog::warn("releasing backing file {}: {}", backing_id, std::strerror(errno));
}

bool Passthrough::install(fuse_session* session, const std::vector<gid_t>& daemon_groups) {
    fuse_fd_ = fuse_session_fd(session);
    daemon_groups_ = &daemon_groups;
    fuse_custom_io io{};
    io.writev = write_reply;
    io.read = read_request;
    const int r = fuse_session_custom_io(session, &io, fuse_fd_);
    if (r != 0) spdlog::warn("cannot amend libfuse's replies: {}", std::strerror(-r));
    return r == 0;
}

OpenPath Passthrough::decide(fuse_req_t req, int fd, int flags, InodeState& state) {
    if (state.backing_id > 0) return OpenPath::passthrough;
    // The kernel fails cached opens of an inode that has passthrough opens
    // (and the reverse) with EIO: all opens of an inode agree.
    if (state.data_path_opens > 0) return OpenPath::other_open;
    if (unprivileged_) return OpenPath::not_privileged;
    // Writes through a backing file clear setuid/setgid as for an outsider
    // (BackingFileCreds); the data path clears them as for the writer.
    struct stat st {};
    if ((flags & O_ACCMODE) != O_RDONLY && fstat(fd, &st) == 0 &&
        (st.st_mode & (S_ISUID | S_ISGID)))
        return OpenPath::setid_write;
    int id = -1, err = EPERM;
    {
        BackingFileCreds creds(*daemon_groups_);
        if (!creds.failed()) {
            id = open_backing(req, fd);
            err = -id;
        }
    }
    if (id > 0) {
        state.backing_id = id;
        backing_ids_.fetch_add(1);
        return OpenPath::passthrough;
    }
    if (err == EPERM) {
        spdlog::info("passthrough needs CAP_SYS_ADMIN: files are served by the data path");
        unprivileged_ = true;
        return OpenPath::not_privileged;
    }
    if (last_refusal_.exchange(err) != err)
        spdlog::info("the kernel refused a backing file: {}", std::strerror(err));
    return OpenPath::kernel_refused;
}

OpenPath Passthrough::open(fuse_req_t req, const Inode& inode, int fd, int flags,
                           fuse_file_info* fi) {
    OpenPath path;
    if (mode_ == PassthroughMode::off) {
        path = OpenPath::off;
    } else if (writeback_) {
        path = OpenPath::cache_policy;
    } else if (!negotiated_) {
        path = OpenPath::kernel_lacks;
    } else {
        std::lock_guard lock(mutex_);
        InodeState& state = inodes_[&inode];
        path = decide(req, fd, flags, state);
        if (path == OpenPath::passthrough) {
            ++state.passthrough_opens;
#ifdef SPLICEFS_LIBFUSE_PASSTHROUGH
            fi->backing_id = state.backing_id;
#else
            next_reply = {Amendment::open, 0, state.backing_id};
#endif
        } else {
            ++state.data_path_opens;
        }
    }
    (void)fi;
    count(path);
    return path;
}

void Passthrough::release(fuse_req_t req, const Inode& inode, OpenPath path) {
    if (path == OpenPath::off || path == OpenPath::cache_policy || path == OpenPath::kernel_lacks)
        return;
    std::lock_guard lock(mutex_);
    const auto it = inodes_.find(&inode);
    if (it == inodes_.end()) return;
    InodeState& state = it->second;
    if (path == OpenPath::passthrough)
        --state.passthrough_opens;
    else
        --state.data_path_opens;
    if (state.passthrough_opens + state.data_path_opens > 0) return;
    if (state.backing_id > 0) {
        close_backing(req, state.backing_id);
        backing_ids_.fetch_sub(1);
    }
    inodes_.erase(it);
}

void Passthrough::discard_mark() {
    next_reply = {};
}

std::string Passthrough::state() const {
    if (mode_ == PassthroughMode::off) return "off";
    if (writeback_) return "off: --cache always (writeback caching)";
    if (!negotiated_) return "off: the kernel does not offer it";
    if (unprivileged_) return "off: needs CAP_SYS_ADMIN";
    return "on";
}

} // namespace splicefs
