#include "util/text.hpp"

#include <gtest/gtest.h>

#include <string>

using util::printable;

TEST(Printable, LeavesOrdinaryTextAlone) {
    EXPECT_EQ(printable("max_reply=1M"), "max_reply=1M");
    EXPECT_EQ(printable("größe"), "größe"); // UTF-8 bytes above 0x7f pass through
    EXPECT_EQ(printable(""), "");
}

TEST(Printable, KeepsAnErrorMessageOnOneLine) {
    EXPECT_EQ(printable("a\nb\tc"), "a\\nb\\tc");
    EXPECT_EQ(printable(std::string("x\0y", 3)), "x\\x00y");
    EXPECT_EQ(printable("\x1b[31m\x7f"), "\\x1b[31m\\x7f");
}
