"""An application backend on loopback for the hooks' tests: verifies every request with the
`standardwebhooks` library (as a real receiver does), records it, and answers as the test
says: at once, late, with an error, or not at all (stopped: connection refused)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.processes import LOOPBACK, free_port


Answer = Callable[[dict[str, Any]], dict[str, Any]]


def accept(body: dict[str, Any]) -> dict[str, Any]:
    return {"result": "accept"}


class Receiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self._verifier = Webhook(secret)
        self.port = free_port()
        self.answer: Answer = accept  # the publish and connect hooks' answer
        self.delay = 0.0  # seconds before answering anything
        self.status = 200  # of webhook answers (and hook answers when not 200)
        self.refuse: Callable[[dict[str, Any]], bool] = lambda event: False  # 500 for these
        self.calls: list[tuple[str, dict[str, Any]]] = []  # (path, verified body)
        self.events: list[dict[str, Any]] = []  # webhooks /events* took (2xx), redeliveries too
        self.paths: list[str] = []  # the path each of `events` came to
        self.forged = 0  # requests whose signature did not verify
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}/{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{hook}", self._handle)
        # Down means down: answers still being delayed are cut off, not waited for.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()

    async def stop(self) -> None:
        """Down: the port refuses connections until `start`."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = self._verifier.verify(raw, dict(request.headers))
        except WebhookVerificationError:
            self.forged += 1
            return web.Response(status=401)
        assert body.get("id", request.headers["webhook-id"]) == request.headers["webhook-id"]
        await asyncio.sleep(self.delay)
        hook = request.match_info["hook"]
        async with self._changed:
            self.calls.append((hook, body))
            self._changed.notify_all()
        if hook.startswith("events"):
            return await self._event(hook, body)
        if self.status != 200:
            return web.Response(status=self.status)
        return web.json_response(self.answer(body))

    async def _event(self, path: str, event: dict[str, Any]) -> web.Response:
        if self.status >= 300 or self.refuse(event):
            return web.Response(status=500 if self.status < 300 else self.status)
        async with self._changed:
            self.events.append(event)
            self.paths.append(path)
            self._changed.notify_all()
        return web.Response(status=204)

    async def wait_for(self, done: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(done)

    def unique(self, path: str = "events") -> list[dict[str, Any]]:
        """The events `path` took, each once (by webhook id), in the order they first came."""
        seen: dict[str, dict[str, Any]] = {}
        for event, took in zip(self.events, self.paths, strict=True):
            if took == path:
                seen.setdefault(event["id"], event)
        return list(seen.values())


async def started(secret: str) -> Receiver:
    receiver = Receiver(secret)
    await receiver.start()
    return receiver

