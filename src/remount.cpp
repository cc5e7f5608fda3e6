#include "remount.hpp"

#include "stats_command.hpp"
#include "util/mountinfo.hpp"
#include "util/size.hpp"

#include <fmt/core.h>

#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace splicefs {

namespace {

// The flags of the mount at `mountpoint` as MountFlags.
MountFlags current_flags(const struct statvfs& sv) {
    MountFlags f;
    f.read_only = sv.f_flag & ST_RDONLY;
    f.nosuid = (sv.f_flag & ST_NOSUID) != 0;
    f.nodev = (sv.f_flag & ST_NODEV) != 0;
    f.noexec = sv.f_flag & ST_NOEXEC;
    f.sync = sv.f_flag & ST_SYNCHRONOUS;
    f.atime = (sv.f_flag & ST_NOATIME)    ? MountFlags::Atime::noatime
              : (sv.f_flag & ST_RELATIME) ? MountFlags::Atime::relatime
                                          : MountFlags::Atime::strictatime;
    f.nodiratime = sv.f_flag & ST_NODIRATIME;
    return f;
}

unsigned long per_mount_flags(const MountFlags& f) {
    unsigned long flags = 0;
    if (f.nosuid.value_or(false)) flags |= MS_NOSUID;
    if (f.nodev.value_or(false)) flags |= MS_NODEV;
    if (f.noexec) flags |= MS_NOEXEC;
    switch (f.atime) {
    case MountFlags::Atime::noatime:
        flags |= MS_NOATIME;
        break;
    case MountFlags::Atime::relatime:
        flags |= MS_RELATIME;
        break;
    case MountFlags::Atime::strictatime:
        flags |= MS_STRICTATIME;
        break;
    }
    if (f.nodiratime) flags |= MS_NODIRATIME;
    return flags;
}

bool given(const Options& opts, const char* name) {
    return std::find(opts.given.begin(), opts.given.end(), name) != opts.given.end();
}

// The first daemon option given that differs from what the daemon runs
// with, as "NAME (RUNNING, not GIVEN)", or empty.
std::string daemon_option_change(const Options& opts, const Report& running) {
    auto differs = [&](const char* name, const std::string& now, const std::string& asked) {
        return given(opts, name) && now != asked
                   ? std::string(name) + " is " + now + ", not " + asked
                   : std::string();
    };
    std::string change = differs("splice", report_value(running, "splice"), to_string(opts.splice));
    if (change.empty())
        change = differs("cache", report_value(running, "cache"), to_string(opts.cache));
    if (change.empty())
        change = differs("passthrough", report_value(running, "passthrough"),
                         to_string(opts.passthrough));
    if (change.empty())
        change = differs("threads", report_value(running, "threads"),
                         std::to_string(opts.worker_threads()));
    if (change.empty() && opts.timeout)
        change = differs("timeout", report_value(running, "timeout"),
                         fmt::format("{:g}", *opts.timeout));
    if (change.empty() && opts.max_reply)
        change = differs("max-reply", report_value(running, "max_reply_requested"),
                         std::to_string(*opts.max_reply));
    return change;
}

} // namespace

std::string set_atime_flags(const std::string& mountpoint, const MountFlags& flags) {
    struct statvfs sv {};
    if (statvfs(mountpoint.c_str(), &sv) < 0) return std::strerror(errno);
    MountFlags now = current_flags(sv);
    now.atime = flags.atime;
    now.nodiratime = flags.nodiratime;
    const unsigned long ro = (sv.f_flag & ST_RDONLY) ? MS_RDONLY : 0;
    if (mount(nullptr, mountpoint.c_str(), nullptr,
              MS_REMOUNT | MS_BIND | ro | per_mount_flags(now), nullptr) < 0)
        return std::strerror(errno);
    return {};
}

int remount(const Options& opts) {
    auto fail = [&](int code, const std::string& why) {
        std::fprintf(stderr, "splicefs: cannot remount '%s': %s\n", opts.mountpoint.c_str(),
                     why.c_str());
        return code;
    };
    if (geteuid() != 0) return fail(exit_code::usage, "remounting needs root");
    char resolved[PATH_MAX];
    if (!realpath(opts.mountpoint.c_str(), resolved))
        return fail(exit_code::mount_failed, std::strerror(errno));
    const std::string mountpoint = resolved;
    std::string error;
    const auto running = ask_daemon(mountpoint, error);
    if (!running)
        return fail(exit_code::mount_failed, "not a running splicefs mount (" + error + ")");
    if (auto change = daemon_option_change(opts, *running); !change.empty())
        return fail(exit_code::usage, "only ro/rw and the suid, dev, exec and atime flags can "
                                      "change on a running mount, and " +
                                          change + " (unmount and mount again)");
    struct statvfs sv {};
    if (statvfs(mountpoint.c_str(), &sv) < 0)
        return fail(exit_code::mount_failed, std::strerror(errno));
    MountFlags wanted = current_flags(sv);
    for (const auto& flag : opts.flag_options)
        wanted.apply(flag);
    // ro/rw belong to the filesystem (MS_REMOUNT alone); the others to this
    // mount, and a plain remount would reset them, so they go along.
    const unsigned long ro = wanted.read_only ? MS_RDONLY : 0;
    if (mount(nullptr, mountpoint.c_str(), nullptr, MS_REMOUNT | ro | per_mount_flags(wanted),
              nullptr) < 0)
        return fail(exit_code::mount_failed, std::strerror(errno));
    if (mount(nullptr, mountpoint.c_str(), nullptr,
              MS_REMOUNT | MS_BIND | ro | per_mount_flags(wanted), nullptr) < 0)
        return fail(exit_code::mount_failed, std::strerror(errno));
    return exit_code::ok;
}

} // namespace splicefs
