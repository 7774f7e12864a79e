"""The layers point one way: the core (`ebgen/`) imports no stage, and each stage imports only
the core and the stages below it (train < export < serve < eval < cli). Every import counts,
also those inside functions; only the package's front door (`ebgen/__init__.py`: `load_model`)
and `python -m ebgen` (`ebgen/__main__.py`) sit on top and may reach any stage."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ebgen

PACKAGE = Path(ebgen.__file__).resolve().parent
#: Stages, lowest first, and the folder of each (the package maps ebgen.<stage> to <stage>/).
STAGES = ("train", "export", "serve", "eval", "cli")
FRONT_DOORS = ("__init__.py", "__main__.py")


def _stage_dir(stage: str) -> Path:
    import importlib

    return Path(importlib.import_module(f"ebgen.{stage}").__file__).resolve().parent


def imported_stages(path: Path, own: str | None) -> set[str]:
    """The stages a module imports, absolute (`ebgen.serve...`) or relative to its package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module == "ebgen":  # `from ebgen import serve`
                names = [f"ebgen.{a.name}" for a in node.names]
            elif node.level == 0:
                names = [node.module or ""]
            elif own is None:  # `from .serve import ...` (or `..serve`) inside the core
                names = [f"ebgen.{node.module or ''}"]
            elif node.level == 1:
                names = [f"ebgen.{own}.{node.module or ''}"]
            else:  # `from ..x import` in a stage: ebgen.x
                names = [f"ebgen.{node.module or ''}"]
            if node.module is None and node.level >= 1:  # `from . import a, b`
                base = "ebgen" if own is None or node.level > 1 else f"ebgen.{own}"
                names = [f"{base}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "ebgen" and len(parts) > 1 and parts[1] in STAGES:
                found.add(parts[1])
    return found


def test_the_core_imports_no_stage():
    core = [*PACKAGE.glob("*.py"), *(PACKAGE / "metrics").glob("*.py")]
    offenders = {p.name: imported_stages(p, None) for p in core
                 if p.parent != PACKAGE or p.name not in FRONT_DOORS}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_imports_only_the_stages_below_it(stage):
    below = set(STAGES[:STAGES.index(stage)])
    offenders = {p.name: imported_stages(p, stage) - below - {stage}
                 for p in _stage_dir(stage).glob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from .serve.runtime import load_model\n"
                      "    import ebgen.train\n    from ebgen import eval\n")
    assert imported_stages(module, None) == {"serve", "train", "eval"}
