#!/usr/bin/env python3
"""Durable single-key commits from Python threads: `d[k] = {"foo": 9, "bar": i}`, one commit each.

    python benches/python/commits.py DIR N THREADS

Makes a fresh heap under DIR (emptied first), then THREADS threads sharing one handle each make
N commits (the heap's default durability: synced before each returns). Prints the time per
commit and the commits per second of all threads together. For an A/B, run it with the
interpreters of two virtual environments holding the two builds, alternated.
"""
import os
import shutil
import sys
import threading
import time

import pheap

d, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
shutil.rmtree(d, ignore_errors=True)
os.makedirs(d)
with pheap.open(os.path.join(d, "c.pheap")) as db:
    db["warm"] = 1

    def work(w):
        for i in range(n):
            db[f"k{w}-{i}"] = {"foo": 9, "bar": i}

    threads = [threading.Thread(target=work, args=(w,)) for w in range(t)]
    start = time.perf_counter()
    for x in threads:
        x.start()
    for x in threads:
        x.join()
    took = time.perf_counter() - start
shutil.rmtree(d, ignore_errors=True)
print(f"{t} threads: {took / (n * t) * 1e6:.0f} us per commit, {n * t / took:.0f} commits/s")
