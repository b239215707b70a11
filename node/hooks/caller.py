"""Signed JSON POSTs to the application: bounded in time, in calls at once and in the bytes
of an answer, and measured."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import aiohttp

from node.hooks.signing import Signer
from node.metrics import Latency

MAX_ANSWER = 65536  # bytes of a hook's answer read at most


class HookFailed(Exception):
    """No usable answer: refused, timed out, not 2xx, or larger than MAX_ANSWER; `why`
    names which, for the failures' metric."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


class Caller:
    """One HTTP client for a node's hooks and webhooks (a connection pool per host)."""

    def __init__(self, signer: Signer, concurrency: int) -> None:
        self._signer = signer
        self._slots = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self.seconds: dict[str, Latency] = {}  # per hook: answered calls' durations
        self.failures: Counter[tuple[str, str]] = Counter()  # (hook, why)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made in the running loop, at first use
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
                auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def ask(self, hook: str, url: str, body: bytes, timeout: float) -> bytes:
        """POST `body` signed and return the answer's body; raises HookFailed. The wait for
        a free slot counts in `timeout`."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                async with self._slots:
                    answer = await self._post(url, body, f"hook_{uuid.uuid4().hex}", True)
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
                await self._post(url, body, webhook_id, False)
        except TimeoutError:
            raise HookFailed(f"no answer within {timeout:g} s", "timeout") from None

    async def _post(self, url: str, body: bytes, webhook_id: str, read: bool) -> bytes:
        try:
            async with self._client().post(url, data=body, allow_redirects=False,
                                           headers=self._signer.headers(webhook_id, body)
                                           ) as response:
                if not 200 <= response.status < 300:
                    raise HookFailed(f"answered {response.status}", "status")
                if not read:
                    return b""
                answer = await response.content.read(MAX_ANSWER + 1)
        except (aiohttp.ClientError, OSError) as error:
            raise HookFailed(f"{type(error).__name__}: {error}", "connection") from None
        if len(answer) > MAX_ANSWER:
            raise HookFailed(f"an answer over {MAX_ANSWER} bytes", "too_large")
        return answer
