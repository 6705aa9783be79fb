"""The README quick start, and the guides' complete examples, run as written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUNNABLE = [README, ROOT / "docs" / "forecasting.md"]  # guides whose examples are complete


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.name)
def test_python_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    assert blocks, f"{path.name} has no python example"
    for block in blocks:
        exec(compile(block, str(path), "exec"), {})


def test_readme_names_the_two_commands_ci_uses():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    assert "make test" in (README.parent / ".ci" / "run").read_text()
