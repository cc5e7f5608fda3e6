#include "stats_format.hpp"

#include <sstream>

namespace splicefs {

std::string encode_report(const Report& report) {
    std::string out;
    for (const auto& [key, value] : report) {
        out += key;
        out += ' ';
        for (char c : value) {
            if (c == '\\')
                out += "\\\\";
            else if (c == '\n')
                out += "\\n";
            else if (c == '\r')
                out += "\\r";
            else
                out += c;
        }
        out += '\n';
    }
    return out;
}

Report decode_report(const std::string& text) {
    Report report;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        const auto space = line.find(' ');
        if (space == std::string::npos) continue;
        std::string value;
        for (size_t i = space + 1; i < line.size(); ++i) {
            if (line[i] == '\\' && i + 1 < line.size()) {
                const char next = line[++i];
                value += next == 'n' ? '\n' : next == 'r' ? '\r' : next;
            } else {
                value += line[i];
            }
        }
        report.emplace_back(line.substr(0, space), std::move(value));
    }
    return report;
}

std::string report_value(const Report& report, const std::string& key) {
    for (const auto& [k, v] : report)
        if (k == key) return v;
    return {};
}

} // namespace splicefs
