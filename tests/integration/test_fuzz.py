"""Property-based hostile input against a real node process while a canary chats.

Hypothesis throws random JSON, random and lying frames, fragmentation, heads split anywhere
and abrupt disconnects at a node; a canary in a process of its own (from another loopback
address) chats all the while. Afterwards: no 1011 and no traceback in the node's log, the
canary's p99 under 50 ms, every attacking socket gone, and the node's memory bounded.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.processes import LOOPBACK, Service, start_node
from loadtest.procstats import memory_kib
from tests.frames import client
from tests.hostile_json import json_values

CANARY_SECONDS = 20.0
MAX_FRAME = 4096
TYPES = ["auth", "join", "leave", "message", "list_rooms", "ping", "pong", "nonsense"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

messages = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={"name": json_values, "room": json_values | st.sampled_from(["general", "x" * 65]),
              "text": json_values, "userId": json_values, "token": json_values,
              "since": json_values, "epoch": json_values, "offset": json_values,
              "limit": json_values, "clientId": json_values},
)
texts = st.one_of(
    messages.map(json.dumps),
    json_values.map(json.dumps),
    st.integers(1, 3000).map(lambda depth: '{"type":"ping","x":' + "[" * depth + "]" * depth + "}"),
    st.text(max_size=200),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One client frame, honest or not: any opcode, bits, masking and a length that lies."""
    opcode = draw(st.sampled_from([0, 1, 1, 1, 2, 3, 8, 9, 10, 11]))
    payload = draw(st.one_of(texts.map(str.encode), st.binary(max_size=300)))
    if opcode == 8 and draw(st.booleans()):
        payload = struct.pack("!H", draw(st.integers(0, 65535))) + draw(st.binary(max_size=20))
    fin = draw(st.booleans()) if opcode in (0, 1, 2) else draw(st.booleans() | st.just(True))
    rsv = draw(st.sampled_from([0, 0, 0, 0x40, 0x10]))
    masked = draw(st.booleans() | st.just(True))
    size = len(payload)
    declared = draw(st.sampled_from([size, size, size, size + 1, MAX_FRAME + 1, (1 << 63) + 5]))
    return client(opcode, payload, fin, masked, rsv, declared,
                  draw(st.binary(min_size=4, max_size=4)))


@st.composite
def fragmented(draw: st.DrawFn) -> bytes:
    """A text message cut into fragments, empty ones included, with pings between."""
    data = draw(texts).encode()
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=40)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    out = b""
    for index, piece in enumerate(pieces):
        opcode = 1 if index == 0 else 0
        fin = 0x80 if index == len(pieces) - 1 else 0
        out += client(opcode, piece, fin=bool(fin))
        if draw(st.booleans()):
            out += client(0x9, b"p")
    return out


def _upgrade(extra: bytes = b"") -> bytes:
    return (b"GET /ws HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            + extra + b"\r\n")


heads = st.one_of(
    st.just(_upgrade()),
    st.binary(max_size=400),
    st.binary(max_size=100).map(lambda junk: _upgrade(b"X-Junk: " + junk + b"\r\n")),
    st.sampled_from([b"GET /api/status HTTP/1.1\r\n\r\n", b"POST /admin/drain HTTP/1.1\r\n"
                     b"Authorization: Bearer \xff\r\n\r\n", b"GET /ws HTTP/1.1\r\n\r\n"]),
)
sessions = st.tuples(
    heads,
    st.lists(st.one_of(frames(), fragmented()), max_size=6),
    st.lists(st.integers(1, 64), min_size=1, max_size=5),  # how the stream is split
    st.sampled_from(["close", "reset", "half-close"]),
)


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    run_dir = Path(tmp_path_factory.mktemp("fuzz"))
    node = start_node(run_dir, "fuzz", None, [
        "--max-frame", str(MAX_FRAME), "--max-fragments", "32", "--handshake-timeout", "2",
        "--log-level", "INFO"])
    yield node
    node.stop()


@pytest.fixture(scope="module")
def canary(fuzz_node: Service) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtest.canary", "--url",
         f"ws://{LOOPBACK}:{fuzz_node.port}/ws",
         "--duration", str(CANARY_SECONDS), "--interval", "0.25", "--source", "127.0.0.2"],
        stdout=subprocess.PIPE, text=True)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def _attack(port: int, session: tuple[bytes, list[bytes], list[int], str]) -> None:
    head, payloads, splits, ending = session
    stream = head + b"".join(payloads)
    with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
        try:
            at, index = 0, 0
            while at < len(stream):
                size = splits[index % len(splits)] * 16
                sock.sendall(stream[at:at + size])
                at, index = at + size, index + 1
            if ending == "half-close":
                sock.shutdown(socket.SHUT_WR)
                sock.recv(65536)
            elif ending == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # the node closed on us: that is one of the answers


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/api/status", timeout=2) as response:
        return json.loads(response.read())


def test_hostile_input_never_hurts_the_node_or_its_neighbours(
        fuzz_node: Service, canary: subprocess.Popen[str]) -> None:
    rss_before = memory_kib(fuzz_node.process.pid, "VmRSS")
    started = time.monotonic()
    attacks = []

    @settings(max_examples=2000, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(sessions)
    def throw(session: tuple[bytes, list[bytes], list[int], str]) -> None:
        if time.monotonic() - started < CANARY_SECONDS - 8:  # the canary must see it all
            _attack(fuzz_node.port, session)
            attacks.append(session)

    throw()
    assert len(attacks) > 300, "too few attacks to mean anything"
    output, _ = canary.communicate(timeout=CANARY_SECONDS + 30)
    report = json.loads(output)
    deadline = time.monotonic() + 10
    while (sockets := _status(fuzz_node.port)["sockets"])["total"] > 1:
        assert time.monotonic() < deadline, f"sockets left open: {sockets}"
        time.sleep(0.1)
    log = fuzz_node.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "code=1011" not in log, fuzz_node.log_tail(40)
    assert report["received"] >= report["sent"] * 0.99 and not report["problems"], report
    assert report["p99_ms"] < 50, report
    growth_mib = (memory_kib(fuzz_node.process.pid, "VmRSS") - rss_before) / 1024
    assert growth_mib < 4 + 16, f"node RSS grew {growth_mib:.1f} MiB"  # --max-buffer + 16
