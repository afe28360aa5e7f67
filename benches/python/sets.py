"""Shard sets against Parquet, each engine against itself (issue 27), in one run.

    python benches/python/sets.py --scratch DIR [--n 1000000] [--shards 8] [--engines dask,ray,spark]

Data: `--n` rows shaped as workload (a)'s records (workload.py: key "item/%012x", id, name,
title, score, count, tags, pos, active, parent), as one pandas DataFrame of 8 partitions.
For each engine, on 2 workers (Dask LocalCluster processes, Ray num_cpus=2, Spark local[2]),
the rows already in the engine (persisted, materialised or cached) and its workers warmed by an
untimed write of a 1,000-row set: write the rows as a set of `--shards` shards (Dask: with its
configured shuffle, with `shuffle="tasks"`, and without a shuffle) and as Parquet (time,
bytes), then scan each
whole (every column to Arrow and counted), cold (files evicted from the page cache; the set's
first scan also fetches each shard into the node cache) and warm. Baselines in this process:
single-process `insert_batches` into one heap (the write target's unit) and one heap's
`batches` scan (the scan target's unit). Lookups: 100k random keys from the set (`get_many`,
one process) against Parquet's ways: a filtered read (`key in [...]`, pyarrow) and a pandas
index built after a full read. Planning: building a 1,024-shard read (Dask `read_set`, Ray
`get_read_tasks`) from its manifest, no heap opened.
"""

import argparse
import json
import os
import random
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workload  # noqa: E402
from bench import evict  # noqa: E402

import pheap  # noqa: E402
from pheap import _setpub  # noqa: E402

WORKERS = 2


def frame(n):
    import pandas as pd

    rng = random.Random(1)
    vocab = workload.vocabulary(rng)
    cols = {k: [] for k in ("key", "id", "name", "title", "score", "count", "tags", "pos", "active", "parent")}
    for i in range(n):
        cols["key"].append(workload.key(i))
        cols["id"].append(rng.randrange(1 << 40))
        cols["name"].append(workload.text(rng, 6, 40))
        cols["title"].append(workload.text(rng, 20, 260))
        cols["score"].append(rng.random() * 100.0)
        cols["count"].append(rng.randrange(100000))
        cols["tags"].append([rng.choice(vocab) for _ in range(rng.randint(0, 5))])
        cols["pos"].append([rng.random(), rng.random()])
        cols["active"].append(rng.random() < 0.5)
        cols["parent"].append(rng.randrange(1 << 20) if rng.random() < 0.5 else None)
    df = pd.DataFrame(cols)
    df["parent"] = df["parent"].astype("Int64")
    return df


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def evict_tree(path):
    for root, _, files in os.walk(path):
        for f in files:
            evict(os.path.join(root, f))


def timed(f):
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    return path


def scan_phases(scan, files, cache=None):
    """(cold seconds, warm seconds, rows): cold after evicting `files` (and emptying the node
    cache), then warm."""
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
    evict_tree(files)
    cold, rows = timed(scan)
    warm, rows2 = timed(scan)
    assert rows == rows2, (rows, rows2)
    return cold, warm, rows


# ---- engines ----------------------------------------------------------------------------------


def run_dask(df, scratch, n, cache):
    import dask.dataframe as dd
    import distributed

    import pheap.dask

    out = {}
    with distributed.LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="6GiB"
    ) as cluster, distributed.Client(cluster):
        ddf = dd.from_pandas(df, npartitions=8).persist()
        distributed.wait(ddf)  # the rows on the workers before anything is timed
        # Untimed: each worker imports pheap and runs a shuffle once (first uses are slower).
        warm = fresh(f"{scratch}/dask-warm.set")
        pheap.dask.write_set(dd.from_pandas(df.head(1000), npartitions=2), warm, shards=n, key="key")
        set_url, pq = fresh(f"{scratch}/dask.set"), fresh(f"{scratch}/dask.parquet")
        out["set_write_s"], _ = timed(lambda: pheap.dask.write_set(ddf, set_url, shards=n, key="key"))
        tasks = fresh(f"{scratch}/dask-tasks.set")
        out["set_write_tasks_s"], _ = timed(
            lambda: pheap.dask.write_set(ddf, tasks, shards=n, key="key", shuffle="tasks")
        )
        out["parquet_write_s"], _ = timed(lambda: ddf.to_parquet(pq, write_index=False))
        merged = fresh(f"{scratch}/dask-merged.set")
        out["set_write_unshuffled_s"], _ = timed(
            lambda: pheap.dask.write_set(ddf, merged, shards=n, key="key", shuffle=False)
        )
        out["set_bytes"], out["parquet_bytes"] = du(set_url), du(pq)
        # every column materialised to Arrow/pandas on the workers, rows counted
        out["set_scan"] = scan_phases(
            lambda: int(pheap.dask.read_set(set_url).map_partitions(len).sum().compute()), set_url, cache
        )
        out["parquet_scan"] = scan_phases(
            lambda: int(dd.read_parquet(pq).map_partitions(len).sum().compute()), pq
        )
    return out, set_url, pq


def run_ray(df, scratch, n, cache):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    import pheap.ray

    d = f"/tmp/pheap-bench-ray-{os.getpid()}"
    os.makedirs(d, exist_ok=True)
    ray.init(num_cpus=WORKERS, include_dashboard=False, _temp_dir=d, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    out = {}
    try:
        ds = ray.data.from_pandas(df).repartition(8).materialize()
        # Untimed: the workers import pheap once.
        warm = fresh(f"{scratch}/ray-warm.set")
        ray.data.from_pandas(df.head(1000)).write_datasink(pheap.ray.SetSink(warm, shards=n, key="key"))
        set_url, pq = fresh(f"{scratch}/ray.set"), fresh(f"{scratch}/ray.parquet")
        out["set_write_s"], _ = timed(lambda: ds.write_datasink(pheap.ray.SetSink(set_url, shards=n, key="key")))
        out["parquet_write_s"], _ = timed(lambda: ds.write_parquet(pq))
        out["set_bytes"], out["parquet_bytes"] = du(set_url), du(pq)

        def count(ds):
            return sum(b.num_rows for b in ds.iter_batches(batch_format="pyarrow", batch_size=None))

        out["set_scan"] = scan_phases(lambda: count(pheap.ray.read_set(set_url)), set_url, cache)
        out["parquet_scan"] = scan_phases(lambda: count(ray.data.read_parquet(pq)), pq)
    finally:
        ray.shutdown()
        shutil.rmtree(d, ignore_errors=True)
    return out


def run_spark(df, scratch, n, cache):
    from pyspark.sql import SparkSession

    import pheap.spark

    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master(f"local[{WORKERS}]")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "6g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    spark.dataSource.register(pheap.spark.DataSource)
    out = {}
    try:
        sdf = spark.createDataFrame(df).repartition(8).cache()
        sdf.count()
        # Untimed: Spark's Python workers start and import pheap once (its Parquet writer
        # needs none).
        warm = fresh(f"{scratch}/spark-warm.set")
        small = spark.createDataFrame(df.head(1000)).repartition(2)
        small.write.format("pheap").option("shards", n).option("key", "key").mode("overwrite").save(warm)
        set_url, pq = fresh(f"{scratch}/spark.set"), fresh(f"{scratch}/spark.parquet")
        out["set_write_s"], _ = timed(
            lambda: sdf.write.format("pheap").option("shards", n).option("key", "key").mode("overwrite").save(set_url)
        )
        out["parquet_write_s"], _ = timed(lambda: sdf.write.parquet(pq))
        out["set_bytes"], out["parquet_bytes"] = du(set_url), du(pq)
        # count() alone lets Spark skip the columns; a sum over a column and the longest title
        # make it read them
        from pyspark.sql import functions as F

        def scan(d):
            r = d.agg(F.count("*"), F.sum("score"), F.max(F.length("title"))).collect()[0]
            return r[0]

        out["set_scan"] = scan_phases(lambda: scan(spark.read.format("pheap").load(set_url)), set_url, cache)
        out["parquet_scan"] = scan_phases(lambda: scan(spark.read.parquet(pq)), pq)
    finally:
        spark.stop()
    return out


# ---- baselines, lookups, planning ------------------------------------------------------------


def baselines(df, scratch):
    import pyarrow as pa

    table = pa.Table.from_pandas(df, preserve_index=False)
    path = fresh(f"{scratch}/one.pheap")
    db = pheap.open(path, durability="none")
    t_ins, _ = timed(lambda: db.insert_batches(table))
    db.checkpoint()
    db.close()
    db = pheap.open(path, read_only=True)

    def scan():
        return sum(b.num_rows for b in db.batches())

    cold, warm, rows = scan_phases(scan, path)
    db.close()
    return {"insert_rows_per_s": len(df) / t_ins, "batches_cold_rows_per_s": rows / cold, "batches_warm_rows_per_s": rows / warm}


def lookups(set_url, pq, n_entries, cache, k=100_000):
    import pyarrow.dataset as pads
    import pyarrow.parquet as papq

    keys = workload.sample_keys(n_entries, k)
    out = {}
    for phase in ("cold", "warm"):
        if phase == "cold":
            shutil.rmtree(cache, ignore_errors=True)
            evict_tree(set_url)
        ps = pheap.PublishedSet(set_url)
        t, got = timed(lambda: ps.get_many(keys))
        assert all(v is not None for v in got)
        out[f"set_get_many_{phase}_s"] = t
        for h in ps._heaps.values():
            h.close()
    # One key answered at a time (a service's request), as a filtered read each: 20 keys, the
    # mean per key; against the set's per-key get over all 100k.
    ps = pheap.PublishedSet(set_url)
    t, _ = timed(lambda: [ps.get(x) for x in keys])
    out["set_get_per_key_s"] = t / len(keys)
    dset = pads.dataset(pq)
    t, _ = timed(lambda: [dset.to_table(filter=pads.field("key") == x).num_rows for x in keys[:20]])
    out["parquet_filter_per_key_s"] = t / 20
    for phase in ("cold", "warm"):
        if phase == "cold":
            evict_tree(pq)
        t, tab = timed(lambda: pads.dataset(pq).to_table(filter=pads.field("key").isin(keys)))
        assert tab.num_rows == len(set(keys))
        out[f"parquet_filter_{phase}_s"] = t

        def index_then_get():
            pdf = papq.read_table(pq).to_pandas().set_index("key")
            return [pdf.loc[x, "name"] for x in keys]

        if phase == "cold":
            evict_tree(pq)
        out[f"pandas_index_{phase}_s"], _ = timed(index_then_get)
    return out


def planning(scratch, cache):
    """A 1,024-shard set (small shards), then the time to plan a read of it."""
    import pyarrow as pa

    import pheap.dask

    url = fresh(f"{scratch}/wide.set")
    n = 1024
    t = pa.table({"key": [f"k{i}" for i in range(20_000)], "v": list(range(20_000))})
    _setpub.commit(url, n, _setpub.write_pieces(url, n, t), 0)
    shutil.rmtree(cache, ignore_errors=True)
    out = {}
    for rep in range(3):
        t_dask, ddf = timed(lambda: pheap.dask.read_set(url))
        assert ddf.npartitions == n
        out.setdefault("dask_read_set_s", []).append(t_dask)
    try:
        import pheap.ray

        for rep in range(3):
            t_ray, tasks = timed(lambda: pheap.ray.SetDatasource(url).get_read_tasks(2))
            assert len(tasks) == n
            out.setdefault("ray_read_tasks_s", []).append(t_ray)
    except ImportError:
        pass
    out["heaps_opened"] = len(os.listdir(cache)) if os.path.isdir(cache) else 0
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scratch", required=True)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--engines", default="dask,ray,spark")
    ap.add_argument("--json", help="write the figures here too")
    a = ap.parse_args()
    os.makedirs(a.scratch, exist_ok=True)
    cache = os.path.join(a.scratch, "cache")
    os.environ["PHEAP_CACHE_DIR"] = cache
    t, df = timed(lambda: frame(a.n))
    print(f"data: {a.n} rows in {t:.1f} s", flush=True)
    res = {"n": a.n, "shards": a.shards, "workers": WORKERS}
    res["baseline"] = baselines(df, a.scratch)
    print(json.dumps(res["baseline"]), flush=True)
    engines = a.engines.split(",")
    set_url = pq = None
    if "dask" in engines:
        res["dask"], set_url, pq = run_dask(df, a.scratch, a.shards, cache)
        print("dask", json.dumps(res["dask"]), flush=True)
    if "ray" in engines:
        res["ray"] = run_ray(df, a.scratch, a.shards, cache)
        print("ray", json.dumps(res["ray"]), flush=True)
    if "spark" in engines:
        res["spark"] = run_spark(df, a.scratch, a.shards, cache)
        print("spark", json.dumps(res["spark"]), flush=True)
    if set_url is None:
        set_url, pq = f"{a.scratch}/local.set", f"{a.scratch}/local.parquet"
    if not os.path.exists(pq):
        import pyarrow as pa
        import pyarrow.parquet as papq

        os.makedirs(fresh(pq))
        papq.write_table(pa.Table.from_pandas(df, preserve_index=False), f"{pq}/part.0.parquet")
    if not os.path.exists(set_url):
        import pyarrow as pa

        tab = pa.Table.from_pandas(df, preserve_index=False)
        _setpub.commit(set_url, a.shards, _setpub.write_pieces(set_url, a.shards, tab), 0)
    del df
    res["lookups"] = lookups(set_url, pq, a.n, cache)
    print("lookups", json.dumps(res["lookups"]), flush=True)
    res["planning"] = planning(a.scratch, cache)
    print("planning", json.dumps(res["planning"]), flush=True)
    report(res)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


def report(r):
    b = r["baseline"]
    print(f"\nbaseline (1 process): insert_batches {b['insert_rows_per_s']:,.0f} rows/s; "
          f"batches {b['batches_cold_rows_per_s']:,.0f} rows/s cold, {b['batches_warm_rows_per_s']:,.0f} warm")
    w_target = 0.7 * b["insert_rows_per_s"] * min(r["shards"], r["workers"])
    s_target = 0.8 * b["batches_warm_rows_per_s"] * r["workers"]
    print("| engine | write set | write Parquet | set / Parquet bytes | scan set cold / warm | scan Parquet cold / warm | set write rows/s vs target | set warm scan rows/s vs target |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for e in ("dask", "ray", "spark"):
        if e not in r:
            continue
        x = r[e]
        ws = r["n"] / x["set_write_s"]
        ss = r["n"] / x["set_scan"][1]
        print(
            f"| {e} | {x['set_write_s']:.1f} s | {x['parquet_write_s']:.1f} s | "
            f"{x['set_bytes'] / 2**20:.0f} / {x['parquet_bytes'] / 2**20:.0f} MiB | "
            f"{x['set_scan'][0]:.2f} / {x['set_scan'][1]:.2f} s | {x['parquet_scan'][0]:.2f} / {x['parquet_scan'][1]:.2f} s | "
            f"{ws:,.0f} ({ws / w_target:.2f}x of {w_target:,.0f}) | {ss:,.0f} ({ss / s_target:.2f}x of {s_target:,.0f}) |"
        )
    if "dask" in r and "set_write_unshuffled_s" in r["dask"]:
        print(f"dask write_set(shuffle=False): {r['dask']['set_write_unshuffled_s']:.1f} s")
    if "dask" in r and "set_write_tasks_s" in r["dask"]:
        print(f"dask write_set(shuffle='tasks'): {r['dask']['set_write_tasks_s']:.1f} s")
    lk = r["lookups"]
    print("\n| 100k random lookups | cold | warm |\n|---|---:|---:|")
    for name, k in (("set get_many", "set_get_many"), ("Parquet filtered read", "parquet_filter"), ("pandas index after a full read", "pandas_index")):
        print(f"| {name} | {lk[k + '_cold_s']:.2f} s | {lk[k + '_warm_s']:.2f} s |")
    print(f"batch: filtered Parquet read of all 100k keys / set get_many (warm): {lk['parquet_filter_warm_s'] / lk['set_get_many_warm_s']:.1f}x")
    print(f"per key (warm): set get {lk['set_get_per_key_s'] * 1e6:.1f} us, one filtered Parquet read "
          f"{lk['parquet_filter_per_key_s'] * 1e3:.1f} ms: {lk['parquet_filter_per_key_s'] / lk['set_get_per_key_s']:,.0f}x")
    p = r["planning"]
    print(f"\nplanning a 1,024-shard read: Dask read_set {min(p['dask_read_set_s']) * 1e3:.1f} ms, "
          f"Ray get_read_tasks {min(p.get('ray_read_tasks_s', [float('nan')])) * 1e3:.1f} ms; heaps opened: {p['heaps_opened']}")


if __name__ == "__main__":
    main()
