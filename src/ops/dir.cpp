// Directory listing.
#include "ops/ops.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace splicefs::ops {

namespace {

DirHandle& dir_of(const fuse_file_info* fi) {
    return handle_from_fh<DirHandle>(fi->fh);
}

bool is_dot_or_dotdot(const char* name) {
    return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

// What readdir alone says of an entry of a directory on filesystem `dev`:
// its inode number and type. A readdirplus entry with only this (no node
// id) is looked up on use.
fuse_entry_param bare_entry(Filesystem& fs, dev_t dev, const struct dirent& entry) {
    fuse_entry_param e{};
    e.attr.st_ino = fs.inode_numbers.of(dev, entry.d_ino);
    e.attr.st_mode = static_cast<mode_t>(entry.d_type) << 12;
    return e;
}

// The root of a single-file mount on a directory: ".", ".." and the file.
void readdir_synthetic_root(fuse_req_t req, size_t size, off_t offset, bool plus) {
    Filesystem& fs = fs_of(req);
    std::vector<char> buf(size);
    size_t used = 0;
    const std::string names[] = {".", "..", fs.single_file->name};
    for (off_t i = offset; i < 3; ++i) {
        const char* name = names[i].c_str();
        fuse_entry_param e{};
        e.attr.st_mode = i < 2 ? S_IFDIR : S_IFREG;
        e.attr.st_ino =
            i < 2 ? FUSE_ROOT_ID : fs.inode_numbers.of(fs.single_file->dev, fs.single_file->ino);
        size_t entry_size;
        if (plus) {
            if (fuse_add_direntry_plus(req, nullptr, 0, name, nullptr, 0) > size - used) break;
            if (i == 2 && lookup_entry(fs, fs.inodes.root(), name, e) != 0) break;
            entry_size =
                fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, i + 1);
        } else {
            entry_size =
                fuse_add_direntry(req, buf.data() + used, size - used, name, &e.attr, i + 1);
        }
        if (entry_size > size - used) break;
        used += entry_size;
    }
    fuse_reply_buf(req, buf.data(), used);
}

void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi,
                bool plus) {
    Filesystem& fs = fs_of(req);
    if (fs.is_synthetic_root(ino)) return readdir_synthetic_root(req, size, offset, plus);
    DirHandle& d = dir_of(fi);
    const dev_t dir_dev = fs.inodes.get(ino).dev;
    // The kernel sends one READDIR per open directory at a time, but the
    // stream is then used by different workers one after the other. The
    // lock is released before replying: once the reply is out, RELEASEDIR
    // may destroy the handle on another worker.
    std::unique_lock lock(d.mutex);
    std::vector<char> buf(size);
    size_t used = 0;
    if (offset != d.offset) {
        seekdir(d.dir, offset);
        d.entry = nullptr;
        d.offset = offset;
    }
    int err = 0;
    while (true) {
        if (!d.entry) {
            errno = 0;
            d.entry = ::readdir(d.dir);
            if (!d.entry) {
                err = errno;
                break;
            }
        }
        const char* name = d.entry->d_name;
        const off_t next = d.entry->d_off;
        size_t entry_size;
        if (plus) {
            // Measure first: a looked-up entry that does not fit would leak a reference.
            if (fuse_add_direntry_plus(req, nullptr, 0, name, nullptr, 0) > size - used) break;
            // `.` and `..` go bare: the kernel ignores their attributes.
            const bool bare = is_dot_or_dotdot(name);
            fuse_entry_param e;
            const int lookup_err = bare ? 0 : lookup_entry(fs, fs.inodes.get(ino), name, e);
            if (lookup_err == ENOENT) {
                // Removed since readdir saw it: leave it out, as a new listing would.
                d.entry = nullptr;
                d.offset = next;
                continue;
            }
            // A failed lookup (EMFILE, EACCES...) still leaves a name that exists.
            if (bare || lookup_err) e = bare_entry(fs, dir_dev, *d.entry);
            entry_size =
                fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, next);
            if (entry_size > size - used) {
                if (e.ino) fs.inodes.forget(e.ino, 1);
                break;
            }
        } else {
            const struct stat st = bare_entry(fs, dir_dev, *d.entry).attr;
            entry_size = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, next);
            if (entry_size > size - used) break;
        }
        used += entry_size;
        d.entry = nullptr;
        d.offset = next;
    }
    lock.unlock();
    // An error after some entries is reported by the next call.
    if (err && used == 0)
        fuse_reply_err(req, err);
    else
        fuse_reply_buf(req, buf.data(), used);
}

} // namespace

void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Filesystem& fs = fs_of(req);
    if (fs.is_synthetic_root(ino)) {
        fi->fh = reinterpret_cast<uint64_t>(fs.open_dirs.add(std::make_unique<DirHandle>()));
        if (fuse_reply_open(req, fi) != 0) fs.open_dirs.remove(&dir_of(fi));
        return;
    }
    const PathFd path = path_fd_or_reply(req, fs.inodes.get(ino));
    if (!path) return;
    // noatime: listing through the mount leaves the source's atime alone.
    const int noatime = fs.opts.flags.atime == MountFlags::Atime::noatime ? O_NOATIME : 0;
    int fd = openat(path.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC | noatime);
    if (fd < 0 && errno == EPERM && noatime)
        fd = openat(path.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    auto handle = std::make_unique<DirHandle>();
    {
        // The workers that read the stream later take this lock too.
        std::lock_guard lock(handle->mutex);
        handle->dir = fdopendir(fd);
    }
    if (!handle->dir) {
        const int err = errno;
        close(fd);
        fuse_reply_err(req, err);
        return;
    }
    fi->fh = reinterpret_cast<uint64_t>(fs.open_dirs.add(std::move(handle)));
    fi->cache_readdir = fs.opts.cache == CachePolicy::always;
    fi->keep_cache = fs.opts.cache == CachePolicy::always;
    if (fuse_reply_open(req, fi) != 0)
        fs.open_dirs.remove(&dir_of(fi)); // the opener was interrupted
}

void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi) {
    do_readdir(req, ino, size, offset, fi, false);
}

void readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi) {
    do_readdir(req, ino, size, offset, fi, true);
}

void releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    fs_of(req).open_dirs.remove(&dir_of(fi));
    fuse_reply_err(req, 0);
}

void fsyncdir(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
    if (!dir_of(fi).dir) { // the synthetic root has nothing to sync
        fuse_reply_err(req, 0);
        return;
    }
    const int fd = dirfd(dir_of(fi).dir);
    const int r = datasync ? ::fdatasync(fd) : ::fsync(fd);
    fuse_reply_err(req, r < 0 ? errno : 0);
}

} // namespace splicefs::ops
