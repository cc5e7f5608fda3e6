"""Each operation runs on a native reference directory and through the
mount; results, errno, contents and stat fields must agree, and at the end
the source tree must equal the reference tree."""

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import socket
import stat
import subprocess
import threading
import unittest

import harness
from harness import outcome, stat_summary, tree_snapshot, write_file

libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
AT_FDCWD = -100
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def renameat2(old, new, flags):
    if libc.renameat2(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def utimensat(path, atime, mtime, nofollow=False):
    times = (Timespec * 2)(Timespec(*atime), Timespec(*mtime))
    if libc.utimensat(AT_FDCWD, path.encode(), times, 0x100 if nofollow else 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


class Parity(harness.MountedTestCase):
    def same(self, op, compare_stat=None):
        """Runs op(base) on the reference and through the mount; returns the outcome."""
        native = outcome(op, self.ref)
        mounted = outcome(op, self.mnt)
        self.assertEqual(mounted, native, f"{op.__name__ if hasattr(op, '__name__') else op}")
        return mounted

    def tearDown(self):
        try:
            # The source must now hold exactly what the reference holds.
            self.assertEqual(tree_snapshot(self.src), tree_snapshot(self.ref))
        finally:
            super().tearDown()

    # --- files ---------------------------------------------------------

    def test_create_write_read_stat(self):
        def op(base):
            p = os.path.join(base, "f")
            write_file(p, b"x" * 10000, 0o640)
            return read_file(p), stat_summary(os.stat(p))
        self.same(op)

    def test_errors_match(self):
        def setup(base):
            os.mkdir(os.path.join(base, "d"))
            write_file(os.path.join(base, "d", "f"), b"1")
            write_file(os.path.join(base, "f"), b"2")
        self.same(setup)
        for name, op in [
            ("rmdir non-empty", lambda b: os.rmdir(os.path.join(b, "d"))),
            ("mkdir existing", lambda b: os.mkdir(os.path.join(b, "d"))),
            ("unlink dir", lambda b: os.unlink(os.path.join(b, "d"))),
            ("rmdir file", lambda b: os.rmdir(os.path.join(b, "f"))),
            ("open missing", lambda b: os.open(os.path.join(b, "missing"), os.O_RDONLY)),
            ("open O_EXCL existing", lambda b: os.open(os.path.join(b, "f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)),
            ("file as dir", lambda b: os.stat(os.path.join(b, "f", "x"))),
            ("opendir file", lambda b: os.listdir(os.path.join(b, "f"))),
            ("open dir for writing", lambda b: os.open(os.path.join(b, "d"), os.O_WRONLY)),
            ("rename dir into itself", lambda b: os.rename(os.path.join(b, "d"), os.path.join(b, "d", "x"))),
            ("rename dir over file", lambda b: os.rename(os.path.join(b, "d"), os.path.join(b, "f"))),
            ("readlink of file", lambda b: os.readlink(os.path.join(b, "f"))),
            ("long name", lambda b: os.stat(os.path.join(b, "n" * 300))),
            ("getxattr missing", lambda b: os.getxattr(os.path.join(b, "f"), "user.none")),
            ("link to dir", lambda b: os.link(os.path.join(b, "d"), os.path.join(b, "dl"))),
        ]:
            with self.subTest(name):
                native = outcome(op, self.ref)
                self.assertEqual(native[0], "err", name)
                self.assertEqual(outcome(op, self.mnt), native, name)

    def test_truncate_chmod_chown_times(self):
        def op(base):
            p = os.path.join(base, "f")
            write_file(p, b"abc" * 1000)
            os.truncate(p, 100)
            os.truncate(p, 200000)
            os.chmod(p, 0o4751)
            os.chown(p, 1234, 5678)
            os.utime(p, ns=(1_000_000_123, 2_000_000_456))
            st = os.stat(p)
            return read_file(p), stat_summary(st), st.st_atime_ns, st.st_mtime_ns
        self.same(op)

    def test_utime_now_and_omit(self):
        def op(base):
            p = os.path.join(base, "f")
            write_file(p, b"")
            utimensat(p, (100, 5), (200, 7))
            utimensat(p, (0, UTIME_OMIT), (300, 9))
            st = os.stat(p)
            first = (st.st_atime_ns, st.st_mtime_ns)
            utimensat(p, (0, UTIME_NOW), (0, UTIME_OMIT))
            st = os.stat(p)
            return first, st.st_mtime_ns, abs(st.st_atime - __import__("time").time()) < 60
        self.same(op)

    def test_symlinks(self):
        def op(base):
            os.symlink("target/../elsewhere", os.path.join(base, "rel"))
            os.symlink("/etc/hostname", os.path.join(base, "abs"))
            os.symlink("missing", os.path.join(base, "dangling"))
            st = os.lstat(os.path.join(base, "rel"))
            return (os.readlink(os.path.join(base, "rel")), os.readlink(os.path.join(base, "abs")),
                    stat.S_ISLNK(st.st_mode), st.st_size,
                    outcome(os.stat, os.path.join(base, "dangling")))
        self.same(op)
        # lchown and utimes on the link itself
        def op2(base):
            p = os.path.join(base, "rel")
            os.lchown(p, 42, 43)
            utimensat(p, (10, 0), (20, 0), nofollow=True)
            st = os.lstat(p)
            return st.st_uid, st.st_gid, st.st_mtime_ns
        self.same(op2)

    def test_hard_links_share_inode(self):
        def op(base):
            a, b = os.path.join(base, "a"), os.path.join(base, "b")
            write_file(a, b"data")
            os.link(a, b)
            sa, sb = os.stat(a), os.stat(b)
            write_file(b, b"changed")
            return sa.st_ino == sb.st_ino, sa.st_nlink, read_file(a)
        self.same(op)
        self.assertEqual(os.stat(self.m("a")).st_ino, os.stat(self.src + "/a").st_ino)

    def test_rename_variants(self):
        def op(base):
            j = lambda n: os.path.join(base, n)
            write_file(j("a"), b"A")
            write_file(j("b"), b"B")
            os.mkdir(j("d"))
            os.rename(j("a"), j("b"))  # over an existing file
            r1 = outcome(renameat2, j("b"), j("d"), RENAME_NOREPLACE)
            write_file(j("c"), b"C")
            renameat2(j("b"), j("c"), RENAME_EXCHANGE)
            r2 = outcome(renameat2, j("c"), j("missing"), RENAME_EXCHANGE)
            os.rename(j("c"), j("d/moved"))
            return r1, r2, read_file(j("b")), read_file(j("d/moved")), sorted(os.listdir(base))
        self.same(op)

    def test_special_files(self):
        def op(base):
            j = lambda n: os.path.join(base, n)
            os.mkfifo(j("fifo"), 0o640)
            os.mknod(j("sock"), 0o600 | stat.S_IFSOCK)
            os.mknod(j("null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            return [(stat.S_IFMT(os.lstat(j(n)).st_mode), os.lstat(j(n)).st_rdev) for n in ("fifo", "sock", "null")]
        self.same(op)
        # A device file on a nodev mount cannot be opened.
        self.assertEqual(outcome(os.open, self.m("null"), os.O_RDONLY), ("err", "EACCES"))

    def test_sparse_beyond_4gib_and_seek_data_hole(self):
        def op(base):
            p = os.path.join(base, "sparse")
            fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, b"head", 0)
                os.pwrite(fd, b"far away" * 1000, 5 << 30)
                os.pwrite(fd, b"tail", (6 << 30) + 7)
                data = os.pread(fd, 8000, 5 << 30)
                hole = os.lseek(fd, 0, os.SEEK_HOLE)
                data_at = os.lseek(fd, 1 << 30, os.SEEK_DATA)
                beyond = outcome(os.lseek, fd, (7 << 30), os.SEEK_DATA)
                return data, os.fstat(fd).st_size, (hole, data_at), beyond, os.pread(fd, 10, (6 << 30) + 5)
            finally:
                os.close(fd)
        try:
            self.compare_sparse(op)
        finally:
            # The file is 6 GiB long: the tree comparison at the end would
            # hash every zero of it twice, so it goes once compared here.
            for base in (self.ref, self.src):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(base, "sparse"))

    def compare_sparse(self, op):
        if harness.ARGS.cache != "always":
            self.same(op)
            return
        # Writeback caching: the source may not hold the data yet, so the
        # kernel answers SEEK_DATA/SEEK_HOLE itself, treating the whole file
        # as data (splicefs(1)), never placing a hole where data is.
        native, mounted = outcome(op, self.ref), outcome(op, self.mnt)
        size = native[1][1]
        self.assertEqual(mounted[1][2], (size, 1 << 30))
        self.assertEqual(mounted[1][:2] + mounted[1][3:], native[1][:2] + native[1][3:])

    def test_unlinked_open_file_still_readable(self):
        def op(base):
            p = os.path.join(base, "gone")
            write_file(p, b"still here" * 1000)
            fd = os.open(p, os.O_RDWR)
            try:
                os.unlink(p)
                os.pwrite(fd, b"more", 10000)
                return os.pread(fd, 20000, 0), os.fstat(fd).st_nlink, os.path.exists(p)
            finally:
                os.close(fd)
        self.same(op)

    def test_two_append_writers(self):
        def op(base):
            p = os.path.join(base, "log")
            write_file(p, b"")
            fds = [os.open(p, os.O_WRONLY | os.O_APPEND) for _ in range(2)]
            try:
                for i in range(200):
                    os.write(fds[i % 2], f"writer{i % 2} line {i:05d}\n".encode())
            finally:
                for fd in fds:
                    os.close(fd)
            return read_file(p)
        self.same(op)

    def test_concurrent_append_writers_keep_whole_records(self):
        p = self.m("shared.log")
        write_file(p, b"")
        record = 100

        def writer(tag):
            fd = os.open(p, os.O_WRONLY | os.O_APPEND)
            try:
                for i in range(300):
                    os.write(fd, (tag * (record - 1) + "\n").encode())
            finally:
                os.close(fd)
        threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        data = read_file(p)
        self.assertEqual(len(data), 600 * record)
        lines = data.split(b"\n")[:-1]
        self.assertTrue(all(line in (b"a" * 99, b"b" * 99) for line in lines))
        os.unlink(p)

    def test_mmap_writes_seen_by_read(self):
        def op(base):
            p = os.path.join(base, "mapped")
            write_file(p, b"\0" * 3 * 4096)
            fd = os.open(p, os.O_RDWR)
            try:
                with mmap.mmap(fd, 3 * 4096, mmap.MAP_SHARED) as m:
                    m[4096:4101] = b"hello"
                    m.flush()
                    seen = os.pread(fd, 5, 4096)
                return seen, read_file(p)[4096:4101]
            finally:
                os.close(fd)
        if harness.ARGS.cache == "never" and not self.mount.stats()["direct_io_mmap"]:
            # FOPEN_DIRECT_IO files cannot be mapped shared before Linux 6.6
            # (splicefs(1)).
            self.assertEqual(outcome(op, self.mnt), ("err", "ENODEV"))
            write_file(self.r("mapped"), b"\0" * 3 * 4096)  # as far as the mount got
            return
        self.same(op)

    def test_xattr_round_trip(self):
        def op(base):
            p = os.path.join(base, "x")
            write_file(p, b"")
            os.setxattr(p, "user.colour", b"blue")
            os.setxattr(p, "user.big", b"v" * 60000)
            r1 = outcome(os.setxattr, p, "user.colour", b"red", os.XATTR_CREATE)
            os.setxattr(p, "user.colour", b"green", os.XATTR_REPLACE)
            got = os.getxattr(p, "user.colour"), len(os.getxattr(p, "user.big"))
            names = sorted(os.listxattr(p))
            os.removexattr(p, "user.big")
            r2 = outcome(os.removexattr, p, "user.big")
            return r1, got, names, sorted(os.listxattr(p)), r2
        self.same(op)

    def test_open_flags(self):
        def op(base):
            p = os.path.join(base, "flags")
            write_file(p, b"0123456789")
            fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
            os.write(fd, b"ab")
            os.close(fd)
            r1 = read_file(p)
            fd = os.open(p, os.O_RDONLY)
            r2 = outcome(os.write, fd, b"x")
            os.close(fd)
            fd = os.open(p, os.O_WRONLY)
            r3 = outcome(os.read, fd, 1)
            os.close(fd)
            return r1, r2, r3
        self.same(op)

    def test_o_direct_aligned(self):
        def op(base):
            p = os.path.join(base, "direct")
            write_file(p, os.urandom(1) * 0 + bytes(range(256)) * 4096)
            fd = os.open(p, os.O_RDWR | os.O_DIRECT)
            try:
                buf = mmap.mmap(-1, 1 << 20)
                n = os.preadv(fd, [buf], 0)
                data = bytes(buf[:n])
                buf[:4096] = b"z" * 4096
                w = os.pwritev(fd, [memoryview(buf)[:4096]], 8192)
                return n, data == (bytes(range(256)) * 4096)[:n], w, read_file(p)[8192:8200]
            finally:
                os.close(fd)
        result = outcome(op, self.ref)
        if result[0] == "err" and result[1] == "EINVAL":
            self.skipTest("the filesystem holding the test directory has no O_DIRECT")
        self.same(op)

    def test_fallocate_and_copy_file_range(self):
        def op(base):
            a, b = os.path.join(base, "a"), os.path.join(base, "b")
            write_file(a, bytes(range(256)) * 100)
            fd = os.open(b, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, 1 << 20)
                src = os.open(a, os.O_RDONLY)
                try:
                    n = os.copy_file_range(src, fd, 10000, 5, 4096)
                finally:
                    os.close(src)
                return n, os.fstat(fd).st_size, os.pread(fd, 20, 4096)
            finally:
                os.close(fd)
        self.same(op)

    def test_locks_between_processes(self):
        p = self.m("locked")
        write_file(p, b"x")
        fd = os.open(p, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
            code = subprocess.run(["python3", "-c", f"""
import fcntl, os, sys
fd = os.open({p!r}, os.O_RDWR)
results = []
for fn in (lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB), lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)):
    try:
        fn(); results.append('got')
    except OSError as e:
        results.append(e.errno)
print(results)
"""], capture_output=True, text=True).stdout.strip()
            self.assertEqual(code, f"[{errno.EWOULDBLOCK}, {errno.EAGAIN}]")
        finally:
            os.close(fd)
            os.unlink(p)

    def test_statfs_and_access(self):
        a, b = os.statvfs(self.src), os.statvfs(self.mnt)
        self.assertEqual((a.f_bsize, a.f_blocks, a.f_files, a.f_namemax), (b.f_bsize, b.f_blocks, b.f_files, b.f_namemax))
        def op(base):
            p = os.path.join(base, "f")
            write_file(p, b"", 0o600)
            return os.access(p, os.R_OK), os.access(p, os.X_OK), os.access(os.path.join(base, "no"), os.F_OK)
        self.same(op)

    def test_fsync_variants(self):
        def op(base):
            p = os.path.join(base, "synced")
            fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, b"durable")
            os.fsync(fd)
            os.fdatasync(fd)
            os.close(fd)
            dfd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dfd)
            os.close(dfd)
            return read_file(p)
        self.same(op)

    # --- directories ---------------------------------------------------

    def test_big_directory_listing_while_changing(self):
        d = self.m("big")
        os.mkdir(d)
        for i in range(10000):
            open(os.path.join(d, f"stable{i:05d}"), "wb").close()
        stop = threading.Event()

        def churn():
            i = 0
            while not stop.is_set():
                p = os.path.join(d, f"churn{i % 50}")
                if os.path.exists(p):
                    os.unlink(p)
                else:
                    open(p, "wb").close()
                i += 1
        t = threading.Thread(target=churn)
        t.start()
        try:
            for _ in range(3):
                names = os.listdir(d)
                stable = [n for n in names if n.startswith("stable")]
                self.assertEqual(len(stable), 10000)
                self.assertEqual(len(set(stable)), 10000)
                self.assertTrue(all(n.startswith(("stable", "churn")) for n in names))
        finally:
            stop.set()
            t.join()
        # With the churn over, the listing equals the source's, entry for entry.
        self.assertEqual(sorted(os.listdir(d)), sorted(os.listdir(os.path.join(self.src, "big"))))
        with os.scandir(d) as it:
            kinds = {e.name: (e.inode(), e.is_file()) for e in it}
        with os.scandir(os.path.join(self.src, "big")) as it:
            native = {e.name: (e.inode(), e.is_file()) for e in it}
        self.assertEqual(kinds, native)
        shutil_rm = __import__("shutil").rmtree
        shutil_rm(d)


if __name__ == "__main__":
    harness.main()
