#include "limits.hpp"

#include "util/pipe.hpp"
#include "util/size.hpp"

#include <algorithm>
#include <fstream>

namespace splicefs {

namespace {

// libfuse 3.14 caps max_write at FUSE_MAX_MAX_PAGES pages.
constexpr uint64_t libfuse_max_pages = 256;

uint64_t read_proc_number(const char* path, uint64_t fallback) {
    std::ifstream in(path);
    uint64_t value = 0;
    return (in >> value) ? value : fallback;
}

// The largest pipe an unprivileged worker can have, or an error message.
std::string clamp_to_pipe(uint64_t& wanted, Limits& limits) {
    const size_t page = util::page_size();
    const uint64_t pipe_max = read_proc_number("/proc/sys/fs/pipe-max-size", 1 << 20);
    util::Pipe largest_pipe;
    largest_pipe.open(static_cast<size_t>(pipe_max));
    limits.pipe_size = largest_pipe.slots() * page;
    const uint64_t fits = limits.pipe_size > page ? limits.pipe_size - page : 0;
    if (fits < 2 * page) return "pipes cannot hold a spliced reply here; use --splice off";
    limits.clamp_reason =
        "a spliced message must fit one pipe: pipes are limited to " + util::exact_size(pipe_max) +
        " (fs.pipe-max-size) without CAP_SYS_RESOURCE, and the header takes a page";
    wanted = fits;
    return {};
}

} // namespace

std::string settle_limits(const Options& opts, Limits& limits) {
    const size_t page = util::page_size();
    const uint64_t kernel_pages = read_proc_number("/proc/sys/fs/fuse/max_pages_limit", 256);
    const uint64_t max_pages = std::min(kernel_pages, libfuse_max_pages);
    const uint64_t largest = max_pages * page;
    limits.splice_mode = to_string(opts.splice);
    limits.splice_move = opts.splice_move;
    limits.cache = to_string(opts.cache);
    limits.threads = opts.worker_threads();
    limits.max_reply_requested = opts.max_reply.value_or(0);
    // Replies under two pages are never spliced (CopyReason::small): such a
    // size would make every reply a copy.
    if (opts.max_reply && *opts.max_reply < 2 * page)
        return "--max-reply " + util::exact_size(*opts.max_reply) + " is under two pages (" +
               util::exact_size(2 * page) + "), where every reply would be copied";
    uint64_t wanted = opts.max_reply ? (*opts.max_reply + page - 1) / page * page : largest;
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
        util::Pipe probe;
        if (probe.open(static_cast<size_t>(wanted + page)))
            limits.pipe_size = probe.slots() * page;
        else if (auto error = clamp_to_pipe(wanted, limits); !error.empty())
            return error;
    }
    limits.max_reply = wanted;
    limits.max_read = wanted;
    limits.max_write = wanted;
    limits.max_pages = wanted / page;
    limits.readahead = wanted;
    return {};
}

} // namespace splicefs
