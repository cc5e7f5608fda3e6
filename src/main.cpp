// splicefs: mount a directory through FUSE with zero-copy data, or report on
// running mounts (`splicefs stats`).
#include "mount.hpp"
#include "options.hpp"
#include "stats_command.hpp"

#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    std::vector<std::string> args(argv, argv + argc);
    // A source directory named "stats" must be written ./stats (or after --).
    if (args.size() > 1 && args[1] == "stats") return splicefs::run_stats({args.begin() + 2, args.end()});

    auto parsed = splicefs::parse_mount_args(args);
    switch (parsed.status) {
    case splicefs::ParseStatus::exit_success:
        std::fputs(parsed.message.c_str(), stdout);
        return splicefs::exit_code::ok;
    case splicefs::ParseStatus::error:
        std::fprintf(stderr, "splicefs: %s\n", parsed.message.c_str());
        return splicefs::exit_code::usage;
    case splicefs::ParseStatus::ok: break;
    }
    return splicefs::run_mount(std::move(parsed.options));
}
