#include "stats.hpp"

#include <bit>

namespace splicefs {

const char* to_string(CopyReason reason) {
    switch (reason) {
    case CopyReason::splice_off:
        return "splice_off";
    case CopyReason::small:
        return "small";
    case CopyReason::pipe_too_small:
        return "pipe_too_small";
    case CopyReason::source_refused:
        return "source_refused";
    case CopyReason::short_read:
        return "short_read";
    case CopyReason::pipe_error:
        return "pipe_error";
    case CopyReason::error:
        return "error";
    case CopyReason::io_uring:
        return "io_uring";
    case CopyReason::count_:
        break;
    }
    return "?";
}

const char* opcode_name(size_t opcode) {
    // enum fuse_opcode of <linux/fuse.h>; 7 and 19 were never used.
    static constexpr const char* names[opcode_slots] = {
        "OTHER",        "LOOKUP",        "FORGET",      "GETATTR",  "SETATTR",  "READLINK",
        "SYMLINK",      nullptr,         "MKNOD",       "MKDIR",    "UNLINK",   "RMDIR",
        "RENAME",       "LINK",          "OPEN",        "READ",     "WRITE",    "STATFS",
        "RELEASE",      nullptr,         "FSYNC",       "SETXATTR", "GETXATTR", "LISTXATTR",
        "REMOVEXATTR",  "FLUSH",         "INIT",        "OPENDIR",  "READDIR",  "RELEASEDIR",
        "FSYNCDIR",     "GETLK",         "SETLK",       "SETLKW",   "ACCESS",   "CREATE",
        "INTERRUPT",    "BMAP",          "DESTROY",     "IOCTL",    "POLL",     "NOTIFY_REPLY",
        "BATCH_FORGET", "FALLOCATE",     "READDIRPLUS", "RENAME2",  "LSEEK",    "COPY_FILE_RANGE",
        "SETUPMAPPING", "REMOVEMAPPING", "SYNCFS",      "TMPFILE",  "STATX"};
    return opcode < opcode_slots ? names[opcode] : nullptr;
}

size_t histogram_bucket(uint64_t bytes) {
    if (bytes == 0) return 0;
    const size_t bucket = static_cast<size_t>(std::bit_width(bytes - 1));
    return bucket < histogram_buckets ? bucket : histogram_buckets - 1;
}

namespace {
void count(DirectionCounters& counters, const Transfer& transfer) {
    if (transfer.spliced) {
        counters.spliced_count.add(1);
        counters.spliced_bytes.add(transfer.bytes);
        return;
    }
    counters.copied_count.add(1);
    counters.copied_bytes.add(transfer.bytes);
    counters.copy_reasons[static_cast<size_t>(transfer.reason)].add(1);
}
} // namespace

void count_read(ThreadCounters& counters, const Transfer& reply, uint64_t max_reply) {
    count(counters.read, reply);
    if (reply.failed) return; // no data reply: not a size
    counters.read_sizes[histogram_bucket(reply.bytes)].add(1);
    if (reply.bytes == max_reply) counters.read_full_size.add(1);
}

void count_write(ThreadCounters& counters, const Transfer& request) {
    count(counters.write, request);
}

void count_request(ThreadCounters& counters, uint32_t opcode) {
    counters.requests[opcode < opcode_slots && opcode_name(opcode) ? opcode : 0].add(1);
}

ThreadCounters& Stats::register_thread() {
    std::lock_guard lock(mutex_);
    threads_.push_back(std::make_unique<ThreadCounters>());
    return *threads_.back();
}

namespace {
void add(DirectionTotals& total, const DirectionCounters& counters) {
    total.spliced_count += counters.spliced_count.get();
    total.spliced_bytes += counters.spliced_bytes.get();
    total.copied_count += counters.copied_count.get();
    total.copied_bytes += counters.copied_bytes.get();
    for (size_t i = 0; i < copy_reason_count; ++i)
        total.copy_reasons[i] += counters.copy_reasons[i].get();
}
} // namespace

Totals Stats::totals() const {
    Totals totals;
    std::lock_guard lock(mutex_);
    for (const auto& thread : threads_) {
        add(totals.read, thread->read);
        add(totals.write, thread->write);
        for (size_t i = 0; i < opcode_slots; ++i)
            totals.requests[i] += thread->requests[i].get();
        for (size_t i = 0; i < histogram_buckets; ++i)
            totals.read_sizes[i] += thread->read_sizes[i].get();
        totals.read_full_size += thread->read_full_size.get();
    }
    return totals;
}

} // namespace splicefs
