"""The views `keys()`, `values()` and `items()` return: those of `collections.abc`, iterating
through one snapshot (or one transaction) instead of a lookup per key."""

from collections import abc


class KeysView(abc.KeysView):
    __slots__ = ()


class ValuesView(abc.ValuesView):
    __slots__ = ()

    def __iter__(self):
        return self._mapping._iter_values()


class ItemsView(abc.ItemsView):
    __slots__ = ()

    def __iter__(self):
        return self._mapping._iter_items()
