// splicefs: mount a directory through FUSE with zero-copy data, or report on
// running mounts (`splicefs stats`).
#include "mount.hpp"
#include "options.hpp"
#include "remount.hpp"
#include "stats_command.hpp"

#include <cstdio>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

// mount(8) runs helpers as `mount.TYPE SOURCE DIR [-sfnv] [-N NS] [-o OPTS] [-t TYPE]`.
// Returns false for -f (fake: do everything but mount).
bool adapt_mount_helper_args(std::vector<std::string>& args) {
    std::vector<std::string> out{args[0]};
    // As mount.fuse3 does for root: fstab's defaults mean dev and suid; a
    // later nodev/nosuid in the user's options still wins.
    if (geteuid() == 0) out.insert(out.end(), {"-o", "dev,suid"});
    bool fake = false;
    for (size_t i = 1; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "-n" || a == "-s" || a == "-v") continue;
        if (a == "-f") {
            fake = true;
            continue;
        }
        if ((a == "-t" || a == "-N") && i + 1 < args.size()) {
            ++i;
            continue;
        }
        out.push_back(a);
    }
    args = std::move(out);
    return !fake;
}

} // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv, argv + argc);
    const std::string name = args[0].substr(args[0].find_last_of('/') + 1);
    if (name.rfind("mount.", 0) == 0 && !adapt_mount_helper_args(args))
        return splicefs::exit_code::ok;
    // A source directory named "stats" must be written ./stats (or after --).
    if (args.size() > 1 && args[1] == "stats")
        return splicefs::run_stats({args.begin() + 2, args.end()});

    auto parsed = splicefs::parse_mount_args(args);
    switch (parsed.status) {
    case splicefs::ParseStatus::exit_success:
        std::fputs(parsed.message.c_str(), stdout);
        return splicefs::exit_code::ok;
    case splicefs::ParseStatus::error:
        std::fprintf(stderr, "splicefs: %s\n", parsed.message.c_str());
        return splicefs::exit_code::usage;
    case splicefs::ParseStatus::ok:
        break;
    }
    if (parsed.options.remount) return splicefs::remount(parsed.options);
    return splicefs::run_mount(std::move(parsed.options));
}
