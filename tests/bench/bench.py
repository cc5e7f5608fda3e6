#!/usr/bin/env python3
"""splicefs benchmark: everything measured in one run, variants interleaved,
medians of ROUNDS rounds, every figure also as a ratio to native and to
splicefs's own copy mode (--splice off) in the same configuration. The
"passthrough" variant is --splice read --passthrough auto (the kernel
serves open files itself where it may).

    sudo tests/bench/bench.py --binary build/splicefs [--size-gib 2] [--rounds 3]
        [--baseline /tmp/old/build/splicefs]

Not part of the test suite: timings say nothing on a shared machine unless
compared within one run."""

import argparse
import json
import mmap
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

LS_FILES = 100_000
CREATE_FILES = 10_000  # the create+stat+unlink row
TREE_DIRS, TREE_FILES_PER_DIR, DIRS_PER_PARENT = 1000, 20, 20  # find+stat and tar
DIRECT_READS = 20_000  # the 4K direct-read row
MIB = 1 << 20
GIB = 1 << 30
MODES = ("off", "read", "write", "all")
PASSTHROUGH = "passthrough"


def variant_args(variant):
    """splice mode and extra options of a benchmark variant."""
    if variant == PASSTHROUGH:
        return "read", ["--passthrough", "auto"]
    return variant, []


def clock_ticks_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, all threads


def read_range(path, start, length, block, direct):
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    buf = mmap.mmap(-1, block)
    fd = os.open(path, flags)
    done = 0
    try:
        while done < length:
            n = os.preadv(fd, [buf], start + done)
            if n <= 0:
                break
            done += n
    finally:
        os.close(fd)
        buf.close()
    return done


def timed_read(path, size, block, readers):
    """Aggregate throughput of `readers` processes each reading its share."""
    share = size // readers
    start = time.monotonic()
    if readers == 1:
        total = read_range(path, 0, size, block, False)
    else:
        with multiprocessing.Pool(readers) as pool:
            total = sum(pool.starmap(read_range, [(path, i * share, share, block, False) for i in range(readers)]))
    elapsed = time.monotonic() - start
    assert total == size, (total, size)
    return size / elapsed


def timed_write(path, size, block):
    buf = mmap.mmap(-1, block)
    buf.write(os.urandom(block))
    start = time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size // block):
            os.write(fd, buf)
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.monotonic() - start
    os.unlink(path)
    return size / elapsed


def timed_random_reads(path, size, block, count):
    """Reads per second of `count` reads of `block` bytes at random aligned
    offsets (through the page cache)."""
    import random
    rng = random.Random(1)
    offsets = [rng.randrange(size // block) * block for _ in range(count)]
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.monotonic()
        for off in offsets:
            os.pread(fd, block, off)
        elapsed = time.monotonic() - start
    finally:
        os.close(fd)
    return count / elapsed


def timed_direct_random_reads(path, size, block, count):
    """Reads per second of `count` O_DIRECT reads of `block` bytes at random
    aligned offsets: every one a round trip to the server."""
    import random
    rng = random.Random(2)
    offsets = [rng.randrange(size // block) * block for _ in range(count)]
    buf = mmap.mmap(-1, block)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        start = time.monotonic()
        for off in offsets:
            os.preadv(fd, [buf], off)
        elapsed = time.monotonic() - start
    finally:
        os.close(fd)
        buf.close()
    return count / elapsed


def make_tree(root, dirs, files_per_dir, size):
    """`dirs` directories, DIRS_PER_PARENT to a parent, of `files_per_dir` files of `size` bytes."""
    payload = os.urandom(size)
    for d in range(dirs):
        path = os.path.join(root, f"p{d // DIRS_PER_PARENT}", f"d{d}")
        os.makedirs(path)
        for i in range(files_per_dir):
            with open(os.path.join(path, f"f{i}"), "wb") as f:
                f.write(payload)


def timed_find_stat(root):
    """find ROOT | xargs stat: a walk, then a stat of every entry."""
    start = time.monotonic()
    find = subprocess.Popen(["find", root, "-print0"], stdout=subprocess.PIPE)
    subprocess.run(["xargs", "-0", "-n", "4096", "stat", "--format=%i"], stdin=find.stdout,
                   stdout=subprocess.DEVNULL, check=True)
    find.stdout.close()
    if find.wait() != 0:
        raise RuntimeError("find failed")
    return time.monotonic() - start


def timed_tar(root, out):
    """tar of every file under ROOT into OUT (a file: GNU tar does not read
    the files when it writes to /dev/null)."""
    start = time.monotonic()
    with open(out, "wb") as f:
        subprocess.run(["tar", "-C", root, "-cf", "-", "."], stdout=f, check=True)
    elapsed = time.monotonic() - start
    os.unlink(out)
    return elapsed


def timed_ls(directory):
    """ls -l of DIRECTORY: a stat and two extended attributes per entry."""
    start = time.monotonic()
    subprocess.run(["ls", "-l", directory], stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - start


def timed_files(directory, count):
    start = time.monotonic()
    names = [os.path.join(directory, f"f{i}") for i in range(count)]
    for n in names:
        os.close(os.open(n, os.O_WRONLY | os.O_CREAT, 0o644))
    for n in names:
        os.stat(n)
    for n in names:
        os.unlink(n)
    return time.monotonic() - start


class Mounted:
    def __init__(self, binary, source, mountpoint, variant, extra):
        mode, own = variant_args(variant)
        self.cmd = [binary, "--splice", mode, *own, *extra, source, mountpoint]
        self.mountpoint = mountpoint

    def __enter__(self):
        subprocess.run(self.cmd, check=True)
        out = subprocess.run([self.cmd[0], "stats", "--json", self.mountpoint], capture_output=True, text=True,
                             check=True).stdout
        self.pid = json.loads(out)["mounts"][0]["pid"]
        return self

    def counters(self):
        """The daemon's request counts by operation and its CPU seconds so far."""
        out = subprocess.run([self.cmd[0], "stats", "--json", self.mountpoint], capture_output=True, text=True,
                             check=True).stdout
        # (Builds before the per-operation counters have none.)
        return (json.loads(out)["mounts"][0].get("requests", {}),
                clock_ticks_of(self.pid) / os.sysconf("SC_CLK_TCK"))

    def __exit__(self, *exc):
        subprocess.run(["fusermount3", "-u", self.mountpoint], check=False)
        while os.path.exists(f"/proc/{self.pid}"):
            time.sleep(0.05)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", required=True)
    p.add_argument("--baseline", help="another splicefs build (say, the previous main), measured in the same "
                   "rounds: every row then also gives its figure and the ratio to it")
    p.add_argument("--size-gib", type=float, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", default="/dev/shm", help="where the source lives (default: tmpfs)")
    p.add_argument("--quick", action="store_true", help="fewer variants (1 MiB reads, modes off and read)")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the unrecorded first round (on VMs, memory touched for the first time is slow)")
    p.add_argument("--only", choices=("all", "data", "metadata"), default="all",
                   help="data rows (reads, writes), metadata rows (files, find+stat, tar, 4K direct reads), or both")
    p.add_argument("--variant", action="append", default=[], metavar="OPTIONS",
                   help="metadata rows: also measure this build with these options (say --variant='--threads 1'); "
                   "repeatable")
    return p.parse_args()


# Metadata rows: (key, label, unit). Times are seconds (lower is better),
# direct reads are reads per second.
METADATA_ROWS = (
    ("files", "10,000 files create+stat+unlink", "s"),
    ("findstat", "find+stat over the tree", "s"),
    ("findstat_again", "find+stat again, 1.5 s later", "s"),
    ("tar", "tar of the tree's small files", "s"),
    ("ls", "ls -l of one directory of 100,000 files", "s"),
    ("direct4k", "read 4K random, direct I/O", "/s"),
)


class Bench:
    def __init__(self, args, tmp):
        self.args = args
        self.size = int(args.size_gib * GIB) // MIB * MIB
        self.tmp = tmp
        self.src, self.mnt = os.path.join(tmp, "src"), os.path.join(tmp, "mnt")
        self.data = os.path.join(self.src, "data")
        self.modes = (("off", "read") if args.quick else MODES) + (PASSTHROUGH,)
        blocks = (MIB,) if args.quick else (MIB, 128 * 1024)
        self.read_configs = [(cache, block, readers) for cache in ("auto", "never") for block in blocks
                             for readers in (1, 2)]
        # (key prefix, binary): the build under test, and the baseline's
        # variants under "base:" keys.
        self.builds = [("", args.binary)] + ([("base:", args.baseline)] if args.baseline else [])
        self.variants = [("splicefs", [])] + [("splicefs " + v, v.split()) for v in args.variant]
        self.results = {}  # key -> list of (value, cpu s/GiB)
        self.trips = {}  # (metadata row, build+variant) -> list of (requests by operation, daemon CPU s)

    def prepare(self):
        os.mkdir(self.src)
        os.mkdir(self.mnt)
        chunk = os.urandom(MIB)
        with open(self.data, "wb") as f:
            for _ in range(self.size // MIB):
                f.write(chunk)
        if self.args.only != "data":
            make_tree(os.path.join(self.src, "tree"), TREE_DIRS, TREE_FILES_PER_DIR, 2048)
            big = os.path.join(self.src, "big")
            os.mkdir(big)
            for i in range(LS_FILES):
                os.close(os.open(os.path.join(big, f"f{i}"), os.O_WRONLY | os.O_CREAT, 0o644))

    def record(self, key, value, cpu=None):
        self.results.setdefault(key, []).append((value, cpu))

    def med(self, key):
        vals = self.results[key]
        cpus = [c for _, c in vals if c is not None]
        return statistics.median(v for v, _ in vals), (statistics.median(cpus) if cpus else None)

    def mounted(self, binary, variant, extra):
        return Mounted(binary, self.src, self.mnt, variant, extra)

    def data_round(self, order):
        src, mnt, size, data = self.src, self.mnt, self.size, self.data
        hz = os.sysconf("SC_CLK_TCK")
        for cache, block, readers in self.read_configs:
            self.record(("read", "native", cache, block, readers), timed_read(data, size, block, readers))
            for tag, binary in self.builds:
                for mode in order:
                    extra = ["--cache", cache, "--max-reply", "1M"]
                    with self.mounted(binary, mode, extra) as m:
                        before = clock_ticks_of(m.pid)
                        rate = timed_read(os.path.join(mnt, "data"), size, block, readers)
                        cpu = (clock_ticks_of(m.pid) - before) / hz / (size / GIB)
                    self.record(("read", tag + mode, cache, block, readers), rate, cpu)
        wsize = min(size, GIB)
        self.record(("write", "native", "auto", MIB, 1), timed_write(os.path.join(src, "w"), wsize, MIB))
        for tag, binary in self.builds:
            for mode in order:
                with self.mounted(binary, mode, ["--max-reply", "1M"]) as m:
                    before = clock_ticks_of(m.pid)
                    rate = timed_write(os.path.join(mnt, "w"), wsize, MIB)
                    cpu = (clock_ticks_of(m.pid) - before) / hz / (wsize / GIB)
                self.record(("write", tag + mode, "auto", MIB, 1), rate, cpu)
        # 4 KiB random reads through the page cache, file cached natively.
        rsize = min(size, GIB)
        timed_random_reads(data, rsize, 4096, 1000)
        self.record(("random", "native", "auto", 4096, 1), timed_random_reads(data, rsize, 4096, 20000))
        for tag, binary in self.builds:
            for variant in ("read", PASSTHROUGH):
                with self.mounted(binary, variant, []):
                    self.record(("random", tag + variant, "auto", 4096, 1),
                                timed_random_reads(os.path.join(mnt, "data"), rsize, 4096, 20000))
        # A second read of a file already read once through the mount.
        timed_read(data, size, MIB, 1)
        self.record(("reread", "native", "auto", MIB, 1), timed_read(data, size, MIB, 1))
        for tag, binary in self.builds:
            for variant, cache in (("read", "auto"), ("read", "always"), (PASSTHROUGH, "auto")):
                with self.mounted(binary, variant, ["--cache", cache]):
                    timed_read(os.path.join(mnt, "data"), size, MIB, 1)
                    self.record(("reread", tag + variant, cache, MIB, 1),
                                timed_read(os.path.join(mnt, "data"), size, MIB, 1))

    def metadata_one(self, root, row):
        """One measurement of a metadata row under ROOT (the source or the mount)."""
        if row == "files":
            return timed_files(os.path.join(root, "files"), CREATE_FILES)
        if row == "findstat":
            return timed_find_stat(os.path.join(root, "tree"))
        if row == "findstat_again":
            # Past the default 1 s timeout: what --timeout saves.
            timed_find_stat(os.path.join(root, "tree"))
            time.sleep(1.5)
            return timed_find_stat(os.path.join(root, "tree"))
        if row == "tar":
            return timed_tar(os.path.join(root, "tree"), os.path.join(self.tmp, "tree.tar"))
        if row == "ls":
            return timed_ls(os.path.join(root, "big"))
        return timed_direct_random_reads(os.path.join(root, "data"), min(self.size, GIB), 4096, DIRECT_READS)

    def metadata_round(self):
        """Every metadata row natively, then on a fresh mount per build,
        variant and row, in a shuffled order."""
        import random
        # The baseline runs with its defaults only: it may lack the options.
        jobs = [(row, tag, binary, label, extra) for row, _, _ in METADATA_ROWS for tag, binary in self.builds
                for label, extra in (self.variants if not tag else self.variants[:1])]
        random.shuffle(jobs)
        os.mkdir(os.path.join(self.src, "files"))  # timed_files leaves it empty
        try:
            for row, _, _ in METADATA_ROWS:
                self.record(("meta", row, "native"), self.metadata_one(self.src, row))
            for row, tag, binary, label, extra in jobs:
                with self.mounted(binary, "read", extra) as m:
                    requests_before, cpu_before = m.counters()
                    self.record(("meta", row, tag + label), self.metadata_one(self.mnt, row))
                    requests_after, cpu_after = m.counters()
                trips = {op: n - requests_before.get(op, 0) for op, n in requests_after.items()}
                self.trips.setdefault((row, tag + label), []).append((trips, cpu_after - cpu_before))
        finally:
            shutil.rmtree(os.path.join(self.src, "files"), ignore_errors=True)

    def vs_base(self, key, rate, unit=1e9):
        """The baseline's figure for this row and this build's ratio to it."""
        if not self.args.baseline:
            return ""
        base, _ = self.med((key[0], "base:" + key[1], *key[2:]))
        return f"   baseline {base / unit:7.2f} ({rate / base:.2f}x)"

    def print_data(self):
        print(f"{'what':<44} {'GB/s':>7} {'x native':>9} {'x copy':>7} {'CPU s/GiB':>10}")
        for kind in ("read", "write"):
            configs = self.read_configs if kind == "read" else [("auto", MIB, 1)]
            for cache, block, readers in configs:
                native, _ = self.med((kind, "native", cache, block, readers))
                label = (f"{kind} {'page cache' if cache == 'auto' else 'direct I/O'} {block // 1024}K x{readers}"
                         if kind == "read" else "write 1M sequential + fsync")
                print(f"{label + ' native':<44} {native / 1e9:7.2f} {1:9.2f}")
                copy_rate, copy_cpu = self.med((kind, "off", cache, block, readers))
                for mode in self.modes:
                    rate, cpu = self.med((kind, mode, cache, block, readers))
                    cpu_text = f"{cpu:10.3f}" if cpu is not None else ""
                    ratio_cpu = (f" ({cpu / copy_cpu:.2f}x copy CPU)"
                                 if copy_cpu and mode not in ("off", PASSTHROUGH) else "")
                    name = " passthrough" if mode == PASSTHROUGH else " splice=" + mode
                    print(f"{label + name:<44} {rate / 1e9:7.2f} {rate / native:9.2f} "
                          f"{rate / copy_rate:7.2f} {cpu_text}{ratio_cpu}"
                          f"{self.vs_base((kind, mode, cache, block, readers), rate)}")
        native_r, _ = self.med(("random", "native", "auto", 4096, 1))
        print(f"{'read 4K random, page cache native':<44} {native_r / 1e3:7.1f}k/s {1:6.2f}")
        for variant in ("read", PASSTHROUGH):
            rate, _ = self.med(("random", variant, "auto", 4096, 1))
            label = "splice=read" if variant == "read" else variant
            print(f"{'read 4K random, page cache ' + label:<44} {rate / 1e3:7.1f}k/s {rate / native_r:6.2f}"
                  f"{self.vs_base(('random', variant, 'auto', 4096, 1), rate, 1e3)}")
        native_rr, _ = self.med(("reread", "native", "auto", MIB, 1))
        print(f"{'re-read 1M x1 native':<44} {native_rr / 1e9:7.2f} {1:9.2f}")
        for variant, cache in (("read", "auto"), ("read", "always"), (PASSTHROUGH, "auto")):
            rate, _ = self.med(("reread", variant, cache, MIB, 1))
            label = ("splice=read" if variant == "read" else variant) + f" cache={cache}"
            print(f"{'re-read 1M x1 ' + label:<44} {rate / 1e9:7.2f} {rate / native_rr:9.2f}"
                  f"{self.vs_base(('reread', variant, cache, MIB, 1), rate)}")

    def print_metadata(self):
        print(f"\nmetadata (tree: {TREE_DIRS:,} directories of {TREE_FILES_PER_DIR} files of 2 KiB; "
              f"ls: {LS_FILES:,} empty files; "
              "a fresh mount for every figure)")
        print(f"{'what':<60} {'figure':>10} {'x native':>9}")
        for row, label, unit in METADATA_ROWS:
            native, _ = self.med(("meta", row, "native"))
            print(f"{label + ' native':<60} {self.figure(native, unit)} {1:9.2f}")
            for tag, _ in self.builds:
                for name, _ in (self.variants if not tag else self.variants[:1]):
                    value, _ = self.med(("meta", row, tag + name))
                    # "x native": how many times native's time, or the
                    # fraction of native's rate.
                    ratio = value / native
                    who = ("baseline " if tag else "") + name
                    print(f"{label + ' ' + who:<60} {self.figure(value, unit)} {ratio:9.2f}")

    def print_round_trips(self):
        """Where a metadata row's time goes: the requests the daemon answered
        per item (file, entry, read) and what each cost, against the cost of
        the cheapest round trip (a 4 KiB direct read) measured in the same run."""
        files = TREE_DIRS * TREE_FILES_PER_DIR
        # findstat: the root, the parents, the directories and their files.
        walked = 1 + -(-TREE_DIRS // DIRS_PER_PARENT) + TREE_DIRS + files
        items = {"files": CREATE_FILES, "findstat": walked, "tar": files, "ls": LS_FILES, "direct4k": DIRECT_READS}
        direct_rate, _ = self.med(("meta", "direct4k", "splicefs"))
        trip_s = 1 / direct_rate
        print(f"\nwhere the time goes (this build, default options; requests the daemon answered, medians): one round "
              f"trip costs {trip_s * 1e6:.1f} us here (a 4K direct read)")
        print(f"{'what':<36} {'trips/item':>10} {'us/trip':>8} {'daemon CPU':>10} {'trips alone':>12}   operations per item")
        for row, label, unit in METADATA_ROWS:
            runs = self.trips.get((row, "splicefs"))
            if not runs or row == "findstat_again":  # its counters span both walks
                continue
            value, _ = self.med(("meta", row, "splicefs"))
            native, _ = self.med(("meta", row, "native"))
            elapsed = value if unit == "s" else DIRECT_READS / value
            native_s = native if unit == "s" else DIRECT_READS / native
            total = statistics.median(sum(t.values()) for t, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            ops = {op: statistics.median(t.get(op, 0) for t, _ in runs) for op in runs[0][0]}
            top = sorted(((n, op) for op, n in ops.items() if n), reverse=True)[:5]
            per_item = ", ".join(f"{op} {n / items[row]:.2f}" for n, op in top)
            # If each of those round trips cost what the cheapest one does,
            # and the caller spent no more time than natively:
            floor = (total * trip_s + native_s) / native_s
            if unit != "s":  # a rate: as the table above gives it
                floor = 1 / floor
            print(f"{label[:36]:<36} {total / items[row]:10.2f} {elapsed / total * 1e6:8.1f} "
                  f"{cpu / total * 1e6:7.1f} us {floor:10.2f}x   {per_item}")
        print("(us/trip: the row's time over its round trips; daemon CPU: the daemon's CPU time per round trip; "
              "trips alone: the ratio to native if every round trip cost what the 4K direct read does and nothing "
              "else were slower than native; a time ratio, but for the 4K reads a rate ratio as above)")

    @staticmethod
    def figure(value, unit):
        return f"{value:8.3f} s" if unit == "s" else f"{value / 1e3:7.1f}k/s"


def main():
    args = parse_args()
    tmp = tempfile.mkdtemp(prefix="splicefs-bench-", dir=args.dir)
    bench = Bench(args, tmp)
    try:
        import random
        bench.prepare()
        first_round = 0 if args.no_warmup else -1
        for rnd in range(first_round, args.rounds):
            print(f"round {rnd + 1}/{args.rounds}" if rnd >= 0 else "warm-up round", file=sys.stderr, flush=True)
            if rnd == 0:
                bench.results.clear()
            # A different order of variants in every round, so that drift on a
            # shared machine does not favour one of them.
            order = list(bench.modes)
            random.shuffle(order)
            if args.only != "metadata":
                bench.data_round(order)
            if args.only != "data":
                bench.metadata_round()
    finally:
        if os.path.ismount(bench.mnt):
            subprocess.run(["fusermount3", "-u", bench.mnt])
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nsplicefs benchmark: {bench.size // MIB} MiB file in {args.dir}, medians of {args.rounds} interleaved "
          f"rounds, max reply 1M requested")
    if args.baseline:
        print(f"this build: {args.binary}; baseline: {args.baseline} (same rounds, interleaved)")
    if args.only != "metadata":
        bench.print_data()
    if args.only != "data":
        bench.print_metadata()
        bench.print_round_trips()


if __name__ == "__main__":
    main()
