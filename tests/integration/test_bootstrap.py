"""gateway/bootstrap.sh, which both quick-start commands run first: a step that fails says so
in the last line, and a half-made .venv is made again (the whole path on a fresh Debian is
test_quick_start's)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.timeout(120)
def test_a_failed_install_names_the_step_in_its_last_line(tmp_path: Path) -> None:
    (tmp_path / "gateway").mkdir()
    shutil.copy(ROOT / "gateway" / "bootstrap.sh", tmp_path / "gateway")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "broken"\nversion = "0"\n'
        'dependencies = ["missing @ file:///nonexistent/missing"]\n'
        '[project.optional-dependencies]\nload = []\n')
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("")  # cut short: no pip in it
    done = subprocess.run(["bash", "gateway/bootstrap.sh"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=110)
    assert done.returncode != 0
    assert "creating .venv" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("gateway/bootstrap.sh: pip could not install the project"), last
    assert (tmp_path / ".venv" / "pip-install.log").read_text().strip()
