"""Shard sets (DESIGN §10): a dict in n heaps, each key in the shard shard_of routes it to,
against a dict as the model."""

import json
import multiprocessing
import os
import random

import pytest

import pheap


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64])
def test_a_set_behaves_as_a_dict_and_each_key_lives_in_its_routed_shard(tmp_path, n):
    path = tmp_path / "s.pheapset"
    rng = random.Random(n)
    model = {}
    with pheap.open_set(path, shards=n, durability="none") as ss:
        assert ss.n == n and len(ss) == 0
        for step in range(1500):
            k = rng.choice([f"user/{rng.randrange(400)}", rng.randrange(400), ("t", rng.randrange(50))])
            op = rng.random()
            if op < 0.6:
                v = {"step": step, "k": str(k)}
                ss[k] = v
                model[k] = v
            elif op < 0.8:
                if k in model:
                    del ss[k]
                    del model[k]
                else:
                    with pytest.raises(KeyError):
                        del ss[k]
            else:
                assert ss.get(k) == model.get(k)
        assert len(ss) == len(model)
        assert dict(ss.items()) == model
        keys = list(model) + ["missing"]
        assert ss.get_many(keys, default=0) == [model[k] for k in model] + [0]
    # Reopened as it is (shards=None): the same content; each key in exactly its shard.
    with pheap.open_set(path) as ss:
        assert ss.n == n and dict(ss.items()) == model
        for i in range(n):
            for k in ss.shard(i):
                assert pheap.shard_of(k, n) == i == ss.shard_of(k)
    names = sorted(os.listdir(path))
    assert names == sorted([f"shard-{i:05d}-of-{n:05d}.pheap" for i in range(n)] + [f"shard-{i:05d}-of-{n:05d}.pheap-lock" for i in range(n)] + ["manifest.json"])
    m = json.loads((path / "manifest.json").read_text())
    assert m == {"format": "pheap-set", "version": 1, "shards": n, "routing": "xxh3_64-mulhi"}


def test_wrong_setups_are_refused_clearly(tmp_path):
    path = tmp_path / "s"
    with pytest.raises(FileNotFoundError, match="shards="):
        pheap.open_set(path)
    pheap.open_set(path, shards=4).close()
    with pytest.raises(ValueError, match="has 4 shards, not 8"):
        pheap.open_set(path, shards=8)
    for bad in (0, -1, 2**32, True, 1.5):
        with pytest.raises(ValueError, match="shards"):
            pheap.open_set(tmp_path / "t", shards=bad)
    os.remove(path / "shard-00002-of-00004.pheap")
    ss = pheap.open_set(path)
    with pytest.raises(FileNotFoundError, match="shard 2"):
        ss.shard(2)
    with pytest.raises(IndexError):
        ss.shard(4)
    (path / "manifest.json").write_text('{"format": "pheap-set", "version": 9, "shards": 4, "routing": "xxh3_64-mulhi"}')
    with pytest.raises(ValueError, match="upgrade"):
        pheap.open_set(path)
    ro = tmp_path / "ro"
    with pytest.raises(FileNotFoundError):
        pheap.open_set(ro, shards=2, read_only=True)


def _writer(path, w, per):
    ss = pheap.open_set(path)
    for i in range(per):
        ss[f"w{w}/{i}"] = i
    ss.close()


def test_writers_in_several_processes_fill_one_set(tmp_path):
    path = tmp_path / "s"
    pheap.open_set(path, shards=8).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 200)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    ss = pheap.open_set(path)
    assert len(ss) == 800
    assert ss.get_many([f"w{w}/{i}" for w in range(4) for i in range(200)]) == [i for _ in range(4) for i in range(200)]
