// `splicefs stats`: asks each running splicefs daemon for its counters and
// prints them for people (default), as JSON or in Prometheus text format.
#include "stats_command.hpp"

#include "options.hpp"
#include "stats.hpp"
#include "stats_format.hpp"
#include "stats_server.hpp"
#include "util/mountinfo.hpp"
#include "util/size.hpp"

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstring>
#include <ctime>
#include <map>
#include <optional>
#include <thread>

namespace splicefs {

namespace {

constexpr const char* mount_type = "fuse.splicefs";

struct MountReport {
    util::MountEntry mount;
    Report report;
};

uid_t mount_owner(const util::MountEntry& mount) {
    const auto pos = mount.super_options.find("user_id=");
    if (pos == std::string::npos) return 0;
    return static_cast<uid_t>(std::stoul(mount.super_options.substr(pos + 8)));
}

std::vector<std::string> socket_candidates(const util::MountEntry& mount) {
    const dev_t dev = makedev(mount.major, mount.minor);
    const uid_t owner = mount_owner(mount);
    std::vector<std::string> paths;
    if (owner == geteuid()) paths.push_back(stats_socket_path(owner, dev));
    const std::string name =
        "/" + std::to_string(mount.major) + ":" + std::to_string(mount.minor) + ".sock";
    if (owner == 0) paths.push_back("/run/splicefs" + name);
    paths.push_back("/run/user/" + std::to_string(owner) + "/splicefs" + name);
    paths.push_back("/tmp/splicefs-" + std::to_string(owner) + name);
    return paths;
}

// A splicefs mount: of type fuse.splicefs, or another FUSE type (-o
// subtype=NAME) whose daemon has a splicefs stats socket.
bool is_splicefs_mount(const util::MountEntry& mount) {
    if (mount.fstype == mount_type) return true;
    if (mount.fstype.rfind("fuse.", 0) != 0) return false;
    for (const auto& path : socket_candidates(mount)) {
        struct stat st {};
        if (lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return true;
    }
    return false;
}

// Connects to the mount's daemon and reads its report, within one second.
std::optional<Report> fetch(const util::MountEntry& mount, std::string& error) {
    error = "no stats socket (is its daemon running?)";
    for (const auto& path : socket_candidates(mount)) {
        const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        timeval timeout{1, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
            if (errno == ECONNREFUSED)
                error = "its daemon is gone (" + path +
                        " refuses connections): unmount it with 'fusermount3 -u " +
                        mount.mountpoint + "'";
            else if (errno != ENOENT)
                error = path + ": " + std::strerror(errno);
            close(fd);
            continue;
        }
        // Only the mount's owner or root may serve its figures: a socket
        // another user put in the path is not believed.
        ucred peer{};
        socklen_t peer_len = sizeof peer;
        const uid_t owner = mount_owner(mount);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) < 0 ||
            (peer.uid != owner && peer.uid != 0)) {
            error = path + ": served by uid " + std::to_string(peer.uid) +
                    ", not by the mount's owner (uid " + std::to_string(owner) + ")";
            close(fd);
            continue;
        }
        std::string text;
        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0)
            text.append(buf, static_cast<size_t>(n));
        const int read_errno = errno;
        close(fd);
        if (n < 0) {
            error = read_errno == EAGAIN ? "the daemon did not answer within 1 s"
                                         : std::strerror(read_errno);
            return std::nullopt;
        }
        if (text.empty()) {
            error =
                "the daemon refused the request (only the mounting user and root may read stats)";
            return std::nullopt;
        }
        return decode_report(text);
    }
    return std::nullopt;
}

uint64_t number(const Report& r, const std::string& key) {
    const std::string v = report_value(r, key);
    return v.empty() ? 0 : std::stoull(v);
}

std::string percent(uint64_t part, uint64_t whole) {
    if (whole == 0) return "-";
    return fmt::format("{:.1f}%", 100.0 * static_cast<double>(part) / static_cast<double>(whole));
}

std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\')
            out += '\\', out += static_cast<char>(c);
        else if (c < 0x20)
            out += fmt::format("\\u{:04x}", c);
        else
            out += static_cast<char>(c);
    }
    return out + "\"";
}

// Keys below `prefix.` as (suffix, value).
std::vector<std::pair<std::string, std::string>> with_prefix(const Report& r,
                                                             const std::string& prefix) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [k, v] : r)
        if (k.rfind(prefix + ".", 0) == 0) out.emplace_back(k.substr(prefix.size() + 1), v);
    return out;
}

std::string json_counter_object(const Report& r, const std::string& prefix) {
    std::string out = "{";
    bool first = true;
    for (const auto& [k, v] : with_prefix(r, prefix)) {
        out += (first ? "" : ", ") + json_string(k) + ": " + v;
        first = false;
    }
    return out + "}";
}

std::string json_direction(const Report& r, const std::string& dir, const std::string& unit,
                           bool histogram) {
    std::string out = "{";
    for (const char* field : {"", "spliced_", "copied_"}) {
        out += fmt::format("\"{0}{1}\": {2}, \"{0}bytes\": {3}, ", field, unit,
                           number(r, dir + "." + field + unit),
                           number(r, dir + "." + field + "bytes"));
    }
    out += "\"copy_reasons\": " + json_counter_object(r, dir + ".copy_reasons");
    if (histogram) {
        out += ", \"full_size_replies\": " + std::to_string(number(r, dir + ".full_size_replies"));
        out += ", \"size_histogram\": " + json_counter_object(r, dir + ".size_histogram");
    }
    return out + "}";
}

std::string json_mount(const Report& r) {
    std::string out = "{";
    out += "\"mountpoint\": " + json_string(report_value(r, "mountpoint"));
    out += ", \"source\": " + json_string(report_value(r, "source"));
    out += ", \"pid\": " + report_value(r, "pid");
    out += ", \"uptime_seconds\": " + report_value(r, "uptime_seconds");
    out += ", \"splice\": " + json_string(report_value(r, "splice"));
    out += ", \"splice_move\": " + std::string(number(r, "splice_move") ? "true" : "false");
    out += ", \"cache\": " + json_string(report_value(r, "cache"));
    const std::string timeout = report_value(r, "timeout");
    out += ", \"timeout\": " + (timeout.empty() ? std::string("null") : timeout);
    out += ", \"threads\": " + report_value(r, "threads");
    for (const char* key :
         {"max_reply", "max_reply_requested", "max_read", "max_write", "max_pages", "pipe_size",
          "readahead", "inodes", "open_files", "open_dirs", "inode_fds", "inode_fd_budget",
          "inode_fds_reopened", "fd_limit"})
        out += fmt::format(", \"{}\": {}", key, number(r, key));
    out += ", \"inode_identity\": " + json_string(report_value(r, "inode_identity"));
    out += ", \"kernel_protocol\": " + json_string(report_value(r, "kernel_protocol"));
    out += ", \"transport\": " + json_string(report_value(r, "transport"));
    out += fmt::format(", \"io_uring_requests\": {}", number(r, "io_uring_requests"));
    out += ", \"requests\": " + json_counter_object(r, "requests");
    out += ", \"passthrough\": " + json_string(report_value(r, "passthrough"));
    out += ", \"passthrough_state\": " + json_string(report_value(r, "passthrough_state"));
    out += ", \"direct_io_mmap\": " + std::string(number(r, "direct_io_mmap") ? "true" : "false");
    out +=
        fmt::format(", \"passthrough_backing_ids\": {}, \"passthrough_refused_errno\": {}",
                    number(r, "passthrough_backing_ids"), number(r, "passthrough_refused_errno"));
    out += fmt::format(", \"opens\": {{\"passthrough\": {}, \"data_path\": {}, "
                       "\"data_path_reasons\": {}}}",
                       number(r, "opens.passthrough"), number(r, "opens.data_path"),
                       json_counter_object(r, "opens.data_path_reasons"));
    out +=
        ", \"max_reply_clamp_reason\": " + json_string(report_value(r, "max_reply_clamp_reason"));
    out += ", \"read\": " + json_direction(r, "read", "replies", true);
    out += ", \"write\": " + json_direction(r, "write", "requests", false);
    return out + "}";
}

// Rates over the last --watch interval.
std::string json_interval(const Report& now, const Report& before, double seconds) {
    auto delta = [&](const std::string& key) { return number(now, key) - number(before, key); };
    const double read_bytes = static_cast<double>(delta("read.bytes"));
    const double spliced = static_cast<double>(delta("read.spliced_bytes"));
    const double write_bytes = static_cast<double>(delta("write.bytes"));
    return fmt::format(
        "{{\"seconds\": {}, \"read_bytes_per_second\": {:.0f}, \"read_replies\": {}, "
        "\"read_spliced_share_of_bytes\": {}, \"write_bytes_per_second\": {:.0f}, "
        "\"write_requests\": {}}}",
        seconds, read_bytes / seconds, delta("read.replies"),
        read_bytes > 0 ? fmt::format("{:.4f}", spliced / read_bytes) : "null",
        write_bytes / seconds, delta("write.requests"));
}

// Which opens the kernel serves itself and why the others reach the daemon.
std::string human_opens(const Report& r) {
    auto delta = [&](const std::string& key) { return number(r, key); };
    std::string out = fmt::format("  passthrough {}\n", report_value(r, "passthrough_state"));
    const uint64_t kernel = delta("opens.passthrough"), daemon = delta("opens.data_path");
    if (kernel + daemon == 0) return out;
    out += fmt::format("  OPEN  {} by the kernel (passthrough: their bytes are not seen or counted "
                       "here), {} by the data path",
                       kernel, daemon);
    std::string reasons;
    for (const auto& [k, v] : with_prefix(r, "opens.data_path_reasons")) {
        const uint64_t n = delta("opens.data_path_reasons." + k);
        if (n) reasons += fmt::format("{}{} {}", reasons.empty() ? "" : ", ", k, n);
    }
    if (!reasons.empty()) out += " (" + reasons + ")";
    return out + "\n";
}

// Requests by opcode, the most frequent first: the round trips made.
std::string human_requests(const Report& r) {
    auto counts = with_prefix(r, "requests");
    if (counts.empty()) return "";
    std::vector<std::pair<uint64_t, std::string>> by_count;
    uint64_t total = 0;
    for (const auto& [name, value] : counts) {
        by_count.emplace_back(std::stoull(value), name);
        total += by_count.back().first;
    }
    std::sort(by_count.begin(), by_count.end(),
              [](const auto& a, const auto& b) { return a.first > b.first; });
    std::string out = fmt::format("  requests {} (", total);
    for (size_t i = 0; i < by_count.size(); ++i)
        out += fmt::format("{}{} {}", i ? ", " : "", by_count[i].second, by_count[i].first);
    return out + ")\n";
}

// One mount's line of --watch: rates over the last interval.
std::string watch_line(const char* clock, const Report& now, const Report& before,
                       double interval) {
    // The time between the two samples as the daemon saw it, not the
    // interval asked for: an answer may come late.
    auto uptime = [](const Report& r) {
        const std::string text = report_value(r, "uptime_seconds");
        return text.empty() ? 0.0 : std::stod(text);
    };
    const double measured = uptime(now) - uptime(before);
    const double seconds = measured > 0 ? measured : interval;
    auto delta = [&](const std::string& key) { return number(now, key) - number(before, key); };
    auto per_second = [&](uint64_t n) { return static_cast<double>(n) / seconds; };
    const uint64_t read_bytes = delta("read.bytes"), spliced = delta("read.spliced_bytes");
    std::string top = "-";
    uint64_t top_count = 0;
    for (const char* dir : {"read", "write"}) {
        for (const auto& [k, v] : with_prefix(now, std::string(dir) + ".copy_reasons")) {
            const uint64_t n = delta(std::string(dir) + ".copy_reasons." + k);
            if (n > top_count) {
                top_count = n;
                top = fmt::format("{} {} {}", dir, k, n);
            }
        }
    }
    const uint64_t kernel = delta("opens.passthrough"), opens = kernel + delta("opens.data_path");
    return fmt::format(
        "{:<8} {:>8.1f} {:>8.1f} {:>8.0f} {:>8.0f} {:>7} {:>7.0f} {:>5}  {:<24} {}\n", clock,
        per_second(read_bytes) / 1e6, per_second(delta("write.bytes")) / 1e6,
        per_second(delta("read.replies")), per_second(delta("write.requests")),
        read_bytes ? fmt::format("{:.1f}", 100.0 * static_cast<double>(spliced) /
                                               static_cast<double>(read_bytes))
                   : "-",
        per_second(opens),
        opens ? fmt::format("{:.0f}",
                            100.0 * static_cast<double>(kernel) / static_cast<double>(opens))
              : "-",
        top, report_value(now, "mountpoint"));
}

// The effective max reply and, if it is not what was asked for or the
// largest FUSE allows, why: said once, as a fact.
std::string max_reply_text(const Report& r) {
    std::string out = util::exact_size(number(r, "max_reply"));
    const std::string reason = report_value(r, "max_reply_clamp_reason");
    if (reason.empty()) return out;
    if (number(r, "max_reply_requested"))
        return out + " (not the " + util::exact_size(number(r, "max_reply_requested")) +
               " asked for: " + reason + ")";
    return out + " (the largest that splices here: " + reason + ")";
}

std::string human_mount(const Report& r, bool colour) {
    const std::string bold = colour ? "\033[1m" : "", reset = colour ? "\033[0m" : "";
    std::string out;
    const double up = std::stod(
        report_value(r, "uptime_seconds").empty() ? "0" : report_value(r, "uptime_seconds"));
    out += fmt::format("{}{}{}  source {}, pid {}, up {}s\n", bold, report_value(r, "mountpoint"),
                       reset, report_value(r, "source"), report_value(r, "pid"),
                       static_cast<uint64_t>(up));
    const uint64_t threads = number(r, "threads");
    out += fmt::format("  splice {}{}, cache {} (timeout {} s), {} thread{}\n",
                       report_value(r, "splice"), number(r, "splice_move") ? " (move)" : "",
                       report_value(r, "cache"), report_value(r, "timeout"), threads,
                       threads == 1 ? "" : "s");
    out += fmt::format("  max reply {}\n", max_reply_text(r));
    out += fmt::format("  transport {}", report_value(r, "transport"));
    if (const uint64_t n = number(r, "io_uring_requests")) out += fmt::format(" ({} so far)", n);
    out += "\n";
    out += fmt::format("  sizes: max_read {}, max_write {}, max_pages {}, pipe {}, readahead {}\n",
                       util::exact_size(number(r, "max_read")),
                       util::exact_size(number(r, "max_write")), number(r, "max_pages"),
                       util::exact_size(number(r, "pipe_size")),
                       util::exact_size(number(r, "readahead")));
    out += fmt::format("  inodes: {} held, known by {}; {} fds open of {} (fd limit {}), {} "
                       "reopened\n",
                       number(r, "inodes"), report_value(r, "inode_identity"),
                       number(r, "inode_fds"), number(r, "inode_fd_budget"), number(r, "fd_limit"),
                       number(r, "inode_fds_reopened"));
    out += fmt::format("  open now: {} files, {} directories\n", number(r, "open_files"),
                       number(r, "open_dirs"));
    out += human_opens(r);
    out += human_requests(r);
    auto direction = [&](const std::string& dir, const std::string& unit, const char* title) {
        auto delta = [&](const std::string& key) { return number(r, key); };
        const uint64_t count = delta(dir + "." + unit), bytes = delta(dir + ".bytes");
        const uint64_t sc = delta(dir + ".spliced_" + unit), sb = delta(dir + ".spliced_bytes");
        const uint64_t cc = delta(dir + ".copied_" + unit), cb = delta(dir + ".copied_bytes");
        out += fmt::format("  {}{:<6}{}{} {}, {}", bold, title, reset, count, unit,
                           util::human_bytes(bytes));
        out += fmt::format("\n         spliced {} ({}), {} ({})\n", sc, percent(sc, count),
                           util::human_bytes(sb), percent(sb, bytes));
        out += fmt::format("         copied  {} ({}), {} ({})\n", cc, percent(cc, count),
                           util::human_bytes(cb), percent(cb, bytes));
        std::string reasons;
        for (const auto& [k, v] : with_prefix(r, dir + ".copy_reasons")) {
            const uint64_t n = std::stoull(v);
            if (n) reasons += fmt::format("{}{} {}", reasons.empty() ? "" : ", ", k, n);
        }
        if (!reasons.empty()) out += "         copy reasons: " + reasons + "\n";
    };
    direction("read", "replies", "READ");
    std::string sizes;
    for (const auto& [k, v] : with_prefix(r, "read.size_histogram"))
        sizes += fmt::format("{}<={} {}", sizes.empty() ? "" : ", ",
                             util::exact_size(std::stoull(k)), v);
    if (!sizes.empty()) out += "         reply sizes: " + sizes + "\n";
    direction("write", "requests", "WRITE");
    return out;
}

std::string prometheus_label(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '\\' || c == '"')
            out += '\\', out += c;
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

// Prometheus's text format: one family at a time, a sample per mount.
class PrometheusText {
  public:
    explicit PrometheusText(const std::vector<MountReport>& reports) : reports_(reports) {}
    std::string& text() { return out_; }

    template <typename Each>
    void family(const std::string& name, const char* type, const char* help, Each each) {
        out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
        for (const auto& m : reports_)
            each(m.report,
                 "mountpoint=\"" + prometheus_label(report_value(m.report, "mountpoint")) + "\"");
    }
    // A counter by data path: spliced and copied.
    void by_path(const std::string& name, const char* help, const std::string& dir,
                 const std::string& what) {
        family(name, "counter", help, [&](const Report& r, const std::string& mp) {
            for (const char* path : {"spliced", "copied"})
                out_ += fmt::format("{}{{{},path=\"{}\"}} {}\n", name, mp, path,
                                    number(r, dir + "." + path + "_" + what));
        });
    }
    // A counter by label `label`, one sample per report key under `prefix`.
    void by_key(const std::string& name, const char* help, const std::string& prefix,
                const char* label) {
        family(name, "counter", help, [&](const Report& r, const std::string& mp) {
            for (const auto& [k, v] : with_prefix(r, prefix))
                out_ += fmt::format("{}{{{},{}=\"{}\"}} {}\n", name, mp, label, k, v);
        });
    }
    void gauge(const std::string& name, const char* help, const std::string& key) {
        family(name, "gauge", help, [&](const Report& r, const std::string& mp) {
            out_ += fmt::format("{}{{{}}} {}\n", name, mp, number(r, key));
        });
    }

  private:
    const std::vector<MountReport>& reports_;
    std::string out_;
};

void data_path_families(PrometheusText& p) {
    p.by_path("splicefs_read_replies_total", "READ replies sent, by path (spliced or copied).",
              "read", "replies");
    p.by_path("splicefs_read_bytes_total", "File bytes sent in READ replies, by path.", "read",
              "bytes");
    p.by_key("splicefs_read_copies_total", "READ replies copied, by reason.", "read.copy_reasons",
             "reason");
    p.by_path("splicefs_write_requests_total", "WRITE requests served, by path.", "write",
              "requests");
    p.by_path("splicefs_write_bytes_total", "File bytes written by WRITE requests, by path.",
              "write", "bytes");
    p.by_key("splicefs_write_copies_total", "WRITE requests copied, by reason.",
             "write.copy_reasons", "reason");
    p.by_key("splicefs_requests_total", "Requests received, by FUSE opcode.", "requests", "opcode");
    p.family("splicefs_opens_total", "counter",
             "Opens of regular files, by path: passthrough (the kernel serves the bytes, not "
             "counted here) or data_path.",
             [&](const Report& r, const std::string& mp) {
                 for (const char* path : {"passthrough", "data_path"})
                     p.text() += fmt::format("splicefs_opens_total{{{},path=\"{}\"}} {}\n", mp,
                                             path, number(r, std::string("opens.") + path));
             });
    p.by_key("splicefs_data_path_opens_total",
             "Opens served by the data path, by the reason they were not passed through.",
             "opens.data_path_reasons", "reason");
    // The same buckets for every mount at every scrape, as Prometheus wants:
    // le = 1, 2, 4, ... 2^31 bytes, then +Inf.
    p.family("splicefs_read_reply_size_bytes", "histogram", "Sizes of READ replies.",
             [&](const Report& r, const std::string& mp) {
                 std::string& out = p.text();
                 uint64_t cumulative = 0;
                 for (size_t bucket = 0; bucket < histogram_buckets; ++bucket) {
                     const std::string le = std::to_string(uint64_t{1} << bucket);
                     cumulative += number(r, "read.size_histogram." + le);
                     out +=
                         fmt::format("splicefs_read_reply_size_bytes_bucket{{{},le=\"{}\"}} {}\n",
                                     mp, le, cumulative);
                 }
                 out += fmt::format("splicefs_read_reply_size_bytes_bucket{{{},le=\"+Inf\"}} {}\n",
                                    mp, number(r, "read.replies"));
                 out += fmt::format("splicefs_read_reply_size_bytes_sum{{{}}} {}\n", mp,
                                    number(r, "read.bytes"));
                 out += fmt::format("splicefs_read_reply_size_bytes_count{{{}}} {}\n", mp,
                                    number(r, "read.replies"));
             });
}

void mount_families(PrometheusText& p) {
    p.gauge("splicefs_max_reply_bytes", "Largest READ reply and WRITE request in force.",
            "max_reply");
    p.gauge("splicefs_inodes", "Source inodes the kernel holds through the mount.", "inodes");
    p.gauge("splicefs_open_files", "Files open through the mount now.", "open_files");
    p.gauge("splicefs_open_dirs", "Directories open through the mount now.", "open_dirs");
    p.gauge("splicefs_inode_fds", "Inode file descriptors open now.", "inode_fds");
    p.gauge("splicefs_inode_fd_budget", "Inode file descriptors the daemon keeps open at most.",
            "inode_fd_budget");
    p.gauge("splicefs_fd_limit", "The daemon's file descriptor limit (RLIMIT_NOFILE).", "fd_limit");
    p.gauge("splicefs_passthrough_backing_files", "Backing files registered with the kernel now.",
            "passthrough_backing_ids");
    p.family("splicefs_info", "gauge", "The mount's configuration, as labels; always 1.",
             [&](const Report& r, const std::string& mp) {
                 p.text() += fmt::format(
                     "splicefs_info{{{},version=\"{}\",splice=\"{}\",cache=\"{}\","
                     "passthrough=\"{}\",transport=\"{}\",max_reply=\"{}\"}} 1\n",
                     mp, prometheus_label(report_value(r, "version")),
                     prometheus_label(report_value(r, "splice")),
                     prometheus_label(report_value(r, "cache")),
                     prometheus_label(report_value(r, "passthrough_state")),
                     prometheus_label(report_value(r, "transport")), number(r, "max_reply"));
             });
    p.family("splicefs_io_uring_requests_total", "counter",
             "Requests served through FUSE over io_uring (--io-uring).",
             [&](const Report& r, const std::string& mp) {
                 p.text() += fmt::format("splicefs_io_uring_requests_total{{{}}} {}\n", mp,
                                         number(r, "io_uring_requests"));
             });
    p.gauge("splicefs_start_time_seconds", "When the mount's daemon started (Unix time).",
            "started_unix");
}

std::string prometheus(const std::vector<MountReport>& reports) {
    PrometheusText p(reports);
    data_path_families(p);
    mount_families(p);
    return p.text();
}

enum class Format { human, json, prometheus };

} // namespace

std::optional<Report> ask_daemon(const std::string& mountpoint, std::string& error) {
    const auto mount = util::find_mount(mountpoint);
    if (!mount || mount->fstype.rfind("fuse", 0) != 0) {
        error = "not a FUSE mount";
        return std::nullopt;
    }
    return fetch(*mount, error);
}

// Writes `text` to a temporary file next to `path` and renames it into
// place: a reader sees the old file or the new one, never a part.
std::string write_atomically(const std::string& path, const std::string& text) {
    const std::string temporary = path + ".tmp." + std::to_string(getpid());
    FILE* f = std::fopen(temporary.c_str(), "w");
    if (!f) return std::strerror(errno);
    const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    const bool closed = std::fclose(f) == 0;
    if (!written || !closed || std::rename(temporary.c_str(), path.c_str()) != 0) {
        const int err = errno;
        std::remove(temporary.c_str());
        return std::strerror(err);
    }
    return {};
}

// --watch for people, as iostat and vmstat print: one header, then one line
// per mount per interval with that interval's rates. Returns the exit code.
int watch_lines(const std::vector<util::MountEntry>& mounts, double interval, bool tty,
                int status) {
    std::map<std::string, Report> before;
    for (const auto& m : mounts) {
        std::string error;
        if (auto report = fetch(m, error)) {
            before[m.mountpoint] = std::move(*report);
        } else {
            std::fprintf(stderr, "splicefs stats: %s: %s\n", m.mountpoint.c_str(), error.c_str());
            status = exit_code::stats_failed;
        }
    }
    if (before.empty()) return status == exit_code::ok ? exit_code::stats_failed : status;
    const std::string header = fmt::format(
        "{:<8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>5}  {:<24} {}\n", "time", "rMB/s", "wMB/s",
        "reads/s", "writes/s", "splice%", "opens/s", "pt%", "top copy reason", "mountpoint");
    // On a fixed schedule, so that slow answers do not stretch the intervals.
    auto next = std::chrono::steady_clock::now();
    const auto step = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(interval));
    for (unsigned frame = 0;; ++frame) {
        // A tty gets the header again now and then, as vmstat does.
        if (frame == 0 || (tty && frame % 20 == 0)) std::fputs(header.c_str(), stdout);
        next += step;
        std::this_thread::sleep_until(next);
        const std::time_t now = std::time(nullptr);
        char clock[16];
        std::strftime(clock, sizeof clock, "%H:%M:%S", std::localtime(&now));
        std::string out;
        for (const auto& m : mounts) {
            std::string error;
            auto report = fetch(m, error);
            auto it = before.find(m.mountpoint);
            if (!report || it == before.end()) continue;
            out += watch_line(clock, *report, it->second, interval);
            it->second = std::move(*report);
        }
        std::fputs(out.c_str(), stdout);
        std::fflush(stdout);
    }
}

namespace {

struct StatsArgs {
    Format format = Format::human;
    bool watching = false;
    double interval = 0; // seconds, when watching
    std::vector<std::string> paths;
    std::string output;
};

// --watch's interval is optional: a word after it that is no number is a
// mountpoint.
std::vector<std::string> with_watch_interval(std::vector<std::string> words) {
    for (size_t i = 0; i < words.size(); ++i) {
        if (words[i] != "--watch") continue;
        const bool number_follows =
            i + 1 < words.size() && !words[i + 1].empty() &&
            words[i + 1].find_first_not_of("0123456789.") == std::string::npos;
        if (!number_follows) words[i] = "--watch=2";
    }
    return words;
}

// Fills `a`; returns the exit code when there is nothing more to do (help,
// or a usage error it has reported).
std::optional<int> parse_stats_args(const std::vector<std::string>& args, StatsArgs& a) {
    CLI::App app{"Report the zero-copy hit rates of running splicefs mounts", "splicefs stats"};
    bool json = false;
    std::string format_text = "human";
    std::optional<double> watch;
    app.add_flag("--json", json, "Print one JSON object (same as --format json)");
    app.add_option("--format", format_text, "human, json or prometheus")->type_name("FORMAT");
    app.add_option("--watch", watch, "Redraw every SECONDS (default 2) with per-interval rates")
        ->expected(0, 1)
        ->type_name("[SECONDS]");
    app.add_option("--output", a.output,
                   "Write to FILE through a temporary file renamed into place (node_exporter's "
                   "textfile collector never sees half a file)")
        ->type_name("FILE");
    app.add_option("mountpoints", a.paths, "splicefs mountpoints (default: all)")
        ->type_name("MOUNTPOINT");
    app.footer("Exit status: 0 success, 1 usage error, 4 a mountpoint was no splicefs mount or its "
               "daemon did not answer.");
    const std::vector<std::string> words = with_watch_interval(args);
    std::vector<std::string> reversed(words.rbegin(), words.rend());
    try {
        app.parse(reversed);
    } catch (const CLI::CallForHelp&) {
        std::fputs(app.help().c_str(), stdout);
        return exit_code::ok;
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "splicefs stats: %s\n", e.what());
        return exit_code::usage;
    }
    auto usage = [](const std::string& message) {
        std::fprintf(stderr, "splicefs stats: %s\n", message.c_str());
        return exit_code::usage;
    };
    if (json && app.count("--format") && format_text != "json")
        return usage("--json and --format " + format_text + " ask for two formats");
    if (json || format_text == "json")
        a.format = Format::json;
    else if (format_text == "prometheus")
        a.format = Format::prometheus;
    else if (format_text != "human")
        return usage("unknown format '" + format_text + "' (use human, json or prometheus)");
    a.watching = app.count("--watch") > 0;
    a.interval = a.watching ? watch.value_or(2.0) : 0;
    if (a.watching && !(a.interval > 0)) return usage("--watch needs a positive number of seconds");
    if (!a.output.empty() && a.watching && a.format == Format::human)
        return usage("--output with --watch needs --format json or prometheus");
    return std::nullopt;
}

// The mounts to report on: those named (each checked, with one line for
// each that is none), or every splicefs mount.
std::vector<util::MountEntry> mounts_to_report(const std::vector<std::string>& paths, int& status) {
    std::vector<util::MountEntry> mounts;
    if (paths.empty()) {
        for (auto& m : util::read_mountinfo())
            if (is_splicefs_mount(m)) mounts.push_back(std::move(m));
        return mounts;
    }
    for (const auto& path : paths) {
        char resolved[PATH_MAX];
        if (!realpath(path.c_str(), resolved)) {
            std::fprintf(stderr, "splicefs stats: %s: %s\n", path.c_str(),
                         errno == ENOTCONN ? "a FUSE mount whose daemon is gone: unmount it "
                                             "with 'fusermount3 -u MOUNTPOINT'"
                                           : std::strerror(errno));
            status = exit_code::stats_failed;
            continue;
        }
        const auto m = util::find_mount(resolved);
        if (!m || !is_splicefs_mount(*m)) {
            std::fprintf(stderr, "splicefs stats: %s: not a splicefs mount\n", path.c_str());
            status = exit_code::stats_failed;
            continue;
        }
        mounts.push_back(*m);
    }
    return mounts;
}

// One JSON document; while watching, each mount after the first round
// carries the last interval's rates.
std::string json_document(const std::vector<MountReport>& reports,
                          const std::vector<Report>& previous, const StatsArgs& a, bool first) {
    std::string out = "{\"schema_version\": 1, \"mounts\": [";
    for (size_t i = 0; i < reports.size(); ++i) {
        std::string mount = json_mount(reports[i].report);
        if (a.watching && !first && i < previous.size()) {
            mount.pop_back(); // the closing brace
            mount +=
                ", \"interval\": " + json_interval(reports[i].report, previous[i], a.interval) +
                "}";
        }
        out += (i ? ", " : "") + mount;
    }
    out += "]";
    if (a.watching) out += fmt::format(", \"interval_seconds\": {}", first ? 0.0 : a.interval);
    return out + "}\n";
}

} // namespace

int run_stats(const std::vector<std::string>& args) {
    StatsArgs a;
    if (auto done = parse_stats_args(args, a)) return *done;
    int status = exit_code::ok;
    const std::vector<util::MountEntry> mounts = mounts_to_report(a.paths, status);
    const bool colour = a.output.empty() && isatty(STDOUT_FILENO);
    if (a.watching && a.format == Format::human)
        return watch_lines(mounts, a.interval, colour, status);
    std::vector<Report> previous;
    for (bool first = true;; first = false) {
        std::vector<MountReport> reports;
        for (const auto& m : mounts) {
            std::string error;
            if (auto report = fetch(m, error))
                reports.push_back({m, std::move(*report)});
            else if (first) {
                std::fprintf(stderr, "splicefs stats: %s: %s\n", m.mountpoint.c_str(),
                             error.c_str());
                status = exit_code::stats_failed;
            }
        }
        std::string out;
        if (a.format == Format::json) {
            out = json_document(reports, previous, a, first);
        } else if (a.format == Format::prometheus) {
            out = prometheus(reports);
        } else {
            if (reports.empty() && a.paths.empty()) out += "no splicefs mounts\n";
            for (size_t i = 0; i < reports.size(); ++i)
                out += (i ? "\n" : "") + human_mount(reports[i].report, colour);
        }
        if (!a.output.empty()) {
            if (std::string error = write_atomically(a.output, out); !error.empty()) {
                std::fprintf(stderr, "splicefs stats: %s: %s\n", a.output.c_str(), error.c_str());
                return exit_code::usage;
            }
        } else {
            std::fputs(out.c_str(), stdout);
            std::fflush(stdout);
        }
        if (!a.watching) break;
        previous.clear();
        for (auto& r : reports)
            previous.push_back(std::move(r.report));
        std::this_thread::sleep_for(std::chrono::duration<double>(a.interval));
    }
    return status;
}

} // namespace splicefs
