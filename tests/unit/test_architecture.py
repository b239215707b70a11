"""The walls between node's folders, read from the imports (ast): the folders tell the
architecture only while the imports keep pointing one way.

- transport/ (sockets, HTTP heads, RFC 6455) knows nothing of chat/;
- backends/ (what nodes share: interfaces, memory/, redis/) knows neither chat/ nor transport/;
- redis-py and hiredis are imported only under backends/redis/;
- identity/ does not import the wire protocol (chat/);
- none of them (nor server_api/) imports node.config: each component is given the part of
  the settings it uses;
- server_api/ (the application's HTTP API) sits above chat/: nothing below imports it;
- hooks/ (the application's hooks and webhooks) knows neither chat/ nor transport/; chat/
  asks it, backends/ (which queue the webhooks' events) do not know it;
- client/ (the user-facing library) imports no server module, only the leaf `node.backoff`;
- transport/frames (the RFC 6455 codec, which the load generators use too) imports no node
  module: no connection state behind the bytes;
- no import cycles, between modules nor between folders (a folder counts as one unit, a
  module at node/'s root as its own: the wiring above everything, the leaf tools below).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

NODE = Path(__file__).resolve().parents[2] / "node"
LEAVES_FOR_THE_CLIENT = {"node.backoff"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(NODE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in NODE.rglob("*.py")}


def _imports(path: Path, top_level_only: bool = False) -> Iterator[str]:
    """Every module `path` imports (`from a import b` yields a.b when that is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _graph(top_level_only: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    return {name: {imported for imported in _imports(path, top_level_only)
                   if imported in modules and imported != name}
            for name, path in modules.items()}


def _unit(module: str) -> str:
    """node.chat.hub -> node.chat; node.backends.redis.broker -> node.backends; node.app."""
    parts = module.split(".")
    if len(parts) > 2 or (NODE / parts[-1]).is_dir():
        return ".".join(parts[:2])
    return module


def _within(module: str, folder: str) -> bool:
    return module == folder or module.startswith(folder + ".")


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)) is not None:
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


@pytest.mark.parametrize("folder,forbidden", [
    ("node.transport", "node.chat"),
    ("node.backends", "node.chat"),
    ("node.backends", "node.transport"),
    ("node.identity", "node.chat"),
    # components get the small typed part of the settings they use, built by node.runtime
    ("node.chat", "node.config"),
    ("node.transport", "node.config"),
    ("node.backends", "node.config"),
    ("node.identity", "node.config"),
    ("node.server_api", "node.config"),
    # the server API drives the chat domain from above: nothing below knows of it
    ("node.chat", "node.server_api"),
    ("node.transport", "node.server_api"),
    ("node.backends", "node.server_api"),
    ("node.identity", "node.server_api"),
    # the hooks speak HTTP to the application; the chat domain asks them
    ("node.hooks", "node.chat"),
    ("node.hooks", "node.transport"),
    ("node.hooks", "node.server_api"),
    ("node.hooks", "node.config"),
    ("node.backends", "node.hooks"),
    ("node.transport", "node.hooks"),
])
def test_a_lower_folder_imports_nothing_of_a_higher_one(folder: str, forbidden: str) -> None:
    crossings = sorted(f"{module} imports {imported}"
                       for module, imports in _graph().items() if _within(module, folder)
                       for imported in imports if _within(imported, forbidden))
    assert not crossings


def test_redis_is_imported_only_under_backends_redis() -> None:
    offenders = sorted(
        f"{name} imports {imported}" for name, path in _modules().items()
        if not _within(name, "node.backends.redis")
        for imported in _imports(path) if imported.split(".")[0] in ("redis", "hiredis"))
    assert not offenders


def test_the_client_library_imports_no_server_module() -> None:
    graph = _graph()
    offenders = sorted(f"{module} imports {imported}" for module, imports in graph.items()
                       if _within(module, "node.client") for imported in imports
                       if not _within(imported, "node.client")
                       and imported not in LEAVES_FOR_THE_CLIENT)
    assert not offenders
    for leaf in LEAVES_FOR_THE_CLIENT:
        assert not graph[leaf], f"{leaf} must stay a leaf: the client library imports it"


def test_the_frame_codec_stands_alone() -> None:
    assert not _graph()["node.transport.frames"]
    assert "node.transport.frames" in _graph()["node.transport.websocket"]


def test_no_import_cycle_between_modules() -> None:
    assert _cycle(_graph(top_level_only=True)) is None


def test_no_import_cycle_between_folders() -> None:
    units: dict[str, set[str]] = {}
    for module, imports in _graph().items():
        units.setdefault(_unit(module), set()).update(
            _unit(imported) for imported in imports if _unit(imported) != _unit(module))
    assert _cycle(units) is None


def test_the_walls_see_the_imports() -> None:
    """The checks above read real edges: a wall test that reads nothing cannot fail."""
    graph = _graph()
    assert "node.chat.protocol" in graph["node.chat.hub"]
    assert "node.backends.redis.support" in graph["node.backends.redis.broker"]
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
