"""Block devices and disk images as SOURCE: one file, byte-exact in both
directions, spliced, and usable as a filesystem image."""

import hashlib
import os
import random
import shutil
import subprocess
import tempfile
import unittest

import harness
from harness import Mount, detach, losetup

MIB = 1 << 20


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            h.update(chunk)
    return h.hexdigest()


class SingleFile(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="splicefs-single-")
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.mnt)
        self.image = os.path.join(self.tmp, "disk.img")
        with open(self.image, "wb") as f:
            f.write(os.urandom(32 * MIB))

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def random_writes(self, mounted_file, model, count=1000):
        """Writes at random offsets and lengths through the mount, applied to
        `model` (a bytearray of the expected content) as well."""
        seed = int(os.environ.get("SPLICEFS_SEED", random.randrange(1 << 32)))
        print(f"random writes seed {seed} (replay: SPLICEFS_SEED={seed})", flush=True)
        rng = random.Random(seed)
        fd = os.open(mounted_file, os.O_WRONLY)
        try:
            for _ in range(count):
                length = rng.choice([1, 511, 4096, 65536, rng.randrange(1, 300000)])
                offset = rng.randrange(0, len(model) - length)
                data = rng.randbytes(length)
                self.assertEqual(os.pwrite(fd, data, offset), length)
                model[offset:offset + length] = data
            os.fsync(fd)
        finally:
            os.close(fd)

    def check_file_source(self, source, reference):
        """Mount source (a device or an image) on a directory; check content,
        random writes, splice share and that nothing else can be created."""
        name = os.path.basename(source)
        with Mount(source, self.mnt, "--max-reply", "1M") as m:
            self.assertEqual(os.listdir(self.mnt), [name])
            exposed = os.path.join(self.mnt, name)
            self.assertEqual(os.path.getsize(exposed), 32 * MIB)
            self.assertEqual(sha256_of(exposed), sha256_of(reference))
            with self.assertRaises(OSError):
                open(os.path.join(self.mnt, "other"), "w")
            with self.assertRaises(OSError):
                os.truncate(exposed, 64 * MIB) if source.startswith("/dev/") else os.unlink(exposed)
            with open(reference, "rb") as f:
                model = bytearray(f.read())
            self.random_writes(exposed, model)
            read = m.stats()["read"]
            if harness.ARGS.splice in ("read", "all"):
                self.assertGreaterEqual(read["spliced_bytes"], 0.99 * read["bytes"], read)
        # What was written through the mount is on the source, byte for byte.
        with open(source, "rb") as f:
            self.assertTrue(f.read() == model, "the source differs from the writes made through the mount")

    def test_regular_file_source_on_a_directory(self):
        self.check_file_source(self.image, self.image)

    def test_regular_file_source_on_a_file(self):
        target = os.path.join(self.tmp, "target")
        open(target, "w").close()
        with Mount(self.image, target):
            self.assertEqual(os.path.getsize(target), 32 * MIB)
            self.assertEqual(sha256_of(target), sha256_of(self.image))

    def test_block_device_source(self):
        device = losetup(self.image)
        try:
            self.check_file_source(device, device)
        finally:
            detach(device)

    def test_read_only_device_gives_read_only_file(self):
        device = losetup(self.image, "--read-only")
        try:
            with Mount(device, self.mnt):
                with self.assertRaises(OSError) as ctx:
                    open(os.path.join(self.mnt, os.path.basename(device)), "r+b")
                self.assertEqual(ctx.exception.errno, 30)  # EROFS
        finally:
            detach(device)

    def test_device_errors_reach_the_reader_as_eio(self):
        # A loop device over a file on another FUSE mount whose daemon is then
        # killed: the device fails every read with EIO.
        inner = os.path.join(self.tmp, "inner")
        os.mkdir(inner)
        os.rename(self.image, os.path.join(self.tmp, "src-img"))
        src_dir = os.path.join(self.tmp, "srcdir")
        os.mkdir(src_dir)
        os.rename(os.path.join(self.tmp, "src-img"), os.path.join(src_dir, "disk.img"))
        # The inner mount must serve reads itself: with passthrough the
        # kernel would read its source directly, daemon or not.
        inner_mount = Mount(src_dir, inner, "--passthrough", "off")
        device = None
        with inner_mount:
            device = losetup(os.path.join(inner, "disk.img"))
            try:
                with Mount(device, self.mnt) as m:
                    exposed = os.path.join(self.mnt, os.path.basename(device))
                    with open(exposed, "rb") as f:
                        self.assertEqual(len(f.read(MIB)), MIB)
                    inner_mount.proc.kill()
                    inner_mount.proc.wait()
                    subprocess.run(["blockdev", "--flushbufs", device], capture_output=True)
                    for _ in range(2):  # the daemon keeps serving after an error
                        with self.assertRaises(OSError) as ctx:
                            with open(exposed, "rb") as f:
                                f.seek(16 * MIB)
                                f.read(MIB)
                        self.assertEqual(ctx.exception.errno, 5)  # EIO
                    self.assertIsNone(m.proc.poll())
                    stats = m.stats()
                    if stats["opens"]["passthrough"] == 0:  # else the kernel said EIO itself
                        self.assertGreater(stats["read"]["copy_reasons"]["error"], 0)
                    self.assertEqual(m.unmount(), 0, m.log)
            finally:
                detach(device)

    def test_filesystem_image_is_usable(self):
        if shutil.which("mkfs.ext4") is None:
            self.skipTest("mkfs.ext4 is not installed")
        device = losetup(self.image)
        second = None
        fsmnt = os.path.join(self.tmp, "fs")
        os.mkdir(fsmnt)
        try:
            subprocess.run(["mkfs.ext4", "-q", "-F", device], check=True)
            subprocess.run(["mount", device, fsmnt], check=True)
            payload = os.urandom(3 * MIB)
            with open(os.path.join(fsmnt, "payload"), "wb") as f:
                f.write(payload)
            subprocess.run(["umount", fsmnt], check=True)
            with Mount(device, self.mnt):
                second = losetup(os.path.join(self.mnt, os.path.basename(device)), "--read-only")
                subprocess.run(["mount", "-o", "ro", second, fsmnt], check=True)
                try:
                    with open(os.path.join(fsmnt, "payload"), "rb") as f:
                        self.assertEqual(f.read(), payload)
                finally:
                    subprocess.run(["umount", fsmnt])
                    detach(second)
        finally:
            subprocess.run(["umount", fsmnt], capture_output=True)
            detach(device)


if __name__ == "__main__":
    harness.main()
