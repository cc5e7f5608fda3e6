"""Cases a filesystem engineer checks first, each run on a native reference
directory and through the mount: O_DIRECT alignment, a shared mapping past
a shrinking truncate, a write-only file under writeback caching, directory
cookies under churn and on a second handle, READ and WRITE interrupted
while the source blocks, and extended attributes of symbolic links.
Differences that FUSE imposes are the ones splicefs(1) documents; the test
asserts exactly those."""

import ctypes
import mmap
import os
import signal
import subprocess
import sys
import tempfile
import unittest

import harness
from harness import Mount, outcome, tree_snapshot, write_file

MIB = 1 << 20
PAGE = mmap.PAGESIZE


class Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64), ("d_reclen", ctypes.c_ushort),
                ("d_type", ctypes.c_ubyte), ("d_name", ctypes.c_char * 256)]


libc = ctypes.CDLL(None, use_errno=True)
libc.opendir.restype = ctypes.c_void_p
libc.opendir.argtypes = [ctypes.c_char_p]
libc.readdir.restype = ctypes.POINTER(Dirent)
libc.readdir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.telldir.argtypes = [ctypes.c_void_p]
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
libc.closedir.argtypes = [ctypes.c_void_p]


class Dir:
    """A libc directory stream, for telldir/seekdir (Python has neither)."""

    def __init__(self, path):
        self.handle = libc.opendir(path.encode())
        if not self.handle:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), path)

    def read(self, count):
        names = []
        while len(names) < count:
            entry = libc.readdir(self.handle)
            if not entry:
                break
            name = entry.contents.d_name.decode()
            if name not in (".", ".."):
                names.append(name)
        return names

    def tell(self):
        return libc.telldir(self.handle)

    def seek(self, cookie):
        libc.seekdir(self.handle, cookie)

    def close(self):
        libc.closedir(self.handle)


class PosixEdges(harness.MountedTestCase):
    def same(self, op):
        native = outcome(op, self.ref)
        mounted = outcome(op, self.mnt)
        self.assertEqual(mounted, native, getattr(op, "__name__", op))
        return mounted

    def test_o_direct_alignment(self):
        data = os.urandom(64 * 1024)
        for base in (self.ref, self.mnt):
            write_file(os.path.join(base, "direct"), data)
        aligned = mmap.mmap(-1, 2 * PAGE)

        def read(offset, length, shift):
            def op(base):
                fd = os.open(os.path.join(base, "direct"), os.O_RDONLY | os.O_DIRECT)
                try:
                    n = os.preadv(fd, [memoryview(aligned)[shift:shift + length]], offset)
                    return n, bytes(aligned[shift:shift + n])
                finally:
                    os.close(fd)
            op.__name__ = f"O_DIRECT read of {length} bytes at {offset}, buffer +{shift}"
            return op

        def write(offset, length, shift):
            def op(base):
                fd = os.open(os.path.join(base, "direct"), os.O_WRONLY | os.O_DIRECT)
                try:
                    aligned[shift:shift + length] = data[:length]
                    return os.pwritev(fd, [memoryview(aligned)[shift:shift + length]], offset)
                finally:
                    os.close(fd)
            op.__name__ = f"O_DIRECT write of {length} bytes at {offset}, buffer +{shift}"
            return op

        # Offsets and lengths reach the daemon, which uses them on the source
        # as they are: the source's rules apply, with its errno.
        for offset, length in ((0, PAGE), (PAGE, PAGE), (1, PAGE), (0, 100), (512, 512), (PAGE, 2 * PAGE - 1)):
            self.same(read(offset, length, 0))
            self.same(write(offset, length, 0))
        if self.mount.stats()["opens"]["passthrough"] > 0:
            # The kernel does the I/O on the source itself: its rules for
            # the buffer too.
            self.same(read(0, PAGE, 1))
            self.same(write(0, PAGE, 1))
            return
        # The caller's buffer address never reaches a FUSE server: the
        # daemon reads into its own aligned buffer, so an unaligned buffer
        # works through the mount whatever the source says (splicefs(1)).
        with open(os.path.join(self.ref, "direct"), "rb") as f:
            expected = f.read(PAGE)
        self.assertEqual(outcome(read(0, PAGE, 1), self.mnt), ("ok", (PAGE, expected)))
        self.assertEqual(outcome(write(0, PAGE, 1), self.mnt), ("ok", PAGE))
        with open(os.path.join(self.ref, "direct"), "r+b") as f:
            f.write(data[:PAGE])  # what the mount's write did, for the comparison below
        with open(os.path.join(self.src, "direct"), "rb") as f, open(os.path.join(self.ref, "direct"), "rb") as g:
            self.assertEqual(f.read(), g.read())

    def test_shared_mapping_past_a_shrinking_truncate_is_sigbus(self):
        code = ("import mmap, os, sys\n"
                "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)\n"
                f"os.write(fd, b'x' * {3 * PAGE})\n"
                f"m = mmap.mmap(fd, {3 * PAGE}, mmap.MAP_SHARED)\n"
                f"m[{2 * PAGE}] = 1\n"
                f"os.ftruncate(fd, {PAGE})\n"
                "print('before', m[0], flush=True)\n"
                f"print('after', m[{2 * PAGE}], flush=True)\n")

        def op(base):
            r = subprocess.run([sys.executable, "-c", code, os.path.join(base, "mapped")],
                               capture_output=True, text=True, timeout=60)
            return r.returncode, r.stdout, r.stderr.strip().splitlines()[-1:] if r.returncode > 0 else []

        native = op(self.ref)
        self.assertEqual(native[:2], (-signal.SIGBUS, "before 120\n"))
        mounted = op(self.mnt)
        if harness.ARGS.cache == "never" and not self.mount.stats()["direct_io_mmap"]:
            # FOPEN_DIRECT_IO files cannot be mapped shared before Linux 6.6
            # (splicefs(1)).
            self.assertEqual(mounted[0], 1)
            self.assertIn("No such device", "".join(mounted[2]))
            os.unlink(os.path.join(self.ref, "mapped"))
            os.unlink(os.path.join(self.mnt, "mapped"))
        else:
            self.assertEqual(mounted, native)

    def test_o_direct_file_written_through_a_shared_mapping(self):
        # The kernel writes a shared mapping's dirty pages back itself; the
        # last page of a file covers only up to its size, a length the
        # source's direct I/O refuses. The data must reach the source.
        size = 3 * PAGE + 100

        def op(base):
            p = os.path.join(base, "dmap")
            write_file(p, b"a" * size)
            fd = os.open(p, os.O_RDWR | os.O_DIRECT)
            try:
                with mmap.mmap(fd, size, mmap.MAP_SHARED) as m:
                    m[10:20] = b"y" * 10
                    m[3 * PAGE + 10:3 * PAGE + 20] = b"x" * 10
                    m.flush()
            finally:
                os.close(fd)
            with open(p, "rb") as f:
                return f.read()

        if harness.ARGS.cache == "never" and not self.mount.stats()["direct_io_mmap"]:
            # FOPEN_DIRECT_IO files cannot be mapped shared before Linux 6.6
            # (splicefs(1)).
            self.assertEqual(outcome(op, self.mnt), ("err", "ENODEV"))
            return
        self.same(op)
        with open(os.path.join(self.src, "dmap"), "rb") as f, open(os.path.join(self.ref, "dmap"), "rb") as g:
            self.assertTrue(f.read() == g.read(), "the source misses what the mapping wrote")

    def test_directory_cookies_under_churn_and_on_a_second_handle(self):
        for base in (self.ref, self.mnt):
            os.mkdir(os.path.join(base, "d"))
            for i in range(300):
                write_file(os.path.join(base, "d", f"n{i:03}"), b"")

        def op(base):
            d = os.path.join(base, "d")
            first, second = Dir(d), Dir(d)
            try:
                read_before = first.read(100)
                cookie = first.tell()
                after = first.read(20)
                # Churn: entries already read go, new ones come (and may
                # sort anywhere, so they may show up after the cookie too).
                for name in read_before[:50]:
                    os.unlink(os.path.join(d, name))
                for i in range(50):
                    write_file(os.path.join(d, f"new{i:03}"), b"")
                first.seek(cookie)
                again = first.read(1000)
                second.seek(cookie)
                other_handle = second.read(1000)
                # POSIX leaves open whether entries added after opendir(3)
                # show up (with --cache always the kernel's cached listing
                # leaves them out until rewinddir); the entries that were
                # there all along must come again, in the same order.
                old = set(after)
                there_all_along = {f"n{i:03}" for i in range(300)} - set(read_before[:50])
                return ([n for n in again if n in old] == after, [n for n in other_handle if n in old] == after,
                        [n for n in again if n in there_all_along], [n for n in other_handle if n in there_all_along])
            finally:
                first.close()
                second.close()

        mounted = self.same(op)
        self.assertEqual(mounted[1][:2], (True, True), "a cookie did not lead back to the same entries")

    def test_xattrs_of_symbolic_links(self):
        for base in (self.ref, self.mnt):
            os.symlink("target", os.path.join(base, "link"))
            write_file(os.path.join(base, "target"), b"t")
        for name in ("trusted.splicefs", "user.splicefs"):
            def op(base, name=name):
                link = os.path.join(base, "link")
                set_result = outcome(os.setxattr, link, name, b"v1", follow_symlinks=False)
                return (set_result,
                        outcome(os.getxattr, link, name, follow_symlinks=False),
                        sorted(outcome(os.listxattr, link, follow_symlinks=False)[1] or []),
                        outcome(os.listxattr, os.path.join(base, "target")),
                        outcome(os.removexattr, link, name, follow_symlinks=False),
                        outcome(os.getxattr, link, name, follow_symlinks=False))
            op.__name__ = f"{name} on a symbolic link"
            self.same(op)


class SetuidClearing(harness.MountedTestCase):
    """Writes, truncates and fallocates by callers without CAP_FSETID clear
    setuid/setgid bits on the source as they would natively, for the owner,
    a group member, another user and root, in every cache policy (direct
    I/O leaves the clearing to the server)."""

    OWNER, MEMBER, OTHER, GROUP = 1000, 1001, 65534, 1100
    mount_args = ("-o", "allow_other")

    def test_setuid_and_setgid_clearing_matches_native(self):
        callers = {"owner": (self.OWNER, self.OWNER, []), "group member": (self.MEMBER, self.MEMBER, [self.GROUP]),
                   "other": (self.OTHER, self.OTHER, []), "root": (0, 0, [0])}
        actions = {"write": lambda fd: os.pwrite(fd, b"data" * 2048, 0),
                   "ftruncate": lambda fd: os.ftruncate(fd, 100),
                   "fallocate": lambda fd: os.posix_fallocate(fd, 0, 1 << 16)}
        results = []
        for mode in (0o6777, 0o6767):  # setgid with and without group execute
            for who, (uid, gid, groups) in callers.items():
                for action_name, action in actions.items():
                    seen = {}
                    for name, base in (("native", self.ref), ("mounted", self.mnt)):
                        # Set up through the mount, so that the kernel's
                        # cached attributes are those of the source.
                        path = os.path.join(base, "f")
                        real = os.path.join(self.src if base == self.mnt else self.ref, "f")
                        write_file(path, b"x" * 9000)
                        os.chown(path, self.OWNER, self.GROUP)
                        os.chmod(path, mode)

                        def act(path=path, action=action):
                            fd = os.open(path, os.O_WRONLY)
                            try:
                                action(fd)
                            finally:
                                os.close(fd)
                            return oct(os.stat(path).st_mode)
                        seen[name] = (outcome(harness.run_as, uid, gid, groups, act), oct(os.stat(real).st_mode))
                    results.append((oct(mode), who, action_name, seen["native"], seen["mounted"]))
        def documented(mode, who, action, native, mounted):
            # splicefs(1): with write-back caching the kernel clears the
            # bits itself when data enters its cache, keeping setgid without
            # group execute for a writer outside the group (its older rule).
            return (harness.ARGS.cache == "always" and action == "write" and mode == oct(0o6767)
                    and who in ("owner", "other") and native[1] == oct(0o100767) and mounted[1] == oct(0o102767))
        differing = [f"{mode} {who} {action}: native {native[1]}, mounted {mounted[1]} ({mounted[0]})"
                     for mode, who, action, native, mounted in results
                     if native != mounted and not documented(mode, who, action, native, mounted)]
        self.assertFalse(differing, "\n" + "\n".join(differing))


class WriteOnly(unittest.TestCase):
    """A file its owner may write but not read (mode 0200), through a daemon
    that may not override that (no CAP_DAC_OVERRIDE). With writeback caching
    (--cache always) the daemon wants to open it for reading too, because
    the kernel reads the pages it writes partially; it must still open it
    for writing, as the source allows."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="splicefs-wronly-")
        self.src = os.path.join(self.tmp, "src")
        self.mnt = os.path.join(self.tmp, "mnt")
        self.ref = os.path.join(self.tmp, "ref")
        for d in (self.src, self.mnt, self.ref):
            os.mkdir(d)

    def tearDown(self):
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_write_only_file(self):
        class WithoutDacOverride(Mount):
            def command(self):
                return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *super().command()]

        old = os.urandom(3 * PAGE)
        for base in (self.src, self.ref):
            write_file(os.path.join(base, "wronly"), old, 0o200)
        with WithoutDacOverride(self.src, self.mnt):
            def op(base):
                path = os.path.join(base, "wronly")
                fd = os.open(path, os.O_WRONLY)
                try:
                    # A partial page in the middle of the file: the kernel
                    # would read the page first if it cached this open file.
                    return os.pwrite(fd, b"partial", PAGE + 100), os.pwrite(fd, b"at end", 3 * PAGE)
                finally:
                    os.close(fd)
            native = outcome(op, self.ref)
            self.assertEqual(outcome(op, self.mnt), native)
        self.assertEqual(tree_snapshot(self.src), tree_snapshot(self.ref))


class Interrupted(unittest.TestCase):
    """READ and WRITE whose caller goes away while the source blocks (the
    source is another splicefs mount whose daemon is stopped): the reply
    finds no request (ENOENT), the daemon goes on, nothing else is lost."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="splicefs-intr-")
        self.src = os.path.join(self.tmp, "src")
        self.inner = os.path.join(self.tmp, "inner")
        self.mnt = os.path.join(self.tmp, "mnt")
        for d in (self.src, self.inner, self.mnt):
            os.mkdir(d)
        self.data = os.urandom(4 * MIB)
        write_file(os.path.join(self.src, "file"), self.data)

    def tearDown(self):
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)

    CHILD = ("import mmap, os, sys\n"
             "fd = os.open(sys.argv[1], int(sys.argv[2]) | os.O_DIRECT)\n"
             "buf = mmap.mmap(-1, 1 << 20)\n"
             "buf[:] = open(sys.argv[3], 'rb').read() if sys.argv[3] != '-' else bytes(1 << 20)\n"
             "print('open', flush=True)\n"
             "sys.stdin.readline()\n"
             "(os.preadv if sys.argv[3] == '-' else os.pwritev)(fd, [buf], 0)\n")

    def interrupt(self, flags, feed="-"):
        """Opens the outer mount's file in a child process, stops the source,
        lets the child read or write 1 MiB with O_DIRECT, waits until the
        outer daemon is blocked in the source, kills the child, resumes the
        source. Returns the file's contents afterwards and the stats."""
        # Both daemons must see the I/O: no passthrough.
        with Mount(self.src, self.inner, "--passthrough", "off", splice="off") as inner, \
                Mount(self.inner, self.mnt, "--passthrough", "off") as outer:
            fds_before = harness.daemon_fds(outer.pid)
            child = subprocess.Popen([sys.executable, "-c", self.CHILD, os.path.join(self.mnt, "file"), str(flags),
                                      feed], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                self.assertEqual(child.stdout.readline(), "open\n")
                os.kill(inner.pid, signal.SIGSTOP)
                try:
                    child.stdin.write("go\n")
                    child.stdin.flush()
                    harness.wait_until(lambda: harness.threads_blocked_in_fuse(outer.pid) >= 1, 10,
                                       "the outer daemon to block in the stopped source",
                                       lambda: harness.wchans(outer.pid))
                    child.kill()
                finally:
                    os.kill(inner.pid, signal.SIGCONT)
                child.wait(30)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            self.assertEqual(child.returncode, -signal.SIGKILL)
            # The mount still serves every byte, and the daemon holds no more
            # than before.
            with open(os.path.join(self.mnt, "file"), "rb") as f:
                after = f.read()
            self.assertIsNone(outer.proc.poll(), "the daemon died")
            stats = outer.stats()
            self.assertLessEqual(harness.wait_for_fds_to_settle(outer.pid, fds_before), fds_before)
            self.assertEqual(outer.unmount(), 0, outer.log)
        return after, stats

    def test_read_interrupted_while_the_source_blocks(self):
        after, stats = self.interrupt(os.O_RDONLY)
        self.assertTrue(after == self.data, "the file reads differently after the interrupted read")
        self.assertGreaterEqual(stats["read"]["replies"], 1)

    def test_write_interrupted_while_the_source_blocks(self):
        new = os.urandom(MIB)
        feed = os.path.join(self.tmp, "feed")
        write_file(feed, new)
        after, stats = self.interrupt(os.O_WRONLY, feed)
        # The interrupted write either happened or not, page by page; nothing
        # else in the file changed.
        self.assertEqual(len(after), len(self.data))
        self.assertTrue(after[MIB:] == self.data[MIB:], "bytes after the interrupted write changed")
        for p in range(0, MIB, PAGE):
            self.assertIn(after[p:p + PAGE], (self.data[p:p + PAGE], new[p:p + PAGE]), f"page at {p}")
        self.assertGreaterEqual(stats["write"]["requests"], 1)


if __name__ == "__main__":
    harness.main()
