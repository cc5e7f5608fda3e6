#include "stats_server.hpp"

#include "version.hpp"

#include "stats_format.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace splicefs {

std::string stats_socket_dir(uid_t uid) {
    if (uid == 0) return "/run/splicefs";
    const char* runtime = std::getenv("XDG_RUNTIME_DIR");
    if (runtime && *runtime) return std::string(runtime) + "/splicefs";
    return "/tmp/splicefs-" + std::to_string(uid);
}

std::string stats_socket_path(uid_t uid, dev_t dev) {
    return stats_socket_dir(uid) + "/" + std::to_string(major(dev)) + ":" +
           std::to_string(minor(dev)) + ".sock";
}

SocketDirProblem make_private_socket_dir() {
    const uid_t uid = geteuid();
    const std::string dir = stats_socket_dir(uid);
    const std::string what = "stats socket directory " + dir;
    if (mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST)
        return {what + ": " + std::strerror(errno), false};
    struct stat st {};
    if (lstat(dir.c_str(), &st) < 0) return {what + ": " + std::strerror(errno), false};
    if (!S_ISDIR(st.st_mode)) return {what + " is not a directory", true};
    if (st.st_uid != uid)
        return {what + " belongs to uid " + std::to_string(st.st_uid) + ", not to uid " +
                    std::to_string(uid) + "; remove it or set XDG_RUNTIME_DIR",
                true};
    // Ours but open to others (made by an older version, or by hand): close it.
    if ((st.st_mode & 077) && chmod(dir.c_str(), 0700) < 0)
        return {what + ": " + std::strerror(errno), true};
    return {};
}

std::string StatsServer::start(dev_t dev) {
    dev_ = dev;
    if (auto problem = make_private_socket_dir(); !problem.error.empty()) return problem.error;
    path_ = stats_socket_path(geteuid(), dev);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path_.size() >= sizeof addr.sun_path) return path_ + ": path too long";
    std::strcpy(addr.sun_path, path_.c_str());
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) return std::string("socket: ") + std::strerror(errno);
    // Device numbers of FUSE mounts are reused: a socket of the same name
    // is left over from a daemon that died or is ending.
    unlink(path_.c_str());
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
        listen(listen_fd_, 16) < 0) {
        std::string error = path_ + ": " + std::strerror(errno);
        close(listen_fd_);
        listen_fd_ = -1;
        return error;
    }
    // Peers are checked by SO_PEERCRED; the mode keeps other users from connecting at all.
    chmod(path_.c_str(), 0600);
    struct stat st {};
    if (lstat(path_.c_str(), &st) == 0) socket_ino_ = st.st_ino;
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
    thread_ = std::thread([this] { serve(); });
    return {};
}

void StatsServer::stop() {
    if (thread_.joinable()) {
        const uint64_t one = 1;
        (void)!write(stop_fd_, &one, sizeof one);
        thread_.join();
    }
    if (listen_fd_ >= 0) {
        close(listen_fd_);
        listen_fd_ = -1;
        // Only our own socket: by now the next mount may have this device
        // number, and its daemon this name.
        struct stat st {};
        if (lstat(path_.c_str(), &st) == 0 && st.st_ino == socket_ino_) unlink(path_.c_str());
    }
    if (stop_fd_ >= 0) {
        close(stop_fd_);
        stop_fd_ = -1;
    }
    if (reserve_fd_ >= 0) {
        close(reserve_fd_);
        reserve_fd_ = -1;
    }
}

// At the fd limit a waiting client cannot be accepted and the listening
// socket stays readable: poll() would return at once, forever. The reserve
// fd makes room to accept that client and hang up on it.
void StatsServer::drop_client_at_fd_limit() {
    if (reserve_fd_ < 0) return;
    close(reserve_fd_);
    const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client >= 0) close(client);
    reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

void StatsServer::serve() {
    while (true) {
        pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) continue;
        if (fds[1].revents) return;
        const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) {
            if (errno == EMFILE || errno == ENFILE) drop_client_at_fd_limit();
            continue;
        }
        ucred peer{};
        socklen_t len = sizeof peer;
        if (getsockopt(client, SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0 &&
            (peer.uid == 0 || peer.uid == geteuid())) {
            const std::string text = report();
            size_t sent = 0;
            while (sent < text.size()) {
                const ssize_t n =
                    send(client, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
                if (n <= 0) break;
                sent += static_cast<size_t>(n);
            }
        }
        close(client);
    }
}

std::string StatsServer::report() const {
    const Limits& l = fs_.limits;
    const Totals t = fs_.stats.totals();
    const auto now = std::chrono::system_clock::now();
    Report r;
    auto add = [&](const std::string& key, const auto& value) {
        if constexpr (std::is_convertible_v<decltype(value), std::string>)
            r.emplace_back(key, value);
        else
            r.emplace_back(key, std::to_string(value));
    };
    add("mountpoint", fs_.opts.mountpoint);
    add("version", SPLICEFS_VERSION);
    add("source", fs_.opts.source);
    add("pid", static_cast<long>(getpid()));
    add("uptime_seconds", std::chrono::duration<double>(now - fs_.stats.started).count());
    add("started_unix",
        std::chrono::duration_cast<std::chrono::seconds>(fs_.stats.started.time_since_epoch())
            .count());
    add("splice", l.splice_mode);
    add("splice_move", l.splice_move ? 1 : 0);
    add("cache", l.cache);
    add("timeout", fmt::format("{:g}", fs_.timeout));
    add("threads", l.threads);
    add("max_reply", l.max_reply);
    add("max_reply_requested", l.max_reply_requested);
    add("max_reply_clamp_reason", l.clamp_reason);
    add("max_read", l.max_read);
    add("max_write", l.max_write);
    add("max_pages", l.max_pages);
    add("pipe_size", l.pipe_size);
    add("readahead", l.readahead);
    add("inodes", fs_.inodes.size());
    add("open_files", fs_.open_files.size());
    add("open_dirs", fs_.open_dirs.size());
    const auto fds = fs_.inodes.fd_stats();
    add("inode_fds", fds.open);
    add("inode_fd_budget", fds.budget);
    add("inode_fds_reopened", fds.reopened);
    add("inode_identity", fds.file_handles ? "file handles" : "names");
    add("fd_limit", l.fd_limit);
    add("kernel_protocol", fs_.initialized ? fs_.kernel_protocol : std::string());
    add("transport", fs_.uring.state());
    add("io_uring_requests", fs_.uring.requests());
    const Passthrough& pt = fs_.passthrough;
    add("passthrough", to_string(fs_.opts.passthrough));
    add("passthrough_state", pt.state());
    add("direct_io_mmap", pt.direct_io_mmap() ? 1 : 0);
    add("passthrough_backing_ids", pt.backing_ids());
    add("passthrough_refused_errno", pt.last_refusal());
    uint64_t data_path_opens = 0;
    for (size_t i = 1; i < open_path_count; ++i)
        data_path_opens += pt.opens(static_cast<OpenPath>(i));
    add("opens.passthrough", pt.opens(OpenPath::passthrough));
    add("opens.data_path", data_path_opens);
    for (size_t i = 1; i < open_path_count; ++i)
        add(std::string("opens.data_path_reasons.") + to_string(static_cast<OpenPath>(i)),
            pt.opens(static_cast<OpenPath>(i)));
    auto add_direction = [&](const std::string& prefix, const DirectionTotals& d,
                             const char* unit) {
        add(prefix + "." + unit, d.count());
        add(prefix + ".bytes", d.bytes());
        add(prefix + ".spliced_" + unit, d.spliced_count);
        add(prefix + ".spliced_bytes", d.spliced_bytes);
        add(prefix + ".copied_" + unit, d.copied_count);
        add(prefix + ".copied_bytes", d.copied_bytes);
        for (size_t i = 0; i < copy_reason_count; ++i)
            add(prefix + ".copy_reasons." + to_string(static_cast<CopyReason>(i)),
                d.copy_reasons[i]);
    };
    for (size_t i = 0; i < opcode_slots; ++i)
        if (const char* name = opcode_name(i); name && t.requests[i])
            add(std::string("requests.") + name, t.requests[i]);
    add_direction("read", t.read, "replies");
    add("read.full_size_replies", t.read_full_size);
    for (size_t i = 0; i < histogram_buckets; ++i)
        if (t.read_sizes[i])
            add("read.size_histogram." + std::to_string(uint64_t{1} << i), t.read_sizes[i]);
    add_direction("write", t.write, "requests");
    return encode_report(r);
}

} // namespace splicefs
