"""HTTP routes beside the WebSocket: status, rooms, health, readiness, CORS, access log."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from node.backends.errors import Unavailable
from node.chat.protocol import MAX_OFFSET, MAX_PAGE
from node.drain import DrainRefused
from node.metrics import CONTENT_TYPE
from node.runtime import NODE

CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Content-Type"

routes = web.RouteTableDef()


@routes.get("/api/status")
async def status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return web.json_response({
        "status": "online",
        "node": node.settings.node_id,
        "instance": node.instance,  # changes when the process is replaced (rolling restart)
        "connections": len(node.hub.sessions),
        "sockets": {"total": node.connections.total, **node.connections.by_kind()},
        "draining": node.drain.active,
        "broker": "ok" if node.broker.ready else "unavailable",
    })


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition; the public gateway does not pass it on."""
    return web.Response(body=request.app[NODE].metrics.exposition(),
                        headers={"Content-Type": CONTENT_TYPE})


@routes.get("/api/rooms")
async def rooms(request: web.Request) -> web.Response:
    """A page of the room directory: `?offset=0&limit=100` (at most 100)."""
    try:
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", str(MAX_PAGE)))
    except ValueError:
        offset = limit = -1
    if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= MAX_PAGE:
        return web.json_response(
            {"error": "invalid_format",
             "message": f"0 <= offset <= {MAX_OFFSET}, 1 <= limit <= {MAX_PAGE}"}, status=400)
    page = await request.app[NODE].directory.page(offset, limit)
    return web.json_response({
        "rooms": [room.name for room in page.rooms],
        "details": [{"name": room.name, "userCount": room.user_count} for room in page.rooms],
        "total": page.total,
        "next": page.next_offset(offset),
    })


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    reason = request.app[NODE].unready_reason()
    if reason is None:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready", "reason": reason}, status=503)


@routes.post("/admin/drain")
async def admin_drain(request: web.Request) -> web.Response:
    """Start a coordinated drain of this node; `?force=1` drains even the last ready node."""
    node = request.app[NODE]
    token = node.settings.admin_token
    if token is None:
        raise web.HTTPNotFound()
    # aiohttp keeps undecodable header bytes as surrogates: compare the bytes that came.
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, f"Bearer {token}".encode()):
        return web.json_response({"error": "unauthorized"}, status=401)
    try:
        await node.drain.begin(force=request.query.get("force") in ("1", "true"))
    except DrainRefused as refused:
        return web.json_response({"error": refused.code, "message": refused.message}, status=409)
    except Unavailable:
        return web.json_response({"error": "unavailable"}, status=503)
    return web.json_response({"status": "draining", "node": node.settings.node_id,
                              "windowSeconds": node.settings.drain_window}, status=202)


def cors_middleware(origin: str) -> web.middleware:  # type: ignore[valid-type]
    """Answer preflights on /api/* and add the CORS headers to every /api/* response."""
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Allow-Headers": CORS_HEADERS,
    }

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=headers)
        try:
            response = await handler(request)
        except web.HTTPException as error:  # errors are responses too: browsers must read them
            error.headers.update(headers)
            raise
        response.headers.update(headers)
        return response

    return cors


class AccessLogger(AbstractAccessLogger):
    """One line per HTTP request: method, path, status, milliseconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %.1fms", request.method, request.path, response.status, time * 1000
        )



