#!/usr/bin/env python3
"""Kernel passthrough (--passthrough auto): the kernel serves open files
from the source itself, every open is counted with the path it took, the
kernel's rules (one path per inode, no writeback caching) never reach a
user as an error, and backing files are released exactly once.

The data-path tests (parity, random operations, load, permissions, single
file, POSIX edges, ACLs) also run with --passthrough auto; this file checks
what only passthrough has."""
import mmap
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Mount, MountedTestCase, outcome, run_as, write_file  # noqa: E402

MIB = 1 << 20
OTHER = (65534, 65534, [])


class Passthrough(MountedTestCase):
    mount_args = ("--passthrough", "auto", "--cache", "auto", "-o", "allow_other")

    def setUp(self):
        super().setUp()
        state = self.mount.stats()["passthrough_state"]
        if state != "on":
            self.skipTest(f"passthrough is {state} here")

    def opens(self):
        return self.mount.stats()["opens"]

    def test_reads_and_writes_never_reach_the_daemon(self):
        data = os.urandom(8 * MIB + 123)
        write_file(os.path.join(self.src, "big"), data)
        with open(self.m("big"), "rb") as f:
            self.assertEqual(f.read(), data)
        with open(self.m("big"), "r+b") as f:
            f.seek(MIB)
            f.write(b"w" * MIB)
        with open(os.path.join(self.src, "big"), "rb") as f:
            self.assertEqual(f.read(), data[:MIB] + b"w" * MIB + data[2 * MIB:])
        stats = self.mount.stats()
        self.assertEqual(stats["opens"]["passthrough"], 2)
        self.assertEqual(stats["opens"]["data_path"], 0)
        self.assertEqual((stats["read"]["replies"], stats["write"]["requests"]), (0, 0))
        self.assertEqual(stats["passthrough_backing_ids"], 0)

    def test_shared_writable_mapping_reaches_the_source(self):
        def op(base):
            p = os.path.join(base, "mapped")
            write_file(p, b"\0" * 3 * 4096)
            fd = os.open(p, os.O_RDWR)
            try:
                with mmap.mmap(fd, 3 * 4096, mmap.MAP_SHARED) as m:
                    m[4096:4101] = b"hello"
                    m.flush()
                return os.pread(fd, 5, 4096)
            finally:
                os.close(fd)
        self.assertEqual(op(self.ref), op(self.mnt))
        with open(os.path.join(self.src, "mapped"), "rb") as f:
            self.assertEqual(f.read()[4096:4101], b"hello")
        self.assertGreater(self.opens()["passthrough"], 0)

    def test_one_path_per_inode_never_an_eio(self):
        # A setuid file opened for writing goes to the data path (the daemon
        # clears the bit as for the writer); while it is open, every other
        # open of that inode must follow, or the kernel fails it with EIO.
        p = os.path.join(self.src, "setuid")
        write_file(p, b"x" * 100)
        os.chmod(p, 0o4777)
        writer = os.open(self.m("setuid"), os.O_WRONLY)
        try:
            with open(self.m("setuid"), "rb") as f:
                self.assertEqual(f.read(), b"x" * 100)
            reasons = self.opens()["data_path_reasons"]
            self.assertEqual((reasons["setuid_setgid_write"], reasons["other_open_not_passthrough"]), (1, 1))
        finally:
            os.close(writer)
        # Once it is closed, the inode may go to the kernel again; and an
        # inode in passthrough keeps new opens there. The kernel sends the
        # RELEASE after close() has returned: wait for the daemon to see it.
        harness.wait_until(lambda: self.mount.stats()["open_files"] == 0, 10,
                           "the writer's release", lambda: str(self.mount.stats()["open_files"]))
        with open(self.m("setuid"), "rb") as f, open(self.m("setuid"), "rb") as g:
            self.assertEqual(f.read() + g.read(), b"x" * 200)
        self.assertEqual(self.opens()["passthrough"], 2)

    def test_write_through_an_inode_already_in_passthrough_clears_setuid_as_natively(self):
        # A setuid file held open for reading (in passthrough), then written
        # by another user: the write goes through the backing file, whose
        # credentials must not keep bits the writer's own write would clear.
        results = {}
        for base in (self.ref, self.mnt):
            p = os.path.join(base, "prog")
            write_file(p, b"#!/bin/sh\n")
            # Setgid without group execute: the kernel's FUSE client leaves
            # that bit to the filesystem below.
            os.chmod(p, 0o6767)
            reader = os.open(p, os.O_RDONLY)
            try:
                def append(path=p):
                    with open(path, "ab") as f:
                        f.write(b"echo hi\n")
                    return oct(os.stat(path).st_mode)
                results[base] = outcome(run_as, *OTHER, append)
            finally:
                os.close(reader)
        self.assertEqual(results[self.mnt], results[self.ref])
        self.assertGreater(self.opens()["passthrough"], 0)

    def test_truncate_and_fallocate_through_a_passthrough_open(self):
        def op(base):
            p = os.path.join(base, "t")
            write_file(p, b"a" * 10000)
            fd = os.open(p, os.O_RDWR)
            try:
                os.ftruncate(fd, 3000)
                os.posix_fallocate(fd, 0, 20000)
                os.pwrite(fd, b"end", 19997)
                return os.fstat(fd).st_size, os.pread(fd, 20000, 0)
            finally:
                os.close(fd)
        self.assertEqual(op(self.ref), op(self.mnt))

    def test_o_direct_open(self):
        def op(base):
            p = os.path.join(base, "d")
            write_file(p, b"q" * 8192)
            fd = os.open(p, os.O_RDWR | os.O_DIRECT)
            try:
                buf = mmap.mmap(-1, 4096)
                buf[:] = b"z" * 4096
                os.pwritev(fd, [buf], 4096)
                out = mmap.mmap(-1, 8192)
                n = os.preadv(fd, [out], 0)
                return n, bytes(out[:n])
            finally:
                os.close(fd)
        self.assertEqual(outcome(op, self.ref), outcome(op, self.mnt))

    def test_backing_files_are_released_exactly_once(self):
        write_file(os.path.join(self.src, "f"), b"data")
        # Warm up: the first opens create what the daemon keeps anyway.
        with open(self.m("f"), "rb") as f:
            f.read()
        fds_before = harness.daemon_fds(self.mount.pid)
        cycles = int(os.environ.get("SPLICEFS_PASSTHROUGH_CYCLES", "100000"))
        path = self.m("f")
        for _ in range(cycles):
            os.close(os.open(path, os.O_RDONLY))
        stats = self.mount.stats()
        self.assertEqual(stats["opens"]["passthrough"], cycles + 1)
        self.assertEqual(stats["passthrough_backing_ids"], 0)
        self.assertLessEqual(harness.wait_for_fds_to_settle(self.mount.pid, fds_before), fds_before)
        self.assertNotIn("releasing backing file", self.mount.log)
        self.assertNotIn("refused a backing file", self.mount.log)


class CachedRereads(MountedTestCase):
    """--cache auto on the data path: a file read twice without changes is
    served the second time from the page cache; a change made directly on
    the source shows within the attribute timeout (1 s)."""
    mount_args = ("--passthrough", "off", "--cache", "auto")

    def test_second_read_comes_from_the_page_cache_and_source_changes_show(self):
        import time
        p = os.path.join(self.src, "f")
        write_file(p, b"a" * (4 * MIB))
        with open(self.m("f"), "rb") as f:
            self.assertEqual(f.read(), b"a" * (4 * MIB))
        replies = self.mount.stats()["read"]["replies"]
        self.assertGreater(replies, 0)
        with open(self.m("f"), "rb") as f:
            self.assertEqual(f.read(), b"a" * (4 * MIB))
        self.assertEqual(self.mount.stats()["read"]["replies"], replies, "the re-read reached the daemon")
        # Same size, new contents and mtime, written beside the mount.
        with open(p, "r+b") as f:
            f.write(b"b" * (4 * MIB))
        os.utime(p, ns=(time.time_ns(), time.time_ns() + 10**9))
        changed = time.monotonic()
        while True:
            with open(self.m("f"), "rb") as f:
                if f.read(1) == b"b":
                    break
            self.assertLess(time.monotonic() - changed, 2.5, "a change on the source stayed hidden")
        with open(self.m("f"), "rb") as f:
            self.assertEqual(f.read(), b"b" * (4 * MIB))


class Fallbacks(MountedTestCase):
    """Where passthrough cannot be had, opens use the data path and say why."""

    def test_cache_always_falls_back(self):
        write_file(os.path.join(self.src, "f"), b"abc" * 5000)
        mnt2 = os.path.join(self.tmp, "mnt2")
        os.mkdir(mnt2)
        with Mount(self.src, mnt2, "--passthrough", "auto", "--cache", "always") as m:
            with open(os.path.join(mnt2, "f"), "rb") as f:
                self.assertEqual(f.read(), b"abc" * 5000)
            stats = m.stats()
        self.assertEqual(stats["passthrough_state"], "off: --cache always (writeback caching)")
        self.assertEqual(stats["opens"]["passthrough"], 0)
        self.assertEqual(stats["opens"]["data_path_reasons"]["cache_policy"], 1)
        self.assertGreater(stats["read"]["replies"], 0)

    def test_passthrough_off_counts_every_open(self):
        write_file(os.path.join(self.src, "f"), b"abc")
        for _ in range(3):
            with open(self.m("f"), "rb") as f:
                f.read()
        stats = self.mount.stats()
        if harness.ARGS.passthrough == "off":
            self.assertEqual(stats["opens"]["data_path_reasons"]["passthrough_off"], 3)
            self.assertEqual(stats["passthrough_state"], "off")

    def test_source_on_a_stacked_filesystem_is_refused_with_the_reason(self):
        # The source is itself a passthrough mount (stack depth 1): the
        # kernel refuses it as a backing file (ELOOP); the data path serves.
        inner = os.path.join(self.tmp, "inner")
        outer = os.path.join(self.tmp, "outer")
        os.mkdir(inner)
        os.mkdir(outer)
        write_file(os.path.join(self.src, "f"), b"stacked" * 1000)
        with Mount(self.src, inner, "--passthrough", "auto") as first:
            if first.stats()["passthrough_state"] != "on":
                self.skipTest("passthrough is not available here")
            with Mount(inner, outer, "--passthrough", "auto") as second:
                with open(os.path.join(outer, "f"), "rb") as f:
                    self.assertEqual(f.read(), b"stacked" * 1000)
                stats = second.stats()
        self.assertEqual(stats["opens"]["data_path_reasons"]["kernel_refused"], 1)
        self.assertEqual(stats["passthrough_refused_errno"], 40)  # ELOOP
        self.assertGreater(stats["read"]["replies"], 0)


if __name__ == "__main__":
    harness.main()
