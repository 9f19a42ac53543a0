"""The chat package's seams: clients load off the main thread (Ctrl-C only stops the
wait), and the modules import each other one way, with commands going through verbs."""

from __future__ import annotations

import _thread
import ast
import threading
from pathlib import Path

import pytest

from bedrock_mistral import MistralClient
from bedrock_mistral.cli.chat.loading import ClientPool, LoadCancelled
from bedrock_mistral.errors import BackendUnavailableError

CHAT = Path(__file__).resolve().parents[2] / "bedrock_mistral" / "cli" / "chat"


def test_ctrl_c_stops_the_wait_and_the_load_finishes_in_the_background() -> None:
    release = threading.Event()
    builds: list[tuple[str, str]] = []

    def build(key: tuple[str, str]) -> MistralClient:
        builds.append(key)
        release.wait(10)  # a slow import
        return MistralClient(backend="echo", model=key[1])

    pool = ClientPool(build)
    timer = threading.Timer(0.2, _thread.interrupt_main)  # a real KeyboardInterrupt, as Ctrl-C
    timer.start()
    with pytest.raises(LoadCancelled, match="stopped waiting for the echo backend"):
        pool.get(("echo", "mistral-7b"))
    assert threading.current_thread() is threading.main_thread()
    release.set()
    client = pool.get(("echo", "mistral-7b"))  # the same load, finished: not started again
    assert pool.get(("echo", "mistral-7b")) is client and builds == [("echo", "mistral-7b")]
    assert client.model.alias == "mistral-7b"
    pool.close()


def test_a_failed_load_raises_its_error_and_is_tried_again() -> None:
    attempts: list[int] = []

    def build(key: tuple[str, str]) -> MistralClient:
        attempts.append(1)
        if len(attempts) == 1:
            raise BackendUnavailableError("the local model cannot be loaded: missing")
        return MistralClient(backend="echo")

    pool = ClientPool(build)
    with pytest.raises(BackendUnavailableError, match="missing"):
        pool.get(("echo", "mistral-7b"))
    assert pool.get(("echo", "mistral-7b")).backend.name == "echo"
    assert len(attempts) == 2


def _runtime_imports(path: Path) -> set[str]:
    """Modules of the chat package that ``path`` imports outside ``if TYPE_CHECKING``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {
        name.rsplit(".", 1)[1] for name in found if name.startswith("bedrock_mistral.cli.chat.")
    }


def test_chat_modules_import_each_other_one_way() -> None:
    graph = {p.stem: _runtime_imports(p) for p in CHAT.glob("*.py")}
    assert "repl" not in graph["commands"]  # the table names the Repl for types only
    done: set[str] = set()

    def walk(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for imported in graph.get(name, ()):
                walk(imported, (*path, name))
            done.add(name)

    for name in graph:
        walk(name, ())


def test_commands_change_state_only_through_the_repl_verbs() -> None:
    tree = ast.parse((CHAT / "commands.py").read_text())
    writes = [
        ast.unparse(target)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, (ast.Attribute, ast.Subscript))
        and ast.unparse(target).startswith("repl.")
    ]
    assert writes == []
