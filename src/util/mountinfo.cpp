#include "util/mountinfo.hpp"

#include <fstream>
#include <sstream>

namespace util {

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(const std::string& text) {
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\\' && i + 3 < text.size()) {
            const std::string octal = text.substr(i + 1, 3);
            if (octal.find_first_not_of("01234567") == std::string::npos) {
                out += static_cast<char>(std::stoi(octal, nullptr, 8));
                i += 3;
                continue;
            }
        }
        out += text[i];
    }
    return out;
}

} // namespace

std::vector<MountEntry> read_mountinfo(const std::string& path) {
    std::vector<MountEntry> entries;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string id, parent, devnums, root, mountpoint, options, field;
        fields >> id >> parent >> devnums >> root >> mountpoint >> options;
        while (fields >> field && field != "-") {
        }
        MountEntry entry;
        fields >> entry.fstype >> entry.source >> entry.super_options;
        const auto colon = devnums.find(':');
        if (colon == std::string::npos) continue;
        entry.major = static_cast<unsigned>(std::stoul(devnums.substr(0, colon)));
        entry.minor = static_cast<unsigned>(std::stoul(devnums.substr(colon + 1)));
        entry.mountpoint = unescape(mountpoint);
        entry.source = unescape(entry.source);
        entry.options = options;
        entries.push_back(std::move(entry));
    }
    return entries;
}

std::optional<MountEntry> find_mount(const std::string& path) {
    std::optional<MountEntry> found;
    for (auto& entry : read_mountinfo())
        if (entry.mountpoint == path) found = std::move(entry);
    return found;
}

} // namespace util
