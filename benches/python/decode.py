#!/usr/bin/env python3
"""pheap's value decoder against `pickle.loads`, on workload (a)'s values.

    python benches/python/decode.py [--values N] [--rounds R] [--no-gc]

Encodes N values of workload (a) (`workload.value`) both ways, then, R rounds alternating,
decodes all of them with the extension's decoder and with `pickle.loads` (protocol 5), keeping
each round's results alive as a lookup loop's caller does. Prints both medians and the median of
the rounds' ratios. `--no-gc` disables the cyclic collector for both (it is most of either side's
time: docs/benchmarks.md, "The Python decoder").
"""
import argparse
import gc
import os
import pickle
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pheap  # noqa: E402
import workload  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--values", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-gc", action="store_true")
    args = ap.parse_args()
    rng = random.Random(1)
    vocab = workload.vocabulary(rng)
    values = [workload.value(rng, vocab) for _ in range(args.values)]
    ours = [pheap._pheap._encode_value(v)[0] for v in values]
    pickles = [pickle.dumps(v, protocol=5) for v in values]
    decode = pheap._pheap._decode_value
    for a, b in zip(ours[:100], pickles[:100]):
        assert decode(a) == pickle.loads(b), "the two encodings decode differently"
    if args.no_gc:
        gc.disable()

    def timed(f):
        gc.collect()
        t = time.perf_counter()
        kept = f()
        elapsed = time.perf_counter() - t
        del kept
        return elapsed

    d, p = [], []
    for _ in range(args.rounds):
        d.append(timed(lambda: [decode(e) for e in ours]))
        p.append(timed(lambda: [pickle.loads(x) for x in pickles]))
    ratio = statistics.median(a / b for a, b in zip(d, p))
    print(
        f"{args.values} values, {args.rounds} rounds, collector {'off' if args.no_gc else 'on'}: "
        f"pheap {statistics.median(d) * 1e3:.1f} ms, pickle.loads {statistics.median(p) * 1e3:.1f} ms, "
        f"ratio {ratio:.3f}"
    )


if __name__ == "__main__":
    main()
