// The inode store. One Inode per source inode the kernel knows. Every
// operation works with *at() calls relative to an inode's O_PATH fd, so
// nothing outside SOURCE can be named through the mount and symlinks are
// never followed by the daemon.
//
// The kernel may hold far more inodes than the daemon may hold fds, and what
// the daemon does to stay within its fds must not be visible through the
// mount (asking the kernel to drop entries would unhash dentries in use:
// cwd, /proc links and mounts on them break). So an inode does not own an
// fd: its fd lives in a bounded cache, and when that closed it the inode is
// reopened on demand, by source file handle (open_by_handle_at) where the
// source and the daemon's privileges allow, else by its parent and name.
#pragma once

#include "util/fd.hpp"
#include "util/handoff.hpp"

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace splicefs {

struct Inode {
    dev_t dev = 0;
    ino_t ino = 0;
    mode_t type = 0;         // S_IFMT bits
    uint64_t generation = 0; // distinguishes inodes that reuse a node id
    // How to reach the source inode again once its fd was closed: by file
    // handle (`handle` non-empty, valid on the mount `mount_fd` is on), else
    // by `name` in `parent`, which this inode keeps alive.
    std::vector<unsigned char> handle; // a struct file_handle
    int mount_fd = -1;                 // owned by InodeTable

    // Guarded by InodeTable's mutex:
    uint64_t nlookup = 0;    // kernel references
    Inode* parent = nullptr; // by-name inodes only; the last name it was known by
    std::string name;
    uint32_t children = 0; // by-name inodes whose `parent` this is
    uint32_t pins = 0;     // open files, or no longer reachable by name: keep the fd
    bool in_cache = false; // `fd` counts against the cache
    // Forgotten by the kernel but kept, without an fd, so that file handles
    // of the mount (node id and generation) still reach it: see retire().
    bool retired = false;
    std::list<Inode*>::iterator retired_at;

    // The cached fd, shared with operations using it right now: closing it in
    // the cache never closes it under them. Guarded by fd_mutex.
    std::mutex fd_mutex;
    std::shared_ptr<const util::Fd> fd;
    bool had_fd = false; // an fd was open before: opening one now is a reopen
    // InodeTable's use clock at the last operation: the least recently used
    // fds are closed first.
    std::atomic<uint64_t> last_used{0};
};

// An inode's O_PATH fd, open as long as this lives, or why there is none.
class PathFd {
  public:
    explicit PathFd(int error) : error_(error) {}
    explicit PathFd(std::shared_ptr<const util::Fd> fd) : fd_(std::move(fd)) {}
    explicit operator bool() const { return fd_ != nullptr; }
    int get() const { return fd_->get(); }
    int error() const { return error_; }
    // A path through /proc/self/fd that reaches the inode, for calls with no
    // *at() form that takes an O_PATH fd (open, xattrs, truncate, chmod).
    std::string proc_path() const { return "/proc/self/fd/" + std::to_string(get()); }
    const std::shared_ptr<const util::Fd>& shared() const { return fd_; }

  private:
    std::shared_ptr<const util::Fd> fd_;
    int error_ = 0;
};

class InodeTable {
  public:
    // Takes ownership of the root's O_PATH fd. `fd_budget`: how many inode
    // fds may stay open at once. `use_file_handles`: try name_to_handle_at
    // (it is no use without CAP_DAC_READ_SEARCH for open_by_handle_at).
    InodeTable(util::Fd root_fd, size_t fd_budget, bool use_file_handles);
    ~InodeTable();
    InodeTable(const InodeTable&) = delete;
    InodeTable& operator=(const InodeTable&) = delete;

    Inode& root() { return *root_; }
    Inode& get(fuse_ino_t ino) {
        Inode& inode = ino == FUSE_ROOT_ID ? *root_ : *reinterpret_cast<Inode*>(ino);
        util::adopt(&inode); // published by remember() on another worker
        return inode;
    }
    fuse_ino_t id_of(const Inode& inode) const {
        return &inode == root_ ? FUSE_ROOT_ID : reinterpret_cast<fuse_ino_t>(&inode);
    }
    // The inode a node id names if the daemon still knows it (held by the
    // kernel or retired), else null: for node ids that come from file handles
    // of the mount (LOOKUP of "." and ".."), which may name inodes the kernel
    // forgot long ago. Holds one lookup, to be dropped with forget(ino, 1).
    Inode* hold(fuse_ino_t ino);

    // The inode's fd, reopened if the cache closed it. Errors: ESTALE when
    // the source inode cannot be reached any more, or what opening said.
    PathFd path_fd(Inode& inode);

    // Finds or adds the inode that `fd` (O_PATH, stat'ed as `st`) refers to,
    // found as `name` in directory `parent`, and counts one more kernel
    // lookup. Takes `fd` into the cache or closes it.
    Inode& remember(util::Fd fd, const struct stat& st, Inode& parent, std::string_view name);
    // The same for `name` in directory `dir_fd`, stat'ed as `st`, without
    // an fd: it is opened (by handle or by name) when an operation first
    // needs it. A lookup costs a stat and, for an inode new to the daemon, a
    // name_to_handle_at. Null when it cannot be recorded so (the name went to
    // another file meanwhile, a mount not met yet): then open it and
    // remember().
    Inode* remember_unopened(int dir_fd, const char* name, const struct stat& st, Inode& parent);
    // Drops `n` lookups; the inode is freed when none is left.
    void forget(fuse_ino_t ino, uint64_t n);
    // The source inode `st` describes is now called `name` in `parent`
    // (a rename through the mount), if it is known.
    void renamed(const struct stat& st, Inode& parent, std::string_view name);
    // Keeps the inode's fd (`fd`, from path_fd()) open until unpin(): while
    // the file is open, and once its last name is gone (nothing could reopen
    // it then).
    void pin(Inode& inode, const PathFd& fd);
    void unpin(Inode& inode);
    // The known inode `st` describes, or null; the reference is only good
    // while the kernel holds the inode (as during an operation on its name).
    Inode* known(const struct stat& st);
    // Closes cached fds nobody uses right now, down to half the budget: the
    // daemon ran out of fds.
    void close_some_fds();

    size_t size(); // inodes the kernel holds (the retired not counted)
    struct FdStats {
        size_t open = 0;       // inode fds in the cache
        size_t budget = 0;     // at most this many, pins aside
        uint64_t reopened = 0; // fds opened again after the cache closed them
        bool file_handles = false;
    };
    FdStats fd_stats();

  private:
    void cache_fd(Inode& inode, std::shared_ptr<const util::Fd> fd); // table mutex held
    void shrink_cache_to(size_t target);                             // table mutex held
    void release_locked(Inode* inode);                               // table mutex held
    bool needs_handle_locked(const struct stat& st);
    Inode& find_or_add_locked(const struct stat& st, std::vector<unsigned char>* handle,
                              int mount_id);
    void note_lookup_locked(Inode& inode, Inode& parent, std::string_view name);
    void retire(Inode& inode);   // table mutex held
    void unretire(Inode& inode); // table mutex held
    void erase(Inode* inode);    // table mutex held
    int reopen(Inode& inode, util::Fd& fd);

    std::mutex mutex_;
    std::map<std::pair<dev_t, ino_t>, Inode*> by_source_id_;
    std::unordered_set<Inode*> live_;             // every Inode, for hold()
    std::unordered_set<Inode*> cached_;           // inodes whose fd the cache holds
    std::unordered_map<int, util::Fd> mount_fds_; // mount id -> an fd on that mount
    std::list<Inode*> retired_;                   // oldest first
    Inode* root_;
    size_t fd_budget_;
    bool use_file_handles_;
    uint64_t generations_ = 0;
    uint64_t reopened_ = 0;
    size_t peak_size_ = 0; // most inodes held since memory was last trimmed
    std::atomic<uint64_t> use_clock_{0};
};

} // namespace splicefs
