#!/usr/bin/env python3
"""A sealed heap read by fresh processes, cold and warm, for builds side by side (A/B).

    python3 benches/sealed_reads.py --heap SEALED --builds BASE_TARGET,NEW_TARGET [--rounds 3]

Each BUILD is a cargo target directory holding `examples/profile`
(`cargo build --release --example profile`). SEALED is a sealed heap of the profile's keys
(`cargo run --release --example profile -- load HEAP`, then `pheap seal HEAP SEALED`). For each
round and build, alternating so that the machine's drift falls on all of them, four fresh
processes, each opening SEALED read-only and making 100,000 gets of random keys:

- `cold`: the file dropped from the page cache first; the automatic warm-up reads it in while
  the gets run;
- `warm`: right after, the file as the cold run left it in the page cache;
- `prefetch`: dropped again, then `Heap::prefetch` (timed), then the gets (timed apart:
  `gets after prefetch`);
- `after`: right after, as the prefetch left it.

Prints every run and the medians per build; `pmd` is how much of the file the process mapped
with 2 MiB page-table entries (the page cache held it in 2 MiB folios).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))
from bench import evict  # noqa: E402  (a sync, then POSIX_FADV_DONTNEED)


def run(build, mode, heap):
    out = subprocess.run([os.path.join(build, "examples", "profile"), mode, heap],
                         check=True, capture_output=True, text=True).stdout
    prefetch = re.search(r"prefetch ([0-9.]+) ms", out)
    gets = float(re.search(r"gets ([0-9.]+) ms", out).group(1))
    pmd = int(re.search(r"FilePmdMapped: ([0-9]+) kB", out).group(1)) >> 10
    return (float(prefetch.group(1)) if prefetch else None), gets, pmd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--heap", required=True)
    ap.add_argument("--builds", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    builds = a.builds.split(",")
    got = defaultdict(list)
    for r in range(a.rounds):
        for b in builds:
            for phase, mode, cold in [("cold", "fresh", True), ("warm", "fresh", False),
                                      ("prefetch", "prefetch", True), ("after", "fresh", False)]:
                if cold:
                    evict(a.heap)
                pre, gets, pmd = run(b, mode, a.heap)
                got[b, phase if pre is None else "gets after prefetch"].append(gets)
                if pre is not None:
                    got[b, "prefetch"].append(pre)
                extra = f" after a prefetch of {pre:.1f} ms" if pre is not None else ""
                print(f"round {r} {b} {phase}: gets {gets:.1f} ms{extra}, pmd {pmd} MiB", flush=True)
    print("medians, ms (100,000 gets; the prefetch, with the open, apart):")
    for phase in ["cold", "warm", "prefetch", "gets after prefetch", "after"]:
        base = statistics.median(got[builds[0], phase])
        row = [f"{statistics.median(got[b, phase]):.1f}" for b in builds]
        ratio = statistics.median(got[builds[-1], phase]) / base
        print(f"  {phase}: " + " / ".join(row) + f"  ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
