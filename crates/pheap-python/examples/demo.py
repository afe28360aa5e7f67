"""Create a heap of Python objects, fill it, reopen it in a fresh process and query it.

    python crates/pheap-python/examples/demo.py [N] [PATH]

Prints the fill rate, the file size, and from a freshly spawned interpreter the time from
opening the heap to the first value, and the rate of random lookups.
"""

import os
import random
import subprocess
import sys
import time

import pheap

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
PATH = sys.argv[2] if len(sys.argv) > 2 else "demo-py.pheap"

CHILD = """
import random, sys, time
t0 = time.perf_counter()
import pheap
db = pheap.open(sys.argv[1], read_only=True)
first = db["user/0"]
t1 = time.perf_counter()
n = db["meta"]["entries"]
rng = random.Random(2)
keys = ["user/%d" % rng.randrange(n) for _ in range(200_000)]
t2 = time.perf_counter()
with db.snapshot() as s:
    for k in keys:
        v = s[k]
t3 = time.perf_counter()
print("reopened in a fresh process: import + open + first value %.2f ms, %d entries" % ((t1 - t0) * 1e3, n))
print("  first value: %r" % (first,))
print("  200000 random lookups from one snapshot: %.2f s (%.2f us each)" % (t3 - t2, (t3 - t2) / len(keys) * 1e6))
with db.snapshot() as s:
    print("  meta: %r; sub-map 'tags' holds %d entries" % (s["meta"], len(s.map("tags"))))
"""


def main():
    for p in (PATH, PATH + "-lock"):
        if os.path.exists(p):
            os.remove(p)
    rng = random.Random(1)
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    t = time.perf_counter()
    with pheap.open(PATH, durability="none") as db:
        with db.transaction() as tx:
            for i in range(N):
                tx[f"user/{i}"] = {
                    "id": i,
                    "name": f"user {i}",
                    "score": rng.random(),
                    "tags": [rng.choice(words) for _ in range(3)],
                    "pos": (rng.random(), rng.random()),
                }
            counts = {}
            for i in range(min(N, 1000)):
                for w in tx[f"user/{i}"]["tags"]:
                    counts[w] = counts.get(w, 0) + 1
            tx.map("tags").update(counts)  # a sub-map: tag -> uses among the first 1000 users
            tx["meta"] = {"created": time.time(), "entries": N}
        t_fill = time.perf_counter() - t
        t = time.perf_counter()
        db.checkpoint()
        t_sync = time.perf_counter() - t
        size = db.stats()["file_size"]
    print(f"created {PATH}: {N} entries (dicts of 5 fields)")
    print(f"  fill {t_fill:.2f} s ({t_fill / N * 1e6:.2f} us/entry), checkpoint {t_sync * 1e3:.1f} ms")
    print(f"  file {size / 2**20:.1f} MiB ({size / N:.0f} B/entry)")
    subprocess.run([sys.executable, "-c", CHILD, PATH], check=True)


if __name__ == "__main__":
    main()
