"""The shell blocks of the user documentation and who runs them.

Every ```sh block in README.md, docs/*.md and compose/README.md is preceded by a marker, an
HTML comment that Markdown does not show: `<!-- run: tests/...py -->` names the test that
runs it as written (that test picks its blocks with `blocks_run_by`), `<!-- not run: why -->`
says why the suite does not. tests/unit/test_docs.py holds every block to that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]
FENCE = re.compile(r"(?:<!-- (run|not run): (.+?) -->\s*\n)?```(\w*)\n(.*?)```", re.DOTALL)


def documents() -> list[str]:
    """The user documentation, as paths from the repository's root."""
    return ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")),
            "compose/README.md"]


@dataclass(frozen=True)
class Block:
    document: str
    line: int
    language: str
    text: str
    marker: str | None  # "run" or "not run"
    detail: str  # the test that runs it, or why not

    def commands(self) -> list[tuple[str, list[str]]]:
        """Each command with its continuation lines joined, and the `> ` lines typed into
        it (an interactive session)."""
        found: list[tuple[str, list[str]]] = []
        for line in self.text.replace("\\\n", "").splitlines():
            if line.startswith("> ") and found:
                found[-1][1].append(line[2:])
            elif line.strip():
                found.append((line, []))
        return found


def blocks(document: str) -> list[Block]:
    text = (ROOT / document).read_text()
    return [Block(document, text[:match.start()].count("\n") + 1, match.group(3),
                  match.group(4), match.group(1), match.group(2) or "")
            for match in FENCE.finditer(text)]


def blocks_run_by(test_file: str) -> list[Block]:
    """The shell blocks whose marker names `test_file` (a path from the repository's root)."""
    return [block for document in documents() for block in blocks(document)
            if block.marker == "run" and block.detail == test_file]


def quick_start() -> list[str]:
    """The README's two quick-start commands, as typed."""
    first = blocks("README.md")[0]
    assert first.language == "sh", first
    return [command for command, _ in first.commands()]
