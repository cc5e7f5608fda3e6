// State shared by all operations of one mount.
#pragma once

#include "inode.hpp"
#include "limits.hpp"
#include "options.hpp"
#include "passthrough.hpp"
#include "stats.hpp"
#include "uring.hpp"
#include "util/fd.hpp"
#include "util/handoff.hpp"

#include <fuse_lowlevel.h>
#include <linux/fuse.h>

#include <dirent.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace splicefs {

// What the kernel's fh names for an open file: the source fd plus what the
// data path learned about it.
struct FileHandle {
    util::Fd fd;
    // O_DIRECT opens only: the same file without O_DIRECT, for the writes
    // the kernel makes from its page cache (a shared mapping's dirty pages,
    // FUSE_WRITE_CACHE), whose lengths follow the file size and so need not
    // suit the source's direct I/O (EINVAL, and the data was lost).
    util::Fd buffered_fd;
    int fd_for_write(uint32_t write_flags) const {
        return (write_flags & FUSE_WRITE_CACHE) && buffered_fd ? buffered_fd.get() : fd.get();
    }
    // The inode whose fd this open file pins (InodeTable::pin), or null.
    Inode* pinned_inode = nullptr;
    // The inode of the open, and whether the kernel serves it (Passthrough).
    const Inode* inode = nullptr;
    OpenPath path = OpenPath::off;
    // The source refused splice (EINVAL) once: every later read of this open
    // file copies without trying again.
    std::atomic<bool> read_splice_refused{false};
    // splice() into a file opened O_APPEND is EINVAL by definition.
    std::atomic<bool> write_splice_refused{false};
};

// An open directory: the stream, and where the last reply stopped.
struct DirHandle {
    std::mutex mutex;               // guards the stream and position below
    DIR* dir = nullptr;             // null for the synthetic root of a single-file mount
    off_t offset = 0;               // position of `entry` in the stream
    struct dirent* entry = nullptr; // read but not yet returned (the reply was full)
    DirHandle() = default;
    DirHandle(const DirHandle&) = delete;
    DirHandle& operator=(const DirHandle&) = delete;
    ~DirHandle() {
        if (dir) closedir(dir);
    }
};

// Handles the kernel holds. It gives each back with RELEASE/RELEASEDIR; the
// ones it never gives back (the connection ended first) die with the mount.
template <typename Handle> class OpenHandles {
  public:
    Handle* add(std::unique_ptr<Handle> handle) {
        Handle* raw = handle.get();
        std::lock_guard lock(mutex_);
        handles_.emplace(raw, std::move(handle));
        util::publish(raw); // the caller hands it to the kernel as fh
        return raw;
    }
    void remove(Handle* handle) {
        std::unique_ptr<Handle> doomed; // destroyed outside the lock
        std::lock_guard lock(mutex_);
        if (auto it = handles_.find(handle); it != handles_.end()) {
            doomed = std::move(it->second);
            handles_.erase(it);
        }
    }
    size_t size() {
        std::lock_guard lock(mutex_);
        return handles_.size();
    }

  private:
    std::mutex mutex_;
    std::unordered_map<Handle*, std::unique_ptr<Handle>> handles_;
};

// SOURCE as one file (a block device or a disk image) instead of a directory.
struct SingleFile {
    // The file's entry in a directory mountpoint; empty when the mount is the
    // file itself (MOUNTPOINT is a regular file).
    std::string name;
    dev_t dev = 0; // the source's st_dev/st_ino, to recognise its inode
    ino_t ino = 0;
    bool block_device = false;
    uint64_t device_size = 0; // BLKGETSIZE64
};

// st_ino as the mount shows it. Through one FUSE mount every file has the
// mount's st_dev, so inode numbers of the filesystems mounted inside SOURCE
// would collide with each other and with SOURCE's own: those get the
// number of their filesystem (in the order the daemon met them, from 1) in
// the top 8 bits. SOURCE's filesystem keeps its numbers. Stable for the
// life of the daemon; hard links share theirs.
class InodeNumbers {
  public:
    explicit InodeNumbers(dev_t source_dev) : source_dev_(source_dev) {}
    ino_t of(dev_t dev, ino_t ino) {
        if (dev == source_dev_) return ino;
        constexpr unsigned shift = 56;
        std::lock_guard lock(mutex_);
        size_t tag = 0;
        while (tag < others_.size() && others_[tag] != dev)
            ++tag;
        if (tag == others_.size() && tag < 255) others_.push_back(dev);
        return (static_cast<ino_t>(std::min<size_t>(tag + 1, 255)) << shift) |
               (ino & ((ino_t{1} << shift) - 1));
    }

  private:
    dev_t source_dev_;
    std::mutex mutex_;
    std::vector<dev_t> others_; // index + 1 is the tag
};

struct Filesystem {
    // `inode_fds`, `file_handles`: see InodeTable.
    Filesystem(Options options, util::Fd root_fd, size_t inode_fds, bool file_handles)
        : opts(std::move(options)), inodes(std::move(root_fd), inode_fds, file_handles),
          inode_numbers(inodes.root().dev), passthrough(opts.passthrough), uring(opts.io_uring) {}

    Options opts;
    InodeTable inodes;
    InodeNumbers inode_numbers;
    Passthrough passthrough;
    Uring uring;
    Limits limits; // settle_limits(), before mounting
    Stats stats;
    double timeout = 1.0;       // entry and attribute timeouts, from the cache policy
    bool act_as_caller = false; // root daemon: create files with the caller's ids
    std::vector<gid_t> daemon_groups;
    std::string kernel_protocol; // "7.45", from INIT (before `initialized`)
    std::atomic<bool> initialized{false};
    std::atomic<bool> writeback_cache{false}; // negotiated at INIT (--cache always)
    // POSIX ACLs negotiated at INIT: the kernel enforces them and leaves the
    // umask to the server (CallerUmask).
    std::atomic<bool> server_applies_umask{false};
    std::optional<SingleFile> single_file;
    util::Fd single_file_fd; // O_PATH fd of a single-file SOURCE
    OpenHandles<FileHandle> open_files;
    OpenHandles<DirHandle> open_dirs;

    // The root of a single-file mount on a directory holds nothing but the
    // file: it is not the source, and nothing may be created or removed in it.
    bool is_synthetic_root(fuse_ino_t ino) const {
        return single_file && !single_file->name.empty() && ino == FUSE_ROOT_ID;
    }
    // stat() of a source inode as the mount presents it: a block device
    // appears as a regular file of the device's size.
    int stat_source(int fd, struct stat& st) const { return stat_source_at(fd, "", st); }
    int stat_source(Inode& inode, struct stat& st);
    // The same for `name` in directory `dir_fd` ("" for `dir_fd` itself).
    int stat_source_at(int dir_fd, const char* name, struct stat& st) const;
    // `st` of a source inode, as the kernel is to see it (InodeNumbers).
    void present(struct stat& st) { st.st_ino = inode_numbers.of(st.st_dev, st.st_ino); }
};

inline Filesystem& fs_of(fuse_req_t req) {
    return *static_cast<Filesystem*>(fuse_req_userdata(req));
}
// The handle a request's fh names; set up by the worker that opened it.
template <typename Handle> Handle& handle_from_fh(uint64_t fh) {
    auto* handle = reinterpret_cast<Handle*>(fh);
    util::adopt(handle);
    return *handle;
}
inline FileHandle& handle_of(const fuse_file_info* fi) {
    return handle_from_fh<FileHandle>(fi->fh);
}

// The operation table handed to libfuse (ops/table.cpp).
const fuse_lowlevel_ops& operations();

} // namespace splicefs
