"""Every shell block of the user documentation is run by a test as written, or says why not."""

from __future__ import annotations

import pytest

from tests.docs_blocks import ROOT, Block, blocks, documents

ALL = [block for document in documents() for block in blocks(document)]


def _name(block: Block) -> str:
    return f"{block.document}:{block.line}"


@pytest.mark.parametrize("block", [b for b in ALL if b.language == "sh"], ids=_name)
def test_a_shell_block_is_run_by_a_test_or_says_why_not(block: Block) -> None:
    assert block.marker is not None, (
        f"{_name(block)}: mark it <!-- run: tests/....py --> or <!-- not run: why -->")
    if block.marker == "not run":
        assert len(block.detail) > 20, f"{_name(block)}: say why the suite does not run it"
        return
    runner = ROOT / block.detail
    assert runner.is_file(), f"{_name(block)}: no test {block.detail}"
    assert "blocks_run_by" in runner.read_text(), (
        f"{_name(block)}: {block.detail} does not pick its blocks with blocks_run_by")


@pytest.mark.parametrize("block", ALL, ids=_name)
def test_a_block_says_what_it_holds(block: Block) -> None:
    """Commands go in sh blocks (checked above), output in text or json ones: a command
    cannot hide in a block that nothing checks. Code to copy (html, js) is run by a test."""
    if block.language in ("html", "js"):
        assert block.marker == "run", f"{_name(block)}: code to copy must be run by a test"
        return
    assert block.language in ("sh", "text", "json"), (
        f"{_name(block)}: a ```{block.language or '(no language)'} block")
    if block.language != "sh":
        assert not block.text.startswith((".venv/", "bash ", "cd ", "docker")), (
            f"{_name(block)}: a command in a ```{block.language} block")


def test_the_markers_are_read() -> None:
    assert sum(block.marker == "run" for block in ALL) >= 5
