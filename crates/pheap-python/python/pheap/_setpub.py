"""Published shard sets (DESIGN §10.2-10.3): a set's shards sealed at a URL, one version after
another, each version committed by creating its manifest where no other can be.

At ``<url>`` (a directory, a ``file://`` URL or any fsspec URL)::

    <digest>.pheap                 each shard, sealed, named by its content
    versions/00000007.json         version 7's manifest: created once, never replaced (the commit)
    manifest.json                  a copy of the newest version's manifest (a hint, read first)

A writer (``ShardSet.publish``, or a Dask, Ray or Spark write job) uploads every shard first,
then creates ``versions/<base + 1>.json``: on a file system a hard link, which fails if the name
exists; on an object store a conditional PUT (``If-None-Match: *``). Of two jobs that started
from one version, one commits; the other is refused and names the version that won. A job that
dies before that step leaves the previous version whole (its uploads are unreferenced). Readers
open ``manifest.json``, then look for newer versions (the hint can lag by a crash), and stay on
the version they found: each shard is fetched into the node cache of published snapshots when
first touched, checked against its digest.
"""

import base64
import concurrent.futures
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from . import _arrow, _pheap
from ._publish import MANIFEST, Published, _fs, _local_dir, _survey, load_manifest
from ._sets import Routed
from .errors import Error as PheapError
from .errors import PublicationError

SET_FORMAT = "pheap-set-publication"
SET_VERSION = 1
ROUTING = "xxh3_64-mulhi"
VERSIONS = "versions"


def version_name(g):
    return f"{VERSIONS}/{g:08d}.json"


# ---- the store: a directory or an fsspec file system ------------------------------------------


class Store:
    """The few operations a set needs, on a directory or an fsspec URL."""

    def __init__(self, url, storage_options=None):
        self.url = os.fspath(url)
        self.storage_options = storage_options
        self.dir = _local_dir(self.url)
        if self.dir is None:
            self.fs, self.root = _fs(self.url, storage_options)

    def read_text(self, name):
        """The object's text, or None when it does not exist."""
        try:
            if self.dir is not None:
                return (self.dir / name).read_text()
            return self.fs.cat_file(f"{self.root}/{name}").decode()
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            raise PublicationError(f"{self.url}/{name} is not text") from None

    def size(self, name):
        try:
            if self.dir is not None:
                return (self.dir / name).stat().st_size
            return self.fs.size(f"{self.root}/{name}")
        except FileNotFoundError:
            return None

    def put_file(self, local, name):
        """Upload ``local`` as ``name``, whole or not at all (a rename; one PUT)."""
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
            try:
                shutil.copyfile(local, tmp)
                _fsync_file(tmp)
                os.rename(tmp, self.dir / name)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(self.dir)
        else:
            self.fs.put_file(os.fspath(local), f"{self.root}/{name}")

    def create_text(self, name, text):
        """Create ``name`` holding ``text`` unless it exists: True if this call created it."""
        if self.dir is not None:
            d = (self.dir / name).parent
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / f".{Path(name).name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
            try:
                with open(tmp, "x") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, self.dir / name)
                except FileExistsError:
                    return False
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(d)
            return True
        try:
            self.fs.pipe_file(f"{self.root}/{name}", text.encode(), mode="create")
        except FileExistsError:
            return False
        except TypeError:
            raise PublicationError(
                f"{self.url}: this fsspec file system cannot create an object only if it does not "
                f"exist (a conditional PUT), so two jobs could both commit: not writing"
            ) from None
        self.fs.invalidate_cache()
        return True

    def remove(self, name):
        """Remove ``name`` if it exists (best effort: an unreferenced piece left behind costs
        only space)."""
        try:
            if self.dir is not None:
                (self.dir / name).unlink(missing_ok=True)
            else:
                self.fs.rm_file(f"{self.root}/{name}")
        except OSError:
            pass

    def write_text(self, name, text):
        """Replace ``name`` with ``text`` atomically (a rename; one PUT)."""
        if self.dir is not None:
            tmp = self.dir / f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
            try:
                with open(tmp, "x") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, self.dir / name)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(self.dir)
        else:
            self.fs.pipe_file(f"{self.root}/{name}", text.encode())
            self.fs.invalidate_cache()


def _fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(d):
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- manifests --------------------------------------------------------------------------------


def manifest_text(generation, n, shards, schema=None, key=None):
    """A version's manifest: ``shards`` lists, per shard in order, its file, digest, entries,
    bytes and whether its pickles are all allowlisted."""
    safe = all(s["pickles_safe"] for s in shards)
    m = {
        "format": SET_FORMAT,
        "version": SET_VERSION,
        "generation": generation,
        "shards": n,
        "routing": ROUTING,
        "entries": sum(s["entries"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "key": key,
        "schema": schema,
        "pickles": {"safe": safe},
        "files": [
            {"file": s["file"], "digest": s["digest"], "entries": s["entries"], "bytes": s["bytes"]}
            for s in shards
        ],
    }
    return json.dumps(m, indent=1) + "\n"


def _uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def parse_manifest(where, text):
    """A set manifest's fields, every one checked: a damaged or foreign manifest is a
    PublicationError naming where it is, never a wrong shard."""

    def bad(why):
        return PublicationError(f"the set manifest {where} {why}")

    m = load_manifest(text, bad, SET_FORMAT, "a published pheap set's manifest", SET_VERSION)
    if m.get("routing") != ROUTING:
        raise bad(f"routes by {m.get('routing')!r}; this pheap routes by {ROUTING!r}")
    n = m.get("shards")
    if not _uint(n) or not 1 <= n < 2**32:
        raise bad("has no valid shard count")
    if not _uint(m.get("generation")) or m["generation"] < 1:
        raise bad("has no valid generation")
    files = m.get("files")
    if not isinstance(files, list) or len(files) != n:
        raise bad(f"lists {len(files) if isinstance(files, list) else 'no'} shard files for {n} shards")
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            raise bad(f"has no valid entry for shard {i}")
        d = f.get("digest")
        if not (isinstance(d, str) and len(d) == 32 and all(c in "0123456789abcdef" for c in d)):
            raise bad(f"has no valid digest for shard {i}")
        if f.get("file") != f"{d}.pheap":
            raise bad(f"names file {f.get('file')!r} for shard {i}, not {d}.pheap")
        if not _uint(f.get("entries")) or not _uint(f.get("bytes")):
            raise bad(f"has no valid entries or bytes for shard {i}")
    if m.get("entries") != sum(f["entries"] for f in files):
        raise bad("has a total of entries that is not the sum of its shards'")
    if m.get("schema") is not None and not isinstance(m["schema"], str):
        raise bad("has a schema that is not a string")
    if m.get("key") is not None and not isinstance(m["key"], str):
        raise bad("has a key column name that is not a string")
    return m


def latest(store):
    """The newest committed version's manifest at ``store``, or None when there is none."""
    text = store.read_text(MANIFEST)
    if text is None:
        # No hint yet: a first commit may have died before writing it.
        g = 0
        m = None
    else:
        m = parse_manifest(f"{store.url}/{MANIFEST}", text)
        g = m["generation"]
    while True:  # the hint lags by at most the versions whose writers died before it
        nxt = store.read_text(version_name(g + 1))
        if nxt is None:
            return m
        m = parse_manifest(f"{store.url}/{version_name(g + 1)}", nxt)
        if m["generation"] != g + 1:
            raise PublicationError(f"{store.url}/{version_name(g + 1)} names generation {m['generation']}")
        g += 1


def current_generation(url, storage_options=None):
    """The newest committed version's number at ``url`` (0: none yet). A write job reads it when
    it starts and commits ``that + 1``, or is refused."""
    m = latest(Store(url, storage_options))
    return 0 if m is None else m["generation"]


def schema_text(schema):
    return None if schema is None else base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_of(text):
    if text is None:
        return None
    import pyarrow as pa

    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


# ---- writing ----------------------------------------------------------------------------------


def _seal_upload(store, heap, shard, tmp, by_pages=False):
    """Seal ``heap`` (``by_pages``: copied by pages, for the heaps a job writes and merges, whose
    digests nobody compares across commits) and put it in the store under its digest's name. On
    a file system it is sealed straight into the set's directory under a temporary name (one
    write of the bytes, not a copy after), synced, then renamed."""
    where = store.dir if store.dir is not None else Path(tmp)
    if store.dir is not None:
        store.dir.mkdir(parents=True, exist_ok=True)
    sealed = where / f".sealed-{shard}-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        s = heap.seal_to(sealed, by_pages=by_pages)
        safe = _survey(sealed)["safe"]
        name = f"{s['digest']}.pheap"
        if store.size(name) != s["file_size"]:
            if store.dir is not None:
                _fsync_file(sealed)
                os.rename(sealed, store.dir / name)
                _fsync_dir(store.dir)
            else:
                store.put_file(sealed, name)
    finally:
        sealed.unlink(missing_ok=True)
    return {
        "shard": shard,
        "file": name,
        "digest": s["digest"],
        "entries": s["entries"],
        "bytes": s["file_size"],
        "pickles_safe": bool(safe),
    }


def _read_schema(batch_schema, key):
    """The schema a reader's batches have: the key column first, then the rest."""
    import pyarrow as pa

    if key not in batch_schema.names:
        raise KeyError(f"no key column {key!r} among the columns {batch_schema.names}")
    fields = [batch_schema.field(key)] + [f for f in batch_schema if f.name != key]
    return pa.schema(fields)


def write_pieces(url, n, data, *, key="key", shard=None, storage_options=None, trusted="safe"):
    """Write the rows of ``data`` (Arrow batches or tables, pandas frames, or an iterable of
    them) as sealed shard pieces at ``url``: one per shard the rows route to, or, with
    ``shard=i``, one for shard ``i`` (every row must route there; an empty one if no rows).
    Returns the pieces' descriptions for :func:`commit`. Nothing is committed."""

    store = Store(url, storage_options)
    schema = None
    with tempfile.TemporaryDirectory(prefix="pheap-set-") as tmp:
        heaps = {}

        def heap(i):
            h = heaps.get(i)
            if h is None:
                h = heaps[i] = _pheap.Heap(os.path.join(tmp, f"{i}.pheap"), durability="none")
            return h

        if shard is not None:
            heap(shard)
        for b in _arrow._as_batches(data):
            if schema is None:
                schema = _read_schema(b.schema, key)
            with _arrow._gc_paused():
                keys, vals = _arrow.keys_and_values(b, key, trusted)
                groups = _pheap._route(keys, n)
                for i, pos in groups.items():
                    if shard is not None and i != shard:
                        k = keys[pos[0]]
                        raise ValueError(f"the key {k!r} belongs to shard {i} of {n}, not to shard {shard}")
                for i, pos in groups.items():
                    heap(i).update([(keys[j], vals[j]) for j in pos])
                del keys, vals, groups
        out = []
        for i, h in sorted(heaps.items()):
            piece = _seal_upload(store, h, i, tmp, by_pages=True)
            h.close()
            piece["schema"] = schema_text(schema)
            piece["key"] = key
            out.append(piece)
        return out


def _empty_piece(store, shard, tmp):
    h = _pheap.Heap(os.path.join(tmp, f"empty-{shard}.pheap"), durability="none")
    try:
        return _seal_upload(store, h, shard, tmp)
    finally:
        h.close()


def _merge(store, shard, pieces, tmp):
    """One sealed shard holding every piece's entries (their encoded values copied as they are:
    nothing is decoded, no pickle loaded)."""
    dest = _pheap.Heap(os.path.join(tmp, f"merge-{shard}.pheap"), durability="none")
    try:
        for p in pieces:
            if store.dir is not None:  # this job's own upload, opened where it lies
                path = store.dir / p["file"]
            else:
                path = _shard_handle(store.url, p, store.storage_options, os.path.join(tmp, "cache")).fetch()
            h = _pheap.Heap(path, create=False, read_only=True, trusted=False)
            try:
                dest._merge_from(h)
            finally:
                h.close()
        return _seal_upload(store, dest, shard, tmp, by_pages=True)
    finally:
        dest.close()


def commit(url, n, pieces, base, *, storage_options=None, key=None, schema=None):
    """Commit version ``base + 1`` of the set at ``url`` from the uploaded ``pieces``: a shard
    with no piece gets an empty one, a shard with several is merged into one. Refused (a
    PublicationError naming the winner) when another writer committed ``base + 1`` first.
    Returns the new version's manifest."""
    store = Store(url, storage_options)
    by_shard = [[] for _ in range(n)]
    for p in pieces:
        if not (isinstance(p, dict) and _uint(p.get("shard")) and p["shard"] < n):
            raise ValueError(f"not a piece of a set of {n} shards: {p!r}")
        by_shard[p["shard"]].append(p)
        key = key or p.get("key")
        schema = schema or p.get("schema")
    with tempfile.TemporaryDirectory(prefix="pheap-commit-") as tmp:

        def one(i):
            ps = by_shard[i]
            if len(ps) == 1:
                return ps[0]
            return _empty_piece(store, i, tmp) if not ps else _merge(store, i, ps, tmp)

        with concurrent.futures.ThreadPoolExecutor(min(4, n)) as pool:
            shards = list(pool.map(one, range(n)))
    g = base + 1
    text = manifest_text(g, n, shards, schema=schema, key=key)
    if not store.create_text(version_name(g), text):
        _remove_unreferenced(store, pieces + shards, store.read_text(version_name(g)))
        raise PublicationError(
            f"another job committed version {g} of the set at {url} first (this job started "
            f"from version {base}): this job's shards were uploaded but are not part of any "
            f"version; read the set again and rerun the job"
        )
    # The hint last: a reader that sees it sees a whole version (and one that does not, finds the
    # version itself).
    cur = latest_hint_generation(store)
    if cur is None or cur < g:
        store.write_text(MANIFEST, text)
    _remove_unreferenced(store, pieces, text)
    return parse_manifest(f"{url}/{version_name(g)}", text)


def _remove_unreferenced(store, pieces, manifest_text):
    """Remove this job's pieces that the committed version does not name (those merged, or all
    of a refused job's): no version names them, so no reader can need them."""
    try:
        named = {f["file"] for f in json.loads(manifest_text or "{}").get("files", [])}
    except ValueError:
        return
    for p in pieces:
        if p["file"] not in named:
            store.remove(p["file"])


def latest_hint_generation(store):
    text = store.read_text(MANIFEST)
    if text is None:
        return None
    try:
        return parse_manifest(store.url, text)["generation"]
    except PublicationError:
        return None


def publish_set(ss, url, *, storage_options=None):
    """Seal every shard of the local set ``ss`` and commit them as the next version at ``url``;
    the new version's :class:`PublishedSet`."""
    store = Store(url, storage_options)
    base = current_generation(url, storage_options)
    schema = None
    with tempfile.TemporaryDirectory(prefix="pheap-publish-set-") as tmp:

        def one(i):
            return _seal_upload(store, ss.shard(i), i, tmp)

        with concurrent.futures.ThreadPoolExecutor(min(4, ss.n)) as pool:
            pieces = list(pool.map(one, range(ss.n)))
    for i in range(ss.n):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            break
        with ss.shard(i).snapshot() as s:
            first = next(iter(s.batches(size=64)), None)
        if first is not None:
            schema = schema_text(first.schema)
            break
    commit(url, ss.n, pieces, base, storage_options=storage_options, schema=schema, key="key")
    return PublishedSet(url, storage_options=storage_options, generation=base + 1)


# ---- reading ----------------------------------------------------------------------------------


def _shard_handle(url, f, storage_options, cache_dir=None):
    m = {
        "format": "pheap-publication",
        "version": 1,
        "file": f["file"],
        "digest": f["digest"],
        "size": f["bytes"],
        "entries": f["entries"],
    }
    if "pickles_safe" in f:
        m["pickles"] = {"safe": f["pickles_safe"]}
    return Published._from(url, m, storage_options, cache_dir)


class PublishedSet(Routed, Mapping):
    """One version of a published shard set, read-only: routed lookups, ``get_many``, scans,
    ``len`` from the manifest. Each shard is fetched into the node cache (checked against its
    digest) when first touched. Pickles as its URL and manifest (no data), so it can go to every
    task of an engine."""

    def __init__(self, url, *, storage_options=None, cache_dir=None, trusted="safe", generation=None):
        store = Store(url, storage_options)
        if generation is None:
            m = latest(store)
            if m is None:
                raise PublicationError(f"no published set at {url}: no {MANIFEST} and no {VERSIONS}/")
        else:
            text = store.read_text(version_name(generation))
            if text is None:
                raise PublicationError(f"the set at {url} has no version {generation}")
            m = parse_manifest(f"{url}/{version_name(generation)}", text)
        self._init(os.fspath(url), m, storage_options, cache_dir, trusted)

    def _init(self, url, manifest, storage_options, cache_dir, trusted):
        self.url = url
        self.manifest = manifest
        self.n = manifest["shards"]
        self.generation = manifest["generation"]
        self.storage_options = storage_options
        self.cache_dir = cache_dir
        self.trusted = trusted
        self._heaps = {}

    def __reduce__(self):
        return (_restore, (self.url, self.manifest, self.storage_options, self.cache_dir, self.trusted))

    @property
    def schema(self):
        """The Arrow schema of this set's batches, when its writer recorded one."""
        return schema_of(self.manifest.get("schema"))

    @property
    def key_column(self):
        return self.manifest.get("key") or "key"

    def entries_of(self, i):
        """Shard ``i``'s entry count, from the manifest (no shard opened)."""
        return self.manifest["files"][i]["entries"]

    def shard(self, i):
        """The sealed heap of shard ``i`` in this process (fetched into the node cache first)."""
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.n:
            raise IndexError(f"shard {i!r} of a set of {self.n} shards")
        h = self._heaps.get(i)
        if h is None or h.closed:
            f = self.manifest["files"][i]
            try:
                h = _shard_handle(self.url, f, self.storage_options, self.cache_dir).open(trusted=self.trusted)
            except (PublicationError, PheapError, OSError) as e:
                raise PublicationError(
                    f"shard {i} of {self.n} ({f['file']}) of version {self.generation} of the set "
                    f"at {self.url}: {e}"
                ) from e
            self._heaps[i] = h
        return h

    def __len__(self):
        return self.manifest["entries"]

    def __iter__(self):
        for i in range(self.n):
            if self.entries_of(i):
                yield from self.shard(i)

    def batches(self, i, *, size=_arrow.DEFAULT_SIZE, part=None):
        """Shard ``i``'s entries (its part ``part=(j, k)``) as RecordBatches with the set's
        schema (key column named as written)."""
        if not self.entries_of(i):
            return iter(())
        schema = self.schema
        return self.shard(i).batches(size, part, schema)

    def __eq__(self, other):
        if isinstance(other, PublishedSet):
            return (self.url, self.generation) == (other.url, other.generation)
        return Mapping.__eq__(self, other)

    __hash__ = None

    def __repr__(self):
        return (
            f"<pheap.PublishedSet {self.url!r} version {self.generation}: {self.n} shards, "
            f"{len(self)} entries>"
        )


def _restore(url, manifest, storage_options, cache_dir, trusted):
    self = PublishedSet.__new__(PublishedSet)
    self._init(url, manifest, storage_options, cache_dir, trusted)
    return self
