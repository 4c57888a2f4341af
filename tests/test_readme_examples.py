"""Every ```python block of README.md runs as written, against a sweep the README's own commands make.

The README's examples name ``runs/<sweep>`` folders; each must be one that a
sweep command shown in the README writes (``<script>-<dataset>``). The test
makes one small sweep (the distance dataset's ``--dry-run``: offline, seconds)
and points every such path at it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
RUNS_PATH = re.compile(r"runs/([\w.-]+)")
COMMAND = re.compile(r"python experiments/(\w+)\.py\b[^\n]*?--dataset[ =]([\w-]+)")


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text())


def made_by_readme_commands() -> set[str]:
    """The sweep folders that the README's sweep commands write: ``<script>-<dataset>``."""
    return {f"{script}-{dataset}" for script, dataset in COMMAND.findall(README.read_text())}


def test_readme_has_python_examples():
    assert len(python_blocks()) >= 2


def test_examples_name_folders_the_readme_commands_create():
    named = {name for block in python_blocks() for name in RUNS_PATH.findall(block)}
    bash = "\n".join(re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL))
    named |= set(RUNS_PATH.findall(bash))
    named.discard("<sweep>")
    unknown = sorted(name for name in named if name not in made_by_readme_commands())
    assert not unknown, (f"README examples name {unknown}, which no README command creates; "
                         f"the commands create {sorted(made_by_readme_commands())}")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("readme") / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "experiments/compare_cells.py", "--dataset", "distance", "--dry-run",
                             "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return out / "compare_cells-distance-dry-run"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, sweep, tmp_path, monkeypatch):
    code = python_blocks()[index]
    code = RUNS_PATH.sub(lambda match: str(sweep), code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("matplotlib.pyplot.show", lambda *args, **kwargs: None, raising=False)
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})
