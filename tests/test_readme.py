"""The README's Python examples run as written (in a temporary folder: one writes a file)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in BLOCKS[: index + 1]:  # later blocks may use names the earlier ones defined
        exec(compile(block, f"README.md block {index}", "exec"), namespace)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2
