// Text for people: user input made safe to quote. No project knowledge.
#pragma once

#include <string>
#include <string_view>

namespace util {

// `text` with control characters written as \n, \t or \xNN, so that an
// error message quoting user input stays one line.
std::string printable(std::string_view text);

} // namespace util
