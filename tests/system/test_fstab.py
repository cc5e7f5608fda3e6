"""Installs the build into the system prefix (/usr) and mounts through real
fstab files with both type spellings, then uninstalls. Needs root; changes
the system while it runs, so it is labelled "system"."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import harness  # noqa: E402
from harness import is_mounted, mount_entry  # noqa: E402

BUILD_DIR = None


def sh(*cmd, check=True):
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)


WATCHED = ("/usr/local", "/usr/sbin", "/usr/bin", "/usr/share/man", "/usr/share/bash-completion", "/usr/share/zsh",
           "/usr/share/fish")


def installed_files():
    """Every path under the directories an install may touch."""
    found = set()
    for top in WATCHED:
        for dirpath, dirnames, filenames in os.walk(top):
            found.update(os.path.join(dirpath, n) for n in dirnames + filenames)
    return found


def uninstall():
    return sh("cmake", "--build", BUILD_DIR, "--target", "uninstall", check=False)


class InstallAndUninstall(unittest.TestCase):
    """What the README says: cmake --install with the default prefix, fstab
    lines of both types mount, the uninstall target leaves nothing behind."""

    def test_default_prefix_install_mounts_from_fstab_and_uninstalls_cleanly(self):
        before = installed_files()
        r = sh("cmake", "--install", BUILD_DIR, check=False)
        try:
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(os.path.exists("/usr/local/bin/splicefs"))
            for helper in ("/sbin/mount.splicefs", "/sbin/mount.fuse.splicefs"):
                self.assertEqual(os.path.realpath(helper), "/usr/local/bin/splicefs")
            tmp = tempfile.mkdtemp(prefix="splicefs-install-")
            self.addCleanup(shutil.rmtree, tmp, True)
            src, a, b = (os.path.join(tmp, n) for n in ("src", "a", "b"))
            for d in (src, a, b):
                os.mkdir(d)
            with open(os.path.join(src, "hello"), "w") as f:
                f.write("hi\n")
            tab = os.path.join(tmp, "fstab")
            with open(tab, "w") as f:
                f.write(f"{src} {a} splicefs defaults 0 0\n{src} {b} fuse.splicefs nofail 0 0\n")
            r = sh("mount", "-a", "-T", tab, check=False)
            try:
                self.assertEqual(r.returncode, 0, r.stderr)
                for m in (a, b):
                    with open(os.path.join(m, "hello")) as f:
                        self.assertEqual(f.read(), "hi\n")
            finally:
                for m in (a, b):
                    if is_mounted(m):
                        sh("umount", m, check=False)
        finally:
            r = uninstall()
        self.assertEqual(r.returncode, 0, r.stderr)
        after = installed_files()
        self.assertEqual((sorted(after - before), sorted(before - after)), ([], []))


class Fstab(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        result = sh("cmake", "--install", BUILD_DIR, "--prefix", "/usr")
        for helper in ("/usr/sbin/mount.splicefs", "/usr/sbin/mount.fuse.splicefs"):
            assert os.path.islink(helper), result.stdout

    @classmethod
    def tearDownClass(cls):
        uninstall()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="splicefs-fstab-")
        self.src = os.path.join(self.tmp, "src")
        os.mkdir(self.src)
        with open(os.path.join(self.src, "hello"), "w") as f:
            f.write("hello\n")
        self.mnts = []

    def tearDown(self):
        for m in self.mnts:
            if is_mounted(m):
                sh("umount", m, check=False)
                self.assertFalse(is_mounted(m))
        shutil.rmtree(self.tmp, ignore_errors=True)

    def mountpoint(self, name):
        m = os.path.join(self.tmp, name)
        os.mkdir(m)
        self.mnts.append(m)
        return m

    def fstab(self, lines):
        path = os.path.join(self.tmp, "fstab")
        with open(path, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        return path

    def splice_mode_of(self, mountpoint):
        out = sh("/usr/bin/splicefs", "stats", "--json", mountpoint).stdout
        return json.loads(out)["mounts"][0]["splice"]

    def test_both_type_spellings(self):
        a, b, c = self.mountpoint("a"), self.mountpoint("b"), self.mountpoint("c")
        tab = self.fstab([
            f"{self.src} {a} fuse.splicefs splice=all,max_reply=512K,allow_other,nofail,_netdev,x-systemd.automount 0 0",
            f"{self.src} {b} splicefs splice=write,noauto 0 0",
            f"{self.src} {c} fuse.splicefs splice=off 0 0",
        ])
        self.assertEqual(sh("findmnt", "--verify", "--tab-file", tab, check=False).returncode, 0)
        for m, mode in ((a, "all"), (b, "write")):
            r = sh("mount", "-T", tab, m, check=False)
            self.assertEqual(r.returncode, 0, r.stderr)
            entry = mount_entry(m)
            self.assertEqual((entry["fstype"], entry["source"]), ("fuse.splicefs", self.src))
            self.assertEqual(self.splice_mode_of(m), mode)
            with open(os.path.join(m, "hello")) as f:
                self.assertEqual(f.read(), "hello\n")
        # mount -a mounts what is missing (c), skips noauto and what is mounted.
        for _ in range(2):
            r = sh("mount", "-a", "-T", tab, check=False)
            self.assertEqual(r.returncode, 0, r.stderr)
        for m in (a, b, c):
            with open("/proc/self/mountinfo") as f:
                count = sum(1 for line in f if line.split()[4] == m)
            self.assertEqual(count, 1, m)
        self.assertEqual(self.splice_mode_of(c), "off")

    def test_atime_flags_and_remount_through_mount8(self):
        a, b = self.mountpoint("atime-a"), self.mountpoint("atime-b")
        tab = self.fstab([
            f"{self.src} {a} fuse.splicefs relatime,nodiratime,nofail 0 0",
            f"{self.src} {b} splicefs strictatime,ro 0 0",
        ])
        for m in (a, b):
            r = sh("mount", "-T", tab, m, check=False)
            self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue({"relatime", "nodiratime"} <= set(mount_entry(a)["options"].split(",")))
        b_options = set(mount_entry(b)["options"].split(","))
        self.assertTrue("ro" in b_options and not {"relatime", "noatime"} & b_options, b_options)
        # mount(8) runs the helper for a remount, with the fstab line's
        # options and the new ones; the last of ro/rw wins.
        for m, flag in ((a, "ro"), (a, "rw"), (b, "rw")):
            r = sh("mount", "-T", tab, "-o", f"remount,{flag}", m, check=False)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(flag, mount_entry(m)["options"].split(","))
        with open(os.path.join(b, "written"), "w") as f:
            f.write("rw again\n")
        r = sh("mount", "-T", tab, "-o", "remount,splice=off", a, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("splice is read, not off", r.stderr)

    def test_mount_fuse3_directly(self):
        m = self.mountpoint("d")
        r = sh("mount.fuse3", f"splicefs#{self.src}", m, "-o", "splice=read,nofail", check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(mount_entry(m)["fstype"], "fuse.splicefs")

    def test_bad_source_fails_mount(self):
        m = self.mountpoint("e")
        tab = self.fstab([f"{self.tmp}/missing {m} splicefs defaults 0 0"])
        r = sh("mount", "-T", tab, m, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("missing", r.stderr)
        self.assertFalse(is_mounted(m))


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    args, rest = parser.parse_known_args()
    BUILD_DIR = args.build_dir
    if os.geteuid() != 0:
        harness.skip_whole_file("installing into /usr and mounting from fstab needs root")
    harness.require_fuse()
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
