"""Arrow batches in and out of a map (DESIGN §10.4): what dataframes and engines read and write.

``m.batches(size, part=(i, k))`` yields ``pyarrow.RecordBatch``es of the map's entries (its part
``i`` of ``k``: the map's order cut into ``k`` ranges, every key in exactly one): a ``key``
column, then

* the values' fields as typed columns when every value is a dict with str keys (none named
  ``key``),
* else one ``value`` column, typed when Arrow can type the values, else the values pickled
  (the field's metadata says ``pheap: pickle``; :func:`values` loads them back).

``m.insert_batches(batches, key="key")`` is the inverse: one entry per row, the ``key`` column
its key, the other columns its value (a dict of them; the ``value`` column alone: that value).
"""

import gc
import pickle
from contextlib import contextmanager
from operator import itemgetter

DEFAULT_SIZE = 65_536
PICKLED = {b"pheap": b"pickle"}


def _need_arrow():
    """pyarrow, imported when first needed (``import pheap`` stays cheap)."""
    try:
        import pyarrow
    except ImportError:
        raise ImportError('Arrow batches need pyarrow: pip install "pheap[arrow]"') from None
    return pyarrow


def _check_size(size):
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int, not {size!r}")


def _rows_of(m, part):
    if part is None:
        return m._iter_items()
    if not (isinstance(part, tuple) and len(part) == 2 and all(isinstance(x, int) for x in part)):
        raise ValueError(f"part must be a tuple (i, k) of ints, not {part!r}")
    return m._iter_part(*part)


def _is_record(v):
    return type(v) is dict and "key" not in v and all(type(f) is str for f in v)


def _same_fields(vals):
    """The fields of the first value when every value is a record (a dict of str keys, none
    named ``key``) with exactly those fields; else None."""
    first = vals[0]
    if not _is_record(first):
        return None
    names = first.keys()
    for v in vals:
        if type(v) is not dict or v.keys() != names:
            return None
    return list(names)


def _columns(vals, names):
    """One list per field, taken from every record (a C loop per column, no row objects)."""
    return [list(map(itemgetter(n), vals)) for n in names]


def _record_batch(pa, keys, vals, schema):
    """Records against a record schema: typed column by column when every value has exactly
    its fields; a value with a field the schema lacks is an error, never dropped."""
    kname, fields = schema.names[0], schema.names[1:]
    names = _same_fields(vals)
    if names is not None and sorted(names) == sorted(fields):
        arrays = [pa.array(keys, schema.field(0).type)]
        for n, c in zip(fields, _columns(vals, fields)):
            t = schema.field(n).type
            try:
                arrays.append(pa.array(c, t))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
                raise TypeError(
                    f"the values of the field {n!r} do not fit its type {t} (taken from the first "
                    f"batch): pass schema= to batches() ({e})"
                ) from None
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
    known = set(fields)
    for k, v in zip(keys, vals):
        if type(v) is not dict or not known.issuperset(v):
            raise TypeError(
                f"the value of {k!r} is not a record with the fields {fields} (of the first "
                f"batch): scan with schema= a pickled value column, or store records alike"
            )
    return pa.RecordBatch.from_pylist([{kname: k, **v} for k, v in zip(keys, vals)], schema=schema)


def to_batch(keys, vals, schema=None):
    """One RecordBatch of keys and values, cast to ``schema`` when given (so every batch of a
    scan has the first one's schema)."""
    pa = _need_arrow()
    bad = (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError)
    if schema is not None:
        kf = schema.field(0)
        if schema.names[1:] == ["value"]:
            vf = schema.field("value")
            if vf.metadata == PICKLED:
                vals = [pickle.dumps(v, protocol=5) for v in vals]
            return pa.RecordBatch.from_arrays([pa.array(keys, kf.type), pa.array(vals, vf.type)], schema=schema)
        return _record_batch(pa, keys, vals, schema)
    if vals:
        names = _same_fields(vals)
        try:
            if names is not None:
                arrays = [pa.array(keys)] + [pa.array(c) for c in _columns(vals, names)]
                return pa.RecordBatch.from_arrays(arrays, names=["key"] + names)
            if all(_is_record(v) for v in vals):  # records, some fields missing in some
                b = pa.RecordBatch.from_pylist([{"key": k, **v} for k, v in zip(keys, vals)])
                # "key" first, the fields in their first-seen order
                return b.select(["key"] + [n for n in b.schema.names if n != "key"])
        except bad:
            pass
    karr = pa.array(keys)
    try:
        varr = pa.array(vals)
        if pa.types.is_null(varr.type) and vals:
            raise pa.ArrowInvalid("all None")
        return pa.RecordBatch.from_arrays([karr, varr], names=["key", "value"])
    except bad:
        field = pa.field("value", pa.binary(), metadata=PICKLED)
        varr = pa.array([pickle.dumps(v, protocol=5) for v in vals], pa.binary())
        return pa.RecordBatch.from_arrays([karr, varr], schema=pa.schema([pa.field("key", karr.type), field]))


def batches(m, size=DEFAULT_SIZE, part=None, schema=None):
    """The map's entries (or its part ``part=(i, k)``) as RecordBatches of at most ``size``
    rows, all with one schema (``schema``, else the first batch's)."""
    _need_arrow()
    _check_size(size)
    it = _rows_of(m, part)
    while True:
        with _gc_paused():
            keys, vals = [], []
            for k, v in it:
                keys.append(k)
                vals.append(v)
                if len(keys) == size:
                    break
            if not keys:
                return
            b = to_batch(keys, vals, schema)
            del keys, vals
        schema = b.schema
        yield b


def _as_batches(data):
    """RecordBatches of a RecordBatch, a Table, a pandas DataFrame or an iterable of them."""
    pa = _need_arrow()
    if isinstance(data, pa.RecordBatch):
        yield data
    elif isinstance(data, pa.Table):
        yield from data.to_batches()
    elif type(data).__name__ == "DataFrame" and hasattr(data, "to_dict"):
        yield pa.RecordBatch.from_pandas(data, preserve_index=False)
    else:
        try:
            parts = iter(data)
        except TypeError:
            raise TypeError(
                f"insert_batches takes a pyarrow RecordBatch or Table, a pandas DataFrame, or an "
                f"iterable of them, not {type(data).__name__}"
            ) from None
        for d in parts:
            yield from _as_batches(d)


@contextmanager
def _gc_paused():
    """The cyclic collector paused while a batch's Python objects are built: they are lists,
    dicts and scalars that form no cycles, and collecting while millions of them are made
    costs more than making them (2-4x, measured)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


_makers = {}


def _record_maker(names):
    """A function of one value per field returning the record dict: ``lambda a0, a1: {k0: a0,
    k1: a1}`` with the names bound as constants (never as code)."""
    f = _makers.get(names)
    if f is None:
        args = ", ".join(f"a{i}" for i in range(len(names)))
        body = ", ".join(f"k{i}: a{i}" for i in range(len(names)))
        f = eval(f"lambda {args}: {{{body}}}", {f"k{i}": n for i, n in enumerate(names)})
        if len(_makers) < 256:
            _makers[names] = f
    return f


def _unpickler(trusted):
    if trusted is True:
        return pickle.loads
    if trusted == "safe":
        from ._trust import loads

        return loads
    if trusted is False:

        def refuse(_):
            raise ValueError("the batch's value column holds pickles and trusted=False loads none")

        return refuse
    raise ValueError(f'trusted must be True, False or "safe", not {trusted!r}')


def entries(batch, key="key", trusted="safe"):
    """(key, value) pairs of one RecordBatch: the ``key`` column gives keys, the rest the value
    (a dict of the columns; the ``value`` column alone: that value, unpickled if it was pickled
    by :func:`batches`, as ``trusted`` allows: ``"safe"``, the default, loads only allowlisted
    globals)."""
    return zip(*keys_and_values(batch, key, trusted))


def keys_and_values(batch, key="key", trusted="safe"):
    """The keys and the values of :func:`entries`, as two lists."""
    names = batch.schema.names
    if key not in names:
        raise KeyError(f"the batch has no column {key!r} for keys (its columns: {names})")
    keys = batch.column(key).to_pylist()
    rest = [n for n in names if n != key]
    if not rest:
        return keys, [{} for _ in keys]
    if rest == ["value"]:
        vals = batch.column("value").to_pylist()
        if batch.schema.field("value").metadata == PICKLED:
            load = _unpickler(trusted)
            vals = [load(v) for v in vals]
        return keys, vals
    cols = [batch.column(n).to_pylist() for n in rest]
    return keys, list(map(_record_maker(tuple(rest)), *cols))


def insert_batches(m, data, key="key", trusted="safe"):
    """Insert one entry per row of ``data`` (see :func:`entries`) into the map ``m``, in one
    commit when ``m`` is a heap. Returns the number of rows."""
    n = 0
    pairs = []
    with _gc_paused():
        for b in _as_batches(data):
            pairs.extend(entries(b, key, trusted))
            n += b.num_rows
        m.update(pairs)
    return n
