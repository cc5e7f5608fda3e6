// The data path: requests in from /dev/fuse, file bytes out, and back.
//
// Worker threads receive requests themselves. READ and WRITE are answered
// here, by splice where the mode allows it and by a fair copy otherwise, and
// each reply or request is counted once, where its bytes move. Every other
// request is handed to libfuse (fuse_session_process_buf) and ops/.
#pragma once

#include "filesystem.hpp"

#include <string>

namespace splicefs {

// Settles the sizes in force for these options on this machine: max reply,
// max_read/max_write and the worker pipe size. Returns an error message for a
// size the kernel cannot honour; a size that only splicing cannot honour is
// clamped and the reason recorded in limits.clamp_reason.
std::string settle_limits(const Options& opts, Limits& limits);

// Serves requests on `threads` workers until the session ends (unmount or
// connection abort). Calls `on_worker_exit` as each worker returns.
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
