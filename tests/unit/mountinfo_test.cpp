#include "util/mountinfo.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace {

std::vector<util::MountEntry> parse(const std::string& text) {
    char path[] = "/tmp/mountinfo-test-XXXXXX";
    const int fd = mkstemp(path);
    EXPECT_GE(fd, 0);
    close(fd);
    std::ofstream(path) << text;
    auto entries = util::read_mountinfo(path);
    std::remove(path);
    return entries;
}

} // namespace

TEST(ReadMountinfo, ReadsEveryFieldAndUnescapesPaths) {
    const auto entries =
        parse("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
              "61 22 0:58 /sub\\040dir /mnt/with\\040space rw,nosuid master:3 - fuse.splicefs "
              "/srv/data rw,user_id=0,group_id=0\n"
              "not a mountinfo line\n");
    ASSERT_EQ(entries.size(), 2U);
    EXPECT_EQ(entries[0].id, 22);
    EXPECT_EQ(entries[0].parent_id, 1);
    EXPECT_EQ(entries[0].fstype, "ext4");
    const auto& fuse = entries[1];
    EXPECT_EQ(fuse.id, 61);
    EXPECT_EQ(fuse.parent_id, 22);
    EXPECT_EQ(fuse.major, 0U);
    EXPECT_EQ(fuse.minor, 58U);
    EXPECT_EQ(fuse.root, "/sub dir");
    EXPECT_EQ(fuse.mountpoint, "/mnt/with space");
    EXPECT_EQ(fuse.options, "rw,nosuid");
    EXPECT_EQ(fuse.fstype, "fuse.splicefs");
    EXPECT_EQ(fuse.source, "/srv/data");
    EXPECT_EQ(fuse.super_options, "rw,user_id=0,group_id=0");
}
