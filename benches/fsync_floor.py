#!/usr/bin/env python3
"""The cost of a sync on this disk, the floor under every durable commit.

python3 benches/fsync_floor.py   (writes a 64 MiB scratch file under target/)

Writes 1 to 32 pages of 4 KiB with pwrite, scattered over the file or side by side, and syncs
them with fdatasync; prints the median time of a sync, its CPU time, and the bytes the kernel
counted as written per sync (/proc/self/io), which shows what was really written back.

The file is filled with 4 KiB writes: the page cache then holds it in 4 KiB folios, as it holds
a heap's pages (written through its mapping, with MADV_RANDOM, or by small writes). Filled with
1 MiB writes instead, the kernel keeps 1 MiB folios, and a 4 KiB write dirties, and a sync
writes, the whole folio (256 pages): the version of this script before 2026-12-07 did that, and
its "one page" was 1 MiB.
"""
import os
import statistics
import time

PAGE = 4096
PAGES = 16384  # 64 MiB


def written_bytes():
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


path = os.path.join(os.path.dirname(__file__), "..", "target", "fsync-floor.tmp")
os.makedirs(os.path.dirname(path), exist_ok=True)
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
try:
    for p in range(PAGES):  # written once, so later syncs allocate no blocks
        os.pwrite(fd, b"\1" * PAGE, p * PAGE)
    os.fsync(fd)
    for layout in ("scattered", "side by side"):
        for pages in (1, 2, 4, 8, 16, 32):
            times, cpus = [], []
            before = written_bytes()
            for i in range(300):
                if layout == "scattered":
                    offs = [((i * pages + j) * 104729 % PAGES) * PAGE for j in range(pages)]
                else:
                    first = (i * 104729 * pages) % (PAGES - pages)
                    offs = [(first + j) * PAGE for j in range(pages)]
                t, c = time.perf_counter(), time.thread_time()
                for off in offs:
                    os.pwrite(fd, b"x" * PAGE, off)
                os.fdatasync(fd)
                cpus.append(time.thread_time() - c)
                times.append(time.perf_counter() - t)
            per_sync = (written_bytes() - before) / 300 / PAGE
            print(
                f"{pages:2} page(s) {layout:12} + fdatasync: median {statistics.median(times) * 1e6:4.0f} us"
                f" (CPU {statistics.median(cpus) * 1e6:3.0f} us), {per_sync:.0f} pages written per sync"
            )
finally:
    os.close(fd)
    os.unlink(path)
