"""A launcher's run directory: logs, configs and state, held by one launcher at a time.

The directory is owner-only (it holds the admin token and Redis's password); nginx's workers
may run as another user, so the nodes' Unix sockets and nginx's temp files live in a public
directory of the run's, /tmp/chat-gateway-<digest of the run directory's path>, which they may
enter but not list (and whose path is short enough for Unix sockets): a socket is reachable
only by whoever knows its name. It names its launcher's pid: a
launcher that finds one whose launcher is gone removes it (and the run directory too when that
was temporary), so that even a launcher killed outright leaves nothing for long.

A launcher that finds the run directory held by another refuses before it changes anything in
it; one that gets it clears the previous run's files, so that nothing accumulates across runs.
A temporary directory (a load tool's) goes entirely when its launcher releases it. A directory
that holds other files is never taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

LOCK_FILE = "launcher.pid"
PUBLIC_PREFIX = "chat-gateway-"
OWNER_FILE = "owner"  # in the public directory: the launcher's pid, temporary, the run dir


class RunDirRefused(SystemExit):
    """The run directory cannot be taken: another launcher holds it, or it is not a
    launcher's."""


@dataclass
class RunDir:
    path: Path
    temporary: bool = False
    _lock: int | None = field(default=None, repr=False)

    @property
    def public(self) -> Path:
        """Where nginx's workers, which may be another user, reach the nodes' sockets."""
        digest = hashlib.sha256(bytes(self.path.resolve())).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"{PUBLIC_PREFIX}{digest}"

    @property
    def held(self) -> bool:
        return self._lock is not None

    def claim(self) -> None:
        """Hold the directory until `release`, or raise `RunDirRefused` having changed nothing."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not (self.path / LOCK_FILE).exists() and any(self.path.iterdir()):
            raise RunDirRefused(f"{self.path} is not empty and not a launcher's run "
                                "directory: its files would be cleared; pick another --run-dir")
        lock = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(lock, 32).decode(errors="replace").strip() or "?"
            os.close(lock)
            raise RunDirRefused(f"a cluster is already running from {self.path} (launcher "
                                f"pid {holder}): stop it first, or pick another --port") from None
        self._lock = lock
        sweep_abandoned()
        self._clear()
        os.ftruncate(lock, 0)
        os.write(lock, f"{os.getpid()}\n".encode())

    def _clear(self) -> None:
        """The previous run's logs, configs, Redis folders and sockets go."""
        self.path.chmod(0o700)
        for entry in self.path.iterdir():
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        shutil.rmtree(self.public, ignore_errors=True)
        self.public.mkdir(mode=0o711)
        self.public.chmod(0o711)  # whatever the umask: others may enter, not list
        (self.public / OWNER_FILE).write_text(
            f"{os.getpid()}\n{int(self.temporary)}\n{self.path.resolve()}\n")

    def release(self) -> None:
        """Let the directory go (after every process of the run has stopped)."""
        if self._lock is None:
            return
        shutil.rmtree(self.public, ignore_errors=True)
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self._lock)
        self._lock = None


def sweep_abandoned() -> None:
    """Remove the public directories (and temporary run directories) of launchers that are
    gone without releasing them."""
    for public in Path(tempfile.gettempdir()).glob(f"{PUBLIC_PREFIX}*"):
        try:
            pid, temporary, run_dir = (public / OWNER_FILE).read_text().splitlines()
        except (OSError, ValueError):
            continue  # not one of ours, or being written
        if _alive(int(pid)):
            continue
        if temporary == "1":
            shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(public, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
