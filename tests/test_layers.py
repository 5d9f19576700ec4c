"""Layers talk downward only: app → workflows → steps. Configuration is read at the edge."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "steps": {"app", "workflows", "fastapi", "starlette", "uvicorn"},
    "workflows": {"app", "fastapi", "starlette", "uvicorn"},
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_upper_ones(layer: str) -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / layer).rglob("*.py")
        for name in imported_modules(path) & FORBIDDEN[layer]
    }
    assert not offenders


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_do_not_read_the_environment(layer: str) -> None:
    assert not [path for path in (ROOT / layer).rglob("*.py") if "os.environ" in path.read_text() or "getenv" in path.read_text()]
