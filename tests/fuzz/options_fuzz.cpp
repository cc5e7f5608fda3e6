// libFuzzer target for option and size parsing: the input is split at NUL
// bytes into argv words. Parsing must never crash or throw, and an error
// must be one non-empty line.
#include "options.hpp"
#include "util/size.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string input(reinterpret_cast<const char*>(data), size);

    std::string error;
    const auto parsed_size = util::parse_size(input, &error);
    if (!parsed_size && (error.empty() || error.find('\n') != std::string::npos)) std::abort();
    if (parsed_size && *parsed_size == 0) std::abort();

    std::vector<std::string> args{"splicefs"};
    size_t start = 0;
    for (size_t i = 0; i <= input.size(); ++i) {
        if (i == input.size() || input[i] == '\0') {
            args.push_back(input.substr(start, i - start));
            start = i + 1;
        }
    }
    const auto result = splicefs::parse_mount_args(args);
    if (result.status == splicefs::ParseStatus::error &&
        (result.message.empty() || result.message.find('\n') != std::string::npos))
        std::abort();
    if (result.status == splicefs::ParseStatus::ok &&
        (result.options.source.empty() && result.options.mountpoint.empty()))
        std::abort();
    return 0;
}
