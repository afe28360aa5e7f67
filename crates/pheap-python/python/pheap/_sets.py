"""Shard sets (DESIGN §10): one dict in `n` heaps of a directory, a key in the shard
`pheap.shard_of(key, n)` names, each shard a heap with its own writer.

    ss = pheap.open_set("users.pheapset", shards=8)
    ss["user/42"] = {...}; ss["user/42"]; len(ss); ss.get_many(keys)
    ss.shard(3)            # the Heap holding shard 3: its own transactions

The directory holds `shard-00003-of-00008.pheap` files and `manifest.json` (the set's format,
version, shard count and routing), written once, after every shard exists.
"""

import json
import os
import secrets
from collections.abc import MutableMapping
from pathlib import Path

from ._pheap import Heap, shard_of

MANIFEST = "manifest.json"
SET_VERSION = 1
ROUTING = "xxh3_64-mulhi"


def shard_name(i, n):
    return f"shard-{i:05d}-of-{n:05d}.pheap"


def _manifest_text(n):
    return json.dumps({"format": "pheap-set", "version": SET_VERSION, "shards": n, "routing": ROUTING}, indent=1) + "\n"


def _read_manifest(path):
    where = path / MANIFEST
    try:
        m = json.loads(where.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise ValueError(f"{where} is not a set's manifest: not JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != "pheap-set":
        raise ValueError(f"{where} is not a pheap set's manifest")
    version = m.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > SET_VERSION:
        raise ValueError(f"{where}: set version {version!r}, this pheap reads up to {SET_VERSION}: upgrade pheap")
    n = m.get("shards")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n < 2**32:
        raise ValueError(f"{where}: no valid shard count")
    if m.get("routing") != ROUTING:
        raise ValueError(f"{where}: routing {m.get('routing')!r}, this pheap routes by {ROUTING!r}")
    return m


def _write_manifest_once(path, n):
    """Write the manifest unless one exists (a link that does not replace: of two creators, one
    writes it). Returns the manifest in place."""
    tmp = path / f".{MANIFEST}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "x") as f:
            f.write(_manifest_text(n))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path / MANIFEST)
        except FileExistsError:
            pass
        dfd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_manifest(path)


def _is_published(path):
    """A URL other than file://, or a directory holding a published set's manifest."""
    from ._publish import _local_dir

    d = _local_dir(path)
    if d is None:
        return True
    try:
        return '"pheap-set-publication"' in (d / MANIFEST).read_text()
    except (OSError, UnicodeDecodeError):
        return False


def open_set(
    path,
    *,
    shards=None,
    create=True,
    read_only=False,
    durability="immediate",
    trusted=None,
    storage_options=None,
):
    """Open the shard set at the directory ``path``, or create it with ``shards`` shards; or, where
    ``path`` is a published set (a URL, or a directory a publication or a write job made), its
    newest version, read-only (a :class:`pheap.PublishedSet`).

    ``shards`` must match an existing set's count (resharding is a copy into a new set).
    ``read_only``, ``durability`` and ``trusted`` apply to every shard, as in :func:`pheap.open`
    (``trusted`` defaults to True for a local set, ``"safe"`` for a published one).
    """
    if _is_published(path):
        from ._setpub import PublishedSet

        ps = PublishedSet(path, storage_options=storage_options, trusted="safe" if trusted is None else trusted)
        if shards is not None and ps.n != shards:
            raise ValueError(f"the set at {path} has {ps.n} shards, not {shards} (shards=None opens it as it is)")
        return ps
    if trusted is None:
        trusted = True
    path = Path(os.fspath(path))
    if shards is not None and (not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards < 2**32):
        raise ValueError(f"shards must be an int from 1 to {2**32 - 1}, not {shards!r}")
    m = _read_manifest(path) if path.is_dir() else None
    if m is None:
        if shards is None:
            raise FileNotFoundError(f"no shard set at {path}: give shards= to create one")
        if not create or read_only:
            raise FileNotFoundError(f"no shard set at {path} (create=False)" if not create else f"no shard set at {path} to open read-only")
        path.mkdir(parents=True, exist_ok=True)
        # Every shard first, the manifest last: a manifest names a set whose shards all exist.
        for i in range(shards):
            Heap(path / shard_name(i, shards), create=True, durability=durability).close()
        m = _write_manifest_once(path, shards)
    if shards is not None and m["shards"] != shards:
        raise ValueError(
            f"the set at {path} has {m['shards']} shards, not {shards} (shards=None opens it as it is)"
        )
    return ShardSet(path, m, read_only=read_only, durability=durability, trusted=trusted)


class Routed:
    """Reads routed by key, for a set with ``n`` and ``shard(i)`` (local or published)."""

    def shard_of(self, key):
        """The shard ``key`` belongs to: ``pheap.shard_of(key, self.n)``."""
        return shard_of(key, self.n)

    def _for(self, key):
        return self.shard(shard_of(key, self.n))

    def __getitem__(self, key):
        return self._for(key)[key]

    def __contains__(self, key):
        return key in self._for(key)

    def get(self, key, default=None):
        return self._for(key).get(key, default)

    def get_many(self, keys, default=None):
        """The values of ``keys`` in their order (``default`` for a missing one), each shard read
        once from one snapshot."""
        keys = list(keys)
        by_shard = {}
        for j, k in enumerate(keys):
            by_shard.setdefault(shard_of(k, self.n), []).append(j)
        out = [default] * len(keys)
        for i, js in by_shard.items():
            with self.shard(i).snapshot() as s:
                for j in js:
                    out[j] = s.get(keys[j], default)
        return out


class ShardSet(Routed, MutableMapping):
    """A dict split by key over ``n`` heaps (DESIGN §10). Each shard is opened when first used;
    a write commits in its shard alone (a multi-key change across shards is not atomic)."""

    def __init__(self, path, manifest, *, read_only, durability, trusted):
        self.path = path
        self.n = manifest["shards"]
        self.manifest = manifest
        self._opts = {"read_only": read_only, "durability": durability, "trusted": trusted}
        self._heaps = [None] * self.n

    def shard(self, i):
        """The Heap holding shard ``i`` (opened once, then kept)."""
        if not isinstance(i, int) or not 0 <= i < self.n:
            raise IndexError(f"shard {i!r} of a set of {self.n} shards")
        h = self._heaps[i]
        if h is None or h.closed:
            p = self.path / shard_name(i, self.n)
            if not p.exists():
                raise FileNotFoundError(f"shard {i} of the set at {self.path} is missing: {p}")
            h = self._heaps[i] = Heap(p, create=False, **self._opts)
        return h

    def __setitem__(self, key, value):
        self._for(key)[key] = value

    def __delitem__(self, key):
        del self._for(key)[key]

    def __len__(self):
        return sum(len(self.shard(i)) for i in range(self.n))

    def __iter__(self):
        for i in range(self.n):
            yield from self.shard(i)

    def batches(self, i, *, size=65_536, part=None):
        """Shard ``i``'s entries (its part ``part=(j, k)``) as ``pyarrow.RecordBatch``es, from
        one snapshot."""
        with self.shard(i).snapshot() as s:
            yield from s.batches(size, part)

    def publish(self, url, *, storage_options=None):
        """Seal every shard and commit them as the next version of the published set at ``url``
        (a directory, ``file://`` or fsspec URL), the manifest last; returns its
        :class:`pheap.PublishedSet`. Refused if another writer commits that version first."""
        from ._setpub import publish_set

        return publish_set(self, url, storage_options=storage_options)

    def reshard(self, shards, dest, *, durability="immediate"):
        """Copy this set into a new set of ``shards`` shards at the directory ``dest``, in one
        pass over each shard (from one snapshot of it); returns the new set. With ``shards`` a
        multiple of this set's count, shard ``i``'s entries land in its ``shards / n`` children
        ``i * shards / n ...``: each source shard is read once and writes only its own
        children."""
        dest = Path(os.fspath(dest))
        if dest.exists() and any(dest.iterdir()):
            raise FileExistsError(f"reshard writes a new set: {dest} is not empty")
        out = open_set(dest, shards=shards, durability=durability)
        try:
            for i in range(self.n):
                groups = {}
                with self.shard(i).snapshot() as s:
                    for k, v in s.items():
                        groups.setdefault(shard_of(k, shards), []).append((k, v))
                        if len(groups[shard_of(k, shards)]) >= 65_536:
                            j = shard_of(k, shards)
                            out.shard(j).update(groups.pop(j))
                for j, pairs in groups.items():
                    out.shard(j).update(pairs)
        except BaseException:
            out.close()
            raise
        return out

    def close(self):
        for h in self._heaps:
            if h is not None:
                h.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return f"<pheap.ShardSet {os.fspath(self.path)!r} of {self.n} shards>"
