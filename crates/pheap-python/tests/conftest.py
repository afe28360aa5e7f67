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
