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

    def __exit__(self, *exc):
        subprocess.run(["fusermount3", "-u", self.mountpoint], check=False)
        while os.path.exists(f"/proc/{self.pid}"):
            time.sleep(0.05)


def main():
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
    args = p.parse_args()
    size = int(args.size_gib * GIB) // MIB * MIB
    hz = os.sysconf("SC_CLK_TCK")

    tmp = tempfile.mkdtemp(prefix="splicefs-bench-", dir=args.dir)
    src, mnt = os.path.join(tmp, "src"), os.path.join(tmp, "mnt")
    os.mkdir(src)
    os.mkdir(mnt)
    data = os.path.join(src, "data")
    chunk = os.urandom(MIB)
    with open(data, "wb") as f:
        for _ in range(size // MIB):
            f.write(chunk)

    modes = (("off", "read") if args.quick else MODES) + (PASSTHROUGH,)
    blocks = (MIB,) if args.quick else (MIB, 128 * 1024)
    read_configs = [(cache, block, readers) for cache in ("auto", "never") for block in blocks for readers in (1, 2)]
    results = {}  # key -> list of (throughput, cpu s/GiB)

    def record(key, value, cpu=None):
        results.setdefault(key, []).append((value, cpu))

    # (key prefix, binary): the build under test, and the baseline's
    # variants under "base:" keys.
    builds = [("", args.binary)] + ([("base:", args.baseline)] if args.baseline else [])

    try:
        import random
        first_round = 0 if args.no_warmup else -1
        for rnd in range(first_round, args.rounds):
            print(f"round {rnd + 1}/{args.rounds}" if rnd >= 0 else "warm-up round", file=sys.stderr, flush=True)
            if rnd == 0:
                results.clear()
            # A different order of variants in every round, so that drift on a
            # shared machine does not favour one of them.
            order = list(modes)
            random.shuffle(order)
            for cache, block, readers in read_configs:
                record(("read", "native", cache, block, readers), timed_read(data, size, block, readers))
                for tag, binary in builds:
                    for mode in order:
                        extra = ["--cache", cache, "--max-reply", "1M"]
                        with Mounted(binary, src, mnt, mode, extra) as m:
                            before = clock_ticks_of(m.pid)
                            rate = timed_read(os.path.join(mnt, "data"), size, block, readers)
                            cpu = (clock_ticks_of(m.pid) - before) / hz / (size / GIB)
                        record(("read", tag + mode, cache, block, readers), rate, cpu)
            wsize = min(size, GIB)
            record(("write", "native", "auto", MIB, 1), timed_write(os.path.join(src, "w"), wsize, MIB))
            for tag, binary in builds:
                for mode in order:
                    with Mounted(binary, src, mnt, mode, ["--max-reply", "1M"]) as m:
                        before = clock_ticks_of(m.pid)
                        rate = timed_write(os.path.join(mnt, "w"), wsize, MIB)
                        cpu = (clock_ticks_of(m.pid) - before) / hz / (wsize / GIB)
                    record(("write", tag + mode, "auto", MIB, 1), rate, cpu)
            # 4 KiB random reads through the page cache, file cached natively.
            rsize = min(size, GIB)
            timed_random_reads(data, rsize, 4096, 1000)
            record(("random", "native", "auto", 4096, 1), timed_random_reads(data, rsize, 4096, 20000))
            for tag, binary in builds:
                for variant in ("read", PASSTHROUGH):
                    with Mounted(binary, src, mnt, variant, []):
                        record(("random", tag + variant, "auto", 4096, 1),
                               timed_random_reads(os.path.join(mnt, "data"), rsize, 4096, 20000))
            # A second read of a file already read once through the mount.
            timed_read(data, size, MIB, 1)
            record(("reread", "native", "auto", MIB, 1), timed_read(data, size, MIB, 1))
            for tag, binary in builds:
                for variant, cache in (("read", "auto"), ("read", "always"), (PASSTHROUGH, "auto")):
                    with Mounted(binary, src, mnt, variant, ["--cache", cache]):
                        timed_read(os.path.join(mnt, "data"), size, MIB, 1)
                        record(("reread", tag + variant, cache, MIB, 1),
                               timed_read(os.path.join(mnt, "data"), size, MIB, 1))
            files_dir = os.path.join(src, "files")
            os.mkdir(files_dir)
            record(("files", "native", "auto", 0, 1), timed_files(files_dir, 10000))
            for tag, binary in builds:
                with Mounted(binary, src, mnt, "read", []):
                    record(("files", tag + "read", "auto", 0, 1), timed_files(os.path.join(mnt, "files"), 10000))
            os.rmdir(files_dir)
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", mnt])
        shutil.rmtree(tmp, ignore_errors=True)

    def med(key):
        vals = results[key]
        cpus = [c for _, c in vals if c is not None]
        return statistics.median(v for v, _ in vals), (statistics.median(cpus) if cpus else None)

    print(f"\nsplicefs benchmark: {size // MIB} MiB file in {args.dir}, medians of {args.rounds} interleaved rounds,"
          f" max reply 1M requested")
    def vs_base(key, rate, unit=1e9):
        """The baseline's figure for this row and this build's ratio to it."""
        if not args.baseline:
            return ""
        base, _ = med((key[0], "base:" + key[1], *key[2:]))
        return f"   baseline {base / unit:7.2f} ({rate / base:.2f}x)"

    if args.baseline:
        print(f"this build: {args.binary}; baseline: {args.baseline} (same rounds, interleaved)")
    print(f"{'what':<44} {'GB/s':>7} {'x native':>9} {'x copy':>7} {'CPU s/GiB':>10}")
    for kind in ("read", "write"):
        configs = read_configs if kind == "read" else [("auto", MIB, 1)]
        for cache, block, readers in configs:
            native, _ = med((kind, "native", cache, block, readers))
            label = (f"{kind} {'page cache' if cache == 'auto' else 'direct I/O'} {block // 1024}K x{readers}"
                     if kind == "read" else f"write 1M sequential + fsync")
            print(f"{label + ' native':<44} {native / 1e9:7.2f} {1:9.2f}")
            copy_rate, copy_cpu = med((kind, "off", cache, block, readers))
            for mode in modes:
                rate, cpu = med((kind, mode, cache, block, readers))
                cpu_text = f"{cpu:10.3f}" if cpu is not None else ""
                ratio_cpu = (f" ({cpu / copy_cpu:.2f}x copy CPU)" if copy_cpu and mode not in ("off", PASSTHROUGH)
                             else "")
                name = " passthrough" if mode == PASSTHROUGH else " splice=" + mode
                print(f"{label + name:<44} {rate / 1e9:7.2f} {rate / native:9.2f} "
                      f"{rate / copy_rate:7.2f} {cpu_text}{ratio_cpu}"
                      f"{vs_base((kind, mode, cache, block, readers), rate)}")
    native_r, _ = med(("random", "native", "auto", 4096, 1))
    print(f"{'read 4K random, page cache native':<44} {native_r / 1e3:7.1f}k/s {1:6.2f}")
    for variant in ("read", PASSTHROUGH):
        rate, _ = med(("random", variant, "auto", 4096, 1))
        label = "splice=read" if variant == "read" else variant
        print(f"{'read 4K random, page cache ' + label:<44} {rate / 1e3:7.1f}k/s {rate / native_r:6.2f}"
              f"{vs_base(('random', variant, 'auto', 4096, 1), rate, 1e3)}")
    native_rr, _ = med(("reread", "native", "auto", MIB, 1))
    print(f"{'re-read 1M x1 native':<44} {native_rr / 1e9:7.2f} {1:9.2f}")
    for variant, cache in (("read", "auto"), ("read", "always"), (PASSTHROUGH, "auto")):
        rate, _ = med(("reread", variant, cache, MIB, 1))
        label = ("splice=read" if variant == "read" else variant) + f" cache={cache}"
        print(f"{'re-read 1M x1 ' + label:<44} {rate / 1e9:7.2f} {rate / native_rr:9.2f}"
              f"{vs_base(('reread', variant, cache, MIB, 1), rate)}")
    native_t, _ = med(("files", "native", "auto", 0, 1))
    fuse_t, _ = med(("files", "read", "auto", 0, 1))
    print(f"{'10,000 files create+stat+unlink native':<44} {native_t:7.2f} s")
    base_files = ""
    if args.baseline:
        base_t, _ = med(("files", "base:read", "auto", 0, 1))
        base_files = f"   baseline {base_t:7.2f} s ({base_t / fuse_t:.2f}x as fast)"
    print(f"{'10,000 files create+stat+unlink splicefs':<44} {fuse_t:7.2f} s  ({fuse_t / native_t:.1f}x native)"
          f"{base_files}")


if __name__ == "__main__":
    main()
