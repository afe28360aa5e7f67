"""A stateful property test: the heap against a dict model, through statements, transactions
(committed and aborted), snapshots, sub-maps and reopening."""

import copy
import shutil
import tempfile

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pheap

keys = st.one_of(
    st.text(max_size=8),
    st.binary(max_size=8),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.tuples(st.text(max_size=3), st.integers(-5, 5)),
).filter(lambda k: k not in ("m", 1, ("t", 2)))  # the sub-maps' names stay maps
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    st.text(max_size=80),
    st.binary(max_size=80),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers(-9, 9)), inner, max_size=4),
        st.frozensets(st.one_of(st.integers(-9, 9), st.text(max_size=3)), max_size=4),
        st.sets(st.integers(-9, 9), max_size=4),
    ),
    max_leaves=12,
)
maps = st.sampled_from([(), ("m",), ("m", 1), (("t", 2),)])


def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and (a != 0 or str(a) == str(b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def at(model, path):
    for k in path:
        model = model.setdefault(("map", k), {})
    return model


class HeapMachine(RuleBasedStateMachine):
    """The model: a dict of entries; a sub-map is stored under the key ("map", k)."""

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.path = self.dir + "/s.pheap"
        self.db = pheap.open(self.path, durability="none")
        self.model = {}
        self.tx = None
        self.tx_model = None
        self.snaps = []

    def target(self, path):
        h = self.tx if self.tx is not None else self.db
        for k in path:
            h = h.map(k)
        return h

    def current(self):
        return self.tx_model if self.tx is not None else self.model

    def leaves(self, model):
        return {k: v for k, v in model.items() if not (isinstance(k, tuple) and len(k) == 2 and k[0] == "map")}

    @rule(path=maps, k=keys, v=values)
    def put(self, path, k, v):
        m = at(self.current(), path)
        self.target(path)[k] = v
        m[k] = copy.deepcopy(v)

    @rule(path=maps, k=keys)
    def delete(self, path, k):
        m = at(self.current(), path)
        h = self.target(path)
        if k in m:
            del h[k]
            del m[k]
        elif ("map", k) not in m:
            try:
                del h[k]
                raise AssertionError("deleted a missing key")
            except KeyError:
                pass

    @rule(path=maps, k=keys)
    def get(self, path, k):
        m = at(self.current(), path)
        got = self.target(path).get(k, "<missing>")
        if k in m:
            assert same(got, m[k]), (got, m[k])
        elif ("map", k) not in m:
            assert got == "<missing>"

    @precondition(lambda self: self.tx is None)
    @rule()
    def begin(self):
        self.tx = self.db.transaction()
        self.tx_model = copy.deepcopy(self.model)

    @precondition(lambda self: self.tx is not None)
    @rule()
    def commit(self):
        self.tx.commit()
        self.tx = None
        self.model = self.tx_model

    @precondition(lambda self: self.tx is not None)
    @rule()
    def abort(self):
        self.tx.abort()
        self.tx = None

    @precondition(lambda self: len(self.snaps) < 3)
    @rule()
    def snapshot(self):
        self.snaps.append((self.db.snapshot(), copy.deepcopy(self.model)))

    @precondition(lambda self: self.snaps)
    @rule()
    def check_and_close_snapshot(self):
        s, model = self.snaps.pop(0)
        self.compare(s, model)
        s.close()

    @precondition(lambda self: self.tx is None)
    @rule()
    def reopen(self):
        self.db.close()
        self.db = pheap.open(self.path, durability="none")

    @precondition(lambda self: self.tx is None)
    @rule(path=maps)
    def clear(self, path):
        self.target(path).clear()
        m = at(self.model, path)
        m.clear()

    def compare(self, h, model, depth=0):
        leaves = self.leaves(model)
        got_keys = [k for k in h.keys() if not isinstance(h[k], pheap.Map)]
        assert sorted(map(repr, got_keys)) == sorted(map(repr, leaves)), (got_keys, list(leaves))
        for k, v in leaves.items():
            assert same(h[k], v)
        for key, sub in model.items():
            if isinstance(key, tuple) and len(key) == 2 and key[0] == "map":
                self.compare(h.map(key[1]), sub, depth + 1)

    @invariant()
    def matches_model(self):
        self.compare(self.db, self.model)
        if self.tx is not None:
            self.compare(self.tx, self.tx_model)

    def teardown(self):
        if self.tx is not None:
            self.tx.abort()
        for s, _ in self.snaps:
            s.close()
        self.db.check()
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)


HeapMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestHeap = HeapMachine.TestCase
