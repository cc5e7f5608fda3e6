// Every inode the kernel holds keeps an O_PATH fd open in the daemon, and
// the kernel lets go of inodes on its own only under memory pressure: a
// tree larger than the fd limit would end in EMFILE for every lookup. The
// evictor watches the count and, above a high-water mark, asks the kernel
// to drop the least recently used entries (FUSE_NOTIFY_INVAL_ENTRY). The
// ones nobody uses come back as FORGETs, which close their fds.
#pragma once

#include "inode.hpp"
#include "stats.hpp"

#include <fuse_lowlevel.h>

#include <cstddef>
#include <set>
#include <string>
#include <thread>

namespace splicefs {

struct InodeLimits {
    size_t high_water = 0; // evict when more inodes than this are held
    size_t low_water = 0;  // down to this many
};
// What an fd limit leaves for inodes: half stays for open files, pipes,
// sockets and for the burst of lookups while the kernel lets go.
InodeLimits inode_limits_for(size_t fd_limit);

class InodeEvictor {
  public:
    InodeEvictor(InodeTable& inodes, fuse_session* session, std::string mountpoint,
                 InodeLimits limits, Counter& evictions);
    ~InodeEvictor() { stop(); }
    InodeEvictor(const InodeEvictor&) = delete;
    InodeEvictor& operator=(const InodeEvictor&) = delete;

    void start();
    void stop();

  private:
    void run();
    int ask_kernel_to_drop(const InodeTable::Entry& entry) const;
    // Every name on the path from the mountpoint to a mount below it:
    // dropping such an entry would detach that mount (d_invalidate).
    std::set<std::string> names_leading_to_submounts() const;

    InodeTable& inodes_;
    fuse_session* session_;
    std::string mountpoint_;
    InodeLimits limits_;
    Counter& evictions_; // entries the kernel was asked to drop; only this thread writes
    std::thread thread_;
};

} // namespace splicefs
