// Kernel FUSE passthrough (Linux 6.9+): at OPEN the daemon registers the
// source file with the kernel as a backing file, and the kernel then serves
// that open file's reads, writes, splice and mmap itself, without a request
// to the daemon and without a copy. Its bytes are never seen here, so they
// are not counted; what is counted is which opens went this way and why the
// others did not.
//
// libfuse 3.14 has no API for it: its capability words are 32 bits and its
// open reply has no backing id. So the INIT and OPEN/CREATE replies it
// writes are amended on their way to /dev/fuse (fuse_session_custom_io).
// Built with libfuse 3.17 or later, its own API does that instead
// (FUSE_CAP_PASSTHROUGH, fuse_passthrough_open, fuse_file_info::backing_id).
#pragma once

#include "options.hpp"

#include <fuse_lowlevel.h>
#include <linux/fuse.h>

#if FUSE_MAJOR_VERSION > 3 || (FUSE_MAJOR_VERSION == 3 && FUSE_MINOR_VERSION >= 17)
#define SPLICEFS_LIBFUSE_PASSTHROUGH 1
#endif

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace splicefs {

struct Inode;

// The path an open of a regular file takes: the kernel (passthrough) or the
// daemon's data path, and for the latter why.
enum class OpenPath {
    passthrough,    // the kernel serves it from the backing file
    off,            // --passthrough off
    kernel_lacks,   // the kernel did not offer FUSE_PASSTHROUGH at INIT
    cache_policy,   // --cache always: writeback caching excludes passthrough
    not_privileged, // registering a backing file needs CAP_SYS_ADMIN
    kernel_refused, // the kernel refused the backing file (errno in stats)
    other_open,     // another open of the inode uses the data path
    setid_write,    // opened for writing with a setuid/setgid bit: the daemon clears it as for
                    // the writer (creds.hpp)
    count_
};
constexpr size_t open_path_count = static_cast<size_t>(OpenPath::count_);
const char* to_string(OpenPath path);

class Passthrough {
  public:
    explicit Passthrough(PassthroughMode mode) : mode_(mode) {}
    Passthrough(const Passthrough&) = delete;
    Passthrough& operator=(const Passthrough&) = delete;

    // The kernel's INIT request, before libfuse handles it.
    void kernel_init(const fuse_init_in& in, size_t size);
    // The flags2 word of the kernel's INIT request (0 without FUSE_INIT_EXT).
    uint32_t kernel_flags2() const { return kernel_flags2_; }
    // From the init operation, on the thread that will send the INIT reply:
    // asks for passthrough unless writeback caching was negotiated, and for
    // `other_flags2` (FUSE over io_uring).
    void negotiate(fuse_conn_info* conn, bool writeback_cache, uint32_t other_flags2 = 0);
    bool negotiated() const { return negotiated_; }
    // The kernel allows shared mmap of FOPEN_DIRECT_IO files (Linux 6.6+),
    // asked for in the INIT reply.
    bool direct_io_mmap() const { return direct_io_mmap_; }

    // Routes libfuse's replies through the amending writer. After mounting;
    // `daemon_groups` outlives this.
    bool install(fuse_session* session, const std::vector<gid_t>& daemon_groups);

    // At OPEN/CREATE of `inode`, whose source file is open as `fd` with
    // `flags`: which path the open takes. For OpenPath::passthrough, the
    // reply to `req` carries the backing id (`fi`, or the mark on the reply
    // this thread sends next); release() must follow when the kernel
    // releases the open file.
    OpenPath open(fuse_req_t req, const Inode& inode, int fd, int flags, fuse_file_info* fi);
    void release(fuse_req_t req, const Inode& inode, OpenPath path);
    // The open's reply was not sent after all: drop its mark.
    static void discard_mark();

    // Counters for stats.
    uint64_t opens(OpenPath path) const {
        return opens_[static_cast<size_t>(path)].load(std::memory_order_relaxed);
    }
    uint64_t backing_ids() const { return backing_ids_.load(std::memory_order_relaxed); }
    int last_refusal() const { return last_refusal_.load(std::memory_order_relaxed); }
    std::string state() const; // "on", or why every open uses the data path

  private:
    struct InodeState {
        int backing_id = 0;
        uint32_t passthrough_opens = 0, data_path_opens = 0;
    };
    OpenPath decide(fuse_req_t req, int fd, int flags, InodeState& state);
    // The kernel's id for `fd` as a backing file, or -errno.
    int open_backing(fuse_req_t req, int fd);
    void close_backing(fuse_req_t req, int backing_id);
    void count(OpenPath path) { opens_[static_cast<size_t>(path)].fetch_add(1); }

    const PassthroughMode mode_;
    int fuse_fd_ = -1;
    const std::vector<gid_t>* daemon_groups_ = nullptr;
    bool kernel_offers_ = false, kernel_offers_direct_io_mmap_ = false, kernel_init_ext_ = false;
    uint32_t kernel_flags2_ = 0;
    // Written at INIT, read by every worker and the stats thread.
    std::atomic<bool> writeback_{false}, negotiated_{false}, direct_io_mmap_{false};
    std::atomic<bool> unprivileged_{false}; // BACKING_OPEN said EPERM once
    std::mutex mutex_;                      // guards inodes_
    std::unordered_map<const Inode*, InodeState> inodes_;
    std::array<std::atomic<uint64_t>, open_path_count> opens_{};
    std::atomic<uint64_t> backing_ids_{0};
    std::atomic<int> last_refusal_{0};
};

} // namespace splicefs
