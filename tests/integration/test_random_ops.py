"""A randomized sequence of file operations through the mount, checked
byte for byte against an in-memory model. The seed is printed; replay with
SPLICEFS_SEED=N."""

import os
import random
import unittest

import harness

OPS = 10000


class RandomOps(harness.MountedTestCase):
    def test_random_sequence_matches_model(self):
        seed = int(os.environ.get("SPLICEFS_SEED", random.randrange(1 << 32)))
        print(f"seed {seed} (replay: SPLICEFS_SEED={seed})", flush=True)
        rng = random.Random(seed)
        model = {}  # name -> bytearray
        names = [f"file{i}" for i in range(12)]
        fds = {}

        def fd_for(name):
            if name not in fds:
                fds[name] = os.open(self.m(name), os.O_RDWR)
            return fds[name]

        def close(name):
            fd = fds.pop(name, None)
            if fd is not None:
                os.close(fd)

        try:
            for step in range(OPS):
                name = rng.choice(names)
                op = rng.choices(["create", "write", "read", "truncate", "rename", "unlink", "append", "fsync",
                                  "stat", "reopen"], weights=[5, 30, 25, 8, 5, 4, 8, 3, 8, 4])[0]
                context = f"step {step} {op} {name} (seed {seed})"
                if name not in model and op != "create":
                    op = "create"
                if op == "create":
                    fd = os.open(self.m(name), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
                    close(name)
                    fds[name] = fd
                    model[name] = bytearray()
                elif op == "write":
                    size = rng.choice([1, 100, 4096, 8192, 65536, 300000, rng.randrange(1, 1 << 20)])
                    offset = rng.randrange(0, len(model[name]) + 100000)
                    data = rng.randbytes(size)
                    self.assertEqual(os.pwrite(fd_for(name), data, offset), size, context)
                    buf = model[name]
                    if offset > len(buf):
                        buf.extend(b"\0" * (offset - len(buf)))
                    buf[offset:offset + size] = data
                elif op == "append":
                    data = rng.randbytes(rng.randrange(1, 20000))
                    fd = os.open(self.m(name), os.O_WRONLY | os.O_APPEND)
                    try:
                        os.write(fd, data)
                    finally:
                        os.close(fd)
                    model[name].extend(data)
                elif op == "read":
                    buf = model[name]
                    offset = rng.randrange(0, len(buf) + 10)
                    size = rng.choice([1, 4096, 131072, 1 << 20, rng.randrange(1, 1 << 21)])
                    self.assertEqual(os.pread(fd_for(name), size, offset), bytes(buf[offset:offset + size]), context)
                elif op == "truncate":
                    size = rng.randrange(0, len(model[name]) + 50000)
                    os.ftruncate(fd_for(name), size)
                    buf = model[name]
                    del buf[size:]
                    buf.extend(b"\0" * (size - len(buf)))
                elif op == "rename":
                    target = rng.choice(names)
                    close(name)
                    close(target)
                    os.rename(self.m(name), self.m(target))
                    if target != name:
                        model[target] = model.pop(name)
                elif op == "unlink":
                    close(name)
                    os.unlink(self.m(name))
                    del model[name]
                elif op == "fsync":
                    os.fsync(fd_for(name))
                elif op == "stat":
                    self.assertEqual(os.stat(self.m(name)).st_size, len(model[name]), context)
                elif op == "reopen":
                    close(name)
        finally:
            for name in list(fds):
                close(name)
        self.assertEqual(sorted(os.listdir(self.mnt)), sorted(model))
        self.assertEqual(sorted(os.listdir(self.src)), sorted(model))
        for name, data in model.items():
            with open(os.path.join(self.src, name), "rb") as f:
                self.assertEqual(f.read(), bytes(data), f"source file {name} (seed {seed})")
            with open(self.m(name), "rb") as f:
                self.assertEqual(f.read(), bytes(data), f"mounted file {name} (seed {seed})")


if __name__ == "__main__":
    harness.main()
