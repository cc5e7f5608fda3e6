#include "stats.hpp"
#include "stats_format.hpp"

#include <gtest/gtest.h>

#include <thread>

using namespace splicefs;

TEST(Histogram, BucketsAreUpperInclusivePowersOfTwo) {
    EXPECT_EQ(histogram_bucket(0), 0U);
    EXPECT_EQ(histogram_bucket(4096), 12U);
    EXPECT_EQ(histogram_bucket(4097), 13U);
    EXPECT_EQ(histogram_bucket(1020 * 1024), 20U);
    EXPECT_EQ(histogram_bucket(1 << 20), 20U);
}

TEST(Stats, SumsEveryThreadsCounters) {
    Stats stats;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&stats] {
            ThreadCounters& c = stats.register_thread();
            for (int i = 0; i < 1000; ++i) {
                c.read.spliced_count.add(1);
                c.read.spliced_bytes.add(4096);
            }
        });
    }
    for (auto& t : threads)
        t.join();
    const Totals totals = stats.totals();
    EXPECT_EQ(totals.read.spliced_count, 4000U);
    EXPECT_EQ(totals.read.bytes(), 4000U * 4096U);
}

TEST(ReportFormat, RoundTripsAwkwardValues) {
    const Report report{{"mountpoint", "/mnt/with space\nand newline\\"}, {"read.bytes", "42"}};
    EXPECT_EQ(decode_report(encode_report(report)), report);
    EXPECT_EQ(report_value(report, "read.bytes"), "42");
}

TEST(Stats, CountsRequestsByOpcodeAndOthersAsOther) {
    Stats stats;
    ThreadCounters& c = stats.register_thread();
    count_request(c, 1); // LOOKUP
    count_request(c, 1);
    count_request(c, 25);   // FLUSH
    count_request(c, 7);    // never used by FUSE
    count_request(c, 4096); // CUSE_INIT, beyond the table
    const Totals totals = stats.totals();
    EXPECT_STREQ(opcode_name(1), "LOOKUP");
    EXPECT_STREQ(opcode_name(25), "FLUSH");
    EXPECT_STREQ(opcode_name(44), "READDIRPLUS");
    EXPECT_STREQ(opcode_name(52), "STATX");
    EXPECT_EQ(opcode_name(7), nullptr);
    EXPECT_EQ(totals.requests[1], 2U);
    EXPECT_EQ(totals.requests[25], 1U);
    EXPECT_EQ(totals.requests[0], 2U);
}
