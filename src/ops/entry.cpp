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

void fill_entry(Filesystem& fs, const Inode& inode, fuse_entry_param& e) {
    e.ino = fs.inodes.id_of(inode);
    e.generation = inode.generation;
    fs.present(e.attr);
}

} // namespace

int lookup_entry(Filesystem& fs, Inode& parent, const char* name, fuse_entry_param& e,
                 EntryFd entry_fd) {
    e = fuse_entry_param{};
    e.attr_timeout = fs.timeout;
    e.entry_timeout = fs.timeout;
    const bool in_root = &parent == &fs.inodes.root();
    const bool itself = std::strcmp(name, ".") == 0 || (in_root && std::strcmp(name, "..") == 0);
    const bool synthetic = in_root && fs.is_synthetic_root(FUSE_ROOT_ID);
    if (entry_fd == EntryFd::when_needed && !synthetic && !itself && std::strcmp(name, "..") != 0) {
        // A stat of the name, no open: lookups of inodes the daemon knows
        // cost one syscall, and a walk opens no fd it does not use.
        const PathFd dir = fs.inodes.path_fd(parent);
        if (!dir) return dir.error();
        if (const int err = fs.stat_source_at(dir.get(), name, e.attr)) return err;
        if (Inode* inode = fs.inodes.remember_unopened(dir.get(), name, e.attr, parent)) {
            fill_entry(fs, *inode, e);
            return 0;
        }
        e.attr = {};
    }
    util::Fd fd;
    if (synthetic) {
        // The single file is the root's only entry.
        if (name != fs.single_file->name) return ENOENT;
        fd.reset(fcntl(fs.single_file_fd.get(), F_DUPFD_CLOEXEC, 0));
    } else {
        const PathFd dir = fs.inodes.path_fd(parent);
        if (!dir) return dir.error();
        // `..` of the root is the root: the mount shows nothing above SOURCE.
        // `.` is the inode itself, also when it is no directory (the kernel
        // asks so for a node id from a file handle, see FUSE_EXPORT_SUPPORT).
        auto open_entry = [&] {
            return itself ? fcntl(dir.get(), F_DUPFD_CLOEXEC, 0)
                          : openat(dir.get(), name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        };
        fd.reset(open_entry());
        if (!fd && (errno == EMFILE || errno == ENFILE)) {
            fs.inodes.close_some_fds();
            fd.reset(open_entry());
        }
    }
    if (!fd) return errno;
    if (const int err = fs.stat_source(fd.get(), e.attr)) return err;
    fill_entry(fs, fs.inodes.remember(std::move(fd), e.attr, parent, name), e);
    return 0;
}

PathFd path_fd_or_reply(fuse_req_t req, Inode& inode) {
    PathFd fd = fs_of(req).inodes.path_fd(inode);
    if (!fd) fuse_reply_err(req, fd.error());
    return fd;
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
    // What was just made is used next (a new directory gets entries).
    const int err = lookup_entry(fs_of(req), parent, name, e, EntryFd::now);
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_entry(req, &e);
}

namespace {

void note_new_name(Filesystem& fs, Inode& dir, int dir_fd, const char* name) {
    struct stat st {};
    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) fs.inodes.renamed(st, dir, name);
}

// Removes `name` from `dir` as `remove` does. An inode the kernel still
// holds whose last name this was could not be reopened any more: its fd
// stays open until the kernel forgets it (a cwd or open file in it works
// on, as natively).
template <typename Remove>
void remove_entry(fuse_req_t req, fuse_ino_t parent, const char* name, Remove remove) {
    if (refused_in_synthetic_root(req, parent)) return;
    Filesystem& fs = fs_of(req);
    const PathFd dir = path_fd_or_reply(req, fs.inodes.get(parent));
    if (!dir) return;
    struct stat st {};
    Inode* inode = nullptr;
    PathFd inode_fd(0);
    if (fstatat(dir.get(), name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        (st.st_nlink <= 1 || S_ISDIR(st.st_mode)) && (inode = fs.inodes.known(st)))
        inode_fd = fs.inodes.path_fd(*inode);
    if (remove(dir.get(), name) < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    if (inode && inode_fd) fs.inodes.pin(*inode, inode_fd);
    fuse_reply_err(req, 0);
}

} // namespace

void lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    Filesystem& fs = fs_of(req);
    // `.` and `..` of a node id from a file handle (FUSE_EXPORT_SUPPORT): the
    // kernel may no longer hold that inode, and the daemon may have retired
    // or forgotten it. It is held for the lookup.
    const bool from_handle = std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0;
    Inode* dir = from_handle ? fs.inodes.hold(parent) : &fs.inodes.get(parent);
    if (!dir) {
        fuse_reply_err(req, ESTALE);
        return;
    }
    fuse_entry_param e;
    const int err = lookup_entry(fs, *dir, name, e);
    if (from_handle) fs.inodes.forget(parent, 1);
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

namespace {

// mkdir, mknod and symlink: one new name in `parent`, made as the caller,
// of the type `mode` says (`link` is a symlink's target).
void make_node(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev,
               const char* link) {
    if (refused_in_synthetic_root(req, parent)) return;
    Filesystem& fs = fs_of(req);
    Inode& dir = fs.inodes.get(parent);
    const PathFd dir_fd = path_fd_or_reply(req, dir);
    if (!dir_fd) return;
    int result;
    {
        CallerCreds as_caller(fs, req);
        CallerUmask umask(fs, req);
        if (as_caller.failed())
            result = (errno = EPERM, -1);
        else if (S_ISDIR(mode))
            result = mkdirat(dir_fd.get(), name, mode & ~S_IFMT);
        else if (S_ISLNK(mode))
            result = symlinkat(link, dir_fd.get(), name);
        else
            result = mknodat(dir_fd.get(), name, mode, rdev);
    }
    reply_created(req, dir, name, result);
}

} // namespace

void mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
    make_node(req, parent, name, S_IFDIR | (mode & ~S_IFMT), 0, nullptr);
}

void mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
    make_node(req, parent, name, mode, rdev, nullptr);
}

void symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
    make_node(req, parent, name, S_IFLNK, 0, link);
}

void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
    if (refused_in_synthetic_root(req, parent)) return;
    Filesystem& fs = fs_of(req);
    const PathFd fd = path_fd_or_reply(req, fs.inodes.get(ino));
    if (!fd) return;
    Inode& dir = fs.inodes.get(parent);
    const PathFd dir_fd = path_fd_or_reply(req, dir);
    if (!dir_fd) return;
    int result;
    {
        // As the caller, so that fs.protected_hardlinks judges the caller.
        CallerCreds as_caller(fs, req);
        result = as_caller.failed() ? (errno = EPERM, -1)
                                    : linkat(AT_FDCWD, fd.proc_path().c_str(), dir_fd.get(), name,
                                             AT_SYMLINK_FOLLOW);
    }
    reply_created(req, dir, name, result);
}

void unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
    remove_entry(req, parent, name, [](int dir, const char* n) { return unlinkat(dir, n, 0); });
}

void rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
    remove_entry(req, parent, name,
                 [](int dir, const char* n) { return unlinkat(dir, n, AT_REMOVEDIR); });
}

void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
            const char* newname, unsigned int flags) {
    if (refused_in_synthetic_root(req, parent) || refused_in_synthetic_root(req, newparent)) return;
    Filesystem& fs = fs_of(req);
    Inode& dir = fs.inodes.get(parent);
    Inode& newdir = fs.inodes.get(newparent);
    const PathFd dir_fd = path_fd_or_reply(req, dir);
    if (!dir_fd) return;
    const PathFd newdir_fd = path_fd_or_reply(req, newdir);
    if (!newdir_fd) return;
    const int result = renameat2(dir_fd.get(), name, newdir_fd.get(), newname, flags);
    const int err = result < 0 ? errno : 0;
    if (!err) {
        // The kernel moves its entries without a lookup: keep the names that
        // reopen inodes known by name in step.
        note_new_name(fs, newdir, newdir_fd.get(), newname);
        if (flags & RENAME_EXCHANGE) note_new_name(fs, dir, dir_fd.get(), name);
    }
    fuse_reply_err(req, err);
}

} // namespace splicefs::ops
