#include "inode_evictor.hpp"
#include "util/mountinfo.hpp"

#include <gtest/gtest.h>
#include <sys/sysmacros.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

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

util::MountEntry mount(int id, int parent, unsigned major, unsigned minor, std::string root,
                       std::string mountpoint) {
    util::MountEntry entry;
    entry.id = id;
    entry.parent_id = parent;
    entry.major = major;
    entry.minor = minor;
    entry.root = std::move(root);
    entry.mountpoint = std::move(mountpoint);
    return entry;
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

TEST(NamesLeadingToMounts, FollowsMountsOnThisFilesystemOnly) {
    const dev_t ours = makedev(0, 58);
    const std::vector<util::MountEntry> mounts{
        mount(1, 0, 8, 1, "/", "/"),
        mount(50, 1, 0, 58, "/", "/mnt"),               // the splicefs mount
        mount(51, 50, 0, 30, "/", "/mnt/x/y"),          // on entry x/y
        mount(52, 1, 0, 58, "/a/b", "/alias"),          // bind mount of its a/b
        mount(53, 52, 0, 30, "/", "/alias/inner"),      // on entry a/b/inner
        mount(54, 53, 0, 31, "/", "/alias/inner/deep"), // on another filesystem
        mount(55, 1, 0, 30, "/", "/other"),             // elsewhere
        mount(56, 50, 0, 30, "/", "/mnt"),              // stacked on the root
    };
    std::set<std::string> names;
    splicefs::add_names_leading_to_mounts_on(ours, mounts, names);
    EXPECT_EQ(names, (std::set<std::string>{"x", "y", "a", "b", "inner"}));

    names.clear();
    splicefs::add_names_leading_to_mounts_on(makedev(0, 99), mounts, names);
    EXPECT_TRUE(names.empty());
}

TEST(MountinfoOfEachNamespace, StartsWithItsOwn) {
    const auto paths = util::mountinfo_of_each_namespace();
    ASSERT_FALSE(paths.empty());
    EXPECT_EQ(paths.front(), "/proc/self/mountinfo");
    EXPECT_FALSE(util::read_mountinfo(paths.front()).empty());
}
