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


def watch_lines(args, count, timeout=30):
    """The first `count` lines `splicefs stats --watch` prints; a watch that
    stops printing is killed after `timeout` seconds (the test then fails on
    the empty lines, it does not hang)."""
    proc = subprocess.Popen([harness.ARGS.binary, "stats", *args], stdout=subprocess.PIPE, text=True)
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        return [proc.stdout.readline() for _ in range(count)]
    finally:
        killer.cancel()
        proc.terminate()
        proc.wait()
        proc.stdout.close()


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
            lines = watch_lines(["--json", "--watch", "0.2", self.mnt], 2)
            objects = [json.loads(line) for line in lines]
            self.assertEqual([len(o["mounts"]) for o in objects], [1, 1])
            self.assertNotIn("interval", objects[0]["mounts"][0])
            self.assertIn("read_bytes_per_second", objects[1]["mounts"][0]["interval"])

    def test_human_output_says_the_effective_max_reply_calmly_and_counts_threads_right(self):
        with Mount(self.src, self.mnt, "--threads", "1") as m:
            human = stats(self.mnt).stdout
            mount = json_stats(self.mnt)[self.mnt]
            m.unmount()
        self.assertIn(", 1 thread\n", human)
        self.assertNotIn("clamped", human)
        line = next(x for x in human.splitlines() if x.strip().startswith("max reply"))
        if mount["max_reply_clamp_reason"]:  # the default here: the largest that splices
            self.assertIn("the largest that splices here: " + mount["max_reply_clamp_reason"], line)

    def test_an_ending_daemon_leaves_the_next_mounts_socket_alone(self):
        # Device numbers are reused: the next mount can get this one's (and
        # its socket path) while this daemon is still ending. Stand in for
        # that daemon's socket, then end this one.
        import socket
        with Mount(self.src, self.mnt) as m:
            st = os.stat(self.mnt)
            path = f"/run/splicefs/{os.major(st.st_dev)}:{os.minor(st.st_dev)}.sock"
            if os.geteuid() != 0:
                self.skipTest("the socket directory of root's daemons")
            self.assertTrue(os.path.exists(path))
            os.unlink(path)
            successor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            successor.bind(path)
            try:
                self.assertEqual(m.unmount(), 0)
                self.assertTrue(os.path.exists(path), "the ending daemon removed another daemon's socket")
            finally:
                successor.close()
                if os.path.exists(path):
                    os.unlink(path)

    def test_open_files_and_directories_are_what_is_open_now(self):
        os.mkdir(os.path.join(self.src, "d"))
        for name in ("a", "b", "c"):
            with open(os.path.join(self.src, name), "wb") as f:
                f.write(b"x")
        with Mount(self.src, self.mnt) as m:
            files = [open(os.path.join(self.mnt, name), "rb") for name in ("a", "b", "c")]
            again = open(os.path.join(self.mnt, "a"), "rb")  # a second open file of one inode
            d = os.open(os.path.join(self.mnt, "d"), os.O_RDONLY | os.O_DIRECTORY)
            try:
                now = json_stats(self.mnt)[self.mnt]
                self.assertEqual((now["open_files"], now["open_dirs"]), (4, 1))
                self.assertIn("open now: 4 files, 1 directories", stats(self.mnt).stdout)
            finally:
                for f in files + [again]:
                    f.close()
                os.close(d)
            # The kernel releases after close() has returned.
            def open_now():
                now = json_stats(self.mnt)[self.mnt]
                return now["open_files"], now["open_dirs"]
            harness.wait_until(lambda: open_now() == (0, 0), 10, "the releases", lambda: str(open_now()))
            m.unmount()

    def test_watch_reads_like_iostat_while_a_copy_runs(self):
        # One header, then one line per mount per interval with that
        # interval's rates; captured for three intervals while a copy runs.
        with open(os.path.join(self.src, "data"), "wb") as f:
            f.write(os.urandom(64 * MIB))
        with Mount(self.src, self.mnt, "--cache", "never"):
            stop = threading.Event()

            def copy():
                while not stop.is_set():
                    shutil.copyfile(os.path.join(self.mnt, "data"), os.path.join(self.mnt, "copy"))
            copier = threading.Thread(target=copy)
            copier.start()
            try:
                lines = watch_lines(["--watch", "0.5", self.mnt], 4)
            finally:
                stop.set()
                copier.join()
        print("captured --watch output:\n" + "".join(lines), flush=True)
        header, rows = lines[0].split(), [line.split() for line in lines[1:]]
        self.assertEqual(header[:8], ["time", "rMB/s", "wMB/s", "reads/s", "writes/s", "splice%", "opens/s", "pt%"])
        self.assertEqual(header[-1], "mountpoint")
        for row in rows:
            self.assertRegex(row[0], r"^\d\d:\d\d:\d\d$")
            self.assertEqual(row[-1], self.mnt)
            self.assertGreater(float(row[1]) + float(row[2]), 0, row)  # the copy moved bytes in every interval

    def test_prometheus_buckets_are_fixed_gauges_and_info_are_there_and_output_is_atomic(self):
        from prometheus_client.parser import text_string_to_metric_families
        other = os.path.join(self.tmp, "mnt2")
        os.mkdir(other)
        with open(os.path.join(self.src, "f"), "wb") as f:
            f.write(os.urandom(3 * MIB))
        with Mount(self.src, self.mnt, "--cache", "never"), Mount(self.src, other):
            with open(os.path.join(self.mnt, "f"), "rb") as f:
                f.read()  # replies in one mount only
            out = os.path.join(self.tmp, "splicefs.prom")
            stats("--format", "prometheus", "--output", out)
            self.assertEqual(sorted(os.listdir(self.tmp)), sorted(["src", "mnt", "mnt2", "splicefs.prom"]))
            with open(out) as f:
                families = {f.name: f for f in text_string_to_metric_families(f.read())}
        buckets = {}
        for sample in families["splicefs_read_reply_size_bytes"].samples:
            # Mounts of tests running beside this one are in the output too.
            if sample.name.endswith("_bucket") and sample.labels["mountpoint"].startswith(self.tmp):
                buckets.setdefault(sample.labels["mountpoint"], []).append(sample.labels["le"])
        self.assertEqual(set(buckets), {self.mnt, other})
        self.assertEqual(buckets[self.mnt], buckets[other])
        self.assertEqual(buckets[self.mnt][-1], "+Inf")
        self.assertEqual(len(buckets[self.mnt]), 33)
        ours = {self.mnt, other}
        for gauge in ("splicefs_inodes", "splicefs_open_files", "splicefs_open_dirs", "splicefs_inode_fds",
                      "splicefs_inode_fd_budget", "splicefs_fd_limit"):
            self.assertEqual(families[gauge].type, "gauge")
            self.assertLessEqual(ours, {s.labels["mountpoint"] for s in families[gauge].samples}, gauge)
        info = {s.labels["mountpoint"]: s.labels for s in families["splicefs_info"].samples}
        self.assertEqual(info[self.mnt]["cache"], "never")
        self.assertEqual(info[other]["cache"], "auto")
        self.assertEqual(set(info[self.mnt]),
                         {"mountpoint", "version", "splice", "cache", "passthrough", "transport", "max_reply"})
        self.assertEqual(info[self.mnt]["transport"], "/dev/fuse")


if __name__ == "__main__":
    harness.main()
