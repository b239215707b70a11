"""The python-socketio peer of the fan-out benchmark: rooms, broadcast to a room (the sender
included, as the chat nodes do), AsyncRedisManager between nodes, on aiohttp and uvloop.
PORT and REDIS_URL from the environment, and UNIX_SOCKET: a second listener for nginx on the
same host, as the chat nodes have."""

import asyncio
import os
import signal

import socketio
import uvloop
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"],
                           client_manager=socketio.AsyncRedisManager(os.environ["REDIS_URL"]))


@sio.on("join")
async def join(sid: str, room: str) -> None:
    await sio.enter_room(sid, room)
    await sio.emit("joined", room, to=sid)


@sio.on("message")
async def message(sid: str, data: dict) -> None:
    await sio.emit("message", data, room=data["room"])


async def serve() -> None:
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(os.environ["PORT"])).start()
    if os.environ.get("UNIX_SOCKET"):
        await web.UnixSite(runner, os.environ["UNIX_SOCKET"]).start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    uvloop.run(serve())
