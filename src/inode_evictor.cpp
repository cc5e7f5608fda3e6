#include "inode_evictor.hpp"

#include "util/mountinfo.hpp"

#include <linux/fuse.h>
#include <spdlog/spdlog.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <string_view>
#include <unordered_map>

namespace splicefs {

InodeLimits inode_limits_for(size_t fd_limit) {
    InodeLimits limits;
    limits.high_water = fd_limit / 2;
    limits.low_water = fd_limit / 8 * 3;
    return limits;
}

InodeEvictor::InodeEvictor(InodeTable& inodes, fuse_session* session, InodeLimits limits,
                           Counter& evictions)
    : inodes_(inodes), session_(session), limits_(limits), evictions_(evictions) {}

void InodeEvictor::start(dev_t mount_dev) {
    mount_dev_ = mount_dev;
    thread_ = std::thread([this] { run(); });
}

void InodeEvictor::stop() {
    inodes_.stop_waiting();
    if (thread_.joinable()) thread_.join();
}

namespace {

void add_components(std::string_view path, std::set<std::string>& names) {
    size_t start = 0;
    while (start < path.size()) {
        size_t end = path.find('/', start);
        if (end == std::string_view::npos) end = path.size();
        if (end > start) names.emplace(path.substr(start, end - start));
        start = end + 1;
    }
}

// `path` below `dir` ("" for `dir` itself), or nullopt if it is not below.
std::optional<std::string_view> below(std::string_view path, std::string_view dir) {
    if (dir == "/") return path.substr(1);
    if (path == dir) return std::string_view{};
    if (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
        path[dir.size()] == '/')
        return path.substr(dir.size() + 1);
    return std::nullopt;
}

} // namespace

void add_names_leading_to_mounts_on(dev_t dev, const std::vector<util::MountEntry>& mounts,
                                    std::set<std::string>& names) {
    std::unordered_map<int, const util::MountEntry*> by_id;
    for (const auto& mount : mounts)
        by_id.emplace(mount.id, &mount);
    for (const auto& mount : mounts) {
        const auto parent = by_id.find(mount.parent_id);
        if (parent == by_id.end() || parent->second == &mount) continue;
        const util::MountEntry& on = *parent->second;
        if (makedev(on.major, on.minor) != dev) continue;
        // `mount` sits on an entry of `dev`, reached through `on`: the mount
        // itself or a bind mount of one of its directories.
        const auto path = below(mount.mountpoint, on.mountpoint);
        if (!path) continue;
        add_components(on.root, names);
        add_components(*path, names);
    }
}

std::set<std::string> InodeEvictor::names_leading_to_submounts() {
    const auto now = std::chrono::steady_clock::now();
    bool fresh = false;
    if (namespaces_.empty() || now - namespaces_read_ > std::chrono::seconds(1)) {
        namespaces_ = util::mountinfo_of_each_namespace();
        namespaces_read_ = now;
        fresh = true;
    }
    std::set<std::string> names;
    for (const auto& mountinfo : namespaces_) {
        const auto mounts = util::read_mountinfo(mountinfo);
        if (mounts.empty() && !fresh) {
            // The process that stood for a namespace is gone; the namespace
            // may live on in others. Look again now rather than in a second.
            namespaces_.clear();
            return names_leading_to_submounts();
        }
        add_names_leading_to_mounts_on(mount_dev_, mounts, names);
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
