"""Dask helpers for published heaps (``pip install "pheap[dask]"``).

A :class:`pheap.Published` handle already works in any Dask task (it pickles small and opens the
node's cached copy); :class:`Fetch` only moves the one download per node to worker start, so no
task waits for it::

    client.register_plugin(pheap.dask.Fetch(pub))
    client.map(task, chunks, pub=pub)
"""

try:
    from distributed import WorkerPlugin
except ImportError:
    raise ImportError('pheap.dask needs Dask\'s distributed scheduler: pip install "pheap[dask]"') from None

__all__ = ["Fetch"]


class Fetch(WorkerPlugin):
    """Fetch a publication into each worker's node cache when the worker starts (and on every
    worker that joins later)."""

    def __init__(self, published):
        self.published = published
        self.name = f"pheap-fetch-{published.digest}"

    def setup(self, worker):
        self.published.fetch()
