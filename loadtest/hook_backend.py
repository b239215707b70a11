"""An application backend for benchmarks of the publish hook: answers every call `accept`
after a fixed delay, as a backend that looks something up would. It does not verify
signatures (a real one does, at its own cost, not the node's).

    .venv/bin/python -m loadtest.hook_backend --port 8091 --delay-ms 1
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop
from aiohttp import web

ACCEPT = b'{"result": "accept"}'


def make_app(delay: float) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(delay)
        return web.Response(body=ACCEPT, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{hook}", answer)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.hook_backend",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=1.0)
    args = parser.parse_args()
    uvloop.install()
    web.run_app(make_app(args.delay_ms / 1000), host=args.host, port=args.port,
                access_log=None, print=None)


if __name__ == "__main__":
    main()
