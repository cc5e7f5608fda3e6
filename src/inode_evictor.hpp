// Every inode the kernel holds keeps an O_PATH fd open in the daemon, and
// the kernel lets go of inodes on its own only under memory pressure: a
// tree larger than the fd limit would end in EMFILE for every lookup. The
// evictor watches the count and, above a high-water mark, asks the kernel
// to drop the least recently used entries (FUSE_NOTIFY_INVAL_ENTRY). The
// ones nobody uses come back as FORGETs, which close their fds.
#pragma once

#include "inode.hpp"
#include "stats.hpp"
#include "util/mountinfo.hpp"

#include <fuse_lowlevel.h>

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace splicefs {

struct InodeLimits {
    size_t high_water = 0; // evict when more inodes than this are held
    size_t low_water = 0;  // down to this many
};
// What an fd limit leaves for inodes: half stays for open files, pipes,
// sockets and for the burst of lookups while the kernel lets go.
InodeLimits inode_limits_for(size_t fd_limit);

// Adds every name on the path, inside filesystem `dev`, to an entry that one
// of `mounts` (one namespace's mountinfo) is mounted on.
void add_names_leading_to_mounts_on(dev_t dev, const std::vector<util::MountEntry>& mounts,
                                    std::set<std::string>& names);

class InodeEvictor {
  public:
    InodeEvictor(InodeTable& inodes, fuse_session* session, InodeLimits limits, Counter& evictions);
    ~InodeEvictor() { stop(); }
    InodeEvictor(const InodeEvictor&) = delete;
    InodeEvictor& operator=(const InodeEvictor&) = delete;

    // `mount_dev` is the mount's st_dev, which names it in every mountinfo.
    void start(dev_t mount_dev);
    void stop();

  private:
    void run();
    int ask_kernel_to_drop(const InodeTable::Entry& entry) const;
    // Every name on the path, inside this filesystem, to an entry that
    // something is mounted on, in any mount namespace: dropping such an
    // entry would detach that mount (d_invalidate does, in all namespaces).
    // Bind mounts of a directory of this mount count too.
    std::set<std::string> names_leading_to_submounts();

    InodeTable& inodes_;
    fuse_session* session_;
    InodeLimits limits_;
    Counter& evictions_; // entries the kernel was asked to drop; only this thread writes
    dev_t mount_dev_ = 0;
    // Looking for new mount namespaces walks /proc: at most once a second.
    std::vector<std::string> namespaces_;
    std::chrono::steady_clock::time_point namespaces_read_{};
    std::thread thread_;
};

} // namespace splicefs
