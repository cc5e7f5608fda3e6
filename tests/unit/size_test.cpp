#include "util/size.hpp"

#include <gtest/gtest.h>

using util::parse_size;

TEST(ParseSize, AcceptsPlainAndSuffixedSizes) {
    EXPECT_EQ(parse_size("1048576", nullptr), 1048576U);
    EXPECT_EQ(parse_size("4K", nullptr), 4096U);
    EXPECT_EQ(parse_size("128k", nullptr), 131072U);
    EXPECT_EQ(parse_size("1M", nullptr), 1048576U);
    EXPECT_EQ(parse_size("1MiB", nullptr), 1048576U);
    EXPECT_EQ(parse_size("1MB", nullptr), 1048576U);
    EXPECT_EQ(parse_size("2G", nullptr), 2147483648U);
    EXPECT_EQ(parse_size("99T", nullptr), 99ULL << 40);
}

TEST(ParseSize, RejectsBadInputWithAReason) {
    for (const char* bad : {"", "0", "0K", "-1", "1.5M", "0x10", "garbage", "1X", "M", " 1M", "1M ",
                            "99999999999999999999", "17179869184G"}) {
        std::string error;
        EXPECT_FALSE(parse_size(bad, &error)) << bad;
        EXPECT_FALSE(error.empty()) << bad;
        EXPECT_EQ(error.find('\n'), std::string::npos) << bad;
    }
}

TEST(ExactSize, UsesTheLargestExactUnit) {
    EXPECT_EQ(util::exact_size(1 << 20), "1M");
    EXPECT_EQ(util::exact_size(1020 * 1024), "1020K");
    EXPECT_EQ(util::exact_size(4097), "4097");
}
