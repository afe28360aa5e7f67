"""One big dict for every task of an engine (issue 26): pheap.Published against each engine's own
way of sharing it, on workload (a) (workload.py), in one run.

    python benches/python/cluster.py --scratch DIR [--n 1000000] [--workers 8] [--engines mp,ray,dask,spark]

For each engine, 8 worker processes run batches of tasks that each look up 10 keys:
- pheap: the task gets the `Published` handle and calls `pub.open()` (the node cache's file,
  opened once per process);
- Ray: `ray.put(d)` and the ObjectRef as the task's argument; Dask: `client.scatter(d,
  broadcast=True)`; Spark: `sc.broadcast(d)` read as `bc.value`; multiprocessing: a Pool whose
  initializer unpickles the dict into each worker.
Figures: the first batch (includes loading the dict where the engine loads it), the per-task
overhead of a warm batch (its time less that of the same tasks without the dict, per task and
worker), and the workers' summed PSS growth after every worker has read every value. Beside
them: publish against `copy_to`, the node cache's download against a plain copy + fsync, and the
time from unpickling the handle to the first value in a fresh process that has the file.
"""

import argparse
import faulthandler
import json
import multiprocessing
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workload  # noqa: E402
from bench import evict, pss_of  # noqa: E402

import pheap  # noqa: E402

T_TASKS = 32
# Dask's broadcast of a big dict can take very long (workers paused over their memory budget);
# it is given this long, then reported as failed.
SCATTER_TIMEOUT = 240
LOOKUPS = 10


# ---- task bodies (module level: every engine ships them) ---------------------------------------


def _lookups(d, keys):
    return sum(1 for k in keys if d[k] is not None)


def task_pub(pub, keys):
    db = pub.open()
    return os.getpid(), _lookups(db, keys)


def task_obj(obj, keys):
    return os.getpid(), _lookups(obj, keys)


def task_noop(_, keys):
    return os.getpid(), len(keys)


# The touching tasks read every value, then linger, so that every worker gets one.
LINGER = 0.5


def touch_pub(pub, _):
    db = pub.open()
    n = sum(1 for _ in db.values())
    time.sleep(LINGER)
    return os.getpid(), n


def touch_obj(obj, _):
    n = sum(1 for _ in obj.values())
    time.sleep(LINGER)
    return os.getpid(), n


_G = None


def init_load(path):
    global _G
    with open(path, "rb") as f:
        _G = pickle.load(f)


def task_global(_, keys):
    return os.getpid(), _lookups(_G, keys)


def touch_global(_, __):
    n = sum(1 for _ in _G.values())
    time.sleep(LINGER)
    return os.getpid(), n


# ---- one engine's run --------------------------------------------------------------------------


def measure(run, shared, task, touch, keys, workers, base_pss=None):
    """run(fn, arg, keys_list) -> list of (pid, n). Returns the figures of one way of sharing.
    `base_pss`: a worker's PSS before it holds anything (default: measured after no-op tasks)."""
    batch = [keys] * T_TASKS
    t = time.perf_counter()
    pids = {p for p, _ in run(task_noop, None, batch)}
    noop_first = time.perf_counter() - t
    noop = []
    for _ in range(3):
        t = time.perf_counter()
        pids |= {p for p, _ in run(task_noop, None, batch)}
        noop.append(time.perf_counter() - t)
    base = {p: pss_of(p) if base_pss is None else base_pss for p in pids}
    t = time.perf_counter()
    out = run(task, shared, batch)
    first = time.perf_counter() - t
    assert all(n == LOOKUPS for _, n in out), out[:3]
    warm = []
    for _ in range(2):
        t = time.perf_counter()
        out = run(task, shared, batch)
        warm.append(time.perf_counter() - t)
    # One task at a time: the latency a task pays to reach the dict (and read 10 values).
    single, single_noop = [], []
    for _ in range(5):
        t = time.perf_counter()
        run(task_noop, None, [keys])
        single_noop.append(time.perf_counter() - t)
        t = time.perf_counter()
        run(task, shared, [keys])
        single.append(time.perf_counter() - t)
    touched = run(touch, shared, [keys] * (2 * workers))
    pids |= {p for p, _ in touched}
    fallback = statistics.median(base.values())
    grown = sum(max(0, pss_of(p) - base.get(p, fallback)) for p in pids)
    per_task = (statistics.median(warm) - statistics.median(noop)) / (T_TASKS / workers)
    return {
        "first_batch_s": first,
        "noop_first_batch_s": noop_first,
        "warm_batch_s": statistics.median(warm),
        "noop_batch_s": statistics.median(noop),
        "per_task_overhead_ms": per_task * 1e3,
        "single_task_ms": statistics.median(single) * 1e3,
        "single_noop_task_ms": statistics.median(single_noop) * 1e3,
        "single_task_overhead_ms": (statistics.median(single) - statistics.median(single_noop)) * 1e3,
        "workers_seen": len(pids),
        "pss_growth_bytes": grown,
        "base_pss_bytes": fallback,
    }


def engine_mp(d, pub, pickle_path, keys, workers):
    ctx = multiprocessing.get_context("spawn")
    res = {}
    with ctx.Pool(workers) as pool:
        res["pheap"] = measure(lambda f, a, b: pool.starmap(f, [(a, k) for k in b]), pub, task_pub, touch_pub, keys, workers)
    # The initializer loads the dict before any task: a plain pool's workers are the baseline.
    t = time.perf_counter()
    with ctx.Pool(workers, initializer=init_load, initargs=(pickle_path,)) as pool:
        pool.starmap(task_noop, [(None, keys)] * workers)
        start = time.perf_counter() - t
        r = measure(
            lambda f, a, b: pool.starmap(f, [(a, k) for k in b]),
            None,
            task_global,
            touch_global,
            keys,
            workers,
            base_pss=res["pheap"]["base_pss_bytes"],
        )
        r["pool_start_with_initializer_s"] = start
        res["initializer"] = r
    return res


def engine_ray(d, pub, pickle_path, keys, workers, scratch):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    tmp = f"/tmp/pheap-bench-ray-{os.getpid()}"
    os.makedirs(f"{tmp}/ray", exist_ok=True)
    os.environ["RAY_TMPDIR"] = tmp
    ray.init(num_cpus=workers, include_dashboard=False, _temp_dir=f"{tmp}/ray", log_to_driver=False)
    try:
        fns = {}

        def run(f, a, b):
            r = fns.setdefault(f, ray.remote(f))
            return ray.get([r.remote(a, k) for k in b])

        res = {"pheap": measure(run, pub, task_pub, touch_pub, keys, workers)}
        t = time.perf_counter()
        ref = ray.put(d)
        put = time.perf_counter() - t
        r = measure(run, ref, task_obj, touch_obj, keys, workers)
        r["put_s"] = put
        res["ray.put"] = r
        return res
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def engine_dask(d, pub, pickle_path, keys, workers, memory_limit="auto"):
    from distributed import Client, LocalCluster

    res = {}
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit=memory_limit
    ) as cluster, Client(cluster) as client:

        def run(f, a, b):
            return client.gather(client.map(f, [a] * len(b), b, pure=False))

        res["pheap"] = measure(run, pub, task_pub, touch_pub, keys, workers)
        print(f"dask pheap: {json.dumps(res['pheap'])}", flush=True)
        t = time.perf_counter()
        # In a thread, given SCATTER_TIMEOUT: its own timeout does not bound the replication.
        box = {}

        def scatter_it():
            try:
                box["fut"] = client.scatter([d], broadcast=True)[0]  # a list: scatter(dict) scatters each value
            except Exception as e:
                box["error"] = e

        th = threading.Thread(target=scatter_it, daemon=True)
        th.start()
        th.join(SCATTER_TIMEOUT)
        scatter = time.perf_counter() - t
        if "fut" in box:
            try:
                r = measure(run, box["fut"], task_obj, touch_obj, keys, workers)
            except Exception as e:  # a worker over its memory budget is restarted: the data is lost
                r = {"failed": f"{type(e).__name__}: {e}"[:300]}
        else:
            why = box.get("error", f"did not finish in {SCATTER_TIMEOUT} s")
            r = {"failed": f"scatter(broadcast=True): {why}"[:300]}
        r["scatter_s"] = scatter
        r["memory_limit"] = memory_limit
        res["scatter(broadcast=True)"] = r
    return res


def engine_spark(d, pub, pickle_path, keys, workers):
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark import SparkConf, SparkContext

    conf = SparkConf().setMaster(f"local[{workers}]").setAppName("pheap-bench").set("spark.ui.enabled", "false")
    conf.set("spark.driver.memory", "8g").set("spark.python.worker.reuse", "true")
    sc = SparkContext(conf=conf)
    try:

        def run(f, a, b):
            ks = b[0]
            return sc.parallelize(range(len(b)), len(b)).map(lambda _: f(a, ks)).collect()

        res = {"pheap": measure(run, pub, task_pub, touch_pub, keys, workers)}
        t = time.perf_counter()
        bc = sc.broadcast(d)
        broadcast = time.perf_counter() - t

        def run_bc(f, a, b):
            ks = b[0]
            return sc.parallelize(range(len(b)), len(b)).map(lambda _: f(bc.value if a is not None else None, ks)).collect()

        r = measure(run_bc, True, task_obj, touch_obj, keys, workers)
        r["broadcast_s"] = broadcast
        res["broadcast"] = r
        bc.destroy()
        return res
    finally:
        sc.stop()


# ---- pheap's own figures -----------------------------------------------------------------------


def first_lookup_code(pub_blob, key):
    return f"""
import pickle, time
t = time.perf_counter()
import pheap
t1 = time.perf_counter()
pub = pickle.loads({pub_blob!r})
v = pub.open()[{key!r}]
t2 = time.perf_counter()
print(t2 - t1, t2 - t)
"""


def own_figures(db, pub_dir, scratch, n, rounds=5):
    out = {}
    copies, publishes = [], []
    for i in range(rounds):
        dest = os.path.join(scratch, f"copy{i}.pheap")
        t = time.perf_counter()
        db.copy_to(dest)
        copies.append(time.perf_counter() - t)
        os.remove(dest)
        pdir = os.path.join(scratch, f"pub{i}")
        t = time.perf_counter()
        pheap.publish(db, pdir)
        publishes.append(time.perf_counter() - t)
        shutil.rmtree(pdir)
    out["copy_to_s"] = statistics.median(copies)
    out["publish_s"] = statistics.median(publishes)
    pub = pheap.publish(db, pub_dir)
    src = os.path.join(pub_dir, f"{pub.digest}.pheap")
    out["file_bytes"] = pub.size
    plain, fetch = [], []
    for i in range(rounds):
        dest = os.path.join(scratch, "plain.copy")
        t = time.perf_counter()
        shutil.copyfile(src, dest)
        with open(dest, "rb") as f:
            os.fsync(f.fileno())
        plain.append(time.perf_counter() - t)
        os.remove(dest)
        cache = os.path.join(scratch, f"cache-dl{i}")
        p = pheap.Published(pub_dir, cache_dir=cache)
        t = time.perf_counter()
        p.fetch()
        fetch.append(time.perf_counter() - t)
        shutil.rmtree(cache)
    out["plain_copy_fsync_s"] = statistics.median(plain)
    out["download_s"] = statistics.median(fetch)
    # First value in a fresh process on a node that has the file (warm page cache, and cold).
    cache = os.path.join(scratch, "cache-first")
    p = pheap.Published(pub_dir, cache_dir=cache)
    p.fetch()
    blob = pickle.dumps(p)
    out["handle_pickle_bytes"] = len(blob)
    key = workload.key(n // 2)
    for phase in ("warm", "cold"):
        firsts, totals = [], []
        for _ in range(rounds + 2):
            if phase == "cold":
                evict(os.path.join(cache, f"{p.digest}.pheap"))
            r = subprocess.run([sys.executable, "-c", first_lookup_code(blob, key)], capture_output=True, text=True, check=True)
            a, b = map(float, r.stdout.split())
            firsts.append(a)
            totals.append(b)
        out[f"first_value_{phase}_ms"] = statistics.median(firsts[2:]) * 1e3
        out[f"first_value_{phase}_with_import_ms"] = statistics.median(totals[2:]) * 1e3
    return pub, out


def main():
    faulthandler.dump_traceback_later(float(os.environ.get("PHEAP_BENCH_STACKS_AFTER", "1e9")))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--engines", default="mp,ray,dask,spark")
    ap.add_argument("--scratch", required=True)
    ap.add_argument("--out", default=None, help="JSON results file")
    args = ap.parse_args()
    os.makedirs(args.scratch, exist_ok=True)
    os.environ["PHEAP_CACHE_DIR"] = os.path.join(args.scratch, "node-cache")
    shutil.rmtree(os.environ["PHEAP_CACHE_DIR"], ignore_errors=True)

    t = time.perf_counter()
    d = workload.build(args.n)
    print(f"workload (a): {len(d)} entries built in {time.perf_counter() - t:.1f} s", flush=True)
    heap_path = os.path.join(args.scratch, "src.pheap")
    for p in (heap_path, heap_path + "-lock"):
        if os.path.exists(p):
            os.remove(p)
    db = pheap.open(heap_path, durability="none")
    db.update(d)
    db.checkpoint()
    pickle_path = os.path.join(args.scratch, "d.pickle")
    with open(pickle_path, "wb") as f:
        pickle.dump(d, f, protocol=5)
    pub_dir = os.path.join(args.scratch, "published")
    shutil.rmtree(pub_dir, ignore_errors=True)
    pub, own = own_figures(db, pub_dir, args.scratch, args.n)
    own["pickle_bytes"] = os.path.getsize(pickle_path)
    print(json.dumps(own, indent=1), flush=True)
    pub = pheap.Published(pub_dir)
    keys = workload.sample_keys(args.n, LOOKUPS)
    results = {"n": args.n, "workers": args.workers, "tasks": T_TASKS, "lookups_per_task": LOOKUPS, "pheap": own, "engines": {}}
    for e in args.engines.split(","):
        t = time.perf_counter()
        if e == "mp":
            r = engine_mp(d, pub, pickle_path, keys, args.workers)
        elif e == "ray":
            r = engine_ray(d, pub, pickle_path, keys, args.workers, args.scratch)
        elif e == "dask":
            r = engine_dask(d, pub, pickle_path, keys, args.workers)
        elif e == "dask-nolimit":  # the same, workers without a memory budget (none restarted)
            r = engine_dask(d, pub, pickle_path, keys, args.workers, memory_limit=0)
        elif e == "spark":
            r = engine_spark(d, pub, pickle_path, keys, args.workers)
        else:
            raise SystemExit(f"--engines: unknown engine {e!r}")
        results["engines"][e] = r
        print(f"{e} ({time.perf_counter() - t:.0f} s): {json.dumps(r, indent=1)}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    print(
        "\n| engine | way | first batch (s) | warm batch (s) | overhead per task in a batch (ms) "
        "| one task alone, overhead (ms) | ΣPSS growth of workers (MiB) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for e, r in results["engines"].items():
        for way, m in r.items():
            if "failed" in m:
                print(f"| {e} | {way} | failed: {m['failed'][:120]} | | | | |")
                continue
            print(
                f"| {e} | {way} | {m['first_batch_s']:.2f} | {m['warm_batch_s']:.3f} | "
                f"{m['per_task_overhead_ms']:.2f} | {m['single_task_overhead_ms']:.2f} | "
                f"{m['pss_growth_bytes'] / 2**20:.0f} |"
            )
    print(f"\nfile {own['file_bytes'] / 2**20:.0f} MiB, pickle {own['pickle_bytes'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
