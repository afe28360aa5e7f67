"""The founding problems of pheap for Python, measured against the tools people use today.

    python benches/python/bench.py --scratch /tmp/pybench            # full size (1.46 M entries)
    python benches/python/bench.py --n 100000 --scratch /tmp/pybench  # a quick run

Needs `pip install ./crates/pheap-python numpy lmdb sqlitedict diskcache joblib` in the running
interpreter. Prints a Markdown report (and writes it to --out). Every figure is measured in this
run on this machine; compare the ratios, the machine is shared and noisy.

(a) workload (workload.py): bulk write, file size, spawn to first lookup (warm), 100k lookups
    from one read transaction and as separate lookups, 10 reader processes' total PSS.
(b) 1 GiB of numpy arrays inside containers: load time and RSS (pheap vs joblib mmap).
(c) durable single-key commits.
(e) a 2 GiB float64 matrix: open to array, element reads, 10 readers' total PSS (pheap vs
    np.load(mmap_mode="r")).
"""

import argparse
import ast
import gc
import os
import pickle
import random
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import workload  # noqa: E402

ALL_STORES = ["pheap", "lmdb", "pickle", "shelve", "sqlitedict", "diskcache"]


def rm(path):
    for p in (path, path + "-lock"):
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)


def disk_size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    total = 0
    for p in [path] + [path + ext for ext in (".db", ".dat", ".dir", ".bak", "-wal", "-shm")]:
        if os.path.exists(p):
            total += os.path.getsize(p)
    return total


def timed(f):
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


def evict(path):
    """Drop a store's files (a file or a directory's) from the page cache, as a reboot would:
    `posix_fadvise(DONTNEED)` after a sync, so no root is needed."""
    files = [os.path.join(path, f) for f in os.listdir(path)] if os.path.isdir(path) else [path]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def child_seconds(code):
    """Run `code` in a fresh interpreter; it prints seconds."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


# ---- the stores -----------------------------------------------------------------------------
# Each: write(path, d), opener code (a Python snippet that defines `get(k)` and `snap()`, a
# context manager yielding a getter for a batch of reads), run in this process and in children.

OPENERS = {
    "pheap": """
import pheap
db = pheap.open(PATH, read_only=True)
def get(k):
    return db[k]
class snap:
    def __enter__(self):
        self.s = db.snapshot()
        return self.s.__getitem__
    def __exit__(self, *e):
        self.s.close()
""",
    "lmdb": """
import lmdb, pickle
env = lmdb.open(PATH, readonly=True, lock=True, max_readers=256, subdir=True)
def get(k):
    with env.begin() as tx:
        return pickle.loads(tx.get(k.encode()))
class snap:
    def __enter__(self):
        self.tx = env.begin()
        tx = self.tx
        return lambda k: pickle.loads(tx.get(k.encode()))
    def __exit__(self, *e):
        self.tx.abort()
""",
}

# Stores without read transactions: a batch of reads is plain gets.
PLAIN = """
def get(k):
    return db[k]
class snap:
    def __enter__(self):
        return db.__getitem__
    def __exit__(self, *e):
        pass
"""
OPENERS.update(
    {
        "pickle": 'import pickle\nwith open(PATH, "rb") as f:\n    db = pickle.load(f)\n' + PLAIN,
        "shelve": 'import shelve, dbm.dumb\ndb = shelve.Shelf(dbm.dumb.open(PATH, "r"))\n' + PLAIN,
        "sqlitedict": 'import sqlitedict\ndb = sqlitedict.SqliteDict(PATH, flag="r")\n' + PLAIN,
        "diskcache": "import diskcache\ndb = diskcache.Cache(PATH)\n" + PLAIN,
    }
)


def write_store(name, path, d):
    rm(path)
    if name == "pheap":
        import pheap

        with pheap.open(path) as db:
            with db.transaction() as tx:
                tx.update(d)
    elif name == "lmdb":
        import lmdb

        env = lmdb.open(path, map_size=1 << 36)
        with env.begin(write=True) as tx:
            for k, v in d.items():
                tx.put(k.encode(), pickle.dumps(v, protocol=5))
        env.sync(True)
        env.close()
    elif name == "pickle":
        with open(path, "wb") as f:
            pickle.dump(d, f, protocol=5)
            f.flush()
            os.fsync(f.fileno())
    elif name == "shelve":
        import dbm.dumb
        import shelve

        with shelve.Shelf(dbm.dumb.open(path, "n"), protocol=5) as db:
            for k, v in d.items():
                db[k] = v
    elif name == "sqlitedict":
        import sqlitedict

        with sqlitedict.SqliteDict(path, autocommit=False) as db:
            for k, v in d.items():
                db[k] = v
            db.commit()
    elif name == "diskcache":
        import diskcache

        with diskcache.Cache(path) as db:
            with db.transact():
                for k, v in d.items():
                    db[k] = v


def in_process(name, path):
    env = {"PATH": path}
    exec(OPENERS[name], env)
    return env


def spawn_to_first_lookup(name, path, key, runs):
    code = f"PATH = {path!r}\n" + OPENERS[name] + f"\nget({key!r})\n"
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:] if len(times) > 2 else times)


def bare_interpreter(runs=7):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def pss_of(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def readers_pss(code, procs=10):
    """Start `procs` children running `code` (which ends by printing "ready" and waiting on
    stdin), sum their PSS once all are ready."""
    ps = [
        subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(procs)
    ]
    try:
        for p in ps:
            line = p.stdout.readline()
            assert line.strip() == "ready", line
        return sum(pss_of(p.pid) for p in ps)
    finally:
        for p in ps:
            p.stdin.close()
            p.wait()


def read_all_code(name, path, n):
    return (
        f"PATH = {path!r}\nimport sys\nsys.path.insert(0, {HERE!r})\nimport workload\n"
        + OPENERS[name]
        + f"""
with snap() as g:
    for i in range({n}):
        g(workload.key(i))
print("ready", flush=True)
sys.stdin.read()
"""
    )


LOOKUPS_CHILD = """
import gc, statistics, sys, time
sys.path.insert(0, HERE)
import workload
keys = workload.sample_keys(N, LOOKUPS)
envs = {}
for name, path in STORES.items():
    envs[name] = {"PATH": path}
    exec(OPENERS[name], envs[name])
def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t
times = {(name, mode): [] for name in envs for mode in ("snap", "each")}
for r in range(ROUNDS + 1):  # round 0 warms
    for name, env in envs.items():
        def batch():
            with env["snap"]() as g:
                return [g(k) for k in keys]
        def each():
            get = env["get"]
            return [get(k) for k in keys]
        for mode, f in (("snap", batch), ("each", each)):
            gc.collect()
            t = timed(f)
            if r:
                times[(name, mode)].append(t)
print(repr({k: v for k, v in times.items()}))
"""


def lookups_in_child(stores, n, lookups, rounds):
    """Time lookups in a fresh interpreter (as a server that opens the store would do them):
    for each store, `rounds` rounds of `lookups` random lookups from one snapshot and as separate
    lookups, stores alternating within a round. Returns {name: (min snap, min each)} and leaves
    the per-round times in `lookups_in_child.last`."""
    code = (
        f"HERE = {HERE!r}\nN = {n}\nLOOKUPS = {lookups}\nROUNDS = {rounds}\nSTORES = {stores!r}\n"
        f"OPENERS = {OPENERS!r}\n" + LOOKUPS_CHILD
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    times = ast.literal_eval(out)
    lookups_in_child.last = times
    return {name: (min(times[(name, "snap")]), min(times[(name, "each")])) for name in stores}


def duel(args, out, scale, rounds=7):
    """pheap and py-lmdb lookups in one fresh process, alternating, so that the machine's drift
    falls on both alike: the median of the per-round ratios."""
    stores = {name: os.path.join(args.scratch, f"a-{name}") for name in ("pheap", "lmdb")}
    lookups_in_child(stores, args.n, args.lookups, rounds)
    times = lookups_in_child.last
    out.append(f"Interleaved in one fresh process ({rounds} rounds, pheap then py-lmdb in each), per 100k:\n")
    out.append("| lookups | pheap (median) | py-lmdb + pickle (median) | median of the per-round ratios |")
    out.append("|---|---:|---:|---:|")
    for mode, label in (("snap", "one snapshot"), ("each", "each its own")):
        p, l = times[("pheap", mode)], times[("lmdb", mode)]
        ratio = statistics.median(a / b for a, b in zip(p, l))
        out.append(
            f"| {label} | {statistics.median(p) * scale:.3f} s | {statistics.median(l) * scale:.3f} s | {ratio:.2f}x |"
        )
    out.append("")
    if not args.keep:
        rm(stores["lmdb"])


def bench_a(args, out):
    n = args.n
    cache = os.path.join(args.scratch, f"workload-{n}.pickle")
    if os.path.exists(cache):
        with open(cache, "rb") as f:
            d = pickle.load(f)
    else:
        d = workload.build(n)
        with open(cache, "wb") as f:
            pickle.dump(d, f, protocol=5)
    keys = workload.sample_keys(n, args.lookups)
    # Every store is written first; then the workload dict is dropped, so that the lookups are
    # timed without 14 M live objects for the garbage collector to walk (a server that opens a
    # store does not hold them either).
    written = {}
    for name in args.stores:
        if name == "shelve" and n > args.shelve_max:
            continue
        path = os.path.join(args.scratch, f"a-{name}")
        gc.collect()
        written[name] = timed(lambda: write_store(name, path, d))[0], disk_size(path)
        print(f"  (a) {name} written in {written[name][0]:.2f} s", file=sys.stderr, flush=True)
    vals = [d[k] for k in keys]
    del d
    gc.collect()
    # The writes leave gigabytes of dirty pages: flushed now, not by the kernel's writeback
    # threads competing for the 2 CPUs while lookups are timed.
    os.sync()
    rows = []
    bare = bare_interpreter()
    for name in args.stores:
        path = os.path.join(args.scratch, f"a-{name}")
        if name not in written:
            rows.append((name, "skipped (--shelve-max)"))
            continue
        write_s, size = written[name]
        runs = 3 if name in ("pickle", "shelve") else 9
        first = spawn_to_first_lookup(name, path, keys[0], runs)
        reps = 1 if name in ("shelve", "sqlitedict", "diskcache") else 3  # the slow ones
        snap_s, each_s = lookups_in_child({name: path}, n, args.lookups, reps)[name]
        if name in ("pheap", "lmdb"):
            assert in_process(name, path)["get"](keys[0]) == vals[0]
        gc.collect()
        pss = None
        if name in ("pheap", "lmdb") or (name == "pickle" and args.pss_pickle):
            pss = readers_pss(read_all_code(name, path, n))
        rows.append((name, write_s, size, first, snap_s, each_s, pss))
        print(f"  (a) {name}: {rows[-1]}", file=sys.stderr, flush=True)
        if name not in ("pheap", "lmdb") and not args.keep:
            rm(path)
    scale = 100_000 / args.lookups
    out.append(f"### (a) {n:,} entries; {args.lookups:,} random lookups (figures per 100k)\n")
    out.append(f"Bare interpreter start: {bare * 1000:.1f} ms.\n")
    out.append(
        "| store | bulk write | on disk | spawn to first lookup | 100k lookups, one snapshot | "
        "100k lookups, each its own | 10 readers, total PSS |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if len(r) == 2:
            out.append(f"| {r[0]} | {r[1]} | | | | | |")
            continue
        name, w, size, first, sn, ea, pss = r
        pss_s = f"{pss / 2**30:.2f} GiB" if pss is not None else ""
        out.append(
            f"| {name} | {w:.2f} s | {size / 1e6:.0f} MB | {first * 1000:.1f} ms | {sn * scale:.3f} s | "
            f"{ea * scale:.3f} s | {pss_s} |"
        )
    out.append("")
    if "pheap" in args.stores and "lmdb" in args.stores:
        cold_lookups(args, out, scale)
        duel(args, out, scale)  # removes the py-lmdb store
    # The codec alone, on the same values, in a fresh process.
    code = f"HERE = {HERE!r}\nN = {n}\nLOOKUPS = {args.lookups}\nPATH = {os.path.join(args.scratch, 'a-pheap')!r}\n" + DECODE_CHILD
    r = ast.literal_eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    out.append(
        f"Decoding alone, the same {len(keys):,} values, in a fresh process (medians of 7 alternating "
        f"rounds): native {r['dec'] * scale:.3f} s, pickle.loads {r['pick'] * scale:.3f} s (median ratio "
        f"{r['ratio']:.2f}x); encoded {r['enc_b']:.0f} B per value, pickled {r['pick_b']:.0f} B.\n"
    )


COLD_CHILD = """
import sys, time
sys.path.insert(0, HERE)
import workload
keys = workload.sample_keys(N, LOOKUPS)
t = time.perf_counter()
exec(OPENER)
with snap() as g:
    for k in keys:
        g(k)
print(time.perf_counter() - t)
"""


def cold_lookups(args, out, scale, rounds=5):
    """After a reboot: each store's files evicted, a fresh process opens it and does the random
    lookups from one snapshot (open included). pheap and py-lmdb alternate; medians and the
    median of the per-round ratios."""
    times = {"pheap": [], "lmdb": []}
    for _ in range(rounds):
        for name in times:
            path = os.path.join(args.scratch, f"a-{name}")
            evict(path)
            code = (
                f"HERE = {HERE!r}\nN = {args.n}\nLOOKUPS = {args.lookups}\nPATH = {path!r}\n"
                f"OPENER = {OPENERS[name]!r}\n" + COLD_CHILD
            )
            times[name].append(child_seconds(code))
    p, l = times["pheap"], times["lmdb"]
    ratio = statistics.median(a / b for a, b in zip(p, l))
    out.append(f"Cold page cache (the files evicted before each run; open included; {rounds} rounds, alternating), per 100k:\n")
    out.append("| lookups, one snapshot | pheap (median, min) | py-lmdb + pickle (median, min) | median of the per-round ratios |")
    out.append("|---|---:|---:|---:|")
    out.append(
        f"| cold | {statistics.median(p) * scale:.3f} s, {min(p) * scale:.3f} s | "
        f"{statistics.median(l) * scale:.3f} s, {min(l) * scale:.3f} s | {ratio:.2f}x |"
    )
    out.append("")


DECODE_CHILD = """
import gc, pickle, statistics, sys, time
sys.path.insert(0, HERE)
import pheap, workload
keys = workload.sample_keys(N, LOOKUPS)
with pheap.open(PATH, read_only=True).snapshot() as s:
    vals = [s[k] for k in keys]
encs = [pheap._pheap._encode_value(v)[0] for v in vals]
pick = [pickle.dumps(v, protocol=5) for v in vals]
dec = pheap._pheap._decode_value
def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t
d, p = [], []
for _ in range(7):
    gc.collect()
    d.append(timed(lambda: [dec(e) for e in encs]))
    gc.collect()
    p.append(timed(lambda: [pickle.loads(x) for x in pick]))
print(repr({"dec": statistics.median(d), "pick": statistics.median(p),
            "ratio": statistics.median(a / b for a, b in zip(d, p)),
            "enc_b": sum(map(len, encs)) / len(encs), "pick_b": sum(map(len, pick)) / len(pick)}))
"""


def bench_c(args, out):
    import pheap

    rows = []
    n = 200
    path = os.path.join(args.scratch, "c-pheap")
    rm(path)
    with pheap.open(path) as db:
        db["warm"] = 1
        t, _ = timed(lambda: [db.__setitem__(f"k{i}", {"foo": 9, "bar": i}) for i in range(n)])
        rows.append(("pheap (durability immediate)", t / n))
    rm(path)
    if "lmdb" in args.stores:
        import lmdb

        p = os.path.join(args.scratch, "c-lmdb")
        rm(p)
        env = lmdb.open(p, map_size=1 << 30, sync=True)

        def lm():
            for i in range(n):
                with env.begin(write=True) as tx:
                    tx.put(f"k{i}".encode(), pickle.dumps({"foo": 9, "bar": i}))

        rows.append(("py-lmdb (sync)", timed(lm)[0] / n))
        env.close()
        rm(p)
    if "sqlitedict" in args.stores:
        import sqlitedict

        p = os.path.join(args.scratch, "c-sqlitedict")
        rm(p)
        with sqlitedict.SqliteDict(p, autocommit=True) as db:
            db["warm"] = 1
            t, _ = timed(lambda: [db.__setitem__(f"k{i}", {"foo": 9, "bar": i}) for i in range(n)])
            db.commit(blocking=True)
        rows.append(("sqlitedict (autocommit)", t / n))
        rm(p)
    if "diskcache" in args.stores:
        import diskcache

        p = os.path.join(args.scratch, "c-diskcache")
        rm(p)
        with diskcache.Cache(p) as db:
            t, _ = timed(lambda: [db.set(f"k{i}", {"foo": 9, "bar": i}) for i in range(n)])
        rows.append(("diskcache", t / n))
        rm(p)
    out.append("### (c) single-key commits (`d[k] = {...}`, one commit each)\n")
    out.append("| store | per commit |")
    out.append("|---|---:|")
    for name, t in rows:
        out.append(f"| {name} | {t * 1e3:.3f} ms |")
    out.append("")


def bench_b(args, out):
    import numpy as np

    import pheap

    mib = args.arrays_mib
    per = 8
    arrays = [np.full((mib * 2**20 // 8 // per,), float(i)) for i in range(per)]
    obj = {"name": "model", "layers": [{"w": a, "shape": a.shape, "i": i} for i, a in enumerate(arrays)]}
    path = os.path.join(args.scratch, "b-pheap")
    rm(path)
    with pheap.open(path) as db:
        w_pheap, _ = timed(lambda: db.__setitem__("model", obj))
    jpath = os.path.join(args.scratch, "b.joblib")
    import joblib

    w_job, _ = timed(lambda: joblib.dump(obj, jpath))
    npys = os.path.join(args.scratch, "b-npy")
    os.makedirs(npys, exist_ok=True)
    for i, a in enumerate(arrays):
        np.save(os.path.join(npys, f"{i}.npy"), a)
    del arrays, obj
    gc.collect()
    probe = """
import time, resource, sys
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
import numpy
{imports}
r0 = rss()
t = time.perf_counter()
obj = {load}
n = sum(int(l["w"].shape[0]) for l in obj["layers"])
dt = time.perf_counter() - t
print(dt, rss() - r0, n)
"""
    rows = []
    for name, imports, load in (
        ("pheap", "import pheap\ndb = pheap.open(%r, read_only=True)" % path, 'db["model"]'),
        ("joblib (mmap_mode='r')", "import joblib", "joblib.load(%r, mmap_mode='r')" % jpath),
        ("joblib (load)", "import joblib", "joblib.load(%r)" % jpath),
    ):
        res = []
        for _ in range(3):
            o = subprocess.run(
                [sys.executable, "-c", probe.format(imports=imports, load=load)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            res.append((float(o[0]), int(o[1])))
        rows.append((name, min(r[0] for r in res), statistics.median(r[1] for r in res)))
    out.append(f"### (b) {mib} MiB of numpy arrays inside containers (8 arrays in a list of dicts)\n")
    out.append(f"Write: pheap {w_pheap:.2f} s, joblib.dump {w_job:.2f} s.\n")
    out.append("| load | time | RSS growth |")
    out.append("|---|---:|---:|")
    for name, t, r in rows:
        out.append(f"| {name} | {t * 1e3:.1f} ms | {r / 2**20:.1f} MiB |")
    out.append("")
    cold_arrays(args, out, path, jpath, npys)
    rm(path)
    os.remove(jpath)
    shutil.rmtree(npys)


def cold_arrays(args, out, path, jpath, npys, rounds=5):
    """After a reboot: the files evicted, a fresh process loads the arrays and sums every one
    (load included), against the same bytes read by `cat` into /dev/null."""
    npy_files = [os.path.join(npys, f) for f in sorted(os.listdir(npys))]
    sum_all = "s = sum(float(l['w'].sum()) for l in obj['layers'])\n"
    # (files to evict, imports (not timed), the load and the sums (timed))
    ways = {
        "pheap": (path, "import numpy, pheap", f"obj = pheap.open({path!r}, read_only=True)['model']\n" + sum_all),
        "joblib (mmap_mode='r')": (jpath, "import numpy, joblib", f"obj = joblib.load({jpath!r}, mmap_mode='r')\n" + sum_all),
        "np.load(mmap_mode='r'), one .npy per array": (
            npys,
            "import numpy as np",
            f"s = sum(float(np.load(f, mmap_mode='r').sum()) for f in {npy_files!r})\n",
        ),
    }
    times = {name: [] for name in ways}
    times["cat of the .npy files > /dev/null"] = []
    for _ in range(rounds):
        for name, (what, imports, code) in ways.items():
            evict(what)
            timed_code = f"import time\n{imports}\nt = time.perf_counter()\n{code}print(time.perf_counter() - t)"
            times[name].append(child_seconds(timed_code))
        evict(npys)
        t = time.perf_counter()
        subprocess.run(["cat", *npy_files], stdout=subprocess.DEVNULL, check=True)
        times["cat of the .npy files > /dev/null"].append(time.perf_counter() - t)
    base = times["pheap"]
    out.append(f"Cold page cache (files evicted before each run; {rounds} rounds, alternating): load and sum every array.\n")
    out.append("| read | median | min | pheap / this (median of per-round ratios) |")
    out.append("|---|---:|---:|---:|")
    for name, ts in times.items():
        ratio = statistics.median(a / b for a, b in zip(base, ts))
        out.append(f"| {name} | {statistics.median(ts):.3f} s | {min(ts):.3f} s | {ratio:.2f}x |")
    out.append("")


def bench_e(args, out):
    import numpy as np

    import pheap

    side = args.matrix_side
    x = np.arange(side * side, dtype=np.float64).reshape(side, side)
    path = os.path.join(args.scratch, "e-pheap")
    npy = os.path.join(args.scratch, "e.npy")
    rm(path)
    with pheap.open(path) as db:
        w_pheap, _ = timed(lambda: db.__setitem__("matrix", x))
    w_np, _ = timed(lambda: np.save(npy, x))
    del x
    gc.collect()
    probe = """
import time, numpy as np, random
{imports}
t = time.perf_counter()
x = {load}
dt = time.perf_counter() - t
rng = np.random.default_rng(1)
rows = rng.integers(0, {side}, 1_000_000)
cols = rng.integers(0, {side}, 1_000_000)
x[rows, cols].sum()  # warm
best = min(__import__("timeit").repeat(lambda: x[rows, cols].sum(), number=1, repeat=5))
print(dt, best)
"""
    loads = (
        ("pheap", "import pheap\ns = pheap.open(%r, read_only=True).snapshot()" % path, 's["matrix"]'),
        ("np.load(mmap_mode='r')", "", "np.load(%r, mmap_mode='r')" % npy),
    )
    rows = []
    for name, imports, load in loads:
        res = []
        for _ in range(3):
            o = subprocess.run(
                [sys.executable, "-c", probe.format(imports=imports, load=load, side=side)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            res.append((float(o[0]), float(o[1])))
        code = f"""
import numpy as np, sys
{imports}
x = {load}
x.sum()
print("ready", flush=True)
sys.stdin.read()
"""
        pss = readers_pss(code)
        rows.append((name, min(r[0] for r in res), min(r[1] for r in res), pss))
    nbytes = side * side * 8
    out.append(f"### (e) a {nbytes / 2**30:.2f} GiB float64 matrix ({side} x {side})\n")
    out.append(f"Write: pheap {w_pheap:.2f} s, np.save {w_np:.2f} s.\n")
    out.append("| open | open to array | 1M random element reads | 10 readers (each sums all), total PSS |")
    out.append("|---|---:|---:|---:|")
    for name, t, r, pss in rows:
        out.append(f"| {name} | {t * 1e3:.3f} ms | {r * 1e3:.1f} ms | {pss / 2**30:.2f} GiB |")
    out.append(f"\npheap's element reads at {rows[1][2] / rows[0][2]:.2f}x np.load's speed.\n")
    rm(path)
    os.remove(npy)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=workload.N_FULL, help="entries of workload (a)")
    ap.add_argument("--lookups", type=int, default=100_000)
    ap.add_argument("--stores", default=",".join(ALL_STORES))
    ap.add_argument("--scratch", required=True, help="a directory for the files (emptied of ours)")
    ap.add_argument("--out", help="also write the report here")
    ap.add_argument("--parts", default="a,b,c,e", help="which problems to measure")
    ap.add_argument("--shelve-max", type=int, default=workload.N_FULL, help="skip shelve above this n")
    ap.add_argument("--pss-pickle", action="store_true", help="also 10 processes each unpickling")
    ap.add_argument("--arrays-mib", type=int, default=1024)
    ap.add_argument("--matrix-side", type=int, default=16384, help="2 GiB at 16384")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.stores = [s for s in args.stores.split(",") if s]
    os.makedirs(args.scratch, exist_ok=True)
    out = [f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs.\n"]
    parts = args.parts.split(",")
    if "a" in parts:
        bench_a(args, out)
    if "c" in parts:
        bench_c(args, out)
    if "b" in parts:
        bench_b(args, out)
    if "e" in parts:
        bench_e(args, out)
    report = "\n".join(out)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
