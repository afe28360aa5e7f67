"""Every Python example of the package's README, and of the project's README, runs as written
(each as a script of its own, in a scratch directory), twice: a user runs a snippet again, or
after another one, on the heap files the first run left."""

import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)
READMES = [os.path.join(HERE, "..", "README.md"), os.path.join(HERE, "..", "..", "..", "README.md")]
BLOCKS = [
    block
    for readme in READMES
    for block in re.findall(r"```python\n(.*?)```", open(readme).read(), re.S)
]


def test_readme_has_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_example_runs(i, tmp_path):
    for module in ("numpy", "pandas", "pyarrow", "distributed", "ray", "pyspark", "joblib"):
        if f"import {module}" in BLOCKS[i] or f"from {module}" in BLOCKS[i]:
            pytest.importorskip(module)
    script = tmp_path / f"example{i}.py"
    script.write_text(BLOCKS[i])
    # The node cache of published heaps in the scratch directory, not the user's.
    env = dict(os.environ, PHEAP_CACHE_DIR=str(tmp_path / "cache"))
    for _ in range(2):
        subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True, timeout=300, env=env)
