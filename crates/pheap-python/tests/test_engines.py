"""One published heap read by every task of the real engines, started here: multiprocessing
(spawn), joblib (loky), Dask (a LocalCluster of worker processes), Ray (local, and two nodes
with their own caches), PySpark (local[2], a UDF and mapPartitions); and s3:// through s3fs
against an S3-compatible server (moto) on 127.0.0.1. Each counts the downloads: one per cache
directory, however many processes race. Skipped, with the reason, where an engine is not
installed (`pip install "pheap[test]"` installs them all)."""

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest
from conftest import local_spark, ray_env

import pheap

N = 2_000
KEYS = [f"user/{i}" for i in range(N)]


def value(i):
    return {"id": i, "name": f"user {i}", "score": i * 0.5}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    base = tmp_path_factory.mktemp("engines")
    db = pheap.open(str(base / "src.pheap"))
    with db.transaction() as tx:
        for i in range(N):
            tx[KEYS[i]] = value(i)
    pub = pheap.publish(db, str(base / "pub"))
    db.close()
    return pub, base


def handle(published, name):
    """The publication with a cache directory of its own (carried by the handle's pickle)."""
    pub, base = published
    cache = str(base / f"cache-{name}")
    return pheap.Published(pub.url, cache_dir=cache), cache


def downloads(cache):
    try:
        with open(os.path.join(cache, "downloads.jsonl")) as f:
            return [json.loads(line)["pid"] for line in f]
    except FileNotFoundError:
        return []


def chunks(n=8):
    return [list(range(i, N, n)) for i in range(n)]


def task(ids, pub):
    db = pub.open()
    return [(i, db[f"user/{i}"], os.getpid()) for i in ids]


def check(results, n=N):
    rows = [r for part in results for r in part]
    assert sorted(i for i, _, _ in rows) == list(range(n))
    assert all(v == value(i) for i, v, _ in rows)
    return {pid for _, _, pid in rows}


def test_multiprocessing_spawn(published):
    pub, cache = handle(published, "mp")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pids = check(pool.starmap(task, [(c, pub) for c in chunks()]))
    assert len(pids) > 1
    assert len(downloads(cache)) == 1


def test_joblib_loky(published):
    joblib = pytest.importorskip("joblib")
    pub, cache = handle(published, "loky")
    out = joblib.Parallel(n_jobs=3, backend="loky")(joblib.delayed(task)(c, pub) for c in chunks())
    check(out)
    assert len(downloads(cache)) == 1


def test_dask_local_cluster_processes(published):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] not installed")
    import pheap.dask

    pub, cache = handle(published, "dask")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        # The plugin fetches at worker start, so no task waits for the download.
        client.register_plugin(pheap.dask.Fetch(pub))
        assert len(downloads(cache)) == 1
        futures = client.map(task, chunks(), pub=pub)
        pids = check(client.gather(futures))
    assert len(pids) == 2
    assert len(downloads(cache)) == 1


@pytest.fixture(scope="module")
def ray_tmp(tmp_path_factory):
    pytest.importorskip("ray", reason="ray not installed")
    d = ray_env(sys.modules[__name__])
    yield f"{d}/ray"
    subprocess.run(["rm", "-rf", d])


def test_ray_local(published, ray_tmp):
    import ray

    pub, cache = handle(published, "ray")
    # Each worker process fetches as it starts (the node's first one downloads).
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=ray_tmp,
        log_to_driver=False,
        runtime_env={"worker_process_setup_hook": pub.fetch},
    )
    try:
        remote = ray.remote(task)
        pids = check(ray.get([remote.remote(c, pub) for c in chunks()]))
    finally:
        ray.shutdown()
    assert len(downloads(cache)) == 1
    assert downloads(cache)[0] != os.getpid()  # a worker's setup hook fetched it


def test_ray_two_nodes_each_download_once(published, ray_tmp, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    pub, _ = published
    pub = pheap.Published(pub.url)  # no cache_dir: each node's PHEAP_CACHE_DIR decides
    caches = [str(tmp_path / "node-a"), str(tmp_path / "node-b")]
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "temp_dir": ray_tmp, "include_dashboard": False},
    )
    try:
        for i, c in enumerate(caches):
            cluster.add_node(num_cpus=1, resources={f"node{i}": 4}, env_vars={"PHEAP_CACHE_DIR": c})
        ray.init(address=cluster.address, log_to_driver=False)
        refs = [
            ray.remote(task).options(resources={f"node{j % 2}": 1}).remote(c, pub)
            for j, c in enumerate(chunks())
        ]
        check(ray.get(refs))
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert [len(downloads(c)) for c in caches] == [1, 1]


def test_pyspark_udf_and_map_partitions(published):
    pytest.importorskip("pyspark", reason="pyspark not installed")
    from pyspark.sql.functions import udf
    from pyspark.sql.types import StringType

    pub, cache = handle(published, "spark")
    spark = local_spark("pheap-test")
    try:
        df = spark.createDataFrame([(i,) for i in range(N)], ["id"]).repartition(4)
        name = udf(lambda i: pub.open()[f"user/{i}"]["name"], StringType())
        rows = df.select("id", name("id").alias("name")).collect()
        assert sorted((r.id, r.name) for r in rows) == [(i, f"user {i}") for i in range(N)]

        def part(ids):
            db = pub.open()
            for r in ids:
                yield (r.id, db[f"user/{r.id}"]["score"])

        got = df.rdd.mapPartitions(part).collect()
        assert sorted(got) == [(i, i * 0.5) for i in range(N)]
    finally:
        spark.stop()
    assert len(downloads(cache)) == 1


# ---- s3:// through s3fs, against moto's server on 127.0.0.1 ---------------------------------


def test_s3_publish_open_and_republish(tmp_path, s3):
    import s3fs

    db = pheap.open(str(tmp_path / "s.pheap"))
    db.update({k: value(i) for i, k in enumerate(KEYS[:300])})
    url = "s3://pheap-test/features/v1"
    pub = pheap.publish(db, url, storage_options=s3)
    assert pub.publish_stats["file_written"] and pub.publish_stats["manifest_written"]
    fs = s3fs.S3FileSystem(**s3)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls("pheap-test/features/v1")) == sorted(
        [f"{pub.digest}.pheap", "manifest.json"]
    )
    again = pheap.publish(db, url, storage_options=s3)
    assert not again.publish_stats["file_written"] and not again.publish_stats["manifest_written"]

    cache = str(tmp_path / "cache")
    reader = pheap.Published(url, storage_options=s3, cache_dir=cache)
    assert reader == pub
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        check(pool.starmap(task, [(list(range(i, 300, 3)), reader) for i in range(3)]), n=300)
    assert len(downloads(cache)) == 1

    # A flipped byte in the object: a clear error, nothing cached.
    blob = bytearray(fs.cat_file(f"pheap-test/features/v1/{pub.digest}.pheap"))
    blob[-5] ^= 0xFF
    fs.pipe_file(f"pheap-test/features/v1/{pub.digest}.pheap", bytes(blob))
    with pytest.raises(pheap.PublicationError):
        pheap.Published(url, storage_options=s3, cache_dir=str(tmp_path / "cache2")).open()
    assert [n for n in os.listdir(tmp_path / "cache2") if n.endswith((".pheap", ".part"))] == []
