"""Start-up, errors, signals and shutdown of the daemon."""

import json
import os
import signal
import socket
import subprocess
import tempfile
import shutil
import unittest

import harness
from harness import Mount, is_mounted, mount_entry


def run(*args, **kwargs):
    return subprocess.run([harness.ARGS.binary, *args], capture_output=True, text=True, timeout=60, **kwargs)


class Lifecycle(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="splicefs-life-")
        self.src = os.path.join(self.tmp, "src")
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.src)
        os.mkdir(self.mnt)
        with open(os.path.join(self.src, "hello"), "w") as f:
            f.write("hello\n")

    def tearDown(self):
        if is_mounted(self.mnt):
            subprocess.run(["umount", "-l", self.mnt])
            self.fail("a test left a mount behind")
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assert_one_line_error(self, result, code, *words):
        self.assertEqual(result.returncode, code, result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("splicefs: "), lines[0])
        for w in words:
            self.assertIn(w, lines[0])
        self.assertFalse(is_mounted(self.mnt))

    def test_missing_source(self):
        self.assert_one_line_error(run("/nonexistent", self.mnt), 32, "/nonexistent", "No such file")

    def test_source_of_the_wrong_type(self):
        fifo = os.path.join(self.tmp, "fifo")
        os.mkfifo(fifo)
        self.assert_one_line_error(run(fifo, self.mnt), 32, "not a directory, block device or regular file")

    def test_source_socket_and_char_device(self):
        sock_path = os.path.join(self.tmp, "sock")
        s = socket.socket(socket.AF_UNIX)
        s.bind(sock_path)
        try:
            self.assert_one_line_error(run(sock_path, self.mnt), 32, "not a directory")
        finally:
            s.close()
        self.assert_one_line_error(run("/dev/null", self.mnt), 32, "not a directory")

    def test_missing_mountpoint(self):
        self.assert_one_line_error(run(self.src, os.path.join(self.tmp, "nope")), 32, "mountpoint")

    def test_mountpoint_is_a_file(self):
        self.assert_one_line_error(run(self.src, os.path.join(self.src, "hello")), 32, "not a directory")

    def test_usage_errors(self):
        before = (harness.tree_snapshot(self.src), harness.tree_snapshot(self.mnt))
        cases = [[self.src], [], [self.src, self.mnt, "extra"], [self.src, self.mnt, "-o", "bogus"],
                 [self.src, self.mnt, "-o", "bogus=1"], [self.src, self.mnt, "--bogus"]]
        bad_values = {
            "max-reply": ["0", "-1", "1.5M", "99T", "0x10", "", "garbage", "1M2"],
            "threads": ["0", "100000", "-1", "", "two", "1.5"],
            "splice": ["sideways", "", "READ2"],
            "cache": ["sometimes", ""],
            "log-level": ["verbose", ""],
        }
        # What the one line must name for each option.
        named = {"max-reply": "max-reply", "threads": "threads", "splice": "splice", "cache": "cache",
                 "log-level": "log"}
        for option, values in bad_values.items():
            for value in values:
                # The same vocabulary as a long option and as -o key=value (fstab).
                cases.append(([self.src, self.mnt, f"--{option}", value], named[option]))
                cases.append(([self.src, self.mnt, "-o", f"{option.replace('-', '_')}={value}"], named[option]))
        for args in cases:
            args, words = args if isinstance(args, tuple) else (args, None)
            with self.subTest(args=args):
                self.assert_one_line_error(run(*args), 1, *([words] if words else []))
        self.assertEqual((harness.tree_snapshot(self.src), harness.tree_snapshot(self.mnt)), before)

    def test_unreadable_source(self):
        # As a user who cannot search the source: one line, nothing mounted.
        os.chmod(self.src, 0o700)
        os.chmod(self.tmp, 0o755)
        os.chmod(self.mnt, 0o777)

        def mount_as_nobody():
            return subprocess.run([harness.ARGS.binary, self.src, self.mnt], capture_output=True, text=True,
                                  timeout=60, user=65534, group=65534, extra_groups=[])

        result = mount_as_nobody()
        self.assert_one_line_error(result, 32, self.src, "Permission denied")

    def test_help_and_version(self):
        self.assertEqual(run("--help").returncode, 0)
        v = run("--version")
        self.assertEqual(v.returncode, 0)
        self.assertTrue(v.stdout.startswith("splicefs "))

    def test_daemon_mode_returns_once_usable(self):
        result = run("--splice", harness.ARGS.splice, self.src, self.mnt)
        try:
            self.assertEqual(result.returncode, 0, result.stderr)
            # Usable the moment the starting process returned.
            with open(os.path.join(self.mnt, "hello")) as f:
                self.assertEqual(f.read(), "hello\n")
            entry = mount_entry(self.mnt)
            self.assertEqual(entry["fstype"], "fuse.splicefs")
            self.assertEqual(entry["source"], self.src)
        finally:
            if is_mounted(self.mnt):
                subprocess.run(["fusermount3", "-u", self.mnt])

    def test_daemon_logs_to_syslog_as_daemon_with_pid(self):
        # No syslog daemon here: listen on /dev/log ourselves for the test's duration.
        if os.path.exists("/dev/log"):
            self.skipTest("/dev/log exists; not replacing the system's syslog socket")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind("/dev/log")
        try:
            listener.settimeout(10)
            result = run(self.src, self.mnt)
            self.assertEqual(result.returncode, 0, result.stderr)
            try:
                message = listener.recv(4096).decode()
            finally:
                subprocess.run(["fusermount3", "-u", self.mnt])
            # <30> is facility daemon (3 * 8) with priority info (6).
            m = __import__("re").match(r"<30>.*splicefs\[(\d+)\]: mounted ", message)
            self.assertIsNotNone(m, message)
        finally:
            listener.close()
            os.unlink("/dev/log")

    def test_sigterm_sigint_sighup_unmount_and_exit_zero(self):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with self.subTest(signal=sig.name):
                with Mount(self.src, self.mnt) as m:
                    with open(os.path.join(self.mnt, "hello")) as f:
                        self.assertEqual(f.read(), "hello\n")
                    os.kill(m.pid, sig)
                    self.assertEqual(m.wait(), 0, m.log)
                    self.assertFalse(is_mounted(self.mnt))

    def test_mountpoint_inside_its_source_is_refused(self):
        sub = os.path.join(self.src, "sub")
        os.mkdir(sub)
        for mountpoint in (sub, self.src):
            r = run(self.src, mountpoint)
            self.assertEqual(r.returncode, 32, r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
            self.assertIn("is inside source", r.stderr)
            self.assertFalse(is_mounted(mountpoint))

    def test_second_sigterm_ends_a_daemon_whose_mount_stays_busy(self):
        # A file held open keeps a lazily unmounted connection alive: the
        # daemon waits for it. A second SIGTERM ends it anyway.
        with Mount(self.src, self.mnt) as m:
            held = open(os.path.join(self.mnt, "hello"))
            try:
                os.kill(m.pid, signal.SIGTERM)
                harness.wait_until(lambda: not is_mounted(self.mnt), 10, "the lazy unmount")
                self.assertIsNone(m.proc.poll(), "the daemon left while a file was open")
                self.assertEqual(held.read(), "hello\n")
                os.kill(m.pid, signal.SIGTERM)
                self.assertEqual(m.wait(), 0, m.log)
                # Its data may still be in the page cache; what needs the daemon fails.
                with self.assertRaises(OSError) as ctx:
                    os.fstatvfs(held.fileno())
                self.assertEqual(ctx.exception.errno, 107)  # ENOTCONN
            finally:
                try:
                    held.close()
                except OSError:
                    pass

    def test_daemon_keeps_no_inherited_descriptor(self):
        # Started under flock(1) by a script: the daemon must not hold the
        # lock (or anything else it inherited) for the mount's life.
        import fcntl
        import json
        lock = os.path.join(self.tmp, "lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            r = run(self.src, self.mnt, pass_fds=(fd,))
        finally:
            os.close(fd)
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            pid = json.loads(run("stats", "--json", self.mnt).stdout)["mounts"][0]["pid"]
            held = [os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")]
            self.assertNotIn(lock, held)
            again = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held
            finally:
                os.close(again)
        finally:
            subprocess.run(["fusermount3", "-u", self.mnt])
            harness.wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 30, "the daemon to exit")

    def test_after_sigkill_every_message_names_the_way_out(self):
        m = Mount(self.src, self.mnt)
        with m:
            m.proc.kill()
            m.proc.wait()
            r = run("stats", self.mnt)
            self.assertEqual(r.returncode, 4, r.stderr)
            self.assertIn(f"fusermount3 -u {self.mnt}", r.stderr)
            r = run(self.src, self.mnt)
            self.assertEqual(r.returncode, 32, r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
            self.assertIn("fusermount3 -u", r.stderr)
            subprocess.run(["fusermount3", "-u", self.mnt], check=True)

    def test_stats_arguments(self):
        r = run("stats", os.path.join(self.tmp, "nonexistent"))
        self.assertEqual(r.returncode, 4)
        self.assertIn("No such file or directory", r.stderr)
        self.assertIn("exit status", run("stats", "--help").stdout.lower())
        self.assertNotIn("SECONDS=2", run("stats", "--help").stdout)
        with Mount(self.src, self.mnt, "-o", "subtype=mine") as m:
            self.assertEqual(mount_entry(self.mnt)["fstype"], "fuse.mine")
            r = run("stats", "--json", "--format", "prometheus", self.mnt)
            self.assertEqual((r.returncode, r.stdout), (1, ""))
            self.assertIn("two formats", r.stderr)
            # Found by its daemon's socket, whatever its type says.
            r = run("stats", "--json", self.mnt)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(self.mnt, [x["mountpoint"] for x in json.loads(run("stats", "--json").stdout)["mounts"]])
            # --watch's interval is optional, even before a mountpoint.
            watch = subprocess.Popen([harness.ARGS.binary, "stats", "--watch", self.mnt], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            try:
                self.assertTrue(watch.stdout.readline().startswith("time "))  # the header
                self.assertIn(self.mnt, watch.stdout.readline())  # the first interval's line
            finally:
                watch.kill()
                watch.communicate()
            m.unmount()

    def test_block_device_of_size_zero_is_refused(self):
        r = subprocess.run(["losetup", "-f"], capture_output=True, text=True)
        device = r.stdout.strip()
        if r.returncode != 0 or not device:
            self.skipTest("no free loop device")
        self.assert_one_line_error(run(device, self.mnt), 32, device, "size 0")

    def test_fusermount_u_exits_zero(self):
        with Mount(self.src, self.mnt) as m:
            self.assertEqual(m.unmount(), 0, m.log)
            self.assertFalse(is_mounted(self.mnt))

    def test_already_mounted(self):
        with Mount(self.src, self.mnt):
            self.assert_one_line_error_keep_mount(run(self.src, self.mnt), 32, "already a splicefs mount")

    def assert_one_line_error_keep_mount(self, result, code, words):
        self.assertEqual(result.returncode, code, result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        self.assertIn(words, result.stderr)

    def test_fsname_and_subtype(self):
        with Mount(self.src, self.mnt, "-o", "fsname=mydata"):
            entry = mount_entry(self.mnt)
            self.assertEqual((entry["fstype"], entry["source"]), ("fuse.splicefs", "mydata"))

    def test_read_only(self):
        with Mount(self.src, self.mnt, "-o", "ro"):
            with self.assertRaises(OSError) as ctx:
                open(os.path.join(self.mnt, "new"), "w")
            self.assertEqual(ctx.exception.errno, 30)  # EROFS

    def test_no_fd_leak(self):
        with Mount(self.src, self.mnt) as m:
            fd_dir = f"/proc/{m.pid}/fd"
            before = harness.daemon_fds(m.pid)
            for i in range(300):
                p = os.path.join(self.mnt, f"f{i}")
                with open(p, "w") as f:
                    f.write("x" * i)
                with open(p) as f:
                    f.read()
                os.listdir(self.mnt)
                os.unlink(p)
            # Forgotten inodes must close their fds.
            after = harness.wait_for_fds_to_settle(m.pid, before + 2)
            self.assertLessEqual(after, before + 2, os.listdir(fd_dir))

    def test_aborted_connection_exits_two_and_unmounts(self):
        # An aborted connection (fusectl's abort) is a failure after
        # mounting: exit status 2 (splicefs(1)), and no mount left behind.
        connections = "/sys/fs/fuse/connections"
        if not is_mounted(connections):
            r = subprocess.run(["mount", "-t", "fusectl", "fusectl", connections], capture_output=True, text=True)
            if r.returncode != 0:
                self.skipTest(f"cannot mount fusectl on {connections}: {r.stderr.strip()}")
            self.addCleanup(subprocess.run, ["umount", connections], capture_output=True)
        m = Mount(self.src, self.mnt)
        with m:
            with open(f"{connections}/{os.minor(os.stat(self.mnt).st_dev)}/abort", "w") as f:
                f.write("1")
            self.assertEqual(m.wait(), 2, m.log)
            self.assertFalse(is_mounted(self.mnt))
            self.assertIn("after a failure", m.log)

    def test_auto_unmount_after_sigkill(self):
        m = Mount(self.src, self.mnt, "-o", "auto_unmount")
        with m:
            os.kill(m.pid, signal.SIGKILL)
            m.proc.wait()
            # fusermount3 notices the dead daemon and unmounts; wait for the event.
            import select
            import time
            deadline = time.monotonic() + 10
            with open("/proc/self/mountinfo") as f:
                p = select.poll()
                p.register(f, select.POLLPRI)
                while is_mounted(self.mnt) and time.monotonic() < deadline:
                    p.poll(1000)
            self.assertFalse(is_mounted(self.mnt))


if __name__ == "__main__":
    harness.main()
