// Reading /proc/PID/mountinfo, in this mount namespace or in all of them.
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

// One mountinfo path (/proc/PID/mountinfo) per mount namespace this process
// may look into, its own first. A namespace whose processes it may not
// inspect (another user's, for an unprivileged caller) is left out.
std::vector<std::string> mountinfo_of_each_namespace();

} // namespace util
