// Attributes of inodes and of the filesystem.
#include "creds.hpp"
#include "ops/ops.hpp"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>

namespace splicefs::ops {

namespace {

timespec time_to_set(const struct stat& attr, int to_set, bool atime) {
    const int now_flag = atime ? FUSE_SET_ATTR_ATIME_NOW : FUSE_SET_ATTR_MTIME_NOW;
    const int set_flag = atime ? FUSE_SET_ATTR_ATIME : FUSE_SET_ATTR_MTIME;
    if (to_set & now_flag) return {0, UTIME_NOW};
    if (to_set & set_flag) return atime ? attr.st_atim : attr.st_mtim;
    return {0, UTIME_OMIT};
}

// Applies the changes in `to_set`, in the order chmod, chown, truncate, utimes.
int apply_setattr(fuse_req_t req, const Inode& inode, const PathFd& path, const struct stat& attr,
                  int to_set, const fuse_file_info* fi) {
    const int fd = fi ? handle_of(fi).fd.get() : -1;
    const bool is_symlink = S_ISLNK(inode.type);
    if (to_set & FUSE_SET_ATTR_MODE) {
        const int r = fd >= 0 ? fchmod(fd, attr.st_mode)
                              : (is_symlink ? (errno = EOPNOTSUPP, -1)
                                            : chmod(path.proc_path().c_str(), attr.st_mode));
        if (r < 0) return errno;
    }
    if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
        const uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr.st_uid : static_cast<uid_t>(-1);
        const gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr.st_gid : static_cast<gid_t>(-1);
        if (fchownat(path.get(), "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
            return errno;
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
        ModifyAsCaller as_caller(fs_of(req), req, fd >= 0 ? fd : path.get());
        if (as_caller.failed()) return EPERM;
        const int r = fd >= 0 ? ftruncate(fd, attr.st_size)
                              : truncate(path.proc_path().c_str(), attr.st_size);
        if (r < 0) return errno;
    }
    if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
        const timespec times[2] = {time_to_set(attr, to_set, true),
                                   time_to_set(attr, to_set, false)};
        int r;
        if (fd >= 0)
            r = futimens(fd, times);
        else if (is_symlink)
            r = utimensat(path.get(), "", times, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
        else
            r = utimensat(AT_FDCWD, path.proc_path().c_str(), times, 0);
        if (r < 0) return errno;
    }
    return 0;
}

} // namespace

void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    Filesystem& fs = fs_of(req);
    struct stat st {};
    const int err = fs.stat_source(fs.inodes.get(ino), st);
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    fs.present(st);
    fuse_reply_attr(req, &st, fs.timeout);
}

void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
    Filesystem& fs = fs_of(req);
    if (refused_in_synthetic_root(req, ino)) return;
    Inode& inode = fs.inodes.get(ino);
    const PathFd path = path_fd_or_reply(req, inode);
    if (!path) return;
    int err = apply_setattr(req, inode, path, *attr, to_set, fi);
    struct stat st {};
    if (!err) err = fs.stat_source(path.get(), st);
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    fs.present(st);
    fuse_reply_attr(req, &st, fs.timeout);
}

void readlink(fuse_req_t req, fuse_ino_t ino) {
    const PathFd fd = path_fd_or_reply(req, fs_of(req).inodes.get(ino));
    if (!fd) return;
    char target[PATH_MAX + 1];
    const ssize_t n = readlinkat(fd.get(), "", target, PATH_MAX);
    if (n < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    target[n] = '\0';
    fuse_reply_readlink(req, target);
}

void statfs(fuse_req_t req, fuse_ino_t ino) {
    const PathFd fd = path_fd_or_reply(req, fs_of(req).inodes.get(ino));
    if (!fd) return;
    struct statvfs sv {};
    if (fstatvfs(fd.get(), &sv) < 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_statfs(req, &sv);
}

void access(fuse_req_t req, fuse_ino_t ino, int mask) {
    const PathFd fd = path_fd_or_reply(req, fs_of(req).inodes.get(ino));
    if (!fd) return;
    const int r = faccessat(fd.get(), "", mask, AT_EMPTY_PATH | AT_EACCESS);
    fuse_reply_err(req, r < 0 ? errno : 0);
}

} // namespace splicefs::ops
