// `mount -o remount,...`: changes the flags of a running splicefs mount.
#pragma once

#include "options.hpp"

#include <string>

namespace splicefs {

// Sets the per-mount atime flags that libfuse 3.14 cannot (strictatime,
// nodiratime) on the mount at `mountpoint`, keeping its other flags.
// Returns an error message, or empty.
std::string set_atime_flags(const std::string& mountpoint, const MountFlags& flags);

// mount(8) runs the helper for a remount with the fstab line's options and
// the new ones: ro/rw and the per-mount flags of the mount at
// opts.mountpoint change as given (the last of two opposite ones wins); an
// option of the running daemon that differs from what it runs with is
// refused, since only a new mount can change it. Returns the exit code.
int remount(const Options& opts);

} // namespace splicefs
