#!/usr/bin/env python3
"""The cost of a sync on this disk, the floor under every durable commit.

python3 benches/fsync_floor.py   (writes a 64 MiB scratch file under target/)
"""
import os
import statistics
import time

path = os.path.join(os.path.dirname(__file__), "..", "target", "fsync-floor.tmp")
os.makedirs(os.path.dirname(path), exist_ok=True)
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
try:
    os.posix_fallocate(fd, 0, 64 << 20)
    for off in range(0, 64 << 20, 1 << 20):  # written once, so later syncs convert no extents
        os.pwrite(fd, b"\1" * (1 << 20), off)
    os.fsync(fd)
    for pages in (1, 2, 4, 8):
        times = []
        for i in range(300):
            t = time.perf_counter()
            for j in range(pages):
                os.pwrite(fd, b"x" * 4096, ((i * pages + j) * 104729 % 16384) * 4096)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
        print(f"{pages} scattered 4 KiB page(s) + fdatasync: median {statistics.median(times) * 1e6:.0f} us")
finally:
    os.close(fd)
    os.unlink(path)
