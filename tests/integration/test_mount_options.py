#!/usr/bin/env python3
"""Mount options as mount(8) means them: every option splicefs(1) lists
mounts (the list is read from the man page itself), the last of two
opposite flags wins, a running mount's flags change with -o remount, and
noatime leaves the source's access times alone."""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Mount, MountedTestCase, mount_entry, write_file  # noqa: E402

MAN_PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "man", "splicefs.1")

# What each flag must show in the mount's per-mount options (mountinfo
# field 6): present, or absent.
SHOWS = {
    "ro": ({"ro"}, set()), "rw": ({"rw"}, set()),
    "nosuid": ({"nosuid"}, set()), "suid": (set(), {"nosuid"}),
    "nodev": ({"nodev"}, set()), "dev": (set(), {"nodev"}),
    "noexec": ({"noexec"}, set()), "exec": (set(), {"noexec"}),
    "noatime": ({"noatime"}, {"relatime"}), "relatime": ({"relatime"}, {"noatime"}),
    "atime": ({"relatime"}, {"noatime"}), "strictatime": (set(), {"relatime", "noatime"}),
    "norelatime": (set(), {"relatime", "noatime"}),
    "nodiratime": ({"nodiratime"}, set()), "diratime": (set(), {"nodiratime"}),
}


def man_page_mount_options():
    """The options of the -o list in splicefs(1): the tag of every .TP
    between the -o entry and the end of its list."""
    with open(MAN_PAGE) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('.BI "\\-o " opt'))
    end = next(i for i in range(start, len(lines)) if lines[i] == ".RE")
    options = []
    for i in range(start, end):
        if lines[i] == ".TP":
            tag = re.sub(r"^\.B[IR]? ", "", lines[i + 1]).replace("\\-", "-")
            for word in re.findall(r'"[^"]*"|\S+', tag):
                word = word.strip('"').strip(", ")
                if word and word not in ("name",):
                    options.append(word)
    return options


def per_mount_options(path):
    return set(mount_entry(path)["options"].split(","))


class MountOptions(MountedTestCase):
    mount_args = ()

    def setUp(self):
        super().setUp()
        self.mount.unmount()  # each test mounts what it needs
        self.mount.kill()

    def tearDown(self):
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)

    def mounted_with(self, options, check):
        with Mount(self.src, self.mnt, "-o", options) as m:
            check(per_mount_options(self.mnt))
            self.assertEqual(m.unmount(), 0, m.log)

    def test_every_option_the_man_page_lists_mounts(self):
        options = man_page_mount_options()
        # The list is the man page's: it must at least hold these.
        for expected in ("allow_other", "ro", "relatime", "strictatime", "nodiratime", "nofail", "remount"):
            self.assertIn(expected, options)
        values = {"fsname=": "fsname=tree", "subtype=": "subtype=splicefs", "x-*": "x-systemd.idle-timeout=1",
                  "comment=*": "comment=x"}
        tried = []
        for option in options:
            if option == "remount":
                continue  # not a mount: tested below
            given = values.get(option, option)
            shows, hides = SHOWS.get(given, (set(), set()))

            def check(seen, shows=shows, hides=hides, given=given):
                self.assertTrue(shows <= seen and not (hides & seen), f"-o {given}: {sorted(seen)}")
            self.mounted_with(given, check)
            tried.append(given)
        self.assertGreaterEqual(len(tried), 30, tried)

    def test_the_last_of_two_opposite_flags_wins(self):
        pairs = [("ro", "rw"), ("nosuid", "suid"), ("nodev", "dev"), ("noexec", "exec"), ("noatime", "relatime"),
                 ("strictatime", "noatime"), ("nodiratime", "diratime")]
        for first, second in pairs:
            for a, b in ((first, second), (second, first)):
                shows, hides = SHOWS[b]
                self.mounted_with(f"{a},{b}",
                                  lambda seen, shows=shows, hides=hides, a=a, b=b: self.assertTrue(
                                      shows <= seen and not (hides & seen), f"-o {a},{b}: {sorted(seen)}"))
        # As the command line's -o after fstab's (mount.fuse3 order): the user's last.
        self.mounted_with("rw", lambda seen: self.assertIn("rw", seen))
        with Mount(self.src, self.mnt, "-o", "ro", "-o", "rw") as m:
            self.assertIn("rw", per_mount_options(self.mnt))
            m.unmount()

    def test_remount_changes_flags_and_refuses_daemon_options(self):
        write_file(os.path.join(self.src, "f"), b"x")
        with Mount(self.src, self.mnt, "-o", "nodev") as m:
            def remount(options, argv0=None):
                cmd = [harness.ARGS.binary, self.src, self.mnt, "-o", options]
                return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            r = remount("remount,ro")
            self.assertEqual((r.returncode, r.stderr), (0, ""))
            self.assertTrue({"ro", "nodev"} <= per_mount_options(self.mnt))
            self.assertEqual(harness.outcome(open, os.path.join(self.mnt, "f"), "w"), ("err", "EROFS"))
            r = remount("remount,rw,noexec,strictatime")
            self.assertEqual((r.returncode, r.stderr), (0, ""))
            seen = per_mount_options(self.mnt)
            self.assertTrue({"rw", "noexec", "nodev"} <= seen and not {"relatime", "noatime"} & seen, seen)
            with open(os.path.join(self.mnt, "f"), "w") as f:
                f.write("y")
            # The fstab line's daemon options come along with a remount: the
            # same values pass, a change is one line and exit 1.
            r = remount(f"remount,splice={harness.ARGS.splice},exec")
            self.assertEqual((r.returncode, r.stderr), (0, ""))
            self.assertNotIn("noexec", per_mount_options(self.mnt))
            other = "never" if harness.ARGS.cache != "never" else "auto"
            r = remount(f"remount,cache={other}")
            self.assertEqual(r.returncode, 1)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
            self.assertIn(f"cache is {harness.ARGS.cache}, not {other}", r.stderr)
            self.assertIsNone(m.proc.poll())
            self.assertEqual(m.unmount(), 0, m.log)
        r = subprocess.run([harness.ARGS.binary, self.src, self.mnt, "-o", "remount,ro"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 32)
        self.assertIn("not a running splicefs mount", r.stderr)

    def test_max_reply_sizes_that_cannot_work_are_refused_and_rounding_is_said(self):
        for size, why in (("100", "--max-reply 100 is under two pages (8K)"), ("8191", "under two pages"),
                          ("1P", "'1P' has an unknown unit (use K, M, G or T)")):
            r = subprocess.run([harness.ARGS.binary, "--max-reply", size, self.src, self.mnt], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
            self.assertIn(why, r.stderr)
            self.assertFalse(harness.is_mounted(self.mnt))
        with Mount(self.src, self.mnt, "--max-reply", "10000") as m:
            self.assertEqual(m.stats()["max_reply"], 12288)
            self.assertIn("--max-reply 10000 rounded up to whole pages: 12K", m.log)
            m.unmount()

    def test_noatime_leaves_the_source_atime_alone(self):
        p = os.path.join(self.src, "f")
        write_file(p, b"data" * 1000)
        past = time.time_ns() - 10 * 86400 * 10**9
        for options, kept in (("noatime", True), ("strictatime", False)):
            os.utime(p, ns=(past, past))
            with Mount(self.src, self.mnt, "-o", options) as m:
                with open(os.path.join(self.mnt, "f"), "rb") as f:
                    f.read()
                m.unmount()
            self.assertEqual(os.stat(p).st_atime_ns == past, kept, options)


if __name__ == "__main__":
    harness.main()
