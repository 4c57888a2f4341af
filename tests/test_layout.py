"""The package's layout: importable from anywhere, and every import points down its rooms."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gradlab"

#: The rooms of src/gradlab/ and the rooms each may import, from the ground up (README, "Layout").
ALLOWED = {
    "config": set(),
    "store": {"config"},
    "nn": {"config"},
    "instruments": {"config", "store", "nn"},
    "data": {"config", "store"},
    "training": {"config", "store", "nn", "instruments", "data"},
    "sweep": {"config", "store", "data", "training", "analysis"},
    "analysis": {"config", "store"},
    "cli": {"config", "store", "data", "training", "sweep", "analysis"},
    "scripts": {"cli", "config", "sweep"},
    "__main__": {"scripts", "cli", "sweep", "analysis", "config", "store"},
}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gradlab":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "gradlab")
    return found


def test_every_import_points_down_the_rooms():
    upward = []
    rooms = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative == Path("__init__.py"):
            continue  # the package's face: lazy names only
        room = relative.parts[0].removesuffix(".py")
        rooms.add(room)
        for module in _imports(path):
            target = _room(module)
            # gradlab itself gives store its __version__ (the face imports nothing eagerly)
            if target not in (room, "__init__") and target not in ALLOWED[room]:
                upward.append(f"{relative} imports {module}")
    assert rooms == set(ALLOWED), "a room was added or removed: update ALLOWED and the README's layout"
    assert not upward, "imports outside the layout:\n" + "\n".join(upward)


@pytest.mark.parametrize("module", ["gradlab", "gradlab.analysis", "gradlab.store.io", "gradlab.config"])
def test_torch_free_rooms_do_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_import_from_the_folder_that_holds_the_clone():
    """The README's layout puts the clone beside shared/: a notebook started there must find the installed package,
    not a namespace package made of the clone's folder."""
    clone = PACKAGE.parents[1]
    code = "import gradlab, gradlab.analysis; print(gradlab.__file__, gradlab.__version__)"
    for where in (clone.parent, clone):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=where)
        assert result.returncode == 0, result.stderr
        assert Path(result.stdout.split()[0]) == PACKAGE / "__init__.py"
