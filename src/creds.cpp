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
