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
        n_mib, m_mib = 48, 24
        with open(os.path.join(self.src, "data"), "wb") as f:
            f.write(os.urandom(n_mib * MIB))
        with Mount(self.src, self.mnt, splice="all"):
            fresh = json_stats(self.mnt)[self.mnt]
            for direction in ("read", "write"):
                for key, value in fresh[direction].items():
                    if isinstance(value, int):
                        self.assertEqual(value, 0, f"{direction}.{key}")
            with open(os.path.join(self.mnt, "data"), "rb") as f:
                while f.read(MIB):
                    pass
            after_read = json_stats(self.mnt)[self.mnt]
            read = after_read["read"]
            self.assertEqual(read["bytes"], n_mib * MIB)
            self.assertEqual(read["spliced_bytes"] + read["copied_bytes"], read["bytes"])
            self.assertEqual(read["spliced_replies"] + read["copied_replies"], read["replies"])
            self.assertEqual(sum(read["copy_reasons"].values()), read["copied_replies"])
            self.assertEqual(sum(read["size_histogram"].values()), read["replies"])
            block = os.urandom(MIB)
            with open(os.path.join(self.mnt, "out"), "wb") as f:
                for _ in range(m_mib):
                    f.write(block)
            write = json_stats(self.mnt)[self.mnt]["write"]
            self.assertEqual(write["bytes"], m_mib * MIB)
            self.assertEqual(write["spliced_bytes"] + write["copied_bytes"], write["bytes"])
            self.assertEqual(write["spliced_requests"] + write["copied_requests"], write["requests"])

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
                while time.monotonic() < deadline and self.blocked_workers(outer.pid) < 2:
                    time.sleep(0.05)
                self.assertGreaterEqual(self.blocked_workers(outer.pid), 2, self.wchans(outer.pid))
                start = time.monotonic()
                result = stats("--json", self.mnt, check=False)
                elapsed = time.monotonic() - start
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertLess(elapsed, 1.0)
            finally:
                os.kill(inner_mount.pid, signal.SIGCONT)
                for r in readers:
                    self.assertEqual(r.wait(60), 0)

    @staticmethod
    def wchans(pid):
        out = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                out.append(f.read())
        return out

    @staticmethod
    def blocked_workers(pid):
        """Threads of pid sleeping on the stopped source: in its FUSE request or
        on a page that its read will fill."""
        count = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                    wchan = f.read()
            except OSError:
                continue
            if wchan in ("request_wait_answer", "fuse_wait_on_page_writeback") or wchan.startswith("folio_wait"):
                count += 1
        return count

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
