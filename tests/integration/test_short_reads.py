"""A source that returns short reads before the end of a file (FUSE, NFS and
some devices may): through the page cache, a short READ reply would make
the kernel believe the file ends there. The daemon runs with a preloaded
pread() that returns at most 5000 bytes; every file must read back whole,
with its size, in the copy path (--splice off) and when a refused splice
falls back to copying."""

import os
import shutil
import subprocess
import tempfile
import unittest

import harness
from harness import Mount


def shim_path():
    return os.path.join(os.path.dirname(os.path.abspath(harness.ARGS.binary)), "libshort_reads.so")


class ShortReads(unittest.TestCase):
    def setUp(self):
        if not os.path.exists(shim_path()):
            self.skipTest(f"{shim_path()} is not built")
        self.tmp = tempfile.mkdtemp(prefix="splicefs-short-")
        self.src = os.path.join(self.tmp, "src")
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.src)
        os.mkdir(self.mnt)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def check(self, splice, cache):
        sizes = [1, 4999, 5000, 5001, 65536, 1 << 20, (1 << 20) + 12345]
        expected = {}
        for size in sizes:
            data = os.urandom(size)
            with open(os.path.join(self.src, f"f{size}"), "wb") as f:
                f.write(data)
            expected[size] = data
        env = dict(os.environ, LD_PRELOAD=shim_path(), SHORT_READS_MAX="5000",
                   ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0")
        with Mount(self.src, self.mnt, splice=splice, cache=cache, env=env) as m:
            for size in sizes:
                path = os.path.join(self.mnt, f"f{size}")
                with open(path, "rb") as f:
                    got = f.read()
                self.assertEqual(len(got), size, f"{size}-byte file read back as {len(got)} bytes")
                self.assertEqual(got, expected[size])
                self.assertEqual(os.stat(path).st_size, size)
            self.assertEqual(m.unmount(), 0, m.log)

    def test_copy_path_through_the_page_cache(self):
        self.check("off", "auto")

    def test_copy_path_with_direct_io(self):
        self.check("off", "never")

    def test_copy_path_with_writeback_caching(self):
        self.check("off", "always")


if __name__ == "__main__":
    harness.main()
