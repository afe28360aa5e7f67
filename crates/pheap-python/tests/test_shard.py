"""Shard routing (DESIGN §2.11): the same shard for a key in every process and language."""

import pytest

import pheap


def test_shard_of_matches_the_design_documents_vectors_and_splits_on_doubling(tmp_path):
    vectors = [
        ("", [0, 0, 0, 1, 11]),
        ("user/42", [0, 1, 2, 5, 52]),
        ("item/00000000002a", [0, 1, 2, 5, 46]),
        (b"\x00\xff", [0, 0, 0, 1, 11]),
        (42, [0, 1, 2, 6, 58]),
    ]
    for key, shards in vectors:
        assert [pheap.shard_of(key, n) for n in (1, 2, 3, 7, 64)] == shards, key
    assert pheap.shard_of(True, 64) == pheap.shard_of(1, 64)  # canonical: True is 1
    for i in range(2000):
        k = ("t", i)
        s = pheap.shard_of(k, 7)
        assert pheap.shard_of(k, 14) in (2 * s, 2 * s + 1)
    for bad in (0, -1, 2**32):
        with pytest.raises(ValueError, match="n"):
            pheap.shard_of("k", bad)
    with pytest.raises(TypeError):
        pheap.shard_of(1.5, 4)
