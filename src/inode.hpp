// One Inode per source inode, holding an O_PATH fd: every operation works
// with *at() calls relative to these fds, so nothing outside SOURCE can be
// named through the mount and symlinks are never followed by the daemon.
#pragma once

#include "util/fd.hpp"
#include "util/handoff.hpp"

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace splicefs {

struct Inode {
    util::Fd fd; // O_PATH | O_NOFOLLOW
    dev_t dev = 0;
    ino_t ino = 0;
    mode_t type = 0;      // S_IFMT bits
    uint64_t nlookup = 0; // kernel references; guarded by InodeTable's mutex

    // The entry the kernel last learned this inode by, so that the evictor
    // can ask it to let go (InodeEvictor); guarded by InodeTable's mutex.
    // An empty name: unknown, or the kernel did not know it by that name.
    std::pair<dev_t, ino_t> parent{}; // source id: a node id could be reused
    std::string name;
    // When the evictor asked the kernel to drop it (steady clock, ms), or 0.
    uint64_t eviction_asked_ms = 0;
    // InodeTable's use clock at the last operation on this inode: the
    // evictor asks for the least recently used ones first.
    std::atomic<uint64_t> last_used{0};

    // Path through /proc/self/fd that reaches this inode for calls that have
    // no *at() form taking an O_PATH fd (open, xattrs, truncate).
    std::string proc_path() const { return "/proc/self/fd/" + std::to_string(fd.get()); }
};

class InodeTable {
  public:
    // Takes ownership of the root's O_PATH fd.
    explicit InodeTable(util::Fd root_fd);
    ~InodeTable();
    InodeTable(const InodeTable&) = delete;
    InodeTable& operator=(const InodeTable&) = delete;

    Inode& root() { return *root_; }
    Inode& get(fuse_ino_t ino) {
        Inode& inode = ino == FUSE_ROOT_ID ? *root_ : *reinterpret_cast<Inode*>(ino);
        util::adopt(&inode); // published by remember() on another worker
        inode.last_used.store(use_clock_.load(std::memory_order_relaxed),
                              std::memory_order_relaxed);
        return inode;
    }
    fuse_ino_t id_of(const Inode& inode) const {
        return &inode == root_ ? FUSE_ROOT_ID : reinterpret_cast<fuse_ino_t>(&inode);
    }

    // Finds or adds the inode that `fd` (O_PATH, stat'ed as `st`) refers to,
    // found as `name` in directory `parent`, and counts one more kernel
    // lookup. Returns the inode and closes `fd` if the inode was already known.
    Inode& remember(util::Fd fd, const struct stat& st, const Inode& parent, std::string_view name);
    // Drops `n` lookups; the inode is freed when none is left.
    void forget(fuse_ino_t ino, uint64_t n);
    // The source inode `st` describes is now called `name` in `parent`
    // (a rename through the mount), if it is known.
    void renamed(const struct stat& st, const Inode& parent, std::string_view name);

    size_t size();

    // For the evictor. An entry to ask the kernel to drop.
    struct Entry {
        std::pair<dev_t, ino_t> source_id;
        fuse_ino_t parent; // node id of the directory, as the kernel knows it
        std::string name;
    };
    // The least recently used inodes to ask for so that `target` would be
    // left, counting those asked in the last 10 ms as on their way out;
    // never the root, one asked before (until it is looked up again) or one
    // named in `protected_names`.
    std::vector<Entry> eviction_candidates(size_t target,
                                           const std::set<std::string>& protected_names);
    // The kernel does not know `entry` by that name (any more).
    void name_unknown(const Entry& entry);
    // Blocks until more than `limit` inodes are held (true) or stop_waiting()
    // was called (false).
    bool wait_for_more_than(size_t limit);
    // Blocks until at most `limit` inodes are held, `timeout` passed or
    // stop_waiting() was called. Any number of threads may wait.
    void wait_for_at_most(size_t limit, std::chrono::milliseconds timeout);
    void stop_waiting();

  private:
    std::mutex mutex_;
    std::condition_variable size_changed_;
    size_t wake_above_ = SIZE_MAX; // the evictor's threshold
    size_t shrink_waiters_ = 0;    // threads in wait_for_at_most()
    bool stop_waiting_ = false;
    std::map<std::pair<dev_t, ino_t>, Inode*> by_source_id_;
    Inode* root_;
    std::atomic<uint64_t> use_clock_{0}; // counts lookups
};

} // namespace splicefs
