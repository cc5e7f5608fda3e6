"""Faults injected into the daemon with a preloaded library
(injected_faults.c). A source that returns short reads before the end of a
file (FUSE, NFS and some devices may): through the page cache a short READ
reply would make the kernel believe the file ends there, so every file must
read back whole, with its size. Worker pipes that cannot grow (a user's
pipe budget spent): large WRITE requests must still succeed, copied."""

import os
import shutil
import subprocess
import tempfile
import unittest

import harness
from harness import Mount


def shim_path():
    return os.path.join(os.path.dirname(os.path.abspath(harness.ARGS.binary)), "libinjected_faults.so")


def faulty_env(**faults):
    return dict(os.environ, LD_PRELOAD=shim_path(), **faults,
                ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0")


class InjectedFaults(unittest.TestCase):
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
        env = faulty_env(SHORT_READS_MAX="5000")
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


    def test_workers_whose_pipes_cannot_grow_copy_large_writes(self):
        # Sizing before mounting takes up to two F_SETPIPE_SZ (the one it
        # wants, refused above fs.pipe-max-size, then the largest allowed);
        # after those, the workers' fail.
        env = faulty_env(PIPE_GROW_FAILS_AFTER="2")
        data = os.urandom(8 << 20)
        with Mount(self.src, self.mnt, splice="all", cache="never", env=env) as m:
            path = os.path.join(self.mnt, "big")
            with open(path, "wb") as f:
                for i in range(0, len(data), 1 << 20):
                    self.assertEqual(f.write(data[i:i + (1 << 20)]), 1 << 20)
            with open(os.path.join(self.src, "big"), "rb") as f:
                self.assertEqual(f.read(), data)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), data)
            self.assertIn("WRITE requests will be copied", m.log)
            self.assertEqual(m.unmount(), 0, m.log)


if __name__ == "__main__":
    harness.main()
