"""What a pickle fragment may load when the heap is opened with ``trusted="safe"``.

A pickle names the globals (module attributes) it calls to rebuild its objects; loading runs
them. The safe loader admits only the globals below: constructors of data (numpy arrays, dtypes
and scalars, pandas frames, series, indexes and blocks, the pyarrow arrays under pandas' string
columns, datetime, decimal, fractions, uuid, a few builtins and collections), none of which
reads files, imports modules or runs code it is given. Anything else is refused with
:class:`pheap.UntrustedError` before it is called. The model is ``torch.load(weights_only=True)``.

``needs(fragment)`` lists the globals a fragment would load without calling any of them (each is
replaced by an inert stand-in), so a publication can record what its pickles need.
"""

import io
import itertools
import pickle

from .errors import UntrustedError

_NUMPY = [
    f"{core}.{name}"
    for core in ("numpy.core", "numpy._core")
    for name in (
        "multiarray._reconstruct",
        "multiarray.scalar",
        "numeric._frombuffer",
    )
] + ["numpy.ndarray", "numpy.dtype", "numpy.ma.core._mareconstruct", "numpy.ma.core.MaskedArray"]

_PANDAS = [
    "pandas.DataFrame",
    "pandas.Series",
    "pandas.Index",
    "pandas.Categorical",
    "pandas.CategoricalDtype",
    "pandas.Timestamp",
    "pandas.Timedelta",
    "pandas.Period",
    "pandas.Interval",
    "pandas.arrays.ArrowStringArray",
    "pandas.arrays.StringArray",
    "pandas.core.frame.DataFrame",
    "pandas.core.series.Series",
    "pandas.core.indexes.base.Index",
    "pandas.core.indexes.base._new_Index",
    "pandas.core.indexes.range.RangeIndex",
    "pandas.core.indexes.datetimes.DatetimeIndex",
    "pandas.core.indexes.datetimes._new_DatetimeIndex",
    "pandas.core.indexes.multi.MultiIndex",
    "pandas.core.internals.managers.BlockManager",
    "pandas.core.internals.managers.SingleBlockManager",
    "pandas.core.internals.blocks.new_block",
    "pandas._libs.internals._unpickle_block",
    "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked",
    "pandas._libs.tslibs.timestamps._unpickle_timestamp",
    "pandas._libs.tslibs.timedeltas._timedelta_unpickle",
    "pandas._libs.tslibs.nattype.__nat_unpickle",
    "pandas.core.arrays.categorical.Categorical",
    "pandas.core.arrays.datetimes.DatetimeArray",
    "pandas.core.arrays.string_.StringDtype",
    "pandas.core.arrays.string_arrow.ArrowStringArray",
    "pandas.core.dtypes.dtypes.CategoricalDtype",
    "pandas.core.dtypes.dtypes.DatetimeTZDtype",
    "pandas.RangeIndex",
    "pandas.DatetimeIndex",
    "pandas.TimedeltaIndex",
    "pandas.MultiIndex",
    "pandas.StringDtype",
    "pandas.DatetimeTZDtype",
    "pandas.arrays.DatetimeArray",
    "pandas.arrays.TimedeltaArray",
    "pandas._libs.tslibs.nattype._nat_unpickle",
] + [
    f"pandas._libs.tslibs.offsets.{name}"
    for name in (
        "Day Hour Minute Second Milli Micro Nano Week BusinessDay MonthEnd MonthBegin "
        "QuarterEnd QuarterBegin YearEnd YearBegin"
    ).split()
] + [
    "pyarrow.lib._restore_array",
    "pyarrow.lib.type_for_alias",
    "pyarrow.lib.py_buffer",
]

_STDLIB = [
    "datetime.datetime",
    "datetime.date",
    "datetime.time",
    "datetime.timedelta",
    "datetime.timezone",
    "decimal.Decimal",
    "fractions.Fraction",
    "uuid.UUID",
    "uuid.SafeUUID",
    "collections.OrderedDict",
    "collections.Counter",
    "collections.deque",
    "builtins.complex",
    "builtins.bytearray",
    "builtins.range",
    "builtins.slice",
    "builtins.set",
    "builtins.frozenset",
    "builtins.list",
    "builtins.dict",
    "builtins.tuple",
    "builtins.int",
    "builtins.float",
    "builtins.str",
    "builtins.bytes",
    "builtins.bool",
]

#: The globals a pickle fragment may load under ``trusted="safe"``, as ``"module.name"``.
ALLOWED = frozenset(_NUMPY + _PANDAS + _STDLIB)


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        full = f"{module}.{name}"
        if full not in ALLOWED:
            raise UntrustedError(
                f"a pickle fragment in this heap loads {full}, which trusted=\"safe\" does not "
                f"admit (it could run code): open with trusted=True only if you trust where "
                f"the heap came from"
            )
        return super().find_class(module, name)


def loads(data, *, buffers=()):
    """Load a pickle fragment admitting only :data:`ALLOWED` globals (``trusted="safe"``)."""
    return _SafeUnpickler(io.BytesIO(data), buffers=buffers).load()


class _Inert:
    """Stands in for every global while listing: accepts every call and every state."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass


class _Lister(pickle.Unpickler):
    def __init__(self, data, names):
        super().__init__(io.BytesIO(data), buffers=itertools.repeat(b""))
        self.names = names

    def find_class(self, module, name):
        self.names.add(f"{module}.{name}")
        return type(name, (_Inert,), {})


def needs(fragment):
    """The globals (``"module.name"``) a pickle fragment loads, found without calling any."""
    names = set()
    _Lister(fragment, names).load()
    return names


def survey(fragments, limit=100):
    """What a heap's pickle fragments need: their count, the globals they load (sorted, at most
    ``limit``) and those outside :data:`ALLOWED`. A fragment that cannot be read counts as
    outside (``"<unreadable>"``)."""
    names = set()
    count = 0
    for f in fragments:
        count += 1
        try:
            names |= needs(f)
        except Exception:  # a damaged fragment: no safe reader can load it either
            names.add("<unreadable>")
    outside = sorted(n for n in names if n not in ALLOWED)
    return {
        "fragments": count,
        "globals": sorted(names)[:limit],
        "outside_allowlist": outside[:limit],
        "safe": not outside,
    }
