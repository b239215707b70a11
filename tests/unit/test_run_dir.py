"""A launcher's run directory: held by one launcher, cleared between runs, never a stranger's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.run_dir import OWNER_FILE, RunDir, RunDirRefused


def test_a_held_directory_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    first = RunDir(tmp_path / "run")
    first.claim()
    try:
        (first.path / "cluster.json").write_text("{}")
        with pytest.raises(RunDirRefused, match=r"already running from .* \(launcher pid \d+\)"):
            RunDir(first.path).claim()
        assert (first.path / "cluster.json").read_text() == "{}"
        assert first.public.is_dir()
    finally:
        first.release()


def test_a_new_run_starts_clean_and_the_public_directory_goes_with_the_run(
        tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.claim()
    (run.path / "node1.log").write_text("old")
    (run.path / "redis-1234").mkdir()
    run.release()
    assert not run.public.exists() and (run.path / "node1.log").exists()  # kept to read
    again = RunDir(run.path)
    again.claim()
    try:
        assert [p.name for p in again.path.iterdir()] == ["launcher.pid"]
        assert again.path.stat().st_mode & 0o777 == 0o700
        assert again.public.stat().st_mode & 0o777 == 0o711  # entered, not listed
    finally:
        again.release()


def test_a_directory_with_other_files_is_never_taken(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirRefused, match="not a launcher's run directory"):
        RunDir(tmp_path).claim()
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_temporary_run_goes_entirely(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "scratch", temporary=True)
    run.claim()
    run.release()
    assert not run.path.exists() and not run.public.exists()


def test_what_a_killed_launcher_left_is_swept_by_the_next(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = RunDir(tmp_path / "killed-tool", temporary=True)
    abandoned.claim()
    (abandoned.public / OWNER_FILE).write_text(f"{dead.pid}\n1\n{abandoned.path}\n")
    next_run = RunDir(tmp_path / "next")
    next_run.claim()
    try:
        assert not abandoned.path.exists() and not abandoned.public.exists()
    finally:
        next_run.release()
        abandoned.release()  # its lock
