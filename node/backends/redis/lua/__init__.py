"""The Redis scripts, as Lua files beside this module (shipped as package data). A script is
its libraries (lib/: the envelope, budgets, and what a room's or the cluster-wide scripts
share) followed by its own file: Redis runs one text, so a script carries what it calls."""

from __future__ import annotations

from importlib import resources

_FILES = resources.files(__name__)

# Every script loaded, by name: the suite SCRIPT LOADs each one.
SCRIPTS: dict[str, str] = {}


def lua_script(name: str, *libraries: str) -> str:
    """The text of the script `name`.lua, after the `libraries` it uses (lib/<name>.lua)."""
    parts = [(_FILES / "lib" / f"{library}.lua").read_text() for library in libraries]
    text = SCRIPTS[name] = "".join([*parts, (_FILES / f"{name}.lua").read_text()])
    return text


def library(name: str) -> str:
    """The text of lib/`name`.lua alone (the envelope tests run it with a body of their own)."""
    return (_FILES / "lib" / f"{name}.lua").read_text()
