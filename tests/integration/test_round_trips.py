#!/usr/bin/env python3
"""Round trips: every request the kernel sends is counted by opcode
(`requests` in splicefs stats), and the ones a caller would wait for in
vain are not asked for. close() sends FLUSH only where the source could
report something there: a writer on a network or stacked filesystem."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Mount, MountedTestCase, write_file  # noqa: E402


class RoundTrips(MountedTestCase):
    def requests(self):
        return self.mount.stats()["requests"]

    def test_each_request_is_counted_by_its_opcode(self):
        before = self.requests()
        for i in range(5):
            os.close(os.open(self.m(f"new{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        os.mkdir(self.m("dir"))
        for i in range(5):
            os.unlink(self.m(f"new{i}"))
        after = self.requests()
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        self.assertEqual((delta.get("CREATE"), delta.get("MKDIR"), delta.get("UNLINK")), (5, 1, 5), delta)
        self.assertEqual(sorted(os.listdir(self.src)), ["dir"])

    def test_close_on_a_local_source_sends_no_flush(self):
        # The source is on a local filesystem (ext4 or tmpfs here), whose
        # close() cannot fail: neither a reader's nor a writer's close
        # waits for a FLUSH.
        data = os.urandom(100000)
        with open(self.m("f"), "wb") as f:
            f.write(data)
        with open(self.m("f"), "rb") as f:
            self.assertEqual(f.read(), data)
        with open(os.path.join(self.src, "f"), "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(self.requests().get("FLUSH", 0), 0, self.requests())

    def test_a_writer_on_a_fuse_source_still_flushes(self):
        # Another FUSE filesystem as the source (here a second splicefs
        # mount): its close() can report write-back errors, so a writer's
        # close asks; a reader's does not.
        inner = os.path.join(self.tmp, "inner")
        outer = os.path.join(self.tmp, "outer")
        os.mkdir(inner)
        os.mkdir(outer)
        with Mount(self.src, inner) as inner_mount, Mount(inner, outer) as m:
            with open(os.path.join(outer, "g"), "wb") as f:
                f.write(b"written")
            self.assertEqual(m.stats()["requests"].get("FLUSH", 0), 1)
            with open(os.path.join(outer, "g"), "rb") as f:
                self.assertEqual(f.read(), b"written")
            self.assertEqual(m.stats()["requests"].get("FLUSH", 0), 1)
            self.assertEqual(m.unmount(), 0, m.log)
            self.assertEqual(inner_mount.unmount(), 0, inner_mount.log)
        with open(os.path.join(self.src, "g"), "rb") as f:
            self.assertEqual(f.read(), b"written")

    def test_a_long_timeout_spares_round_trips_and_a_zero_one_asks_each_time(self):
        # --timeout: how long the kernel trusts what it learnt. What a long
        # one gives up is seeing a change made directly on the source.
        path = os.path.join(self.src, "t")
        for timeout, asks in (("3600", False), ("0", True)):
            write_file(path, b"1")
            mnt = os.path.join(self.tmp, "mnt-" + timeout)
            os.mkdir(mnt)
            with Mount(self.src, mnt, "--timeout", timeout) as m:
                self.assertEqual(m.stats()["timeout"], float(timeout))
                os.stat(os.path.join(mnt, "t"))
                before = m.stats()["requests"]
                for _ in range(20):
                    os.stat(os.path.join(mnt, "t"))
                after = m.stats()["requests"]
                asked = sum(after.get(op, 0) - before.get(op, 0) for op in ("LOOKUP", "GETATTR"))
                write_file(path, b"12345")  # directly on the source
                seen = os.stat(os.path.join(mnt, "t")).st_size
                self.assertEqual(m.unmount(), 0, m.log)
            if asks:
                self.assertGreaterEqual(asked, 20, after)
                self.assertEqual(seen, 5)
            else:
                self.assertEqual(asked, 0, after)
                self.assertEqual(seen, 1)  # the documented cost


if __name__ == "__main__":
    harness.main()
