// FUSE over io_uring (Linux 6.14+, `--io-uring`): requests and replies are
// carried by one io_uring per CPU instead of read() and writev() on
// /dev/fuse. The kernel queues a request on the queue of the CPU that made
// it, and that queue's thread runs on that CPU: a request and its reply
// never wake a thread on another CPU, and the reply and the next request
// are one system call. /dev/fuse still carries INIT, FORGET and INTERRUPT
// (the workers of data_path.hpp) and every request until all queues are
// registered.
//
// The ring's buffers are ordinary memory, so data moves by copy, never by
// splice: every READ and WRITE over the ring is counted as copied with the
// reason io_uring. libfuse 3.14 knows nothing of it: its replies are
// captured on the thread that sends them (ReplyRedirect, channel.hpp).
#pragma once

#include <fuse_lowlevel.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace splicefs {

struct Filesystem;
struct UringRings; // the queues' rings, made at INIT (uring.cpp)

class Uring {
  public:
    explicit Uring(bool wanted);
    ~Uring();
    Uring(const Uring&) = delete;
    Uring& operator=(const Uring&) = delete;

    // The kernel's INIT request: whether it offers FUSE_OVER_IO_URING.
    void kernel_init(uint32_t kernel_flags2);
    // From the init operation: the flags2 bits the INIT reply must carry
    // (none unless asked for, offered and built in). The rings are made
    // here, before the kernel is asked: once it has agreed it holds every
    // request until all queues are registered, so a ring that cannot be
    // made (io_uring disabled, as in many containers) must mean no.
    uint32_t negotiate();
    bool negotiated() const { return negotiated_.load(); }

    // After the INIT reply has been sent: one queue thread per possible CPU.
    // A queue that ends on an error adds 1 to `exit_eventfd`, as a worker
    // that stops does (the mount is then served no more).
    void start(Filesystem& fs, fuse_session* session, int exit_eventfd);
    // Ends the queue threads (the connection is gone or going) and joins them.
    void stop();

    // For stats: "io_uring, N queues", or "/dev/fuse" and why.
    std::string state() const;
    uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }

  private:
    void serve_queue(Filesystem& fs, fuse_session* session, unsigned qid, int exit_eventfd);
    void fail(const std::string& why);

    bool wanted_;
    // Written while INIT is handled, read by stats and the main thread.
    std::atomic<bool> offered_{false}, negotiated_{false};
    std::atomic<unsigned> queues_{0}; // set when the queue threads start
    int stop_fd_ = -1;
    std::unique_ptr<UringRings> rings_;
    // Touched only by start() (the worker that handled INIT) and by stop()
    // (after the workers were joined).
    std::vector<std::thread> threads_;
    std::atomic<uint64_t> requests_{0};
    mutable std::mutex mutex_;
    std::string failure_; // why the rings stopped or never ran
};

} // namespace splicefs
