"""The package's layers: every sdbert module imports only from layers below its own (or its own folder).

The map below is the architecture README's "Development" section describes; a new module must be placed
in it, so where it sits is a decision, not an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sdbert"

#: module (dotted, without ``sdbert.``) or folder prefix -> layer; lower layers never import higher ones.
LAYERS: dict[str, int] = {
    "errors": 0, "paths": 0, "io": 0, "paper": 0, "provenance": 0, "table": 0,
    "config": 1, "sources": 1, "checkpointing": 1, "signals": 1,
    "data": 2, "classifier": 2, "recipe": 2, "averaging": 2, "checks": 2, "rundir": 2,
    "strategies": 3,
    "module": 4, "spec": 4, "progress": 4, "timing": 4,
    "callbacks": 5, "loggers": 5, "resume": 5,
    "factory": 6, "summary": 6,
    "console": 1, "textio": 1,
    "run": 7, "sweep": 7, "trained": 7,
    "analysis": 8, "export": 8, "predict": 8, "bench": 8,
    "search": 9,
}


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(module)


def _sdbert_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "sdbert":
                found += [alias.name for alias in node.names]
            elif node.module.startswith("sdbert."):
                found.append(node.module[len("sdbert."):])
        elif isinstance(node, ast.Import):
            found += [a.name[len("sdbert."):] for a in node.names if a.name.startswith("sdbert.")]
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _name(p))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_imports_go_down_the_layers(path: Path) -> None:
    me = _name(path)
    try:
        mine = layer_of(me)
    except KeyError:
        pytest.fail(f"sdbert.{me} has no layer: add it to LAYERS in tests/test_layers.py and to README 'Development'")
    folder = me.split(".")[0]
    for target in _sdbert_imports(path):
        if target.split(".")[0] == folder:
            continue  # inside one folder (data/, sources/, strategies/, analysis/)
        assert layer_of(target) < mine, f"sdbert.{me} (layer {mine}) imports sdbert.{target} (layer {layer_of(target)})"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from sdbert.run import main_job\nimport sdbert.analysis.report\n")
    assert _sdbert_imports(bad) == ["run", "analysis.report"]
    assert layer_of("run") > layer_of("module")
