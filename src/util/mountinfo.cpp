#include "util/mountinfo.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <cctype>
#include <fstream>
#include <memory>
#include <set>
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
        std::string root, mountpoint, options, field;
        MountEntry entry;
        char colon = 0;
        // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
        fields >> entry.id >> entry.parent_id >> entry.major >> colon >> entry.minor >> root >>
            mountpoint >> options;
        if (!fields || colon != ':') continue;
        while (fields >> field && field != "-") {
        }
        fields >> entry.fstype >> entry.source >> entry.super_options;
        entry.root = unescape(root);
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
