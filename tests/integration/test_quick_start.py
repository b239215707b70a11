"""The README's quick start on a fresh Debian 12: a root debootstrapped from the Debian mirror
this machine uses, with python3, python3-venv, git and curl and nothing else, a copy of this
checkout in it, and the README's two commands run in it as written.

Every command in the root runs in mount and PID namespaces of its own (`unshare`): /proc and
/dev are mounted there only, so no mount outlives the test on any exit path, and the PID
namespace ends every process in it when its first process goes. The gateway's port is a free
one (CHAT_GATEWAY_PORT), as in test_readme. This machine reaches PyPI through a proxy with its
own certificate authority: the root trusts what this machine trusts locally
(/usr/local/share/ca-certificates), as a company's Debian would."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.processes import LOOPBACK, die_with_parent, free_port
from tests.docs_blocks import blocks_run_by
from tests.output import read_until

ROOT = Path(__file__).parents[2]
PREFIX = "chat-quickstart-"
ROOT_BYTES = 8 * 1024 ** 3  # free memory a root in /dev/shm leaves room for
STOCK = "python3,python3-venv,git,curl,ca-certificates"
CHECKOUT = "/root/chat-cluster"
LOGIN = {"HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
         "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "debootstrap, chroot and namespaces need root"
    for tool in ("debootstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (tests/run.sh installs debootstrap as root)"
    return None


if (reason := _why_not()) is not None:
    pytest.skip(reason, allow_module_level=True)


def quick_start() -> list[str]:
    """The README's two quick-start commands, as written."""
    block, = blocks_run_by("tests/integration/test_quick_start.py")
    return [command for command, _ in block.commands()]


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    sources = [*Path("/etc/apt/sources.list.d").glob("*.sources"),
               *Path("/etc/apt/sources.list.d").glob("*.list"), Path("/etc/apt/sources.list")]
    for source in sources:
        text = source.read_text(errors="replace") if source.exists() else ""
        for url in re.findall(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, re.M):
            if url.rstrip("/").endswith("/debian"):
                return str(url)
    return "http://deb.debian.org/debian"


def _roots_dir() -> str:
    """Where the root goes: memory (/dev/shm, when it has room for the ~2 GiB the commands
    install), where dpkg's many syncs cost nothing; else the temporary directory."""
    shm = os.statvfs("/dev/shm") if os.path.isdir("/dev/shm") else None
    if shm is not None and shm.f_bavail * shm.f_frsize >= ROOT_BYTES:
        return "/dev/shm"
    return tempfile.gettempdir()


def _sweep() -> None:
    """Roots of runs that were killed (their pid is in the name) go first."""
    for stale in [*Path(tempfile.gettempdir()).glob(f"{PREFIX}*"),
                  *Path("/dev/shm").glob(f"{PREFIX}*")]:
        pid = stale.name.removeprefix(PREFIX).split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove(stale)


def _remove(root: Path) -> None:
    """Remove a root, never through a mount (there should be none: namespaces hold them)."""
    mounts = Path("/proc/self/mountinfo").read_text().split("\n")
    inside = [line for line in mounts if f" {root}/" in line or f" {root} " in line]
    assert not inside, f"mounts left under {root}: {inside}"
    shutil.rmtree(root, ignore_errors=True)


def _copy_checkout(target: Path) -> None:
    """The files a clone of this checkout would have (tracked, and new ones not ignored)."""
    target.mkdir(parents=True)
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    for name in filter(None, files.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)


@pytest.fixture(scope="module")
def debian_root() -> Iterator[Path]:
    _sweep()
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=_roots_dir()))
    try:
        root.chmod(0o755)  # as / is: nginx's workers run as nobody
        done = subprocess.run(
            ["unshare", "--mount", "debootstrap", "--variant=minbase", f"--include={STOCK}",
             "bookworm", str(root), debian_mirror()],
            capture_output=True, text=True, timeout=600, preexec_fn=die_with_parent)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        for authority in Path("/usr/local/share/ca-certificates").glob("*.crt"):
            shutil.copy(authority, root / "usr/local/share/ca-certificates")
        subprocess.run(["chroot", str(root), "update-ca-certificates"], check=True,
                       capture_output=True, timeout=60)
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        _copy_checkout(root / CHECKOUT.lstrip("/"))
        yield root
    finally:
        _remove(root)


def in_root(root: Path, command: str, port: int) -> subprocess.Popen[bytes]:
    """`command` typed in the checkout, as root, in a login-like environment of the root's."""
    login = [f"{name}={value}" for name, value in {**LOGIN,
                                                   "CHAT_GATEWAY_PORT": str(port)}.items()]
    inside = ["/usr/bin/env", "-i", *login, "/bin/bash", "-c", f"cd {CHECKOUT} && {command}"]
    enter = f"mount --rbind /dev {root}/dev && exec chroot {root} {shlex.join(inside)}"
    return subprocess.Popen(
        ["unshare", "--mount", "--pid", "--fork", "--kill-child", f"--mount-proc={root}/proc",
         "/bin/bash", "-c", enter],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent)


def namespace_init(process: subprocess.Popen[bytes]) -> int:
    """The first process in `unshare`'s PID namespace: the command typed."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()  # --kill-child: everything in its PID namespace goes with it
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def test_the_first_command_brings_up_a_cluster_that_chats(debian_root: Path) -> None:
    port = free_port()
    started = time.monotonic()
    cluster = in_root(debian_root, quick_start()[0], port)
    try:
        banner = read_until(cluster, "Ctrl-C stops everything", 600)
        print(f"chat cluster up on a fresh Debian 12 after {time.monotonic() - started:.0f} s")
        assert f"chat cluster up: http://{LOOPBACK}:{port}" in banner, banner
        assert f"gateway status --port {port}`" in banner, banner
        chat = subprocess.run(
            [sys.executable, "docs/examples/chat_client.py", "--url",
             f"ws://{LOOPBACK}:{port}/ws", "--name", "alice", "--say", "hello", "--listen", "1"],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert "alice: hello" in chat.stdout, chat.stdout + chat.stderr
        os.kill(namespace_init(cluster), signal.SIGINT)  # Ctrl-C
        assert cluster.wait(60) == 0
        assert "stopped" in read_until(cluster, "stopped", 10)
    finally:
        stop(cluster)


def test_the_second_command_installs_what_the_tests_need_and_runs_them(
        debian_root: Path) -> None:
    # The whole suite would run this module again: two tests stand for it, each needing
    # something the command installs (the package and its test tools, which the command
    # installs or fails; the cluster's parts: Redis, node processes and nginx; Debian's
    # Node.js and ws, under the JavaScript SDK); the rest of the suite runs in this run, on
    # the same installation's requirements.
    typed = quick_start()[1].split("#")[0].strip()
    command = (f"{typed} tests/unit/test_config.py "
               "'tests/integration/test_cluster.py::"
               "test_the_gateway_reaches_the_nodes_over_their_unix_sockets[redis]' "
               "'tests/integration/test_scenarios.py::test_the_javascript_sdk[resume]' "
               "-q -p no:cacheprovider")
    suite = in_root(debian_root, command, free_port())
    try:
        output = read_until(suite, " passed", 600)
        assert suite.wait(60) == 0, output
        assert " failed" not in output and " error" not in output, output
        assert " skipped" not in output, output  # Node.js and ws were installed too
    finally:
        stop(suite)
