#include "inode_evictor.hpp"

#include "util/mountinfo.hpp"

#include <linux/fuse.h>
#include <spdlog/spdlog.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace splicefs {

InodeLimits inode_limits_for(size_t fd_limit) {
    InodeLimits limits;
    limits.high_water = fd_limit / 2;
    limits.low_water = fd_limit / 8 * 3;
    return limits;
}

InodeEvictor::InodeEvictor(InodeTable& inodes, fuse_session* session, std::string mountpoint,
                           InodeLimits limits, Counter& evictions)
    : inodes_(inodes), session_(session), mountpoint_(std::move(mountpoint)), limits_(limits),
      evictions_(evictions) {}

void InodeEvictor::start() {
    thread_ = std::thread([this] { run(); });
}

void InodeEvictor::stop() {
    inodes_.stop_waiting();
    if (thread_.joinable()) thread_.join();
}

std::set<std::string> InodeEvictor::names_leading_to_submounts() const {
    std::set<std::string> names;
    const std::string prefix = mountpoint_ == "/" ? "/" : mountpoint_ + "/";
    for (const auto& mount : util::read_mountinfo()) {
        if (mount.mountpoint.compare(0, prefix.size(), prefix) != 0) continue;
        size_t start = prefix.size();
        while (start < mount.mountpoint.size()) {
            size_t end = mount.mountpoint.find('/', start);
            if (end == std::string::npos) end = mount.mountpoint.size();
            if (end > start) names.insert(mount.mountpoint.substr(start, end - start));
            start = end + 1;
        }
    }
    return names;
}

// FUSE_NOTIFY_INVAL_ENTRY, written here rather than by libfuse, which
// prints every refusal but ENOENT to stderr. Returns 0 or an errno value.
int InodeEvictor::ask_kernel_to_drop(const InodeTable::Entry& entry) const {
    fuse_notify_inval_entry_out arg{};
    arg.parent = entry.parent;
    arg.namelen = static_cast<uint32_t>(entry.name.size());
    fuse_out_header out{};
    out.error = FUSE_NOTIFY_INVAL_ENTRY; // notifications carry their code here; unique is 0
    const char nul = '\0';
    iovec iov[] = {{&out, sizeof out},
                   {&arg, sizeof arg},
                   {const_cast<char*>(entry.name.data()), entry.name.size()},
                   {const_cast<char*>(&nul), 1}};
    out.len = static_cast<uint32_t>(sizeof out + sizeof arg + entry.name.size() + 1);
    if (::writev(fuse_session_fd(session_), iov, 4) < 0) return errno;
    return 0;
}

void InodeEvictor::run() {
    using namespace std::chrono_literals;
    while (inodes_.wait_for_more_than(limits_.high_water)) {
        const auto protected_names = names_leading_to_submounts();
        // Down to the low-water mark, not just under the high one: fewer rounds.
        while (true) {
            const auto entries = inodes_.eviction_candidates(limits_.low_water, protected_names);
            if (entries.empty()) break;
            spdlog::debug("{} inodes held, asking the kernel to drop {}", inodes_.size(),
                          entries.size());
            for (const auto& entry : entries) {
                const int err = ask_kernel_to_drop(entry);
                if (err == 0) {
                    evictions_.add(1);
                } else if (err == ENODEV || err == EBADF) {
                    return; // the connection is gone
                } else {
                    // ENOENT: renamed or removed outside the mount, or
                    // already dropped (with its directory). ENOTDIR: the
                    // directory was forgotten since the list was made and
                    // its node id went to a file; asking a reused id is
                    // harmless, at worst another entry of that name leaves
                    // the cache. Either way, do not ask for that name again.
                    spdlog::debug("dropping entry {}: {}", entry.name, std::strerror(err));
                    inodes_.name_unknown(entry);
                }
            }
        }
        // The rest is on its way out (FORGETs take milliseconds) or in use:
        // look again shortly, without spinning.
        inodes_.wait_for_at_most(limits_.low_water, 10ms);
    }
}

} // namespace splicefs
