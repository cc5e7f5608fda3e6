#include "util/size.hpp"
#include "util/text.hpp"

#include <array>
#include <cctype>
#include <cstdio>

namespace util {

namespace {

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(a[i])) !=
            std::tolower(static_cast<unsigned char>(b[i])))
            return false;
    }
    return true;
}

std::optional<unsigned> suffix_shift(std::string_view suffix) {
    if (suffix.empty() || iequals(suffix, "b")) return 0;
    struct Unit {
        char letter;
        unsigned shift;
    };
    static constexpr std::array<Unit, 4> units{{{'k', 10}, {'m', 20}, {'g', 30}, {'t', 40}}};
    for (const auto& unit : units) {
        const char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(suffix[0])));
        if (lower != unit.letter) continue;
        const auto rest = suffix.substr(1);
        if (rest.empty() || iequals(rest, "b") || iequals(rest, "ib")) return unit.shift;
    }
    return std::nullopt;
}

} // namespace

std::optional<uint64_t> parse_size(std::string_view text, std::string* error) {
    auto fail = [&](const std::string& why) -> std::optional<uint64_t> {
        if (error) *error = printable(why);
        return std::nullopt;
    };
    if (text.empty()) return fail("empty size");
    size_t digits = 0;
    uint64_t value = 0;
    while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) {
        const uint64_t digit = static_cast<uint64_t>(text[digits] - '0');
        if (value > (UINT64_MAX - digit) / 10)
            return fail("size '" + std::string(text) + "' is too large");
        value = value * 10 + digit;
        ++digits;
    }
    if (digits == 0)
        return fail("'" + std::string(text) + "' is not a size (expected e.g. 128K or 1M)");
    const auto suffix = text.substr(digits);
    if (!suffix.empty() && (suffix[0] == '.' || suffix[0] == ','))
        return fail("size '" + std::string(text) + "' must be a whole number of bytes");
    const auto shift = suffix_shift(suffix);
    if (!shift) return fail("'" + std::string(text) + "' has an unknown unit (use K, M, G or T)");
    if (*shift > 0 && value > (UINT64_MAX >> *shift))
        return fail("size '" + std::string(text) + "' is too large");
    value <<= *shift;
    if (value == 0) return fail("size must be greater than zero");
    return value;
}

std::string human_bytes(uint64_t bytes) {
    static constexpr std::array<const char*, 5> units{"B", "KiB", "MiB", "GiB", "TiB"};
    double value = static_cast<double>(bytes);
    size_t unit = 0;
    while (value >= 1024.0 && unit + 1 < units.size()) {
        value /= 1024.0;
        ++unit;
    }
    char out[32];
    if (unit == 0)
        std::snprintf(out, sizeof out, "%llu B", static_cast<unsigned long long>(bytes));
    else
        std::snprintf(out, sizeof out, "%.1f %s", value, units[unit]);
    return out;
}

std::string exact_size(uint64_t bytes) {
    static constexpr std::array<std::pair<unsigned, char>, 3> units{
        {{30, 'G'}, {20, 'M'}, {10, 'K'}}};
    for (const auto& [shift, letter] : units) {
        const uint64_t unit = uint64_t{1} << shift;
        if (bytes >= unit && bytes % unit == 0) return std::to_string(bytes >> shift) + letter;
    }
    return std::to_string(bytes);
}

} // namespace util
