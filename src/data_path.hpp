// The data path: requests in from /dev/fuse, file bytes out, and back.
//
// Each worker thread owns a Channel (the wire, channel.hpp) and receives
// requests itself. READ and WRITE are answered here by DataHandlers, by
// splice where the mode allows it and by a fair copy otherwise; each handler
// returns a Transfer, which the worker counts once (count_read/count_write,
// stats.hpp). Every other request is handed to libfuse
// (fuse_session_process_buf) and ops/.
#pragma once

#include "channel.hpp"
#include "filesystem.hpp"

#include <optional>

namespace splicefs {

// READ and WRITE on one channel: one per worker.
class DataHandlers {
  public:
    DataHandlers(Filesystem& fs, Channel& channel);
    // Each answers the request on the channel and says what happened.
    Transfer read(const Request& request);
    Transfer write(Request& request);

  private:
    Transfer read_by_copy(uint64_t unique, FileHandle& handle, uint64_t offset, size_t size,
                          CopyReason reason);
    // The reply, or nullopt with `reason` why it must be copied instead.
    std::optional<Transfer> read_by_splice(uint64_t unique, FileHandle& handle, uint64_t offset,
                                           size_t size, CopyReason& reason);
    CopyReason why_not_splice(const FileHandle& handle, uint64_t offset, size_t size) const;
    Transfer write_from_buffer(const Request& request, FileHandle& handle, CopyReason reason);
    Transfer write_from_pipe(Request& request, FileHandle& handle);
    ssize_t splice_to_file(int fd, const fuse_write_in& arg, bool& refused);
    void reply_write(uint64_t unique, ssize_t result);
    void sent(int result, const char* what) const;

    Filesystem& fs_;
    Channel& channel_;
    bool splice_reads_, splice_writes_;
    unsigned move_flag_;
    uint64_t max_reply_;
};

// Serves requests on `threads` workers until the session ends (unmount or
// connection abort); each worker adds 1 to `exit_eventfd` as it returns.
class Workers {
  public:
    Workers(Filesystem& fs, fuse_session* session, unsigned threads, int exit_eventfd);
    ~Workers();
    Workers(const Workers&) = delete;
    Workers& operator=(const Workers&) = delete;
    void join();
    unsigned running() const;
    // A worker stopped on an error (the connection was aborted, /dev/fuse
    // failed), not at the end of the session.
    bool failed() const;

  private:
    struct Impl;
    Impl* impl_;
};

} // namespace splicefs
