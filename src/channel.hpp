// The wire: FUSE messages in and out of /dev/fuse, by read and writev or
// through a worker's pipe by splice. The only code that builds a reply
// header of its own (libfuse builds those of the operations it answers,
// which passthrough.cpp may amend). Every function returns a count or 0
// for success and -errno for failure; -ENOENT from a reply means the
// kernel no longer waits for it (the request was interrupted).
#pragma once

#include "util/fd.hpp"
#include "util/pipe.hpp"

#include <linux/fuse.h>

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

namespace splicefs {

constexpr size_t write_header_size = sizeof(fuse_in_header) + sizeof(fuse_write_in);

// One request as received.
struct Request {
    const fuse_in_header* in = nullptr; // the header, then the opcode's argument
    size_t size = 0;                    // bytes of it in the channel's buffer
    // A WRITE received by splice: its data (this many bytes, the header's
    // size field aside) waits in the pipe, see Channel::pipe_data_*().
    size_t data_in_pipe = 0;
    template <typename Arg> const Arg& arg() const { return *reinterpret_cast<const Arg*>(in + 1); }
    // A WRITE's data in the buffer (received by read, or read out of the pipe).
    const char* write_data() const { return reinterpret_cast<const char*>(in) + write_header_size; }
};

class Channel {
  public:
    // `device`: /dev/fuse (not owned). `max_write`: the largest WRITE's data.
    // `pipe_size`: bytes for the splice pipe, 0 for none. `splice_requests`:
    // receive requests by splice, which the channel does only when the pipe
    // holds the largest request whole (the kernel fails a request that
    // does not fit with EIO).
    Channel(int device, size_t max_write, size_t pipe_size, bool splice_requests);
    virtual ~Channel() = default;
    Channel(const Channel&) = delete;
    Channel& operator=(const Channel&) = delete;

    // Set up as asked? (false: the pipe could not grow; pipe_slots() says
    // what it holds.)
    bool pipe_ok() const { return pipe_ok_; }
    size_t pipe_slots() const { return pipe_.slots(); }
    bool splices_requests() const { return splice_requests_; }

    // --- Receiving
    // Waits for the next request. -ENODEV: the mount is gone.
    int receive(Request& request);

    // --- Replying
    int reply_error(uint64_t unique, int err);
    // A READ reply of `size` bytes from data().
    int reply_data(uint64_t unique, size_t size);
    int reply_written(uint64_t unique, uint32_t size);

    // A spliced READ reply, in three steps: the header into the pipe (by
    // vmsplice, so that its length can still be fixed), the data from a
    // file into the pipe, then the whole message into the device. On a
    // failure of any step the pipe is left empty and errno as it was.
    int begin_spliced_reply(uint64_t unique);
    ssize_t splice_reply_data(int fd, uint64_t offset, size_t size, unsigned flags);
    int finish_spliced_reply(size_t data_size, unsigned flags);
    void discard_pipe() const { pipe_.drain(data_, data_room_); }

    // --- A WRITE's data waiting in the pipe (Request::data_in_pipe)
    ssize_t pipe_data_to_file(int fd, uint64_t offset, size_t size, unsigned flags);
    // Reads it into data(), where Request::write_data() then finds it.
    int pipe_data_to_buffer(const Request& request);

    // The page-aligned buffer a READ reply is copied into. A page of room
    // lies before it (where a received WRITE's headers go).
    char* data() const { return data_; }
    size_t data_room() const { return data_room_; }

    // Whether messages can move by splice on this channel (not over io_uring).
    virtual bool splices() const { return true; }
    // A whole reply that libfuse built (ReplyRedirect).
    ssize_t write_message(const iovec* iov, int count) { return device_writev(iov, count); }

  protected:
    // The syscalls that move bytes across the device, and the one that
    // moves a reply's data from the file; a test's fake channel overrides
    // them. Each returns what the syscall would, errno set.
    virtual ssize_t device_read(void* buf, size_t size);
    virtual ssize_t device_splice_to_pipe(int pipe_write_fd, size_t size);
    virtual ssize_t device_writev(const iovec* iov, int count);
    virtual ssize_t device_splice_from_pipe(int pipe_read_fd, size_t size, unsigned flags);
    virtual ssize_t file_splice_to_pipe(int fd, loff_t* offset, int pipe_write_fd, size_t size,
                                        unsigned flags);

  private:
    struct FreeBuffer {
        void operator()(char* p) const { std::free(p); }
    };
    int receive_by_read(Request& request);
    int receive_by_splice(Request& request);
    int send(const iovec* iov, int count);

    int device_;
    util::Pipe pipe_;
    bool pipe_ok_ = true, splice_requests_ = false;
    size_t max_write_ = 0;
    std::unique_ptr<char, FreeBuffer> buffer_;
    // A request lands write_header_size bytes before data_, so that a
    // WRITE's data is page-aligned (O_DIRECT sources need that).
    char* request_ = nullptr;
    char* data_ = nullptr;
    size_t data_room_ = 0;
    fuse_out_header spliced_header_{}; // in the pipe by reference until sent
};

// While one lives, the replies libfuse sends on this thread go to
// `channel` instead of /dev/fuse (FUSE over io_uring: libfuse 3.14 writes
// every reply from inside the fuse_reply_*() call on the handling thread).
class ReplyRedirect {
  public:
    explicit ReplyRedirect(Channel& channel);
    ~ReplyRedirect();
    ReplyRedirect(const ReplyRedirect&) = delete;
    ReplyRedirect& operator=(const ReplyRedirect&) = delete;
    // Sends a reply libfuse built: to this thread's channel if one is set,
    // else to /dev/fuse (`device`). The custom-io hook's writev.
    static ssize_t send(int device, iovec* iov, int count);
};

} // namespace splicefs
