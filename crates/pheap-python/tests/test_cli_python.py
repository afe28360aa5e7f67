"""`pheap get/keys/dump --python`: the tool renders what this package wrote as Python shows it."""

import json
import pathlib
import subprocess

import pytest

import pheap

CLI = pathlib.Path(__file__).resolve().parents[3] / "target" / "release" / "pheap"


class Frob:
    def __init__(self, foo):
        self.foo = foo


def run(*args):
    if not CLI.exists():
        pytest.skip("the pheap tool is not built (cargo build --release)")
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, check=True).stdout


VALUES = {
    "d": {"name": "a", "pos": (1.0, 2.0), 7: None},
    "ints": [-5, 63, 64, 2**80, -(2**70), 0],
    "text": "it's\n\t\\ é",
    "long": "x" * 100,
    "b": b"\x00'\xff",
    "one": (True,),
    "sets": [{3}, set(), frozenset(), frozenset({"x"})],
    "floats": [0.1, -0.0, 1e100, 2.5],
}


def test_get_python_renders_every_native_type(path):
    db = pheap.open(path)
    db.update(VALUES)
    db["frob"] = Frob(9)
    safe = {"__builtins__": {}, "set": set, "frozenset": frozenset}
    for k, v in VALUES.items():
        out = run("get", path, k, "--python").strip()
        assert eval(out, safe) == v, (k, out)  # literals only: no names but set and frozenset
    assert run("get", path, "frob", "--python").strip() == f"<pickled {__name__}.Frob>"


def test_keys_and_dump_python_render_keys(path):
    db = pheap.open(path)
    keys = ["s", 5, -(2**40), 2**70, b"raw", ("a", -1, (b"x",))]
    for i, k in enumerate(keys):
        db[k] = i
    listed = run("keys", path, "--python").splitlines()
    assert sorted(listed) == sorted(repr(k) for k in keys)
    lines = [json.loads(line) for line in run("dump", path, "--python").splitlines()]
    got = {line["key_python"]: line["python"] for line in lines}
    assert got == {repr(k): repr(i) for i, k in enumerate(keys)}


def test_stats_are_the_engines_figures_as_the_tool_gives_them(path):
    # Issue 24, item 5: one definition (the engine's Stats, serialised), not three hand lists.
    db = pheap.open(path)
    db["k"] = 1
    mine = db.stats()
    tool = json.loads(run("stat", path, "--json"))
    assert tool.pop("file") == path and tool.pop("writer_pid") is None
    assert tool.pop("sealed_digest") is None and db.digest is None
    assert mine["skipped_commits"] == [] == tool["skipped_commits"]
    volatile = {"readers", "oldest_reader"}  # the tool's own process reads too
    assert {k: v for k, v in mine.items() if k not in volatile} == {
        k: v for k, v in tool.items() if k not in volatile
    }
