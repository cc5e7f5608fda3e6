// The sizes and modes in force for one mount: settled before mounting from
// the options and what this machine allows, owned by the Filesystem, read
// by the data path, INIT and the statistics.
#pragma once

#include "options.hpp"

#include <cstdint>
#include <string>

namespace splicefs {

// Sizes and modes actually in force, as opposed to those asked for.
// Written before the workers start (readahead once mounted, before the
// stats socket opens); read-only afterwards.
struct Limits {
    std::string splice_mode;
    bool splice_move = false;
    uint64_t max_reply_requested = 0; // 0: not given
    uint64_t max_reply = 0;           // bytes of data in one READ reply / WRITE request
    uint64_t max_read = 0, max_write = 0;
    uint64_t max_pages = 0;   // max_write in pages, as libfuse asks the kernel
    uint64_t pipe_size = 0;   // bytes per worker pipe
    uint64_t readahead = 0;   // bytes, of the mount's bdi (set once mounted)
    std::string clamp_reason; // why max_reply is below what was asked, or empty
    std::string rounding;     // how a --max-reply that was not whole pages was rounded, or empty
    std::string cache;
    unsigned threads = 0;
    uint64_t fd_limit = 0; // RLIMIT_NOFILE in force
};

// Settles the sizes in force for these options on this machine: max reply,
// max_read/max_write and the worker pipe size. Returns an error message for a
// size the kernel cannot honour; a size that only splicing cannot honour is
// clamped and the reason recorded in limits.clamp_reason.
std::string settle_limits(const Options& opts, Limits& limits);

} // namespace splicefs
