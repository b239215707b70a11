"""Signed JSON POSTs to the application: bounded in time, in calls at once and in the bytes
of an answer, and measured."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

from node.hooks.http_client import HttpClient, HttpFailed, Target
from node.hooks.signing import Signer
from node.metrics import Latency

MAX_ANSWER = 65536  # bytes of an answer read at most (a webhook's is read and dropped)


class HookFailed(Exception):
    """No usable answer: refused, timed out, not 2xx, or larger than MAX_ANSWER; `why`
    names which, for the failures' metric."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


class Caller:
    """One HTTP client for a node's hooks and webhooks (kept-alive connections per origin)."""

    def __init__(self, signer: Signer, concurrency: int) -> None:
        self._signer = signer
        self._slots = asyncio.Semaphore(concurrency)
        self._client = HttpClient()
        self._targets: dict[str, Target] = {}
        self.seconds: dict[str, Latency] = {}  # per hook: answered calls' durations
        self.failures: Counter[tuple[str, str]] = Counter()  # (hook, why)

    async def close(self) -> None:
        await self._client.close()

    async def ask(self, hook: str, url: str, body: bytes, timeout: float) -> bytes:
        """POST `body` signed and return the answer's body; raises HookFailed. The wait for
        a free slot counts in `timeout`."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                async with self._slots:
                    answer = await self._post(url, body, f"hook_{uuid.uuid4().hex}")
        except TimeoutError:
            self.failures[(hook, "timeout")] += 1
            raise HookFailed(f"no answer within {timeout:g} s", "timeout") from None
        except HookFailed as failed:
            self.failures[(hook, failed.why)] += 1
            raise
        self.seconds.setdefault(hook, Latency()).observe(time.monotonic() - started)
        return answer

    async def deliver(self, url: str, webhook_id: str, body: bytes, timeout: float) -> None:
        """POST one webhook; raises HookFailed unless it was answered 2xx in `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                await self._post(url, body, webhook_id)
        except TimeoutError:
            raise HookFailed(f"no answer within {timeout:g} s", "timeout") from None

    async def _post(self, url: str, body: bytes, webhook_id: str) -> bytes:
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = Target.of(url)
        try:
            answer = await self._client.post(target, body, self._signer.headers(webhook_id, body),
                                             MAX_ANSWER)
        except HttpFailed as failed:
            raise HookFailed(str(failed), failed.why) from None
        if not 200 <= answer.status < 300:
            raise HookFailed(f"answered {answer.status}", "status")
        return answer.body
