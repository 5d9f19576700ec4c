"""Layers talk downward only: app → workflows → steps. Configuration is read at the edge."""

import ast
import re
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


SEAM = ROOT / "steps" / "dbos_seam.py"
CODE = ("app", "steps", "workflows", "bench", "tests", "migrations")


def test_only_the_seam_imports_dbos_internals() -> None:
    offenders = {
        str(path.relative_to(ROOT))
        for layer in CODE for path in (ROOT / layer).rglob("*.py")
        if path != SEAM and any(name.startswith("dbos._") for name in imported_names(path))
    }
    assert not offenders


def test_every_module_reading_dbos_tables_is_listed_in_the_seam() -> None:
    """SQL on DBOS's tables stays where it is cheap, but the seam names every module that holds some."""
    listed = SEAM.read_text().split('"""')[1]
    readers = {path for layer in ("app", "steps", "workflows") for path in (ROOT / layer).rglob("*.py")
               if path != SEAM and re.search(r"\bdbos\.(workflow_status|workflow_input|operation_outputs|workflow_output|streams|notifications)\b", path.read_text())}
    unlisted = {str(path.relative_to(ROOT)) for path in readers
                if path.stem not in listed or path.parent.name not in listed}
    assert readers and not unlisted


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names
