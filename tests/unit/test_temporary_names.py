"""Every temporary folder this code makes is named so that the suite's litter check sees it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import OUR_TEMPORARY_NAMES

ROOT = Path(__file__).parents[2]
MADE = re.compile(r"(?:mkdtemp|TemporaryDirectory|mkstemp)\(\s*prefix=f?\"([^\"]*)\"")


def _our_sources() -> list[Path]:
    """The project's Python files (not what the tools install beside them, peers' venvs)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                             "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / name for name in listed.stdout.split()]


def test_every_temporary_folder_has_one_of_our_names() -> None:
    prefixes = [(path.relative_to(ROOT), prefix) for path in _our_sources()
                for prefix in MADE.findall(path.read_text())]
    assert len(prefixes) >= 8, prefixes
    for path, prefix in prefixes:
        literal = prefix.split("{")[0]
        assert not literal or literal.startswith(OUR_TEMPORARY_NAMES), (path, prefix)
