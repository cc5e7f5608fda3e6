"""`splicefs stats`: exact counters, output formats, errors, and answers
while every worker is blocked."""

import json
import mmap
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import Mount

MIB = 1 << 20


def stats(*args, check=True):
    result = subprocess.run([harness.ARGS.binary, "stats", *args], capture_output=True, text=True, timeout=30)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def json_stats(*mountpoints):
    return {m["mountpoint"]: m for m in json.loads(stats("--json", *mountpoints).stdout)["mounts"]}


class Stats(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="splicefs-stats-")
        self.src = os.path.join(self.tmp, "src")
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.src)
        os.mkdir(self.mnt)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_counters_are_exact(self):
        # Under FUSE direct I/O with a 512 KiB max reply, every 1 MiB read(2)
        # or write(2) is exactly two 512 KiB requests and every small one is
        # one request: each counter's value follows from what this test's
        # reader and writer did, not from the other counters.
        n_mib, m_mib, small = 48, 24, 256
        data = os.urandom(n_mib * MIB)
        with open(os.path.join(self.src, "data"), "wb") as f:
            f.write(data)
        buf = mmap.mmap(-1, MIB)  # page-aligned, as direct I/O wants
        with Mount(self.src, self.mnt, "--cache", "never", "--max-reply", "512K", splice="all"):
            fresh = json_stats(self.mnt)[self.mnt]
            for direction in ("read", "write"):
                for key, value in fresh[direction].items():
                    if isinstance(value, int):
                        self.assertEqual(value, 0, f"{direction}.{key}")
            fd = os.open(os.path.join(self.mnt, "data"), os.O_RDONLY)
            got = bytearray()
            try:
                for _ in range(n_mib):
                    self.assertEqual(os.readv(fd, [buf]), MIB)
                    got += buf
                for i in range(small):
                    got_small = os.pread(fd, 4096, i * 4096)
                    self.assertEqual(got_small, data[i * 4096:(i + 1) * 4096])
            finally:
                os.close(fd)
            self.assertTrue(bytes(got) == data, "the reader got other bytes than the source holds")
            read = json_stats(self.mnt)[self.mnt]["read"]
            self.assertEqual(read["spliced_replies"], 2 * n_mib)
            self.assertEqual(read["spliced_bytes"], n_mib * MIB)
            self.assertEqual(read["copied_replies"], small)
            self.assertEqual(read["copied_bytes"], small * 4096)
            self.assertEqual(read["copy_reasons"]["small"], small)
            self.assertEqual(read["full_size_replies"], 2 * n_mib)
            self.assertEqual(read["size_histogram"][str(512 * 1024)], 2 * n_mib)
            self.assertEqual(read["size_histogram"]["4096"], small)

            blocks = [os.urandom(MIB) for _ in range(m_mib)]
            tail = [os.urandom(1024) for _ in range(small)]
            fd = os.open(os.path.join(self.mnt, "out"), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                for block in blocks:
                    buf[:] = block
                    self.assertEqual(os.writev(fd, [buf]), MIB)
                for piece in tail:
                    self.assertEqual(os.write(fd, piece), len(piece))
            finally:
                os.close(fd)
            write = json_stats(self.mnt)[self.mnt]["write"]
            self.assertEqual(write["spliced_requests"], 2 * m_mib)
            self.assertEqual(write["spliced_bytes"], m_mib * MIB)
            self.assertEqual(write["copied_requests"], small)
            self.assertEqual(write["copied_bytes"], small * 1024)
            self.assertEqual(write["copy_reasons"]["small"], small)
        with open(os.path.join(self.src, "out"), "rb") as f:
            self.assertTrue(f.read() == b"".join(blocks + tail), "the source holds other bytes than were written")

    def test_json_agrees_with_human_output_and_prometheus_parses(self):
        with open(os.path.join(self.src, "data"), "wb") as f:
            f.write(os.urandom(8 * MIB))
        with Mount(self.src, self.mnt, splice="read") as m:
            with open(os.path.join(self.mnt, "data"), "rb") as f:
                f.read()
            data = json.loads(stats("--json", self.mnt).stdout)
            self.assertEqual(data["schema_version"], 1)
            mount = data["mounts"][0]
            for key in ("mountpoint", "source", "pid", "splice", "max_reply", "read", "write"):
                self.assertIn(key, mount)
            self.assertEqual(mount["pid"], m.pid)
            self.assertEqual(mount["source"], self.src)
            human = stats(self.mnt).stdout
            self.assertIn(self.mnt, human)
            replies = int(re.search(r"READ\s+(\d+) replies", human).group(1))
            spliced = int(re.search(r"spliced (\d+) \(", human).group(1))
            self.assertEqual(replies, mount["read"]["replies"])
            self.assertEqual(spliced, mount["read"]["spliced_replies"])
            self.assertIn(f"splice {mount['splice']}", human)

            from prometheus_client.parser import text_string_to_metric_families
            families = {f.name: f for f in text_string_to_metric_families(stats("--format", "prometheus", self.mnt).stdout)}
            samples = {(s.name, s.labels.get("path")): s.value
                       for s in families["splicefs_read_bytes"].samples}
            self.assertEqual(samples[("splicefs_read_bytes_total", "spliced")], mount["read"]["spliced_bytes"])
            self.assertEqual(samples[("splicefs_read_bytes_total", "copied")], mount["read"]["copied_bytes"])
            self.assertIn("splicefs_read_reply_size_bytes", families)

    def test_not_a_mount_and_two_mounts(self):
        result = stats(self.src, check=False)
        self.assertEqual(result.returncode, 4)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1)
        self.assertIn("not a splicefs mount", result.stderr)
        other = os.path.join(self.tmp, "mnt2")
        os.mkdir(other)
        with Mount(self.src, self.mnt), Mount(self.src, other):
            listed = json_stats()
            self.assertIn(self.mnt, listed)
            self.assertIn(other, listed)
            # One bad path does not hide the good ones.
            result = stats("--json", self.src, self.mnt, check=False)
            self.assertEqual(result.returncode, 4)
            self.assertEqual(len(json.loads(result.stdout)["mounts"]), 1)

    def test_answers_while_every_worker_is_blocked(self):
        # The outer mount's source is an inner splicefs mount whose daemon is
        # stopped: reads through the outer mount block its workers in the source.
        inner = os.path.join(self.tmp, "inner")
        os.mkdir(inner)
        for i in range(4):
            with open(os.path.join(self.src, f"f{i}"), "wb") as f:
                f.write(os.urandom(MIB))
        with Mount(self.src, inner) as inner_mount, \
                Mount(inner, self.mnt, "--threads", "2") as outer:
            # Readers are other processes: this one must hold no file of the
            # mount, or forking `splicefs stats` would close it and wait on FLUSH.
            readers = []
            # Look the names up now (cached for a second): lookups in one
            # directory queue behind each other in the kernel, opens do not.
            for i in range(4):
                os.stat(os.path.join(self.mnt, f"f{i}"))
            os.kill(inner_mount.pid, signal.SIGSTOP)
            try:
                for i in range(4):
                    readers.append(subprocess.Popen(["dd", f"if={os.path.join(self.mnt, f'f{i}')}", "of=/dev/null",
                                                     "bs=1M", "count=1", "iflag=direct", "status=none"]))
                # Wait until both outer workers are stuck in the source (event, not a sleep).
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and harness.threads_blocked_in_fuse(outer.pid) < 2:
                    time.sleep(0.05)
                self.assertGreaterEqual(harness.threads_blocked_in_fuse(outer.pid), 2, harness.wchans(outer.pid))
                start = time.monotonic()
                result = stats("--json", self.mnt, check=False)
                elapsed = time.monotonic() - start
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertLess(elapsed, 1.0)
            finally:
                os.kill(inner_mount.pid, signal.SIGCONT)
                for r in readers:
                    self.assertEqual(r.wait(60), 0)

    def test_watch_prints_intervals(self):
        with Mount(self.src, self.mnt):
            proc = subprocess.Popen([harness.ARGS.binary, "stats", "--json", "--watch", "0.2", self.mnt],
                                    stdout=subprocess.PIPE, text=True)
            try:
                lines = [proc.stdout.readline() for _ in range(2)]
            finally:
                proc.terminate()
                proc.wait()
            objects = [json.loads(line) for line in lines]
            self.assertEqual([len(o["mounts"]) for o in objects], [1, 1])
            self.assertNotIn("interval", objects[0]["mounts"][0])
            self.assertIn("read_bytes_per_second", objects[1]["mounts"][0]["interval"])


if __name__ == "__main__":
    harness.main()
