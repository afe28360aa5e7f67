"""Damaged files and hostile bytes: typed errors, never a crash or a wrong value."""

import os
import stat

import pytest
from hypothesis import given, settings, strategies as st

import pheap
from pheap import _pheap


def test_not_a_heap(tmp_path):
    p = tmp_path / "x.pheap"
    p.write_bytes(b"hello, this is not a heap file" * 100)
    with pytest.raises(pheap.NotAHeapError):
        pheap.open(str(p))
    empty = tmp_path / "empty.pheap"
    empty.write_bytes(b"")
    with pytest.raises(pheap.Error):
        pheap.open(str(empty), create=False)


def test_directory_is_refused(tmp_path):
    with pytest.raises((OSError, pheap.Error)):
        pheap.open(str(tmp_path))


def test_truncated_file(path):
    with pheap.open(path) as db:
        db.update({f"k{i}": "v" * 200 for i in range(2000)})
    size = os.path.getsize(path)
    for cut in (16, 100, 4096, size // 2):
        with open(path, "r+b") as f:
            f.truncate(cut)
        with pytest.raises(pheap.Error) as e:
            with pheap.open(path) as db:
                # Opening may find an older intact commit; reading everything must not crash.
                for k in db:
                    db[k]
                db.check()
        assert isinstance(e.value, (pheap.CorruptError, pheap.NotAHeapError, pheap.Error))


def test_version_and_truncation_errors_name_the_problem(path):
    with pheap.open(path) as db:
        db["a"] = 1
    data = bytearray(open(path, "rb").read())
    future = bytearray(data)
    future[8:12] = (99).to_bytes(4, "little")  # the header's format version
    with open(path, "wb") as f:
        f.write(future)
    with pytest.raises(pheap.VersionError, match="99"):
        pheap.open(path)
    with open(path, "wb") as f:
        f.write(data[:10_000])  # shorter than the header and meta slots
    with pytest.raises(pheap.TruncatedError) as e:
        pheap.open(path)
    assert isinstance(e.value, pheap.CorruptError)


def test_damaged_bytes_never_misread(path):
    with pheap.open(path) as db:
        db.update({f"k{i}": {"i": i, "s": "x" * 50} for i in range(500)})
    size = os.path.getsize(path)
    data = bytearray(open(path, "rb").read())
    import random

    rng = random.Random(7)
    for trial in range(40):
        damaged = bytearray(data)
        for _ in range(20):
            pos = rng.randrange(4096, size)
            damaged[pos] ^= 1 << rng.randrange(8)
        with open(path, "wb") as f:
            f.write(damaged)
        try:
            with pheap.open(path) as db:
                for k in list(db):
                    v = db[k]
                    # Whatever is returned is the value that was written (or an error).
                    i = int(k[1:])
                    assert v == {"i": i, "s": "x" * 50}, (k, v)
        except (pheap.Error, OSError, KeyError, TypeError, ValueError):
            pass


def test_read_only_file(path):
    with pheap.open(path) as db:
        db["a"] = 1
    os.chmod(path, stat.S_IRUSR | stat.S_IRGRP)
    try:
        if os.geteuid() != 0:  # root writes anyway
            with pytest.raises(PermissionError):
                pheap.open(path)
        with pheap.open(path, read_only=True) as ro:
            assert ro["a"] == 1
            with pytest.raises(pheap.ReadOnlyError):
                ro["b"] = 1
            with pytest.raises(pheap.ReadOnlyError):
                with ro.transaction():
                    pass
    finally:
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=64))
def test_decoder_on_random_bytes(data):
    try:
        _pheap._decode_value(data, trusted=False)
    except (pheap.CorruptError, pheap.UntrustedError, TypeError):
        pass  # TypeError: an unhashable item as a dict key or set member


values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(), st.binary()),
    lambda inner: st.one_of(st.lists(inner), st.lists(inner).map(tuple), st.dictionaries(st.text(), inner)),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(values, st.data())
def test_decoder_on_damaged_encodings(v, data):
    enc, _ = _pheap._encode_value(v)
    assert _pheap._decode_value(enc) == v
    damaged = bytearray(enc)
    i = data.draw(st.integers(0, len(damaged) - 1))
    damaged[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(damaged)))
    for b in (bytes(damaged), enc[:cut]):
        try:
            _pheap._decode_value(b, trusted=False)
        except (pheap.CorruptError, pheap.UntrustedError, TypeError):
            pass


def test_hostile_counts_do_not_allocate():
    # A list claiming 2^60 items in a 12-byte value: refused before any allocation.
    with pytest.raises(pheap.CorruptError):
        _pheap._decode_value(bytes([0x09]) + b"\xff" * 8 + b"\x0f")
    # Nesting deeper than the limit: refused, no recursion overflow.
    with pytest.raises(pheap.CorruptError):
        _pheap._decode_value(bytes([0x09, 0x01]) * 100_000 + bytes([0x00]))
    # A pickle fragment claiming buffers the value lacks.
    with pytest.raises(pheap.CorruptError):
        _pheap._decode_value(bytes([0x0D, 0x01, 0x4E, 0x05]))


def test_malformed_keys_come_back_as_bytes():
    for raw in (b"\xfe\x00", b"\xfc\x05\x01", b"\xfd\xff", b"\x80\x81"):
        assert _pheap._decode_key(raw) == raw


def test_os_errors_name_the_file(tmp_path):
    # Issue 24, item 12: the OSError of an open carries the path (filename was None) and no
    # Rust names.
    missing = tmp_path / "nonexistent" / "y.pheap"
    with pytest.raises(FileNotFoundError) as e:
        pheap.open(missing)
    assert e.value.filename == str(missing) and "os error" not in str(e.value)
    with pytest.raises(OSError) as e:
        pheap.open(tmp_path)  # a directory
    assert e.value.filename == str(tmp_path) and e.value.errno is not None
    absent = tmp_path / "absent.pheap"
    with pytest.raises(FileNotFoundError) as e:
        pheap.open(absent, create=False)
    assert e.value.filename == str(absent)
    assert "create=True" in str(e.value) and "create(true)" not in str(e.value)


def test_errors_speak_python_not_rust(db, tmp_path):
    # Issue 24, item 12: no Rust names, kinds or calls in what a Python user reads.
    db["x"] = 5
    with pytest.raises(pheap.WrongKindError) as e:
        db.map("x")["y"] = 1
    text = str(e.value)
    assert "'x' holds a Python value, not a map" in text, text
    assert "tagged" not in text
    db.copy_to(tmp_path / "copy.pheap")
    with pytest.raises(FileExistsError) as e:
        db.copy_to(tmp_path / "copy.pheap")
    assert "overwrite=True" in str(e.value) and "copy_to_overwriting" not in str(e.value)
    with db.transaction():
        with pytest.raises(pheap.TransactionError) as e:
            db.transaction()
    assert "begin_write" not in str(e.value) and "commit or abort" in str(e.value)
