"""Privilege: setuid and device files follow the suid/dev options, the
daemon never follows a symlink swapped in for a directory during lookups,
and a non-root user can mount their own directory."""

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import Mount, is_mounted, run_as

USER = (1500, 1500, [1500])


class Security(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="splicefs-sec-")
        os.chmod(self.tmp, 0o755)
        self.src = os.path.join(self.tmp, "src")
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.src)
        os.mkdir(self.mnt)
        os.chmod(self.src, 0o755)

    def tearDown(self):
        if is_mounted(self.mnt):
            subprocess.run(["umount", "-l", self.mnt])
        shutil.rmtree(self.tmp, ignore_errors=True)

    def euid_through(self, *options):
        with Mount(self.src, self.mnt, "-o", ",".join(("allow_other",) + options)):
            out = run_as(*USER, lambda: subprocess.run([os.path.join(self.mnt, "id"), "-u"], capture_output=True,
                                                        text=True).stdout.strip())
        return out

    def test_setuid_follows_the_suid_option(self):
        shutil.copy("/usr/bin/id", os.path.join(self.src, "id"))
        os.chmod(os.path.join(self.src, "id"), 0o4755)
        self.assertEqual(self.euid_through(), "1500")  # nosuid by default
        self.assertEqual(self.euid_through("nosuid"), "1500")
        self.assertEqual(self.euid_through("suid"), "0")

    def test_device_files_follow_the_dev_option(self):
        os.mknod(os.path.join(self.src, "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        with Mount(self.src, self.mnt):
            with self.assertRaises(PermissionError):
                open(os.path.join(self.mnt, "null"), "rb")
        with Mount(self.src, self.mnt, "-o", "dev"):
            with open(os.path.join(self.mnt, "null"), "rb") as f:
                self.assertEqual(f.read(), b"")

    def test_swapping_a_directory_for_a_symlink_never_leaks(self):
        # A root-only directory outside SOURCE with a secret in it.
        vault = os.path.join(self.tmp, "vault")
        os.mkdir(vault, 0o700)
        with open(os.path.join(vault, "secret"), "w") as f:
            f.write("SECRET")
        d, link, spare = (os.path.join(self.src, n) for n in ("d", "link", "spare"))
        os.mkdir(d, 0o755)
        os.mkdir(spare, 0o755)
        with open(os.path.join(d, "secret"), "w") as f:
            f.write("public")
        os.chmod(os.path.join(d, "secret"), 0o644)
        os.symlink(vault, link)
        stop = threading.Event()

        def swap():
            # Alternate d between the real directory and a symlink to the vault.
            while not stop.is_set():
                os.rename(d, spare + ".tmp")
                os.symlink(vault, d + ".new")
                os.rename(d + ".new", d)
                os.unlink(d)
                os.rename(spare + ".tmp", d)

        seen = set()
        with Mount(self.src, self.mnt, "-o", "allow_other", "--cache", "never"):
            t = threading.Thread(target=swap)
            t.start()
            try:
                def attempts():
                    results = set()
                    deadline = time.monotonic() + 3
                    while time.monotonic() < deadline:
                        try:
                            with open(os.path.join(self.mnt, "d", "secret")) as f:
                                results.add(f.read())
                        except OSError as e:
                            results.add(e.errno)
                    return results
                seen = run_as(*USER, attempts)
            finally:
                stop.set()
                t.join()
        self.assertNotIn("SECRET", seen)
        self.assertIn("public", seen)

    def test_non_root_user_mounts_their_own_directory(self):
        # fusermount3 must be setuid root and /dev/fuse open to the user; where
        # it is not (mode 0600 here), the test opens it for its own duration.
        fusermount = shutil.which("fusermount3")
        if not fusermount or not os.stat(fusermount).st_mode & stat.S_ISUID:
            self.skipTest("fusermount3 is not installed setuid root")
        old_mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
        if not old_mode & 0o006:
            os.chmod("/dev/fuse", 0o666)
            self.addCleanup(os.chmod, "/dev/fuse", old_mode)
        # fusermount3 wants a user name: a temporary account for the test.
        name = "splicefs-test"
        r = subprocess.run(["useradd", "--no-create-home", "--uid", str(USER[0]), "--user-group", name],
                           capture_output=True, text=True)
        if r.returncode != 0 and "already exists" not in r.stderr:
            self.skipTest(f"cannot create a test user: {r.stderr.strip()}")
        self.addCleanup(subprocess.run, ["userdel", name], capture_output=True)
        for p in (self.src, self.mnt):
            os.chown(p, *USER[:2])
        env = dict(os.environ, XDG_RUNTIME_DIR=self.tmp)

        def mount_and_read():
            r = subprocess.run([harness.ARGS.binary, self.src, self.mnt], capture_output=True, text=True, env=env)
            if r.returncode != 0:
                return ("mount failed", r.returncode, r.stderr)
            try:
                return sorted(os.listdir(self.mnt))
            finally:
                subprocess.run(["fusermount3", "-u", self.mnt])
        with open(os.path.join(self.src, "mine"), "w") as f:
            f.write("x")
        self.assertEqual(run_as(*USER, mount_and_read), ["mine"])


if __name__ == "__main__":
    harness.main()
