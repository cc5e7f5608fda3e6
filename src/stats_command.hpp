#pragma once

#include <string>
#include <vector>

namespace splicefs {

// `splicefs stats [--json | --format FORMAT] [--watch [SECONDS]] [MOUNTPOINT...]`;
// `args` starts after the word "stats". Returns the exit code.
int run_stats(const std::vector<std::string>& args);

} // namespace splicefs
