"""pheap: a persistent dict of Python objects in one memory-mapped file.

Opening is O(1) (no load step), every commit is a consistent checkpoint that survives a crash,
and many threads and processes use one heap at once: one writer at a time, readers never
blocked::

    import pheap
    db = pheap.open("app.pheap")
    db["item/1"] = {"name": "a", "pos": (1.0, 2.0)}   # one commit
    with db.transaction() as tx:                      # one commit for the block
        tx["counter"] = tx.get("counter", 0) + 1
    with db.snapshot() as s:                          # a pinned view for a batch of reads
        v = s["item/1"]

Keys are str, bytes, int, or tuples of them. Values are None, bool, int, float, str, bytes,
tuple, list, dict, set and frozenset (nested), stored natively; anything else is pickled
(protocol 5), numpy arrays with their data out of band, read back as zero-copy read-only views.
"""

from collections.abc import MutableMapping
import os as _os

from . import errors
from .errors import *  # noqa: F401,F403
from ._pheap import (
    CODEC_TAG,
    FORMAT_VERSION,
    MAX_KEY_LEN,
    MAX_NESTING,
    MAX_READERS,
    MAX_VALUE_LEN,
    Heap,
    Map,
    MapIterator,
    PartView,
    Snapshot,
    Transaction,
    _after_fork_in_child,
    shard_of,
)

# Publications and shard sets are imported at their first use: their modules (and what they
# import: concurrent.futures, logging, secrets, pathlib, json, ...) took 100 ms of a fresh
# process's `import pheap` (127 ms in all), which a server opening one heap never needs.
_LAZY = {
    "publish": "_publish",
    "Published": "_publish",
    "cache_info": "_publish",
    "cache_clear": "_publish",
    "open_set": "_sets",
    "ShardSet": "_sets",
    "PublishedSet": "_setpub",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pheap' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "open",
    "publish",
    "Published",
    "cache_info",
    "cache_clear",
    "shard_of",
    "open_set",
    "ShardSet",
    "PublishedSet",
    "Heap",
    "Map",
    "Snapshot",
    "Transaction",
    "PartView",
    "MapIterator",
    "FORMAT_VERSION",
    "MAX_KEY_LEN",
    "MAX_VALUE_LEN",
    "MAX_NESTING",
    "MAX_READERS",
    "CODEC_TAG",
] + errors.__all__

__version__ = "0.1.0"

# Heap, Transaction and Snapshot extend Map: all are mappings (a snapshot's writes raise).
MutableMapping.register(Map)

# Handles inherited through fork: a Heap reopens itself, snapshots and transactions refuse.
_os.register_at_fork(after_in_child=_after_fork_in_child)


def open(
    path,
    *,
    create: bool = True,
    read_only: bool = False,
    durability: str = "immediate",
    trusted=True,
    codec: str = "native",
) -> Heap:
    """Open (or create) the heap at ``path``: O(1), whatever its size.

    - ``durability``: ``"immediate"`` (each commit synced before it returns) or ``"none"``
      (commits survive a process crash; ``checkpoint()`` makes them durable).
    - ``read_only``: no writes (the file may be read-only).
    - ``trusted=False``: refuse pickle fragments, reading and writing (no code runs on load);
      ``trusted="safe"``: write them, and read only those whose globals are on an allowlist of
      data types (numpy, pandas, datetime, decimal, uuid, ...: ``pheap._trust.ALLOWED``), the
      default of published heaps (``pheap.Published.open``).
    - ``codec="raw"``: keys and values are bytes, exactly what the CLI and Rust see.
    """
    return Heap(
        path,
        create=create,
        read_only=read_only,
        durability=durability,
        trusted=trusted,
        codec=codec,
    )


def _reopen(path, read_only, durability, trusted, codec):
    # How a pickled Heap comes back (in another process): open the same file the same way.
    return Heap(
        path,
        create=False,
        read_only=read_only,
        durability=durability,
        trusted=trusted,
        codec=codec,
    )


def _submap(heap, path):
    m = heap
    for raw in path:
        m = m._map_raw(raw)
    return m
