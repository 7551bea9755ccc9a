"""No module imports a higher layer (issue 13): the packages of `app/` stack in this order.

A newcomer reads the layers off docs/architecture.md; this keeps them true. Within a layer,
modules may import each other; across layers, only downwards.
"""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"

# Lowest first. A package may import only packages of a lower (or its own) layer.
LAYERS: list[set[str]] = [
    # no Sluice imports from above; seams/: every use of another library's internals
    {"observability", "sse", "errors", "seams"},
    {"config"},
    {"providers", "tools", "toolbox"},  # the upstream side; the tools a generation may call
    {"backends"},  # shared state across workers: sees a generation only through base.Mirrored
    {"lifecycle"},  # generations: producer, journal, registry, replay, budgets
    {"delivery"},  # writing one HTTP response that follows a generation
    {"process"},  # the worker process under gunicorn: stop, reload
    {"validation", "profiles"},  # requests -> GenerationSpec; the profiles they may name
    {"web"},  # routes
    {"__init__"},  # create_app wires everything
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "app":
            if node.module == "app":
                found.update(alias.name for alias in node.names)
            else:
                found.add(_package(node.module))
        elif isinstance(node, ast.Import):
            found.update(_package(a.name) for a in node.names if a.name.split(".")[0] == "app")
    return found


def test_every_package_is_in_a_layer() -> None:
    packages = {p.stem for p in APP.glob("*.py")} | {p.parent.name for p in APP.glob("*/__init__.py")}
    assert packages == set(LEVEL), "add the new package to LAYERS (and to docs/architecture.md)"


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for path in sorted(APP.rglob("*.py")):
        rel = path.relative_to(APP.parent).with_suffix("")
        here = _package(".".join(rel.parts)) if rel.parts != ("app", "__init__") else "__init__"
        for target in _imports(path):
            if LEVEL[target] > LEVEL[here]:
                upward.append(f"{path.relative_to(APP.parent)} imports app.{target}")
    assert not upward, upward
