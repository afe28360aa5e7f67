"""Ray Data for pheap shard sets (``pip install "pheap[ray]"``), on Ray Data's public
``Datasource`` and ``Datasink`` APIs (DESIGN §10)::

    ds = pheap.ray.read_set(url)                                   # one read task per shard
    ds.write_datasink(pheap.ray.SetSink(url, shards=64, key="id"))  # commits in on_write_complete

Each read task fetches its shard into its node's cache of published snapshots; exact row counts
come from the manifest, so ``ds.count()`` opens no shard. Each write task writes the rows it is
given, split by shard, as sealed pieces; ``on_write_complete`` merges the pieces of a shard that
several tasks wrote, then commits the next version of the set, refused if another job committed
first.
"""

try:
    import ray.data
    from ray.data.block import BlockAccessor, BlockMetadata
    from ray.data.datasource import Datasink, Datasource, ReadTask
except ImportError:
    raise ImportError('pheap.ray needs Ray Data: pip install "pheap[ray]"') from None

from . import _setpub

__all__ = ["SetDatasource", "SetSink", "read_set"]


def _read(ps, i, j, k, size):
    import pyarrow as pa

    for b in ps.batches(i, size=size, part=None if k == 1 else (j, k)):
        yield pa.Table.from_batches([b])


class SetDatasource(Datasource):
    """The newest version of the published set at ``url``: one read task per shard, or ``parts``
    per shard (each a range of the shard's order)."""

    def __init__(self, url, *, parts=1, storage_options=None, cache_dir=None, trusted="safe", size=65_536):
        super().__init__()
        if not isinstance(parts, int) or isinstance(parts, bool) or parts < 1:
            raise ValueError(f"parts must be a positive int, not {parts!r}")
        self.ps = _setpub.PublishedSet(url, storage_options=storage_options, cache_dir=cache_dir, trusted=trusted)
        self.parts = parts
        self.size = size

    def estimate_inmemory_data_size(self):
        return self.ps.manifest["bytes"]

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        ps, k = self.ps, self.parts
        tasks = []
        for i, f in enumerate(ps.manifest["files"]):
            for j in range(k):
                meta = BlockMetadata(
                    num_rows=f["entries"] if k == 1 else None,
                    size_bytes=f["bytes"] // k,
                    input_files=None,
                    exec_stats=None,
                )
                tasks.append(
                    ReadTask(lambda i=i, j=j: _read(ps, i, j, k, self.size), meta, schema=ps.schema)
                )
        return tasks

    def get_name(self):
        return "PheapSet"


def read_set(url, *, parts=1, storage_options=None, cache_dir=None, trusted="safe", size=65_536, **read_args):
    """``ray.data.read_datasource(SetDatasource(url, ...))``."""
    src = SetDatasource(
        url, parts=parts, storage_options=storage_options, cache_dir=cache_dir, trusted=trusted, size=size
    )
    return ray.data.read_datasource(src, **read_args)


class SetSink(Datasink):
    """Write a Dataset as the next version of the published set at ``url``: ``shards`` shards,
    the column ``key`` as keys, the other columns as each value's fields. Each write task gets
    at least ``rows_per_write`` rows (Ray's ``min_rows_per_write``)."""

    def __init__(self, url, *, shards, key, storage_options=None, rows_per_write=250_000):
        if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards < 2**32:
            raise ValueError(f"shards must be an int from 1 to {2**32 - 1}, not {shards!r}")
        self.url, self.n, self.key, self.storage_options = url, shards, key, storage_options
        self.rows_per_write = rows_per_write
        self.base = None
        self.result = None

    @property
    def min_rows_per_write(self):
        """Rows Ray gathers for each write task: each task writes a piece per shard, and the
        pieces of a shard are merged at commit, so fewer, bigger tasks merge less."""
        return self.rows_per_write

    def on_write_start(self, schema=None):
        if schema is not None and self.key not in schema.names:
            raise KeyError(f"no key column {self.key!r} among the columns {schema.names}")
        self.base = _setpub.current_generation(self.url, self.storage_options)

    def write(self, blocks, ctx):
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        return _setpub.write_pieces(self.url, self.n, tables, key=self.key, storage_options=self.storage_options)

    def on_write_complete(self, write_result):
        pieces = [p for r in write_result.write_returns for p in r]
        base = self.base if self.base is not None else _setpub.current_generation(self.url, self.storage_options)
        self.result = _setpub.commit(self.url, self.n, pieces, base, storage_options=self.storage_options)

    def get_name(self):
        return "PheapSet"
