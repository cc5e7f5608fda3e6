// FUSE operations, one small function each, grouped by what they act on.
// READ and WRITE are not here: they take the zero-copy data path
// (data_path.cpp), which answers them without going through libfuse.
#pragma once

#include "filesystem.hpp"

namespace splicefs::ops {

// Looks `name` up in `parent` and fills `e` with one more kernel reference.
// Returns 0 or an errno value.
// Whether a looked-up inode gets its O_PATH fd at once, or when an
// operation first needs it (the inode store opens it by handle or name).
enum class EntryFd { now, when_needed };
int lookup_entry(Filesystem& fs, Inode& parent, const char* name, fuse_entry_param& e,
                 EntryFd entry_fd = EntryFd::when_needed);
// Replies EPERM and returns true when `parent` is the synthetic root of a
// single-file mount, where nothing can be created, removed or renamed.
bool refused_in_synthetic_root(fuse_req_t req, fuse_ino_t parent);
// The inode's fd for this request; when there is none, replies with the
// reason and returns an empty PathFd.
PathFd path_fd_or_reply(fuse_req_t req, Inode& inode);
// Replies to a creating operation whose result was `result` (-1 and errno on failure).
void reply_created(fuse_req_t req, Inode& parent, const char* name, int result);

// entry.cpp
void lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
void forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets);
void mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
void mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
void symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name);
void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name);
void unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
void rmdir(fuse_req_t req, fuse_ino_t parent, const char* name);
void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
            const char* newname, unsigned int flags);

// attr.cpp
void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi);
void readlink(fuse_req_t req, fuse_ino_t ino);
void statfs(fuse_req_t req, fuse_ino_t ino);
void access(fuse_req_t req, fuse_ino_t ino, int mask);

// file.cpp
void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi);
void flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
void fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
               fuse_file_info* fi);
void lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi);
void copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                     fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                     int flags);

// dir.cpp
void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi);
void readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi);
void releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);

// xattr.cpp
void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
              int flags);
void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);

// init.cpp
void init(void* userdata, fuse_conn_info* conn);

} // namespace splicefs::ops
