"""The WebSocket layer against Autobahn|Testsuite (fuzzingclient, cases 1-10)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import autobahn


@pytest.mark.timeout(600)
def test_autobahn_reports_no_failed_case(tmp_path: Path) -> None:
    if not os.access(autobahn.PYTHON2, os.X_OK):
        pytest.skip(autobahn.NO_PYTHON2)
    outcomes = autobahn.run([f"{group}.*" for group in range(1, 11)], tmp_path / "report")
    assert outcomes["FAILED"] == 0, outcomes
    assert outcomes["OK"] > 250, outcomes  # the suite really ran
