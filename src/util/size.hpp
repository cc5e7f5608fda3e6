// Parsing and printing of byte sizes ("128K", "1MiB", "1048576").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace util {

// Parses a positive whole number of bytes with an optional binary suffix:
// K, KB, KiB, M, MB, MiB, G, GB, GiB (all powers of 1024, case-insensitive).
// Returns nullopt and sets *error for empty input, zero, signs, fractions,
// hexadecimal, unknown suffixes and values that overflow 64 bits.
std::optional<uint64_t> parse_size(std::string_view text, std::string* error);

// "1.5 MiB", "512 B": for people, not for parsing back.
std::string human_bytes(uint64_t bytes);

// "1M", "1020K", "4096": exact, in the largest unit that divides the value.
std::string exact_size(uint64_t bytes);

} // namespace util
