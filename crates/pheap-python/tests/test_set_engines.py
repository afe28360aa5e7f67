"""Shard sets written and read by the real engines, started here (DESIGN §10): Dask (a
LocalCluster of worker processes), Ray (local), PySpark (local[2]), and s3:// (moto on
127.0.0.1). Input partitionings never match the shards; every row written is read back once
with its value, counts exact. A job whose worker is SIGKILLed mid-write leaves the previous
version whole; a rerun commits; of two jobs from one version, one commits and the other is
refused; a damaged shard is an error naming it. Skipped, with the reason, where an engine is
not installed (`pip install "pheap[test]"` installs them all)."""

import os
import signal
import subprocess
import sys
import threading

import pytest
from conftest import local_spark, ray_env

import pheap
from pheap import _setpub

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")

N = 3_000


def rows(n=N, tag=""):
    return pd.DataFrame(
        {
            "id": list(range(n)),
            "name": [f"user {i}{tag}" for i in range(n)],
            "score": [i * 0.5 for i in range(n)],
        }
    )


def as_set(df):
    return sorted(zip(df["id"].tolist(), df["name"].tolist(), df["score"].tolist()))


def check_set(url, n, expect):
    """The committed set holds exactly ``expect``'s rows, each in its routed shard, with the
    manifest's counts exact."""
    ps = pheap.PublishedSet(url)
    assert ps.n == n and len(ps) == len(expect)
    got = []
    for i in range(n):
        shard = ps.shard(i)
        assert len(shard) == ps.entries_of(i)
        for k, v in shard.items():
            assert pheap.shard_of(k, n) == i
            got.append((k, v["name"], v["score"]))
    assert sorted(got) == as_set(expect)
    return ps


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHEAP_CACHE_DIR", str(tmp_path / "cache"))


class _Barrier:
    """Hold each of two commits until both jobs reach theirs: both started from one version."""

    def __init__(self, monkeypatch):
        self.barrier = threading.Barrier(2, timeout=120)
        real = _setpub.commit

        def commit(*a, **k):
            self.barrier.wait()
            return real(*a, **k)

        monkeypatch.setattr(_setpub, "commit", commit)


def race(jobs):
    """Run two write jobs at once; their outcomes (a result or the exception)."""
    out = [None, None]

    def run(j):
        try:
            out[j] = jobs[j]()
        except Exception as e:  # noqa: BLE001 - the outcome is checked
            out[j] = e

    ts = [threading.Thread(target=run, args=(j,)) for j in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    return out


def one_refused(outcomes, url):
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) == 1, outcomes
    assert isinstance(errors[0], pheap.PublicationError) and "another job committed version" in str(errors[0])
    assert sorted(os.listdir(os.path.join(url, "versions")))[-1].endswith(".json")


def damage(url, name):
    """Flip one bit in the middle of a shard file."""
    p = os.path.join(url, name)
    with open(p, "r+b") as fh:
        fh.seek(os.path.getsize(p) // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0x10]))


# ---- Dask ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed", reason="dask[distributed] not installed")
    pytest.importorskip("dask.dataframe", reason="dask[dataframe] not installed")
    import dask

    # A killed task fails the job at once (no retries on other workers).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0, "dataframe.shuffle.method": "tasks"}):
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster, distributed.Client(cluster) as client:
            yield client


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64])
def test_dask_writes_and_reads_a_set(tmp_path, dask_client, n):
    import dask.dataframe as dd

    import pheap.dask

    url = str(tmp_path / "set")
    df = rows()
    ps = pheap.dask.write_set(dd.from_pandas(df, npartitions=5), url, shards=n, key="id")
    assert ps.generation == 1
    check_set(url, n, df)
    # without Dask's shuffle: pieces from every partition, merged at commit
    assert pheap.dask.write_set(dd.from_pandas(df, npartitions=3), url, shards=n, key="id", shuffle=False).generation == 2
    check_set(url, n, df)
    if n == 7:  # Dask's other shuffle method, named (the fixture makes "tasks" the default)
        assert pheap.dask.write_set(dd.from_pandas(df, npartitions=4), url, shards=n, key="id", shuffle="p2p").generation == 3
        check_set(url, n, df)
    with pytest.raises(ValueError, match="shuffle must be True, False, 'tasks' or 'p2p'"):
        pheap.dask.write_set(dd.from_pandas(df, npartitions=2), url, shards=n, key="id", shuffle="hash")
    for parts in (1, 3):
        back = pheap.dask.read_set(url, parts=parts)
        assert back.npartitions == n * parts
        got = back.compute()
        assert list(got.columns) == ["id", "name", "score"] and as_set(got) == as_set(df)


def _kill_on_write(worker=None):
    """In a worker: SIGKILL the process in the write of shard 1, after its piece is uploaded."""
    real = _setpub.write_pieces

    def write_pieces(*a, **k):
        out = real(*a, **k)
        if k.get("shard") == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    _setpub.write_pieces = write_pieces


def test_dask_a_worker_killed_mid_write_leaves_the_previous_version(tmp_path, dask_client):
    import dask.dataframe as dd
    import distributed

    import pheap.dask

    url = str(tmp_path / "set")
    v1 = rows(tag=" v1")
    pheap.dask.write_set(dd.from_pandas(v1, npartitions=3), url, shards=4, key="id")
    dask_client.run(_kill_on_write)
    try:
        with pytest.raises(distributed.KilledWorker):
            pheap.dask.write_set(dd.from_pandas(rows(tag=" v2"), npartitions=3), url, shards=4, key="id")
    finally:
        dask_client.restart()  # fresh workers, unpatched
    assert os.listdir(os.path.join(url, "versions")) == ["00000001.json"]
    check_set(url, 4, v1)
    v2 = rows(tag=" v2")
    assert pheap.dask.write_set(dd.from_pandas(v2, npartitions=3), url, shards=4, key="id").generation == 2
    check_set(url, 4, v2)


def test_dask_two_jobs_on_one_url_one_commits(tmp_path, dask_client, monkeypatch):
    import dask.dataframe as dd

    import pheap.dask

    url = str(tmp_path / "set")
    _Barrier(monkeypatch)
    a, b = rows(tag=" a"), rows(tag=" b")
    out = race(
        [
            lambda: pheap.dask.write_set(dd.from_pandas(a, npartitions=2), url, shards=3, key="id"),
            lambda: pheap.dask.write_set(dd.from_pandas(b, npartitions=4), url, shards=3, key="id"),
        ]
    )
    one_refused(out, url)
    winner = a if isinstance(out[1], Exception) else b
    check_set(url, 3, winner)


def test_dask_a_damaged_shard_is_an_error_naming_it(tmp_path, dask_client):
    import dask.dataframe as dd

    import pheap.dask

    url = str(tmp_path / "set")
    ps = pheap.dask.write_set(dd.from_pandas(rows(), npartitions=2), url, shards=7, key="id")
    f = ps.manifest["files"][5]
    damage(url, f["file"])
    with pytest.raises(Exception, match=f"shard 5 of 7 \\({f['file']}\\)"):
        pheap.dask.read_set(url).compute()


# ---- Ray ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    pytest.importorskip("ray.data", reason="ray[data] not installed")
    import ray

    d = ray_env(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=f"{d}/ray", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
    subprocess.run(["rm", "-rf", d])


@pytest.mark.parametrize("n", [1, 3, 64])
def test_ray_writes_and_reads_a_set(tmp_path, ray_local, n):
    import pheap.ray

    ray = ray_local
    url = str(tmp_path / "set")
    df = rows()
    # several write tasks, each with rows of every shard: pieces merged at commit
    sink = pheap.ray.SetSink(url, shards=n, key="id", rows_per_write=700)
    ray.data.from_pandas(df).repartition(5).write_datasink(sink)
    assert sink.result["generation"] == 1
    check_set(url, n, df)
    ds = pheap.ray.read_set(url)
    assert ds.count() == N
    got = ds.to_pandas()
    assert as_set(got) == as_set(df)
    assert as_set(pheap.ray.read_set(url, parts=2).to_pandas()) == as_set(df)


def test_ray_a_worker_killed_mid_write_leaves_the_previous_version(tmp_path, ray_local):
    import pheap.ray

    ray = ray_local
    url = str(tmp_path / "set")
    v1 = rows(tag=" v1")
    ray.data.from_pandas(v1).repartition(3).write_datasink(pheap.ray.SetSink(url, shards=4, key="id"))

    class KillingSink(pheap.ray.SetSink):
        def write(self, blocks, ctx):
            out = super().write(blocks, ctx)
            if ctx.task_idx == 1:  # after its pieces are uploaded
                os.kill(os.getpid(), signal.SIGKILL)
            return out

    with pytest.raises(Exception) as failed:
        ray.data.from_pandas(rows(tag=" v2")).repartition(3).write_datasink(
            KillingSink(url, shards=4, key="id", rows_per_write=500), ray_remote_args={"max_retries": 0}
        )
    assert "WorkerCrashed" in type(failed.value).__name__, repr(failed.value)
    assert os.listdir(os.path.join(url, "versions")) == ["00000001.json"]
    check_set(url, 4, v1)
    v2 = rows(tag=" v2")
    ray.data.from_pandas(v2).repartition(3).write_datasink(pheap.ray.SetSink(url, shards=4, key="id"))
    check_set(url, 4, v2)


def test_ray_two_jobs_on_one_url_one_commits_and_a_damaged_shard_is_named(tmp_path, ray_local, monkeypatch):
    import pheap.ray

    ray = ray_local
    url = str(tmp_path / "set")
    _Barrier(monkeypatch)
    a, b = rows(tag=" a"), rows(tag=" b")

    def job(df):
        return lambda: ray.data.from_pandas(df).write_datasink(pheap.ray.SetSink(url, shards=3, key="id"))

    out = race([job(a), job(b)])
    one_refused(out, url)
    ps = check_set(url, 3, a if isinstance(out[1], Exception) else b)
    damage(url, ps.manifest["files"][1]["file"])
    with pytest.raises(Exception, match="shard 1 of 3"):
        pheap.ray.read_set(url).to_pandas()


# ---- PySpark ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark", reason="pyspark not installed")
    import pheap.spark

    s = local_spark("pheap-sets")
    s.dataSource.register(pheap.spark.DataSource)
    yield s
    s.stop()


@pytest.mark.parametrize("n", [2, 7])
def test_spark_writes_and_reads_a_set(tmp_path, spark, n):
    url = str(tmp_path / "set")
    df = rows()
    sdf = spark.createDataFrame(df).repartition(3)
    sdf.write.format("pheap").option("shards", n).option("key", "id").mode("append").save(url)
    check_set(url, n, df)
    back = spark.read.format("pheap").load(url)
    assert back.rdd.getNumPartitions() == n and back.count() == N
    assert as_set(back.toPandas()) == as_set(df)
    parts = spark.read.format("pheap").option("parts", 2).load(url)
    assert parts.rdd.getNumPartitions() == 2 * n and as_set(parts.toPandas()) == as_set(df)
    # a second version only with mode("overwrite")
    with pytest.raises(Exception, match='mode\\("overwrite"\\)'):
        sdf.write.format("pheap").option("shards", n).option("key", "id").mode("append").save(url)
    v2 = rows(tag=" v2")
    spark.createDataFrame(v2).write.format("pheap").option("shards", n).option("key", "id").mode("overwrite").save(url)
    assert pheap.PublishedSet(url).generation == 2
    check_set(url, n, v2)


def test_spark_a_failed_job_commits_nothing_and_a_rerun_does(tmp_path, spark):
    from pyspark.sql.functions import udf
    from pyspark.sql.types import LongType

    url = str(tmp_path / "set")
    v1 = rows(tag=" v1")
    spark.createDataFrame(v1).write.format("pheap").option("shards", 3).option("key", "id").mode("append").save(url)

    @udf(LongType())
    def die_at(i):
        if i == 2_500:  # one task's Python worker is SIGKILLed mid-job
            os.kill(os.getpid(), signal.SIGKILL)
        return i

    v2 = spark.createDataFrame(rows(tag=" v2")).repartition(3)
    with pytest.raises(Exception):
        v2.withColumn("id", die_at("id")).write.format("pheap").option("shards", 3).option("key", "id").mode(
            "overwrite"
        ).save(url)
    assert os.listdir(os.path.join(url, "versions")) == ["00000001.json"]
    check_set(url, 3, v1)
    v2.write.format("pheap").option("shards", 3).option("key", "id").mode("overwrite").save(url)
    check_set(url, 3, rows(tag=" v2"))


def test_spark_two_jobs_on_one_url_one_commits(tmp_path, spark):
    """Job A's task waits (a file it polls) while job B, planned from the same version, runs
    and commits; then A finishes and is refused. Spark runs a data source's writer() and
    commit() in Python processes of its own, so the race is held inside A's task."""
    from pyspark.sql.functions import udf
    from pyspark.sql.types import LongType

    url = str(tmp_path / "set")
    started, go = str(tmp_path / "a-started"), str(tmp_path / "a-go")

    @udf(LongType())
    def wait_for_go(i):
        import time as t

        if i == 0:
            open(started, "w").close()
            deadline = t.monotonic() + 120
            while not os.path.exists(go) and t.monotonic() < deadline:
                t.sleep(0.05)
        return i

    a, b = rows(tag=" a"), rows(tag=" b")
    out = [None]

    def run_a():
        try:
            job_a = spark.createDataFrame(a).coalesce(1).withColumn("id", wait_for_go("id"))
            job_a.write.format("pheap").option("shards", 2).option("key", "id").mode("overwrite").save(url)
        except Exception as e:  # noqa: BLE001 - the outcome is checked
            out[0] = e

    t = threading.Thread(target=run_a)
    t.start()
    try:
        for _ in range(1200):
            if os.path.exists(started):
                break
            t.join(0.1)
        assert os.path.exists(started), f"job A's task did not start: {out[0]}"[:3000]
        spark.createDataFrame(b).write.format("pheap").option("shards", 2).option("key", "id").mode(
            "overwrite"
        ).save(url)
    finally:
        open(go, "w").close()
        t.join(300)
    assert out[0] is not None and "another job committed version 1" in str(out[0])
    assert os.listdir(os.path.join(url, "versions")) == ["00000001.json"]
    ps = check_set(url, 2, b)
    damage(url, ps.manifest["files"][0]["file"])
    with pytest.raises(Exception, match="shard 0 of 2"):
        spark.read.format("pheap").load(url).collect()


# ---- s3:// ------------------------------------------------------------------------------------------


def test_s3_a_set_published_read_and_a_second_job_refused(tmp_path, s3):
    url = "s3://pheap-test/sets/users"
    ss = pheap.open_set(tmp_path / "local", shards=3, durability="none")
    df = rows(300)
    for i, name, score in zip(df["id"], df["name"], df["score"]):
        ss[int(i)] = {"name": name, "score": score}
    pub = ss.publish(url, storage_options=s3)
    assert pub.generation == 1
    reader = pheap.open_set(url, storage_options=s3)
    assert dict(reader.items()) == dict(ss.items()) and len(reader) == 300
    # Two jobs from version 1: a conditional PUT lets one create version 2.
    a = _setpub.write_pieces(url, 3, pa.Table.from_pandas(df), key="id", storage_options=s3)
    _setpub.commit(url, 3, a, 1, storage_options=s3)
    with pytest.raises(pheap.PublicationError, match="another job committed version 2"):
        _setpub.commit(url, 3, a, 1, storage_options=s3)
    assert pheap.open_set(url, storage_options=s3).generation == 2
