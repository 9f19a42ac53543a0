"""Rules of the source tree that keep it easy to change: who may import whom, and what ships.

The import graph counts every ``import`` a module runs, at module level or inside a function
(a lazy import still creates a cycle at run time); imports under ``if TYPE_CHECKING:`` are
for type checkers only and are left out.
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner

import bedrock_mistral
from bedrock_mistral.cli import cli

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bedrock_mistral", "local_backend", "training")
TRAINING_MODULES = ("train", "data", "data_lists", "evaluate", "sp_tokenizer")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _runtime_imports_of(child))
            continue
        yield from _runtime_imports_of(node)


def _runtime_imports_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _runtime_imports(node)


def _targets(node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    if node.level or node.module is None:
        raise AssertionError("relative imports are not used in this tree")
    found = set()
    for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        if submodule in modules:
            found.add(submodule)
        elif node.module in modules:
            found.add(node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges: set[str] = set()
        for node in _runtime_imports(tree):
            edges |= _targets(node, modules)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_between_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_local_backend_imports_nothing_from_bedrock_mistral_or_training() -> None:
    graph = import_graph()
    offending = {
        (module, target)
        for module, targets in graph.items()
        if module.startswith("local_backend")
        for target in targets
        if not target.startswith("local_backend")
    }
    assert offending == set()


def test_the_runtime_imports_nothing_from_training() -> None:
    graph = import_graph()
    offending = {
        (module, target)
        for module, targets in graph.items()
        if not module.startswith("training")
        for target in targets
        if target.startswith("training")
    }
    assert offending == set()


def test_the_version_is_written_once() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("bedrock-mistral") == bedrock_mistral.__version__
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.split()[-1] == bedrock_mistral.__version__


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "--wheel-dir", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("bedrock_mistral-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_ships_the_runtime_and_the_bundled_model(wheel_files: set[str]) -> None:
    for name in (
        "bedrock_mistral/client.py",
        "bedrock_mistral/py.typed",
        "local_backend/runtime.py",
        "local_backend/py.typed",
        "local_backend/weights/config.json",
        "local_backend/weights/model.safetensors",
        "local_backend/weights/tokenizer.model",
    ):
        assert name in wheel_files


def test_the_wheel_ships_no_training_code_and_no_tests(wheel_files: set[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_files if "/" in name}
    assert tops == {"bedrock_mistral", "local_backend", f"bedrock_mistral-{_dist_info()}"}
    stems = {Path(name).stem for name in wheel_files if name.endswith(".py")}
    assert stems.isdisjoint(TRAINING_MODULES)


def _dist_info() -> str:
    return f"{bedrock_mistral.__version__}.dist-info"
