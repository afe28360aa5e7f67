"""Many processes and threads on one heap: increments kept, crashes, fork, pickled handles."""

import multiprocessing as mp
import os
import signal
import sys
import threading
import time

import pytest

import pheap

INCREMENTS = 500
PROCS = 4


def _increment(db, n):
    for _ in range(n):
        with db.transaction() as tx:
            tx["counter"] = tx.get("counter", 0) + 1
            # Read-modify-write of a value in a sub-map too.
            per = tx.map("per_pid")
            per[os.getpid()] = per.get(os.getpid(), 0) + 1


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_processes_keep_every_increment(path, method):
    db = pheap.open(path)
    db["counter"] = 0
    ctx = mp.get_context(method)
    # The heap handle travels pickled (spawn, forkserver) or inherited (fork).
    procs = [ctx.Process(target=_increment, args=(db, INCREMENTS)) for _ in range(PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    assert db["counter"] == PROCS * INCREMENTS
    assert sorted(db["per_pid"].values()) == [INCREMENTS] * PROCS
    assert db.check()["entries"] == 2


def _writer_then_hang(path, ready):
    db = pheap.open(path)
    for i in range(50):
        with db.transaction() as tx:
            tx[f"done/{i}"] = i
    tx = db.transaction()
    for i in range(1000):
        tx[f"partial/{i}"] = "x" * 100
    ready.set()
    time.sleep(60)  # killed here, mid-transaction


def test_writer_killed_mid_transaction(path):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_writer_then_hang, args=(path, ready))
    p.start()
    assert ready.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    with pheap.open(path) as db:
        assert sorted(db) == sorted(f"done/{i}" for i in range(50))
        assert db.check()["entries"] == 50
        # The dead writer's lock is gone: a new transaction begins at once.
        with db.transaction(wait=False) as tx:
            tx["after"] = 1
        assert db["after"] == 1


def test_fork_inherited_handles(path):
    db = pheap.open(path)
    db["a"] = 1
    snap = db.snapshot()
    tx_holder = {}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the pipe, never raise past here
        code = 1
        try:
            msgs = []
            msgs.append(db["a"] == 1)  # the heap reopens itself
            db["child"] = os.getpid()
            try:
                snap["a"]
                msgs.append(False)
            except pheap.ForkedError:
                msgs.append(True)
            with db.snapshot() as s2:  # a fresh snapshot in the child works
                msgs.append(s2["child"] == os.getpid())
            code = 0 if all(msgs) else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    got = os.read(r, 1)
    os.waitpid(pid, 0)
    assert got == b"\x00"
    assert snap["a"] == 1 and "child" not in snap
    assert db["child"] == pid
    snap.close()
    del tx_holder


def test_transaction_inherited_through_fork_refuses(path):
    db = pheap.open(path)
    tx = db.transaction()
    tx["x"] = 1
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            tx["y"] = 2
        except pheap.ForkedError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    tx.commit()
    assert db["x"] == 1 and "y" not in db


def test_threads_share_one_heap(path):
    db = pheap.open(path, durability="none")
    db["n"] = 0
    errors = []

    def writer():
        try:
            for _ in range(200):
                with db.transaction() as tx:
                    tx["n"] = tx["n"] + 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader():
        try:
            last = 0
            for _ in range(500):
                with db.snapshot() as s:
                    v = s["n"]
                    assert v >= last  # snapshots never go back
                    last = v
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=writer) for _ in range(4)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert db["n"] == 800


def test_transaction_belongs_to_its_thread(db):
    tx = db.transaction()
    out = []

    def use():
        try:
            tx["x"] = 1
        except pheap.TransactionError:
            out.append("refused")

    t = threading.Thread(target=use)
    t.start()
    t.join()
    assert out == ["refused"]
    tx.abort()


def test_gil_is_released_while_waiting_for_the_writer(db):
    tx = db.transaction()
    done = threading.Event()

    def other():
        db["from_other"] = 1  # waits for the writer lock without the GIL
        done.set()

    t = threading.Thread(target=other)
    t.start()
    # This thread keeps running Python while the other waits.
    spins = 0
    deadline = time.time() + 0.3
    while time.time() < deadline:
        spins += 1
    assert spins > 1000 and not done.is_set()
    tx.commit()
    t.join(10)
    assert done.is_set() and db["from_other"] == 1


def _reader_child(path):
    with pheap.open(path, read_only=True) as db:
        sys.exit(0 if db["k"] == {"v": 1} else 3)


def test_spawned_reader(path):
    with pheap.open(path) as db:
        db["k"] = {"v": 1}
    p = mp.get_context("spawn").Process(target=_reader_child, args=(path,))
    p.start()
    p.join(60)
    assert p.exitcode == 0


def test_transaction_timeout(path):
    db = pheap.open(path)
    holder = {}
    started = threading.Event()
    release = threading.Event()

    def hold():
        with db.transaction() as tx:
            tx["x"] = 1
            started.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert started.wait(10)
    t0 = time.monotonic()
    with pytest.raises(pheap.BusyError):
        db.transaction(timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 5
    with pytest.raises(pheap.BusyError):
        db.transaction(wait=False)
    with pytest.raises(ValueError):
        db.transaction(timeout=-1)
    release.set()
    t.join()
    with db.transaction(timeout=5) as tx:
        tx["y"] = 2
    assert (db["x"], db["y"]) == (1, 2)
    del holder


def test_readers_full_is_a_clear_error_and_passes(path):
    db = pheap.open(path)
    db["a"] = 1
    snaps = []
    with pytest.raises(pheap.ReadersFullError):
        for _ in range(pheap.MAX_READERS + 1):
            snaps.append(db.snapshot())
    assert len(snaps) == pheap.MAX_READERS
    with pytest.raises(pheap.ReadersFullError):
        db["a"]  # a statement needs a snapshot too
    for s in snaps[:10]:
        s.close()
    assert db["a"] == 1 and snaps[-1]["a"] == 1
    for s in snaps:
        s.close()


class Reenter:
    """Unpickling it reads from the transaction that is decoding it."""

    tx = None

    def __reduce__(self):
        return (Reenter._rebuild, ())

    @staticmethod
    def _rebuild():
        return Reenter.tx["other"]


def test_reentering_a_transaction_from_decoding_is_an_error_not_a_deadlock(db):
    db["other"] = 1
    db["obj"] = Reenter()
    with db.transaction() as tx:
        Reenter.tx = tx
        with pytest.raises(pheap.TransactionError):
            tx["obj"]
        assert tx["other"] == 1  # the transaction is still usable
    Reenter.tx = None


def _update(db, n):
    for _ in range(n):
        db.update_key("counter", lambda v: v + 1, default=0)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_update_key_loses_no_update_across_processes(path, method):
    # The trial: 8 processes doing db[k] = db[k] + 1 lost 82-94% of 1,600 increments.
    db = pheap.open(path)
    ctx = mp.get_context(method)
    procs = [ctx.Process(target=_update, args=(db, 200)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    assert db["counter"] == 1600


def test_update_key_calls_once_returns_and_aborts_on_an_exception(path):
    db = pheap.open(path)
    calls = []

    def bump(v):
        calls.append(v)
        return v + [len(calls)]

    assert db.update_key("k", bump, default=[]) == [1]
    assert db.update_key("k", bump) == [1, 2]
    assert calls == [[], [1]] and db["k"] == [1, 2]
    with pytest.raises(ZeroDivisionError):
        db.update_key("k", lambda v: 1 / 0)
    assert db["k"] == [1, 2]
    assert db.update_key("missing", lambda v: v) is None and db["missing"] is None


_INTERRUPTED_UPDATE = """
import sys, time, pheap
db = pheap.open(sys.argv[1])
items = {i: i for i in range(2_000_000)}
print("ready", flush=True)
try:
    db.update(items)
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", time.monotonic(), flush=True)
"""

_INTERRUPTED_WAIT = """
import sys, time, pheap
db = pheap.open(sys.argv[1])
print("ready", flush=True)
try:
    with db.transaction():
        print("began", flush=True)
except KeyboardInterrupt:
    print("interrupted", time.monotonic(), flush=True)
"""


def _interrupt(script, path, settle):
    """Run `script` on `path`, send it SIGINT `settle` s after it says ready; the monotonic
    time it was sent and the child's report."""
    import subprocess

    child = subprocess.Popen(
        [sys.executable, "-c", script, path], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "ready"
    time.sleep(settle)
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=60)
    return sent, out.split()


def test_ctrl_c_aborts_a_long_update_at_once_and_commits_nothing(path):
    pheap.open(path).close()
    sent, report = _interrupt(_INTERRUPTED_UPDATE, path, 0.3)
    assert report[0] == "interrupted", f"the update was not interrupted: {report}"
    assert float(report[1]) - sent < 0.1, "KeyboardInterrupt came late"
    with pheap.open(path) as db:
        assert len(db) == 0, "an interrupted update committed"


def test_ctrl_c_ends_an_untimed_wait_for_the_writer(path):
    db = pheap.open(path)
    with db.transaction():
        sent, report = _interrupt(_INTERRUPTED_WAIT, path, 0.3)
    assert report[0] == "interrupted", f"the wait was not interrupted: {report}"
    assert float(report[1]) - sent < 0.1, "KeyboardInterrupt came late"
