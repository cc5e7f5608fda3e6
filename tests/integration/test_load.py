"""Load: 16 processes doing mixed create/write/read/rename/unlink/fsync
through one mount for 60 s (SPLICEFS_LOAD_SECONDS). Each process works in
its own directory from its own seed, so replaying natively the same number
of operations must leave the same tree; no error may happen that the native
replay does not also produce."""

import os
import random
import subprocess
import sys
import time
import unittest

import harness
from harness import tree_snapshot

WORKERS = 16
SECONDS = float(os.environ.get("SPLICEFS_LOAD_SECONDS", "60"))


def workload(base, seed, ops=None, seconds=None):
    """Runs `ops` operations, or as many as fit in `seconds`; returns the
    list of (op, errno or None) it saw."""
    rng = random.Random(seed)
    os.makedirs(base, exist_ok=True)
    names = [f"f{i}" for i in range(20)]
    seen = []
    deadline = time.monotonic() + seconds if seconds is not None else None
    while (ops is None or len(seen) < ops) and (deadline is None or time.monotonic() < deadline):
        op = rng.choice(["create", "write", "read", "rename", "unlink", "fsync", "mkdir", "rmdir"])
        a, b = os.path.join(base, rng.choice(names)), os.path.join(base, rng.choice(names))
        # Random bytes only where they are written: generating them is most
        # of this loop's CPU, which the daemon should get instead.
        data = rng.randbytes(rng.choice([10, 4096, 70000, 300000])) if op in ("create", "write") else b""
        offset = rng.randrange(0, 200000)
        try:
            if op == "create":
                with open(a, "wb") as f:
                    f.write(data)
            elif op == "write":
                fd = os.open(a, os.O_WRONLY)
                try:
                    os.pwrite(fd, data, offset)
                finally:
                    os.close(fd)
            elif op == "read":
                with open(a, "rb") as f:
                    f.read()
            elif op == "rename":
                os.rename(a, b)
            elif op == "unlink":
                os.unlink(a)
            elif op == "fsync":
                fd = os.open(a, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            elif op == "mkdir":
                os.mkdir(a)
            elif op == "rmdir":
                os.rmdir(a)
            seen.append((op, None))
        except OSError as e:
            seen.append((op, e.errno))
    return seen


def run_workers(root, ops=None, seconds=None):
    """Runs the workers as processes in parallel, worker w doing ops[w]
    operations or as many as fit in `seconds`; returns their results."""
    import json
    procs = []
    for w in range(WORKERS):
        limit = f"ops={ops[w]}" if ops else f"seconds={seconds}"
        code = (f"import sys, json; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_load; "
                f"print(json.dumps(test_load.workload({os.path.join(root, f'w{w}')!r}, {w}, {limit})))")
        procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=SECONDS + 600)
        assert p.returncode == 0
        results.append(json.loads(out))
    return results


class Load(harness.MountedTestCase):
    def test_sixteen_processes_match_a_native_replay(self):
        fds_before = harness.daemon_fds(self.mount.pid)
        start = time.monotonic()
        mounted = run_workers(self.mnt, seconds=SECONDS)
        elapsed = time.monotonic() - start
        counts = [len(r) for r in mounted]
        native = run_workers(self.ref, ops=counts)
        print(f"{WORKERS} processes, {sum(counts)} operations ({min(counts)}-{max(counts)} each) "
              f"through the mount in {elapsed:.1f} s", flush=True)
        # Compare worker by worker and report the first difference only:
        # unittest's diff of two long lists can take minutes.
        for w, (got, want) in enumerate(zip(mounted, native)):
            if got != want:
                first = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
                self.fail(f"worker {w}, operation {first}: through the mount {got[first]}, natively {want[first]}"
                          f"\ndaemon log:\n{self.mount.log[-3000:]}")
        self.assertEqual(tree_snapshot(self.src), tree_snapshot(self.ref))
        self.assertLessEqual(harness.wait_for_fds_to_settle(self.mount.pid, fds_before + 2), fds_before + 2)


if __name__ == "__main__":
    harness.main()
