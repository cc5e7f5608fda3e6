// InodeTable's bookkeeping for the evictor: which entries it would ask the
// kernel to drop, in which order, and which never.
#include "inode.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

using namespace splicefs;

namespace {

class InodeTableTest : public ::testing::Test {
  protected:
    void SetUp() override {
        char dir_template[] = "/tmp/splicefs-unit-XXXXXX";
        ASSERT_NE(mkdtemp(dir_template), nullptr);
        dir_ = dir_template;
        table_ = std::make_unique<InodeTable>(open_path(""));
    }
    void TearDown() override {
        table_.reset();
        std::filesystem::remove_all(dir_);
    }

    util::Fd open_path(const std::string& relative) {
        return util::Fd(open((dir_ + "/" + relative).c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    }
    // Creates `relative` (a directory when it ends in '/') and looks it up
    // once as `name` in `parent`.
    Inode& add(const std::string& relative, const Inode& parent, const std::string& name) {
        const std::string path = dir_ + "/" + relative;
        if (relative.back() == '/')
            mkdir(path.c_str(), 0755);
        else
            close(open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
        util::Fd fd = open_path(relative);
        struct stat st {};
        fstat(fd.get(), &st);
        return table_->remember(std::move(fd), st, parent, name);
    }
    static std::set<std::string> names(const std::vector<InodeTable::Entry>& entries) {
        std::set<std::string> out;
        for (const auto& e : entries)
            out.insert(e.name);
        return out;
    }

    std::string dir_;
    std::unique_ptr<InodeTable> table_;
};

TEST_F(InodeTableTest, AsksForTheLeastRecentlyUsedFirstAndNeverTheRoot) {
    Inode& d = add("d/", table_->root(), "d");
    Inode& a = add("d/a", d, "a");
    Inode& b = add("d/b", d, "b");
    add("d/c", d, "c");
    table_->get(table_->id_of(a)); // a is used again: now as recent as c
    add("d/e", d, "e");
    ASSERT_EQ(table_->size(), 6U); // root, d, a, b, c, e

    const auto entries = table_->eviction_candidates(4, {});
    EXPECT_EQ(names(entries), (std::set<std::string>{"d", "b"}));
    for (const auto& e : entries) {
        if (e.name == "d") {
            EXPECT_EQ(e.parent, FUSE_ROOT_ID);
        } else {
            EXPECT_EQ(e.parent, table_->id_of(d));
            EXPECT_EQ(e.source_id, std::make_pair(b.dev, b.ino));
        }
    }
}

TEST_F(InodeTableTest, AskedEntriesAreNotAskedAgainUntilLookedUpAgain) {
    Inode& d = add("d/", table_->root(), "d");
    for (const char* name : {"a", "b", "c", "e"})
        add(std::string("d/") + name, d, name);
    EXPECT_EQ(names(table_->eviction_candidates(4, {})), (std::set<std::string>{"d", "a"}));
    Inode& d_again = add("d/", table_->root(), "d"); // the kernel took it back
    EXPECT_EQ(&d_again, &d);
    const auto again = names(table_->eviction_candidates(0, {}));
    EXPECT_TRUE(again.contains("d"));
    EXPECT_FALSE(again.contains("a")); // its FORGET may still be on the way
}

TEST_F(InodeTableTest, NamesOnThePathToAMountAreNeverAskedFor) {
    Inode& d = add("d/", table_->root(), "d");
    add("d/a", d, "a");
    add("d/b", d, "b");
    const auto entries = table_->eviction_candidates(0, {"d", "b"});
    EXPECT_EQ(names(entries), (std::set<std::string>{"a"}));
}

TEST_F(InodeTableTest, AnEntryWhoseDirectoryWasForgottenIsNotAskedFor) {
    Inode& d = add("d/", table_->root(), "d");
    add("d/a", d, "a");
    table_->forget(table_->id_of(d), 1);
    EXPECT_TRUE(table_->eviction_candidates(0, {}).empty());
}

TEST_F(InodeTableTest, RenamesThroughTheMountMoveTheName) {
    Inode& d = add("d/", table_->root(), "d");
    Inode& a = add("d/a", d, "a");
    ASSERT_EQ(rename((dir_ + "/d/a").c_str(), (dir_ + "/z").c_str()), 0);
    struct stat st {};
    fstat(a.fd.get(), &st);
    table_->renamed(st, table_->root(), "z");
    const auto entries = table_->eviction_candidates(1, {"d"});
    ASSERT_EQ(entries.size(), 1U);
    EXPECT_EQ(entries[0].name, "z");
    EXPECT_EQ(entries[0].parent, FUSE_ROOT_ID);
}

TEST_F(InodeTableTest, TheEvictorWakesWhenTheTablePassesItsMarkAndWhenStopped) {
    bool above = false;
    std::thread waiter([&] { above = table_->wait_for_more_than(2); });
    Inode& d = add("d/", table_->root(), "d");
    add("d/a", d, "a"); // three inodes: past the mark
    waiter.join();
    EXPECT_TRUE(above);
    std::thread stopped([&] { above = table_->wait_for_more_than(100); });
    table_->stop_waiting();
    stopped.join();
    EXPECT_FALSE(above);
}

} // namespace
