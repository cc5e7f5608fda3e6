"""The kernel may hold more inodes than the daemon may hold fds. Whatever the
daemon does to stay within its fds must not be visible through the mount: a
tree larger than the fd limit works, and an open file, a cwd and a mount on
an entry stay as they were under pressure, with inodes known by file handle
and by name. Creating and removing a million files leaves the daemon's
memory and fds where they started."""

import ctypes
import errno
import multiprocessing
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import harness
from harness import WITHOUT_FILE_HANDLES, Mount, is_mounted, tree_snapshot

SMALL_FD_LIMIT = 1000  # the inode store keeps at most 500 fds
MILLION = int(os.environ.get("SPLICEFS_MEMORY_FILES", "1000000"))
# RSS may grow by this much over the warmed-up daemon (allocator caches);
# the sanitizer build holds freed memory in quarantine and says so here.
RSS_SLACK_MIB = int(os.environ.get("SPLICEFS_RSS_SLACK_MIB", "8"))
FILES_PER_DIR = 1000
# What an inode the kernel holds may cost the daemon (its record, the maps
# that find it); the sanitizer build's shadow memory and quarantine need more.
BYTES_PER_INODE = int(os.environ.get("SPLICEFS_BYTES_PER_INODE", "512"))


def make_tree(root, dirs, files):
    for d in range(dirs):
        os.mkdir(os.path.join(root, f"d{d}"))
        for i in range(files):
            with open(os.path.join(root, f"d{d}", f"f{i}"), "w") as f:
                f.write(f"{d}/{i}\n" * (i % 7))


def listing(root):
    """(relative path, type and size) of everything under root, via lstat."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out.append((os.path.relpath(os.path.join(dirpath, name), root), st.st_mode, st.st_size))
    return sorted(out)


class FileHandle:
    """A handle of a file as name_to_handle_at(2) gives it, and open_by_handle_at(2)."""
    MAX_BYTES = 128

    class Struct(ctypes.Structure):
        _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                    ("f_handle", ctypes.c_ubyte * 128)]

    libc = ctypes.CDLL(None, use_errno=True)

    def __init__(self, directory, name):
        """The handle of directory/name, or `error` the errno name of the call."""
        self.directory = directory
        self.handle = self.Struct(handle_bytes=self.MAX_BYTES)
        self.error = None
        mount_id = ctypes.c_int()
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if self.libc.name_to_handle_at(dir_fd, name.encode(), ctypes.byref(self.handle),
                                           ctypes.byref(mount_id), 0) < 0:
                self.error = ("name_to_handle_at", errno.errorcode[ctypes.get_errno()])
        finally:
            os.close(dir_fd)

    def read(self):
        """What the file the handle names reads (a directory: its sorted
        entries), or the errno name of the step that failed."""
        if self.error:
            return self.error
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fd = self.libc.open_by_handle_at(dir_fd, ctypes.byref(self.handle), os.O_RDONLY)
            if fd < 0:
                return ("open_by_handle_at", errno.errorcode[ctypes.get_errno()])
        finally:
            os.close(dir_fd)
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                return sorted(os.listdir(fd))
            with os.fdopen(fd, closefd=False) as f:
                return f.read()
        finally:
            os.close(fd)


def open_by_handle(directory, name):
    """name_to_handle_at(directory/name), then open_by_handle_at() with that
    handle: what the file reads, or the errno of the step that failed."""
    return FileHandle(directory, name).read()


def use_every_inode(root):
    """Makes the daemon open an fd for every inode under root: a lookup
    opens none (the inode store opens one on first use), but listxattr does."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [""] + dirnames + filenames:
            os.listxattr(os.path.join(dirpath, name), follow_symlinks=False)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def create_dir_of_files(path):
    os.mkdir(path)
    for i in range(FILES_PER_DIR):
        os.mknod(os.path.join(path, f"f{i}"))


def remove_dir_of_files(path):
    for i in range(FILES_PER_DIR):
        os.unlink(os.path.join(path, f"f{i}"))
    os.rmdir(path)


class Inodes(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="splicefs-inodes-")
        self.src = os.path.join(self.tmp, "src")
        self.mnt = os.path.join(self.tmp, "mnt")
        self.ref = os.path.join(self.tmp, "ref")
        os.mkdir(self.src)
        os.mkdir(self.mnt)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_tree_larger_than_the_fd_limit(self):
        make_tree(self.src, 40, 100)  # 4,040 entries, five times the inodes the daemon may hold
        shutil.copytree(self.src, self.ref, symlinks=True)
        native = listing(self.src)
        with Mount(self.src, self.mnt, fd_limit=SMALL_FD_LIMIT) as m:
            # Four walkers at once, each must see exactly the native tree.
            results = [None] * 4

            def walk(k):
                try:
                    results[k] = listing(self.mnt)
                except OSError as e:
                    results[k] = e

            walkers = [threading.Thread(target=walk, args=(k,)) for k in range(4)]
            for t in walkers:
                t.start()
            for t in walkers:
                t.join()
            for got in results:
                self.assertEqual(got, native)
            self.assertEqual(tree_snapshot(self.mnt), tree_snapshot(self.src))
            # Then change the tree through the mount, and the reference the same way.
            for root in (self.mnt, self.ref):
                for d in range(40):
                    for i in range(0, 100, 3):
                        os.rename(os.path.join(root, f"d{d}", f"f{i}"), os.path.join(root, f"d{(d + 1) % 40}", f"r{d}-{i}"))
                    for i in range(1, 100, 3):
                        os.unlink(os.path.join(root, f"d{d}", f"f{i}"))
                    with open(os.path.join(root, f"d{d}", "new"), "w") as f:
                        f.write(str(d))
            stats = m.stats()
            print(f"fd limit {SMALL_FD_LIMIT}: {stats['inodes']} inodes held, {stats['inode_fds']} fds of "
                  f"{stats['inode_fd_budget']}, {stats['inode_fds_reopened']} reopened", flush=True)
            self.assertLessEqual(stats["inode_fds"], stats["inode_fd_budget"])
            self.assertGreater(stats["inodes"], stats["inode_fd_budget"],
                               "the kernel held fewer inodes than the fd budget: the test proves nothing")
            self.assertEqual(m.unmount(), 0, m.log)
        self.assertEqual(tree_snapshot(self.src), tree_snapshot(self.ref))

    def test_mounts_on_entries_survive_fd_pressure(self):
        """Dropping an entry from the kernel's cache (d_invalidate) would
        detach whatever is mounted on it, in every mount namespace: a mount
        below the mountpoint, one on an entry reached through a bind mount of
        a directory of the mount, and one made in another mount namespace must
        all stay while the daemon is short of fds."""
        make_tree(self.src, 20, 100)
        for sub in ("below/inner", "aliased/inner", "elsewhere/inner"):
            os.makedirs(os.path.join(self.src, sub))
        other = os.path.join(self.tmp, "other")
        alias = os.path.join(self.tmp, "alias")
        os.mkdir(other)
        os.mkdir(alias)
        with open(os.path.join(other, "marker"), "w") as f:
            f.write("still here")
        below = os.path.join(self.mnt, "below", "inner")
        on_alias = os.path.join(alias, "inner")
        in_namespace = os.path.join(self.mnt, "elsewhere", "inner")
        with Mount(self.src, self.mnt, fd_limit=SMALL_FD_LIMIT) as m:
            mounted = []  # innermost first
            namespace = None
            try:
                subprocess.run(["mount", "--bind", other, below], check=True)
                mounted.insert(0, below)
                subprocess.run(["mount", "--bind", os.path.join(self.mnt, "aliased"), alias], check=True)
                mounted.insert(0, alias)
                subprocess.run(["mount", "--bind", other, on_alias], check=True)
                mounted.insert(0, on_alias)
                # A private mount namespace that mounts on an entry of this
                # mount, then waits for its stdin to close.
                namespace = subprocess.Popen(
                    ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                     f"mount --bind '{other}' '{in_namespace}' && echo ready && exec cat"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                if namespace.stdout.readline().strip() != "ready":
                    namespace.wait()
                    self.fail(f"mount in a new namespace failed: {namespace.stderr.read()}")
                for _ in range(3):
                    listing(self.mnt)
                    use_every_inode(self.mnt)
                self.assertGreater(m.stats()["inode_fds_reopened"], 0)
                self.assertTrue(is_mounted(below), "a mount below the mountpoint was detached")
                self.assertTrue(is_mounted(on_alias), "a mount on an entry reached through a bind mount was detached")
                self.assertTrue(is_mounted(in_namespace, namespace.pid),
                                "a mount on an entry in another mount namespace was detached")
                for path in (below, on_alias):
                    with open(os.path.join(path, "marker")) as f:
                        self.assertEqual(f.read(), "still here")
            finally:
                if namespace:
                    namespace.stdin.close()  # the namespace and its mount go with the process
                    namespace.wait()
                for path in mounted:
                    subprocess.run(["umount", "-l", path], check=False)
            self.assertEqual(m.unmount(), 0, m.log)

    def check_nothing_visible_changes(self, fd_limit, prefix):
        """Section 1's reproduction: 400 directories with a file each, the
        daemon's fd limit at `fd_limit`; a process holds d1/f open, has its
        cwd in d2, and d3 has a mount on it; `find` runs three times."""
        for d in range(1, 401):
            os.mkdir(os.path.join(self.src, f"d{d}"))
            with open(os.path.join(self.src, f"d{d}", "f"), "w") as f:
                f.write(f"file {d}\n")
        other = os.path.join(self.tmp, "other")
        os.mkdir(other)
        with open(os.path.join(other, "marker"), "w") as f:
            f.write("still here")
        native_find = subprocess.run(["find", self.src, "-type", "f"], capture_output=True, text=True,
                                     check=True).stdout.replace(self.src, self.mnt).splitlines()
        with Mount(self.src, self.mnt, fd_limit=fd_limit, prefix=prefix) as m:
            held = os.path.join(self.mnt, "d1", "f")
            cwd = os.path.join(self.mnt, "d2")
            on_entry = os.path.join(self.mnt, "d3")
            # The process whose view must not change: answers "cwd" with its
            # getcwd() and "read" with what it reads from the file it holds.
            holder = subprocess.Popen(
                [sys.executable, "-c", f"""
import os, sys
fd = os.open({held!r}, os.O_RDONLY)
os.chdir({cwd!r})
print(fd, flush=True)
for line in sys.stdin:
    try:
        answer = os.getcwd() if line.strip() == "cwd" else os.pread(fd, 100, 0).decode()
    except OSError as e:
        answer = "error " + e.strerror
    print(repr(answer), flush=True)
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            mounted = False
            try:
                held_fd = int(holder.stdout.readline())
                subprocess.run(["mount", "--bind", other, on_entry], check=True)
                mounted = True

                def ask(question):
                    holder.stdin.write(question + "\n")
                    holder.stdin.flush()
                    return eval(holder.stdout.readline())

                for _ in range(3):
                    found = subprocess.run(["find", self.mnt, "-type", "f"], capture_output=True, text=True)
                    self.assertEqual(found.returncode, 0, found.stderr)
                    use_every_inode(self.mnt)
                stats = m.stats()
                print(f"fd limit {fd_limit}, inodes known by {stats.get('inode_identity')}: {stats['inodes']} "
                      f"inodes held, {stats.get('inode_fds')} fds of {stats.get('inode_fd_budget')}, "
                      f"{stats.get('inode_fds_reopened')} reopened", flush=True)
                self.assertEqual(os.readlink(f"/proc/{holder.pid}/fd/{held_fd}"), held)
                self.assertEqual(os.readlink(f"/proc/{holder.pid}/cwd"), cwd)
                self.assertEqual(ask("cwd"), cwd)
                self.assertEqual(ask("read"), "file 1\n")
                self.assertTrue(is_mounted(on_entry), "the mount on an entry was detached")
                with open(os.path.join(on_entry, "marker")) as f:
                    self.assertEqual(f.read(), "still here")
                # What find saw through the mount: the source's files, plus the
                # marker of the mount on d3 in place of d3/f.
                expected = sorted([p for p in native_find if p != os.path.join(on_entry, "f")] +
                                  [os.path.join(on_entry, "marker")])
                self.assertEqual(sorted(found.stdout.splitlines()), expected)
                self.assertEqual(stats["inode_identity"], "names" if prefix else "file handles")
                self.assertLessEqual(stats["inode_fds"], stats["inode_fd_budget"])
                self.assertGreater(stats["inode_fds_reopened"], 0, "no fd pressure: the test proves nothing")
            finally:
                holder.stdin.close()
                holder.wait()
                holder.stdout.close()
                if mounted:
                    subprocess.run(["umount", on_entry], check=False)
            self.assertEqual(m.unmount(), 0, m.log)

    def test_nothing_visible_changes_at_fd_limit_200_by_file_handle(self):
        self.check_nothing_visible_changes(200, ())

    def test_nothing_visible_changes_at_fd_limit_200_by_name(self):
        self.check_nothing_visible_changes(200, WITHOUT_FILE_HANDLES)

    def test_nothing_visible_changes_at_fd_limit_1000_by_file_handle(self):
        self.check_nothing_visible_changes(1000, ())

    def test_nothing_visible_changes_at_fd_limit_1000_by_name(self):
        self.check_nothing_visible_changes(1000, WITHOUT_FILE_HANDLES)

    def check_removed_cwd_as_natively(self, prefix):
        """A process whose cwd is a directory that another process then
        removes, while the daemon (fd limit 200) is under pressure: what it
        sees (getcwd, /proc/PID/cwd, creating, listing, stat of ".") is what
        the same process sees natively."""
        os.mkdir(self.ref)
        for base in (self.src, self.ref):
            for d in range(300):
                os.mkdir(os.path.join(base, f"d{d}"))
            os.mkdir(os.path.join(base, "gone"))
            with open(os.path.join(base, "gone", "f"), "w") as f:
                f.write("x")
        script = """
import errno, os, sys
os.chdir(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    q = line.strip()
    try:
        if q == "cwd": a = os.getcwd()
        elif q == "create": a = os.open("new", os.O_CREAT | os.O_WRONLY, 0o644) >= 0
        elif q == "list": a = sorted(os.listdir("."))
        elif q == "stat": a = os.stat(".").st_nlink
        else: a = os.readlink("/proc/self/cwd")
    except OSError as e:
        a = "error " + errno.errorcode[e.errno]
    print(repr(a), flush=True)
"""

        def answers(base, pressure):
            holder = subprocess.Popen([sys.executable, "-c", script, os.path.join(base, "gone")],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                self.assertEqual(holder.stdout.readline().strip(), "ready")
                os.unlink(os.path.join(base, "gone", "f"))
                os.rmdir(os.path.join(base, "gone"))
                pressure()
                out = {}
                for q in ("cwd", "proc", "create", "list", "stat"):
                    holder.stdin.write(q + "\n")
                    holder.stdin.flush()
                    out[q] = eval(holder.stdout.readline())
                return out
            finally:
                holder.stdin.close()
                holder.wait()
                holder.stdout.close()

        native = answers(self.ref, lambda: None)
        with Mount(self.src, self.mnt, fd_limit=200, prefix=prefix) as m:
            def pressure():
                for _ in range(3):
                    subprocess.run(["find", self.mnt], capture_output=True, check=True)
                    use_every_inode(self.mnt)
            through = answers(self.mnt, pressure)
            self.assertGreater(m.stats()["inode_fds_reopened"], 0, "no fd pressure: the test proves nothing")
            self.assertEqual(m.unmount(), 0, m.log)
        native["proc"] = native["proc"].replace(self.ref, self.mnt)
        self.assertEqual(through, native)

    def test_a_removed_cwd_stays_as_natively_under_fd_pressure_by_file_handle(self):
        self.check_removed_cwd_as_natively(())

    def test_a_removed_cwd_stays_as_natively_under_fd_pressure_by_name(self):
        self.check_removed_cwd_as_natively(WITHOUT_FILE_HANDLES)

    def test_inode_numbers_are_unique_across_filesystems_mounted_inside(self):
        """Two tmpfs inside SOURCE number their inodes alike; through the mount
        (one st_dev) every distinct source inode must still have its own
        st_ino, hard links must share theirs, and readdir must agree with stat
        wherever it does natively."""
        mounted = []
        try:
            for sub in ("a", "b"):
                path = os.path.join(self.src, sub)
                os.mkdir(path)
                subprocess.run(["mount", "-t", "tmpfs", "tmpfs", path], check=True)
                mounted.append(path)
                for d in (path, self.src):
                    os.makedirs(os.path.join(d, f"in-{sub}"), exist_ok=True)
                    with open(os.path.join(d, f"in-{sub}", "f"), "w") as f:
                        f.write(sub)
                    os.link(os.path.join(d, f"in-{sub}", "f"), os.path.join(d, f"link-{sub}"))

            def numbers(root):
                """relative path -> (st_dev, st_ino), and readdir's d_ino where it
                matches stat natively (not on mountpoints)."""
                out, d_inos = {}, {}
                for dirpath, dirnames, filenames in os.walk(root):
                    with os.scandir(dirpath) as entries:
                        for entry in entries:
                            rel = os.path.relpath(entry.path, root)
                            st = os.lstat(entry.path)
                            out[rel] = (st.st_dev, st.st_ino)
                            d_inos[rel] = entry.inode()
                return out, d_inos

            native, native_d = numbers(self.src)
            with Mount(self.src, self.mnt) as m:
                through, through_d = numbers(self.mnt)
                self.assertEqual(m.unmount(), 0, m.log)
            self.assertEqual(sorted(through), sorted(native))
            self.assertEqual(len({ino for _, ino in through.values()}), len(set(native.values())),
                             "different source inodes share an inode number through the mount")
            self.assertEqual(len({dev for dev, _ in through.values()}), 1)
            for rel in native:
                for other in native:
                    if native[rel] == native[other]:  # hard links
                        self.assertEqual(through[rel], through[other], (rel, other))
                if native_d[rel] == native[rel][1]:
                    self.assertEqual(through_d[rel], through[rel][1], rel)
        finally:
            for path in reversed(mounted):
                subprocess.run(["umount", path], check=False)

    def test_file_handles_of_the_mount_open_the_file(self):
        """Parity with the source while the kernel holds the inode (it then
        resolves the handle itself; this passed before FUSE_EXPORT_SUPPORT
        too). Handles of inodes the kernel and the daemon both forgot give
        ESTALE: see splicefs(1)."""
        os.makedirs(os.path.join(self.src, "sub"))
        with open(os.path.join(self.src, "sub", "f"), "w") as f:
            f.write("by handle")
        self.assertEqual(open_by_handle(self.src, "sub/f"), "by handle")  # natively
        with Mount(self.src, self.mnt) as m:
            self.assertEqual(open_by_handle(self.mnt, "sub/f"), "by handle")
            with open(os.path.join(self.mnt, "sub", "f")) as held:  # the kernel keeps the inode
                self.assertEqual(open_by_handle(self.mnt, "sub/f"), "by handle")
                self.assertEqual(held.read(), "by handle")
            self.assertEqual(m.unmount(), 0, m.log)

    def test_file_handles_of_the_mount_outlive_the_kernels_and_the_daemons_memory(self):
        """A handle taken through the mount opens its file, directory, or a
        file in a directory, after the kernel forgot the inodes and sent
        FORGET (the daemon then gets LOOKUP "." and ".." of node ids it no
        longer holds), as the same handles do natively after drop_caches."""
        os.makedirs(os.path.join(self.src, "sub", "deeper"))
        for name, text in (("top", "top file"), ("sub/f", "in sub"), ("sub/deeper/g", "deeper")):
            with open(os.path.join(self.src, name), "w") as f:
                f.write(text)
        names = ["top", "sub", "sub/f", "sub/deeper", "sub/deeper/g"]
        natively = {name: FileHandle(self.src, name) for name in names}
        harness.drop_unused_dentries()
        expected = {name: handle.read() for name, handle in natively.items()}
        self.assertEqual(expected["sub/deeper/g"], "deeper")
        with Mount(self.src, self.mnt) as m:
            if m.stats().get("inode_identity") != "file handles":
                self.skipTest(f"inodes known by {m.stats().get('inode_identity')}: handles "
                              "last only while the daemon holds the inode (splicefs(1))")
            handles = {name: FileHandle(self.mnt, name) for name in names}
            harness.wait_for_inodes(m, 1)  # the kernel sent FORGET for every one
            self.assertEqual({name: handle.read() for name, handle in handles.items()}, expected)
            # Again, with the inodes the handles brought back forgotten too.
            harness.wait_for_inodes(m, 1)
            self.assertEqual({name: handle.read() for name, handle in handles.items()}, expected)
            # A file removed through the mount: ESTALE, as natively.
            os.unlink(os.path.join(self.mnt, "sub", "f"))
            harness.wait_for_inodes(m, 1)
            self.assertEqual(handles["sub/f"].read(), natively["sub/f"].read())
            self.assertEqual(handles["sub/f"].read(), ("open_by_handle_at", "ESTALE"))
            self.assertEqual(m.unmount(), 0, m.log)

    def test_a_million_files_leave_memory_and_fds_where_they_were(self):
        # The fd limit of this machine class, so that the result does not
        # depend on where the test runs.
        with Mount(self.src, self.mnt, fd_limit=20000) as m:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(4) as pool:
                # Warm up, so that the allocator and thread stacks have their
                # working size.
                warm = [os.path.join(self.mnt, f"warm{d}") for d in range(20)]
                pool.map(create_dir_of_files, warm)
                pool.map(remove_dir_of_files, warm)
                harness.wait_for_inodes(m, 1)
                fds_before = harness.daemon_fds(m.pid)
                rss_before = rss_kib(m.pid)
                start = time.monotonic()
                dirs = [os.path.join(self.mnt, f"d{d}") for d in range(MILLION // FILES_PER_DIR)]
                pool.map(create_dir_of_files, dirs, chunksize=1)
                rss_full = rss_kib(m.pid)
                inodes_full = m.stats()["inodes"]
                pool.map(remove_dir_of_files, dirs, chunksize=1)
                elapsed = time.monotonic() - start
            harness.wait_for_inodes(m, 1)
            fds_after = harness.daemon_fds(m.pid)
            rss_after = rss_kib(m.pid)
            stats = m.stats()
            print(f"{len(dirs) * FILES_PER_DIR} files created and removed in {elapsed:.0f} s; daemon RSS "
                  f"{rss_before} KiB before, {rss_full} KiB with all created ({inodes_full} inodes held), "
                  f"{rss_after} KiB after; fds {fds_before} -> {fds_after}; "
                  f"{stats['inode_fds_reopened']} inode fds reopened", flush=True)
            self.assertEqual(os.listdir(self.mnt), [])
            self.assertLessEqual(fds_after, fds_before)
            # While the kernel holds them, each inode costs the daemon its
            # record, and no fd beyond the budget.
            per_inode = (rss_full - rss_before) * 1024 / max(inodes_full, 1)
            print(f"{per_inode:.0f} bytes of daemon memory per inode held", flush=True)
            self.assertLessEqual(per_inode, BYTES_PER_INODE)
            self.assertLessEqual(rss_after, rss_before + RSS_SLACK_MIB * 1024)
            self.assertEqual(m.unmount(), 0, m.log)
        self.assertEqual(os.listdir(self.src), [])


if __name__ == "__main__":
    harness.main()
