"""The aiohttp application of one node: routes, WebSocket endpoints and lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from pathlib import Path
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from node import api
from node.chat import disconnect
from node.chat.delivery_batches import DeliveryBatches
from node.background import Supervised
from node.chat.protocol import Parser
from node.chat.session import Session
from node.config import Settings
from node.drain import shutdown_notice
from node.identity.api_keys import parse_api_keys
from node.ratelimit import Rate
from node.runtime import NODE, Node, build_node
from node.server_api.commands import ServerApi
from node.server_api.listener import Listener, api_app
from node.transport.addresses import trusted_networks
from node.transport.origins import OriginPolicy
from node.transport.output_budget import OutputBudget
from node.transport.server import (
    CHAT_PATH, ECHO_PATH, Accept, ChatServer, ClientErrorsWithoutTraceback, NodeRunner, Upgrade,
    answered, respond,
)
from node.transport.frames import switching_protocols
from node.transport.websocket import Limits, WebSocket

log = logging.getLogger("node.app")

# How long a server-initiated close waits for the client's close frame.
CLOSE_HANDSHAKE_TIMEOUT = 2.0
RETRY_SOON = "Retry-After: 1\r\n"  # a refused upgrade: another node, or this one in a second
SERVER_NAME = "chat"
STATIC = Path(__file__).with_name("static")
# Scripts, styles and sockets from this site only; no inline code, no framing by others.
PAGE_POLICY = ("default-src 'self'; frame-ancestors 'none'; "
               "base-uri 'none'; form-action 'none'")


def server_api_app(node: Node) -> web.Application:
    """The server API's application over a node's chat domain and backends (its listener
    is its own: docs/server-api.md). Needs the API keys in the node's settings."""
    settings = node.settings
    assert settings.api_keys is not None, "load_settings refuses an API without keys"
    commands = ServerApi(node.handlers, node.broker, node.presence, node.coordination,
                         node.directory, node.moderation, Parser(settings.max_text),
                         settings.history_reply_bytes, functools.partial(_node_info, node))
    return api_app(Listener(commands, parse_api_keys(settings.api_keys),
                            Rate(settings.api_rate, settings.api_burst),
                            settings.api_max_body, node.metrics.api_calls))


def _node_info(node: Node) -> dict[str, Any]:
    reason = node.unready_reason()
    return {"id": node.settings.node_id, "instance": node.instance,
            "connections": len(node.hub.sessions), "ready": reason is None,
            **({"reason": reason} if reason else {})}


def create_app(settings: Settings) -> web.Application:
    """The node's application; importable so that tests can serve it in-process."""
    logging.getLogger("aiohttp.server").addFilter(ClientErrorsWithoutTraceback())
    app = web.Application(middlewares=[answered_middleware,
                                       api.cors_middleware(settings.cors_origin)])
    app[NODE] = build_node(settings)
    app.add_routes(api.routes)
    app.router.add_get(CHAT_PATH, _reused_connection)
    app.router.add_get("/", _chat_page)
    app.router.add_static("/static", STATIC)
    app.cleanup_ctx.append(_backends)
    app.cleanup_ctx.append(_background_loops)
    app.on_shutdown.append(_close_sessions)
    app.on_response_prepare.append(_plain_server_header)
    return app


async def _plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """No versions for a scanner to match: aiohttp would say `Python/3.x aiohttp/3.x`. The
    page's scripts and styles come from this site only."""
    response.headers["Server"] = SERVER_NAME
    if not request.path.startswith("/api/"):
        response.headers["Content-Security-Policy"] = PAGE_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"


async def _chat_page(request: web.Request) -> web.FileResponse:
    """The browser chat (node/static): plain HTML and JavaScript, no build step."""
    return web.FileResponse(STATIC / "index.html")


@web.middleware
async def answered_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Let the connection read its next request once this one has its response."""
    try:
        return await handler(request)
    finally:
        answered(request)


async def _backends(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    await node.presence.start()
    await node.broker.start(node.hub)
    yield
    await node.broker.close()
    await node.presence.close()
    await node.coordination.close()
    if node.redis is not None:
        await node.redis.aclose()


async def _background_loops(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    heartbeat = asyncio.create_task(node.heartbeat.run(), name="heartbeat")
    liveness = asyncio.create_task(node.liveness.run())
    control = asyncio.create_task(Supervised("control channel", node.moderation.listen,
                                             settle=1.0).run(), name="control")
    webhooks = None if node.deliverer is None else asyncio.create_task(
        Supervised("webhook delivery", node.deliverer.run, settle=5.0).run(), name="webhooks")
    yield
    if webhooks is not None and node.deliverer is not None:
        webhooks.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await webhooks
        await node.deliverer.release()
    if node.caller is not None:
        await node.caller.close()
    node.liveness.stop()
    control.cancel()
    heartbeat.cancel()
    await liveness  # finishes its tick: the backends close after this
    with contextlib.suppress(asyncio.CancelledError):
        await heartbeat
    with contextlib.suppress(asyncio.CancelledError):
        await control


async def _close_sessions(app: web.Application) -> None:
    """Whoever is still connected (a stop without a drain): told to reconnect, closed with 1001."""
    node = app[NODE]
    sessions = list(node.hub.sessions)
    for session in sessions:
        session.send(shutdown_notice())
    await asyncio.gather(*(session.close(disconnect.SHUTDOWN) for session in sessions),
                         node.echoes.close_all(disconnect.SHUTDOWN.code,
                                               disconnect.SHUTDOWN.reason))


def make_runner(app: web.Application, **kwargs: Any) -> NodeRunner:
    """The runner to serve `app` with: every socket is a `node.transport.server.Connection`."""
    node = app[NODE]
    settings = node.settings
    paths = frozenset((CHAT_PATH, ECHO_PATH) if settings.echo else (CHAT_PATH,))

    def chat_server(http: web.Server) -> ChatServer:
        return ChatServer(http, acceptor(node), node.connections,
                          trusted_networks(settings.trusted_proxies),
                          OriginPolicy.parse(settings.allowed_origins, settings.public_host),
                          paths, settings.handshake_timeout, settings.max_head)

    # aiohttp's own head limits must not refuse what the node's --max-head allows.
    return NodeRunner(app, chat_server, keepalive_timeout=settings.keepalive_timeout,
                      max_line_size=settings.max_head, max_field_size=settings.max_head,
                      **kwargs)


def websocket_limits(settings: Settings, output: OutputBudget) -> Limits:
    return Limits(max_message=settings.max_frame, max_fragments=settings.max_fragments,
                  frames=Rate(settings.frame_rate, settings.frame_burst),
                  max_buffer=settings.max_buffer, close_timeout=CLOSE_HANDSHAKE_TIMEOUT,
                  output=output)


def acceptor(node: Node) -> Accept:
    """Accepts WebSocket upgrades; chat is refused with 503 when the node is not ready."""
    limits = websocket_limits(node.settings, node.output)
    dispatch = node.handlers.dispatch  # one bound method for every session, not one each
    batches = DeliveryBatches(node.settings.write_delay, node.settings.busy_rate)

    def accept(transport: asyncio.Transport, upgrade: Upgrade) -> WebSocket | None:
        reason = node.unserving_reason()
        if upgrade.path == CHAT_PATH and reason is not None:
            respond(transport, 503, "Service Unavailable", {"status": "not ready",
                                                             "reason": reason}, RETRY_SOON)
            return None
        if upgrade.path == CHAT_PATH and node.admission.full:
            node.metrics.upgrades_shed += 1
            respond(transport, 503, "Service Unavailable", {
                "error": "overloaded", "message": "this node has its maximum of handshakes "
                "in progress; retry, another node may take you now"},
                f"Retry-After: {node.admission.retry_after()}\r\n")
            return None
        transport.write(switching_protocols(upgrade.key))
        ws = WebSocket(transport, limits, time.monotonic(), upgrade.address)
        if upgrade.path == ECHO_PATH:
            node.echoes.start(ws, upgrade.rest)
            return ws
        session = Session(ws, node.session_limits, dispatch, ended, upgrade.address,
                          node.metrics, batches)
        node.admission.admit(session)
        node.hub.connect(session)
        log.info("connect session=%s client=%s", session.id, upgrade.address)
        ws.start(session, upgrade.rest)
        return ws

    async def ended(session: Session) -> None:
        """The session stays among the hub's until its departure is handled and its socket
        is closed, so that a shutdown or a drain waiting for the hub to empty waits for
        both: the event loop cannot close while a socket is open."""
        node.admission.finished(session)
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
