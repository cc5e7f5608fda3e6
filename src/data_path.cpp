#include "data_path.hpp"

#include "creds.hpp"
#include "util/size.hpp"

#include <fcntl.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

namespace splicefs {

namespace {

size_t pages_spanned(uint64_t offset, size_t size) {
    const size_t page = util::page_size();
    return (offset % page + size + page - 1) / page;
}

constexpr Transfer failed_transfer{false, CopyReason::error, 0, true};

} // namespace

DataHandlers::DataHandlers(Filesystem& fs, Channel& channel)
    : fs_(fs), channel_(channel), splice_reads_(fs.opts.splice_reads()),
      splice_writes_(fs.opts.splice_writes()), move_flag_(fs.opts.splice_move ? SPLICE_F_MOVE : 0),
      max_reply_(fs.limits.max_reply) {}

void DataHandlers::sent(int result, const char* what) const {
    if (result < 0 && result != -ENOENT) // ENOENT: the request was interrupted
        spdlog::warn("{} /dev/fuse: {}", what, std::strerror(-result));
}

// --- READ ---------------------------------------------------------------

Transfer DataHandlers::read(const Request& request) {
    const auto& arg = request.arg<fuse_read_in>();
    const uint64_t unique = request.in->unique;
    auto& handle = handle_from_fh<FileHandle>(arg.fh);
    const size_t size = std::min<uint64_t>(arg.size, max_reply_);
    CopyReason reason = !splice_reads_        ? CopyReason::splice_off
                        : !channel_.splices() ? CopyReason::io_uring
                                              : why_not_splice(handle, arg.offset, size);
    if (reason == CopyReason::count_) {
        if (auto reply = read_by_splice(unique, handle, arg.offset, size, reason)) return *reply;
    }
    return read_by_copy(unique, handle, arg.offset, size, reason);
}

// CopyReason::count_ means "splice it".
CopyReason DataHandlers::why_not_splice(const FileHandle& handle, uint64_t offset,
                                        size_t size) const {
    if (size < 2 * util::page_size()) return CopyReason::small;
    if (handle.read_splice_refused.load(std::memory_order_relaxed))
        return CopyReason::source_refused;
    // One slot for the header, one per page of data.
    if (pages_spanned(offset, size) + 1 > channel_.pipe_slots()) return CopyReason::pipe_too_small;
    return CopyReason::count_;
}

std::optional<Transfer> DataHandlers::read_by_splice(uint64_t unique, FileHandle& handle,
                                                     uint64_t offset, size_t size,
                                                     CopyReason& reason) {
    if (channel_.begin_spliced_reply(unique) < 0) {
        reason = CopyReason::pipe_error;
        return std::nullopt;
    }
    const ssize_t got = channel_.splice_reply_data(handle.fd.get(), offset, size, move_flag_);
    if (got == -EINVAL) {
        handle.read_splice_refused.store(true, std::memory_order_relaxed);
        spdlog::debug("source refused splice; this open file will be copied");
        reason = CopyReason::source_refused;
        return std::nullopt;
    }
    if (got < 0) {
        reason = CopyReason::error; // the copy reports the error
        return std::nullopt;
    }
    // A short splice is only a valid reply at end of file: a short READ
    // reply makes the kernel shrink its idea of the file size.
    char probe;
    if (got > 0 && static_cast<size_t>(got) < size &&
        ::pread(handle.fd.get(), &probe, 1, static_cast<off_t>(offset) + got) != 0) {
        channel_.discard_pipe();
        reason = CopyReason::short_read;
        return std::nullopt;
    }
    const int result = channel_.finish_spliced_reply(static_cast<size_t>(got), move_flag_);
    if (result == -ENOENT) return failed_transfer; // the kernel no longer wants it
    if (result < 0) {
        sent(result, "splicing a reply into");
        reason = CopyReason::pipe_error;
        return std::nullopt;
    }
    return Transfer{true, CopyReason::count_, static_cast<uint64_t>(got), false};
}

// The fair copy: pread into the channel's aligned buffer, one writev. A
// source may return less than asked before the end of the file (FUSE, NFS,
// some devices): a short reply would make the kernel shrink its idea of the
// file size, so read on until the size or the end of the file.
Transfer DataHandlers::read_by_copy(uint64_t unique, FileHandle& handle, uint64_t offset,
                                    size_t size, CopyReason reason) {
    char* data = channel_.data();
    ssize_t got = 0;
    while (static_cast<size_t>(got) < size) {
        const ssize_t n = ::pread(handle.fd.get(), data + got, size - static_cast<size_t>(got),
                                  static_cast<off_t>(offset) + got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && got == 0) got = -errno;
        if (n <= 0) break; // end of file, or an error after data: what arrived
        got += n;
    }
    if (got < 0) {
        sent(channel_.reply_error(unique, static_cast<int>(-got)), "writing a reply to");
        return failed_transfer;
    }
    sent(channel_.reply_data(unique, static_cast<size_t>(got)), "writing a reply to");
    return Transfer{false, reason, static_cast<uint64_t>(got), false};
}

// --- WRITE --------------------------------------------------------------

Transfer DataHandlers::write(Request& request) {
    auto& handle = handle_from_fh<FileHandle>(request.arg<fuse_write_in>().fh);
    if (request.data_in_pipe > 0) return write_from_pipe(request, handle);
    const CopyReason reason = !splice_writes_                ? CopyReason::splice_off
                              : !channel_.splices()          ? CopyReason::io_uring
                              : !channel_.splices_requests() ? CopyReason::pipe_too_small
                                                             : CopyReason::small;
    return write_from_buffer(request, handle, reason);
}

Transfer DataHandlers::write_from_buffer(const Request& request, FileHandle& handle,
                                         CopyReason reason) {
    const auto& arg = request.arg<fuse_write_in>();
    const int fd = handle.fd_for_write(arg.write_flags);
    ssize_t n;
    {
        ModifyAsCaller as_caller(fs_, *request.in, arg, fd);
        n = as_caller.failed()
                ? -EPERM
                : ::pwrite(fd, request.write_data(), arg.size, static_cast<off_t>(arg.offset));
        if (n < 0 && !as_caller.failed()) n = -errno;
    }
    reply_write(request.in->unique, n);
    return n < 0 ? failed_transfer : Transfer{false, reason, static_cast<uint64_t>(n), false};
}

Transfer DataHandlers::write_from_pipe(Request& request, FileHandle& handle) {
    const auto& arg = request.arg<fuse_write_in>();
    const uint64_t unique = request.in->unique;
    if (request.data_in_pipe != arg.size) {
        channel_.discard_pipe();
        reply_write(unique, -EIO);
        return failed_transfer;
    }
    bool refused = handle.write_splice_refused.load(std::memory_order_relaxed);
    ssize_t done = 0;
    if (!refused) {
        const int fd = handle.fd_for_write(arg.write_flags);
        ModifyAsCaller as_caller(fs_, *request.in, arg, fd);
        done = as_caller.failed() ? -EPERM : splice_to_file(fd, arg, refused);
    }
    if (refused) {
        handle.write_splice_refused.store(true, std::memory_order_relaxed);
        // The data is still in the pipe, all of it: copy it.
        if (channel_.pipe_data_to_buffer(request) < 0) {
            reply_write(unique, -EIO);
            return failed_transfer;
        }
        request.data_in_pipe = 0;
        return write_from_buffer(request, handle, CopyReason::source_refused);
    }
    if (done != static_cast<ssize_t>(arg.size)) channel_.discard_pipe();
    reply_write(unique, done);
    if (done == static_cast<ssize_t>(arg.size))
        return Transfer{true, CopyReason::count_, arg.size, false};
    return done < 0 ? failed_transfer
                    : Transfer{false, CopyReason::error, static_cast<uint64_t>(done), false};
}

// Like write(2): what was written counts, else the error. `refused`: the
// file cannot take a splice (EINVAL before any data moved).
ssize_t DataHandlers::splice_to_file(int fd, const fuse_write_in& arg, bool& refused) {
    size_t done = 0;
    while (done < arg.size) {
        const ssize_t n =
            channel_.pipe_data_to_file(fd, arg.offset + done, arg.size - done, move_flag_);
        if (n == -EINVAL && done == 0) {
            refused = true;
            return 0;
        }
        if (n <= 0) return done > 0 ? static_cast<ssize_t>(done) : (n < 0 ? n : -EIO);
        done += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(done);
}

void DataHandlers::reply_write(uint64_t unique, ssize_t result) {
    sent(result < 0 ? channel_.reply_error(unique, static_cast<int>(-result))
                    : channel_.reply_written(unique, static_cast<uint32_t>(result)),
         "writing a reply to");
}

// --- Workers ------------------------------------------------------------

namespace {

// One worker: its own channel (pipe, buffer), its own counters.
class Worker {
  public:
    Worker(Filesystem& fs, fuse_session* session, int exit_eventfd)
        : fs_(fs), session_(session), exit_eventfd_(exit_eventfd),
          counters_(fs.stats.register_thread()),
          channel_(fuse_session_fd(session), fs.limits.max_write,
                   fs.opts.splice_reads() || fs.opts.splice_writes() ? fs.limits.pipe_size : 0,
                   fs.opts.splice_writes()),
          handlers_(fs, channel_) {
        if (!channel_.pipe_ok())
            spdlog::warn("worker pipe could not grow to {}: large messages will be copied",
                         util::human_bytes(fs.limits.pipe_size));
        if (fs.opts.splice_writes() && !channel_.splices_requests())
            spdlog::warn("worker pipe holds {}, not the largest request: WRITE requests will be "
                         "copied",
                         util::human_bytes(channel_.pipe_slots() * util::page_size()));
    }

    // Returns false when the worker stopped on an error rather than at the
    // end of the session (an unmount gives ENODEV).
    bool run() {
        bool ended_cleanly = true;
        while (!fuse_session_exited(session_)) {
            Request request;
            const int result = channel_.receive(request);
            if (result == -ENODEV) break; // unmounted
            if (result == -EINTR || result == -EAGAIN || result == -ENOENT) continue;
            if (result < 0) {
                spdlog::error("reading /dev/fuse: {}", std::strerror(-result));
                ended_cleanly = false;
                break;
            }
            dispatch(request);
        }
        fuse_session_exit(session_);
        return ended_cleanly;
    }

  private:
    // Request in, bytes out, counted: READ and WRITE here, the rest by libfuse.
    void dispatch(Request& request) {
        const uint32_t opcode = request.in->opcode;
        count_request(counters_, opcode);
        if (opcode == FUSE_READ && fs_.initialized) {
            count_read(counters_, handlers_.read(request), fs_.limits.max_reply);
            return;
        }
        if (opcode == FUSE_WRITE && fs_.initialized) {
            count_write(counters_, handlers_.write(request));
            return;
        }
        if (opcode == FUSE_INIT)
            fs_.passthrough.kernel_init(request.arg<fuse_init_in>(),
                                        request.size - sizeof *request.in);
        fuse_buf buf{};
        buf.size = request.size;
        buf.mem = const_cast<fuse_in_header*>(request.in);
        fuse_session_process_buf(session_, &buf);
        // The kernel has taken the INIT reply: the io_uring queues may
        // register now (until they all have, requests wait in the kernel).
        if (opcode == FUSE_INIT) fs_.uring.start(fs_, session_, exit_eventfd_);
    }

    Filesystem& fs_;
    fuse_session* session_;
    int exit_eventfd_;
    ThreadCounters& counters_;
    Channel channel_;
    DataHandlers handlers_;
};

} // namespace

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
                Worker worker(fs, session, exit_eventfd);
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
