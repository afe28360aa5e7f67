"""What a page fault on a heap's mapping costs, by how its pages entered the page cache.

    python benches/python/faults.py FILE [--evict-then read|huge] [--pages N] [--rounds R]
    python benches/python/faults.py --writeback DIR

The first form maps FILE read-only in a fresh child process per round and times the first touch
of N random pages (each a minor fault when FILE is in the page cache), printing the median. With
--evict-then, FILE is first written back and dropped from the page cache, then read back in:
`read` with read(2) (the kernel's readahead: large folios), `huge` by touching a mapping advised
MADV_HUGEPAGE (2 MiB folios where the file system has them). Without it, FILE is measured as it
is (a heap as its writer left it: 4 KiB folios, stored to through the mapping).

The second form shows what large folios cost a writer that stores through a mapping: a 2-page
store and fdatasync on a file written with write(2) (large folios), then on one written through
a mapping (4 KiB folios); it prints the KiB the device wrote for each (/sys/block/*/stat).
"""

import mmap
import os
import random
import statistics
import subprocess
import sys
import time

MADV_POPULATE_READ = 22


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def read_in(path, how):
    evict(path)
    if how == "read":
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass
    else:
        with open(path, "rb") as f:
            m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            m.madvise(mmap.MADV_HUGEPAGE)
            m.madvise(MADV_POPULATE_READ)
            m.close()


def child(path, pages, seed):
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        rng = random.Random(seed)
        times = []
        for _ in range(pages):
            off = rng.randrange(size // 4096) * 4096
            t = time.perf_counter_ns()
            m[off]
            times.append(time.perf_counter_ns() - t)
    print(statistics.median(times))


def faults(path, how, pages, rounds):
    if how:
        read_in(path, how)
    got = []
    for r in range(rounds):
        out = subprocess.run(
            [sys.executable, __file__, "--child", path, str(pages), str(r)],
            check=True, capture_output=True, text=True,
        ).stdout
        got.append(float(out))
    state = {None: "as it is", "read": "read back with read(2)", "huge": "read back under MADV_HUGEPAGE"}[how]
    print(f"{path} ({state}): first touch of a cached page, median {statistics.median(got) / 1000:.2f} us "
          f"(rounds: {', '.join(f'{g / 1000:.2f}' for g in got)})")


def device_kib_written(path):
    dev = os.stat(path).st_dev
    name = os.path.basename(os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"))
    block = f"/sys/block/{name}/stat" if os.path.exists(f"/sys/block/{name}/stat") else \
        f"/sys/class/block/{name}/stat"
    with open(block) as f:
        return int(f.read().split()[6]) // 2


def writeback(directory):
    size = 8 << 20
    for how in ("write(2)", "stores through a mapping"):
        path = os.path.join(directory, "writeback.bin")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        if how == "write(2)":
            os.pwrite(fd, b"\1" * size, 0)
        else:
            os.ftruncate(fd, size)
            m = mmap.mmap(fd, size)
            m.madvise(mmap.MADV_RANDOM)
            m[:] = b"\1" * size
            m.close()
        os.fsync(fd)
        m = mmap.mmap(fd, size)
        written = []
        for k in range(3):
            before = device_kib_written(path)
            m[(100 + 512 * k) * 4096] = 7
            m[(101 + 512 * k) * 4096] = 7
            os.fdatasync(fd)
            written.append(device_kib_written(path) - before)
        m.close()
        os.close(fd)
        os.unlink(path)
        print(f"file written by {how}: a store to 2 pages + fdatasync wrote {written} KiB")


def main(argv):
    if argv[0] == "--child":
        return child(argv[1], int(argv[2]), int(argv[3]))
    if argv[0] == "--writeback":
        return writeback(argv[1])
    path, how, pages, rounds = argv[0], None, 20, 7
    it = iter(argv[1:])
    for a in it:
        if a == "--evict-then":
            how = next(it)
        elif a == "--pages":
            pages = int(next(it))
        elif a == "--rounds":
            rounds = int(next(it))
        else:
            sys.exit(__doc__)
    faults(path, how, pages, rounds)


if __name__ == "__main__":
    main(sys.argv[1:] or ["--help"])
