"""Privilege: setuid and device files follow the suid/dev options, the
daemon never follows a symlink swapped in for a directory during lookups,
a non-root user can mount their own directory, and the stats socket can be
neither taken over nor faked nor made to spin the daemon."""

import json
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

    def test_a_daemon_that_cannot_take_the_callers_ids_refuses(self):
        """A root daemon without CAP_SETUID/CAP_SETGID (as in some containers)
        cannot create as the caller: it must refuse, not create as root."""
        shared = os.path.join(self.src, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)
        no_setid = ("setpriv", "--inh-caps=-setuid,-setgid", "--bounding-set=-setuid,-setgid", "--")
        with Mount(self.src, self.mnt, "-o", "allow_other", prefix=no_setid) as m:
            def create(kind):
                path = os.path.join(self.mnt, "shared", kind)
                return harness.outcome(run_as, *USER, {
                    "file": lambda: os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)),
                    "dir": lambda: os.mkdir(path),
                    "symlink": lambda: os.symlink("target", path),
                    "node": lambda: os.mknod(path, 0o644 | stat.S_IFIFO),
                }[kind])
            for kind in ("file", "dir", "symlink", "node"):
                self.assertEqual(create(kind), ("err", "EPERM"), kind)
            self.assertEqual(os.listdir(shared), [], "created as the daemon, not as the caller")
            # Root needs no switch.
            open(os.path.join(self.mnt, "shared", "by-root"), "w").close()
            self.assertEqual(os.stat(os.path.join(shared, "by-root")).st_uid, 0)
            self.assertEqual(m.unmount(), 0, m.log)

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
                    # Three seconds of racing, and on until the real file was
                    # read once (a slow sanitizer build may need longer).
                    results = set()
                    start = time.monotonic()
                    while time.monotonic() < start + 3 or ("public" not in results and
                                                           time.monotonic() < start + 60):
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

    def non_root_user(self):
        """Sets up what a mount by USER needs: fusermount3 setuid root,
        /dev/fuse open to the user (for the test's duration), a temporary
        account (fusermount3 wants a name), src and mnt owned by the user."""
        fusermount = shutil.which("fusermount3")
        if not fusermount or not os.stat(fusermount).st_mode & stat.S_ISUID:
            self.skipTest("fusermount3 is not installed setuid root")
        old_mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
        if not old_mode & 0o006:
            os.chmod("/dev/fuse", 0o666)
            self.addCleanup(os.chmod, "/dev/fuse", old_mode)
        name = "splicefs-test"
        r = subprocess.run(["useradd", "--no-create-home", "--uid", str(USER[0]), "--user-group", name],
                           capture_output=True, text=True)
        if r.returncode != 0 and "already exists" not in r.stderr:
            self.skipTest(f"cannot create a test user: {r.stderr.strip()}")
        self.addCleanup(subprocess.run, ["userdel", name], capture_output=True)
        for p in (self.src, self.mnt):
            os.chown(p, *USER[:2])

    def mount_as_user(self, env, then=lambda: None, extra=()):
        """Mounts src on mnt as USER; returns (exit code, stderr lines, then())."""
        def mount_and_run():
            r = subprocess.run([harness.ARGS.binary, *extra, self.src, self.mnt], capture_output=True, text=True,
                               env=env)
            if r.returncode != 0:
                return r.returncode, r.stderr.strip().splitlines(), None
            try:
                return 0, [], then()
            finally:
                subprocess.run(["fusermount3", "-u", self.mnt])
        return run_as(*USER, mount_and_run)

    def test_non_root_user_mounts_their_own_directory(self):
        self.non_root_user()
        with open(os.path.join(self.src, "mine"), "w") as f:
            f.write("x")
        env = dict(os.environ, XDG_RUNTIME_DIR=self.tmp)
        self.assertEqual(self.mount_as_user(env, lambda: sorted(os.listdir(self.mnt))), (0, [], ["mine"]))

    def test_non_root_mount_falls_back_from_passthrough_and_says_why(self):
        # Registering a backing file needs CAP_SYS_ADMIN: a user's mount
        # serves every file through the data path, counted, with the reason.
        data = os.urandom(300000)
        with open(os.path.join(self.src, "mine"), "wb") as f:
            f.write(data)
        self.non_root_user()
        os.chown(os.path.join(self.src, "mine"), *USER[:2])
        runtime = os.path.join(self.tmp, "run")  # where the user's stats socket goes
        os.mkdir(runtime, 0o700)
        os.chown(runtime, *USER[:2])
        env = dict(os.environ, XDG_RUNTIME_DIR=runtime)

        def read_and_report():
            with open(os.path.join(self.mnt, "mine"), "rb") as f:
                same = f.read() == data
            r = subprocess.run([harness.ARGS.binary, "stats", "--json", self.mnt], capture_output=True, text=True,
                               env=env)
            if r.returncode != 0:
                return False, r.stderr, r.stdout, False
            m = json.loads(r.stdout)["mounts"][0]
            return same, m["passthrough_state"], m["opens"], m["read"]["replies"] > 0
        code, lines, (same, state, opens, served) = self.mount_as_user(env, read_and_report,
                                                                       ("--passthrough", "auto"))
        self.assertEqual((code, lines, same, served), (0, [], True, True), (state, opens))
        self.assertIn(state, ("off: needs CAP_SYS_ADMIN", "off: the kernel does not offer it"))
        self.assertEqual(opens["passthrough"], 0)
        reason = "not_privileged" if state == "off: needs CAP_SYS_ADMIN" else "kernel_lacks_passthrough"
        self.assertEqual(opens["data_path_reasons"][reason], 1)

    def test_stats_socket_directory_of_another_user_is_refused(self):
        # Without XDG_RUNTIME_DIR the sockets live in /tmp/splicefs-UID, a
        # name anybody can take first; whoever owns it could replace them.
        self.non_root_user()
        env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
        sockets = f"/tmp/splicefs-{USER[0]}"
        shutil.rmtree(sockets, ignore_errors=True)
        self.addCleanup(shutil.rmtree, sockets, True)
        os.mkdir(sockets)
        os.chown(sockets, 65534, 65534)
        os.chmod(sockets, 0o777)
        code, lines, _ = self.mount_as_user(env)
        self.assertEqual(code, 32)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(f"{sockets} belongs to uid 65534", lines[0])
        self.assertFalse(is_mounted(self.mnt))
        # Once it is gone the mount makes it, private to the user.
        os.rmdir(sockets)
        code, lines, st = self.mount_as_user(env, lambda: tuple(os.lstat(sockets))[:6])
        self.assertEqual((code, lines), (0, []))
        self.assertEqual((stat.S_IMODE(st[0]), st[4]), (0o700, USER[0]))

    def test_stats_believes_only_the_mounts_owner(self):
        # A socket in the path `stats` tries, served by another user, must
        # not be taken for the mount's daemon.
        import socket as socketlib
        with Mount(self.src, self.mnt):
            dev = os.stat(self.mnt).st_dev
            fake_dir = "/run/user/0/splicefs"
            fake = f"{fake_dir}/{os.major(dev)}:{os.minor(dev)}.sock"
            real = f"/run/splicefs/{os.major(dev)}:{os.minor(dev)}.sock"
            os.makedirs(fake_dir, exist_ok=True)
            self.addCleanup(shutil.rmtree, "/run/user/0/splicefs", True)
            os.chmod(fake_dir, 0o777)
            ready = threading.Event()

            def serve_fake():
                sock = socketlib.socket(socketlib.AF_UNIX)
                sock.bind(fake)
                os.chmod(fake, 0o777)
                sock.listen(1)
                ready.set()
                conn, _ = sock.accept()
                try:
                    conn.sendall(b"read.bytes=999999\n")
                except OSError:
                    pass  # the client hung up at once, as it should
                conn.close()
                sock.close()
            # The real socket is tried first: hide it for the test.
            os.rename(real, real + ".hidden")
            self.addCleanup(os.rename, real + ".hidden", real)
            server = threading.Thread(target=lambda: run_as(65534, 65534, [], lambda: serve_fake() or 0))
            server.start()
            try:
                harness.wait_until(lambda: os.path.exists(fake), 10, "the fake socket")
                r = subprocess.run([harness.ARGS.binary, "stats", "--json", self.mnt], capture_output=True, text=True)
            finally:
                server.join(10)
            self.assertEqual(r.returncode, 4, r.stdout)
            self.assertIn("served by uid 65534", r.stderr)

    def test_stats_at_the_daemons_fd_limit_does_not_spin(self):
        # At its fd limit the daemon cannot accept a stats client; the
        # client must get an answer (or none) without the daemon spinning.
        with open(os.path.join(self.src, "f"), "wb") as f:
            f.write(b"x")
        with Mount(self.src, self.mnt, fd_limit=64) as m:
            fds = harness.open_until_emfile(os.path.join(self.mnt, "f"))
            try:
                self.assertLess(len(fds), 200, "the daemon never reached its fd limit")
                r = subprocess.run([harness.ARGS.binary, "stats", self.mnt], capture_output=True, text=True,
                                   timeout=30)
                self.assertEqual(r.returncode, 4, r.stdout)

                def cpu_ticks():
                    with open(f"/proc/{m.pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    return int(fields[11]) + int(fields[12])
                before = cpu_ticks()
                time.sleep(1)  # a measurement window, not a wait for an event
                spent = (cpu_ticks() - before) / os.sysconf("SC_CLK_TCK")
                self.assertLess(spent, 0.2, "the daemon spins on its listening socket")
            finally:
                for fd in fds:
                    os.close(fd)
            # With fds free again, stats answers.
            self.assertEqual(subprocess.run([harness.ARGS.binary, "stats", self.mnt], capture_output=True).returncode, 0)

if __name__ == "__main__":
    harness.main()
