// Reading /proc/PID/mountinfo.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace util {

struct MountEntry {
    int id = 0, parent_id = 0;
    unsigned major = 0, minor = 0;
    std::string root; // the directory of the filesystem mounted here ("/" or a bind mount's)
    std::string mountpoint;
    std::string fstype; // "fuse.splicefs"
    std::string source;
    std::string options;       // per-mount options
    std::string super_options; // filesystem options (user_id=... for FUSE)
};

std::vector<MountEntry> read_mountinfo(const std::string& path = "/proc/self/mountinfo");
// The entry whose mountpoint is exactly `path` (absolute, no trailing slash),
// the last one if several are stacked.
std::optional<MountEntry> find_mount(const std::string& path);

} // namespace util
