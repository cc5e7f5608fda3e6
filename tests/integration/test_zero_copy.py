"""The zero-copy data path: exact accounting checked against the system
calls the daemon really made, reply sizes, and sources that cannot splice."""

import contextlib
import mmap
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import harness
from harness import Mount

GIB = 1 << 30
MIB = 1 << 20


def make_file(path, size):
    chunk = os.urandom(MIB)
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(chunk)


def read_through(path, block=MIB):
    """Sequential reads of `block` bytes into a page-aligned buffer, as dd
    does (with direct I/O an unaligned buffer would split every request)."""
    total = 0
    buf = mmap.mmap(-1, block)
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            n = os.readv(fd, [buf])
            if n == 0:
                return total
            total += n
    finally:
        os.close(fd)
        buf.close()


@contextlib.contextmanager
def pipe_max_size(value):
    path = "/proc/sys/fs/pipe-max-size"
    with open(path) as f:
        old = f.read().strip()
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except OSError as e:
        raise unittest.SkipTest(f"cannot raise fs.pipe-max-size: {e}")
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(old)


class StracedMount(Mount):
    """A mount whose daemon runs under strace, recording the calls that move
    file data: splice, writev and pwrite64."""

    def __init__(self, *args, trace_file, **kwargs):
        # LeakSanitizer cannot run under ptrace; the other sanitizers still do.
        env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
        super().__init__(*args, env=env, **kwargs)
        self.trace_file = trace_file

    def command(self):
        return ["strace", "-f", "-qq", "-s", "1", "-e", "abbrev=none", "-e", "trace=splice,writev,pwrite64",
                "-o", self.trace_file, *super().command()]

    def daemon_pid(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        return int(out[0])


def fuse_fd_of(pid):
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/fuse":
                return int(fd)
    raise AssertionError("no /dev/fuse fd in the daemon")


def traced_calls(trace):
    """Every call in an strace -f log as (name, argument text, result), with
    the calls strace split into "<unfinished ...>" and "<... resumed>"
    lines (threads interleaving) put back together."""
    pending = {}
    call_re = re.compile(r"^(\d+) +(\w+)\((.*)\) += (-?\d+)")
    with open(trace) as f:
        for line in f:
            line = line.rstrip("\n")
            pid = line.split(" ", 1)[0]
            if line.endswith("<unfinished ...>"):
                pending[pid] = line[: -len("<unfinished ...>")].rstrip()
                continue
            if "resumed>" in line:
                line = pending.pop(pid, "") + line.split("resumed>", 1)[1]
            m = call_re.match(line)
            if m:
                yield m.group(2), m.group(3), int(m.group(4))


def data_moves(trace, fuse_fd):
    """What the daemon really did with file data, from its system calls:
    READ replies spliced into /dev/fuse and copied into it with writev (count
    and data bytes: a reply is a 16-byte header plus data), WRITE data
    spliced from a pipe into a file and written into one with pwrite64."""
    moves = {"read_spliced": [0, 0], "read_copied": [0, 0], "write_spliced": [0, 0], "write_copied": [0, 0]}
    for name, args, result in traced_calls(trace):
        fields = [a.strip() for a in args.split(",")]
        if name == "splice" and result > 0:
            if int(fields[2]) == fuse_fd:
                key, data = "read_spliced", result - 16
            elif int(fields[0]) != fuse_fd and fields[1] == "NULL" and fields[3] != "NULL":
                key, data = "write_spliced", result  # pipe -> file at an offset
            else:
                continue  # a request into the pipe, or file data into the pipe
            # A reply is one splice into /dev/fuse; a WRITE's data may take
            # more than one splice, so only its bytes are summed.
            moves[key][0] += 1
            moves[key][1] += data
        elif name == "writev" and int(fields[0]) == fuse_fd and result > 0:
            lengths = [int(x) for x in re.findall(r"iov_len=(\d+)", args)]
            # Replies of other operations (WRITE's included) are far below 8 KiB here.
            if len(lengths) == 2 and lengths[1] >= 8192:
                moves["read_copied"][0] += 1
                moves["read_copied"][1] += lengths[1]
        elif name == "pwrite64" and result >= 0:
            moves["write_copied"][0] += 1
            moves["write_copied"][1] += result
    return moves


class ZeroCopy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if shutil.which("strace") is None:
            raise unittest.SkipTest("strace is not installed")
        cls.tmp = tempfile.mkdtemp(prefix="splicefs-zc-")
        cls.src = os.path.join(cls.tmp, "src")
        cls.mnt = os.path.join(cls.tmp, "mnt")
        os.mkdir(cls.src)
        os.mkdir(cls.mnt)
        cls.big = os.path.join(cls.src, "big")
        make_file(cls.big, GIB)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def exactness(self, mode):
        trace = os.path.join(self.tmp, f"trace-{mode}")
        m = StracedMount(self.src, self.mnt, splice=mode, trace_file=trace)
        with m:
            fuse_fd = fuse_fd_of(m.daemon_pid())
            self.assertEqual(read_through(os.path.join(self.mnt, "big")), GIB)
            stats = m.stats()
            self.assertEqual(m.unmount(), 0, m.log)
        read = stats["read"]
        moves = data_moves(trace, fuse_fd)
        (spliced_calls, spliced_bytes), (copied_calls, copied_bytes) = moves["read_spliced"], moves["read_copied"]
        print(f"mode {mode}: spliced replies {read['spliced_replies']} ({read['spliced_bytes']} bytes) = "
              f"splice() calls {spliced_calls} ({spliced_bytes} bytes); copied replies {read['copied_replies']} "
              f"({read['copied_bytes']} bytes) = writev() calls {copied_calls} ({copied_bytes} bytes)", flush=True)
        # Each counter against what the daemon's system calls moved, and the
        # total against what the reader got.
        self.assertEqual(read["bytes"], GIB)
        self.assertEqual(spliced_bytes + copied_bytes, GIB)
        self.assertEqual((read["spliced_replies"], read["spliced_bytes"]), (spliced_calls, spliced_bytes))
        self.assertEqual((read["copied_replies"], read["copied_bytes"]), (copied_calls, copied_bytes))
        return read

    def test_exact_accounting_in_read_mode(self):
        read = self.exactness("read")
        self.assertGreaterEqual(read["spliced_bytes"], 0.99 * GIB)

    def test_exact_accounting_in_off_mode(self):
        read = self.exactness("off")
        self.assertEqual(read["spliced_replies"], 0)
        self.assertEqual(read["copy_reasons"]["splice_off"], read["copied_replies"])

    def reply_sizes(self, *extra):
        with Mount(self.src, self.mnt, "--max-reply", "1M", *extra, splice="read") as m:
            self.assertEqual(read_through(os.path.join(self.mnt, "big")), GIB)
            stats = m.stats()
        read = stats["read"]
        full = read["full_size_replies"] / read["replies"]
        print(f"max reply {stats['max_reply']} (pipe {stats['pipe_size']}): {read['replies']} replies, "
              f"{full:.1%} full size, {read['spliced_bytes'] / read['bytes']:.2%} of bytes spliced", flush=True)
        self.assertGreaterEqual(full, 0.95, read["size_histogram"])
        self.assertGreaterEqual(read["spliced_bytes"], 0.99 * read["bytes"])
        return stats

    def test_reply_size_with_default_pipe_limit(self):
        with open("/proc/sys/fs/pipe-max-size") as f:
            if int(f.read()) >= 2 * MIB:
                self.skipTest("pipes can hold 1 MiB plus a header here")
        stats = self.reply_sizes()
        # 1 MiB plus the header does not fit a 1 MiB pipe: announced and clamped.
        self.assertEqual(stats["max_reply"], MIB - 4096)
        self.assertIn("pipe-max-size", stats["max_reply_clamp_reason"])

    def test_reply_size_with_larger_pipes(self):
        with pipe_max_size(2 * MIB):
            stats = self.reply_sizes()
        self.assertEqual(stats["max_reply"], MIB)
        self.assertEqual(stats["max_reply_clamp_reason"], "")

    def test_clamp_is_announced_at_mount_time(self):
        with open("/proc/sys/fs/pipe-max-size") as f:
            if int(f.read()) >= 2 * MIB:
                self.skipTest("pipes can hold 1 MiB plus a header here")
        with Mount(self.src, self.mnt, "--max-reply", "1M", splice="read") as m:
            self.assertIn("max reply 1020K instead of 1M", m.log)

    def test_too_large_max_reply_is_an_error(self):
        result = subprocess.run([harness.ARGS.binary, "--max-reply", "2M", self.src, self.mnt],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 1)
        self.assertIn("larger than FUSE allows", result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1)

    def test_direct_io_replies(self):
        with Mount(self.src, self.mnt, "--cache", "never", "--max-reply", "512K", splice="read") as m:
            self.assertEqual(read_through(os.path.join(self.mnt, "big"), block=MIB), GIB)
            read = m.stats()["read"]
        self.assertEqual(read["bytes"], GIB)
        self.assertEqual(read["full_size_replies"], GIB // (512 * 1024))
        self.assertEqual(read["spliced_bytes"], GIB)

    def test_unusual_sources_are_served_intact(self):
        # /proc files report size 0, so only direct I/O shows them; the kernel
        # splices them through a copy of its own.
        with Mount("/proc/sys/kernel", self.mnt, "--cache", "never", splice="read") as m:
            with open(os.path.join(self.mnt, "ostype"), "rb") as f:
                self.assertEqual(f.read(), b"Linux\n")
            read = m.stats()["read"]
        self.assertEqual(read["bytes"], 6)
        # A FUSE mount as the source of another.
        inner = os.path.join(self.tmp, "inner")
        os.makedirs(inner, exist_ok=True)
        with Mount(self.src, inner, splice="read"):
            with Mount(inner, self.mnt, splice="read") as outer:
                with open(os.path.join(self.mnt, "big"), "rb") as f, open(self.big, "rb") as g:
                    self.assertEqual(f.read(8 * MIB), g.read(8 * MIB))
                # Readahead may take the kernel past what was asked, never past the file.
                read = outer.stats()["read"]
                self.assertGreaterEqual(read["bytes"], 8 * MIB)
                self.assertLessEqual(read["bytes"], GIB)

    def test_write_accounting(self):
        trace = os.path.join(self.tmp, "trace-write")
        blocks = [os.urandom(MIB) for _ in range(64)]
        with StracedMount(self.src, self.mnt, splice="all", trace_file=trace) as m:
            fuse_fd = fuse_fd_of(m.daemon_pid())
            with open(os.path.join(self.mnt, "written"), "wb") as f:
                for block in blocks:
                    f.write(block)
            write = m.stats()["write"]
            self.assertEqual(m.unmount(), 0, m.log)
        moves = data_moves(trace, fuse_fd)
        print(f"spliced {write['spliced_bytes']} bytes = splice() pipe->file {moves['write_spliced'][1]}; "
              f"copied {write['copied_bytes']} = pwrite64() {moves['write_copied'][1]}", flush=True)
        self.assertEqual(write["bytes"], 64 * MIB)
        self.assertEqual(write["spliced_bytes"], moves["write_spliced"][1])
        self.assertEqual(write["copied_bytes"], moves["write_copied"][1])
        self.assertGreaterEqual(write["spliced_bytes"], 0.99 * 64 * MIB)
        # Every byte written, not a sample of them.
        with open(os.path.join(self.src, "written"), "rb") as f:
            for i, block in enumerate(blocks):
                self.assertTrue(f.read(MIB) == block, f"MiB {i} of the file differs on the source")
            self.assertEqual(f.read(), b"")
        os.unlink(os.path.join(self.src, "written"))


if __name__ == "__main__":
    harness.main()
