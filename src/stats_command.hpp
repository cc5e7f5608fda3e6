#pragma once

#include "stats_format.hpp"

#include <optional>
#include <string>
#include <vector>

namespace splicefs {

// `splicefs stats [--json | --format FORMAT] [--watch [SECONDS]] [MOUNTPOINT...]`;
// `args` starts after the word "stats". Returns the exit code.
int run_stats(const std::vector<std::string>& args);

// The report of the daemon serving the splicefs mount at `mountpoint`, or
// null with `error` saying why there is none.
std::optional<Report> ask_daemon(const std::string& mountpoint, std::string& error);

} // namespace splicefs
