// Start-up and shutdown of a mount, in the order that keeps errors visible:
// check arguments, mount, only then daemonize (so a failed mount exits
// non-zero in the user's process), only after the fork start threads, wait
// until the kernel has initialized the mount, then report success.
#include "mount.hpp"

#include "remount.hpp"

#include "data_path.hpp"
#include "filesystem.hpp"
#include "log.hpp"
#include "stats_command.hpp"
#include "stats_server.hpp"
#include "util/mountinfo.hpp"
#include "util/size.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

namespace splicefs {

namespace {

struct MountError {
    int code;
    std::string message;
};

std::string absolute(const std::string& path) {
    char resolved[PATH_MAX];
    return realpath(path.c_str(), resolved) ? std::string(resolved) : std::string();
}

std::string describe_errno(int err) {
    return std::strerror(err);
}

// Checks SOURCE and MOUNTPOINT before anything is mounted.
std::optional<MountError> check_paths(Options& opts) {
    struct stat st {};
    if (stat(opts.source.c_str(), &st) < 0)
        return MountError{exit_code::mount_failed,
                          "source '" + opts.source + "': " + describe_errno(errno)};
    if (!S_ISDIR(st.st_mode) && !S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode))
        return MountError{exit_code::mount_failed,
                          "source '" + opts.source +
                              "' is not a directory, block device or regular file"};
    if (access(opts.source.c_str(), S_ISDIR(st.st_mode) ? R_OK | X_OK : R_OK) < 0)
        return MountError{exit_code::mount_failed,
                          "source '" + opts.source + "' is not readable: " + describe_errno(errno)};
    opts.source = absolute(opts.source);

    struct stat mst {};
    if (stat(opts.mountpoint.c_str(), &mst) < 0)
        return MountError{exit_code::mount_failed,
                          "mountpoint '" + opts.mountpoint + "': " + describe_errno(errno) +
                              (errno == ENOTCONN
                                   ? " (a FUSE mount whose daemon is gone: unmount it with "
                                     "'fusermount3 -u " +
                                         opts.mountpoint + "')"
                                   : "")};
    if (!S_ISDIR(mst.st_mode) && !(S_ISREG(mst.st_mode) && !S_ISDIR(st.st_mode)))
        return MountError{exit_code::mount_failed,
                          "mountpoint '" + opts.mountpoint + "' is not a directory" +
                              (S_ISREG(mst.st_mode)
                                   ? " (a file can only be the mountpoint of a single-file SOURCE)"
                                   : "")};
    opts.mountpoint = absolute(opts.mountpoint);
    // The daemon would reach its own mount through SOURCE: lookups loop
    // (ELOOP), and files it holds there keep the mount busy for ever.
    if (S_ISDIR(st.st_mode) &&
        (opts.mountpoint == opts.source || opts.mountpoint.rfind(opts.source + "/", 0) == 0 ||
         opts.source == "/"))
        return MountError{exit_code::mount_failed, "mountpoint '" + opts.mountpoint +
                                                       "' is inside source '" + opts.source +
                                                       "': the mount would contain itself"};
    if (auto existing = util::find_mount(opts.mountpoint);
        existing && existing->fstype == "fuse.splicefs") {
        std::string why;
        const bool gone =
            !ask_daemon(opts.mountpoint, why) && why.find("daemon is gone") != std::string::npos;
        return MountError{exit_code::mount_failed,
                          "mountpoint '" + opts.mountpoint + "' is already a splicefs mount (of " +
                              existing->source + ")" +
                              (gone ? " whose daemon is gone: unmount it with 'fusermount3 -u " +
                                          opts.mountpoint + "'"
                                    : "")};
    }
    if (access("/dev/fuse", R_OK | W_OK) < 0)
        return MountError{exit_code::mount_failed,
                          "cannot use /dev/fuse: " + describe_errno(errno)};
    return std::nullopt;
}

// A block device or disk image as SOURCE: one file, named after SOURCE in a
// directory mountpoint, or the mountpoint itself when that is a file. A
// device or image the daemon cannot write is mounted read-only.
std::optional<SingleFile> describe_single_file(Options& opts, const struct stat& st) {
    SingleFile file;
    file.dev = st.st_dev;
    file.ino = st.st_ino;
    file.block_device = S_ISBLK(st.st_mode);
    struct stat mst {};
    stat(opts.mountpoint.c_str(), &mst);
    if (S_ISDIR(mst.st_mode)) file.name = opts.source.substr(opts.source.find_last_of('/') + 1);
    bool writable = access(opts.source.c_str(), W_OK) == 0;
    if (file.block_device) {
        util::Fd dev(::open(opts.source.c_str(), O_RDONLY | O_CLOEXEC));
        uint64_t size = 0;
        int read_only = 0;
        if (!dev || ioctl(dev.get(), BLKGETSIZE64, &size) < 0) {
            std::fprintf(stderr, "splicefs: source '%s': cannot read the device size: %s\n",
                         opts.source.c_str(), std::strerror(errno));
            return std::nullopt;
        }
        if (size == 0) {
            std::fprintf(stderr,
                         "splicefs: source '%s' is a block device of size 0 (a loop device "
                         "with no file attached?)\n",
                         opts.source.c_str());
            return std::nullopt;
        }
        if (ioctl(dev.get(), BLKROGET, &read_only) == 0 && read_only) writable = false;
        file.device_size = size;
    }
    if (!writable && !opts.flags.read_only) {
        spdlog::info("{} is not writable: mounting read-only", opts.source);
        opts.flags.read_only = true;
    }
    return file;
}

// libfuse's own option parser takes the mount options as one -o list.
std::string escape_option(const std::string& value) {
    std::string out;
    for (char c : value) {
        if (c == ',' || c == '\\') out += '\\';
        out += c;
    }
    return out;
}

std::string libfuse_mount_options(const Options& opts, const Limits& limits) {
    std::string list =
        "fsname=" + escape_option(opts.fsname.empty() ? opts.source : opts.fsname) +
        ",subtype=" + escape_option(opts.subtype.empty() ? "splicefs" : opts.subtype) +
        ",max_read=" + std::to_string(limits.max_read);
    for (const auto& option : opts.flags.libfuse_options())
        list += "," + option;
    for (const auto& option : opts.fuse_options)
        list += "," + option;
    // Without default_permissions every user of an allow_other mount would
    // act with the daemon's rights.
    if (opts.allow_other && !opts.default_permissions) list += ",default_permissions";
    return list;
}

// The bdi of a FUSE mount is named after its device number; its readahead
// decides how large the READ requests of a sequential buffered read get.
uint64_t set_readahead(const std::string& mountpoint, uint64_t bytes) {
    struct stat st {};
    if (stat(mountpoint.c_str(), &st) < 0) return 0;
    const std::string path = "/sys/class/bdi/" + std::to_string(major(st.st_dev)) + ":" +
                             std::to_string(minor(st.st_dev)) + "/read_ahead_kb";
    {
        std::ofstream out(path);
        out << bytes / 1024;
    }
    std::ifstream in(path);
    uint64_t kb = 0;
    in >> kb;
    return kb * 1024;
}

// Aborts the FUSE connection of the mount with device `dev` through fusectl:
// every request fails and the workers see ENODEV.
bool abort_connection(dev_t dev) {
    std::ofstream abort("/sys/fs/fuse/connections/" + std::to_string(minor(dev)) + "/abort");
    abort << "1";
    abort.flush();
    return abort.good();
}

// Lazily detaches the mount; the kernel then ends the connection once no file
// is open on it, and the workers see ENODEV.
void detach(const std::string& mountpoint) {
    if (geteuid() == 0) {
        if (umount2(mountpoint.c_str(), MNT_DETACH) < 0 && errno != EINVAL)
            spdlog::warn("unmounting {}: {}", mountpoint, std::strerror(errno));
        return;
    }
    const pid_t pid = fork();
    if (pid == 0) {
        execlp("fusermount3", "fusermount3", "-u", "-z", "-q", "--", mountpoint.c_str(), nullptr);
        _exit(127);
    }
    if (pid > 0) waitpid(pid, nullptr, 0);
}

bool still_mounted(const std::string& mountpoint, dev_t dev) {
    const auto entry = util::find_mount(mountpoint);
    return entry && entry->major == major(dev) && entry->minor == minor(dev);
}

// Parent side of daemonizing: waits for the daemon to report, then exits
// with its status. The daemon writes one byte (its exit code) and, on
// failure, the error line.
[[noreturn]] void wait_for_daemon(int report_fd) {
    char code = exit_code::system;
    std::string message;
    if (::read(report_fd, &code, 1) == 1) {
        char buf[1024];
        ssize_t n;
        while ((n = ::read(report_fd, buf, sizeof buf)) > 0)
            message.append(buf, static_cast<size_t>(n));
    } else {
        message = "the daemon exited before the mount was ready";
    }
    if (!message.empty()) std::fprintf(stderr, "splicefs: %s\n", message.c_str());
    _exit(code);
}

// Redirects stderr into a pipe until finish(), which returns what arrived
// (last line, trimmed).
class CapturedStderr {
  public:
    explicit CapturedStderr(bool enabled) {
        int fds[2];
        if (!enabled || pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) return;
        saved_ = dup(STDERR_FILENO);
        dup2(fds[1], STDERR_FILENO);
        ::close(fds[1]);
        read_end_ = fds[0];
    }
    ~CapturedStderr() { finish(); }
    CapturedStderr(const CapturedStderr&) = delete;
    CapturedStderr& operator=(const CapturedStderr&) = delete;

    std::string finish() {
        if (saved_ < 0) return {};
        dup2(saved_, STDERR_FILENO);
        ::close(saved_);
        saved_ = -1;
        std::string text;
        char buf[4096];
        ssize_t n;
        while ((n = ::read(read_end_, buf, sizeof buf)) > 0)
            text.append(buf, static_cast<size_t>(n));
        ::close(read_end_);
        while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
            text.pop_back();
        const auto last_line = text.rfind('\n');
        return last_line == std::string::npos ? text : text.substr(last_line + 1);
    }

  private:
    int saved_ = -1;
    int read_end_ = -1;
};

class Reporter {
  public:
    explicit Reporter(int fd) : fd_(fd) {}
    void report(int code, const std::string& message) {
        if (fd_ < 0) {
            if (!message.empty()) std::fprintf(stderr, "splicefs: %s\n", message.c_str());
            return;
        }
        const char byte = static_cast<char>(code);
        (void)!::write(fd_, &byte, 1);
        (void)!::write(fd_, message.data(), message.size());
        ::close(fd_);
        fd_ = -1;
    }

  private:
    int fd_;
};

// Each inode the kernel holds is an open fd here. Shells and systemd start
// programs with a soft limit of 1024 and a far higher hard one: take it all.
uint64_t raise_fd_limit() {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) < 0) return 1024;
    if (limit.rlim_cur < limit.rlim_max) {
        const rlim_t wanted = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &limit) < 0) limit.rlim_cur = wanted;
    }
    return limit.rlim_cur;
}

void redirect_stdio_to_null() {
    const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) return;
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 2) ::close(null);
}

} // namespace

// A daemon keeps none of the descriptors it was started with (daemon(7)):
// one inherited from a script (a flock(1) lock, a pipe) would otherwise stay
// held for the mount's life. Standard input, output and error stay (they
// go to /dev/null once mounted), as does a /dev/fd/N that names SOURCE or
// MOUNTPOINT (mount.fuse3 can pass an open /dev/fuse that way).
void close_inherited_fds(const Options& opts) {
    std::vector<int> inherited;
    if (DIR* dir = opendir("/proc/self/fd")) {
        while (const dirent* entry = readdir(dir)) {
            const int fd = std::atoi(entry->d_name);
            if (fd > 2 && fd != dirfd(dir)) inherited.push_back(fd);
        }
        closedir(dir);
    }
    for (const int fd : inherited) {
        const std::string name = "/dev/fd/" + std::to_string(fd);
        if (opts.source != name && opts.mountpoint != name) ::close(fd);
    }
}

namespace {

// A checked SOURCE, opened: the root of the tree the mount shows, and for a
// single-file source the file itself.
struct Source {
    util::Fd root_fd;
    std::optional<SingleFile> single_file;
    util::Fd single_file_fd; // O_PATH
};

// Phase 1: everything that can be refused before anything is opened.
std::optional<int> check(Options& opts) {
    if (auto error = check_paths(opts)) {
        std::fprintf(stderr, "splicefs: %s\n", error->message.c_str());
        return error->code;
    }
    if (opts.flags.atime_needs_remount() && geteuid() != 0) {
        std::fprintf(stderr, "splicefs: -o strictatime, norelatime and nodiratime need a mount by "
                             "root (libfuse and fusermount3 cannot set them)\n");
        return exit_code::usage;
    }
    // Before mounting: a socket directory another user controls is refused
    // with the mount, not discovered after it.
    if (auto problem = make_private_socket_dir(); problem.unsafe) {
        std::fprintf(stderr, "splicefs: %s\n", problem.error.c_str());
        return exit_code::mount_failed;
    }
    return std::nullopt;
}

// Phase 2: SOURCE opened, as a tree or as one file.
std::optional<Source> open_source(Options& opts) {
    Source source;
    util::Fd source_fd(::open(opts.source.c_str(), O_PATH | O_CLOEXEC));
    struct stat st {};
    if (!source_fd || fstat(source_fd.get(), &st) < 0) {
        std::fprintf(stderr, "splicefs: source '%s': %s\n", opts.source.c_str(),
                     std::strerror(errno));
        return std::nullopt;
    }
    if (S_ISDIR(st.st_mode)) {
        source.root_fd = std::move(source_fd);
        return source;
    }
    source.single_file = describe_single_file(opts, st);
    if (!source.single_file) return std::nullopt;
    if (source.single_file->name.empty()) {
        source.root_fd.reset(fcntl(source_fd.get(), F_DUPFD_CLOEXEC, 0)); // the mount is the file
    } else {
        // The root stands for the mountpoint directory; its fd is never
        // used to reach anything (see Filesystem::is_synthetic_root).
        source.root_fd.reset(::open(opts.mountpoint.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    }
    source.single_file_fd = std::move(source_fd);
    return source;
}

void warn_about_limits(const Options& opts, const Limits& limits) {
    if (!limits.rounding.empty()) spdlog::warn("{}", limits.rounding);
    if (limits.clamp_reason.empty()) return;
    const std::string line =
        "max reply " + util::exact_size(limits.max_reply) + " instead of " +
        util::exact_size(limits.max_reply_requested ? limits.max_reply_requested
                                                    : limits.max_reply + 4096) +
        ": " + limits.clamp_reason;
    // Asked for: say so. Not asked for: the default is "largest that splices".
    if (opts.max_reply)
        spdlog::warn("{}", line);
    else
        spdlog::debug("{}", line);
}

double entry_timeout(CachePolicy cache) {
    switch (cache) {
    case CachePolicy::auto_:
        return 1.0;
    case CachePolicy::always:
        return 86400.0;
    case CachePolicy::never:
        return 0.0;
    }
    return 1.0;
}

// Phase 3: the filesystem object with the limits settled for this machine.
std::unique_ptr<Filesystem> make_filesystem(const Options& opts, Source source) {
    // Half the fds stay for open files, pipes and sockets; the inode store
    // keeps within the other half (see inode.hpp).
    const uint64_t fd_limit = raise_fd_limit();
    auto fs = std::make_unique<Filesystem>(opts, std::move(source.root_fd), fd_limit / 2, true);
    fs->single_file = source.single_file;
    fs->single_file_fd = std::move(source.single_file_fd);
    if (auto error = settle_limits(opts, fs->limits); !error.empty()) {
        std::fprintf(stderr, "splicefs: %s\n", error.c_str());
        return nullptr;
    }
    warn_about_limits(opts, fs->limits);
    fs->timeout = opts.timeout ? *opts.timeout : entry_timeout(opts.cache);
    fs->limits.fd_limit = fd_limit;
    fs->act_as_caller = geteuid() == 0;
    const int n = getgroups(0, nullptr);
    fs->daemon_groups.resize(static_cast<size_t>(std::max(n, 0)));
    if (n > 0) getgroups(n, fs->daemon_groups.data());
    return fs;
}

// The libfuse session, from creation to destruction: unmounted (if it was
// mounted) and destroyed exactly once, on whichever path the mount ends.
class Session {
  public:
    Session() = default;
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
    ~Session() { end(); }
    void end() {
        if (!session_) return;
        if (mounted_) fuse_session_unmount(session_);
        fuse_session_destroy(session_);
        session_ = nullptr;
    }
    fuse_session* get() const { return session_; }

    // Phase 4. Returns false after saying why on stderr.
    bool create(const Options& opts, Filesystem& fs) {
        const std::string mount_options = libfuse_mount_options(opts, fs.limits);
        std::vector<std::string> argv_storage{"splicefs", "-o", mount_options};
        if (opts.debug) argv_storage.emplace_back("-d");
        std::vector<char*> argv;
        argv.reserve(argv_storage.size());
        for (auto& arg : argv_storage)
            argv.push_back(arg.data());
        fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
        session_ = fuse_session_new(&args, &operations(), sizeof(fuse_lowlevel_ops), &fs);
        fuse_opt_free_args(&args); // libfuse may have copied and extended them
        if (session_) return true;
        std::fprintf(stderr, "splicefs: invalid mount options '%s': %s\n", mount_options.c_str(),
                     last_libfuse_message().c_str());
        return false;
    }

    // Phase 5. Returns false after saying why on stderr, in one line.
    bool mount(const Options& opts) {
        // A non-root mount goes through fusermount3, which prints its reasons
        // to our stderr: catch them so that a failure is still one line. (Not
        // with auto_unmount, where fusermount3 stays alive holding that stderr.)
        CapturedStderr fusermount_output(geteuid() != 0 && !opts.auto_unmount);
        const int result = fuse_session_mount(session_, opts.mountpoint.c_str());
        const std::string helper_said = fusermount_output.finish();
        mounted_ = result == 0;
        if (mounted_) return true;
        std::string why = helper_said.empty() ? last_libfuse_message() : helper_said;
        if (why.rfind("fuse: ", 0) == 0) why = why.substr(6);
        std::fprintf(stderr, "splicefs: cannot mount '%s' on '%s': %s\n", opts.source.c_str(),
                     opts.mountpoint.c_str(), why.empty() ? "mount failed" : why.c_str());
        return false;
    }

  private:
    fuse_session* session_ = nullptr;
    bool mounted_ = false;
};

// Phase 6: into the background, unless --foreground. Returns the fd to
// report the outcome on (-1 in the foreground); the parent never returns.
std::optional<int> daemonize(const Options& opts) {
    if (opts.foreground) return -1;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        std::fprintf(stderr, "splicefs: %s\n", std::strerror(errno));
        return std::nullopt;
    }
    const pid_t pid = fork();
    if (pid < 0) {
        std::fprintf(stderr, "splicefs: fork: %s\n", std::strerror(errno));
        return std::nullopt;
    }
    if (pid > 0) {
        ::close(fds[1]);
        wait_for_daemon(fds[0]);
    }
    ::close(fds[0]);
    setsid();
    if (chdir("/") < 0) { /* keeps working from the old directory */
    }
    log_to_syslog(opts.log_level);
    return fds[1];
}

// Signals are taken synchronously by the main thread; workers never see them.
util::Fd take_signals() {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    signal(SIGPIPE, SIG_IGN);
    return util::Fd(signalfd(-1, &signals, SFD_CLOEXEC));
}

// Phase 7, once the mount is usable: serves until the workers stop, which
// they do when the connection ends (unmount, abort). Returns whether it
// ended while still mounted and not by our unmount (a broken connection).
bool serve(const Options& opts, const Workers& workers, int signal_fd, int workers_exited,
           dev_t mount_dev) {
    bool detached = false, connection_lost = false;
    while (workers.running() > 0) {
        pollfd fds[2] = {{signal_fd, POLLIN, 0}, {workers_exited, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) continue;
        signalfd_siginfo info{};
        if ((fds[0].revents & POLLIN) && ::read(signal_fd, &info, sizeof info) == sizeof info) {
            if (detached) {
                // Files still open keep a lazily unmounted connection alive
                // (even the daemon's own, had it reached its mount): a
                // second signal ends it.
                spdlog::info("signal {} again: ending the connection of {}; files still open "
                             "there fail with ENOTCONN",
                             info.ssi_signo, opts.mountpoint);
                if (!abort_connection(mount_dev)) {
                    spdlog::shutdown();
                    std::_Exit(exit_code::ok); // closing /dev/fuse aborts the connection
                }
            } else {
                spdlog::info("signal {}: unmounting {}", info.ssi_signo, opts.mountpoint);
                detach(opts.mountpoint);
                detached = true;
            }
        }
        if (fds[1].revents & POLLIN) {
            uint64_t count;
            (void)!::read(workers_exited, &count, sizeof count);
            // A worker only stops when the connection is gone or broken. Gone
            // while still mounted and not by our unmount means it was broken
            // (aborted through fusectl): a failure. No mount may be left
            // that nobody serves.
            if (!detached && still_mounted(opts.mountpoint, mount_dev)) {
                spdlog::error("the FUSE connection of {} ended while it was mounted",
                              opts.mountpoint);
                connection_lost = true;
                detach(opts.mountpoint);
            }
            detached = true;
        }
    }
    return connection_lost;
}

} // namespace

int run_mount(Options opts) {
    // The kernel has applied the caller's umask already, or leaves it to
    // CallerUmask (POSIX ACLs).
    umask(0);
    if (!opts.foreground) close_inherited_fds(opts);
    log_to_stderr(opts.log_level);

    if (auto refused = check(opts)) return *refused;
    auto source = open_source(opts);
    if (!source) return exit_code::mount_failed;
    const auto fs = make_filesystem(opts, std::move(*source));
    if (!fs) return exit_code::usage;
    Session session;
    if (!session.create(opts, *fs)) return exit_code::usage;
    if (!session.mount(opts)) return exit_code::mount_failed;

    // Mounted: from here on, every way out unmounts (Session).
    fs->passthrough.install(session.get(), fs->daemon_groups);
    const auto report_fd = daemonize(opts);
    if (!report_fd) return exit_code::system;
    Reporter reporter(*report_fd);
    forward_libfuse_messages(true);
    const util::Fd signal_fd = take_signals();
    const util::Fd workers_exited(eventfd(0, EFD_CLOEXEC));
    const unsigned threads = opts.worker_threads();
    Workers workers(*fs, session.get(), threads, workers_exited.get());
    StatsServer stats_server(*fs);

    // The first request on the mount waits for INIT, so once this stat
    // returns the mount is usable.
    struct stat root_st {};
    std::string failure;
    if (stat(opts.mountpoint.c_str(), &root_st) < 0 || !fs->initialized)
        failure = "the kernel did not initialize the mount: " + describe_errno(errno);
    else if (opts.flags.atime_needs_remount())
        if (std::string error = set_atime_flags(opts.mountpoint, opts.flags); !error.empty())
            failure = "setting the atime flags: " + error;
    if (!failure.empty()) {
        reporter.report(exit_code::mount_failed, failure);
        detach(opts.mountpoint);
        workers.join();
        fs->uring.stop();
        return exit_code::mount_failed;
    }
    fs->limits.readahead = set_readahead(opts.mountpoint, fs->limits.max_reply);
    if (std::string error = stats_server.start(root_st.st_dev); !error.empty())
        spdlog::warn("stats will not be available: {}", error);
    spdlog::info("mounted {} on {} (splice {}, max reply {}, {} threads, requests by {})",
                 opts.source, opts.mountpoint, fs->limits.splice_mode,
                 util::exact_size(fs->limits.max_reply), threads, fs->uring.state());
    reporter.report(exit_code::ok, "");
    if (!opts.foreground) redirect_stdio_to_null();

    const bool connection_lost =
        serve(opts, workers, signal_fd.get(), workers_exited.get(), root_st.st_dev);
    workers.join();
    fs->uring.stop(); // its queues end with the connection, as the workers do
    stats_server.stop();
    session.end();
    const bool failed = workers.failed() || connection_lost;
    if (failed)
        spdlog::error("unmounted {} after a failure", opts.mountpoint);
    else
        spdlog::info("unmounted {}", opts.mountpoint);
    spdlog::shutdown();
    return failed ? exit_code::system : exit_code::ok;
}

} // namespace splicefs
