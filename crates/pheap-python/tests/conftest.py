import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import pheap


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "t.pheap")


@pytest.fixture
def db(path):
    h = pheap.open(path)
    yield h
    h.close()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    pytest.importorskip("s3fs", reason="s3fs not installed")
    pytest.importorskip("moto", reason="moto[server] not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    opts = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket="pheap-test")
    yield opts
    proc.terminate()
    proc.wait()


def ray_env(module):
    """Prepare this process for a local Ray: no auth token or usage stats, the test module's
    functions shipped by value (Ray's workers cannot import it), a short temporary directory
    (Ray's socket paths must be short). Returns that directory; the caller removes it."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(module)
    d = f"/tmp/pheap-ray-{module.__name__.rsplit('.', 1)[-1][:12]}-{os.getpid()}"
    os.makedirs(f"{d}/ray", exist_ok=True)
    os.environ["RAY_TMPDIR"] = d
    return d


def local_spark(name):
    """A SparkSession on local[2] whose Python workers run this environment's Python."""
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    return (
        SparkSession.builder.master("local[2]")
        .appName(name)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
