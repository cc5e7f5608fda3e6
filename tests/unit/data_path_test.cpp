// The READ and WRITE handlers on a fake device: each request gets exactly
// one reply with the right header and the file's bytes, the Transfer says
// which path it took and why, and the pipe is empty after every failure
// (the next reply is whole). The source is a real temporary file; only the
// device (and, to make splice fail or stop short, the file's splice) is
// fake.
#include "data_path.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

using namespace splicefs;

namespace {

const size_t page = util::page_size();
constexpr size_t max_reply = 256 * 1024;

// What went to the device, message by message; what the kernel sends, in
// order; and the failures to inject.
class FakeChannel : public Channel {
  public:
    FakeChannel(bool splice_requests, size_t pipe_size = max_reply + 4 * 4096)
        : Channel(-1, max_reply, pipe_size, splice_requests) {}

    std::deque<std::string> requests;
    std::vector<std::string> replies;
    int interrupt_next_splice = 0; // the next replies by splice fail with ENOENT
    int file_splice_errno = 0;     // the file's splice fails with it
    size_t file_splice_at_most = SIZE_MAX;

  protected:
    ssize_t device_read(void* buf, size_t size) override {
        std::string next = pop();
        EXPECT_LE(next.size(), size);
        std::memcpy(buf, next.data(), next.size());
        return static_cast<ssize_t>(next.size());
    }
    ssize_t device_splice_to_pipe(int pipe_write_fd, size_t size) override {
        std::string next = pop();
        EXPECT_LE(next.size(), size);
        EXPECT_EQ(::write(pipe_write_fd, next.data(), next.size()),
                  static_cast<ssize_t>(next.size()));
        return static_cast<ssize_t>(next.size());
    }
    ssize_t device_writev(const iovec* iov, int count) override {
        std::string message;
        for (int i = 0; i < count; ++i)
            message.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
        replies.push_back(message);
        return static_cast<ssize_t>(message.size());
    }
    ssize_t device_splice_from_pipe(int pipe_read_fd, size_t size, unsigned) override {
        if (interrupt_next_splice > 0) {
            --interrupt_next_splice;
            errno = ENOENT;
            return -1;
        }
        std::string message(size, '\0');
        EXPECT_TRUE(util::read_exactly(pipe_read_fd, message.data(), size));
        replies.push_back(message);
        return static_cast<ssize_t>(size);
    }
    ssize_t file_splice_to_pipe(int fd, loff_t* offset, int pipe_write_fd, size_t size,
                                unsigned flags) override {
        if (file_splice_errno) {
            errno = file_splice_errno;
            return -1;
        }
        return Channel::file_splice_to_pipe(fd, offset, pipe_write_fd,
                                            std::min(size, file_splice_at_most), flags);
    }

  private:
    std::string pop() {
        EXPECT_FALSE(requests.empty());
        std::string next = requests.front();
        requests.pop_front();
        return next;
    }
};

struct Reply {
    fuse_out_header header{};
    std::string body;
};

Reply parse(const std::string& message) {
    Reply r;
    EXPECT_GE(message.size(), sizeof r.header);
    std::memcpy(&r.header, message.data(), sizeof r.header);
    EXPECT_EQ(r.header.len, message.size()) << "the header's length is the message's";
    r.body = message.substr(sizeof r.header);
    return r;
}

std::string read_request(uint64_t unique, const FileHandle& handle, uint64_t offset,
                         uint32_t size) {
    fuse_in_header in{};
    in.len = sizeof in + sizeof(fuse_read_in);
    in.opcode = FUSE_READ;
    in.unique = unique;
    fuse_read_in arg{};
    arg.fh = reinterpret_cast<uint64_t>(&handle);
    arg.offset = offset;
    arg.size = size;
    return std::string(reinterpret_cast<const char*>(&in), sizeof in) +
           std::string(reinterpret_cast<const char*>(&arg), sizeof arg);
}

std::string write_request(uint64_t unique, const FileHandle& handle, uint64_t offset,
                          const std::string& data, uint32_t claimed_size = 0) {
    fuse_in_header in{};
    in.len = static_cast<uint32_t>(write_header_size + data.size());
    in.opcode = FUSE_WRITE;
    in.unique = unique;
    fuse_write_in arg{};
    arg.fh = reinterpret_cast<uint64_t>(&handle);
    arg.offset = offset;
    arg.size = claimed_size ? claimed_size : static_cast<uint32_t>(data.size());
    return std::string(reinterpret_cast<const char*>(&in), sizeof in) +
           std::string(reinterpret_cast<const char*>(&arg), sizeof arg) + data;
}

std::string pattern(size_t size, char seed) {
    std::string s(size, '\0');
    for (size_t i = 0; i < size; ++i)
        s[i] = static_cast<char>(seed + i % 251);
    return s;
}

class DataPathTest : public ::testing::Test {
  protected:
    void SetUp() override {
        char dir_template[] = "/tmp/splicefs-unit-XXXXXX";
        ASSERT_NE(mkdtemp(dir_template), nullptr);
        dir_ = dir_template;
        Options opts;
        opts.splice = SpliceMode::all;
        fs_ = std::make_unique<Filesystem>(opts, util::Fd(::open(dir_.c_str(), O_PATH)), 16, false);
        fs_->limits.max_reply = max_reply;
        fs_->limits.max_write = max_reply;
    }
    void TearDown() override {
        for (const auto& name : files_)
            ::unlink((dir_ + "/" + name).c_str());
        ::rmdir(dir_.c_str());
    }

    // A source file holding `content`, opened with `flags`.
    std::unique_ptr<FileHandle> open_file(const std::string& name, const std::string& content,
                                          int flags = O_RDWR) {
        const std::string path = dir_ + "/" + name;
        files_.push_back(name);
        util::Fd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644));
        EXPECT_EQ(::write(out.get(), content.data(), content.size()),
                  static_cast<ssize_t>(content.size()));
        auto handle = std::make_unique<FileHandle>();
        handle->fd.reset(::open(path.c_str(), flags));
        EXPECT_TRUE(handle->fd.valid());
        return handle;
    }
    std::string contents(const std::string& name) const {
        util::Fd in(::open((dir_ + "/" + name).c_str(), O_RDONLY));
        std::string out(1 << 20, '\0');
        const ssize_t n = ::read(in.get(), out.data(), out.size());
        out.resize(n < 0 ? 0 : static_cast<size_t>(n));
        return out;
    }

    // Sends one request through the channel to the handlers, as a worker does.
    Transfer serve(FakeChannel& channel, const std::string& message) {
        channel.requests.push_back(message);
        Request request;
        EXPECT_EQ(channel.receive(request), 0);
        DataHandlers handlers(*fs_, channel);
        return request.in->opcode == FUSE_READ ? handlers.read(request) : handlers.write(request);
    }

    std::string dir_;
    std::vector<std::string> files_;
    std::unique_ptr<Filesystem> fs_;
};

TEST_F(DataPathTest, ReadIsSplicedWholeWithTheHeaderLengthFixed) {
    const std::string data = pattern(max_reply, 'a');
    auto file = open_file("f", data);
    FakeChannel channel(false);
    const Transfer t = serve(channel, read_request(7, *file, 0, max_reply));
    EXPECT_TRUE(t.spliced);
    EXPECT_EQ(t.bytes, max_reply);
    ASSERT_EQ(channel.replies.size(), 1u);
    const Reply r = parse(channel.replies[0]);
    EXPECT_EQ(r.header.unique, 7u);
    EXPECT_EQ(r.header.error, 0);
    EXPECT_EQ(r.body, data);
}

TEST_F(DataPathTest, ReadPastTheEndIsAShortSplicedReply) {
    const std::string data = pattern(3 * page + 10, 'b');
    auto file = open_file("f", data);
    FakeChannel channel(false);
    const Transfer t = serve(channel, read_request(1, *file, page, 16 * page));
    EXPECT_TRUE(t.spliced);
    EXPECT_EQ(t.bytes, 2 * page + 10);
    EXPECT_EQ(parse(channel.replies.at(0)).body, data.substr(page));
    // At the end itself: an empty reply, still one.
    const Transfer at_end = serve(channel, read_request(2, *file, data.size(), 16 * page));
    EXPECT_EQ(at_end.bytes, 0u);
    EXPECT_FALSE(at_end.failed);
    EXPECT_EQ(parse(channel.replies.at(1)).body, "");
}

TEST_F(DataPathTest, AShortSpliceBeforeTheEndIsCopiedWhole) {
    const std::string data = pattern(16 * page, 'c');
    auto file = open_file("f", data);
    FakeChannel channel(false);
    channel.file_splice_at_most = 3 * page; // as a FUSE or NFS source may
    const Transfer t = serve(channel, read_request(1, *file, 0, 16 * page));
    EXPECT_FALSE(t.spliced);
    EXPECT_EQ(t.reason, CopyReason::short_read);
    EXPECT_EQ(t.bytes, 16 * page);
    ASSERT_EQ(channel.replies.size(), 1u);
    EXPECT_EQ(parse(channel.replies[0]).body, data);
}

TEST_F(DataPathTest, ASourceThatRefusesSpliceIsCopiedFromThenOn) {
    const std::string data = pattern(8 * page, 'd');
    auto file = open_file("f", data);
    FakeChannel channel(false);
    channel.file_splice_errno = EINVAL;
    const Transfer first = serve(channel, read_request(1, *file, 0, 8 * page));
    EXPECT_EQ(first.reason, CopyReason::source_refused);
    EXPECT_TRUE(file->read_splice_refused);
    channel.file_splice_errno = 0; // not asked again
    const Transfer second = serve(channel, read_request(2, *file, 0, 8 * page));
    EXPECT_FALSE(second.spliced);
    EXPECT_EQ(second.reason, CopyReason::source_refused);
    ASSERT_EQ(channel.replies.size(), 2u);
    for (const auto& reply : channel.replies)
        EXPECT_EQ(parse(reply).body, data);
}

TEST_F(DataPathTest, AnInterruptedSplicedReplyLeavesThePipeEmpty) {
    const std::string data = pattern(8 * page, 'e');
    auto file = open_file("f", data);
    FakeChannel channel(false);
    channel.interrupt_next_splice = 1;
    const Transfer lost = serve(channel, read_request(1, *file, 0, 8 * page));
    EXPECT_TRUE(lost.failed);
    EXPECT_EQ(lost.reason, CopyReason::error);
    EXPECT_TRUE(channel.replies.empty()); // no copy after the kernel gave up
    const Transfer next = serve(channel, read_request(2, *file, page, 4 * page));
    EXPECT_TRUE(next.spliced);
    ASSERT_EQ(channel.replies.size(), 1u);
    const Reply r = parse(channel.replies[0]);
    EXPECT_EQ(r.header.unique, 2u);
    EXPECT_EQ(r.body, data.substr(page, 4 * page));
}

TEST_F(DataPathTest, SmallReadsAndSourceErrorsAreCopiedWithTheirReason) {
    auto file = open_file("f", "hello world");
    FakeChannel channel(false);
    const Transfer small = serve(channel, read_request(1, *file, 6, 100));
    EXPECT_EQ(small.reason, CopyReason::small);
    EXPECT_EQ(parse(channel.replies.at(0)).body, "world");
    auto write_only = open_file("w", "data", O_WRONLY);
    const Transfer error = serve(channel, read_request(2, *write_only, 0, 8 * page));
    EXPECT_TRUE(error.failed);
    const Reply r = parse(channel.replies.at(1));
    EXPECT_EQ(r.header.error, -EBADF);
    EXPECT_EQ(r.body, "");
}

TEST_F(DataPathTest, APipeTooSmallForTheReplyCopiesIt) {
    auto file = open_file("f", pattern(64 * page, 'f'));
    FakeChannel channel(false, 8 * page);
    const Transfer t = serve(channel, read_request(1, *file, 0, 64 * page));
    EXPECT_EQ(t.reason, CopyReason::pipe_too_small);
    EXPECT_EQ(parse(channel.replies.at(0)).body.size(), 64 * page);
}

TEST_F(DataPathTest, WriteIsSplicedFromThePipeIntoTheFile) {
    auto file = open_file("f", "");
    FakeChannel channel(true);
    ASSERT_TRUE(channel.splices_requests());
    const std::string data = pattern(16 * page, 'g');
    const Transfer t = serve(channel, write_request(3, *file, page, data));
    EXPECT_TRUE(t.spliced);
    EXPECT_EQ(t.bytes, data.size());
    EXPECT_EQ(contents("f"), std::string(page, '\0') + data);
    const Reply r = parse(channel.replies.at(0));
    EXPECT_EQ(r.header.unique, 3u);
    fuse_write_out out{};
    ASSERT_EQ(r.body.size(), sizeof out);
    std::memcpy(&out, r.body.data(), sizeof out);
    EXPECT_EQ(out.size, data.size());
}

TEST_F(DataPathTest, AnAppendOnlyFileTakesTheWriteByCopy) {
    auto file = open_file("f", "start:", O_WRONLY | O_APPEND);
    FakeChannel channel(true);
    const std::string data = pattern(4 * page, 'h');
    const Transfer t = serve(channel, write_request(1, *file, 0, data));
    EXPECT_FALSE(t.spliced);
    EXPECT_EQ(t.reason, CopyReason::source_refused);
    EXPECT_EQ(t.bytes, data.size());
    EXPECT_EQ(contents("f"), "start:" + data);
    EXPECT_TRUE(file->write_splice_refused); // not tried again
}

TEST_F(DataPathTest, WritesReadIntoTheBufferSayWhyTheyWereNotSpliced) {
    auto file = open_file("f", "");
    FakeChannel by_splice(true);
    EXPECT_EQ(serve(by_splice, write_request(1, *file, 0, "tiny")).reason, CopyReason::small);
    FakeChannel pipe_too_small(true, 4 * page);
    ASSERT_FALSE(pipe_too_small.splices_requests());
    const std::string data = pattern(8 * page, 'i');
    EXPECT_EQ(serve(pipe_too_small, write_request(2, *file, 0, data)).reason,
              CopyReason::pipe_too_small);
    EXPECT_EQ(contents("f"), data);
}

TEST_F(DataPathTest, AWriteWhoseDataDoesNotMatchItsSizeFailsWithEio) {
    auto file = open_file("f", "");
    FakeChannel channel(true);
    const std::string data = pattern(4 * page, 'j');
    const Transfer t = serve(channel, write_request(1, *file, 0, data, 5 * page));
    EXPECT_TRUE(t.failed);
    EXPECT_EQ(parse(channel.replies.at(0)).header.error, -EIO);
    EXPECT_EQ(contents("f"), "");
    // The pipe is empty again: the next write is whole.
    EXPECT_TRUE(serve(channel, write_request(2, *file, 0, data)).spliced);
    EXPECT_EQ(contents("f"), data);
}

TEST(Accounting, EachTransferIsCountedOnceWhereItsBytesWent) {
    ThreadCounters c;
    count_read(c, Transfer{true, CopyReason::count_, max_reply, false}, max_reply);
    count_read(c, Transfer{false, CopyReason::small, 5, false}, max_reply);
    count_read(c, Transfer{false, CopyReason::error, 0, true}, max_reply);
    count_write(c, Transfer{false, CopyReason::source_refused, 100, false});
    EXPECT_EQ(c.read.spliced_count.get(), 1u);
    EXPECT_EQ(c.read.spliced_bytes.get(), max_reply);
    EXPECT_EQ(c.read.copied_count.get(), 2u);
    EXPECT_EQ(c.read.copied_bytes.get(), 5u);
    EXPECT_EQ(c.read.copy_reasons[static_cast<size_t>(CopyReason::small)].get(), 1u);
    EXPECT_EQ(c.read.copy_reasons[static_cast<size_t>(CopyReason::error)].get(), 1u);
    EXPECT_EQ(c.read_full_size.get(), 1u);
    // The failed reply carried no data: not in the size histogram.
    EXPECT_EQ(c.read_sizes[histogram_bucket(max_reply)].get(), 1u);
    EXPECT_EQ(c.read_sizes[histogram_bucket(5)].get(), 1u);
    EXPECT_EQ(c.read_sizes[0].get(), 0u);
    EXPECT_EQ(c.write.copy_reasons[static_cast<size_t>(CopyReason::source_refused)].get(), 1u);
    EXPECT_EQ(c.write.copied_bytes.get(), 100u);
    EXPECT_EQ(c.write.spliced_count.get(), 0u);
}

} // namespace
