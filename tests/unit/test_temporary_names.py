"""Every temporary folder this code makes is named so that the suite's litter check sees it."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import OUR_TEMPORARY_NAMES

ROOT = Path(__file__).parents[2]
MADE = re.compile(r"(?:mkdtemp|TemporaryDirectory|mkstemp)\(\s*prefix=f?\"([^\"]*)\"")


def test_every_temporary_folder_has_one_of_our_names() -> None:
    prefixes = [(path.relative_to(ROOT), prefix) for folder in ("node", "gateway", "loadtest",
                                                                  "tests")
                for path in (ROOT / folder).rglob("*.py")
                for prefix in MADE.findall(path.read_text())]
    assert len(prefixes) >= 8, prefixes
    for path, prefix in prefixes:
        literal = prefix.split("{")[0]
        assert not literal or literal.startswith(OUR_TEMPORARY_NAMES), (path, prefix)
