#!/usr/bin/env python3
"""Durable single-key commits of 1-8 threads or processes, for builds side by side (A/B).

    python3 benches/commits.py --heap HEAP --builds BASE_TARGET,NEW_TARGET [--rounds 3]
        [--secs 3] [--threads 1,2,4,8] [--processes 1,4,8] [--scratch DIR]

Each BUILD is a cargo target directory (for example `target/release` of this checkout and of a
worktree at the commit before) holding `pheap-compare`, built with
`cargo build --release -p pheap-compare`. HEAP is a heap to start from (say one made by
`cargo run --release --example profile -- load HEAP`), copied afresh before every run, or
`fresh` for an empty store as the compare benchmark's committers use. Builds alternate within
each round, so that the machine's drift falls on all of them. Threads share one handle
(`pheap-compare __commit_threads`); processes each open the heap (`pheap-compare __commit`)
and start together. Prints each run's commits per second, then the medians and their ratio to
the first build's.
"""
import argparse
import os
import shutil
import statistics
import subprocess
from collections import defaultdict


def prepare(heap, scratch):
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    if heap != "fresh":
        shutil.copyfile(heap, os.path.join(scratch, "data.pheap"))
    os.sync()


def threads(build, n, secs, scratch):
    out = subprocess.run(
        [os.path.join(build, "pheap-compare"), "__commit_threads", "pheap", str(n), str(secs), scratch],
        check=True, capture_output=True, text=True,
    )
    return float(out.stdout.strip())


def processes(build, n, secs, scratch):
    exe = os.path.join(build, "pheap-compare")
    kids = [
        subprocess.Popen([exe, "__commit", "pheap", str(who), str(secs), scratch],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for who in range(n)
    ]
    for k in kids:
        assert k.stdout.readline().strip() == "ready"
    for k in kids:
        k.stdin.write("go\n")
        k.stdin.flush()
    total = sum(int(k.stdout.readline()) for k in kids)
    for k in kids:
        k.wait()
    return total / secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--heap", required=True)
    ap.add_argument("--builds", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--threads", default="1,2,4,8")
    ap.add_argument("--processes", default="")
    ap.add_argument("--scratch", default=os.path.join("target", "commits-scratch"))
    a = ap.parse_args()
    builds = a.builds.split(",")
    kinds = [("threads", int(n)) for n in a.threads.split(",") if n] + [
        ("processes", int(n)) for n in a.processes.split(",") if n
    ]
    rates = defaultdict(list)
    for r in range(a.rounds):
        for kind, n in kinds:
            for b in builds:
                prepare(a.heap, a.scratch)
                run = threads if kind == "threads" else processes
                rate = run(b, n, a.secs, a.scratch)
                rates[(kind, n, b)].append(rate)
                print(f"round {r + 1} {kind:9} {n} {b}: {rate:8.0f} commits/s", flush=True)
    shutil.rmtree(a.scratch, ignore_errors=True)
    for kind, n in kinds:
        first = statistics.median(rates[(kind, n, builds[0])])
        line = [f"{kind:9} {n}:"]
        for b in builds:
            m = statistics.median(rates[(kind, n, b)])
            runs = "/".join(f"{x:.0f}" for x in rates[(kind, n, b)])
            line.append(f"{b} median {m:.0f} ({runs}) {m / first:.2f}x")
        print("  ".join(line))


if __name__ == "__main__":
    main()
