"""Inodes the kernel holds, each an open fd in the daemon: a tree larger than
the daemon's fd limit still works (the evictor asks the kernel to drop
entries), mounts below the mountpoint survive that, and creating and
removing a million files leaves the daemon's memory and fds where they
started."""

import multiprocessing
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import Mount, is_mounted, tree_snapshot

SMALL_FD_LIMIT = 1000  # evictor high-water mark 750 inodes
MILLION = int(os.environ.get("SPLICEFS_MEMORY_FILES", "1000000"))
# RSS may grow by this much over the warmed-up daemon (allocator caches);
# the sanitizer build holds freed memory in quarantine and says so here.
RSS_SLACK_MIB = int(os.environ.get("SPLICEFS_RSS_SLACK_MIB", "8"))
FILES_PER_DIR = 1000


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
            print(f"fd limit {SMALL_FD_LIMIT}: {stats['inodes']} inodes held, high-water mark "
                  f"{stats['inode_high_water']}, {stats['inode_evictions']} entries dropped", flush=True)
            self.assertGreater(stats["inode_evictions"], 0, "the evictor never ran: the test proves nothing")
            self.assertEqual(m.unmount(), 0, m.log)
        self.assertEqual(tree_snapshot(self.src), tree_snapshot(self.ref))

    def test_mounts_on_entries_survive_eviction(self):
        """d_invalidate detaches whatever is mounted on a dropped entry, in
        every mount namespace: a mount below the mountpoint, one on an entry
        reached through a bind mount of a directory of the mount, and one
        made in another mount namespace must all survive evictions."""
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
                self.assertGreater(m.stats()["inode_evictions"], 0)
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

    def test_a_million_files_leave_memory_and_fds_where_they_were(self):
        # The fd limit of this machine class, so that the result does not
        # depend on where the test runs.
        with Mount(self.src, self.mnt, fd_limit=20000) as m:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(4) as pool:
                # Warm up: fill the inode table to its high-water mark once, so
                # that the allocator and thread stacks have their working size.
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
                  f"{stats['inode_evictions']} entries dropped", flush=True)
            self.assertEqual(os.listdir(self.mnt), [])
            self.assertLessEqual(fds_after, fds_before)
            self.assertLessEqual(rss_after, rss_before + RSS_SLACK_MIB * 1024)
            self.assertLessEqual(rss_full, rss_before + RSS_SLACK_MIB * 1024)
            self.assertEqual(m.unmount(), 0, m.log)
        self.assertEqual(os.listdir(self.src), [])


if __name__ == "__main__":
    harness.main()
