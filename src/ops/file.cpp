// Open files: opening, creating, syncing and the calls that need an open fd.
// Their data (READ and WRITE) moves in data_path.cpp.
#include "creds.hpp"
#include "ops/ops.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace splicefs::ops {

namespace {

// Flags for reopening a source file: the kernel has resolved the name and
// handled O_CREAT/O_EXCL; O_NOFOLLOW would refuse the /proc/self/fd link.
int source_open_flags(const Filesystem& fs, int flags) {
    flags &= ~(O_NOFOLLOW | O_CREAT | O_EXCL | O_NOCTTY);
    if (fs.opts.cache == CachePolicy::always) {
        // With writeback caching the kernel reads pages of write-only files
        // and computes append offsets itself.
        if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
        flags &= ~O_APPEND;
    }
    // noatime: reading through the mount must not update the source's
    // access times either (O_NOATIME; refused with EPERM unless the daemon
    // owns the file or has CAP_FOWNER: then opened without it).
    if (fs.opts.flags.atime == MountFlags::Atime::noatime) flags |= O_NOATIME;
    return flags | O_CLOEXEC;
}

// An open that O_NOATIME made fail: the daemon may not keep this file's
// access time, so it opens without.
bool noatime_refused(int flags, int err) {
    return err == EPERM && (flags & O_NOATIME);
}

// A write-only open that source_open_flags() widened to read-write, which
// the source refused (a 0200 file, a daemon without CAP_DAC_OVERRIDE): the
// caller asked only to write, so open for writing alone.
bool widened_open_refused(const fuse_file_info* fi, int flags, int err) {
    return err == EACCES && (fi->flags & O_ACCMODE) == O_WRONLY && (flags & O_ACCMODE) == O_RDWR;
}
int write_only(int flags) {
    return (flags & ~O_ACCMODE) | O_WRONLY;
}

// Whether close() of a file open for reading alone, or on one of the local
// filesystems that have no flush operation (ext2/3/4, XFS, Btrfs, tmpfs,
// ramfs, F2FS: close() cannot fail there), has nothing to report: then no
// FLUSH round trip (the kernel still flushes under writeback caching).
// Network and stacked filesystems (NFS, CIFS, FUSE, overlayfs...) report
// write-back errors at close: FLUSH stays for their writers.
bool close_reports_nothing(int fd, int flags) {
    if ((flags & O_ACCMODE) == O_RDONLY) return true;
    struct statfs st {};
    if (fstatfs(fd, &st) < 0) return false;
    switch (static_cast<unsigned long>(st.f_type)) {
    case EXT4_SUPER_MAGIC: // also ext2 and ext3
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
    case TMPFS_MAGIC:
    case RAMFS_MAGIC:
    case F2FS_SUPER_MAGIC:
        return true;
    default:
        return false;
    }
}

void fill_open_reply(fuse_req_t req, fuse_file_info* fi, util::Fd fd, int flags,
                     const Inode& inode) {
    Filesystem& fs = fs_of(req);
    auto handle = std::make_unique<FileHandle>();
    handle->inode = &inode;
    const OpenPath path = fs.passthrough.open(req, inode, fd.get(), flags, fi);
    handle->path = path;
    if (flags & O_DIRECT) {
        // Reopened, not duplicated: O_DIRECT belongs to the open file.
        const auto same_file = "/proc/self/fd/" + std::to_string(fd.get());
        handle->buffered_fd.reset(::open(
            same_file.c_str(), flags & ~(O_DIRECT | O_TRUNC | O_CREAT | O_EXCL | O_NOFOLLOW)));
    }
    fi->noflush = close_reports_nothing(fd.get(), flags);
    handle->fd = std::move(fd);
    handle->write_splice_refused = (flags & O_APPEND) != 0;
    fi->fh = reinterpret_cast<uint64_t>(fs.open_files.add(std::move(handle)));
    // A source fd that cannot read cannot fill the pages a cached write
    // only partly covers: that open file bypasses the page cache.
    const bool cannot_read = (flags & O_ACCMODE) == O_WRONLY && fs.writeback_cache;
    if (path == OpenPath::passthrough) {
        // The kernel serves it from the source's own page cache; the
        // reply may carry no other caching flag.
        fi->direct_io = false;
        fi->keep_cache = false;
        return;
    }
    fi->direct_io = fs.opts.cache == CachePolicy::never || cannot_read;
    // Cached pages survive the open; with auto the kernel drops them when
    // it sees the source's mtime or size change (FUSE_CAP_AUTO_INVAL_DATA,
    // at the latest one attribute timeout after the change).
    fi->keep_cache = fs.opts.cache != CachePolicy::never;
}

void release_handle(fuse_req_t req, fuse_file_info* fi) {
    Filesystem& fs = fs_of(req);
    FileHandle& handle = handle_of(fi);
    if (handle.inode) fs.passthrough.release(req, *handle.inode, handle.path);
    if (handle.pinned_inode) fs.inodes.unpin(*handle.pinned_inode);
    fs.open_files.remove(&handle);
}

} // namespace

void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Filesystem& fs = fs_of(req);
    Inode& inode = fs.inodes.get(ino);
    const PathFd path = path_fd_or_reply(req, inode);
    if (!path) return;
    int flags = source_open_flags(fs, fi->flags);
    util::Fd fd(::open(path.proc_path().c_str(), flags));
    if (!fd && noatime_refused(flags, errno)) {
        flags &= ~O_NOATIME;
        fd.reset(::open(path.proc_path().c_str(), flags));
    }
    if (!fd && widened_open_refused(fi, flags, errno)) {
        flags = write_only(flags);
        fd.reset(::open(path.proc_path().c_str(), flags));
    }
    if (!fd) {
        fuse_reply_err(req, errno);
        return;
    }
    // An open file keeps its inode's fd: it may lose its last name.
    fs.inodes.pin(inode, path);
    fill_open_reply(req, fi, std::move(fd), flags, inode);
    handle_of(fi).pinned_inode = &inode;
    if (fuse_reply_open(req, fi) != 0) release_handle(req, fi); // the opener was interrupted
    Passthrough::discard_mark();
}

void create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
    if (refused_in_synthetic_root(req, parent)) return;
    Filesystem& fs = fs_of(req);
    Inode& dir = fs.inodes.get(parent);
    const PathFd dir_fd = path_fd_or_reply(req, dir);
    if (!dir_fd) return;
    // O_NOFOLLOW stays: a symlink put in the name's place must not be followed.
    int flags = (source_open_flags(fs, fi->flags) | O_CREAT | O_NOFOLLOW) | (fi->flags & O_EXCL);
    util::Fd fd;
    {
        CallerCreds as_caller(fs, req);
        CallerUmask umask(fs, req);
        if (as_caller.failed()) {
            fuse_reply_err(req, EPERM);
            return;
        }
        fd.reset(openat(dir_fd.get(), name, flags, mode));
        if (!fd && widened_open_refused(fi, flags, errno)) {
            flags = write_only(flags);
            fd.reset(openat(dir_fd.get(), name, flags, mode));
        }
    }
    if (!fd) {
        fuse_reply_err(req, errno);
        return;
    }
    fuse_entry_param e;
    const int err = lookup_entry(fs, dir, name, e, EntryFd::now); // pinned next
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    Inode& inode = fs.inodes.get(e.ino);
    const PathFd path = fs.inodes.path_fd(inode);
    if (path) fs.inodes.pin(inode, path);
    fill_open_reply(req, fi, std::move(fd), flags, inode);
    if (path) handle_of(fi).pinned_inode = &inode;
    if (fuse_reply_create(req, &e, fi) != 0) {
        release_handle(req, fi);
        fs.inodes.forget(e.ino, 1);
    }
    Passthrough::discard_mark();
}

void flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    // close() of a duplicate reports the errors a close of the source would
    // (NFS sources report write-back errors here) without closing it. With
    // no fd left for the duplicate there is nothing to report: EMFILE is the
    // daemon's, not the file's, and fsync still reports write-back errors.
    const int copy = dup(handle_of(fi).fd.get());
    const int r = copy < 0 ? 0 : close(copy);
    fuse_reply_err(req, r < 0 ? errno : 0);
}

void release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    release_handle(req, fi);
    fuse_reply_err(req, 0);
}

void fsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
    const int fd = handle_of(fi).fd.get();
    const int r = datasync ? fdatasync(fd) : ::fsync(fd);
    fuse_reply_err(req, r < 0 ? errno : 0);
}

void fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t offset, off_t length,
               fuse_file_info* fi) {
    const int fd = handle_of(fi).fd.get();
    ModifyAsCaller as_caller(fs_of(req), req, fd);
    const int r = as_caller.failed() ? (errno = EPERM, -1) : ::fallocate(fd, mode, offset, length);
    fuse_reply_err(req, r < 0 ? errno : 0);
}

void lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info* fi) {
    // With writeback caching the kernel asks without writing its dirty pages
    // back first, so the source would place holes where cached data is (cp
    // would then skip it). ENOSYS makes the kernel answer itself: all data.
    if (fs_of(req).writeback_cache && (whence == SEEK_DATA || whence == SEEK_HOLE)) {
        fuse_reply_err(req, ENOSYS);
        return;
    }
    const off_t result = ::lseek(handle_of(fi).fd.get(), off, whence);
    if (result < 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_lseek(req, result);
}

void copy_file_range(fuse_req_t req, fuse_ino_t, off_t off_in, fuse_file_info* fi_in, fuse_ino_t,
                     off_t off_out, fuse_file_info* fi_out, size_t len, int flags) {
    const ssize_t n =
        ::copy_file_range(handle_of(fi_in).fd.get(), &off_in, handle_of(fi_out).fd.get(), &off_out,
                          len, static_cast<unsigned>(flags));
    if (n < 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_write(req, static_cast<size_t>(n));
}

} // namespace splicefs::ops
