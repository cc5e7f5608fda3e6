"""POSIX ACLs through an allow_other mount, compared with the source: an
ACL that denies what the mode allows, one that grants what the mode does
not, the umask under a directory with a default ACL, and a mode changed by
setting an ACL, each as the caller that matters."""

import os
import shutil
import subprocess
import tempfile
import unittest

import harness
from harness import MountedTestCase, outcome, run_as, write_file

NOBODY = (65534, 65534, [])


def read_as(ids, path):
    return outcome(run_as, *ids, lambda: open(path).read())


def setfacl(*args):
    subprocess.run(["setfacl", *args], check=True, capture_output=True)


class Acl(MountedTestCase):
    mount_args = ("-o", "allow_other")

    def setUp(self):
        # Before mounting: a test that skips in setUp gets no tearDown.
        if not shutil.which("setfacl"):
            self.skipTest("setfacl is not installed (package acl)")
        with tempfile.NamedTemporaryFile() as probe:
            if subprocess.run(["setfacl", "-m", "u:nobody:r", probe.name], capture_output=True).returncode:
                self.skipTest("the temporary directory's filesystem does not support POSIX ACLs")
        super().setUp()

    def both(self, name):
        """The same path on the source (as the reference) and through the mount."""
        return self.r(name), self.m(name)

    def test_an_acl_that_denies_is_enforced(self):
        for path in (self.r("denied"), os.path.join(self.src, "denied")):
            write_file(path, b"secret", 0o644)
            setfacl("-m", "u:nobody:---", path)
        native = read_as(NOBODY, self.r("denied"))
        self.assertEqual(native, ("err", "EACCES"))
        self.assertEqual(read_as(NOBODY, self.m("denied")), native)

    def test_an_acl_that_grants_is_honoured(self):
        for path in (self.r("granted"), os.path.join(self.src, "granted")):
            write_file(path, b"shared", 0o600)
            setfacl("-m", "u:nobody:r", path)
        native = read_as(NOBODY, self.r("granted"))
        self.assertEqual(native, ("ok", "shared"))
        self.assertEqual(read_as(NOBODY, self.m("granted")), native)

    def test_a_default_acl_replaces_the_umask(self):
        for d in self.both("inherit"):
            os.mkdir(d)
            os.chmod(d, 0o777)
            setfacl("-d", "-m", "u::rwx,g::rwx,o::rwx", d)

        def create(path):
            old = os.umask(0o077)
            try:
                write_file(path, b"x", 0o666)
                os.mkdir(path + ".d", 0o777)
            finally:
                os.umask(old)
            return (oct(os.stat(path).st_mode & 0o7777), oct(os.stat(path + ".d").st_mode & 0o7777))

        native = create(self.r("inherit", "f"))
        self.assertEqual(native, ("0o666", "0o777"))
        self.assertEqual(create(self.m("inherit", "f")), native)

    def test_the_umask_applies_without_a_default_acl(self):
        def create(path):
            old = os.umask(0o027)
            try:
                write_file(path, b"x", 0o666)
            finally:
                os.umask(old)
            return oct(os.stat(path).st_mode & 0o7777)

        native = create(self.r("plain"))
        self.assertEqual(native, "0o640")
        self.assertEqual(create(self.m("plain")), native)

    def test_a_mode_changed_by_an_acl_shows_at_once(self):
        for path in self.both("f"):
            write_file(path, b"x", 0o644)
        os.stat(self.m("f"))  # the mount has the attributes cached
        for path in self.both("f"):
            setfacl("-m", "g::rwx", path)
        native = oct(os.stat(self.r("f")).st_mode & 0o7777)
        self.assertEqual(native, "0o674")
        self.assertEqual(oct(os.stat(self.m("f")).st_mode & 0o7777), native)
        native_acl = subprocess.run(["getfacl", "-c", self.r("f")], capture_output=True, text=True).stdout
        self.assertEqual(subprocess.run(["getfacl", "-c", self.m("f")], capture_output=True, text=True).stdout,
                         native_acl)


if __name__ == "__main__":
    harness.main()
