#include "inode.hpp"

#include "filesystem.hpp"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>

#include <sys/stat.h>

namespace splicefs {

InodeTable::InodeTable(util::Fd root_fd) : root_(new Inode) {
    struct stat st {};
    fstat(root_fd.get(), &st);
    root_->fd = std::move(root_fd);
    root_->dev = st.st_dev;
    root_->ino = st.st_ino;
    root_->type = st.st_mode & S_IFMT;
    root_->nlookup = 1; // never forgotten
    by_source_id_[{st.st_dev, st.st_ino}] = root_;
}

InodeTable::~InodeTable() {
    for (auto& [key, inode] : by_source_id_)
        delete inode;
}

Inode& InodeTable::remember(util::Fd fd, const struct stat& st, const Inode& parent,
                            std::string_view name) {
    std::lock_guard lock(mutex_);
    auto [it, inserted] = by_source_id_.try_emplace({st.st_dev, st.st_ino}, nullptr);
    if (inserted) {
        auto* inode = new Inode;
        inode->fd = std::move(fd);
        inode->dev = st.st_dev;
        inode->ino = st.st_ino;
        inode->type = st.st_mode & S_IFMT;
        it->second = inode;
        util::publish(inode); // its node id goes to the kernel in the reply
        if (by_source_id_.size() > wake_above_) size_changed_.notify_all();
    }
    Inode& inode = *it->second;
    ++inode.nlookup;
    // `.` and `..` name no entry that the kernel could drop.
    if (name != "." && name != "..") {
        inode.parent = {parent.dev, parent.ino};
        inode.name = name;
    }
    inode.eviction_asked_ms = 0;
    inode.last_used.store(use_clock_.fetch_add(1, std::memory_order_relaxed) + 1,
                          std::memory_order_relaxed);
    return inode;
}

void InodeTable::forget(fuse_ino_t ino, uint64_t n) {
    if (ino == FUSE_ROOT_ID) return;
    Inode* inode = &get(ino);
    if (inode == root_) return;
    std::lock_guard lock(mutex_);
    inode->nlookup = n >= inode->nlookup ? 0 : inode->nlookup - n;
    if (inode->nlookup == 0) {
        by_source_id_.erase({inode->dev, inode->ino});
        delete inode;
        if (shrink_waiters_ > 0) size_changed_.notify_all();
    }
}

void InodeTable::renamed(const struct stat& st, const Inode& parent, std::string_view name) {
    std::lock_guard lock(mutex_);
    if (auto it = by_source_id_.find({st.st_dev, st.st_ino}); it != by_source_id_.end()) {
        it->second->parent = {parent.dev, parent.ino};
        it->second->name = name;
    }
}

std::vector<InodeTable::Entry>
InodeTable::eviction_candidates(size_t target, const std::set<std::string>& protected_names) {
    using namespace std::chrono;
    const auto now_ms = static_cast<uint64_t>(
        duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count() + 1);
    constexpr uint64_t forget_delay_ms = 10;
    std::lock_guard lock(mutex_);
    std::vector<Inode*> candidates;
    size_t on_their_way = 0;
    for (const auto& [id, inode] : by_source_id_) {
        if (inode->eviction_asked_ms) {
            if (inode->eviction_asked_ms + forget_delay_ms > now_ms) ++on_their_way;
        } else if (inode != root_ && !inode->name.empty() &&
                   !protected_names.contains(inode->name)) {
            candidates.push_back(inode);
        }
    }
    const size_t staying = by_source_id_.size() - on_their_way;
    const size_t n = std::min(staying > target ? staying - target : 0, candidates.size());
    auto older = [](const Inode* a, const Inode* b) {
        return a->last_used.load(std::memory_order_relaxed) <
               b->last_used.load(std::memory_order_relaxed);
    };
    std::nth_element(candidates.begin(), candidates.begin() + static_cast<ptrdiff_t>(n),
                     candidates.end(), older);
    std::vector<Entry> entries;
    entries.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        Inode* inode = candidates[i];
        // A parent the kernel forgot cannot hold the entry any more.
        const auto parent = by_source_id_.find(inode->parent);
        if (parent == by_source_id_.end() || parent->second->type != S_IFDIR) {
            inode->name.clear();
            continue;
        }
        inode->eviction_asked_ms = now_ms;
        entries.push_back({{inode->dev, inode->ino}, id_of(*parent->second), inode->name});
    }
    return entries;
}

void InodeTable::name_unknown(const Entry& entry) {
    std::lock_guard lock(mutex_);
    if (auto it = by_source_id_.find(entry.source_id);
        it != by_source_id_.end() && it->second->name == entry.name)
        it->second->name.clear();
}

bool InodeTable::wait_for_more_than(size_t limit) {
    std::unique_lock lock(mutex_);
    wake_above_ = limit;
    size_changed_.wait(lock, [&] { return stop_waiting_ || by_source_id_.size() > limit; });
    wake_above_ = SIZE_MAX;
    return !stop_waiting_;
}

void InodeTable::wait_for_at_most(size_t limit, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    ++shrink_waiters_;
    size_changed_.wait_for(lock, timeout,
                           [&] { return stop_waiting_ || by_source_id_.size() <= limit; });
    --shrink_waiters_;
}

void InodeTable::stop_waiting() {
    std::lock_guard lock(mutex_);
    stop_waiting_ = true;
    size_changed_.notify_all();
}

int Filesystem::stat_source(int fd, struct stat& st) const {
    if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) return errno;
    if (single_file && single_file->block_device && st.st_dev == single_file->dev &&
        st.st_ino == single_file->ino) {
        st.st_mode = S_IFREG | (st.st_mode & 07777);
        st.st_size = static_cast<off_t>(single_file->device_size);
        st.st_blocks = static_cast<blkcnt_t>((single_file->device_size + 511) / 512);
        st.st_rdev = 0;
    }
    return 0;
}

size_t InodeTable::size() {
    std::lock_guard lock(mutex_);
    return by_source_id_.size();
}

} // namespace splicefs
