"""Published snapshots (DESIGN §9): publish, the handle, the node cache and its failure cases,
the safe unpickler. The engines have their own file (test_engines.py)."""

import json
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import pheap


def fill(db, n=500):
    with db.transaction() as tx:
        for i in range(n):
            tx[f"k{i}"] = {"i": i, "name": f"item {i}", "tags": [i % 7, "x"]}
        tx["arr"] = np.arange(1000, dtype=np.float64)


def downloads(cache):
    try:
        with open(os.path.join(cache, "downloads.jsonl")) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


@pytest.fixture
def src(tmp_path):
    db = pheap.open(str(tmp_path / "src.pheap"))
    fill(db)
    yield db
    db.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    c = str(tmp_path / "cache")
    monkeypatch.setenv("PHEAP_CACHE_DIR", c)
    return c


def test_publish_writes_the_sealed_file_then_a_manifest_and_the_handle_opens_it(src, tmp_path, cache):
    url = str(tmp_path / "pub")
    pub = pheap.publish(src, url)
    assert pub.publish_stats["file_written"] and pub.publish_stats["manifest_written"]
    m = json.loads(open(os.path.join(url, "manifest.json")).read())
    assert m["format"] == "pheap-publication" and m["version"] == 1
    assert m["file"] == f"{m['digest']}.pheap" == f"{pub.digest}.pheap"
    assert m["size"] == os.path.getsize(os.path.join(url, m["file"])) == pub.size
    assert m["entries"] == len(src) == pub.entries == 501
    assert m["pickles"]["safe"] is True and m["pickles"]["fragments"] == 1
    assert sorted(os.listdir(url)) == sorted([m["file"], "manifest.json"])

    # The handle pickles small, carries no data, and opens in another process's way.
    blob = pickle.dumps(pub)
    assert len(blob) < 1024
    again = pickle.loads(blob)
    assert again == pub == pheap.Published(url)
    h = again.open()
    assert h.read_only and h.digest == pub.digest
    assert h["k7"] == {"i": 7, "name": "item 7", "tags": [0, "x"]}
    assert np.array_equal(h["arr"], np.arange(1000.0))
    assert len(h) == 501
    assert {k: v for k, v in h.items() if k != "arr"} == {k: v for k, v in src.items() if k != "arr"}
    with pytest.raises(pheap.ReadOnlyError):
        h["k1"] = 1
    assert again.open() is h  # one handle per process
    assert len(downloads(cache)) == 1
    assert [c["digest"] for c in pheap.cache_info()] == [pub.digest]
    # A file:// URL names the same publication.
    assert pheap.Published(f"file://{url}").digest == pub.digest


def test_publishing_unchanged_content_writes_nothing_and_new_content_a_new_version(src, tmp_path, cache):
    url = str(tmp_path / "pub")
    first = pheap.publish(src, url)
    h1 = first.open()
    again = pheap.publish(src, url)
    assert again.digest == first.digest
    assert not again.publish_stats["file_written"] and not again.publish_stats["manifest_written"]
    # Published from a heap's path, not a handle: the same content, the same digest.
    assert pheap.publish(src.filename, url).digest == first.digest

    src["k1"] = "changed"
    second = pheap.publish(src, url)
    assert second.digest != first.digest
    assert pheap.Published(url).digest == second.digest
    assert second.open()["k1"] == "changed"
    # The first handle still reads the first version.
    assert first.open() is h1 and h1["k1"]["i"] == 1
    assert len(downloads(cache)) == 2


def test_in_place_opens_the_published_file_without_a_cache(src, tmp_path, cache):
    url = str(tmp_path / "pub")
    pub = pheap.publish(src, url)
    h = pub.open(in_place=True)
    assert h.filename == os.path.join(url, f"{pub.digest}.pheap")
    assert h["k3"]["i"] == 3
    assert not os.path.exists(cache)
    s3 = pheap.Published._from("s3://b/v", pub.manifest, None)
    with pytest.raises(ValueError, match="in_place"):
        s3.open(in_place=True)


class Hostile:
    """Its pickle would run a shell command when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_safe_trust_refuses_a_hostile_pickle_and_the_manifest_says_so(tmp_path, cache):
    marker = tmp_path / "ran"
    db = pheap.open(str(tmp_path / "h.pheap"))
    db["ok"] = np.arange(3)
    db["hostile"] = Hostile(marker)
    pub = pheap.publish(db, str(tmp_path / "pub"))
    assert pub.pickles_safe is False
    assert pub.manifest["pickles"]["outside_allowlist"] == [f"{os.system.__module__}.system"]
    h = pub.open()
    assert list(h["ok"]) == [0, 1, 2]
    with pytest.raises(pheap.UntrustedError, match="system"):
        h["hostile"]
    assert not marker.exists()
    # The same through pheap.open, and trusted=True runs it (a source the user trusts).
    safe = pheap.open(db.filename, trusted="safe")
    assert safe.trusted == "safe"
    with pytest.raises(pheap.UntrustedError):
        safe["hostile"]
    assert not marker.exists()
    pub.open(trusted=True)["hostile"]
    assert marker.exists()
    with pytest.raises(TypeError, match="trusted"):
        pheap.open(db.filename, trusted="yes")
    # A heap opened "safe" still writes pickles (they are the user's own).
    safe["more"] = Hostile(marker)


def test_safe_trust_loads_common_data_types(tmp_path):
    import datetime
    import decimal
    import uuid

    import pandas as pd

    values = {
        "df": pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "t": pd.date_range("2020", periods=2)}),
        "s": pd.Series([1.5, 2.5], index=pd.Index([3, 4])),
        "ts": pd.Timestamp("2021-01-01", tz="UTC"),
        "arr": np.arange(6).reshape(2, 3),
        "rec": np.zeros(2, dtype=[("x", "<i4"), ("y", "<f8")]),
        "scalar": np.float32(1.5),
        "when": datetime.datetime(2020, 1, 2, tzinfo=datetime.timezone.utc),
        "dec": decimal.Decimal("1.25"),
        "id": uuid.UUID(int=5),
        "c": complex(1, 2),
    }
    db = pheap.open(str(tmp_path / "d.pheap"))
    db.update(values)
    safe = pheap.open(db.filename, trusted="safe")
    for k, v in values.items():
        got = safe[k]
        if isinstance(v, (pd.DataFrame, pd.Series)):
            assert got.equals(v), k
        elif isinstance(v, np.ndarray):
            assert np.array_equal(got, v), k
        else:
            assert got == v, k
    assert pheap._trust.survey(pheap._pheap._pickle_fragments(db))["safe"]


def _open_and_read(url, cache, n):
    pub = pheap.Published(url, cache_dir=cache)
    h = pub.open()
    return [h[f"k{i}"]["i"] for i in range(n)]


def _race(url, cache, barrier, results):
    barrier.wait()
    results.put(_open_and_read(url, cache, 50))


def test_racing_processes_download_once_per_cache_dir(src, tmp_path):
    url = str(tmp_path / "pub")
    src["big"] = np.ones(4 << 20)  # 32 MiB: a download long enough for the others to arrive
    pheap.publish(src, url)
    caches = [str(tmp_path / "node1"), str(tmp_path / "node2")]
    ctx = multiprocessing.get_context("spawn")
    n = 8
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(url, caches[i % 2], barrier, results)) for i in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert got == [list(range(50))] * n
    for c in caches:
        assert len(downloads(c)) == 1, downloads(c)
        assert [n for n in os.listdir(c) if n.endswith(".part")] == []


def test_a_killed_downloader_leaves_nothing_trusted_and_the_next_one_retries(src, tmp_path, cache):
    url = str(tmp_path / "pub")
    pub = pheap.publish(src, url)
    os.makedirs(cache)
    # A downloader that holds the lock, has written half the file, and is killed.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import fcntl, os, time
                fd = os.open({cache!r} + "/.{pub.digest}.lock", os.O_RDWR | os.O_CREAT)
                fcntl.flock(fd, fcntl.LOCK_EX)
                data = open({url!r} + "/{pub.digest}.pheap", "rb").read()
                with open({cache!r} + "/.{pub.digest}.999-dead.part", "wb") as f:
                    f.write(data[: len(data) // 2])
                print("ready", flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
    )
    assert child.stdout.readline().strip() == b"ready"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    h = pub.open()
    assert h["k10"]["i"] == 10
    assert [n for n in os.listdir(cache) if n.endswith(".part")] == []
    assert len(downloads(cache)) == 1


def _flip(path, at):
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))


def test_damaged_publications_are_errors_and_nothing_is_cached(src, tmp_path, cache):
    url = str(tmp_path / "pub")
    pub = pheap.publish(src, url)
    data = os.path.join(url, f"{pub.digest}.pheap")
    pristine = open(data, "rb").read()

    def nothing_cached():
        return not os.path.exists(cache) or [n for n in os.listdir(cache) if n.endswith((".pheap", ".part"))] == []

    # A flipped byte past the header: the digest does not match.
    _flip(data, len(pristine) - 10)
    with pytest.raises(pheap.PublicationError, match="damaged|digest"):
        pheap.Published(url).open()
    assert nothing_cached()
    # Truncated: the size does not match.
    with open(data, "wb") as f:
        f.write(pristine[: len(pristine) // 2])
    with pytest.raises(pheap.PublicationError, match="bytes"):
        pheap.Published(url).open()
    assert nothing_cached()
    # Missing: named by the manifest, not there.
    os.remove(data)
    with pytest.raises(pheap.PublicationError, match="missing"):
        pheap.Published(url).open()
    assert nothing_cached()
    # Put back, it opens (a clean retry).
    open(data, "wb").write(pristine)
    assert pheap.Published(url).open()["k1"]["i"] == 1

    manifest = os.path.join(url, "manifest.json")
    good = open(manifest).read()
    for text, match in [
        ("{not json", "not JSON"),
        (good.replace(f'"file": "{pub.digest}.pheap"', '"file": "../../etc/passwd"'), "names file"),
        (good.replace('"version": 1', '"version": 99'), "upgrade"),
        (good.replace(pub.digest, "zz" * 16), "digest"),
        ('{"format": "other"}', "not a pheap"),
    ]:
        open(manifest, "w").write(text)
        with pytest.raises(pheap.PublicationError, match=match):
            pheap.Published(url)
    with pytest.raises(pheap.PublicationError, match="no publication"):
        pheap.Published(str(tmp_path / "nowhere"))


def test_downloads_are_written_in_whole_2_mib_pieces_whatever_the_source_delivers():
    from pheap._publish import _write_in_pieces

    piece = 2 << 20
    data = os.urandom(5 * piece + 12345)

    class Network:
        """A source that delivers odd, short lengths, as a socket does."""

        def __init__(self):
            self.at = 0

        def readinto(self, b):
            n = min(len(b), 100_003, len(data) - self.at)
            b[:n] = data[self.at : self.at + n]
            self.at += n
            return n

    class Out:
        def __init__(self, most):
            self.most, self.got, self.calls = most, bytearray(), []

        def write(self, b):
            n = min(len(b), self.most)
            self.calls.append((len(self.got), len(b)))
            self.got += b[:n]
            return n

    out = Out(most=len(data))
    _write_in_pieces(Network(), out)
    assert bytes(out.got) == data
    # Every write but the last is a whole piece at a multiple of the piece's length.
    assert out.calls == [(i * piece, piece) for i in range(5)] + [(5 * piece, 12345)]
    # A short write (the kernel may write less than asked) is finished, not dropped.
    out = Out(most=1_000_000)
    _write_in_pieces(Network(), out)
    assert bytes(out.got) == data
    # A source with read() alone.
    class Reader:
        def __init__(self):
            self.net = Network()

        def read(self, n):
            b = bytearray(n)
            return bytes(b[: self.net.readinto(memoryview(b))])

    out = Out(most=len(data))
    _write_in_pieces(Reader(), out)
    assert bytes(out.got) == data and out.calls[0] == (0, piece)
    # An empty source writes nothing.
    out = Out(most=piece)
    _write_in_pieces(type("Empty", (), {"readinto": lambda self, b: 0})(), out)
    assert out.got == b"" and out.calls == []


def test_a_full_cache_dir_is_a_clear_error(src, tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a small tmpfs")
    url = str(tmp_path / "pub")
    src["big"] = np.zeros(1 << 20)  # 8 MiB: more than the cache holds
    pheap.publish(src, url)
    small = tmp_path / "small"
    small.mkdir()
    code = textwrap.dedent(
        f"""
        import errno, os, pheap
        try:
            pheap.Published({url!r}, cache_dir={str(small)!r}).open()
        except pheap.CacheFullError as e:
            assert e.errno == errno.ENOSPC, e
            assert "no room" in str(e) and {str(small)!r} in str(e)
            assert os.listdir({str(small)!r}) in ([], [n for n in os.listdir({str(small)!r}) if n.endswith(".lock")]), os.listdir({str(small)!r})
            print("full")
        """
    )
    r = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", f'mount -t tmpfs -o size=1m none "{small}" && exec "{sys.executable}" -c "$0"', code],
        capture_output=True,
        text=True,
    )
    if "mount" in r.stderr and r.returncode != 0 and "full" not in r.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    assert r.stdout.strip() == "full", r.stderr


def test_clearing_the_cache_never_breaks_an_open_heap(src, tmp_path, cache):
    url = str(tmp_path / "pub")
    pub = pheap.publish(src, url)
    h = pub.open()
    assert pheap.cache_clear() == {"files": 1, "bytes": pub.size}
    assert pheap.cache_info() == []
    assert h["k5"]["i"] == 5 and len(h) == 501  # the unlinked file is still mapped
    # Another process downloads it again.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(_open_and_read, (url, cache, 3)) == [0, 1, 2]
    assert len(downloads(cache)) == 1  # the log was cleared with the cache, then one more
    assert pheap.cache_clear("0" * 32) == {"files": 0, "bytes": 0}


def test_a_sealed_heap_on_read_only_media_opens_without_asking_for_read_only(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a read-only directory")
    db = pheap.open(str(tmp_path / "a.pheap"))
    db["k"] = {"v": 1}
    db.seal_to(str(tmp_path / "s.pheap"))
    db.close()
    code = textwrap.dedent(
        f"""
        import pheap
        assert pheap.open({str(tmp_path / "s.pheap")!r})["k"] == {{"v": 1}}
        try:
            pheap.open({str(tmp_path / "a.pheap")!r})   # not sealed: its writable open fails
        except OSError as e:
            print("refused", e.errno)
        """
    )
    d = str(tmp_path)
    r = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", f'mount --bind "{d}" "{d}" && mount -o remount,bind,ro "{d}" && exec "{sys.executable}" -c "$0"', code],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0 and "mount" in r.stderr:
        pytest.skip(f"cannot mount a read-only directory here: {r.stderr.strip()}")
    assert r.stdout.strip() == "refused 30", r.stderr

