#!/usr/bin/env python3
"""Ways of reading a whole file into the page cache through a mapping, from a cold cache.

    python3 benches/read_in.py FILE [--rounds 3]

For each round and way (alternating), FILE is dropped from the page cache, then a fresh process
maps it read-only and reads it in, 2 MiB at a time:

- `willneed`: MADV_WILLNEED two steps ahead and MADV_POPULATE_READ of each step (as pheap's
  automatic warm-up reads a heap);
- `huge`: a load per 4 KiB page (faults) under MADV_HUGEPAGE;
- `hugerandom`: the same under MADV_HUGEPAGE and MADV_RANDOM, so each fault reads its own 2 MiB
  (as `Heap::prefetch` reads a sealed heap: DESIGN §4.6a).

Prints each run (the time, and how much of the file the process mapped with 2 MiB page-table
entries: the page cache took it in 2 MiB folios) and the medians.
"""
import argparse
import os
import statistics
import subprocess
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))
from bench import evict  # noqa: E402  (a sync, then POSIX_FADV_DONTNEED)

CHILD = r"""
import mmap, os, sys, time
MADV_POPULATE_READ = 22  # linux/mman.h; Python 3.11's mmap does not name it
STEP = 2 << 20
path, way = sys.argv[1], sys.argv[2]
with open(path, "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
n = len(m)
t = time.perf_counter()
if way == "willneed":
    for at in range(0, n, STEP):
        if at + 2 * STEP < n:
            m.madvise(mmap.MADV_WILLNEED, at + 2 * STEP, min(STEP, n - at - 2 * STEP))
        m.madvise(MADV_POPULATE_READ, at, min(STEP, n - at))
else:
    m.madvise(mmap.MADV_HUGEPAGE)
    if way == "hugerandom":
        m.madvise(mmap.MADV_RANDOM)
    s = 0
    for at in range(0, n, 4096):
        s += m[at]
elapsed = time.perf_counter() - t
pmd = next(l for l in open("/proc/self/smaps_rollup") if l.startswith("FilePmdMapped")).split()[1]
print(f"{elapsed * 1e3:.1f} {int(pmd) >> 10}")
"""

WAYS = ["willneed", "huge", "hugerandom"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    size = os.path.getsize(args.file) >> 20
    times = defaultdict(list)
    for r in range(args.rounds):
        for way in WAYS:
            evict(args.file)
            out = subprocess.run([sys.executable, "-c", CHILD, args.file, way], check=True,
                                 capture_output=True, text=True).stdout.split()
            ms, pmd = float(out[0]), int(out[1])
            times[way].append(ms)
            print(f"round {r} {way:>10}: {ms:7.1f} ms, {pmd} of {size} MiB mapped in 2 MiB")
    for way in WAYS:
        print(f"median {way:>10}: {statistics.median(times[way]):7.1f} ms")


if __name__ == "__main__":
    main()
