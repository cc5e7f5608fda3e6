#include "options.hpp"

#include <gtest/gtest.h>

using namespace splicefs;

namespace {
ParseResult parse(std::vector<std::string> args) {
    args.insert(args.begin(), "splicefs");
    return parse_mount_args(args);
}
} // namespace

TEST(Options, PositionalsAlone) {
    auto r = parse({"/src", "/mnt"});
    ASSERT_EQ(r.status, ParseStatus::ok) << r.message;
    EXPECT_EQ(r.options.source, "/src");
    EXPECT_EQ(r.options.mountpoint, "/mnt");
    EXPECT_EQ(r.options.splice, SpliceMode::read);
}

// mount.fuse3 runs: splicefs SOURCE MOUNTPOINT -o OPTS,dev,suid
TEST(Options, MountFuse3Order) {
    auto r = parse({"/src", "/mnt", "-o", "rw,splice=all,max_reply=512K,allow_other,dev,suid"});
    ASSERT_EQ(r.status, ParseStatus::ok) << r.message;
    EXPECT_EQ(r.options.source, "/src");
    EXPECT_EQ(r.options.mountpoint, "/mnt");
    EXPECT_EQ(r.options.splice, SpliceMode::all);
    EXPECT_EQ(r.options.max_reply, 512U * 1024);
    EXPECT_TRUE(r.options.allow_other);
    EXPECT_EQ(r.options.fuse_options, (std::vector<std::string>{"allow_other"}));
    EXPECT_EQ(r.options.flags.libfuse_options(),
              (std::vector<std::string>{"rw", "suid", "dev", "exec", "async"}));
}

// mount(8): of two opposite flags the last one wins (fstab defaults, then
// the user's, then `mount -o remount,...`).
TEST(Options, TheLastOfTwoOppositeFlagsWins) {
    struct Case {
        const char* list;
        std::vector<std::string> libfuse;
    };
    for (const auto& [list, libfuse] : std::vector<Case>{
             {"ro,rw", {"rw", "exec", "async"}},
             {"rw,ro", {"ro", "exec", "async"}},
             {"nosuid,suid,dev,nodev", {"rw", "suid", "nodev", "exec", "async"}},
             {"noexec,exec,sync,async", {"rw", "exec", "async"}},
             {"exec,noexec,async,sync", {"rw", "noexec", "sync"}},
             {"noatime,atime", {"rw", "exec", "async"}},
             {"strictatime,noatime", {"rw", "exec", "async", "noatime"}},
             {"noatime,relatime", {"rw", "exec", "async"}},
         }) {
        auto r = parse({"/src", "/mnt", "-o", list});
        ASSERT_EQ(r.status, ParseStatus::ok) << list << ": " << r.message;
        EXPECT_EQ(r.options.flags.libfuse_options(), libfuse) << list;
    }
    auto r = parse({"/src", "/mnt", "-o", "noatime,strictatime,nodiratime,diratime,nodiratime"});
    ASSERT_EQ(r.status, ParseStatus::ok) << r.message;
    EXPECT_EQ(r.options.flags.atime, MountFlags::Atime::strictatime);
    EXPECT_TRUE(r.options.flags.nodiratime);
    EXPECT_TRUE(r.options.flags.atime_needs_remount());
}

TEST(Options, OptionsBeforeBetweenAndAfterPositionals) {
    for (auto args : std::vector<std::vector<std::string>>{{"-o", "splice=off", "/src", "/mnt"},
                                                           {"/src", "-o", "splice=off", "/mnt"},
                                                           {"/src", "/mnt", "-osplice=off"},
                                                           {"--splice", "off", "/src", "/mnt"},
                                                           {"/src", "/mnt", "--splice=off"},
                                                           {"/src", "--splice", "off", "/mnt"}}) {
        auto r = parse(args);
        ASSERT_EQ(r.status, ParseStatus::ok) << r.message;
        EXPECT_EQ(r.options.splice, SpliceMode::off);
        EXPECT_EQ(r.options.source, "/src");
        EXPECT_EQ(r.options.mountpoint, "/mnt");
    }
}

TEST(Options, FstabOnlyOptionsAreDropped) {
    auto r = parse(
        {"/src", "/mnt", "-o",
         "defaults,nofail,_netdev,noauto,auto,user,users,nouser,x-systemd.automount,comment=foo"});
    ASSERT_EQ(r.status, ParseStatus::ok) << r.message;
    EXPECT_TRUE(r.options.fuse_options.empty());
}

TEST(Options, EveryLongOptionHasAnOForm) {
    auto r =
        parse({"/src", "/mnt", "-o",
               "foreground,debug,single_threaded,threads=3,log_level=warn,cache=never,splice=write,"
               "splice_move,max_reply=64K"});
    ASSERT_EQ(r.status, ParseStatus::ok) << r.message;
    const Options& o = r.options;
    EXPECT_TRUE(o.foreground);
    EXPECT_TRUE(o.debug);
    EXPECT_TRUE(o.single_threaded);
    EXPECT_EQ(o.threads, 3U);
    EXPECT_EQ(o.log_level, "warn");
    EXPECT_EQ(o.cache, CachePolicy::never);
    EXPECT_EQ(o.splice, SpliceMode::write);
    EXPECT_TRUE(o.splice_move);
    EXPECT_EQ(o.max_reply, 64U * 1024);
    EXPECT_EQ(o.worker_threads(), 1U);
}

TEST(Options, FsnameAndSubtype) {
    auto r = parse({"/src", "/mnt", "-o", "fsname=mydata,subtype=other"});
    ASSERT_EQ(r.status, ParseStatus::ok) << r.message;
    EXPECT_EQ(r.options.fsname, "mydata");
    EXPECT_EQ(r.options.subtype, "other");
}

// An empty value is its own error, naming the option; it never takes the
// next argument (SOURCE) as the value.
TEST(Options, AnEmptyValueIsAnErrorNamingTheOption) {
    for (const auto& [args, named] : std::vector<std::pair<std::vector<std::string>, std::string>>{
             {{"-o", "threads=", "/src", "/mnt"}, "threads"},
             {{"-o", "log_level=", "/src", "/mnt"}, "log_level"},
             {{"/src", "/mnt", "-o", "cache="}, "cache"},
             {{"--threads=", "/src", "/mnt"}, "--threads"},
             {{"--cache=", "/src", "/mnt"}, "--cache"},
             {{"/src", "--max-reply=", "/mnt"}, "--max-reply"}}) {
        auto r = parse(args);
        EXPECT_EQ(r.status, ParseStatus::error) << testing::PrintToString(args);
        EXPECT_NE(r.message.find(named), std::string::npos) << r.message;
        EXPECT_EQ(r.message.find("/src"), std::string::npos) << r.message;
        EXPECT_EQ(r.message.find('\n'), std::string::npos) << r.message;
    }
}

TEST(Options, BadInputIsOneLineError) {
    for (auto args :
         std::vector<std::vector<std::string>>{{"/src"},
                                               {},
                                               {"/a", "/b", "/c"},
                                               {"/src", "/mnt", "-o", "bogus"},
                                               {"/src", "/mnt", "-o", "splice=sideways"},
                                               {"/src", "/mnt", "--splice", "sideways"},
                                               {"/src", "/mnt", "--cache", "sometimes"},
                                               {"/src", "/mnt", "--threads", "0"},
                                               {"/src", "/mnt", "--threads", "100000"},
                                               {"/src", "/mnt", "--threads", "-1"},
                                               {"/src", "/mnt", "--max-reply", "0"},
                                               {"/src", "/mnt", "--max-reply", "-1"},
                                               {"/src", "/mnt", "--max-reply", "1.5M"},
                                               {"/src", "/mnt", "--max-reply", "0x10"},
                                               {"/src", "/mnt", "--max-reply", ""},
                                               {"/src", "/mnt", "--max-reply", "garbage"},
                                               {"/src", "/mnt", "--log-level", "verbose"},
                                               {"/src", "/mnt", "-o"},
                                               {"/src", "/mnt", "-o", "max_reply"},
                                               {"/src", "/mnt", "-o", "splice_move=yes"},
                                               {"/src", "/mnt", "--no-such-option"},
                                               {"", "/mnt"},
                                               {"/src", ""}}) {
        auto r = parse(args);
        EXPECT_EQ(r.status, ParseStatus::error) << testing::PrintToString(args);
        EXPECT_FALSE(r.message.empty());
        EXPECT_EQ(r.message.find('\n'), std::string::npos) << r.message;
    }
}

TEST(Options, HelpAndVersionExitSuccessfully) {
    EXPECT_EQ(parse({"--help"}).status, ParseStatus::exit_success);
    EXPECT_EQ(parse({"-h"}).status, ParseStatus::exit_success);
    auto v = parse({"--version"});
    EXPECT_EQ(v.status, ParseStatus::exit_success);
    EXPECT_NE(v.message.find("splicefs "), std::string::npos);
}

TEST(Options, HelpShowsTheRealUsageAndVersionTheLibraries) {
    const auto help = parse({"--help"}).message;
    EXPECT_NE(help.find("Usage: splicefs [OPTIONS] SOURCE MOUNTPOINT [-o OPT[,OPT...]]\n"),
              std::string::npos)
        << help;
    EXPECT_EQ(help.find("source_mountpoint"), std::string::npos) << help;
    const auto version = parse({"-V"}).message;
    EXPECT_NE(version.find("libfuse 3."), std::string::npos) << version;
    EXPECT_NE(version.find("FUSE kernel interface 7."), std::string::npos) << version;
}

TEST(Options, AMistypedOptionGetsAHint) {
    struct Case {
        std::vector<std::string> args;
        std::string message;
    };
    for (const auto& [args, message] : std::vector<Case>{
             {{"--spice", "off", "/src", "/mnt"},
              "unknown option '--spice' (did you mean --splice?); see splicefs --help"},
             {{"/src", "/mnt", "--cahce=never"},
              "unknown option '--cahce' (did you mean --cache?); see splicefs --help"},
             {{"--passtrough", "auto", "/src", "/mnt"},
              "unknown option '--passtrough' (did you mean --passthrough?); see splicefs --help"},
             {{"--zzzzzz", "/src", "/mnt"}, "unknown option '--zzzzzz'; see splicefs --help"},
             {{"-x", "/src", "/mnt"}, "unknown option '-x'; see splicefs --help"},
             {{"-fx", "/src", "/mnt"}, "unknown option '-x'; see splicefs --help"},
         }) {
        auto r = parse(args);
        EXPECT_EQ(r.status, ParseStatus::error);
        EXPECT_EQ(r.message, message);
    }
    EXPECT_EQ(parse({"-fd", "/src", "/mnt"}).status, ParseStatus::ok);
}

TEST(Options, HelpListsEveryLongOption) {
    const auto help = parse({"--help"}).message;
    for (const auto& name : long_option_names())
        EXPECT_NE(help.find("--" + name), std::string::npos) << name;
}

TEST(Options, DoubleDashEndsOptions) {
    auto r = parse({"--", "stats", "/mnt"});
    ASSERT_EQ(r.status, ParseStatus::ok) << r.message;
    EXPECT_EQ(r.options.source, "stats");
}

TEST(Options, TimeoutIsSecondsFromZeroToAYear) {
    for (const auto& [text, seconds] : std::vector<std::pair<std::string, double>>{
             {"0", 0.0}, {"0.5", 0.5}, {"3600", 3600.0}, {"31536000", 31536000.0}}) {
        auto r = parse({"--timeout", text, "/src", "/mnt"});
        ASSERT_EQ(r.status, ParseStatus::ok) << r.message;
        ASSERT_TRUE(r.options.timeout.has_value());
        EXPECT_DOUBLE_EQ(*r.options.timeout, seconds);
        auto o = parse({"/src", "/mnt", "-o", "timeout=" + text});
        ASSERT_EQ(o.status, ParseStatus::ok) << o.message;
        EXPECT_DOUBLE_EQ(*o.options.timeout, seconds);
    }
    EXPECT_FALSE(parse({"/src", "/mnt"}).options.timeout.has_value()); // the cache policy's
    for (const std::string bad : {"-1", "1e3", "abc", "31536001", "nan", "inf", "1.2.3", "0x10"}) {
        auto r = parse({"--timeout", bad, "/src", "/mnt"});
        EXPECT_EQ(r.status, ParseStatus::error) << bad;
        EXPECT_NE(r.message.find("--timeout"), std::string::npos) << r.message;
        EXPECT_NE(r.message.find(bad), std::string::npos) << r.message;
    }
}
