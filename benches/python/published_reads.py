#!/usr/bin/env python3
"""A published heap read by fresh worker processes, for builds side by side (A/B).

    python benches/python/published_reads.py DIR --pythons PY_A,PY_B [--entries N] [--rounds R]
        [--workers W]

Each PY is the interpreter of a virtual environment holding one build of the package. Makes a
heap of N entries (`d[f"k{i}"] = {"i": i, "name": ..., "tags": [...]}`) under DIR with the first
interpreter and publishes it to DIR/pub (a local publication: the node cache copies the file).
Then, each round, for each interpreter in turn: the node cache emptied, one process fetches the
publication into it (timed: the download, its digest check and sync), then W fresh processes
each open it and make 100,000 lookups of random keys (timed from before `pub.open()`), as the
tasks of a Ray or Dask job on that node would. Prints every run and the medians; `pmd` is how
much of the heap a worker mapped with 2 MiB page-table entries (`FilePmdMapped`).
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict

MAKE = """
import pheap, sys
n = int(sys.argv[2])
db = pheap.open(sys.argv[1] + "/src.pheap")
with db.transaction() as tx:
    for i in range(n):
        tx[f"k{i}"] = {"i": i, "name": f"item {i}", "tags": [i % 7, "x"]}
pheap.publish(db, sys.argv[1] + "/pub")
"""

FETCH = """
import pheap, sys, time
t = time.perf_counter()
pheap.Published(sys.argv[1] + "/pub", cache_dir=sys.argv[1] + "/cache").fetch()
print(f"fetch {(time.perf_counter() - t) * 1e3:.1f} ms")
"""

WORKER = """
import pheap, random, sys, time
n = int(sys.argv[2])
keys = [f"k{random.Random(w).randrange(n)}" for w in range(100_000)]
t = time.perf_counter()
h = pheap.Published(sys.argv[1] + "/pub", cache_dir=sys.argv[1] + "/cache").open()
for k in keys:
    h[k]
took = time.perf_counter() - t
pmd = [l.split()[1] for l in open("/proc/self/smaps_rollup") if l.startswith("FilePmdMapped")]
print(f"open + 100k lookups {took * 1e3:.1f} ms pmd {int(pmd[0]) >> 10 if pmd else 0} MiB")
"""


def run(py, code, *args):
    out = subprocess.run([py, "-c", code, *args], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--pythons", required=True)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4)
    a = ap.parse_args()
    pys = a.pythons.split(",")
    shutil.rmtree(a.dir, ignore_errors=True)
    os.makedirs(a.dir)
    run(pys[0], MAKE, a.dir, str(a.entries))
    got = defaultdict(list)
    for r in range(a.rounds):
        for py in pys:
            shutil.rmtree(os.path.join(a.dir, "cache"), ignore_errors=True)
            fetch = float(re.search(r"fetch ([0-9.]+)", run(py, FETCH, a.dir)).group(1))
            got[py, "fetch"].append(fetch)
            times = []
            for _ in range(a.workers):
                out = run(py, WORKER, a.dir, str(a.entries))
                ms, pmd = re.search(r"lookups ([0-9.]+) ms pmd ([0-9]+)", out).groups()
                times.append(float(ms))
                got[py, "worker"].append(float(ms))
            print(f"round {r} {py}: fetch {fetch:.0f} ms; workers "
                  + ", ".join(f"{t:.0f}" for t in times) + f" ms; pmd {pmd} MiB", flush=True)
    print("medians, ms:")
    for what in ["fetch", "worker"]:
        meds = [statistics.median(got[py, what]) for py in pys]
        print(f"  {what}: " + " / ".join(f"{m:.0f}" for m in meds) + f"  ({meds[-1] / meds[0]:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
