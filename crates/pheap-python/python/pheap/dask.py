"""Dask for pheap (``pip install "pheap[dask]"``): published heaps in every task, and shard
sets read and written as Dask DataFrames.

A :class:`pheap.Published` handle already works in any Dask task (it pickles small and opens the
node's cached copy); :class:`Fetch` only moves the one download per node to worker start, so no
task waits for it::

    client.register_plugin(pheap.dask.Fetch(pub))
    client.map(task, chunks, pub=pub)

Shard sets (DESIGN §10)::

    ddf = pheap.dask.read_set(url)                      # one partition per shard (or part)
    pheap.dask.write_set(ddf, url, shards=64, key="id")  # Dask's shuffle: one task per shard
"""

try:
    from distributed import WorkerPlugin
except ImportError:
    raise ImportError('pheap.dask needs Dask\'s distributed scheduler: pip install "pheap[dask]"') from None

from . import _setpub
from ._pheap import shard_of

__all__ = ["Fetch", "read_set", "write_set"]

_SHARD = "_pheap_shard"


class Fetch(WorkerPlugin):
    """Fetch a publication into each worker's node cache when the worker starts (and on every
    worker that joins later)."""

    def __init__(self, published):
        self.published = published
        self.name = f"pheap-fetch-{published.digest}"

    def setup(self, worker):
        self.published.fetch()


class _ReadPart:
    """One partition of a set: shard ``i``'s part ``j`` of ``k``, as a pandas DataFrame."""

    def __init__(self, ps, schema, size):
        self.ps, self.schema, self.size = ps, schema, size

    def __call__(self, spec):
        import pyarrow as pa

        i, j, k = spec
        batches = list(self.ps.batches(i, size=self.size, part=None if k == 1 else (j, k)))
        return pa.Table.from_batches(batches, schema=self.schema).to_pandas()


def _schema(ps):
    s = ps.schema
    if s is not None:
        return s
    for i in range(ps.n):  # a set published without one: the first batch's
        for b in ps.batches(i, size=64):
            return b.schema
    import pyarrow as pa

    return pa.schema([("key", pa.string()), ("value", pa.binary())])


def read_set(url, *, parts=1, storage_options=None, cache_dir=None, trusted="safe", size=65_536):
    """The newest version of the published set at ``url`` as a Dask DataFrame: one partition per
    shard, or ``parts`` per shard (each a range of the shard's order). Planning reads only the
    manifest; each task fetches its shard into its node's cache."""
    import dask.dataframe as dd

    if not isinstance(parts, int) or isinstance(parts, bool) or parts < 1:
        raise ValueError(f"parts must be a positive int, not {parts!r}")
    ps = _setpub.PublishedSet(url, storage_options=storage_options, cache_dir=cache_dir, trusted=trusted)
    schema = _schema(ps)
    specs = [(i, j, parts) for i in range(ps.n) for j in range(parts)]
    return dd.from_map(
        _ReadPart(ps, schema, size),
        specs,
        meta=schema.empty_table().to_pandas(),
        enforce_metadata=False,
        label="pheap-read-set",
    )


def _route(df, key, n):
    import pyarrow as pa

    keys = pa.array(df[key]).to_pylist()  # Python ints and strs, as the set stores them
    return df.assign(**{_SHARD: [shard_of(k, n) for k in keys]})


def _write_shard(df, url, n, key, storage_options, partition_info=None):
    import pandas as pd
    import pyarrow as pa

    i = partition_info["number"]
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    (piece,) = _setpub.write_pieces(url, n, table, key=key, shard=i, storage_options=storage_options)
    return pd.DataFrame({"piece": [piece]})


def _write_pieces(df, url, n, key, storage_options):
    import pandas as pd
    import pyarrow as pa

    table = pa.Table.from_pandas(df, preserve_index=False)
    pieces = _setpub.write_pieces(url, n, table, key=key, storage_options=storage_options)
    return pd.DataFrame({"piece": pd.Series(pieces, dtype=object)})


def write_set(ddf, url, *, shards, key, storage_options=None, shuffle=True):
    """Write the rows of the Dask DataFrame ``ddf`` as the next version of the published set at
    ``url`` with ``shards`` shards, the column ``key`` as keys and the other columns as each
    value's fields. Dask's own shuffle routes every row to its shard's partition, so one task
    writes one shard; with ``shuffle=False`` each partition writes a piece of every shard its
    rows reach, merged per shard at commit, here (no shuffle; the merge runs in this process).
    ``shuffle="tasks"`` or ``"p2p"`` picks Dask's shuffle method (``True``: Dask's configured
    one, ``dataframe.shuffle.method``). The manifest is committed last, here, and refused if
    another job committed first. Returns the new :class:`pheap.PublishedSet`."""
    import pandas as pd

    n = shards
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n < 2**32:
        raise ValueError(f"shards must be an int from 1 to {2**32 - 1}, not {n!r}")
    if key not in ddf.columns:
        raise KeyError(f"no key column {key!r} among the columns {list(ddf.columns)}")
    if not (isinstance(shuffle, bool) or shuffle in ("tasks", "p2p")):
        raise ValueError(f"shuffle must be True, False, 'tasks' or 'p2p', not {shuffle!r}")
    base = _setpub.current_generation(url, storage_options)
    out_meta = pd.DataFrame({"piece": pd.Series([], dtype=object)})
    if not shuffle:
        pieces = ddf.map_partitions(_write_pieces, url, n, key, storage_options, meta=out_meta)
        m = _setpub.commit(url, n, pieces.compute()["piece"].tolist(), base, storage_options=storage_options)
        return _setpub.PublishedSet(url, storage_options=storage_options, generation=m["generation"])
    meta = ddf._meta.assign(**{_SHARD: pd.Series([], dtype="int64")})
    routed = ddf.map_partitions(_route, key, n, meta=meta)
    method = {} if shuffle is True else {"shuffle_method": shuffle}
    routed = routed.set_index(_SHARD, divisions=list(range(n + 1)), **method)
    pieces = routed.map_partitions(_write_shard, url, n, key, storage_options, meta=out_meta).compute()["piece"].tolist()
    m = _setpub.commit(url, n, pieces, base, storage_options=storage_options)
    return _setpub.PublishedSet(url, storage_options=storage_options, generation=m["generation"])
