#include "uring.hpp"

#include "channel.hpp"
#include "data_path.hpp"
#include "filesystem.hpp"

#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#ifdef SPLICEFS_HAVE_LIBURING
#include <liburing.h>
#include <poll.h>
#endif

namespace splicefs {

namespace {

// Protocol 7.42 (Linux 6.14) definitions, our own: Debian 12's headers
// (6.1) lack them.
constexpr uint32_t flags2_over_io_uring = 1U << (41 - 32); // FUSE_OVER_IO_URING
constexpr uint32_t cmd_register = 1;                       // FUSE_IO_URING_CMD_REGISTER
constexpr uint32_t cmd_commit_and_fetch = 2;               // FUSE_IO_URING_CMD_COMMIT_AND_FETCH
struct EntryInOut {                                        // struct fuse_uring_ent_in_out
    uint64_t flags;
    uint64_t commit_id; // the request's unique, to name it in the commit
    uint32_t payload_sz;
    uint32_t padding;
    uint64_t reserved;
};
struct EntryHeaders { // struct fuse_uring_req_header
    char in_out[128]; // fuse_in_header in, fuse_out_header out
    char op_in[128];  // the opcode's own argument struct
    EntryInOut ent;
};
struct CommandArg { // struct fuse_uring_cmd_req, in the SQE's command area
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};

// The number of possible CPUs, as the kernel counts its queues
// (num_possible_cpus(); /sys/devices/system/cpu/possible, "0-3" or "0,2-5").
unsigned possible_cpus() {
    std::ifstream f("/sys/devices/system/cpu/possible");
    std::string text;
    unsigned count = 0;
    if (!(f >> text)) return std::max(1L, sysconf(_SC_NPROCESSORS_CONF));
    size_t pos = 0;
    while (pos < text.size()) {
        const size_t comma = std::min(text.find(',', pos), text.size());
        const std::string range = text.substr(pos, comma - pos);
        const size_t dash = range.find('-');
        const unsigned first = std::stoul(range.substr(0, dash));
        const unsigned last =
            dash == std::string::npos ? first : std::stoul(range.substr(dash + 1));
        count += last - first + 1;
        pos = comma + 1;
    }
    return std::max(count, 1U);
}

#ifdef SPLICEFS_HAVE_LIBURING

// One ring entry's channel: its data buffer is the entry's payload, and a
// reply written to it lands in the entry's headers and payload, to be
// committed to the kernel by the queue thread.
class RingChannel final : public Channel {
  public:
    RingChannel(size_t payload_size) : Channel(-1, payload_size, 0, false) {}
    bool splices() const override { return false; }
    EntryHeaders headers{};
    bool replied = false;

  protected:
    ssize_t device_writev(const iovec* iov, int count) override {
        if (count < 1 || iov[0].iov_len < sizeof(fuse_out_header)) return errno = EINVAL, -1;
        std::memcpy(headers.in_out, iov[0].iov_base, sizeof(fuse_out_header));
        size_t payload = 0;
        // Whatever followed the header in iov[0] belongs to the payload too.
        auto append = [&](const void* from, size_t size) {
            if (payload + size > data_room()) return false;
            if (from != data() + payload) std::memmove(data() + payload, from, size);
            payload += size;
            return true;
        };
        if (!append(static_cast<const char*>(iov[0].iov_base) + sizeof(fuse_out_header),
                    iov[0].iov_len - sizeof(fuse_out_header)))
            return errno = EOVERFLOW, -1;
        for (int i = 1; i < count; ++i)
            if (!append(iov[i].iov_base, iov[i].iov_len)) return errno = EOVERFLOW, -1;
        headers.ent.payload_sz = static_cast<uint32_t>(payload);
        replied = true;
        return static_cast<ssize_t>(sizeof(fuse_out_header) + payload);
    }
    // Requests arrive through the ring, never by these.
    ssize_t device_read(void*, size_t) override { return errno = EOPNOTSUPP, -1; }
    ssize_t device_splice_to_pipe(int, size_t) override { return errno = EOPNOTSUPP, -1; }
    ssize_t device_splice_from_pipe(int, size_t, unsigned) override {
        return errno = EOPNOTSUPP, -1;
    }
};

constexpr uint64_t entry_tag = 1, stop_tag = 2;

// How a queue ended: with the connection (the kernel ended its command), on
// the kernel's refusal of its registration (the kernel then serves every
// request by /dev/fuse), or on a failure after it served (its CPU's
// requests would wait forever: the mount is broken).
enum class QueueEnd { connection_gone, registration_refused, failed };

void prep_command(io_uring_sqe* sqe, int fuse_fd, uint32_t op, uint16_t qid, uint64_t commit_id,
                  const iovec* iov) {
    std::memset(sqe, 0, 2 * sizeof *sqe); // an SQE128 slot
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fuse_fd;
    sqe->cmd_op = op;
    if (iov) {
        sqe->addr = reinterpret_cast<uint64_t>(iov);
        sqe->len = 2;
    }
    CommandArg arg{};
    arg.commit_id = commit_id;
    arg.qid = qid;
    std::memcpy(sqe->cmd, &arg, sizeof arg);
    io_uring_sqe_set_data64(sqe, entry_tag);
}

// One queue: its ring, its one entry (a queue thread handles one request
// at a time; the kernel keeps the next in its queue and hands it over with
// the commit of this one), its data path.
class Queue {
  public:
    Queue(Filesystem& fs, fuse_session* session, unsigned qid, size_t payload, io_uring& ring)
        : fs_(fs), session_(session), qid_(static_cast<uint16_t>(qid)),
          fuse_fd_(fuse_session_fd(session)), counters_(fs.stats.register_thread()),
          channel_(payload), handlers_(fs, channel_), ring_(ring) {
        iov_[0] = {&channel_.headers, sizeof channel_.headers};
        iov_[1] = {channel_.data(), channel_.data_room()};
    }

    // Registers the entry; "" or why it could not be asked.
    std::string open(int stop_fd) {
        io_uring_sqe* stop = io_uring_get_sqe(&ring_);
        io_uring_prep_poll_add(stop, stop_fd, POLLIN);
        io_uring_sqe_set_data64(stop, stop_tag);
        prep_command(io_uring_get_sqe(&ring_), fuse_fd_, cmd_register, qid_, 0, iov_);
        const int r = io_uring_submit(&ring_);
        if (r < 0) return std::string("io_uring_submit: ") + std::strerror(-r);
        return "";
    }

    // Serves until the connection ends, the kernel refuses the entry, or
    // something fails (`why` says what).
    QueueEnd serve(std::atomic<uint64_t>& requests, std::string& why) {
        bool served = false;
        for (;;) {
            io_uring_cqe* cqe = nullptr;
            const int r = io_uring_wait_cqe(&ring_, &cqe);
            if (r == -EINTR) continue;
            if (r < 0) {
                why = std::string("waiting for a request: ") + std::strerror(-r);
                return QueueEnd::failed;
            }
            const uint64_t tag = io_uring_cqe_get_data64(cqe);
            const int res = cqe->res;
            io_uring_cqe_seen(&ring_, cqe);
            if (tag == stop_tag) return QueueEnd::connection_gone;
            // The kernel ends each entry's command with ENOTCONN (or
            // ECANCELED) when the connection goes.
            if (res == -ENOTCONN || res == -ECANCELED || res == -ECONNABORTED)
                return QueueEnd::connection_gone;
            if (res < 0) {
                why = std::string(served ? "the kernel refused a commit: "
                                         : "the kernel refused the queue: ") +
                      std::strerror(-res);
                return served ? QueueEnd::failed : QueueEnd::registration_refused;
            }
            served = true;
            requests.fetch_add(1, std::memory_order_relaxed);
            handle();
            prep_command(io_uring_get_sqe(&ring_), fuse_fd_, cmd_commit_and_fetch, qid_,
                         channel_.headers.ent.commit_id, nullptr);
            const int s = io_uring_submit(&ring_);
            if (s < 0) {
                why = std::string("committing a reply: ") + std::strerror(-s);
                return QueueEnd::failed;
            }
        }
    }

  private:
    // The request as one message, laid out as /dev/fuse gives it: the
    // header and the opcode's argument go just before the payload (the
    // channel keeps a page free there), so that nothing large is copied
    // and a WRITE's data stays page-aligned.
    void handle() {
        EntryHeaders& h = channel_.headers;
        fuse_in_header in;
        std::memcpy(&in, h.in_out, sizeof in);
        const size_t payload = h.ent.payload_sz;
        channel_.replied = false;
        if (in.len < sizeof in + payload || in.len - sizeof in - payload > sizeof h.op_in) {
            channel_.reply_error(in.unique, EIO);
            return;
        }
        const size_t arg_size = in.len - sizeof in - payload;
        char* message = channel_.data() - sizeof in - arg_size;
        std::memcpy(message, &in, sizeof in);
        std::memcpy(message + sizeof in, h.op_in, arg_size);
        Request request;
        request.in = reinterpret_cast<const fuse_in_header*>(message);
        request.size = in.len;
        count_request(counters_, in.opcode);
        if (in.opcode == FUSE_READ) {
            count_read(counters_, handlers_.read(request), fs_.limits.max_reply);
        } else if (in.opcode == FUSE_WRITE && arg_size == sizeof(fuse_write_in)) {
            count_write(counters_, handlers_.write(request));
        } else {
            ReplyRedirect redirect(channel_);
            fuse_buf buf{};
            buf.size = in.len;
            buf.mem = message;
            fuse_session_process_buf(session_, &buf);
        }
        // Every entry must be committed with a reply; libfuse answers every
        // request it gets, but should one go unanswered, the caller gets EIO
        // rather than the queue stopping.
        if (!channel_.replied) channel_.reply_error(in.unique, EIO);
    }

    Filesystem& fs_;
    fuse_session* session_;
    uint16_t qid_;
    int fuse_fd_;
    ThreadCounters& counters_;
    RingChannel channel_;
    DataHandlers handlers_;
    io_uring& ring_;
    iovec iov_[2]{};
};

#endif // SPLICEFS_HAVE_LIBURING

} // namespace

#ifdef SPLICEFS_HAVE_LIBURING
struct UringRings {
    std::unique_ptr<io_uring[]> rings;
    unsigned made = 0;
    ~UringRings() {
        for (unsigned i = 0; i < made; ++i)
            io_uring_queue_exit(&rings[i]);
    }
    // "" or why one could not be made.
    std::string make(unsigned count) {
        rings = std::make_unique<io_uring[]>(count);
        for (; made < count; ++made) {
            io_uring_params params{};
            params.flags = IORING_SETUP_SQE128 | IORING_SETUP_COOP_TASKRUN;
            int r = io_uring_queue_init_params(4, &rings[made], &params);
            if (r == -EINVAL) { // COOP_TASKRUN is Linux 5.19+
                params = {};
                params.flags = IORING_SETUP_SQE128;
                r = io_uring_queue_init_params(4, &rings[made], &params);
            }
            if (r < 0) return std::string("io_uring_setup: ") + std::strerror(-r);
        }
        return "";
    }
};
#else
struct UringRings {};
#endif

Uring::Uring(bool wanted) : wanted_(wanted) {}

Uring::~Uring() {
    stop();
}

void Uring::kernel_init(uint32_t kernel_flags2) {
    offered_ = (kernel_flags2 & flags2_over_io_uring) != 0;
}

uint32_t Uring::negotiate() {
#ifdef SPLICEFS_HAVE_LIBURING
    if (!wanted_ || !offered_) return 0;
    auto rings = std::make_unique<UringRings>();
    if (std::string why = rings->make(possible_cpus()); !why.empty()) {
        spdlog::warn("FUSE over io_uring: {}; requests go by /dev/fuse", why);
        fail(why);
        return 0;
    }
    rings_ = std::move(rings);
    negotiated_ = true;
#endif
    return negotiated_ ? flags2_over_io_uring : 0;
}

void Uring::fail(const std::string& why) {
    std::lock_guard lock(mutex_);
    if (failure_.empty()) failure_ = why;
}

void Uring::start(Filesystem& fs, fuse_session* session, int exit_eventfd) {
    if (!negotiated_ || !threads_.empty()) return;
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    const unsigned queues = rings_->made;
    queues_ = queues;
    for (unsigned qid = 0; qid < queues; ++qid)
        threads_.emplace_back([this, &fs, session, qid, exit_eventfd] {
            serve_queue(fs, session, qid, exit_eventfd);
        });
}

void Uring::serve_queue(Filesystem& fs, fuse_session* session, unsigned qid, int exit_eventfd) {
#ifdef SPLICEFS_HAVE_LIBURING
    // On its CPU: the kernel queues there what that CPU's processes ask.
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(qid, &cpus);
    if (sched_setaffinity(0, sizeof cpus, &cpus) < 0)
        spdlog::debug("io_uring queue {} not pinned to its CPU: {}", qid, std::strerror(errno));
    // A umask of its own (CallerUmask), as every worker has.
    if (unshare(CLONE_FS) < 0) spdlog::warn("unshare(CLONE_FS): {}", std::strerror(errno));
    const size_t payload = std::max<size_t>(
        {8192, fs.limits.max_write, fs.limits.max_pages * static_cast<size_t>(getpagesize())});
    std::string why;
    QueueEnd end;
    {
        Queue queue(fs, session, qid, payload, rings_->rings[qid]);
        why = queue.open(stop_fd_);
        end = why.empty() ? queue.serve(requests_, why) : QueueEnd::failed;
    }
    if (end == QueueEnd::registration_refused) {
        // The kernel has gone back to /dev/fuse for every request.
        spdlog::warn("FUSE over io_uring, queue {}: {}; requests go by /dev/fuse", qid, why);
        fail(why);
    } else if (end == QueueEnd::failed) {
        spdlog::error("FUSE over io_uring, queue {}: {}", qid, why);
        fail(why);
        const uint64_t one = 1;
        (void)!::write(exit_eventfd, &one, sizeof one);
    }
#else
    (void)fs, (void)session, (void)qid, (void)exit_eventfd;
#endif
}

void Uring::stop() {
    if (threads_.empty()) return;
    const uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof one);
    for (auto& t : threads_)
        if (t.joinable()) t.join();
    threads_.clear();
    ::close(stop_fd_);
    stop_fd_ = -1;
}

std::string Uring::state() const {
    if (!wanted_) return "/dev/fuse";
#ifndef SPLICEFS_HAVE_LIBURING
    return "/dev/fuse: built without liburing";
#else
    {
        std::lock_guard lock(mutex_);
        if (!failure_.empty()) return "/dev/fuse: io_uring failed: " + failure_;
    }
    if (!offered_)
        return "/dev/fuse: the kernel does not offer io_uring "
               "(Linux 6.14+, /sys/module/fuse/parameters/enable_uring)";
    const unsigned queues = queues_.load();
    if (!negotiated_ || queues == 0) return "/dev/fuse";
    return "io_uring, " + std::to_string(queues) + (queues == 1 ? " queue" : " queues");
#endif
}

} // namespace splicefs
