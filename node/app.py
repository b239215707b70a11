"""The aiohttp application of one node: routes, WebSocket endpoints and lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from node import api, disconnect
from node.config import Settings
from node.heartbeat import run_heartbeat
from node.drain import shutdown_notice
from node.runtime import NODE, Node, build_node
from node.server import Accept, NodeRunner, Upgrade, respond
from node.session import Session
from node.websocket import WebSocket, switching_protocols

log = logging.getLogger("node.app")

# How long a server-initiated close waits for the client's close frame.
CLOSE_HANDSHAKE_TIMEOUT = 2.0


def create_app(settings: Settings) -> web.Application:
    """The node's application; importable so that tests can serve it in-process."""
    app = web.Application(middlewares=[api.cors_middleware(settings.cors_origin)])
    app[NODE] = build_node(settings)
    app.add_routes(api.routes)
    app.router.add_get("/ws", _reused_connection)
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


def make_runner(app: web.Application, **kwargs: Any) -> NodeRunner:
    """The runner to serve `app` with: chat WebSockets are accepted by `chat_acceptor`."""
    node = app[NODE]
    return NodeRunner(app, chat_acceptor(node), node.settings.handshake_timeout, **kwargs)


def chat_acceptor(node: Node) -> Accept:
    """Accepts chat WebSocket upgrades; refused with 503 when the node is not ready."""

    def accept(transport: asyncio.Transport, upgrade: Upgrade) -> None:
        reason = node.unready_reason()
        if reason is not None:
            respond(transport, 503, "Service Unavailable", {"status": "not ready",
                                                             "reason": reason})
            return
        transport.write(switching_protocols(upgrade.key))
        ws = WebSocket(transport, node.settings.max_frame, CLOSE_HANDSHAKE_TIMEOUT)
        session = Session(ws, node.settings, node.handlers.dispatch, ended)
        node.hub.connect(session)
        log.info("connect session=%s peer=%s", session.id, upgrade.peer)
        ws.start(session, upgrade.rest)

    async def ended(session: Session) -> None:
        """The session stays among the hub's until its departure is handled and its socket
        is closed, so that a shutdown or a drain waiting for the hub to empty waits for
        both: the event loop cannot close while a socket is open."""
        try:
            await node.handlers.disconnect(session)
            await session.connection_gone()
        finally:
            node.hub.disconnect(session)
        log.info("disconnect session=%s code=%s", session.id, session.close_code)

    return accept


async def _reused_connection(request: web.Request) -> web.StreamResponse:
    """/ws reached aiohttp: not an upgrade (400), or an upgrade on a connection that already
    carried an HTTP request (503): chat WebSockets are accepted only as a connection's first
    request, as browsers and nginx open them."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return web.json_response({"error": "GET /ws is the chat WebSocket: upgrade required"},
                                 status=400)
    response = web.json_response({"status": "not ready",
                                  "reason": "open the chat WebSocket on a new connection"},
                                 status=503)
    response.force_close()
    return response


def _websocket(settings: Settings) -> web.WebSocketResponse:
    # aiohttp refuses a payload of exactly max_msg_size; --max-frame is the largest accepted.
    return web.WebSocketResponse(
        max_msg_size=settings.max_frame + 1, compress=False, timeout=CLOSE_HANDSHAKE_TIMEOUT
    )


async def echo_socket(request: web.Request) -> web.StreamResponse:
    """Diagnostic socket: greets, then echoes every text frame."""
    ws = _websocket(request.app[NODE].settings)
    await ws.prepare(request)
    await ws.send_str("Welcome!")
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            await ws.send_str(f"Echo: {message.data}")
    return ws
