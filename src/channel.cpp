#include "channel.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace splicefs {

namespace {

constexpr size_t out_header_size = sizeof(fuse_out_header);
// Room for any request but WRITE: a 64 KiB xattr value with its name.
constexpr size_t smallest_room = size_t{128} * 1024;

thread_local Channel* redirected_replies = nullptr;

int minus_errno_or(int fallback) {
    return errno ? -errno : -fallback;
}

} // namespace

Channel::Channel(int device, size_t max_write, size_t pipe_size, bool splice_requests)
    : device_(device), max_write_(max_write) {
    const size_t page = util::page_size();
    data_room_ = std::max(max_write, smallest_room) + page;
    buffer_.reset(static_cast<char*>(std::aligned_alloc(page, page + data_room_)));
    request_ = buffer_.get() + page - write_header_size;
    data_ = buffer_.get() + page;
    if (pipe_size > 0) pipe_ok_ = pipe_.open(pipe_size);
    // Its headers and data fill pages one after the other.
    const size_t largest_request = max_write + write_header_size;
    splice_requests_ =
        splice_requests && pipe_size > 0 && pipe_.slots() >= (largest_request + page - 1) / page;
}

int Channel::receive(Request& request) {
    request = Request{};
    return splice_requests_ ? receive_by_splice(request) : receive_by_read(request);
}

int Channel::receive_by_read(Request& request) {
    const ssize_t n = device_read(request_, data_room_ + write_header_size);
    if (n < 0) return -errno;
    if (static_cast<size_t>(n) < sizeof(fuse_in_header)) return -EIO;
    request.in = reinterpret_cast<const fuse_in_header*>(request_);
    request.size = static_cast<size_t>(n);
    return 0;
}

// WRITE data stays in the pipe, for the handler to splice into the file;
// every other request is read out of the pipe into the buffer.
int Channel::receive_by_splice(Request& request) {
    const size_t want = max_write_ + write_header_size + util::page_size();
    const ssize_t n = device_splice_to_pipe(pipe_.write_fd(), want);
    if (n < 0) return -errno;
    const auto size = static_cast<size_t>(n);
    const size_t head = std::min(size, write_header_size);
    if (!util::read_exactly(pipe_.read_fd(), request_, head)) {
        discard_pipe();
        return -EIO;
    }
    request.in = reinterpret_cast<const fuse_in_header*>(request_);
    if (head == write_header_size && request.in->opcode == FUSE_WRITE &&
        size >= write_header_size + util::page_size()) {
        request.size = head;
        request.data_in_pipe = size - head;
        return 0;
    }
    if (!util::read_exactly(pipe_.read_fd(), request_ + head, size - head)) {
        discard_pipe();
        return -EIO;
    }
    request.size = size;
    return 0;
}

int Channel::send(const iovec* iov, int count) {
    return device_writev(iov, count) < 0 ? -errno : 0;
}

int Channel::reply_error(uint64_t unique, int err) {
    fuse_out_header out{out_header_size, -err, unique};
    const iovec iov{&out, sizeof out};
    return send(&iov, 1);
}

int Channel::reply_data(uint64_t unique, size_t size) {
    fuse_out_header out{static_cast<uint32_t>(out_header_size + size), 0, unique};
    const iovec iov[2] = {{&out, out_header_size}, {data_, size}};
    return send(iov, 2);
}

int Channel::reply_written(uint64_t unique, uint32_t size) {
    fuse_out_header out{out_header_size + sizeof(fuse_write_out), 0, unique};
    fuse_write_out arg{size, 0};
    const iovec iov[2] = {{&out, sizeof out}, {&arg, sizeof arg}};
    return send(iov, 2);
}

int Channel::begin_spliced_reply(uint64_t unique) {
    // vmsplice puts this header's page into the pipe by reference: the
    // length written into it later is what the device receives.
    spliced_header_ = fuse_out_header{0, 0, unique};
    iovec header{&spliced_header_, out_header_size};
    errno = 0;
    if (vmsplice(pipe_.write_fd(), &header, 1, 0) == static_cast<ssize_t>(out_header_size))
        return 0;
    const int result = minus_errno_or(EIO);
    discard_pipe();
    return result;
}

ssize_t Channel::splice_reply_data(int fd, uint64_t offset, size_t size, unsigned flags) {
    auto file_offset = static_cast<loff_t>(offset);
    const ssize_t got = file_splice_to_pipe(fd, &file_offset, pipe_.write_fd(), size, flags);
    if (got >= 0) return got;
    const int result = -errno;
    discard_pipe();
    return result;
}

int Channel::finish_spliced_reply(size_t data_size, unsigned flags) {
    const size_t total = out_header_size + data_size;
    spliced_header_.len = static_cast<uint32_t>(total);
    errno = 0;
    const ssize_t sent = device_splice_from_pipe(pipe_.read_fd(), total, flags);
    if (sent == static_cast<ssize_t>(total)) return 0;
    const int result = minus_errno_or(EIO); // a short splice: nothing the kernel can use
    discard_pipe();
    return result;
}

ssize_t Channel::pipe_data_to_file(int fd, uint64_t offset, size_t size, unsigned flags) {
    auto file_offset = static_cast<loff_t>(offset);
    const ssize_t n = splice(pipe_.read_fd(), nullptr, fd, &file_offset, size, flags);
    return n < 0 ? -errno : n;
}

int Channel::pipe_data_to_buffer(const Request& request) {
    if (util::read_exactly(pipe_.read_fd(), data_, request.data_in_pipe)) return 0;
    discard_pipe();
    return -EIO;
}

ssize_t Channel::device_read(void* buf, size_t size) {
    return ::read(device_, buf, size);
}

ssize_t Channel::device_splice_to_pipe(int pipe_write_fd, size_t size) {
    return splice(device_, nullptr, pipe_write_fd, nullptr, size, 0);
}

ssize_t Channel::device_writev(const iovec* iov, int count) {
    return ::writev(device_, iov, count);
}

ssize_t Channel::device_splice_from_pipe(int pipe_read_fd, size_t size, unsigned flags) {
    return splice(pipe_read_fd, nullptr, device_, nullptr, size, flags);
}

ssize_t Channel::file_splice_to_pipe(int fd, loff_t* offset, int pipe_write_fd, size_t size,
                                     unsigned flags) {
    return splice(fd, offset, pipe_write_fd, nullptr, size, flags);
}

ReplyRedirect::ReplyRedirect(Channel& channel) {
    redirected_replies = &channel;
}

ReplyRedirect::~ReplyRedirect() {
    redirected_replies = nullptr;
}

ssize_t ReplyRedirect::send(int device, iovec* iov, int count) {
    if (redirected_replies) return redirected_replies->write_message(iov, count);
    return ::writev(device, iov, count);
}

} // namespace splicefs
