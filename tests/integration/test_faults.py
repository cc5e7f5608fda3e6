"""Faults under a live mount: a full source filesystem, a source removed or
unmounted underneath, SIGTERM while a write is in flight in the daemon."""

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import unittest

import harness
from harness import Mount, is_mounted

MIB = 1 << 20


class Faults(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="splicefs-faults-")
        self.src = os.path.join(self.tmp, "src")
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.src)
        os.mkdir(self.mnt)

    def tearDown(self):
        for path in (self.mnt, self.src):
            if is_mounted(path):
                subprocess.run(["umount", "-l", path])
        shutil.rmtree(self.tmp, ignore_errors=True)

    def small_tmpfs(self, size):
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "splicefs-test", self.src],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs: {r.stderr.strip()}")

    def test_full_source_gives_enospc_and_keeps_earlier_data(self):
        self.small_tmpfs("8m")
        first = os.urandom(3 * MIB)
        with Mount(self.src, self.mnt) as m:
            with open(os.path.join(self.mnt, "first"), "wb") as f:
                f.write(first)
                f.flush()
                os.fsync(f.fileno())
            with self.assertRaises(OSError) as ctx:
                with open(os.path.join(self.mnt, "filler"), "wb") as f:
                    for _ in range(16):
                        f.write(os.urandom(MIB))
                        f.flush()
                    os.fsync(f.fileno())
            self.assertEqual(ctx.exception.errno, errno.ENOSPC)
            with open(os.path.join(self.mnt, "first"), "rb") as f:
                self.assertEqual(f.read(), first)
            self.assertEqual(m.unmount(), 0, m.log)
        with open(os.path.join(self.src, "first"), "rb") as f:
            self.assertEqual(f.read(), first)

    def test_source_removed_under_the_mount(self):
        os.mkdir(os.path.join(self.src, "d"))
        with open(os.path.join(self.src, "d", "f"), "w") as f:
            f.write("x")
        with Mount(self.src, self.mnt) as m:
            self.assertEqual(os.listdir(os.path.join(self.mnt, "d")), ["f"])
            shutil.rmtree(self.src)
            # As natively for a directory removed while in use: empty, and no new entries.
            self.assertEqual(os.listdir(self.mnt), [])
            with self.assertRaises(OSError) as ctx:
                open(os.path.join(self.mnt, "new"), "w")
            self.assertEqual(ctx.exception.errno, errno.ENOENT)
            self.assertIsNone(m.proc.poll(), "the daemon died")
            self.assertEqual(m.unmount(), 0, m.log)

    def test_source_unmounted_lazily(self):
        self.small_tmpfs("16m")
        with open(os.path.join(self.src, "f"), "w") as f:
            f.write("before")
        with Mount(self.src, self.mnt) as m:
            subprocess.run(["umount", "-l", self.src], check=True)
            # The daemon's fds keep the detached filesystem alive: no crash, data still there.
            with open(os.path.join(self.mnt, "f")) as f:
                self.assertEqual(f.read(), "before")
            self.assertIsNone(m.proc.poll())
            self.assertEqual(m.unmount(), 0, m.log)

    def test_source_filesystem_errors_reach_the_caller_as_eio(self):
        # ext4 on a loop device whose backing file lives on another FUSE
        # mount; killing that daemon makes every block read fail with EIO.
        if shutil.which("mkfs.ext4") is None:
            self.skipTest("mkfs.ext4 is not installed")
        backing, inner = os.path.join(self.tmp, "backing"), os.path.join(self.tmp, "inner")
        os.mkdir(backing)
        os.mkdir(inner)
        with open(os.path.join(backing, "disk.img"), "wb") as f:
            f.truncate(64 * MIB)
        with Mount(backing, inner) as inner_mount:
            device = harness.losetup(os.path.join(inner, "disk.img"))
            try:
                subprocess.run(["mkfs.ext4", "-q", "-F", device], check=True)
                subprocess.run(["mount", "-o", "errors=continue", device, self.src], check=True)
                for name in ("native", "mounted"):
                    with open(os.path.join(self.src, name), "wb") as f:
                        f.write(os.urandom(4 * MIB))
                os.sync()
                with Mount(self.src, self.mnt) as m:
                    inner_mount.proc.kill()
                    inner_mount.proc.wait()
                    # Nothing may come from a cache: the kernel must ask the device.
                    with open("/proc/sys/vm/drop_caches", "w") as f:
                        f.write("3")
                    subprocess.run(["blockdev", "--flushbufs", device], capture_output=True)

                    def read_all(path):
                        with open(path, "rb") as f:
                            return len(f.read())

                    native = harness.outcome(read_all, os.path.join(self.src, "native"))
                    mounted = harness.outcome(read_all, os.path.join(self.mnt, "mounted"))
                    self.assertEqual(native, ("err", "EIO"))
                    self.assertEqual(mounted, native)
                    self.assertIsNone(m.proc.poll(), "the daemon died")
                    self.assertEqual(m.unmount(), 0, m.log)
            finally:
                subprocess.run(["umount", "-l", self.src], capture_output=True)
                harness.detach(device)

    def test_close_at_the_daemons_fd_limit_succeeds(self):
        # close() reports the source's flush errors: the daemon closes a
        # duplicate of the source fd. At its fd limit the duplicate cannot
        # be made, which is no error of the file's (natively close gives 0).
        # (Opened for writing: a read-only close sends no FLUSH at all.)
        with open(os.path.join(self.src, "f"), "wb") as f:
            f.write(b"x")
        with Mount(self.src, self.mnt, fd_limit=64) as m:
            fds = harness.open_until_emfile(os.path.join(self.mnt, "f"), flags=os.O_RDWR)
            try:
                self.assertLess(len(fds), 200, "the daemon never reached its fd limit")
            finally:
                results = [harness.outcome(os.close, fd) for fd in fds]
            self.assertEqual([r for r in results if r != ("ok", None)], [])
            self.assertEqual(m.unmount(), 0, m.log)

    def test_sigterm_while_a_writer_is_blocked_in_the_daemon(self):
        # The promise (splicefs(1)): SIGTERM unmounts lazily, files still
        # open keep working until closed, then the daemon exits 0. The case
        # that tests it is a write in flight in the daemon when the signal
        # comes: the source here is another splicefs mount whose daemon is
        # stopped, so the outer daemon's write into it cannot finish.
        inner = os.path.join(self.tmp, "inner")
        os.mkdir(inner)
        record = os.urandom(64 * 1024)
        written = 0
        with Mount(self.src, inner, splice="off") as inner_mount, Mount(inner, self.mnt) as outer:
            fd = os.open(os.path.join(self.mnt, "journal"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for i in range(32):
                    self.assertEqual(os.write(fd, record), len(record))
                    if i % 8 == 7:
                        os.fsync(fd)
                written = 32
                os.kill(inner_mount.pid, signal.SIGSTOP)
                try:
                    blocked = {}
                    writer = threading.Thread(target=lambda: blocked.update(r=harness.outcome(os.write, fd, record)))
                    writer.start()
                    harness.wait_until(lambda: harness.threads_blocked_in_fuse(outer.pid) >= 1, 10,
                                       "the outer daemon to block in its write to the stopped source")
                    self.assertTrue(writer.is_alive(), "the write returned although the source is stopped")
                    os.kill(outer.pid, signal.SIGTERM)
                    harness.wait_until(lambda: not is_mounted(self.mnt), 10, "the lazy unmount")
                    self.assertIsNone(outer.proc.poll(), "the daemon left with a write in flight")
                finally:
                    os.kill(inner_mount.pid, signal.SIGCONT)
                writer.join(30)
                self.assertFalse(writer.is_alive(), "the blocked write never returned")
                self.assertEqual(blocked["r"], ("ok", len(record)))
                written += 1
                # The open file keeps working after the unmount, until closed.
                for _ in range(7):
                    self.assertEqual(os.write(fd, record), len(record))
                    written += 1
                os.fsync(fd)
            finally:
                os.close(fd)
            self.assertEqual(outer.wait(), 0, outer.log)
            self.assertTrue(is_mounted(inner), "the source mount went away")
        with open(os.path.join(self.src, "journal"), "rb") as f:
            data = f.read()
        self.assertEqual(len(data), written * len(record))
        self.assertTrue(data == record * written, "the source holds other bytes than were written")

if __name__ == "__main__":
    harness.main()
