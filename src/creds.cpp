#include "creds.hpp"

#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>

namespace splicefs {

// setfsuid/setfsgid are per thread; glibc's setgroups() would change every
// thread of the process, so the raw system call is used for the groups.
CallerCreds::CallerCreds(Filesystem& fs, fuse_req_t req) : fs_(fs) {
    if (!fs.act_as_caller) return;
    const fuse_ctx* ctx = fuse_req_ctx(req);
    // Root creating as root group needs no switch: it is what the daemon is.
    if (ctx->uid == 0 && ctx->gid == 0) return;
    std::array<gid_t, 256> groups{};
    int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
    if (n < 0) n = 0; // the caller is gone: its primary group alone
    if (n > static_cast<int>(groups.size())) n = static_cast<int>(groups.size());
    syscall(SYS_setgroups, static_cast<size_t>(n), groups.data());
    setfsgid(ctx->gid);
    setfsuid(ctx->uid);
    switched_ = true;
}

CallerCreds::~CallerCreds() {
    if (!switched_) return;
    setfsuid(0);
    setfsgid(0);
    syscall(SYS_setgroups, fs_.daemon_groups.size(), fs_.daemon_groups.data());
}

} // namespace splicefs
