// The report a daemon sends to `splicefs stats`: one "key value" pair per
// line, keys dotted ("read.copy_reasons.small"), values to the end of the
// line with backslash, newline and carriage return escaped. The client turns
// it into human, JSON or Prometheus output (stats_command.cpp).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace splicefs {

using Report = std::vector<std::pair<std::string, std::string>>;

std::string encode_report(const Report& report);
Report decode_report(const std::string& text);
// Value of `key`, or "" if absent.
std::string report_value(const Report& report, const std::string& key);

} // namespace splicefs
