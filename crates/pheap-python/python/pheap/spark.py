"""PySpark 4 for pheap shard sets (``pip install "pheap[spark]"``), on Spark's Python
``DataSource`` API (DESIGN §10)::

    spark.dataSource.register(pheap.spark.DataSource)
    df = spark.read.format("pheap").load(url)                      # one partition per shard
    df.write.format("pheap").option("shards", 64).option("key", "id").mode("overwrite").save(url)

Reads: one input partition per shard (``.option("parts", k)``: k per shard), Arrow batches from
each shard fetched into the executor's node cache. Writes: each task writes the rows it is
given, split by shard, as sealed pieces; ``commit()`` on the driver merges the pieces of a
shard that several tasks wrote and commits the next version of the set, refused if another job
committed first; ``abort()`` commits nothing. A set with a version already is replaced only with
``mode("overwrite")`` (its older versions stay readable by number); ``append`` is not
supported.
"""

import json
from dataclasses import dataclass, field

try:
    from pyspark.sql.datasource import DataSource as _DataSource
    from pyspark.sql.datasource import DataSourceArrowWriter, DataSourceReader, InputPartition, WriterCommitMessage
except ImportError:
    raise ImportError('pheap.spark needs PySpark 4: pip install "pheap[spark]"') from None

from . import _setpub
from .errors import PublicationError

__all__ = ["DataSource"]


def _url(options):
    url = options.get("path")
    if not url:
        raise ValueError('the pheap data source needs a URL: .load(url) or .save(url)')
    return url


def _storage_options(options):
    so = options.get("storage_options")
    return None if so is None else json.loads(so)


def _positive(options, name, default=None):
    v = options.get(name, default)
    if v is None:
        raise ValueError(f'writing a pheap set needs .option("{name}", ...)')
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise ValueError(f'.option("{name}") must be a positive integer, not {v!r}') from None
    if not 1 <= n < 2**32:
        raise ValueError(f'.option("{name}") must be a positive integer below 2**32, not {v!r}')
    return n


class DataSource(_DataSource):
    """The ``pheap`` format: a published shard set at a URL (a directory, ``file://`` or any
    fsspec URL). Options: ``parts`` (reading), ``shards`` and ``key`` (writing),
    ``storage_options`` (JSON, for fsspec), ``trusted`` (``safe``, ``true`` or ``false``)."""

    @classmethod
    def name(cls):
        return "pheap"

    def _set(self):
        trusted = {"safe": "safe", "true": True, "false": False}.get(str(self.options.get("trusted", "safe")).lower())
        if trusted is None:
            raise ValueError(f'.option("trusted") is safe, true or false, not {self.options.get("trusted")!r}')
        return _setpub.PublishedSet(_url(self.options), storage_options=_storage_options(self.options), trusted=trusted)

    def schema(self):
        from pyspark.sql.pandas.types import from_arrow_schema

        return from_arrow_schema(_arrow_schema(self._set()))

    def reader(self, schema):
        return _Reader(self._set(), _positive(self.options, "parts", 1))

    def writer(self, schema, overwrite):
        url = _url(self.options)
        so = _storage_options(self.options)
        n = _positive(self.options, "shards")
        key = self.options.get("key")
        if not key:
            raise ValueError('writing a pheap set needs .option("key", column)')
        if key not in schema.names:
            raise ValueError(f'.option("key", {key!r}): no such column among {schema.names}')
        base = _setpub.current_generation(url, so)
        if base and not overwrite:
            raise PublicationError(
                f'the set at {url} has version {base}: write with .mode("overwrite") to commit '
                f"version {base + 1} (older versions stay readable; append is not supported)"
            )
        return _Writer(url, so, n, key, base)


def _arrow_schema(ps):
    s = ps.schema
    if s is not None:
        return s
    for i in range(ps.n):
        for b in ps.batches(i, size=64):
            return b.schema
    import pyarrow as pa

    return pa.schema([("key", pa.string()), ("value", pa.binary())])


class _Reader(DataSourceReader):
    def __init__(self, ps, parts):
        self.ps, self.parts = ps, parts

    def partitions(self):
        return [InputPartition((i, j)) for i in range(self.ps.n) for j in range(self.parts)]

    def read(self, partition):
        i, j = partition.value
        yield from self.ps.batches(i, part=None if self.parts == 1 else (j, self.parts))


@dataclass
class _Pieces(WriterCommitMessage):
    pieces: list = field(default_factory=list)


class _Writer(DataSourceArrowWriter):
    def __init__(self, url, storage_options, n, key, base):
        self.url, self.storage_options, self.n, self.key, self.base = url, storage_options, n, key, base

    def write(self, iterator):
        return _Pieces(_setpub.write_pieces(self.url, self.n, iterator, key=self.key, storage_options=self.storage_options))

    def commit(self, messages):
        pieces = [p for m in messages if m is not None for p in m.pieces]
        _setpub.commit(self.url, self.n, pieces, self.base, storage_options=self.storage_options)

    def abort(self, messages):
        # Nothing was committed: the pieces uploaded are named by no version.
        pass
