"""The aiohttp application of one node: routes, WebSocket endpoints and lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web

from node import api, disconnect
from node.config import Settings
from node.heartbeat import run_heartbeat
from node.drain import shutdown_notice
from node.runtime import NODE, build_node
from node.session import Session

log = logging.getLogger("node.app")

# How long a server-initiated close waits for the client's close frame.
CLOSE_HANDSHAKE_TIMEOUT = 2.0


def create_app(settings: Settings) -> web.Application:
    """The node's application; importable so that tests can serve it in-process."""
    app = web.Application(middlewares=[api.cors_middleware(settings.cors_origin)])
    app[NODE] = build_node(settings)
    app.add_routes(api.routes)
    app.router.add_get("/ws", chat_socket)
    app.router.add_get("/ws/echo", echo_socket)
    app.cleanup_ctx.append(_backends)
    app.cleanup_ctx.append(_background_loops)
    app.on_shutdown.append(_close_sessions)
    return app


async def _backends(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    await node.presence.start()
    await node.broker.start(node.hub.deliver)
    yield
    await node.broker.close()
    await node.presence.close()


async def _background_loops(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    heartbeat = asyncio.create_task(run_heartbeat(node.hub, node.settings))
    liveness = asyncio.create_task(node.liveness.run())
    yield
    node.liveness.stop()
    heartbeat.cancel()
    await liveness  # finishes its tick: the backends close after this
    with contextlib.suppress(asyncio.CancelledError):
        await heartbeat


async def _close_sessions(app: web.Application) -> None:
    """Whoever is still connected (a stop without a drain): told to reconnect, closed with 1001."""
    sessions = list(app[NODE].hub.sessions)
    for session in sessions:
        session.send(shutdown_notice())
    await asyncio.gather(*(session.close(disconnect.SHUTDOWN) for session in sessions))


def _websocket(settings: Settings) -> web.WebSocketResponse:
    # aiohttp refuses a payload of exactly max_msg_size; --max-frame is the largest accepted.
    return web.WebSocketResponse(
        max_msg_size=settings.max_frame + 1, compress=False, timeout=CLOSE_HANDSHAKE_TIMEOUT
    )


async def chat_socket(request: web.Request) -> web.StreamResponse:
    """The chat WebSocket; refused with 503 when this node is not ready for new clients."""
    node = request.app[NODE]
    reason = node.unready_reason()
    if reason is not None:
        return web.json_response({"status": "not ready", "reason": reason}, status=503)
    ws = _websocket(node.settings)
    await ws.prepare(request)
    session = Session(ws, request, node.settings, node.handlers.dispatch)
    node.hub.connect(session)
    log.info("connect session=%s peer=%s", session.id, request.remote)
    try:
        await session.run()
    finally:
        node.hub.disconnect(session)
        await node.handlers.disconnect(session)
        log.info("disconnect session=%s code=%s", session.id, ws.close_code)
    return ws


async def echo_socket(request: web.Request) -> web.StreamResponse:
    """Diagnostic socket: greets, then echoes every text frame."""
    ws = _websocket(request.app[NODE].settings)
    await ws.prepare(request)
    await ws.send_str("Welcome!")
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            await ws.send_str(f"Echo: {message.data}")
    return ws
