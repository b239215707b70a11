"""`python -m node`: run one chat node on uvloop until SIGTERM or SIGINT.
`python -m node token ...`: mint a JWT (see node/identity/mint.py).
`python -m node webhooks ...`: an endpoint's dead letters (see node/hooks/dead_letters.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import uvloop
from aiohttp import web

from node.api import AccessLogger
from node.app import create_app, make_runner, server_api_app
from node.config import Settings, api_address, load_settings
from node.heap import HEAP
from node.hooks import dead_letters
from node.identity import mint
from node.runtime import NODE, Node

log = logging.getLogger("node")


async def serve(settings: Settings) -> None:
    """Serve until a stop signal, then shut down within the shutdown timeout."""
    app = create_app(settings)
    runner = make_runner(
        app,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("node.access"),
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout,
    )
    await runner.setup()
    api_runner = None
    try:
        api_runner = await _listen_api(runner.app[NODE], settings)
        await _listen(runner, settings)
    except OSError as exc:
        log.error("node %s cannot listen where it was told to: %s", settings.node_id, exc)
        if api_runner is not None:
            await api_runner.cleanup()
        await runner.cleanup()  # background loops stopped in order: nothing left to hang on
        raise SystemExit(1) from None
    log.info("node %s listening on http://%s:%d (%s mode)", settings.node_id, settings.host,
             settings.port, "embedded" if settings.embedded else "cluster")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    drain = runner.app[NODE].drain
    await _first(stop.wait(), drain.finished.wait())
    log.info("node %s stopping", settings.node_id)
    await drain.drain_for_shutdown()
    if api_runner is not None:
        await api_runner.cleanup()
    await runner.cleanup()
    log.info("node %s stopped", settings.node_id)


async def _listen(runner: web.AppRunner, settings: Settings) -> None:
    """Every listener, the TCP port last: a node that answers /readyz has them all."""
    if settings.unix_socket:
        await web.UnixSite(runner, settings.unix_socket, backlog=1024).start()
        os.chmod(settings.unix_socket, 0o666)  # nginx's workers run as another user
        log.info("node %s also listening on %s", settings.node_id, settings.unix_socket)
    await web.TCPSite(runner, settings.host, settings.port, backlog=1024).start()


async def _listen_api(node: Node, settings: Settings) -> web.AppRunner | None:
    """The server API's listeners, when one is asked for: its own address or Unix socket
    (owner-only), never the node's public port."""
    if not (settings.api_listen or settings.api_socket):
        return None
    runner = web.AppRunner(server_api_app(node), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        if settings.api_socket:
            await web.UnixSite(runner, settings.api_socket).start()
            os.chmod(settings.api_socket, 0o600)
            log.info("node %s serves its API on %s", settings.node_id, settings.api_socket)
        if settings.api_listen:
            host, port = api_address(settings.api_listen)
            await web.TCPSite(runner, host, port).start()
            log.info("node %s serves its API on http://%s", settings.node_id,
                     settings.api_listen)
    except OSError:
        await runner.cleanup()
        raise
    return runner


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Return when the first of `waits` is done; cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


def raise_open_files_limit() -> int:
    """Raise the soft open-files limit to the hard one, as Go programs do at start: every
    client is a file, and a service manager's or a container's soft default (often 1,024)
    would otherwise cap the node near that many clients. Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main() -> None:
    if sys.argv[1:2] == ["token"]:
        return mint.main(sys.argv[2:])
    if sys.argv[1:2] == ["webhooks"]:
        return dead_letters.main(sys.argv[2:])
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    files = raise_open_files_limit()
    if files < settings.max_connections:
        log.warning("%d open files allowed: fewer than --max-connections %d; raise the hard "
                    "limit (ulimit -Hn)", files, settings.max_connections)
    HEAP.install()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings))


if __name__ == "__main__":
    main()
