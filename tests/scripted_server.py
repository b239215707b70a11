"""A WebSocket server that plays the protocol scenarios of tests/protocol_scenarios.json.

Each scenario is a list of connections the server expects, each a list of steps: `expect`
(the client's next frame holds these fields; its pings and pongs are passed over), `send`
(a frame to the client), `close` (a close code, with `reason`). A connection may be
`refuse`d at its upgrade (an HTTP status, with `retryAfter`), and may have to come
`notBeforeMs` after the previous one ended (a client that honours `retryAfterMs` or
Retry-After); `{"part": name}` stands for the table's step list of that name. In `expect`,
"*" is any value and "$name" the value first seen under that name ("$name?": the field may be
missing); in `send`, "$name" is that value (the field is left out when none was seen). Messages are written as seqs: a `message` frame gets the
fields of the room's seq-th message, and `history` lists of seqs become those messages.

A client plays a scenario at `/s/<scenario>/<run>/ws` (each run has its own state);
`GET /s/<scenario>/<run>/result` says what the server saw: the connections, and every way the
client strayed from the script (a connection more than the script has is one of them)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

SCENARIOS = Path(__file__).with_name("protocol_scenarios.json")
EXPECT_TIMEOUT = 5.0  # seconds a client has to send the frame the script expects
NOISE = {"ping", "pong"}  # a client's heartbeat: not part of any script


def scenarios() -> dict[str, dict[str, Any]]:
    """The scenarios by name, their connections' parts spelled out."""
    table = json.loads(SCENARIOS.read_text())
    for scenario in table["scenarios"]:
        for connection in scenario["connections"]:
            if "steps" in connection:
                connection["steps"] = [done for step in connection["steps"]
                                       for done in table["parts"].get(step.get("part"), [step])]
    return {scenario["name"]: scenario for scenario in table["scenarios"]}


def message(seq: int) -> dict[str, Any]:
    """The room's seq-th message, as every scenario's room has it."""
    return {"type": "message", "room": "general", "seq": seq, "id": f"m{seq}", "user": "bob",
            "userId": "u-bob", "text": f"message {seq}",
            "timestamp": "2026-12-06T08:00:00.000Z"}


def expand(frame: dict[str, Any], seen: dict[str, Any]) -> dict[str, Any]:
    """A frame of the script as it is sent: seqs made messages, names made values."""
    out = {key: value for key, value in frame.items()
           if not (isinstance(value, str) and value.startswith("$"))}
    out |= {key: seen[value[1:]] for key, value in frame.items()
            if isinstance(value, str) and value.startswith("$") and value[1:] in seen}
    if out["type"] == "message" and "id" not in out:
        out = message(out["seq"]) | out
    for key in ("history", "messages"):
        if isinstance(out.get(key), list):
            out[key] = [message(seq) if isinstance(seq, int) else seq for seq in out[key]]
    return out


def strays(wanted: dict[str, Any], frame: dict[str, Any], seen: dict[str, Any]) -> str | None:
    """Why `frame` is not the one `wanted` (None when it is); records "$name" values."""
    for key, value in wanted.items():
        optional = isinstance(value, str) and value.startswith("$") and value.endswith("?")
        if key not in frame and optional:
            continue
        if key not in frame:
            return f"{key!r} missing"
        if value == "*":
            continue
        if isinstance(value, str) and value.startswith("$"):
            value = seen.setdefault(value[1:].rstrip("?"), frame[key])
        if frame[key] != value:
            return f"{key!r} is {frame[key]!r}, the script wants {value!r}"
    return None


@dataclass
class Run:
    script: list[dict[str, Any]]
    connections: int = 0
    ended_at: float | None = None  # when the last connection ended (monotonic)
    finished: bool = False  # every connection of the script was played
    strayed: list[str] = field(default_factory=list)
    seen: dict[str, Any] = field(default_factory=dict)


class ScriptedServer:
    def __init__(self) -> None:
        self.table = scenarios()
        self.runs: dict[tuple[str, str], Run] = {}
        self.app = web.Application()
        self.app.router.add_get("/s/{scenario}/{run}/ws", self.play)
        self.app.router.add_get("/s/{scenario}/{run}/result", self.result)

    def run_of(self, request: web.Request) -> Run:
        key = (request.match_info["scenario"], request.match_info["run"])
        if key not in self.runs:
            self.runs[key] = Run(self.table[key[0]]["connections"])
        return self.runs[key]

    async def result(self, request: web.Request) -> web.Response:
        run = self.run_of(request)
        return web.json_response({"connections": run.connections, "finished": run.finished,
                                  "strayed": run.strayed})

    async def play(self, request: web.Request) -> web.StreamResponse:
        run = self.run_of(request)
        index, run.connections = run.connections, run.connections + 1
        if index >= len(run.script):
            run.strayed.append(f"connection {index + 1}: the script has {len(run.script)}")
            return web.json_response({"error": "forbidden"}, status=403)
        connection = run.script[index]
        wait = connection.get("notBeforeMs")
        if wait is not None and run.ended_at is not None:
            gap = (time.monotonic() - run.ended_at) * 1000
            if gap < wait:
                run.strayed.append(f"connection {index + 1}: {gap:.0f} ms after the last, "
                                   f"not {wait}")
        if "refuse" in connection:
            run.ended_at = time.monotonic()
            run.finished = index + 1 == len(run.script)
            return web.json_response({"error": "overloaded"}, status=connection["refuse"],
                                     headers={"Retry-After": str(connection["retryAfter"])})
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        try:
            await self.steps(ws, run, index, connection["steps"])
        finally:
            await ws.close()
            run.ended_at = time.monotonic()
        return ws

    async def steps(self, ws: web.WebSocketResponse, run: Run, index: int,
                    steps: list[dict[str, Any]]) -> None:
        for number, step in enumerate(steps, 1):
            where = f"connection {index + 1}, step {number}"
            if "send" in step:
                await ws.send_json(expand(step["send"], run.seen))
            elif "close" in step:
                run.finished = index + 1 == len(run.script)
                await ws.close(code=step["close"], message=step.get("reason", "").encode())
                return
            elif (why := await self.expect(ws, step["expect"], run.seen)) is not None:
                run.strayed.append(f"{where}: {why}")
                return

    async def expect(self, ws: web.WebSocketResponse, wanted: dict[str, Any],
                     seen: dict[str, Any]) -> str | None:
        """Why the client's next frame is not `wanted`, or None."""
        try:
            async with asyncio.timeout(EXPECT_TIMEOUT):
                while True:
                    frame = await ws.receive()
                    if frame.type is not WSMsgType.TEXT:
                        return f"the client sent {frame.type.name} instead of {wanted}"
                    got = json.loads(frame.data)
                    if got.get("type") not in NOISE or got.get("type") == wanted.get("type"):
                        break
        except TimeoutError:
            return f"no frame within {EXPECT_TIMEOUT} s, the script wants {wanted}"
        why = strays(wanted, got, seen)
        return None if why is None else f"{why} in {got}"


async def start(host: str = "127.0.0.1") -> tuple[web.AppRunner, str]:
    """The server on a free port; returns its runner and base URL (http://host:port)."""
    server = ScriptedServer()
    runner = web.AppRunner(server.app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://{host}:{port}"
