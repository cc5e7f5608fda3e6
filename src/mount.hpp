#pragma once

#include "options.hpp"

namespace splicefs {

// Mounts SOURCE on MOUNTPOINT and serves it until unmounted or signalled.
// Returns the process exit code (options.hpp, exit_code).
int run_mount(Options opts);

} // namespace splicefs
