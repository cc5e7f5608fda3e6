#include "inode.hpp"

#include "filesystem.hpp"

#include <fcntl.h>

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

Inode& InodeTable::remember(util::Fd fd, const struct stat& st) {
    std::lock_guard lock(mutex_);
    auto [it, inserted] = by_source_id_.try_emplace({st.st_dev, st.st_ino}, nullptr);
    if (inserted) {
        auto* inode = new Inode;
        inode->fd = std::move(fd);
        inode->dev = st.st_dev;
        inode->ino = st.st_ino;
        inode->type = st.st_mode & S_IFMT;
        it->second = inode;
    }
    ++it->second->nlookup;
    return *it->second;
}

void InodeTable::add_lookup(Inode& inode) {
    std::lock_guard lock(mutex_);
    ++inode.nlookup;
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
    }
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
