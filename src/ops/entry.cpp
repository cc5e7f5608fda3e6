// Names in directories: lookup, creation, removal and renaming.
#include "creds.hpp"
#include "ops/ops.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace splicefs::ops {

namespace {

// Out of fds: give the evictor's FORGETs a moment, but never with every
// worker waiting, since FORGETs need a worker to arrive.
bool wait_for_fewer_inodes(Filesystem& fs) {
    using namespace std::chrono_literals;
    if (fs.workers_waiting_for_fds.fetch_add(1) + 1 >= fs.stats.limits.threads) {
        fs.workers_waiting_for_fds.fetch_sub(1);
        return false;
    }
    fs.inodes.wait_for_at_most(fs.stats.limits.inode_high_water, 500ms);
    fs.workers_waiting_for_fds.fetch_sub(1);
    return true;
}

} // namespace

int lookup_entry(Filesystem& fs, Inode& parent, const char* name, fuse_entry_param& e) {
    e = fuse_entry_param{};
    e.attr_timeout = fs.timeout;
    e.entry_timeout = fs.timeout;
    const bool in_root = &parent == &fs.inodes.root();
    util::Fd fd;
    if (in_root && fs.is_synthetic_root(FUSE_ROOT_ID)) {
        // The single file is the root's only entry.
        if (name != fs.single_file->name) return ENOENT;
        fd.reset(fcntl(fs.single_file_fd.get(), F_DUPFD_CLOEXEC, 0));
    } else {
        // `..` of the root is the root: the mount shows nothing above SOURCE.
        const bool dotdot_of_root = in_root && std::strcmp(name, "..") == 0;
        const char* const source_name = dotdot_of_root ? "." : name;
        fd.reset(openat(parent.fd.get(), source_name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
        if (!fd && (errno == EMFILE || errno == ENFILE) && wait_for_fewer_inodes(fs))
            fd.reset(openat(parent.fd.get(), source_name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
    }
    if (!fd) return errno;
    if (const int err = fs.stat_source(fd.get(), e.attr)) return err;
    Inode& inode = fs.inodes.remember(std::move(fd), e.attr, parent, name);
    e.ino = fs.inodes.id_of(inode);
    return 0;
}

bool refused_in_synthetic_root(fuse_req_t req, fuse_ino_t parent) {
    if (!fs_of(req).is_synthetic_root(parent)) return false;
    fuse_reply_err(req, EPERM);
    return true;
}

void reply_created(fuse_req_t req, Inode& parent, const char* name, int result) {
    if (result < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    fuse_entry_param e;
    const int err = lookup_entry(fs_of(req), parent, name, e);
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_entry(req, &e);
}

namespace {

void note_new_name(Filesystem& fs, Inode& dir, const char* name) {
    struct stat st {};
    if (fstatat(dir.fd.get(), name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        fs.inodes.renamed(st, dir, name);
}

} // namespace

void lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    Filesystem& fs = fs_of(req);
    fuse_entry_param e;
    const int err = lookup_entry(fs, fs.inodes.get(parent), name, e);
    if (err == ENOENT && fs.timeout > 0) {
        // A negative entry, cached as long as positive ones: creating a new
        // name then needs no second lookup.
        e = fuse_entry_param{};
        e.entry_timeout = fs.timeout;
        fuse_reply_entry(req, &e);
    } else if (err) {
        fuse_reply_err(req, err);
    } else {
        fuse_reply_entry(req, &e);
    }
}

void forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
    fs_of(req).inodes.forget(ino, nlookup);
    fuse_reply_none(req);
}

void forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
    Filesystem& fs = fs_of(req);
    for (size_t i = 0; i < count; ++i)
        fs.inodes.forget(forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

void mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
    if (refused_in_synthetic_root(req, parent)) return;
    Filesystem& fs = fs_of(req);
    Inode& dir = fs.inodes.get(parent);
    int result;
    {
        CallerCreds as_caller(fs, req);
        result = mkdirat(dir.fd.get(), name, mode);
    }
    reply_created(req, dir, name, result);
}

void mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
    if (refused_in_synthetic_root(req, parent)) return;
    Filesystem& fs = fs_of(req);
    Inode& dir = fs.inodes.get(parent);
    int result;
    {
        CallerCreds as_caller(fs, req);
        result = mknodat(dir.fd.get(), name, mode, rdev);
    }
    reply_created(req, dir, name, result);
}

void symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
    if (refused_in_synthetic_root(req, parent)) return;
    Filesystem& fs = fs_of(req);
    Inode& dir = fs.inodes.get(parent);
    int result;
    {
        CallerCreds as_caller(fs, req);
        result = symlinkat(link, dir.fd.get(), name);
    }
    reply_created(req, dir, name, result);
}

void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
    if (refused_in_synthetic_root(req, parent)) return;
    Filesystem& fs = fs_of(req);
    Inode& inode = fs.inodes.get(ino);
    Inode& dir = fs.inodes.get(parent);
    int result;
    {
        // As the caller, so that fs.protected_hardlinks judges the caller.
        CallerCreds as_caller(fs, req);
        result = linkat(AT_FDCWD, inode.proc_path().c_str(), dir.fd.get(), name, AT_SYMLINK_FOLLOW);
    }
    reply_created(req, dir, name, result);
}

void unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
    if (refused_in_synthetic_root(req, parent)) return;
    const int result = unlinkat(fs_of(req).inodes.get(parent).fd.get(), name, 0);
    fuse_reply_err(req, result < 0 ? errno : 0);
}

void rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
    if (refused_in_synthetic_root(req, parent)) return;
    const int result = unlinkat(fs_of(req).inodes.get(parent).fd.get(), name, AT_REMOVEDIR);
    fuse_reply_err(req, result < 0 ? errno : 0);
}

void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
            const char* newname, unsigned int flags) {
    if (refused_in_synthetic_root(req, parent) || refused_in_synthetic_root(req, newparent)) return;
    Filesystem& fs = fs_of(req);
    Inode& dir = fs.inodes.get(parent);
    Inode& newdir = fs.inodes.get(newparent);
    const int result = renameat2(dir.fd.get(), name, newdir.fd.get(), newname, flags);
    const int err = result < 0 ? errno : 0;
    if (!err) {
        // The kernel moves its entries without a lookup: keep the names the
        // evictor would ask it to drop in step.
        note_new_name(fs, newdir, newname);
        if (flags & RENAME_EXCHANGE) note_new_name(fs, dir, name);
    }
    fuse_reply_err(req, err);
}

} // namespace splicefs::ops
