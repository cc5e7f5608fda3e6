// One Inode per source inode, holding an O_PATH fd: every operation works
// with *at() calls relative to these fds, so nothing outside SOURCE can be
// named through the mount and symlinks are never followed by the daemon.
#pragma once

#include "util/fd.hpp"

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace splicefs {

struct Inode {
    util::Fd fd; // O_PATH | O_NOFOLLOW
    dev_t dev = 0;
    ino_t ino = 0;
    mode_t type = 0;      // S_IFMT bits
    uint64_t nlookup = 0; // kernel references; guarded by InodeTable's mutex

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
        return ino == FUSE_ROOT_ID ? *root_ : *reinterpret_cast<Inode*>(ino);
    }
    fuse_ino_t id_of(const Inode& inode) const {
        return &inode == root_ ? FUSE_ROOT_ID : reinterpret_cast<fuse_ino_t>(&inode);
    }

    // Finds or adds the inode that `fd` (O_PATH, stat'ed as `st`) refers to and
    // counts one more kernel lookup. Returns the inode and closes `fd` if the
    // inode was already known.
    Inode& remember(util::Fd fd, const struct stat& st);
    // Adds one lookup to an inode already known (link()).
    void add_lookup(Inode& inode);
    // Drops `n` lookups; the inode is freed when none is left.
    void forget(fuse_ino_t ino, uint64_t n);

    size_t size();

  private:
    std::mutex mutex_;
    std::map<std::pair<dev_t, ino_t>, Inode*> by_source_id_;
    Inode* root_;
};

} // namespace splicefs
