#include "data_path.hpp"

#include "creds.hpp"
#include "util/fd.hpp"
#include "util/size.hpp"

#include <linux/fuse.h>

#include <fcntl.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

namespace splicefs {

namespace {

// Pipe slots, FUSE's max_pages and O_DIRECT alignment all count in pages.
const size_t page_size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
// libfuse 3.14 caps max_write at FUSE_MAX_MAX_PAGES pages.
constexpr uint64_t libfuse_max_pages = 256;
constexpr size_t write_header_size = sizeof(fuse_in_header) + sizeof(fuse_write_in);
constexpr size_t out_header_size = sizeof(fuse_out_header);

uint64_t read_proc_number(const char* path, uint64_t fallback) {
    std::ifstream in(path);
    uint64_t value = 0;
    return (in >> value) ? value : fallback;
}

size_t pages_spanned(uint64_t offset, size_t size) {
    return (offset % page_size + size + page_size - 1) / page_size;
}

// A pipe that carries one FUSE message at a time. It is empty between messages.
class Pipe {
  public:
    // Creates the pipe and grows it to hold `bytes`; returns false if it cannot.
    bool open(size_t bytes) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) < 0) return false;
        read_end_.reset(fds[0]);
        write_end_.reset(fds[1]);
        const int size = fcntl(fds[0], F_SETPIPE_SZ, static_cast<int>(bytes));
        if (size < 0) {
            capacity_ = static_cast<size_t>(fcntl(fds[0], F_GETPIPE_SZ));
            return false;
        }
        capacity_ = static_cast<size_t>(size);
        return true;
    }
    int read_fd() const { return read_end_.get(); }
    int write_fd() const { return write_end_.get(); }
    size_t slots() const { return capacity_ / page_size; }
    // Discards whatever a failed transfer left behind.
    void drain(char* scratch, size_t scratch_size) {
        int available = 0;
        while (ioctl(read_fd(), FIONREAD, &available) == 0 && available > 0) {
            if (::read(read_fd(), scratch,
                       std::min(scratch_size, static_cast<size_t>(available))) <= 0)
                break;
        }
    }

  private:
    util::Fd read_end_, write_end_;
    size_t capacity_ = 0;
};

struct AlignedFree {
    void operator()(char* p) const { std::free(p); }
};

// One worker: its own pipe, its own buffer, its own counters.
class Worker {
  public:
    Worker(Filesystem& fs, fuse_session* session)
        : fs_(fs), session_(session), fuse_fd_(fuse_session_fd(session)),
          counters_(fs.stats.register_thread()), limits_(fs.stats.limits) {
        const Options& o = fs.opts;
        splice_reads_ = o.splice_reads();
        splice_writes_ = o.splice_writes();
        move_flag_ = o.splice_move ? SPLICE_F_MOVE : 0;
        // Room for any request: the largest WRITE, or a 64 KiB xattr value with
        // its name. The request is read to a page - 80 bytes into the buffer so
        // that WRITE data lands page-aligned (O_DIRECT sources need that).
        request_room_ = std::max<size_t>(limits_.max_write, size_t{128} * 1024) + page_size;
        buffer_size_ = page_size + request_room_;
        buffer_.reset(static_cast<char*>(std::aligned_alloc(page_size, buffer_size_)));
        request_ = buffer_.get() + page_size - write_header_size;
        data_ = buffer_.get() + page_size;
        if ((splice_reads_ || splice_writes_) && !pipe_.open(limits_.pipe_size))
            spdlog::warn("worker pipe could not grow to {}: large messages will be copied",
                         util::human_bytes(limits_.pipe_size));
        // The kernel refuses (EIO) to splice a request that does not fit the
        // pipe whole, and fails the request with it: requests are spliced
        // only into a pipe that holds the largest one (its headers and data
        // fill pages one after the other).
        const size_t largest_request = limits_.max_write + write_header_size;
        splice_requests_ =
            splice_writes_ && pipe_.slots() >= (largest_request + page_size - 1) / page_size;
        if (splice_writes_ && !splice_requests_)
            spdlog::warn("worker pipe holds {}, not the largest request: WRITE requests will be "
                         "copied",
                         util::human_bytes(pipe_.slots() * page_size));
    }

    // Returns false when the worker stopped on an error rather than at the
    // end of the session (an unmount gives ENODEV).
    bool run() {
        bool ended_cleanly = true;
        while (!fuse_session_exited(session_)) {
            const ssize_t n = splice_requests_ ? receive_by_splice() : receive_by_read();
            if (n < 0) {
                const int err = static_cast<int>(-n);
                if (err == ENODEV) break; // unmounted
                if (err == EINTR || err == EAGAIN || err == ENOENT) continue;
                spdlog::error("reading /dev/fuse: {}", std::strerror(err));
                ended_cleanly = false;
                break;
            }
        }
        fuse_session_exit(session_);
        return ended_cleanly;
    }

  private:
    // --- Receiving ------------------------------------------------------

    ssize_t receive_by_read() {
        const ssize_t n = ::read(fuse_fd_, request_, request_room_ + write_header_size);
        if (n < 0) return -errno;
        if (static_cast<size_t>(n) < sizeof(fuse_in_header)) return -EIO;
        dispatch(static_cast<size_t>(n));
        return n;
    }

    // WRITE data stays in the pipe and goes from there into the file; every
    // other request is read out of the pipe into the buffer.
    ssize_t receive_by_splice() {
        const size_t want = limits_.max_write + write_header_size + page_size;
        const ssize_t n = splice(fuse_fd_, nullptr, pipe_.write_fd(), nullptr, want, 0);
        if (n < 0) return -errno;
        const auto size = static_cast<size_t>(n);
        const size_t head = std::min(size, write_header_size);
        if (!read_exactly(pipe_.read_fd(), request_, head)) return -EIO;
        const auto* in = reinterpret_cast<const fuse_in_header*>(request_);
        if (head == write_header_size && in->opcode == FUSE_WRITE &&
            size >= write_header_size + page_size) {
            write_from_pipe(*in, *reinterpret_cast<const fuse_write_in*>(in + 1),
                            size - write_header_size);
            return n;
        }
        if (!read_exactly(pipe_.read_fd(), request_ + head, size - head)) return -EIO;
        dispatch(size);
        return n;
    }

    static bool read_exactly(int fd, char* buf, size_t len) {
        while (len > 0) {
            const ssize_t n = ::read(fd, buf, len);
            if (n <= 0) return false;
            buf += n;
            len -= static_cast<size_t>(n);
        }
        return true;
    }

    void dispatch(size_t size) {
        const auto* in = reinterpret_cast<const fuse_in_header*>(request_);
        if (in->opcode == FUSE_READ && fs_.initialized) {
            read(*in, *reinterpret_cast<const fuse_read_in*>(in + 1));
        } else if (in->opcode == FUSE_WRITE && fs_.initialized) {
            const auto& arg = *reinterpret_cast<const fuse_write_in*>(in + 1);
            write_from_buffer(*in, arg,
                              splice_writes_ ? CopyReason::small : CopyReason::splice_off);
        } else {
            if (in->opcode == FUSE_INIT)
                fs_.passthrough.kernel_init(*reinterpret_cast<const fuse_init_in*>(in + 1),
                                            size - sizeof *in);
            fuse_buf buf{};
            buf.size = size;
            buf.mem = request_;
            fuse_session_process_buf(session_, &buf);
        }
    }

    // --- Replying -------------------------------------------------------

    void send(iovec* iov, int count) {
        if (::writev(fuse_fd_, iov, count) < 0 && errno != ENOENT) // ENOENT: request interrupted
            spdlog::warn("writing reply to /dev/fuse: {}", std::strerror(errno));
    }

    void send_error(uint64_t unique, int err) {
        fuse_out_header out{out_header_size, -err, unique};
        iovec iov{&out, sizeof out};
        send(&iov, 1);
    }

    // --- READ -----------------------------------------------------------

    void read(const fuse_in_header& in, const fuse_read_in& arg) {
        auto& handle = handle_from_fh<FileHandle>(arg.fh);
        const size_t size = std::min<size_t>(arg.size, limits_.max_reply);
        const CopyReason reason =
            splice_reads_ ? why_not_splice(handle, arg.offset, size) : CopyReason::splice_off;
        if (reason == CopyReason::count_) {
            if (read_by_splice(in.unique, handle, arg.offset, size)) return;
            return read_by_copy(in.unique, handle, arg.offset, size, splice_failure_);
        }
        read_by_copy(in.unique, handle, arg.offset, size, reason);
    }

    // CopyReason::count_ means "splice it".
    CopyReason why_not_splice(const FileHandle& handle, uint64_t offset, size_t size) const {
        if (size < 2 * page_size) return CopyReason::small;
        if (handle.read_splice_refused.load(std::memory_order_relaxed))
            return CopyReason::source_refused;
        // One slot for the header, one per page of data.
        if (pages_spanned(offset, size) + 1 > pipe_.slots()) return CopyReason::pipe_too_small;
        return CopyReason::count_;
    }

    // Header into the pipe by vmsplice, data from the file into the pipe by
    // splice, the header's length fixed to what arrived, then the whole
    // message into /dev/fuse by one splice. Returns false, with the pipe
    // empty and splice_failure_ set, when the reply must be copied instead.
    bool read_by_splice(uint64_t unique, FileHandle& handle, uint64_t offset, size_t size) {
        // vmsplice maps this header's page into the pipe, so the length can
        // still be fixed after the data has arrived.
        reply_header_ = fuse_out_header{0, 0, unique};
        iovec header{&reply_header_, out_header_size};
        if (vmsplice(pipe_.write_fd(), &header, 1, 0) != static_cast<ssize_t>(out_header_size)) {
            return give_up(CopyReason::pipe_error);
        }
        auto file_offset = static_cast<loff_t>(offset);
        const ssize_t got =
            splice(handle.fd.get(), &file_offset, pipe_.write_fd(), nullptr, size, move_flag_);
        if (got < 0) {
            if (errno == EINVAL) {
                handle.read_splice_refused.store(true, std::memory_order_relaxed);
                spdlog::debug("source refused splice; this open file will be copied");
                return give_up(CopyReason::source_refused);
            }
            return give_up(CopyReason::error); // the copy path reports the error
        }
        // A short splice is only a valid reply at end of file: a short READ
        // reply makes the kernel shrink its idea of the file size.
        if (static_cast<size_t>(got) < size && got > 0) {
            char probe;
            if (::pread(handle.fd.get(), &probe, 1, static_cast<off_t>(offset) + got) != 0)
                return give_up(CopyReason::short_read);
        }
        const size_t total = out_header_size + static_cast<size_t>(got);
        reply_header_.len = static_cast<uint32_t>(total);
        const ssize_t sent = splice(pipe_.read_fd(), nullptr, fuse_fd_, nullptr, total, move_flag_);
        if (sent != static_cast<ssize_t>(total)) {
            const bool interrupted = sent < 0 && errno == ENOENT;
            pipe_.drain(data_, request_room_);
            if (interrupted) {
                count_copy(counters_.read, CopyReason::error, 0); // the kernel no longer wants it
                return true;
            }
            spdlog::warn("splicing a reply into /dev/fuse: {}",
                         sent < 0 ? std::strerror(errno) : "short");
            splice_failure_ = CopyReason::pipe_error;
            return false;
        }
        count_read_spliced(static_cast<size_t>(got));
        return true;
    }

    bool give_up(CopyReason reason) {
        pipe_.drain(data_, request_room_);
        splice_failure_ = reason;
        return false;
    }

    // The fair copy: pread into the reused aligned buffer, one writev. A
    // source may return less than asked before the end of the file (FUSE,
    // NFS, some devices): a short reply would make the kernel shrink its idea
    // of the file size, so read on until the size or the end of the file.
    void read_by_copy(uint64_t unique, FileHandle& handle, uint64_t offset, size_t size,
                      CopyReason reason) {
        ssize_t got = 0;
        while (static_cast<size_t>(got) < size) {
            const ssize_t n = ::pread(handle.fd.get(), data_ + got, size - static_cast<size_t>(got),
                                      static_cast<off_t>(offset) + got);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && got == 0) got = -1;
            if (n <= 0) break; // end of file, or an error after data: what arrived
            got += n;
        }
        if (got < 0) {
            const int err = errno;
            send_error(unique, err);
            count_copy(counters_.read, CopyReason::error, 0);
            return;
        }
        fuse_out_header out{static_cast<uint32_t>(out_header_size + static_cast<size_t>(got)), 0,
                            unique};
        iovec iov[2] = {{&out, out_header_size}, {data_, static_cast<size_t>(got)}};
        send(iov, 2);
        count_copy(counters_.read, reason, static_cast<size_t>(got));
        count_read_size(static_cast<size_t>(got));
    }

    // --- WRITE ----------------------------------------------------------

    void write_from_buffer(const fuse_in_header& in, const fuse_write_in& arg, CopyReason reason) {
        auto& handle = handle_from_fh<FileHandle>(arg.fh);
        const int fd = handle.fd_for_write(arg.write_flags);
        ssize_t n;
        {
            ModifyAsCaller as_caller(fs_, in, arg, fd);
            n = as_caller.failed() ? (errno = EPERM, -1)
                                   : ::pwrite(fd, data_, arg.size, static_cast<off_t>(arg.offset));
        }
        reply_write(in.unique, n < 0 ? -errno : n);
        count_copy(counters_.write, n < 0 ? CopyReason::error : reason,
                   n < 0 ? 0 : static_cast<size_t>(n));
    }

    void write_from_pipe(const fuse_in_header& in, const fuse_write_in& arg, size_t in_pipe) {
        auto& handle = handle_from_fh<FileHandle>(arg.fh);
        if (in_pipe != arg.size) {
            pipe_.drain(data_, request_room_);
            reply_write(in.unique, -EIO);
            count_copy(counters_.write, CopyReason::error, 0);
            return;
        }
        if (handle.write_splice_refused.load(std::memory_order_relaxed))
            return copy_out_of_pipe(in, arg, CopyReason::source_refused);
        auto offset = static_cast<loff_t>(arg.offset);
        size_t done = 0;
        const int fd = handle.fd_for_write(arg.write_flags);
        ModifyAsCaller as_caller(fs_, in, arg, fd);
        if (as_caller.failed()) {
            pipe_.drain(data_, request_room_);
            reply_write(in.unique, -EPERM);
            count_copy(counters_.write, CopyReason::error, 0);
            return;
        }
        while (done < arg.size) {
            const ssize_t n =
                splice(pipe_.read_fd(), nullptr, fd, &offset, arg.size - done, move_flag_);
            if (n <= 0) {
                if (n < 0 && errno == EINVAL && done == 0) {
                    handle.write_splice_refused.store(true, std::memory_order_relaxed);
                    return copy_out_of_pipe(in, arg, CopyReason::source_refused);
                }
                const int err = n < 0 ? errno : EIO;
                pipe_.drain(data_, request_room_);
                // Like write(2): what was written counts, else the error.
                reply_write(in.unique, done > 0 ? static_cast<ssize_t>(done) : -err);
                count_copy(counters_.write, CopyReason::error, done);
                return;
            }
            done += static_cast<size_t>(n);
        }
        reply_write(in.unique, static_cast<ssize_t>(done));
        counters_.write.spliced_count.add(1);
        counters_.write.spliced_bytes.add(done);
    }

    void copy_out_of_pipe(const fuse_in_header& in, const fuse_write_in& arg, CopyReason reason) {
        if (!read_exactly(pipe_.read_fd(), data_, arg.size)) {
            pipe_.drain(data_, request_room_);
            reply_write(in.unique, -EIO);
            count_copy(counters_.write, CopyReason::error, 0);
            return;
        }
        write_from_buffer(in, arg, reason);
    }

    void reply_write(uint64_t unique, ssize_t result) {
        if (result < 0) return send_error(unique, static_cast<int>(-result));
        fuse_out_header out{out_header_size + sizeof(fuse_write_out), 0, unique};
        fuse_write_out arg{static_cast<uint32_t>(result), 0};
        iovec iov[2] = {{&out, sizeof out}, {&arg, sizeof arg}};
        send(iov, 2);
    }

    // --- Counting -------------------------------------------------------

    void count_copy(DirectionCounters& c, CopyReason reason, size_t bytes) {
        c.copied_count.add(1);
        c.copied_bytes.add(bytes);
        c.copy_reasons[static_cast<size_t>(reason)].add(1);
    }

    void count_read_spliced(size_t bytes) {
        counters_.read.spliced_count.add(1);
        counters_.read.spliced_bytes.add(bytes);
        count_read_size(bytes);
    }

    void count_read_size(size_t bytes) {
        counters_.read_sizes[histogram_bucket(bytes)].add(1);
        if (bytes == limits_.max_reply) counters_.read_full_size.add(1);
    }

    Filesystem& fs_;
    fuse_session* session_;
    int fuse_fd_;
    ThreadCounters& counters_;
    const Limits& limits_;
    bool splice_reads_ = false, splice_writes_ = false;
    bool splice_requests_ = false; // splice_writes_ and a pipe that holds any request
    unsigned move_flag_ = 0;
    Pipe pipe_;
    std::unique_ptr<char, AlignedFree> buffer_;
    size_t buffer_size_ = 0, request_room_ = 0;
    char* request_ = nullptr; // request as received (header 80 bytes before data_)
    char* data_ = nullptr;    // page-aligned data area
    fuse_out_header reply_header_{};
    CopyReason splice_failure_ = CopyReason::error;
};

} // namespace

std::string settle_limits(const Options& opts, Limits& limits) {
    const uint64_t kernel_pages = read_proc_number("/proc/sys/fs/fuse/max_pages_limit", 256);
    const uint64_t max_pages = std::min(kernel_pages, libfuse_max_pages);
    const uint64_t largest = max_pages * page_size;
    limits.splice_mode = to_string(opts.splice);
    limits.splice_move = opts.splice_move;
    limits.cache = to_string(opts.cache);
    limits.threads = opts.worker_threads();
    limits.max_reply_requested = opts.max_reply.value_or(0);
    // Replies under two pages are never spliced (CopyReason::small): such a
    // size would make every reply a copy.
    if (opts.max_reply && *opts.max_reply < 2 * page_size)
        return "--max-reply " + util::exact_size(*opts.max_reply) + " is under two pages (" +
               util::exact_size(2 * page_size) + "), where every reply would be copied";
    uint64_t wanted =
        opts.max_reply ? (*opts.max_reply + page_size - 1) / page_size * page_size : largest;
    if (opts.max_reply && wanted != *opts.max_reply)
        limits.rounding = "--max-reply " + util::exact_size(*opts.max_reply) +
                          " rounded up to whole pages: " + util::exact_size(wanted);
    if (wanted > largest)
        return "--max-reply " + util::exact_size(*opts.max_reply) +
               " is larger than FUSE allows here (" + util::exact_size(largest) +
               ": fs.fuse.max_pages_limit=" + std::to_string(kernel_pages) +
               (kernel_pages > libfuse_max_pages
                    ? ", libfuse " + std::to_string(libfuse_max_pages) + " pages"
                    : "") +
               ")";

    limits.pipe_size = 0;
    if (opts.splice != SpliceMode::off) {
        // A message is the header's slot plus one slot per page of data.
        Pipe probe;
        const size_t needed = static_cast<size_t>(wanted + page_size);
        if (probe.open(needed)) {
            limits.pipe_size = probe.slots() * page_size;
        } else {
            const uint64_t pipe_max = read_proc_number("/proc/sys/fs/pipe-max-size", 1 << 20);
            Pipe largest_pipe;
            largest_pipe.open(static_cast<size_t>(pipe_max));
            limits.pipe_size = largest_pipe.slots() * page_size;
            const uint64_t fits = limits.pipe_size > page_size ? limits.pipe_size - page_size : 0;
            if (fits < 2 * page_size)
                return "pipes cannot hold a spliced reply here; use --splice off";
            limits.clamp_reason =
                "a spliced message must fit one pipe: pipes are limited to " +
                util::exact_size(pipe_max) +
                " (fs.pipe-max-size) without CAP_SYS_RESOURCE, and the header takes a page";
            wanted = fits;
        }
    }
    limits.max_reply = wanted;
    limits.max_read = wanted;
    limits.max_write = wanted;
    limits.max_pages = wanted / page_size;
    limits.readahead = wanted;
    return {};
}

struct Workers::Impl {
    std::vector<std::thread> threads;
    std::atomic<unsigned> running{0};
    std::atomic<bool> failed{false};
};

Workers::Workers(Filesystem& fs, fuse_session* session, unsigned threads, int exit_eventfd)
    : impl_(new Impl) {
    impl_->running = threads;
    for (unsigned i = 0; i < threads; ++i) {
        impl_->threads.emplace_back([this, &fs, session, exit_eventfd] {
            // A umask of its own (CallerUmask): threads share one otherwise.
            if (unshare(CLONE_FS) < 0) spdlog::warn("unshare(CLONE_FS): {}", std::strerror(errno));
            {
                Worker worker(fs, session);
                if (!worker.run()) impl_->failed = true;
            }
            --impl_->running;
            const uint64_t one = 1;
            (void)!::write(exit_eventfd, &one, sizeof one);
        });
    }
}

Workers::~Workers() {
    join();
    delete impl_;
}

void Workers::join() {
    for (auto& t : impl_->threads)
        if (t.joinable()) t.join();
}

unsigned Workers::running() const {
    return impl_->running;
}

bool Workers::failed() const {
    return impl_->failed;
}

} // namespace splicefs
