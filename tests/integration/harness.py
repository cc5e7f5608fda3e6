"""Shared pieces of the integration tests: mounting splicefs for real and
comparing what happens through the mount with what happens natively.

Every test file is a script run by ctest as
    python3 test_x.py --binary PATH/splicefs --splice MODE
It exits 77 (ctest's skip code), saying why, when FUSE cannot be used."""

import argparse
import contextlib
import errno
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

SKIP = 77
ARGS = None  # parsed command line: binary, splice, cache, passthrough, io_uring
ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"


def parse_args():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--splice", default="read")
    parser.add_argument("--cache", default="auto", help="cache policy, unless a mount names its own")
    parser.add_argument("--passthrough", default="off", help="passthrough mode, unless a mount names its own")
    parser.add_argument("--io-uring", action="store_true",
                        help="every mount with --io-uring, checked to serve by io_uring")
    ARGS, rest = parser.parse_known_args()
    if ARGS.io_uring:
        allow_fuse_over_io_uring()
    return rest


def set_enable_uring(value):
    with open(ENABLE_URING, "w") as f:
        f.write(value)


def allow_fuse_over_io_uring():
    """Sets the fuse module's enable_uring for this test run, and back to what
    it was at exit (ctest runs the io_uring tests one at a time:
    RESOURCE_LOCK fuse_enable_uring). Skips where the kernel has no such
    switch (Linux before 6.14, or built without CONFIG_FUSE_IO_URING)."""
    import atexit
    if not os.path.exists(ENABLE_URING):
        skip_whole_file(f"this kernel has no FUSE over io_uring ({ENABLE_URING} is missing)")
    with open(ENABLE_URING) as f:
        before = f.read().strip()
    try:
        set_enable_uring("1")
    except OSError as e:
        skip_whole_file(f"cannot enable FUSE over io_uring here: {ENABLE_URING}: {e.strerror}")
    atexit.register(set_enable_uring, before)


def skip_whole_file(reason):
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP)


def require_fuse(root=True):
    if root and os.geteuid() != 0:
        skip_whole_file("these tests mount as root and run as uid %d" % os.geteuid())
    if not os.path.exists("/dev/fuse") or not os.access("/dev/fuse", os.R_OK | os.W_OK):
        skip_whole_file("/dev/fuse is missing or not usable here")


def mount_entry(path, pid="self"):
    """The /proc/PID/mountinfo entry whose mountpoint is exactly path (in
    that process's mount namespace)."""
    found = None
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            mp = fields[4].encode().decode("unicode_escape")
            if mp == path:
                found = {"mountpoint": mp, "fstype": fields[sep + 1], "source": fields[sep + 2],
                         "options": fields[5], "super": fields[sep + 3], "dev": fields[2]}
    return found


def daemon_fds(pid):
    """The daemon's open fds other than pipes: each worker makes its splice
    pipe on first use and keeps it, so pipes say nothing about leaks."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
                count += 1
        except FileNotFoundError:
            pass
    return count


def drop_unused_dentries():
    """Makes the kernel let go of every unused dentry and inode; their
    FORGETs reach the daemon asynchronously."""
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")


def wait_for_inodes(mount, count, timeout=30):
    """Drops unused dentries and waits until the daemon holds at most
    `count` inodes (by its stats)."""
    drop_unused_dentries()
    deadline = time.monotonic() + timeout
    while mount.stats()["inodes"] > count:
        if time.monotonic() > deadline:
            raise AssertionError(f"the daemon still holds {mount.stats()['inodes']} inodes")
        time.sleep(0.05)


def wait_for_fds_to_settle(pid, limit, timeout=20):
    """Drops unused dentries and waits until the daemon holds at most
    `limit` fds besides pipes. Returns the last count."""
    drop_unused_dentries()
    deadline = time.monotonic() + timeout
    while True:
        count = daemon_fds(pid)
        if count <= limit or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def wchans(pid):
    """Where each thread of pid sleeps in the kernel, for failure messages."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/wchan") as f:
            out.append(f.read())
    return out


def threads_blocked_in_fuse(pid):
    """Threads of pid sleeping on a FUSE server that does not answer: in a
    FUSE request, in direct I/O waiting for its requests, or on a page that
    such a request will fill or write."""
    count = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                wchan = f.read()
        except OSError:
            continue
        if wchan in ("request_wait_answer", "fuse_wait_on_page_writeback", "fuse_direct_IO") or \
                wchan.startswith("folio_wait"):
            count += 1
    return count


def wait_until(condition, timeout, what, details=lambda: ""):
    """Polls condition() (an event the test cannot be told of otherwise)
    until it holds; fails naming `what` (and details()) after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {details()}")
        time.sleep(0.02)


def process_stacks(pid):
    """Where every thread of a stuck process is, in user space (gdb) and in
    the kernel (/proc/PID/task/*/stack): what a hang report needs."""
    out = []
    try:
        for tid in sorted(os.listdir(f"/proc/{pid}/task")):
            with open(f"/proc/{pid}/task/{tid}/stack") as f:
                out.append(f"kernel stack of thread {tid}:\n{f.read()}")
    except OSError as e:
        out.append(f"kernel stacks: {e}")
    if shutil.which("gdb"):
        try:
            r = subprocess.run(["gdb", "-batch", "-p", str(pid), "-ex", "thread apply all bt"],
                               capture_output=True, text=True, timeout=60)
            out.append(r.stdout[-20000:])
        except subprocess.TimeoutExpired:
            out.append("gdb did not finish within 60 s")
    return "\n".join(out)


def losetup(path, *extra):
    """A loop device over path; skips the test (saying why) when there is none."""
    r = subprocess.run(["losetup", "-f", "--show", *extra, path], capture_output=True, text=True)
    if r.returncode != 0:
        raise unittest.SkipTest(f"no loop device available: {r.stderr.strip()}")
    return r.stdout.strip()


def detach(device):
    subprocess.run(["losetup", "-d", device], capture_output=True)


def is_mounted(path, pid="self"):
    return mount_entry(path, pid) is not None


class Mount:
    """A splicefs mount in the foreground, ready once the daemon logs
    'mounted'; unmounted and waited for on exit, also when a test fails."""

    def __init__(self, source, mountpoint, *extra, splice=None, cache=None, env=None, foreground=True,
                 fd_limit=None, prefix=()):
        self.fd_limit = fd_limit  # RLIMIT_NOFILE (soft and hard) for the daemon
        self.prefix = list(prefix)  # runs the daemon through this (setpriv ...)
        self.source = source
        self.mountpoint = mountpoint
        self.extra = list(extra)
        self.splice = splice if splice is not None else ARGS.splice
        # A mount that names its own --cache keeps it; the others follow the
        # policy the test run is for.
        if "--cache" not in self.extra:
            self.extra = ["--cache", cache if cache is not None else ARGS.cache, *self.extra]
        if "--passthrough" not in self.extra and ARGS.passthrough != "off":  # off: the default
            self.extra = ["--passthrough", ARGS.passthrough, *self.extra]
        if ARGS.io_uring and "--io-uring" not in self.extra:
            self.extra = ["--io-uring", *self.extra]
        self.env = env
        self.proc = None
        self.log = ""

    def command(self):
        return [*self.prefix, ARGS.binary, "-f", "--log-level", "info", "--splice", self.splice, *self.extra,
                self.source, self.mountpoint]

    def __enter__(self):
        preexec = None
        if self.fd_limit:
            import resource
            limit = min(self.fd_limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
            preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))  # noqa: E731
        self.proc = subprocess.Popen(self.command(), stderr=subprocess.PIPE, env=self.env, preexec_fn=preexec)
        # Raw reads on the fd: a buffered readline() after select() can pull
        # two lines into Python's buffer and then wait on an empty pipe for
        # the second one (the "mounted" line after a warning), until timeout.
        fd = self.proc.stderr.fileno()
        output = b""
        deadline = time.monotonic() + 30
        # The whole "mounted ..." line: it says what serves the mount.
        while b"mounted " not in output or b"\n" not in output[output.index(b"mounted "):]:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                stacks = process_stacks(self.proc.pid)
                self.kill()
                raise RuntimeError(f"splicefs did not report the mount within 30 s: {self.log}\n{stacks}")
            chunk = os.read(fd, 65536)
            if not chunk:
                code = self.proc.wait()
                self.kill()  # a daemon that died after mounting leaves no mount behind
                raise RuntimeError(f"splicefs exited with {code} before mounting: {self.log}")
            output += chunk
            self.log = output.decode(errors="replace")
        # Keep draining stderr so that the daemon never blocks on a full pipe.
        import threading
        self._drain = threading.Thread(target=self._read_rest, args=(output,), daemon=True)
        self._drain.start()
        if ARGS.io_uring:
            # A run for io_uring that served by /dev/fuse would prove nothing.
            transport = self.stats()["transport"]
            if not transport.startswith("io_uring"):
                self.kill()
                raise RuntimeError(f"this run is for FUSE over io_uring, but the mount is served by "
                                   f"{transport}: {self.log}")
        return self

    def _read_rest(self, output):
        with self.proc.stderr:
            while chunk := os.read(self.proc.stderr.fileno(), 65536):
                output += chunk
                self.log = output.decode(errors="replace")

    @property
    def pid(self):
        return self.proc.pid

    def unmount(self, timeout=30):
        """fusermount3 -u, then wait for the daemon; returns its exit code."""
        if self.proc is None:
            return None
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", self.mountpoint], check=False, capture_output=True)
        return self.wait(timeout)

    def wait(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stacks = process_stacks(self.proc.pid)
            self.kill()
            raise RuntimeError(f"splicefs did not exit within {timeout} s: {self.log}\n{stacks}") from None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc and self.proc.poll() is not None and not getattr(self, "_drain", None):
            self.proc.stderr.close()
        if is_mounted(self.mountpoint):
            subprocess.run(["umount", "-l", self.mountpoint], check=False, capture_output=True)

    def __exit__(self, *exc):
        try:
            if self.proc and self.proc.poll() is None:
                self.unmount()
        finally:
            self.kill()
        return False

    def stats(self):
        out = subprocess.run([ARGS.binary, "stats", "--json", self.mountpoint], capture_output=True, text=True,
                             check=True).stdout
        return json.loads(out)["mounts"][0]


class MountedTestCase(unittest.TestCase):
    """A source directory mounted at a mountpoint, plus a native reference
    directory that receives the same operations."""

    mount_args = ()
    mount_splice = None  # the run's splice mode unless a test case names one

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="splicefs-test-")
        # A cleanup, not tearDown: unittest skips tearDown when setUp fails
        # (a mount that did not come up), and the directory would stay.
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        os.chmod(self.tmp, 0o755)
        self.src = os.path.join(self.tmp, "src")
        self.mnt = os.path.join(self.tmp, "mnt")
        self.ref = os.path.join(self.tmp, "ref")
        for d in (self.src, self.mnt, self.ref):
            os.mkdir(d)
            os.chmod(d, 0o755)
        self.mount = Mount(self.src, self.mnt, *self.mount_args, splice=self.mount_splice)
        self.mount.__enter__()

    def tearDown(self):
        try:
            code = self.mount.unmount()
            self.assertEqual(code, 0, f"daemon exit code; log:\n{self.mount.log}")
        finally:
            self.mount.kill()

    def m(self, *parts):
        return os.path.join(self.mnt, *parts)

    def r(self, *parts):
        return os.path.join(self.ref, *parts)


# A root daemon without CAP_DAC_READ_SEARCH cannot open inodes by file
# handle, as in a container: it identifies them by name instead.
WITHOUT_FILE_HANDLES = ("setpriv", "--inh-caps=-dac_read_search", "--bounding-set=-dac_read_search", "--")


def write_file(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def open_until_emfile(path, most=200, flags=os.O_RDONLY):
    """Opens path again and again until the daemon runs out of fds (EMFILE)
    or `most` opens succeed; returns the fds."""
    fds = []
    while len(fds) < most:
        try:
            fds.append(os.open(path, flags))
        except OSError as e:
            if e.errno != errno.EMFILE:
                for fd in fds:
                    os.close(fd)
                raise
            break
    return fds


def outcome(fn, *args, **kwargs):
    """('ok', result) or ('err', errno name): what comparing needs."""
    try:
        return ("ok", fn(*args, **kwargs))
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


STAT_FIELDS = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")


def stat_summary(st):
    return {f: getattr(st, f) for f in STAT_FIELDS}


def tree_snapshot(root):
    """Every entry under root with type, mode, owner, size, content hash and
    link target: two trees are equal when their snapshots are."""
    import hashlib
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            entry = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}
            if os.path.islink(path):
                entry["target"] = os.readlink(path)
            elif os.path.isfile(path):
                entry["size"] = st.st_size
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                entry["sha256"] = h.hexdigest()
            snap[rel] = entry
    return snap


def run_as(uid, gid, groups, fn):
    """Runs fn() in a forked child with the given ids; returns its result
    (a picklable value) or raises what it raised as OSError(errno)."""
    import pickle
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            result = ("ok", fn())
        except OSError as e:
            result = ("err", e.errno)
        except BaseException as e:  # noqa: BLE001 - report everything to the parent
            result = ("exc", repr(e))
        os.write(w, pickle.dumps(result))
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    if kind == "err":
        raise OSError(value, os.strerror(value))
    if kind == "exc":
        raise AssertionError(f"child raised {value}")
    return value


def main():
    rest = parse_args()
    require_fuse()
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
