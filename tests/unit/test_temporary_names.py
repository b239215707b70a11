"""Every temporary folder this code makes is named so that the suite's litter check sees it."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import OUR_TEMPORARY_NAMES

ROOT = Path(__file__).parents[2]
MADE = re.compile(r"(?:mkdtemp|TemporaryDirectory|mkstemp)\(\s*prefix=f?\"([^\"]*)\"")


def _our_sources() -> list[Path]:
    """The project's Python files, not what the tools install beside them (the peers'
    virtual environments and node_modules)."""
    return [path for folder in ("node", "gateway", "loadtest", "tests")
            for path in (ROOT / folder).rglob("*.py")
            if not {".venv", "node_modules"} & set(path.relative_to(ROOT).parts)]


def test_every_temporary_folder_has_one_of_our_names() -> None:
    prefixes = [(path.relative_to(ROOT), prefix) for path in _our_sources()
                for prefix in MADE.findall(path.read_text())]
    assert len(prefixes) >= 8, prefixes
    for path, prefix in prefixes:
        literal = prefix.split("{")[0]
        assert not literal or literal.startswith(OUR_TEMPORARY_NAMES), (path, prefix)
