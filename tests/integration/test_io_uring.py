#!/usr/bin/env python3
"""FUSE over io_uring (--io-uring): requests really go by the rings, one
queue per CPU serves the processes on that CPU, data read and written that
way is the source's and is counted as copied with the reason io_uring, the
daemon falls back to /dev/fuse and says why where the kernel does not offer
it, and unmount and signals end it as they end a /dev/fuse daemon.

The data-path tests (parity, random operations, load, permissions, POSIX
edges, ACLs) also run with every mount on io_uring; this file checks what
only io_uring has."""
import mmap
import os
import signal
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Mount, MountedTestCase, write_file  # noqa: E402

MIB = 1 << 20


def possible_cpus():
    count = 0
    with open("/sys/devices/system/cpu/possible") as f:
        for part in f.read().strip().split(","):
            first, _, last = part.partition("-")
            count += int(last or first) - int(first) + 1
    return count


class IoUring(MountedTestCase):
    mount_args = ("--io-uring", "--cache", "never")
    mount_splice = "all"  # asked for, and still nothing is spliced: the rings carry memory

    def setUp(self):
        harness.set_enable_uring("1")
        super().setUp()
        transport = self.mount.stats()["transport"]
        if "built without liburing" in transport:
            self.skipTest(f"this build has no io_uring transport: {transport}")

    def test_requests_go_by_the_rings_and_data_is_counted_as_copied(self):
        stats = self.mount.stats()
        self.assertEqual(stats["transport"], f"io_uring, {possible_cpus()} queue" +
                         ("" if possible_cpus() == 1 else "s"))
        block = stats["max_reply"]
        data = os.urandom(8 * block + 4321)
        # Direct I/O (--cache never): each read() and write() of up to
        # max_reply is one request.
        # (Page-aligned buffers: an unaligned one spans a page more, and the
        # kernel splits such a request in two.)
        buf = mmap.mmap(-1, block)
        fd = os.open(self.m("f"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for off in range(0, len(data), block):
                piece = data[off:off + block]
                buf[:len(piece)] = piece
                self.assertEqual(os.writev(fd, [memoryview(buf)[:len(piece)]]), len(piece))
        finally:
            os.close(fd)
        with open(os.path.join(self.src, "f"), "rb") as f:
            self.assertEqual(f.read(), data)
        fd = os.open(self.m("f"), os.O_RDONLY)
        try:
            chunks = []
            while n := os.readv(fd, [buf]):
                chunks.append(bytes(buf[:n]))
        finally:
            os.close(fd)
            buf.close()
        self.assertEqual(b"".join(chunks), data)
        after = self.mount.stats()
        # Nothing was spliced (--splice all asked for it; the rings carry
        # memory), every READ and WRITE was copied with the reason io_uring:
        # 9 writes, 9 reads and the one that found the end of the file.
        for direction, unit, count in (("read", "replies", 10), ("write", "requests", 9)):
            d = after[direction]
            self.assertEqual(d[f"spliced_{unit}"], 0, d)
            self.assertEqual(d["copy_reasons"]["io_uring"], d[unit], d)
            self.assertEqual(d[unit], count, d)
        self.assertEqual(after["read"]["bytes"], len(data))
        self.assertEqual(after["write"]["bytes"], len(data))
        # Every one of them, and the opens and lookups, came by a ring.
        self.assertGreaterEqual(after["io_uring_requests"] - stats["io_uring_requests"], 10 + 9 + 4)

    def test_a_process_on_every_cpu_is_served(self):
        write_file(os.path.join(self.src, "g"), b"hello")
        os.mkdir(os.path.join(self.src, "d"))
        before = self.mount.stats()["io_uring_requests"]
        for cpu in sorted(os.sched_getaffinity(0)):
            script = ("import os,sys; os.sched_setaffinity(0, {%d}); p=sys.argv[1];"
                      "print(open(os.path.join(p, 'g')).read(), sorted(os.listdir(p)),"
                      " os.stat(os.path.join(p, 'd')).st_nlink)" % cpu)
            r = subprocess.run([sys.executable, "-c", script, self.mnt], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual((r.returncode, r.stdout.strip()), (0, "hello ['d', 'g'] 2"), r.stderr)
        self.assertGreater(self.mount.stats()["io_uring_requests"], before)

    def test_sigterm_with_a_file_open_serves_it_until_closed(self):
        write_file(os.path.join(self.src, "h"), b"still here")
        fd = os.open(self.m("h"), os.O_RDONLY)
        try:
            os.kill(self.mount.pid, signal.SIGTERM)
            harness.wait_until(lambda: not harness.is_mounted(self.mnt), 30, "the lazy unmount")
            self.assertEqual(os.pread(fd, 100, 0), b"still here")
        finally:
            os.close(fd)
        self.assertEqual(self.mount.wait(), 0, self.mount.log)


class Fallback(unittest.TestCase):
    def setUp(self):
        self.tmp = harness.tempfile.mkdtemp(prefix="splicefs-test-")
        self.src, self.mnt = os.path.join(self.tmp, "src"), os.path.join(self.tmp, "mnt")
        os.mkdir(self.src)
        os.mkdir(self.mnt)

    def tearDown(self):
        harness.set_enable_uring("1")
        harness.shutil.rmtree(self.tmp, ignore_errors=True)

    def test_without_enable_uring_it_serves_by_dev_fuse_and_says_why(self):
        harness.set_enable_uring("0")
        write_file(os.path.join(self.src, "f"), b"data")
        with Mount(self.src, self.mnt, "-o", "io_uring") as m:
            self.assertIn("requests by /dev/fuse: the kernel does not offer io_uring", m.log)
            stats = m.stats()
            self.assertTrue(stats["transport"].startswith("/dev/fuse: the kernel does not offer io_uring"),
                            stats["transport"])
            with open(os.path.join(self.mnt, "f"), "rb") as f:
                self.assertEqual(f.read(), b"data")
            self.assertEqual(m.stats()["io_uring_requests"], 0)
            self.assertEqual(m.unmount(), 0, m.log)

    def test_where_io_uring_is_disabled_it_serves_by_dev_fuse_and_says_why(self):
        # As in many containers: io_uring_setup fails. The kernel offers
        # FUSE over io_uring all the same; had the daemon said yes, the
        # kernel would hold every request until queues that can never be
        # made were registered.
        switch = "/proc/sys/kernel/io_uring_disabled"
        if not os.path.exists(switch):
            self.skipTest(f"{switch} is missing (Linux before 6.6)")
        with open(switch) as f:
            before = f.read().strip()
        write_file(os.path.join(self.src, "f"), b"data")
        try:
            with open(switch, "w") as f:
                f.write("2")
            with Mount(self.src, self.mnt, "--io-uring") as m:
                transport = m.stats()["transport"]
                self.assertTrue(transport.startswith("/dev/fuse: io_uring failed: io_uring_setup: "), transport)
                with open(os.path.join(self.mnt, "f"), "rb") as f:
                    self.assertEqual(f.read(), b"data")
                self.assertEqual(m.unmount(), 0, m.log)
        finally:
            with open(switch, "w") as f:
                f.write(before)

    def test_without_the_option_the_rings_stay_unused(self):
        with Mount(self.src, self.mnt) as m:
            self.assertEqual(m.stats()["transport"], "/dev/fuse")
            os.listdir(self.mnt)
            self.assertEqual(m.stats()["io_uring_requests"], 0)
            self.assertEqual(m.unmount(), 0, m.log)


if __name__ == "__main__":
    rest = harness.parse_args()
    harness.require_fuse()
    harness.allow_fuse_over_io_uring()
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
