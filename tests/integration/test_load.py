"""Load: 16 processes doing mixed create/write/read/rename/unlink/fsync
through one mount for 60 s (SPLICEFS_LOAD_SECONDS). Each process works in
its own directory from its own seed, so replaying natively the same number
of operations must leave the same tree; no error may happen that the native
replay does not also produce.

Then clients that share: writers of one file, each owning its own blocks,
with readers of it at the same time, and processes renaming their files
through each other's directories; checked against what the operations
allow while they run and against a native replay at the end."""

import json
import os
import random
import struct
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


def in_parallel(calls):
    """Runs each (function name, argument list) of this module in a process
    of its own, all at once; returns what each returned (JSON)."""
    procs = []
    for name, args in calls:
        code = (f"import sys, json; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_load; "
                f"print(json.dumps(test_load.{name}(*json.loads(sys.argv[1]))))")
        procs.append(subprocess.Popen([sys.executable, "-c", code, json.dumps(args)], stdout=subprocess.PIPE,
                                      text=True))
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=SECONDS + 600)
        assert p.returncode == 0, f"a worker failed: {out[-2000:]}"
        results.append(json.loads(out))
    return results


def run_workers(root, ops=None, seconds=None):
    """Runs the workers as processes in parallel, worker w doing ops[w]
    operations or as many as fit in `seconds`; returns their results."""
    return in_parallel([("workload", [os.path.join(root, f"w{w}"), w, ops[w] if ops else None,
                                      None if ops else seconds]) for w in range(WORKERS)])


# --- Shared clients --------------------------------------------------------

SHARED_WRITERS, SHARED_READERS, BLOCKS_PER_WRITER, BLOCK = 4, 2, 32, 4096
RENAMERS, FILES_PER_RENAMER = 4, 8


def block_bytes(owner, seq, block):
    """A block as its owner writes it the seq-th time: 8-byte words of
    (owner, seq, word index in the file). Words of one owner and block
    differ only in seq, so a read racing a write may mix two writes of the
    owner but can never show another owner's word or a wrong index."""
    first = block * BLOCK // 8
    return b"".join(struct.pack("<Q", (owner + 1) << 56 | (seq & 0xFFFFFF) << 32 | (first + i))
                    for i in range(BLOCK // 8))


def owner_of(block):
    return block // BLOCKS_PER_WRITER


def shared_writer(path, owner, seconds):
    """Rewrites the owner's blocks of the shared file in turn, with an
    fsync now and then; returns how many writes it made."""
    fd = os.open(path, os.O_WRONLY)
    try:
        deadline, n = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            block = owner * BLOCKS_PER_WRITER + n % BLOCKS_PER_WRITER
            assert os.pwrite(fd, block_bytes(owner, n + 1, block), block * BLOCK) == BLOCK
            if n % 64 == 63:
                os.fsync(fd)
            n += 1
        return n
    finally:
        os.close(fd)


def shared_reader(path, seconds):
    """Reads the whole shared file again and again while it is written and
    checks every word against what the writes allow; returns the reads made
    and the first word that no write could have produced."""
    size = SHARED_WRITERS * BLOCKS_PER_WRITER * BLOCK
    deadline, reads = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            data = f.read()
        reads += 1
        if len(data) != size:
            return reads, f"read {len(data)} bytes of {size}"
        for i, (word,) in enumerate(struct.iter_unpack("<Q", data)):
            owner = owner_of(i * 8 // BLOCK)
            if word >> 56 != owner + 1 or word & 0xFFFFFFFF != i:
                return reads, f"word {i} is {word:#x}: not written by its owner {owner}"
    return reads, None


def renamer(root, who, ops=None, seconds=None):
    """Moves its own files through every renamer's directory (and renames
    them there) from its own seed; only it touches its files, the
    directories are shared. Returns (op, errno) per operation."""
    rng = random.Random(1000 + who)
    where = {f"own{who}_{i}": f"r{who}" for i in range(FILES_PER_RENAMER)}
    for name, d in where.items():
        with open(os.path.join(root, d, name), "w") as f:
            f.write(name)
    seen = []
    deadline = time.monotonic() + seconds if seconds is not None else None
    while (ops is None or len(seen) < ops) and (deadline is None or time.monotonic() < deadline):
        name = rng.choice(sorted(where))
        target = f"r{rng.randrange(RENAMERS)}"
        new_name = f"own{who}_{rng.randrange(FILES_PER_RENAMER * 2)}"
        try:
            os.rename(os.path.join(root, where[name], name), os.path.join(root, target, new_name))
            seen.append(("rename", None))
            if new_name != name:
                where.pop(new_name, None)  # replaced, if it existed
            del where[name]
            where[new_name] = target
        except OSError as e:
            seen.append(("rename", e.errno))
    return seen


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

    def test_shared_files_and_directories(self):
        seconds = max(5.0, SECONDS / 4)
        blocks = SHARED_WRITERS * BLOCKS_PER_WRITER
        for base in (self.mnt, self.ref):
            with open(os.path.join(base, "shared"), "wb") as f:
                for b in range(blocks):
                    f.write(block_bytes(owner_of(b), 0, b))
            for r in range(RENAMERS):
                os.mkdir(os.path.join(base, f"r{r}"))
        shared = os.path.join(self.mnt, "shared")
        results = in_parallel([("shared_writer", [shared, w, seconds]) for w in range(SHARED_WRITERS)] +
                              [("shared_reader", [shared, seconds]) for _ in range(SHARED_READERS)] +
                              [("renamer", [self.mnt, r, None, seconds]) for r in range(RENAMERS)])
        writes = results[:SHARED_WRITERS]
        reads = results[SHARED_WRITERS:SHARED_WRITERS + SHARED_READERS]
        renames = results[SHARED_WRITERS + SHARED_READERS:]
        print(f"shared file: {sum(writes)} writes by {SHARED_WRITERS} writers, {sum(r[0] for r in reads)} whole-file "
              f"reads by {SHARED_READERS} readers; {sum(len(r) for r in renames)} renames across {RENAMERS} "
              f"directories in {seconds:.0f} s", flush=True)
        for reader in reads:
            self.assertIsNone(reader[1], "a reader saw bytes no write made")
        # The last write of each block is known from each writer's count.
        expected = bytearray(b"".join(block_bytes(owner_of(b), 0, b) for b in range(blocks)))
        for owner, n in enumerate(writes):
            for k in range(max(0, n - BLOCKS_PER_WRITER), n):
                block = owner * BLOCKS_PER_WRITER + k % BLOCKS_PER_WRITER
                expected[block * BLOCK:(block + 1) * BLOCK] = block_bytes(owner, k + 1, block)
        with open(os.path.join(self.src, "shared"), "rb") as f:
            self.assertTrue(f.read() == bytes(expected), "the shared file's blocks are not their last writes")
        # Renames replayed natively, one renamer after the other: each only
        # moves its own files, so the order between them does not matter.
        for r, seen in enumerate(renames):
            self.assertEqual([list(x) for x in renamer(self.ref, r, ops=len(seen))], seen, f"renamer {r}")
        with open(os.path.join(self.ref, "shared"), "wb") as f:
            f.write(expected)
        self.assertEqual(tree_snapshot(self.src), tree_snapshot(self.ref))


if __name__ == "__main__":
    harness.main()
