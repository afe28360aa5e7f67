"""Published snapshots: one sealed heap for every process of a cluster (DESIGN §9).

``publish(db, url)`` seals a copy of the heap, uploads it as ``<url>/<digest>.pheap`` and then
writes ``<url>/manifest.json`` naming it, last and atomically. A :class:`Published` handle (a few
hundred bytes when pickled) goes to every task of Dask, Ray, Spark, multiprocessing or joblib;
``pub.open()`` there returns the sealed heap from the node's cache, downloaded once per node
(the other processes of the node wait on a file lock and open the same file) and checked
against its digest before it is trusted.

Paths and ``file://`` URLs need nothing more; other URLs (``s3://``, ``gs://``, ...) go through
fsspec (``pip install "pheap[cloud]"``).
"""

import concurrent.futures
import errno
import fcntl
import json
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

from . import _pheap, _trust
from .errors import CacheFullError, PublicationError
from .errors import Error as PheapError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
_LOG = "downloads.jsonl"


# ---- where things are -------------------------------------------------------------------------


def _local_dir(url):
    """The directory of a path or file:// URL; None for any other URL."""
    url = os.fspath(url)
    if "://" not in url:
        return Path(url)
    scheme, rest = url.split("://", 1)
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError(f"url {url!r}: a file:// URL takes an absolute path (file:///data/v1)")
        return Path(rest)
    return None


def _fs(url, storage_options):
    try:
        import fsspec
    except ImportError:
        raise ImportError(
            f"url {url!r} needs fsspec and the package for its scheme: "
            f'pip install "pheap[cloud]" (s3fs, gcsfs, adlfs as needed)'
        ) from None
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, root.rstrip("/")


def default_cache_dir():
    """The node cache's directory: ``$PHEAP_CACHE_DIR``, else ``$XDG_CACHE_HOME/pheap``, else
    ``~/.cache/pheap``."""
    if os.environ.get("PHEAP_CACHE_DIR"):
        return Path(os.environ["PHEAP_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pheap"


# ---- the manifest -----------------------------------------------------------------------------


def load_manifest(text, bad, fmt, what, newest):
    """A manifest's JSON object, its format and version checked: ``bad(why)`` makes the error
    (naming where it is), ``fmt`` is its format's name, ``what`` says what it should be."""
    try:
        m = json.loads(text)
    except ValueError as e:
        raise bad(f"is not JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != fmt:
        raise bad(f"is not {what}")
    version = m.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise bad("has no version")
    if version > newest:
        raise bad(f"is version {version}, newer than this pheap reads ({newest}): upgrade pheap")
    return m


def _parse_manifest(url, text):
    """A manifest's fields, every one checked (DESIGN §9.1): a damaged or foreign manifest is a
    PublicationError naming the URL, never a wrong file."""

    def bad(why):
        return PublicationError(f"the manifest at {url} {why}")

    m = load_manifest(text, bad, "pheap-publication", "a pheap publication's manifest", MANIFEST_VERSION)
    digest = m.get("digest")
    if not (isinstance(digest, str) and len(digest) == 32 and all(c in "0123456789abcdef" for c in digest)):
        raise bad("has no valid digest (32 hexadecimal digits)")
    if m.get("file") != f"{digest}.pheap":
        raise bad(f"names file {m.get('file')!r}, not {digest}.pheap")
    for field in ("size", "entries"):
        v = m.get(field)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise bad(f"has no valid {field}")
    pickles = m.get("pickles")
    if pickles is not None and not isinstance(pickles, dict):
        raise bad("has a pickles field that is not an object")
    return m


def _read_manifest(url, storage_options):
    d = _local_dir(url)
    where = f"{url}/{MANIFEST}"
    try:
        if d is not None:
            text = (d / MANIFEST).read_text()
        else:
            fs, root = _fs(url, storage_options)
            text = fs.cat_file(f"{root}/{MANIFEST}").decode()
    except FileNotFoundError:
        raise PublicationError(f"no publication at {url}: {where} does not exist") from None
    except UnicodeDecodeError:
        raise PublicationError(f"the manifest at {url} is not text") from None
    return _parse_manifest(url, text)


def _survey(sealed_path):
    h = _pheap.Heap(sealed_path, create=False, read_only=True, trusted=False)
    try:
        return _trust.survey(_pheap._pickle_fragments(h))
    finally:
        h.close()


# ---- publishing ------------------------------------------------------------------------------


def publish(source, url, *, storage_options=None):
    """Publish a sealed copy of ``source`` (a :class:`pheap.Heap`, or the path of a heap file) at
    ``url`` (a directory path, a ``file://`` URL, or any fsspec URL such as ``s3://bucket/v42``)
    and return its :class:`Published` handle.

    The copy is uploaded as ``<url>/<digest>.pheap``, then ``<url>/manifest.json`` is written
    last (a rename on a file system, one PUT on an object store), so readers see the old
    publication or the new one. Content already published there is not uploaded again. The
    manifest records what the heap's pickle fragments load (``pickles``), so a reader knows
    before opening whether ``trusted="safe"`` can read all of it.
    """
    from ._pheap import Heap

    own = not isinstance(source, Heap)
    heap = Heap(source, create=False, read_only=True) if own else source
    try:
        d = _local_dir(url)
        if d is not None:
            surveyed = []

            def survey(sealed_path):
                surveyed.append(json.dumps(_survey(sealed_path)))
                return surveyed[0]

            stats = heap._publish_to(d, survey)
            # The manifest as this call wrote it (another publisher may have replaced it since).
            text = _pheap._manifest_json(stats["digest"], stats["size"], stats["entries"], surveyed[0])
            return _handle(os.fspath(url), text, None, stats)
        return _publish_remote(heap, os.fspath(url), storage_options)
    finally:
        if own:
            heap.close()


def _publish_remote(heap, url, storage_options):
    fs, root = _fs(url, storage_options)
    with tempfile.TemporaryDirectory(prefix="pheap-publish-") as tmp:
        sealed = os.path.join(tmp, "sealed.pheap")
        s = heap.seal_to(sealed)
        digest, size = s["digest"], s["file_size"]
        text = _pheap._manifest_json(digest, size, s["entries"], json.dumps(_survey(sealed)))
        target = f"{root}/{digest}.pheap"
        try:
            present = fs.size(target) == size
        except FileNotFoundError:
            present = False
        if not present:
            fs.put_file(sealed, target)
        try:
            old = fs.cat_file(f"{root}/{MANIFEST}").decode()
        except FileNotFoundError:
            old = None
        if old != text:
            fs.pipe_file(f"{root}/{MANIFEST}", text.encode())
    fs.invalidate_cache()
    stats = {
        "digest": digest,
        "file": f"{digest}.pheap",
        "size": size,
        "entries": s["entries"],
        "file_written": not present,
        "manifest_written": old != text,
    }
    return _handle(url, text, storage_options, stats)


def _handle(url, manifest_text, storage_options, stats):
    pub = Published._from(url, _parse_manifest(url, manifest_text), storage_options)
    pub.publish_stats = stats
    return pub


# ---- the handle ------------------------------------------------------------------------------

_handles = {}
_handles_lock = threading.Lock()


class Published:
    """A publication: one version of a sealed heap at a URL, pinned by its digest.

    ``Published(url)`` reads the manifest there now; the handle stays on that version. It pickles
    as its URL and manifest fields (a few hundred bytes: no data travels with it), so it can be
    passed to any task. ``open()`` gives the heap in whatever process runs it.
    """

    def __init__(self, url, *, storage_options=None, cache_dir=None):
        self._init(os.fspath(url), _read_manifest(os.fspath(url), storage_options), storage_options, cache_dir)

    @classmethod
    def _from(cls, url, manifest, storage_options, cache_dir=None):
        self = cls.__new__(cls)
        self._init(url, manifest, storage_options, cache_dir)
        return self

    def _init(self, url, manifest, storage_options, cache_dir):
        self.url = url.rstrip("/") if "://" in url else url
        self.digest = manifest["digest"]
        self.size = manifest["size"]
        self.entries = manifest["entries"]
        pickles = manifest.get("pickles")
        self.pickles_safe = None if pickles is None else bool(pickles.get("safe"))
        self.manifest = manifest
        self.storage_options = storage_options
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.publish_stats = None

    def __reduce__(self):
        small = {k: self.manifest[k] for k in ("format", "version", "file", "digest", "size", "entries")}
        small["pickles"] = None if self.pickles_safe is None else {"safe": self.pickles_safe}
        return (_restore, (self.url, small, self.storage_options, self.cache_dir))

    def __eq__(self, other):
        if not isinstance(other, Published):
            return NotImplemented
        return (self.url, self.digest) == (other.url, other.digest)

    def __hash__(self):
        return hash((self.url, self.digest))

    def __repr__(self):
        return f"<pheap.Published {self.url!r} digest {self.digest} ({self.entries} entries, {self.size} bytes)>"

    def _cache(self):
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()

    def _source_file(self):
        d = _local_dir(self.url)
        return None if d is None else d / f"{self.digest}.pheap"

    def fetch(self):
        """Make sure this node's cache holds the file (downloading it once per node: the other
        processes wait) and return its path. Safe to call at worker start (a Dask plugin, a Ray
        ``worker_process_setup_hook``) so that tasks never wait for it."""
        d = self._cache()
        final = d / f"{self.digest}.pheap"
        if _complete(final, self.size):
            return final
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PublicationError(f"the node cache {d} cannot be made: {e}") from e
        fd = os.open(d / f".{self.digest}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the GIL is released while it waits
            if _complete(final, self.size):
                return final
            self._download(d, final)
            return final
        finally:
            os.close(fd)

    def _download(self, d, final):
        # Under the digest's lock: no other downloader of it runs, so what it left is stale.
        for stale in d.glob(f".{self.digest}.*.part"):
            stale.unlink(missing_ok=True)
        tmp = d / f".{self.digest}.{os.getpid()}-{secrets.token_hex(4)}.part"
        started = time.monotonic()
        try:
            src = self._source_file()
            try:
                if src is not None:
                    with open(src, "rb", buffering=0) as f, open(tmp, "xb", buffering=0) as out:
                        _write_in_pieces(f, out)
                else:
                    fs, root = _fs(self.url, self.storage_options)
                    with fs.open(f"{root}/{self.digest}.pheap", "rb") as f, open(tmp, "xb", buffering=0) as out:
                        _write_in_pieces(f, out)
            except FileNotFoundError as e:
                if tmp.exists():
                    raise
                raise PublicationError(
                    f"the publication at {self.url} names {self.digest}.pheap, which is missing "
                    f"there (removed after the manifest was read?)"
                ) from e
            got = tmp.stat().st_size
            if got != self.size:
                raise PublicationError(
                    f"the download of {self.url}/{self.digest}.pheap has {got} bytes, the "
                    f"manifest says {self.size}: not trusted, nothing cached"
                )
            h = _pheap.Heap(tmp, create=False, read_only=True, trusted=False)
            try:
                if h.digest != self.digest:
                    raise PublicationError(
                        f"the download of {self.url}/{self.digest}.pheap is not sealed with that "
                        f"digest (it has {h.digest}): not trusted, nothing cached"
                    )
                # The bytes are hashed (from the page cache) while the sync writes them out.
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    verified = pool.submit(h.verify_digest)
                    with open(tmp, "rb") as f:
                        os.fsync(f.fileno())
                    verified.result()
            finally:
                h.close()
            os.rename(tmp, final)
            dfd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise CacheFullError(
                    e.errno,
                    f"the node cache {d} has no room for {self.digest}.pheap ({self.size} bytes): "
                    f"free space (pheap.cache_clear()) or set cache_dir= / PHEAP_CACHE_DIR",
                ) from e
            raise
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, PheapError) and not isinstance(e, PublicationError):
                raise PublicationError(
                    f"the download of {self.url}/{self.digest}.pheap is damaged ({e}): not "
                    f"trusted, nothing cached"
                ) from e
            raise
        line = json.dumps(
            {
                "digest": self.digest,
                "url": self.url,
                "bytes": self.size,
                "seconds": round(time.monotonic() - started, 6),
                "pid": os.getpid(),
                "time": time.time(),
            }
        )
        with open(d / _LOG, "a") as f:
            f.write(line + "\n")

    def open(self, *, in_place=False, trusted="safe"):
        """The published heap, sealed and read-only, in this process: from the node cache
        (fetched first if missing), or with ``in_place=True`` where it lies (a path or
        ``file://`` URL on a shared file system; no copy). Later calls in this process return the
        same handle. ``trusted``: ``"safe"`` (the default) loads only pickle fragments whose
        globals are on the allowlist (``pheap._trust.ALLOWED``); ``True`` admits every pickle
        (only for a source you trust); ``False`` none."""
        if in_place:
            path = self._source_file()
            if path is None:
                raise ValueError(
                    f"in_place=True opens a publication on a file system (a path or file:// URL); "
                    f"{self.url} is not one"
                )
        else:
            path = None
        key = (self.digest, os.fspath(path) if in_place else os.fspath(self._cache()), trusted)
        with _handles_lock:
            h = _handles.get(key)
            if h is not None and not h.closed:
                return h
        if not in_place:
            path = self.fetch()
        h = _pheap.Heap(path, create=False, read_only=True, trusted=trusted)
        if h.digest != self.digest:
            h.close()
            raise PublicationError(
                f"{path} is not the publication's file: its digest is {h.digest}, the "
                f"manifest's {self.digest}"
            )
        with _handles_lock:
            old = _handles.get(key)
            if old is not None and not old.closed:
                h.close()
                return old
            _handles[key] = h
        return h


def _restore(url, manifest, storage_options, cache_dir):
    return Published._from(url, manifest, storage_options, cache_dir)


# What the cache's files are written in: whole 2 MiB pieces, at multiples of 2 MiB.
_PIECE = 2 << 20


def _write_in_pieces(src, out):
    """Copy the file object ``src`` (read to its end with ``readinto``, or ``read``) into the
    new, unbuffered file ``out``, written in pieces of 2 MiB at offsets that are multiples of it
    (the last piece shorter), whatever lengths ``src`` returns: the page cache then holds it in
    2 MiB folios, which every process of the node maps with one page-table entry each, taking a
    fraction of the faults and TLB misses of 4 KiB pages (DESIGN §9.3; a copy in the kernel, or
    writes as the network delivers them, leaves it in small folios)."""
    buf = bytearray(_PIECE)
    view = memoryview(buf)
    readinto = getattr(src, "readinto", None)
    if readinto is None:  # a file object with read() alone

        def readinto(b):
            data = src.read(len(b))
            b[: len(data)] = data
            return len(data)

    while True:
        n = 0
        while n < _PIECE:
            got = readinto(view[n:])
            if not got:
                break
            n += got
        done = 0
        while done < n:
            done += out.write(view[done:n])
        if n < _PIECE:
            return


def _complete(path, size):
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


# ---- the node cache ---------------------------------------------------------------------------


def cache_info(cache_dir=None):
    """The publications in the node cache: a list of dicts (``digest``, ``path``, ``bytes``,
    ``url`` and ``downloaded`` (a Unix time) when the download log knows them)."""
    d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    known = {}
    try:
        with open(d / _LOG) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    known[rec["digest"]] = rec
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    out = []
    for p in sorted(d.glob("*.pheap")) if d.is_dir() else []:
        digest = p.stem
        rec = known.get(digest, {})
        out.append(
            {
                "digest": digest,
                "path": os.fspath(p),
                "bytes": p.stat().st_size,
                "url": rec.get("url"),
                "downloaded": rec.get("time"),
            }
        )
    return out


def cache_clear(digest=None, *, cache_dir=None):
    """Remove one publication (``digest``) or every one from the node cache, each under its lock
    (a download in progress finishes first). A process that has a removed file open keeps
    reading it; the next ``open()`` elsewhere downloads it again. Returns the files and bytes
    removed."""
    d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    files = total = 0
    if not d.is_dir():
        return {"files": 0, "bytes": 0}
    for p in sorted(d.glob("*.pheap")):
        if digest is not None and p.stem != digest:
            continue
        fd = os.open(d / f".{p.stem}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = p.stat().st_size
                p.unlink()
            except FileNotFoundError:
                continue
            files += 1
            total += size
        finally:
            os.close(fd)
    if digest is None:
        (d / _LOG).unlink(missing_ok=True)
    return {"files": files, "bytes": total}
