"""The server API's HTTP listener: `POST /api/<command>` with a JSON object body and the key
in `X-API-Key`, answered `{"result": ...}` or `{"error": {"code", "message"}}` with a 4xx or
503 status. Bodies are bounded (`--api-max-body`), every command takes a token from its
key's bucket (`--api-rate`, `--api-burst`; a batch's commands one each), and every call is
counted by command and result (`chat_api_calls_total`). It listens on an address of its own,
which the gateway never routes."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from node.identity.api_keys import ApiKey, find_key
from node.ratelimit import Rate
from node.server_api.commands import ApiError, BatchBody, ServerApi

log = logging.getLogger("node.server_api")

KEY_HEADER = "X-API-Key"


class Listener:
    """Authenticates, bounds and counts each call, then runs its command(s)."""

    def __init__(self, api: ServerApi, keys: tuple[ApiKey, ...], rate: Rate, max_body: int,
                 calls: Counter[tuple[str, str]]) -> None:
        self._api = api
        self.max_body = max_body
        self._keys = keys
        self._rate = rate
        self._calls = calls  # (command, "ok" or error code) -> calls
        self._full_at: dict[bytes, float] = {}  # key digest -> when its bucket is full again

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["command"][:32]
        try:
            key = self._authenticate(request)
            body = await _json_object(request, self.max_body)
            if name == "batch":
                result: Any = await self._batch(key, body)
            else:
                result = await self._one(key, name, body)
        except ApiError as refused:
            self._count(name, refused.code)
            return _refusal(refused)
        if name == "batch":
            self._calls[("batch", "ok")] += 1
        return web.json_response({"result": result})

    def _count(self, name: str, result: str) -> None:
        """One refused call, by command (`unknown` for a name that is none: a bounded set
        of labels) and code."""
        known = name in self._api.commands or name == "batch"
        self._calls[(name if known else "unknown", result)] += 1

    def _authenticate(self, request: web.Request) -> ApiKey:
        key = find_key(self._keys, request.headers.get(KEY_HEADER, ""))
        if key is None:
            raise ApiError(401, "unauthorized", f"A valid API key is required in {KEY_HEADER}")
        return key

    async def _batch(self, key: ApiKey, raw: dict[str, Any]) -> list[dict[str, Any]]:
        """Each command of the batch in order, each answered with its result or error."""
        batch = self._api.body_of(BatchBody, raw)
        answers = []
        for entry in batch.commands:
            fields = dict(entry)
            name = fields.pop("command", None)
            try:
                if not isinstance(name, str) or name == "batch":
                    raise ApiError(400, "invalid_request", "Each command of a batch names its "
                                   "`command` (not batch)")
                answers.append({"result": await self._one(key, name, fields)})
            except ApiError as refused:
                self._count(str(name), refused.code)
                answers.append({"error": {"code": refused.code, "message": str(refused)}})
        return answers

    async def _one(self, key: ApiKey, name: str, raw: dict[str, Any]) -> Any:
        command = self._api.command(name)
        if not key.allows(command.scope):
            raise ApiError(403, "forbidden", f"This key's scope ({key.scope}) does not allow "
                           f"{name}")
        self._spend(key)
        result = await self._api.run(command, self._api.body_of(command.body, raw))
        self._calls[(name, "ok")] += 1
        log.info("api key=%s command=%s", key.name, name)
        return result

    def _spend(self, key: ApiKey) -> None:
        now = time.monotonic()
        full_at = self._rate.take(self._full_at.get(key.digest, now), now)
        if full_at is None:
            raise ApiError(429, "rate_limited", "Too many commands for this key; slow down")
        self._full_at[key.digest] = full_at


async def _json_object(request: web.Request, max_body: int) -> dict[str, Any]:
    """The request body as a JSON object, within the listener's size bound."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "body_too_large", f"The body exceeds {max_body} bytes") from None
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object")
    return body


def _refusal(refused: ApiError) -> web.Response:
    return web.json_response({"error": {"code": refused.code, "message": str(refused)}},
                             status=refused.status)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (no such path, a wrong method) as the API's JSON errors."""
    try:
        return await handler(request)
    except web.HTTPException as refused:
        if refused.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(refused.status, "bad_request")
        return _refusal(ApiError(refused.status, code, refused.reason))


def api_app(listener: Listener) -> web.Application:
    """The API's aiohttp application: one route, bodies bounded as the listener says."""
    app = web.Application(client_max_size=listener.max_body, middlewares=[_json_errors])
    app.router.add_post("/api/{command}", listener.handle)
    return app
