// The inode store's fd cache: it stays within its budget, and an inode whose
// fd it closed is reopened as the same source inode, by file handle or by
// name, or refused with ESTALE, never as another file.
#include "inode.hpp"

#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

using namespace splicefs;

namespace {

constexpr size_t budget = 16; // the smallest the table accepts

size_t open_fds() {
    size_t n = 0;
    for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd"))
        ++n;
    return n;
}

// Parameter: whether the table may use file handles.
class InodeTableTest : public ::testing::TestWithParam<bool> {
  protected:
    void SetUp() override {
        char dir_template[] = "/tmp/splicefs-unit-XXXXXX";
        ASSERT_NE(mkdtemp(dir_template), nullptr);
        dir_ = dir_template;
        table_ = std::make_unique<InodeTable>(open_path(""), budget, GetParam());
        if (GetParam() && !table_->fd_stats().file_handles)
            GTEST_SKIP() << "file handles need CAP_DAC_READ_SEARCH and a source that exports";
    }
    void TearDown() override {
        table_.reset();
        std::filesystem::remove_all(dir_);
    }

    util::Fd open_path(const std::string& relative) {
        return util::Fd(open((dir_ + "/" + relative).c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    }
    // Creates `relative` (a directory when it ends in '/') and looks it up
    // once as `name` in `parent`, as lookup_entry() does.
    Inode& add(const std::string& relative, Inode& parent, const std::string& name) {
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
    // What path_fd() gives for `inode`: its (dev, ino), or the error.
    std::pair<int, ino_t> reach(Inode& inode) {
        const PathFd fd = table_->path_fd(inode);
        if (!fd) return {fd.error(), 0};
        struct stat st {};
        fstat(fd.get(), &st);
        EXPECT_EQ(st.st_dev, inode.dev);
        return {0, st.st_ino};
    }

    std::string dir_;
    std::unique_ptr<InodeTable> table_;
};

INSTANTIATE_TEST_SUITE_P(Identity, InodeTableTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "FileHandles" : "Names"; });

TEST_P(InodeTableTest, StaysWithinItsBudgetAndReopensEveryInodeAsItself) {
    const size_t fds_before = open_fds();
    Inode& d = add("d/", table_->root(), "d");
    std::vector<Inode*> files;
    for (int i = 0; i < 200; ++i)
        files.push_back(&add("d/f" + std::to_string(i), d, "f" + std::to_string(i)));
    EXPECT_LE(table_->fd_stats().open, budget);
    // The root, a mount fd and the cache: no more.
    EXPECT_LE(open_fds(), fds_before + budget + 2);
    for (Inode* inode : files)
        EXPECT_EQ(reach(*inode), std::make_pair(0, inode->ino));
    EXPECT_GT(table_->fd_stats().reopened, 0U) << "nothing was closed: the test proves nothing";
    EXPECT_LE(open_fds(), fds_before + budget + 2);
}

TEST_P(InodeTableTest, FollowsRenamesThroughTheMount) {
    Inode& d = add("d/", table_->root(), "d");
    Inode& e = add("e/", table_->root(), "e");
    Inode& a = add("d/a", d, "a");
    ASSERT_EQ(rename((dir_ + "/d/a").c_str(), (dir_ + "/e/z").c_str()), 0);
    struct stat st {};
    ASSERT_EQ(stat((dir_ + "/e/z").c_str(), &st), 0);
    table_->renamed(st, e, "z");
    table_->forget(table_->id_of(d), 1);
    for (int i = 0; i < 40; ++i) // push every fd out of the cache
        add("e/g" + std::to_string(i), e, "g" + std::to_string(i));
    EXPECT_EQ(reach(a), std::make_pair(0, a.ino));
}

TEST_P(InodeTableTest, ANameGivenToAnotherFileOutsideTheMountIsNotFollowed) {
    Inode& d = add("d/", table_->root(), "d");
    Inode& a = add("d/a", d, "a");
    ASSERT_EQ(rename((dir_ + "/d/a").c_str(), (dir_ + "/kept").c_str()), 0);
    close(open((dir_ + "/d/a").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    for (int i = 0; i < 40; ++i)
        add("d/g" + std::to_string(i), d, "g" + std::to_string(i));
    const auto [err, ino] = reach(a);
    if (GetParam()) {
        EXPECT_EQ(err, 0); // the handle names the inode, wherever it is
        EXPECT_EQ(ino, a.ino);
    } else {
        EXPECT_EQ(err, ESTALE); // never the new file under the old name
    }
}

TEST_P(InodeTableTest, APinnedInodeKeepsItsFdAfterItsLastNameIsGone) {
    Inode& d = add("d/", table_->root(), "d");
    Inode& a = add("d/a", d, "a");
    {
        const PathFd fd = table_->path_fd(a);
        ASSERT_TRUE(fd);
        table_->pin(a, fd);
    }
    ASSERT_EQ(unlink((dir_ + "/d/a").c_str()), 0);
    for (int i = 0; i < 40; ++i)
        add("d/g" + std::to_string(i), d, "g" + std::to_string(i));
    EXPECT_EQ(reach(a), std::make_pair(0, a.ino));
    table_->unpin(a);
}

// By handle a forgotten inode is retired, so that file handles of the mount
// still reach it (LOOKUP of "." holds it again); by name it is gone.
TEST_P(InodeTableTest, ForgottenNodeIdsAreRetiredByHandleAndGoneByName) {
    Inode& d = add("d/", table_->root(), "d");
    const fuse_ino_t id = table_->id_of(d);
    const ino_t ino = d.ino;
    EXPECT_EQ(table_->hold(id), &d);
    table_->forget(id, 1);
    EXPECT_EQ(table_->hold(FUSE_ROOT_ID), &table_->root());
    table_->forget(id, 1);
    EXPECT_EQ(table_->size(), 1U);
    Inode* held = table_->hold(id);
    if (!GetParam()) {
        EXPECT_EQ(held, nullptr);
        return;
    }
    ASSERT_EQ(held, &d);
    EXPECT_EQ(table_->size(), 2U);
    EXPECT_EQ(reach(d), std::make_pair(0, ino)); // reopened by its handle
    table_->forget(id, 1);
    EXPECT_EQ(table_->size(), 1U);
    EXPECT_EQ(table_->fd_stats().open, 0U); // a retired inode holds no fd
}

// A retired inode removed outside the mount whose number the source gave to
// a new file is not that file: the new one gets an inode of its own, and
// handles of the old one are stale.
TEST_P(InodeTableTest, ARetiredInodeIsNotANewFileWithItsNumber) {
    Inode& a = add("a", table_->root(), "a");
    const fuse_ino_t old_id = table_->id_of(a);
    const ino_t old_ino = a.ino;
    const uint64_t old_generation = a.generation;
    table_->forget(old_id, 1);
    ASSERT_EQ(unlink((dir_ + "/a").c_str()), 0);
    // ext4 gives a freed number to the next file; tmpfs does not.
    const std::string path = dir_ + "/b";
    close(open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    util::Fd fd = open_path("b");
    struct stat st {};
    fstat(fd.get(), &st);
    if (st.st_ino != old_ino) GTEST_SKIP() << "the source did not reuse the removed file's number";
    Inode& b = table_->remember(std::move(fd), st, table_->root(), "b");
    // The kernel tells inodes apart by node id and generation (a node id may
    // be reused: it is the record's address).
    EXPECT_NE(std::make_pair(table_->id_of(b), b.generation),
              std::make_pair(old_id, old_generation));
    EXPECT_EQ(table_->size(), 2U);
    EXPECT_EQ(reach(b), std::make_pair(0, old_ino));
}

// A lookup records an inode without opening it (remember_unopened); the
// first use opens it as itself, and that first open is not a reopen.
TEST_P(InodeTableTest, ALookupOpensNoFdUntilTheInodeIsUsed) {
    ASSERT_EQ(mkdir((dir_ + "/d").c_str(), 0755), 0);
    close(open((dir_ + "/d/a").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    const util::Fd dir = open_path("d");
    struct stat st {};
    ASSERT_EQ(fstatat(dir.get(), "a", &st, AT_SYMLINK_NOFOLLOW), 0);
    Inode& d = add("d/", table_->root(), "d");
    Inode* a = table_->remember_unopened(dir.get(), "a", st, d);
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(table_->fd_stats().open, 1U); // d's, not a's
    EXPECT_EQ(a->handle.empty(), !GetParam());
    EXPECT_EQ(table_->remember_unopened(dir.get(), "a", st, d), a); // the same inode, once more
    EXPECT_EQ(reach(*a), std::make_pair(0, st.st_ino));
    EXPECT_EQ(table_->fd_stats().reopened, 0U);
    EXPECT_EQ(table_->fd_stats().open, 2U);
}

TEST_P(InodeTableTest, ADirectoryStaysWhileAChildNeedsItsName) {
    Inode& d = add("d/", table_->root(), "d");
    Inode& a = add("d/a", d, "a");
    table_->forget(table_->id_of(d), 1); // the kernel let go of d first
    EXPECT_EQ(table_->size(), GetParam() ? 2U : 3U);
    for (int i = 0; i < 40; ++i)
        add("g" + std::to_string(i), table_->root(), "g" + std::to_string(i));
    EXPECT_EQ(reach(a), std::make_pair(0, a.ino));
    table_->forget(table_->id_of(a), 1);
    EXPECT_EQ(table_->size(), 41U); // d went with its last child
}

} // namespace
