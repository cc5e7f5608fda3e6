// The one table that wires FUSE requests to their operations.
#include "ops/ops.hpp"

namespace splicefs {

const fuse_lowlevel_ops& operations() {
    static const fuse_lowlevel_ops table = [] {
        fuse_lowlevel_ops t{};
        t.init = ops::init;
        t.lookup = ops::lookup;
        t.forget = ops::forget;
        t.forget_multi = ops::forget_multi;
        t.getattr = ops::getattr;
        t.setattr = ops::setattr;
        t.readlink = ops::readlink;
        t.mknod = ops::mknod;
        t.mkdir = ops::mkdir;
        t.unlink = ops::unlink;
        t.rmdir = ops::rmdir;
        t.symlink = ops::symlink;
        t.rename = ops::rename;
        t.link = ops::link;
        t.open = ops::open;
        t.create = ops::create;
        // read and write: data_path.cpp answers READ and WRITE itself.
        t.flush = ops::flush;
        t.release = ops::release;
        t.fsync = ops::fsync;
        t.opendir = ops::opendir;
        t.readdir = ops::readdir;
        t.readdirplus = ops::readdirplus;
        t.releasedir = ops::releasedir;
        t.fsyncdir = ops::fsyncdir;
        t.statfs = ops::statfs;
        t.setxattr = ops::setxattr;
        t.getxattr = ops::getxattr;
        t.listxattr = ops::listxattr;
        t.removexattr = ops::removexattr;
        t.access = ops::access;
        t.fallocate = ops::fallocate;
        t.lseek = ops::lseek;
        t.copy_file_range = ops::copy_file_range;
        // No flock/getlk/setlk: the kernel then keeps POSIX and BSD locks
        // itself, which gives every process using the mount native semantics.
        return t;
    }();
    return table;
}

} // namespace splicefs
