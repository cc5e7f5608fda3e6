#include "creds.hpp"

#include <linux/capability.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <fstream>
#include <sstream>
#include <string>

namespace splicefs {

namespace {

// The supplementary groups of a process, as libfuse's fuse_req_getgroups()
// reads them; empty when the process is gone.
std::vector<gid_t> groups_of(pid_t pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    std::vector<gid_t> groups;
    while (std::getline(status, line)) {
        if (line.rfind("Groups:", 0) != 0) continue;
        std::istringstream in(line.substr(7));
        for (gid_t g; in >> g;)
            groups.push_back(g);
        break;
    }
    return groups;
}

bool thread_capabilities(__user_cap_data_struct (&data)[2]) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    return syscall(SYS_capget, &header, data) == 0;
}

bool set_thread_capabilities(__user_cap_data_struct (&data)[2]) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    return syscall(SYS_capset, &header, data) == 0;
}

constexpr unsigned fsetid_bit = 1U << CAP_FSETID; // CAP_FSETID < 32: in data[0]

// setfsuid/setfsgid are per thread; glibc's setgroups() would change every
// thread of the process, so the raw system call is used for the groups:
// setgroups32 where it exists (i386, armhf), whose setgroups takes 16-bit
// gids.
long set_thread_groups(const std::vector<gid_t>& groups) {
#ifdef SYS_setgroups32
    return syscall(SYS_setgroups32, groups.size(), groups.data());
#else
    return syscall(SYS_setgroups, groups.size(), groups.data());
#endif
}

// setfsuid/setfsgid report nothing on failure (no CAP_SETUID/CAP_SETGID, as
// in some containers): -1 is never valid, so passing it returns the ids in
// force, which show whether the switch happened.
bool fsids_are(uid_t uid, gid_t gid) {
    return static_cast<uid_t>(setfsuid(static_cast<uid_t>(-1))) == uid &&
           static_cast<gid_t>(setfsgid(static_cast<gid_t>(-1))) == gid;
}

} // namespace

CallerUmask::CallerUmask(const Filesystem& fs, fuse_req_t req) {
    if (!fs.server_applies_umask) return;
    previous_ = umask(fuse_req_ctx(req)->umask);
    set_ = true;
}

CallerUmask::~CallerUmask() {
    if (set_) umask(previous_);
}

CallerCreds::CallerCreds(Filesystem& fs, fuse_req_t req) : fs_(fs) {
    if (!fs.act_as_caller) return;
    const fuse_ctx* ctx = fuse_req_ctx(req);
    // Root creating as root group needs no switch: it is what the daemon is.
    if (ctx->uid == 0 && ctx->gid == 0) return;
    std::array<gid_t, 256> groups{};
    int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
    if (n < 0) n = 0; // the caller is gone: its primary group alone
    if (n > static_cast<int>(groups.size())) n = static_cast<int>(groups.size());
    switch_to(ctx->uid, ctx->gid, std::vector<gid_t>(groups.begin(), groups.begin() + n));
}

CallerCreds::CallerCreds(Filesystem& fs, const fuse_in_header& in) : fs_(fs) {
    if (!fs.act_as_caller || (in.uid == 0 && in.gid == 0)) return;
    switch_to(in.uid, in.gid, groups_of(static_cast<pid_t>(in.pid)));
}

void CallerCreds::switch_to(uid_t uid, gid_t gid, const std::vector<gid_t>& groups) {
    switched_ = true;
    const bool groups_set = set_thread_groups(groups) == 0;
    setfsgid(gid);
    setfsuid(uid);
    failed_ = !groups_set || !fsids_are(uid, gid);
}

CallerCreds::~CallerCreds() {
    if (!switched_) return;
    setfsuid(0);
    setfsgid(0);
    set_thread_groups(fs_.daemon_groups);
}

WithoutFsetid::WithoutFsetid() {
    __user_cap_data_struct data[2]{};
    if (!thread_capabilities(data) || !(data[0].effective & fsetid_bit)) return;
    data[0].effective &= ~fsetid_bit;
    dropped_ = set_thread_capabilities(data);
}

WithoutFsetid::~WithoutFsetid() {
    __user_cap_data_struct data[2]{};
    if (!dropped_ || !thread_capabilities(data)) return;
    data[0].effective |= fsetid_bit;
    set_thread_capabilities(data);
}

namespace {
// (gid_t)-2: not -1 (which setfsgid reads as "no change"), and a gid no
// distribution hands out.
constexpr gid_t no_files_gid = static_cast<gid_t>(-2);
} // namespace

BackingFileCreds::BackingFileCreds(const std::vector<gid_t>& daemon_groups)
    : daemon_groups_(daemon_groups) {
    previous_fsgid_ = static_cast<gid_t>(setfsgid(static_cast<gid_t>(-1)));
    const bool groups_cleared = set_thread_groups({}) == 0;
    setfsgid(no_files_gid);
    __user_cap_data_struct data[2]{};
    const bool no_fsetid = thread_capabilities(data) && !(data[0].effective & fsetid_bit);
    failed_ = !groups_cleared ||
              static_cast<gid_t>(setfsgid(static_cast<gid_t>(-1))) != no_files_gid || !no_fsetid;
}

BackingFileCreds::~BackingFileCreds() {
    setfsgid(previous_fsgid_);
    set_thread_groups(daemon_groups_);
}

namespace {

bool has_suid_bits(int fd) {
    struct stat st {};
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID));
}

} // namespace

bool ModifyAsCaller::failed() const {
    return creds_ && creds_->failed();
}

ModifyAsCaller::ModifyAsCaller(Filesystem& fs, fuse_req_t req, int fd) {
    const fuse_ctx* ctx = fuse_req_ctx(req);
    if ((ctx->uid != 0 || ctx->gid != 0) && has_suid_bits(fd)) creds_.emplace(fs, req);
}

ModifyAsCaller::ModifyAsCaller(Filesystem& fs, const fuse_in_header& in, const fuse_write_in& arg,
                               int fd) {
    // Writes from the page cache carry no caller: the kernel cleared the
    // bits when the data was written into the cache.
    if ((arg.write_flags & FUSE_WRITE_CACHE) || !has_suid_bits(fd)) return;
    if (in.uid != 0 || in.gid != 0)
        creds_.emplace(fs, in);
    else if (arg.write_flags & FUSE_WRITE_KILL_SUIDGID)
        no_fsetid_.emplace();
}

} // namespace splicefs
