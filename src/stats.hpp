// Exact counters of the data path. Each worker thread owns one
// ThreadCounters and is its only writer, so counting is a plain load and
// store (no lock, no atomic read-modify-write); readers sum all threads.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace splicefs {

// Why a READ reply or WRITE request was copied through the daemon's buffer.
enum class CopyReason {
    splice_off,     // the splice mode does not cover this direction
    small,          // under two pages: splicing costs more syscalls than it saves
    pipe_too_small, // the message would not fit the pipe (pipe could not grow)
    source_refused, // the source file cannot splice (EINVAL), remembered per open file
    short_read,     // the splice stopped short of the data that exists
    pipe_error,     // vmsplice or the splice into /dev/fuse failed unexpectedly
    error,          // the source returned an error; the reply carries it
    io_uring,       // carried by FUSE over io_uring, whose buffers are memory, not pipes
    count_
};
constexpr size_t copy_reason_count = static_cast<size_t>(CopyReason::count_);
const char* to_string(CopyReason reason);

// Histogram buckets: bucket 0 holds empty replies, bucket k holds sizes in
// (2^(k-1), 2^k]; so 4 KiB is bucket 12 and 1 MiB bucket 20.
constexpr size_t histogram_buckets = 32;
size_t histogram_bucket(uint64_t bytes);

class Counter {
  public:
    void add(uint64_t n) {
        value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    uint64_t get() const { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<uint64_t> value_{0};
};

struct DirectionCounters {
    Counter spliced_count, spliced_bytes, copied_count, copied_bytes;
    std::array<Counter, copy_reason_count> copy_reasons;
};

// Requests by FUSE opcode (1 LOOKUP ... 52 STATX; slot 0 holds any other):
// each is a round trip a caller waited for (FORGET, BATCH_FORGET aside).
constexpr size_t opcode_slots = 53;
const char* opcode_name(size_t opcode); // "LOOKUP", ...; nullptr for an unused number

struct ThreadCounters {
    DirectionCounters read, write;
    std::array<Counter, opcode_slots> requests;
    std::array<Counter, histogram_buckets> read_sizes;
    Counter read_full_size; // replies that carried exactly the max reply size in force
};

// What became of one READ reply or WRITE request: the data path's handlers
// say, count_read()/count_write() count it.
struct Transfer {
    bool spliced = false;
    CopyReason reason = CopyReason::error; // why it was copied, when not spliced
    uint64_t bytes = 0;                    // file data moved
    bool failed = false;                   // the reply carried an error, or was not wanted
};

// The only writers of a thread's counters.
void count_read(ThreadCounters& counters, const Transfer& reply, uint64_t max_reply);
void count_write(ThreadCounters& counters, const Transfer& request);
void count_request(ThreadCounters& counters, uint32_t opcode);

struct DirectionTotals {
    uint64_t spliced_count = 0, spliced_bytes = 0, copied_count = 0, copied_bytes = 0;
    std::array<uint64_t, copy_reason_count> copy_reasons{};
    uint64_t count() const { return spliced_count + copied_count; }
    uint64_t bytes() const { return spliced_bytes + copied_bytes; }
};

struct Totals {
    DirectionTotals read, write;
    std::array<uint64_t, opcode_slots> requests{};
    std::array<uint64_t, histogram_buckets> read_sizes{};
    uint64_t read_full_size = 0;
};

class Stats {
  public:
    ThreadCounters& register_thread();
    Totals totals() const;

    std::chrono::system_clock::time_point started = std::chrono::system_clock::now();

  private:
    mutable std::mutex mutex_; // guards the list only, never the counters
    std::vector<std::unique_ptr<ThreadCounters>> threads_;
};

} // namespace splicefs
