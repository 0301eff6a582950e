"""The shape of the tree, checked: what import-linter cannot see (pyproject.toml holds the layer
contracts it checks). Each rule here is one of the architecture's promises in the README."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTTP_NAMES = {"Request", "Response", "HTTPException", "Query"}
INFLUXQL = ("SELECT ", "SHOW ")  # every statement the API sends starts with one


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """From `def` to the last line, decorators not counted, nested functions included."""
    assert node.end_lineno is not None
    return node.end_lineno - node.lineno + 1


def _too_long(folder: str, limit: int) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({_length(node)} lines)"
        for path in _modules(folder)
        for node in _functions(ast.parse(path.read_text()))
        if _length(node) > limit
    ]


def test_route_functions_are_thin() -> None:
    assert _too_long("api/routes", 40) == []


def test_no_benchmark_function_is_over_60_lines() -> None:
    assert _too_long("bench", 60) == []


def _imported_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0]
            in (
                "fastapi",
                "starlette",
            )
        ):
            names.update(alias.name for alias in node.names)
    return names


def _builds_influxql(tree: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and any(word in node.value for word in INFLUXQL)
        for node in ast.walk(tree)
    )


@pytest.mark.parametrize("path", _modules("api"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_api_module_mixes_http_with_influxql(path: Path) -> None:
    tree = ast.parse(path.read_text())
    http = _imported_names(tree) & HTTP_NAMES
    assert not (http and _builds_influxql(tree)), f"HTTP types {sorted(http)} beside InfluxQL"


def test_influxql_is_built_somewhere_the_check_can_see() -> None:
    # Guards the check above: if InfluxQL moved out of string constants, it would pass blindly.
    assert _builds_influxql(ast.parse((ROOT / "api/core/query.py").read_text()))


def _test_modules() -> list[Path]:
    return sorted(p for p in (ROOT / "tests").rglob("test_*.py"))


@pytest.mark.parametrize("path", _test_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_test_module_imports_another(path: Path) -> None:
    """Helpers live in tests.support, fixtures in conftest.py files."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    tests = {m for m in imported if m == "tests" or m.startswith("tests.")}
    assert {m for m in tests if not m.startswith("tests.support")} == set()


# What writing line protocol by hand looks like: an integer field's `i` suffix in an f-string,
# escaping a tag's comma by translation or by replacement.
_ENCODING = re.compile(r'\}i"|maketrans\(\{",": |\.replace\(",", |\(("\\\\", )?",", "=", " "\)')


def test_one_line_protocol_encoder() -> None:
    """Only wire.lineproto writes line protocol; everybody else calls it."""
    folders = ("wire", "common", "ingest", "api", "simulators", "citysense", "bench", "tests")
    encoders = [
        str(path.relative_to(ROOT))
        for folder in folders
        for path in _modules(folder)
        if path != Path(__file__).resolve() and _ENCODING.search(path.read_text())
    ]
    assert encoders == ["wire/lineproto.py"]
