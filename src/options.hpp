// The one option vocabulary of splicefs: command line, `-o key=value` and fstab.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace splicefs {

enum class SpliceMode { off, read, write, all };
enum class CachePolicy { auto_, always, never };
enum class PassthroughMode { off, auto_ };

const char* to_string(SpliceMode mode);
const char* to_string(CachePolicy policy);
const char* to_string(PassthroughMode mode);

// Exit codes, documented in splicefs(1). mount(8) reads a helper's status as
// bit flags, so these follow its meanings.
namespace exit_code {
constexpr int ok = 0;
constexpr int usage = 1;         // bad arguments or option values
constexpr int system = 2;        // the daemon failed after the mount was made
constexpr int stats_failed = 4;  // `stats`: a path was no splicefs mount or did not answer
constexpr int mount_failed = 32; // SOURCE, MOUNTPOINT or FUSE unusable; nothing mounted
} // namespace exit_code

// The mount flags of mount(8)'s vocabulary, each pair resolved as mount(8)
// does: the last one given wins (fstab defaults, then the user's options).
struct MountFlags {
    enum class Atime { relatime, noatime, strictatime }; // relatime: the kernel's default
    bool read_only = false;
    // Unset: libfuse's default (nosuid and nodev for a root mount).
    std::optional<bool> nosuid, nodev;
    bool noexec = false, sync = false, dirsync = false;
    Atime atime = Atime::relatime;
    bool nodiratime = false;
    // Applies one flag option ("ro", "nosuid", "strictatime", ...); false if
    // `name` is none.
    bool apply(const std::string& name);
    // Those libfuse 3.14 knows, for its mount option list.
    std::vector<std::string> libfuse_options() const;
    // Whether the atime flags need a change after mounting (libfuse 3.14
    // knows only noatime).
    bool atime_needs_remount() const { return atime == Atime::strictatime || nodiratime; }
};

struct Options {
    std::string source;
    std::string mountpoint;

    bool foreground = false;
    bool debug = false;
    bool single_threaded = false;
    unsigned threads = 0; // 0: default (see default_threads())
    std::string log_level = "info";
    CachePolicy cache = CachePolicy::auto_;
    SpliceMode splice = SpliceMode::read;
    bool splice_move = false;
    PassthroughMode passthrough = PassthroughMode::off;
    bool io_uring = false; // --io-uring: FUSE over io_uring where the kernel offers it
    // --timeout: seconds the kernel may trust names and attributes; unset:
    // the cache policy's (entry_timeout() in mount.cpp).
    std::optional<double> timeout;
    std::optional<uint64_t> max_reply; // bytes as given; validated against the kernel later

    // Options handed to libfuse's mount (allow_other, ro, fsname=..., ...).
    std::vector<std::string> fuse_options;
    bool allow_other = false;
    bool default_permissions = false;
    MountFlags flags;
    bool auto_unmount = false;
    bool remount = false; // -o remount: change the flags of the mount at MOUNTPOINT
    // The flag options as given, in order, and the long options given
    // (without dashes): what a remount is asked to change.
    std::vector<std::string> flag_options;
    std::vector<std::string> given;
    std::string fsname;  // defaults to the absolute SOURCE
    std::string subtype; // defaults to "splicefs"

    bool splice_reads() const { return splice == SpliceMode::read || splice == SpliceMode::all; }
    bool splice_writes() const { return splice == SpliceMode::write || splice == SpliceMode::all; }
    unsigned worker_threads() const;
};

enum class ParseStatus { ok, exit_success, error };

struct ParseResult {
    ParseStatus status = ParseStatus::ok;
    Options options;
    std::string message; // the error line, or --help / --version text
};

// Parses the mount form `splicefs [OPTIONS] SOURCE MOUNTPOINT [-o opts]`.
// argv[0] is the program name.
ParseResult parse_mount_args(const std::vector<std::string>& args);

// The long options that --help lists; tests compare them with the man page
// and the shell completions.
std::vector<std::string> long_option_names();

} // namespace splicefs
