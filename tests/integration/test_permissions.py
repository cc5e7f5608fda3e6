"""Ownership and permission checks for callers of other uids through a
root-mounted allow_other mount, compared with the same calls natively."""

import os
import stat
import unittest

import harness
from harness import outcome, run_as, tree_snapshot

ALICE = (1500, 1500, [1500])
BOB = (1600, 1600, [1600])
BOB_IN_PROJECT = (1600, 1600, [1600, 2500])


def alice_writes_a_private_file(base):
    p = os.path.join(base, "alice", "mine")
    with open(p, "w") as f:
        f.write("secret")
    os.chmod(p, 0o600)


class Permissions(harness.MountedTestCase):
    mount_args = ("-o", "allow_other")

    def setUp(self):
        super().setUp()
        for base in (self.src, self.ref):
            os.chmod(base, 0o1777)
            shared = os.path.join(base, "alice")
            os.mkdir(shared)
            os.chown(shared, 1500, 1500)
            os.chmod(shared, 0o755)
            project = os.path.join(base, "project")
            os.mkdir(project)
            os.chown(project, 0, 2500)
            os.chmod(project, 0o2770)

    def both(self, who, fn):
        native = outcome(run_as, *who, lambda: fn(self.ref))
        mounted = outcome(run_as, *who, lambda: fn(self.mnt))
        self.assertEqual(mounted, native)
        return mounted

    def test_created_files_belong_to_the_caller(self):
        def create(base):
            p = os.path.join(base, "alice", "mine")
            with open(p, "w") as f:
                f.write("secret")
            os.chmod(p, 0o600)
            os.mkdir(os.path.join(base, "alice", "dir"))
            os.symlink("mine", os.path.join(base, "alice", "link"))
            os.mkfifo(os.path.join(base, "alice", "fifo"))
            return [(os.lstat(os.path.join(base, "alice", n)).st_uid, os.lstat(os.path.join(base, "alice", n)).st_gid)
                    for n in ("mine", "dir", "link", "fifo")]
        result = self.both(ALICE, create)
        self.assertEqual(result, ("ok", [(1500, 1500)] * 4))
        st = os.stat(os.path.join(self.src, "alice", "mine"))
        self.assertEqual((st.st_uid, st.st_gid), (1500, 1500))

    def test_other_users_cannot_read_write_or_change(self):
        self.both(ALICE, alice_writes_a_private_file)
        cases = {
            "read": lambda b: open(os.path.join(b, "alice", "mine")).read(),
            "write": lambda b: open(os.path.join(b, "alice", "mine"), "w").write("x"),
            "chmod": lambda b: os.chmod(os.path.join(b, "alice", "mine"), 0o666),
            "chown": lambda b: os.chown(os.path.join(b, "alice", "mine"), 1600, 1600),
            "rename": lambda b: os.rename(os.path.join(b, "alice", "mine"), os.path.join(b, "stolen")),
            "unlink": lambda b: os.unlink(os.path.join(b, "alice", "mine")),
            "create in alice's dir": lambda b: open(os.path.join(b, "alice", "bobs"), "w").close(),
            "truncate": lambda b: os.truncate(os.path.join(b, "alice", "mine"), 0),
            "utime": lambda b: os.utime(os.path.join(b, "alice", "mine"), (1, 1)),
            "setxattr": lambda b: os.setxattr(os.path.join(b, "alice", "mine"), "user.x", b"1"),
        }
        for name, fn in cases.items():
            with self.subTest(name):
                result = self.both(BOB, fn)
                self.assertEqual(result[0], "err", name)

    def test_hard_link_and_rename_do_not_widen_access(self):
        self.both(ALICE, alice_writes_a_private_file)
        # Bob may not make a link to Alice's file (protected_hardlinks), nor read it after a rename by Alice.
        self.both(BOB, lambda b: os.link(os.path.join(b, "alice", "mine"), os.path.join(b, "bobs-link")))
        self.both(ALICE, lambda b: os.rename(os.path.join(b, "alice", "mine"), os.path.join(b, "moved")))
        self.both(BOB, lambda b: open(os.path.join(b, "moved")).read())

    def test_supplementary_groups(self):
        for base in (self.src, self.ref):
            p = os.path.join(base, "project", "plan")
            with open(p, "w") as f:
                f.write("plan")
            os.chown(p, 0, 2500)
            os.chmod(p, 0o640)
        read = lambda b: open(os.path.join(b, "project", "plan")).read()
        self.assertEqual(self.both(BOB_IN_PROJECT, read), ("ok", "plan"))
        self.assertEqual(self.both(BOB, read)[0], "err")
        # A file created in a setgid directory takes the directory's group.
        def create(base):
            p = os.path.join(base, "project", "bobs")
            open(p, "w").close()
            st = os.stat(p)
            return st.st_uid, st.st_gid
        self.assertEqual(self.both(BOB_IN_PROJECT, create), ("ok", (1600, 2500)))

    def test_sticky_directory(self):
        def create(base):
            open(os.path.join(base, "alices-in-tmp"), "w").close()
        self.both(ALICE, create)
        self.assertEqual(self.both(BOB, lambda b: os.unlink(os.path.join(b, "alices-in-tmp")))[0], "err")

    def tearDown(self):
        try:
            self.assertEqual(tree_snapshot(self.src), tree_snapshot(self.ref))
        finally:
            super().tearDown()


if __name__ == "__main__":
    harness.main()
