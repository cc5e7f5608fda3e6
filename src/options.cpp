#include "options.hpp"

#include "util/size.hpp"
#include "util/text.hpp"
#include "version.hpp"

#include <CLI/CLI.hpp>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <thread>

namespace splicefs {

const char* to_string(SpliceMode mode) {
    switch (mode) {
    case SpliceMode::off:
        return "off";
    case SpliceMode::read:
        return "read";
    case SpliceMode::write:
        return "write";
    case SpliceMode::all:
        return "all";
    }
    return "?";
}

const char* to_string(CachePolicy policy) {
    switch (policy) {
    case CachePolicy::auto_:
        return "auto";
    case CachePolicy::always:
        return "always";
    case CachePolicy::never:
        return "never";
    }
    return "?";
}

const char* to_string(PassthroughMode mode) {
    return mode == PassthroughMode::auto_ ? "auto" : "off";
}

unsigned Options::worker_threads() const {
    if (single_threaded) return 1;
    if (threads) return threads;
    return std::clamp(2 * std::thread::hardware_concurrency(), 4U, 16U);
}

namespace {

constexpr unsigned max_threads = 1024;

// Options libfuse's mount understands and that splicefs passes on as they are.
constexpr std::array<const char*, 4> fuse_flag_options{"allow_other", "allow_root", "auto_unmount",
                                                       "default_permissions"};

// Options that only mean something to mount(8), fstab or systemd: accepted and
// dropped, as sshfs does.
constexpr std::array<const char*, 10> fstab_only_options{
    "defaults", "nofail", "_netdev", "auto", "noauto", "user", "users", "nouser", "owner", "group"};

bool is_one_of(const std::string& key, const auto& list) {
    return std::any_of(list.begin(), list.end(), [&](const char* item) { return key == item; });
}

// Splits an -o argument on commas; a backslash escapes a comma (as libfuse does).
std::vector<std::string> split_o(const std::string& text) {
    std::vector<std::string> items;
    std::string current;
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\\' && i + 1 < text.size()) {
            current += text[++i];
        } else if (text[i] == ',') {
            items.push_back(std::move(current));
            current.clear();
        } else {
            current += text[i];
        }
    }
    items.push_back(std::move(current));
    items.erase(std::remove(items.begin(), items.end(), std::string{}), items.end());
    return items;
}

struct OptionSpec {
    const char* name; // long name with dashes, as on the command line
    bool takes_value;
};

// The long options of the mount form; `-o key[=value]` maps onto these with
// underscores or dashes.
constexpr std::array<OptionSpec, 13> mount_long_options{{
    {"foreground", false},
    {"debug", false},
    {"single-threaded", false},
    {"threads", true},
    {"log-level", true},
    {"cache", true},
    {"timeout", true},
    {"splice", true},
    {"splice-move", false},
    {"passthrough", true},
    {"io-uring", false},
    {"max-reply", true},
    {"help", false},
}};

std::string dashed(std::string key) {
    std::replace(key.begin(), key.end(), '_', '-');
    return key;
}

struct Expanded {
    std::vector<std::string> argv;         // for CLI11, without any -o
    std::vector<std::string> fuse_options; // for libfuse
    std::string error;
};

// Rewrites every `-o a,b=c` into long options or libfuse options, so that
// the command line, fstab and mount.fuse3 share one vocabulary.
Expanded expand_o_options(const std::vector<std::string>& args) {
    Expanded out;
    out.argv.push_back(args.empty() ? "splicefs" : args[0]);
    auto take = [&](const std::string& list) {
        for (const auto& item : split_o(list)) {
            const auto eq = item.find('=');
            const std::string key = item.substr(0, eq);
            const bool has_value = eq != std::string::npos;
            const std::string value = has_value ? item.substr(eq + 1) : std::string{};
            const std::string name = dashed(key);
            const auto spec = std::find_if(mount_long_options.begin(), mount_long_options.end(),
                                           [&](const OptionSpec& s) { return name == s.name; });
            if (spec != mount_long_options.end() && name != "help") {
                if (spec->takes_value && !has_value) {
                    out.error = "option '-o " + key + "' needs a value (" + key + "=...)";
                    return false;
                }
                if (spec->takes_value && value.empty()) {
                    out.error = "option '--" + name + "' (-o " + key + ") has an empty value";
                    return false;
                }
                if (!spec->takes_value && has_value) {
                    out.error = "option '-o " + key + "' takes no value";
                    return false;
                }
                out.argv.push_back("--" + name + (has_value ? "=" + value : ""));
            } else if ((is_one_of(key, fuse_flag_options) || MountFlags{}.apply(key) ||
                        key == "remount") &&
                       !has_value) {
                out.fuse_options.push_back(key);
            } else if ((key == "fsname" || key == "subtype" || key == "max_read") && has_value) {
                if (key == "max_read") {
                    out.error = "option 'max_read' is set by splicefs: use max_reply=SIZE";
                    return false;
                }
                out.fuse_options.push_back(item);
            } else if (is_one_of(key, fstab_only_options) || key.rfind("x-", 0) == 0 ||
                       key == "comment") {
                // mount(8) and systemd options: meaningless to the daemon.
            } else {
                out.error = "unknown mount option '" + item + "'";
                return false;
            }
        }
        return true;
    };
    for (size_t i = 1; i < args.size(); ++i) {
        const std::string& arg = args[i];
        if (arg == "--") {
            out.argv.insert(out.argv.end(), args.begin() + static_cast<long>(i), args.end());
            break;
        }
        if (arg == "-o") {
            if (i + 1 >= args.size()) {
                out.error = "option '-o' needs a value";
                return out;
            }
            if (!take(args[++i])) return out;
        } else if (arg.size() > 2 && arg.rfind("-o", 0) == 0) {
            if (!take(arg.substr(2))) return out;
        } else if (arg.size() > 3 && arg.rfind("--", 0) == 0 && arg.back() == '=') {
            // The option library would take the next argument as the value.
            out.error = "option '" + arg.substr(0, arg.size() - 1) + "' has an empty value";
            return out;
        } else {
            out.argv.push_back(arg);
        }
    }
    return out;
}

size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j)
        row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            const size_t above = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
            diagonal = above;
        }
    }
    return row[b.size()];
}

// An option nobody defined: named, with the long option it most likely
// meant when one is close.
std::string unknown_option(const std::string& arg) {
    const std::string name = arg.substr(0, arg.find('='));
    std::string best;
    size_t best_distance = 3; // at most two edits away
    if (name.rfind("--", 0) == 0) {
        for (const auto& spec : mount_long_options) {
            const size_t d = edit_distance(name.substr(2), spec.name);
            if (d < best_distance) {
                best_distance = d;
                best = spec.name;
            }
        }
    }
    return "unknown option '" + name + "'" +
           (best.empty() ? "" : " (did you mean --" + best + "?)") + "; see splicefs --help";
}

// The first argument that is no option of the mount form, or empty.
std::string first_unknown_option(const std::vector<std::string>& argv) {
    static constexpr std::array<const char*, 6> short_options{"-h", "-V", "-f", "-d", "-s", "-o"};
    for (size_t i = 1; i < argv.size(); ++i) {
        const std::string& arg = argv[i];
        if (arg == "--") break;
        if (arg.rfind("--", 0) == 0) {
            const std::string name = arg.substr(2, arg.find('=') - 2);
            const auto spec = std::find_if(mount_long_options.begin(), mount_long_options.end(),
                                           [&](const OptionSpec& s) { return name == s.name; });
            if (spec == mount_long_options.end() && name != "version") return arg;
            // Its value is the next argument, whatever it looks like (-1).
            if (spec != mount_long_options.end() && spec->takes_value &&
                arg.find('=') == std::string::npos)
                ++i;
        } else if (arg.size() > 1 && arg[0] == '-') {
            // Short flags may be bundled (-fd).
            for (size_t c = 1; c < arg.size(); ++c) {
                std::string flag = std::string("-") + arg[c];
                if (!is_one_of(flag, short_options)) return flag;
            }
        }
    }
    return {};
}

template <typename Enum, size_t N>
bool parse_enum(const std::string& text, const std::array<std::pair<const char*, Enum>, N>& names,
                Enum& out) {
    for (const auto& [name, value] : names) {
        if (text == name) {
            out = value;
            return true;
        }
    }
    return false;
}

constexpr std::array<std::pair<const char*, SpliceMode>, 4> splice_names{
    {{"off", SpliceMode::off},
     {"read", SpliceMode::read},
     {"write", SpliceMode::write},
     {"all", SpliceMode::all}}};
constexpr std::array<std::pair<const char*, CachePolicy>, 3> cache_names{
    {{"auto", CachePolicy::auto_}, {"always", CachePolicy::always}, {"never", CachePolicy::never}}};
constexpr std::array<std::pair<const char*, PassthroughMode>, 2> passthrough_names{
    {{"off", PassthroughMode::off}, {"auto", PassthroughMode::auto_}}};
constexpr std::array<const char*, 7> log_levels{"trace", "debug",    "info", "warn",
                                                "error", "critical", "off"};

std::string help_footer() {
    return R"(
Mount options (-o, comma-separated; also read from fstab):
  Every long option above as -o key=value or -o key (splice=all, max_reply=1M, cache=never, foreground, ...)
  allow_other            let other users use the mount (implies default_permissions)
  default_permissions    let the kernel check permissions from file modes
  ro, rw                 read-only or read-write mount
  auto_unmount           unmount when the daemon dies, even by SIGKILL
  fsname=NAME            source shown in findmnt (default: SOURCE)
  subtype=NAME           type shown as fuse.NAME (default: splicefs)
  dev, nodev, suid, nosuid, exec, noexec, atime, noatime, relatime, sync, async, dirsync
  nofail, _netdev, auto, noauto, user, users, nouser, defaults, x-*, comment=*: fstab only, ignored

Other forms:
  splicefs stats [--json|--format prometheus] [--watch [SECONDS]] [MOUNTPOINT...]
  fusermount3 -u MOUNTPOINT      unmount

Exit status: 0 success, 1 usage error, 2 daemon failure after mounting,
32 mount failure (nothing mounted). See splicefs(1).
)";
}

// CLI11's help with our usage line: the positionals are SOURCE and
// MOUNTPOINT, not the option library's name for them.
std::string help_text(std::string help) {
    const auto usage = help.find("Usage: ");
    const auto usage_end = help.find('\n', usage);
    if (usage != std::string::npos && usage_end != std::string::npos)
        help.replace(usage, usage_end - usage,
                     "Usage: splicefs [OPTIONS] SOURCE MOUNTPOINT [-o OPT[,OPT...]]");
    const auto positionals = help.find("Positionals:");
    const auto options = help.find("Options:");
    if (positionals != std::string::npos && options != std::string::npos && options > positionals)
        help.replace(positionals, options - positionals,
                     "SOURCE is a directory, a block device or a disk image; MOUNTPOINT a "
                     "directory\n(or a file, for a single-file SOURCE).\n\n");
    return help;
}

} // namespace

std::vector<std::string> long_option_names() {
    std::vector<std::string> names;
    names.reserve(mount_long_options.size() + 1);
    for (const auto& spec : mount_long_options)
        names.emplace_back(spec.name);
    names.emplace_back("version");
    return names;
}

namespace {

// What the command line gave as text, before it is checked.
struct RawValues {
    std::string threads, cache, timeout, splice, passthrough, max_reply;
    std::vector<std::string> o_placeholder, positionals;
    bool want_help = false, want_version = false;
};

void declare_options(CLI::App& app, Options& o, RawValues& raw) {
    app.set_help_flag(); // our own, so that -h prints and exits 0 through our path
    app.add_flag("-h,--help", raw.want_help, "Print this help and exit");
    app.add_flag("-V,--version", raw.want_version, "Print the version and exit");
    app.add_flag("-f,--foreground", o.foreground, "Stay in the foreground, log to stderr");
    app.add_flag("-d,--debug", o.debug, "Trace every request (implies --foreground)");
    app.add_flag("-s,--single-threaded", o.single_threaded, "Serve requests on one thread");
    app.add_option("--threads", raw.threads, "Worker threads (default: 2 per CPU, 4 to 16)")
        ->type_name("N");
    app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error, critical or off")
        ->type_name("LEVEL");
    app.add_option("--cache", raw.cache,
                   "Kernel caching: auto (1 s timeouts), always (long timeouts, keep_cache, "
                   "writeback), never (direct I/O, no timeouts)")
        ->type_name("POLICY");
    app.add_option("--timeout", raw.timeout,
                   "Seconds the kernel trusts names and attributes it has seen (default: the "
                   "cache policy's: 1, a day, or 0); longer hides changes made directly on SOURCE "
                   "that long")
        ->type_name("SECONDS");
    app.add_option("--splice", raw.splice,
                   "Zero-copy mode: off, read (reads answered by splice, the default), write "
                   "(writes arrive by splice) or all")
        ->type_name("MODE");
    app.add_flag("--splice-move", o.splice_move, "Ask the kernel to move pages (SPLICE_F_MOVE)");
    app.add_option("--passthrough", raw.passthrough,
                   "Kernel passthrough: off (the default) or auto (the kernel serves open files "
                   "itself where it and the daemon's privileges allow; their bytes are not "
                   "counted)")
        ->type_name("MODE");
    app.add_flag("--io-uring", o.io_uring,
                 "Carry requests by FUSE over io_uring (Linux 6.14+, when the fuse module's "
                 "enable_uring is 1): one queue per CPU, data copied, never spliced");
    app.add_option("--max-reply", raw.max_reply,
                   "Largest READ reply and WRITE request, e.g. 128K or 1M (default: the largest "
                   "that splices)")
        ->type_name("SIZE");
    app.add_option("-o", raw.o_placeholder, "Mount options, see below")->type_name("OPT[,OPT...]");
    app.add_option("source_mountpoint", raw.positionals, "SOURCE MOUNTPOINT")->type_name("");
    app.footer(help_footer());
    app.allow_extras(false);
}

// As sshfs -V: the library in use and the protocol it was built for; the
// kernel's own is agreed at each mount (splicefs stats).
std::string version_text() {
    return std::string("splicefs ") + SPLICEFS_VERSION + "\nlibfuse " + fuse_pkgversion() +
           " (built with " + std::to_string(FUSE_MAJOR_VERSION) + "." +
           std::to_string(FUSE_MINOR_VERSION) + ")\nFUSE kernel interface " +
           std::to_string(FUSE_KERNEL_VERSION) + "." + std::to_string(FUSE_KERNEL_MINOR_VERSION) +
           " (headers; each mount's is in splicefs stats)\n";
}

// Checks the option values given as text into `o`; returns the error, or "".
std::string check_values(const CLI::App& app, const RawValues& raw, Options& o) {
    if (app.count("--threads")) {
        std::string error;
        const auto n = util::parse_size(raw.threads, &error);
        if (!n || raw.threads.find_first_not_of("0123456789") != std::string::npos ||
            *n > max_threads)
            return "--threads must be a whole number from 1 to " + std::to_string(max_threads) +
                   ", not '" + raw.threads + "'";
        o.threads = static_cast<unsigned>(*n);
    }
    if (std::find(log_levels.begin(), log_levels.end(), o.log_level) == log_levels.end())
        return "unknown log level '" + o.log_level +
               "' (use trace, debug, info, warn, error, critical or off)";
    if (app.count("--cache") && !parse_enum(raw.cache, cache_names, o.cache))
        return "unknown cache policy '" + raw.cache + "' (use auto, always or never)";
    if (app.count("--timeout")) {
        // Decimal seconds, as mount(8) users write them: 0, 0.5, 3600.
        char* end = nullptr;
        const double t = std::strtod(raw.timeout.c_str(), &end);
        constexpr double year = 365.0 * 86400;
        if (raw.timeout.empty() || *end != '\0' || !(t >= 0 && t <= year) ||
            raw.timeout.find_first_not_of("0123456789.") != std::string::npos)
            return "--timeout must be a number of seconds from 0 to 31536000 (a year), not '" +
                   raw.timeout + "'";
        o.timeout = t;
    }
    if (app.count("--splice") && !parse_enum(raw.splice, splice_names, o.splice))
        return "unknown splice mode '" + raw.splice + "' (use off, read, write or all)";
    if (app.count("--passthrough") &&
        !parse_enum(raw.passthrough, passthrough_names, o.passthrough))
        return "unknown passthrough mode '" + raw.passthrough + "' (use off or auto)";
    if (app.count("--max-reply")) {
        std::string error;
        o.max_reply = util::parse_size(raw.max_reply, &error);
        if (!o.max_reply) return "--max-reply: " + error;
    }
    if (raw.positionals.size() != 2)
        return raw.positionals.size() < 2 ? "expected SOURCE and MOUNTPOINT (see --help)"
                                          : "too many arguments: expected SOURCE and MOUNTPOINT";
    o.source = raw.positionals[0];
    o.mountpoint = raw.positionals[1];
    if (o.source.empty() || o.mountpoint.empty())
        return o.source.empty() ? "SOURCE is empty" : "MOUNTPOINT is empty";
    return {};
}

// The long options given (for what an fstab line may not change), and the
// -o options: ours, mount flags (resolved last-wins), and libfuse's.
void apply_given(const Expanded& expanded, Options& o) {
    for (const auto& arg : expanded.argv) {
        if (arg.rfind("--", 0) == 0 && arg.size() > 2)
            o.given.push_back(arg.substr(
                2, arg.find('=') == std::string::npos ? std::string::npos : arg.find('=') - 2));
    }
    for (const auto& opt : expanded.fuse_options) {
        if (o.flags.apply(opt)) { // passed to libfuse once resolved
            o.flag_options.push_back(opt);
            continue;
        }
        if (opt == "remount") {
            o.remount = true;
            continue;
        }
        if (opt == "allow_other")
            o.allow_other = true;
        else if (opt == "default_permissions")
            o.default_permissions = true;
        else if (opt == "auto_unmount")
            o.auto_unmount = true;
        else if (opt.rfind("fsname=", 0) == 0) {
            o.fsname = opt.substr(7);
            continue;
        } else if (opt.rfind("subtype=", 0) == 0) {
            o.subtype = opt.substr(8);
            continue;
        }
        o.fuse_options.push_back(opt);
    }
}

} // namespace

ParseResult parse_mount_args(const std::vector<std::string>& args) {
    ParseResult result;
    auto fail = [&](const std::string& message) {
        result.status = ParseStatus::error;
        result.message = util::printable(message);
        return result;
    };

    Expanded expanded = expand_o_options(args);
    if (!expanded.error.empty()) return fail(expanded.error);
    if (const auto unknown = first_unknown_option(expanded.argv); !unknown.empty())
        return fail(unknown_option(unknown));

    Options& o = result.options;
    RawValues raw;
    CLI::App app{
        "splicefs: a passthrough FUSE filesystem whose file data moves by splice, without copies",
        "splicefs"};
    declare_options(app, o, raw);
    std::vector<std::string> reversed(expanded.argv.rbegin(), expanded.argv.rend());
    reversed.pop_back(); // program name
    try {
        app.parse(reversed);
    } catch (const CLI::ParseError& e) {
        std::string what = e.what();
        if (what.rfind("The following arguments were not expected: ", 0) == 0)
            what = "unknown option or extra argument: " + what.substr(43);
        return fail(what);
    }
    if (raw.want_help || raw.want_version) {
        result.status = ParseStatus::exit_success;
        result.message = raw.want_help ? help_text(app.help()) : version_text();
        return result;
    }
    if (auto error = check_values(app, raw, o); !error.empty()) return fail(error);
    if (o.debug) {
        o.foreground = true;
        if (o.log_level == "info") o.log_level = "debug";
    }
    apply_given(expanded, o);
    return result;
}

bool MountFlags::apply(const std::string& name) {
    if (name == "ro" || name == "rw")
        read_only = name == "ro";
    else if (name == "suid" || name == "nosuid")
        nosuid = name == "nosuid";
    else if (name == "dev" || name == "nodev")
        nodev = name == "nodev";
    else if (name == "exec" || name == "noexec")
        noexec = name == "noexec";
    else if (name == "sync" || name == "async")
        sync = name == "sync";
    else if (name == "dirsync")
        dirsync = true;
    else if (name == "atime" || name == "relatime" || name == "nostrictatime")
        atime = Atime::relatime;
    else if (name == "noatime")
        atime = Atime::noatime;
    else if (name == "strictatime" || name == "norelatime")
        atime = Atime::strictatime;
    else if (name == "diratime" || name == "nodiratime")
        nodiratime = name == "nodiratime";
    else
        return false;
    return true;
}

std::vector<std::string> MountFlags::libfuse_options() const {
    std::vector<std::string> out{read_only ? "ro" : "rw"};
    if (nosuid) out.emplace_back(*nosuid ? "nosuid" : "suid");
    if (nodev) out.emplace_back(*nodev ? "nodev" : "dev");
    out.emplace_back(noexec ? "noexec" : "exec");
    out.emplace_back(sync ? "sync" : "async");
    if (dirsync) out.emplace_back("dirsync");
    if (atime == Atime::noatime) out.emplace_back("noatime");
    return out;
}

} // namespace splicefs
