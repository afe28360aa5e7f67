"""Workload (a) of the founding problems (../shared/REFERENCE-FIGURES.md): 1,460,000 entries;
keys "item/%012x" of a scrambled index; values: 60% dict records of 9 fields, 25% 6-tuples,
15% lists of 2-12 ints. Deterministic for a given n and seed."""

import random

N_FULL = 1_460_000


def vocabulary(rng, n=5000):
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choices(letters, k=rng.randint(3, 10))) for _ in range(n)]


ALPHABET = "abcdefghijklmnopqrstuvwxyz     "


def text(rng, lo, hi):
    return "".join(rng.choices(ALPHABET, k=rng.randint(lo, hi)))


def key(i):
    # A scrambled index: multiply by an odd constant modulo 2^48.
    return "item/%012x" % ((i * 0x9E3779B97F4B) & 0xFFFFFFFFFFFF)


def value(rng, vocab):
    r = rng.random()
    if r < 0.60:
        return {
            "id": rng.randrange(1 << 40),
            "name": text(rng, 6, 40),
            "title": text(rng, 20, 260),
            "score": rng.random() * 100.0,
            "count": rng.randrange(100000),
            "tags": [rng.choice(vocab) for _ in range(rng.randint(0, 5))],
            "pos": (rng.random(), rng.random()),
            "active": rng.random() < 0.5,
            "parent": rng.randrange(1 << 20) if rng.random() < 0.5 else None,
        }
    if r < 0.85:
        return (
            rng.randrange(1 << 32),
            text(rng, 5, 30),
            rng.random(),
            rng.choice(vocab),
            rng.randrange(100),
            text(rng, 10, 80),
        )
    return [rng.randrange(1 << 16) for _ in range(rng.randint(2, 12))]


def build(n=N_FULL, seed=1):
    """The workload as a dict."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    return {key(i): value(rng, vocab) for i in range(n)}


def sample_keys(n_entries, k, seed=2):
    rng = random.Random(seed)
    return [key(rng.randrange(n_entries)) for _ in range(k)]
