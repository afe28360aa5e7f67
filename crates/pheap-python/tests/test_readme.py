"""Every Python example of the package's README runs as written (each as a script of its own,
in a scratch directory)."""

import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
BLOCKS = re.findall(r"```python\n(.*?)```", open(README).read(), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_example_runs(i, tmp_path):
    if "numpy" in BLOCKS[i]:
        pytest.importorskip("numpy")
    script = tmp_path / f"example{i}.py"
    script.write_text(BLOCKS[i])
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True, timeout=300)
