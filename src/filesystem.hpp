// State shared by all operations of one mount.
#pragma once

#include "inode.hpp"
#include "options.hpp"
#include "stats.hpp"
#include "util/fd.hpp"

#include <fuse_lowlevel.h>

#include <atomic>
#include <vector>

namespace splicefs {

// What the kernel's fh names for an open file: the source fd plus what the
// data path learned about it.
struct FileHandle {
    util::Fd fd;
    // The source refused splice (EINVAL) once: every later read of this open
    // file copies without trying again.
    std::atomic<bool> read_splice_refused{false};
    // splice() into a file opened O_APPEND is EINVAL by definition.
    std::atomic<bool> write_splice_refused{false};
};

struct Filesystem {
    Filesystem(Options options, util::Fd root_fd)
        : opts(std::move(options)), inodes(std::move(root_fd)) {}

    Options opts;
    InodeTable inodes;
    Stats stats;
    double timeout = 1.0;          // entry and attribute timeouts, from the cache policy
    bool act_as_caller = false;    // root daemon: create files with the caller's ids
    std::vector<gid_t> daemon_groups;
    std::atomic<bool> initialized{false};
};

inline Filesystem& fs_of(fuse_req_t req) { return *static_cast<Filesystem*>(fuse_req_userdata(req)); }
inline FileHandle& handle_of(const fuse_file_info* fi) { return *reinterpret_cast<FileHandle*>(fi->fh); }

// The operation table handed to libfuse (ops/table.cpp).
const fuse_lowlevel_ops& operations();

} // namespace splicefs
