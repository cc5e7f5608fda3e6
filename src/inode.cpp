#include "inode.hpp"

#include "filesystem.hpp"

#include <fcntl.h>
#include <malloc.h>

#include <algorithm>
#include <cerrno>

#include <sys/stat.h>

namespace splicefs {

namespace {

struct HandleBuffer {
    file_handle header;
    unsigned char bytes[MAX_HANDLE_SZ];
};

// The source file handle of `name` in directory `dir_fd` ("" for `dir_fd`
// itself; a mountpoint's name gives the mounted root's, as stat does) and
// the id of the mount it is valid on, or false when the source cannot give
// one (no export support).
bool handle_of(int dir_fd, const char* name, std::vector<unsigned char>& handle, int& mount_id) {
    HandleBuffer buffer{};
    buffer.header.handle_bytes = MAX_HANDLE_SZ;
    const int flags = *name == '\0' ? AT_EMPTY_PATH : 0;
    if (name_to_handle_at(dir_fd, name, &buffer.header, &mount_id, flags) < 0) return false;
    const auto* begin = reinterpret_cast<const unsigned char*>(&buffer);
    handle.assign(begin, begin + sizeof(file_handle) + buffer.header.handle_bytes);
    return true;
}

// An fd open_by_handle_at accepts for the mount the directory `fd` is on:
// not O_PATH, which it refuses (EBADF). The first inode of a mount the daemon
// meets is the mount's root, a directory; a bind-mounted file is not one and
// is reopened by name.
int mount_fd_from(int fd) {
    return openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

std::shared_ptr<const util::Fd> shared(util::Fd fd) {
    return std::make_shared<const util::Fd>(std::move(fd));
}

// How many forgotten inodes known by file handle are kept for the file
// handles of the mount (about 300 bytes each, no fd): beyond that the
// oldest are let go, and handles of theirs give ESTALE.
constexpr size_t retired_limit = 131072;

} // namespace

InodeTable::InodeTable(util::Fd root_fd, size_t fd_budget, bool use_file_handles)
    : root_(new Inode), fd_budget_(std::max<size_t>(fd_budget, 16)),
      use_file_handles_(use_file_handles) {
    struct stat st {};
    fstat(root_fd.get(), &st);
    root_->dev = st.st_dev;
    root_->ino = st.st_ino;
    root_->type = st.st_mode & S_IFMT;
    root_->nlookup = 1; // never forgotten
    root_->pins = 1;    // never closed
    if (use_file_handles_) {
        // One probe decides: without CAP_DAC_READ_SEARCH open_by_handle_at
        // is EPERM for every inode, and inodes are reopened by name.
        std::vector<unsigned char> handle;
        int mount_id = -1;
        use_file_handles_ = false;
        util::Fd mount_fd(mount_fd_from(root_fd.get()));
        if (mount_fd && handle_of(root_fd.get(), "", handle, mount_id)) {
            const util::Fd probe(open_by_handle_at(
                mount_fd.get(), reinterpret_cast<file_handle*>(handle.data()), O_PATH | O_CLOEXEC));
            if (probe) {
                use_file_handles_ = true;
                mount_fds_.emplace(mount_id, std::move(mount_fd));
            }
        }
    }
    root_->fd = shared(std::move(root_fd));
    by_source_id_[{st.st_dev, st.st_ino}] = root_;
    live_.insert(root_);
}

InodeTable::~InodeTable() {
    for (Inode* inode : live_)
        delete inode;
}

Inode* InodeTable::hold(fuse_ino_t ino) {
    if (ino == FUSE_ROOT_ID) return root_;
    std::lock_guard lock(mutex_);
    auto* inode = reinterpret_cast<Inode*>(ino);
    if (!live_.contains(inode)) return nullptr;
    ++inode->nlookup;
    if (inode->retired) unretire(*inode);
    return inode;
}

PathFd InodeTable::path_fd(Inode& inode) {
    inode.last_used.store(use_clock_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    {
        std::lock_guard lock(inode.fd_mutex);
        if (inode.fd) return PathFd(inode.fd);
    }
    util::Fd fd;
    int err = reopen(inode, fd);
    if (err == EMFILE || err == ENFILE) {
        close_some_fds();
        err = reopen(inode, fd);
    }
    if (err) return PathFd(err);
    auto opened = shared(std::move(fd));
    bool again;
    {
        std::lock_guard lock(inode.fd_mutex);
        if (inode.fd) return PathFd(inode.fd); // another worker was first
        inode.fd = opened;
        again = std::exchange(inode.had_fd, true);
    }
    std::lock_guard lock(mutex_);
    if (again) ++reopened_; // not the first open of an inode looked up without one
    cache_fd(inode, nullptr);
    return PathFd(std::move(opened));
}

int InodeTable::reopen(Inode& inode, util::Fd& fd) {
    if (!inode.handle.empty()) { // set before the inode was published, never changed
        fd.reset(open_by_handle_at(inode.mount_fd,
                                   reinterpret_cast<file_handle*>(inode.handle.data()),
                                   O_PATH | O_CLOEXEC));
        return fd ? 0 : errno;
    }
    Inode* parent;
    std::string name;
    {
        std::lock_guard lock(mutex_);
        parent = inode.parent;
        if (!parent) return ESTALE;
        name = inode.name;
        ++parent->children; // held across the reopen: a rename may move the inode
    }
    int err = 0;
    if (const PathFd dir = path_fd(*parent); !dir) {
        err = dir.error();
    } else {
        fd.reset(openat(dir.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
        struct stat st {};
        if (!fd)
            err = errno == ENOENT ? ESTALE : errno;
        else if (fstat(fd.get(), &st) < 0 || st.st_dev != inode.dev || st.st_ino != inode.ino)
            err = ESTALE; // the name went to another file outside the mount
    }
    if (err) fd.reset();
    std::lock_guard lock(mutex_);
    --parent->children;
    release_locked(parent);
    return err;
}

Inode& InodeTable::remember(util::Fd fd, const struct stat& st, Inode& parent,
                            std::string_view name) {
    std::vector<unsigned char> handle;
    int mount_id = -1;
    bool handle_known = false;
    std::unique_lock lock(mutex_);
    if (use_file_handles_ && needs_handle_locked(st)) {
        // A new inode, or one the kernel forgot: learn its handle outside the
        // lock.
        lock.unlock();
        handle_known = handle_of(fd.get(), "", handle, mount_id);
        lock.lock();
    }
    const bool mount_known = !handle_known || mount_fds_.contains(mount_id);
    if (!mount_known) {
        // The first inode met on this mount: an fd open_by_handle_at takes.
        util::Fd mount_fd(mount_fd_from(fd.get()));
        if (mount_fd)
            mount_fds_.emplace(mount_id, std::move(mount_fd));
        else
            handle_known = false;
    }
    Inode& inode = find_or_add_locked(st, handle_known ? &handle : nullptr, mount_id);
    note_lookup_locked(inode, parent, name);
    cache_fd(inode, shared(std::move(fd)));
    return inode;
}

Inode* InodeTable::remember_unopened(int dir_fd, const char* name, const struct stat& st,
                                     Inode& parent) {
    std::unique_lock lock(mutex_);
    std::vector<unsigned char> handle;
    int mount_id = -1;
    if (use_file_handles_ && needs_handle_locked(st)) {
        lock.unlock();
        if (!handle_of(dir_fd, name, handle, mount_id)) return nullptr;
        // The handle must be of the file stat'ed: the name may have been
        // given to another file in between.
        struct stat again {};
        if (fstatat(dir_fd, name, &again, AT_SYMLINK_NOFOLLOW) < 0 || again.st_dev != st.st_dev ||
            again.st_ino != st.st_ino)
            return nullptr;
        lock.lock();
        if (!mount_fds_.contains(mount_id)) return nullptr; // remember() learns the mount
    }
    Inode& inode = find_or_add_locked(st, handle.empty() ? nullptr : &handle, mount_id);
    note_lookup_locked(inode, parent, name);
    return &inode;
}

bool InodeTable::needs_handle_locked(const struct stat& st) {
    const auto it = by_source_id_.find({st.st_dev, st.st_ino});
    return it == by_source_id_.end() || it->second->retired;
}

Inode& InodeTable::find_or_add_locked(const struct stat& st, std::vector<unsigned char>* handle,
                                      int mount_id) {
    const auto id = std::make_pair(st.st_dev, st.st_ino);
    auto it = by_source_id_.find(id);
    // A retired inode whose handle is not this file's was removed outside
    // the mount and its number reused: its handles are stale.
    if (it != by_source_id_.end() && it->second->retired &&
        (!handle || it->second->handle != *handle)) {
        erase(it->second);
        it = by_source_id_.end();
    }
    if (it != by_source_id_.end()) return *it->second;
    auto* inode = new Inode;
    inode->dev = st.st_dev;
    inode->ino = st.st_ino;
    inode->type = st.st_mode & S_IFMT;
    inode->generation = ++generations_;
    if (handle) {
        inode->handle = std::move(*handle);
        inode->mount_fd = mount_fds_.at(mount_id).get();
    }
    by_source_id_.emplace(id, inode);
    live_.insert(inode);
    peak_size_ = std::max(peak_size_, by_source_id_.size());
    util::publish(inode); // its node id goes to the kernel in the reply
    return *inode;
}

void InodeTable::note_lookup_locked(Inode& inode, Inode& parent, std::string_view name) {
    const bool names_entry = name != "." && name != "..";
    ++inode.nlookup;
    if (inode.retired) unretire(inode);
    if (inode.handle.empty() && names_entry && inode.parent != &parent) {
        ++parent.children;
        if (Inode* old = std::exchange(inode.parent, &parent)) {
            --old->children;
            release_locked(old);
        }
    }
    if (inode.handle.empty() && names_entry) inode.name = name;
    inode.last_used.store(use_clock_.fetch_add(1, std::memory_order_relaxed) + 1,
                          std::memory_order_relaxed);
}

void InodeTable::cache_fd(Inode& inode, std::shared_ptr<const util::Fd> fd) {
    if (fd) {
        std::lock_guard fd_lock(inode.fd_mutex);
        if (inode.fd) return; // the one it has is as good; `fd` closes
        inode.fd = std::move(fd);
        inode.had_fd = true;
    }
    if (inode.pins > 0 || inode.in_cache) return;
    inode.in_cache = true;
    cached_.insert(&inode);
    // Close an eighth at a time: one scan per many opens.
    if (cached_.size() > fd_budget_) shrink_cache_to(fd_budget_ - fd_budget_ / 8);
}

void InodeTable::shrink_cache_to(size_t target) {
    if (cached_.size() <= target) return;
    std::vector<Inode*> candidates;
    candidates.reserve(cached_.size());
    for (Inode* inode : cached_) {
        // One that could not be reopened keeps its fd.
        if (!inode->handle.empty() || inode->parent) candidates.push_back(inode);
    }
    const size_t n = std::min(cached_.size() - target, candidates.size());
    auto older = [](const Inode* a, const Inode* b) {
        return a->last_used.load(std::memory_order_relaxed) <
               b->last_used.load(std::memory_order_relaxed);
    };
    std::nth_element(candidates.begin(), candidates.begin() + static_cast<ptrdiff_t>(n),
                     candidates.end(), older);
    for (size_t i = 0; i < n; ++i) {
        Inode* inode = candidates[i];
        std::shared_ptr<const util::Fd> closing; // closed outside the inode's lock
        {
            std::lock_guard fd_lock(inode->fd_mutex);
            closing = std::move(inode->fd);
        }
        inode->in_cache = false;
        cached_.erase(inode);
    }
}

void InodeTable::close_some_fds() {
    std::lock_guard lock(mutex_);
    shrink_cache_to(cached_.size() / 2);
}

void InodeTable::release_locked(Inode* inode) {
    while (inode && inode != root_ && inode->nlookup == 0 && inode->children == 0 &&
           !inode->retired) {
        // Known by handle and not removed through the mount (that pins it):
        // a file handle of the mount may still name it.
        if (!inode->handle.empty() && inode->pins == 0) {
            retire(*inode);
            return;
        }
        Inode* parent = inode->parent;
        erase(inode);
        if (parent) --parent->children;
        inode = parent;
    }
}

void InodeTable::retire(Inode& inode) {
    std::shared_ptr<const util::Fd> closing;
    {
        std::lock_guard fd_lock(inode.fd_mutex);
        closing = std::move(inode.fd);
    }
    if (inode.in_cache) {
        inode.in_cache = false;
        cached_.erase(&inode);
    }
    inode.retired = true;
    inode.retired_at = retired_.insert(retired_.end(), &inode);
    if (retired_.size() > retired_limit) erase(retired_.front());
}

void InodeTable::unretire(Inode& inode) {
    retired_.erase(inode.retired_at);
    inode.retired = false;
}

void InodeTable::erase(Inode* inode) {
    if (inode->retired) retired_.erase(inode->retired_at);
    by_source_id_.erase({inode->dev, inode->ino});
    live_.erase(inode);
    if (inode->in_cache) cached_.erase(inode);
    delete inode;
}

void InodeTable::forget(fuse_ino_t ino, uint64_t n) {
    if (ino == FUSE_ROOT_ID) return;
    Inode* inode = &get(ino);
    bool trim = false;
    {
        std::lock_guard lock(mutex_);
        inode->nlookup = n >= inode->nlookup ? 0 : inode->nlookup - n;
        release_locked(inode);
        // The kernel let go of most of a large cache (a tree was removed,
        // memory ran short): give the memory back rather than keep the
        // peak's (malloc keeps freed small blocks in its arenas).
        if (peak_size_ > 4096 && by_source_id_.size() < peak_size_ / 4) {
            peak_size_ = by_source_id_.size();
            live_.rehash(0); // hash tables keep their buckets otherwise
            cached_.rehash(0);
            trim = true;
        }
    }
    if (trim) malloc_trim(0);
}

void InodeTable::renamed(const struct stat& st, Inode& parent, std::string_view name) {
    std::lock_guard lock(mutex_);
    const auto it = by_source_id_.find({st.st_dev, st.st_ino});
    if (it == by_source_id_.end() || !it->second->handle.empty()) return;
    Inode* inode = it->second;
    if (inode->parent != &parent) {
        ++parent.children;
        if (Inode* old = std::exchange(inode->parent, &parent)) {
            --old->children;
            release_locked(old);
        }
    }
    inode->name = name;
}

Inode* InodeTable::known(const struct stat& st) {
    std::lock_guard lock(mutex_);
    const auto it = by_source_id_.find({st.st_dev, st.st_ino});
    return it == by_source_id_.end() ? nullptr : it->second;
}

void InodeTable::pin(Inode& inode, const PathFd& fd) {
    std::lock_guard lock(mutex_);
    if (inode.pins++ == 0 && inode.in_cache) {
        inode.in_cache = false;
        cached_.erase(&inode);
    }
    std::lock_guard fd_lock(inode.fd_mutex);
    if (!inode.fd) inode.fd = fd.shared();
    inode.had_fd = true;
}

void InodeTable::unpin(Inode& inode) {
    std::lock_guard lock(mutex_);
    if (inode.pins > 0 && --inode.pins == 0) cache_fd(inode, nullptr);
}

size_t InodeTable::size() {
    std::lock_guard lock(mutex_);
    return by_source_id_.size() - retired_.size();
}

InodeTable::FdStats InodeTable::fd_stats() {
    std::lock_guard lock(mutex_);
    return {cached_.size(), fd_budget_, reopened_, use_file_handles_};
}

int Filesystem::stat_source_at(int dir_fd, const char* name, struct stat& st) const {
    const int flags = AT_SYMLINK_NOFOLLOW | (*name == '\0' ? AT_EMPTY_PATH : 0);
    if (fstatat(dir_fd, name, &st, flags) < 0) return errno;
    if (single_file && single_file->block_device && st.st_dev == single_file->dev &&
        st.st_ino == single_file->ino) {
        st.st_mode = S_IFREG | (st.st_mode & 07777);
        st.st_size = static_cast<off_t>(single_file->device_size);
        st.st_blocks = static_cast<blkcnt_t>((single_file->device_size + 511) / 512);
        st.st_rdev = 0;
    }
    return 0;
}

int Filesystem::stat_source(Inode& inode, struct stat& st) {
    const PathFd fd = inodes.path_fd(inode);
    return fd ? stat_source(fd.get(), st) : fd.error();
}

} // namespace splicefs
