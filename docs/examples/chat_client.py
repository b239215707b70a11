"""A runnable chat client: join a room, say something, print what the room says.

    .venv/bin/python docs/examples/chat_client.py --name alice --say "hello" --listen 5

It uses the project's client library (node/client/), which reconnects on its own: stop a
node, drain it or run a rolling restart meanwhile, and the client resumes on another node
with every message delivered once, in order. Give `--jwt` (or set CHAT_TOKEN) when the
cluster requires tokens (`.venv/bin/python -m node token --sub alice` mints one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from node.client import ChatClient


async def chat(args: argparse.Namespace) -> None:
    async with ChatClient(args.url, args.name, args.room, jwt=args.jwt) as client:
        print(f"joined {args.room} on {client.node} as {client.user_id}")
        if args.say:
            seq = await client.send(args.say)
            print(f"sent as message {seq}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.listen):
                while True:
                    event = await client.next_event(timeout=args.listen)
                    if event["type"] == "message":
                        print(f"[{event['seq']}] {event['user']}: {event['text']}")
                    elif event["type"] in ("user_joined", "user_left"):
                        print(f"* {event['user']} {event['type'].split('_')[1]}")
                    elif event["type"] == "user_count":
                        print(f"* {event['userCount']} members")
                    elif event["type"] == "closed":
                        print(f"closed: {event['reason']}")
                        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    port = os.environ.get("CHAT_GATEWAY_PORT", "8080")  # as gateway/up.sh
    parser.add_argument("--url", default=f"ws://127.0.0.1:{port}/ws",
                        help="the chat WebSocket (default: the quick start's gateway)")
    parser.add_argument("--name", default="example", help="display name")
    parser.add_argument("--room", default="general")
    parser.add_argument("--say", help="a message to send once joined")
    parser.add_argument("--listen", type=float, default=5.0,
                        help="seconds to print what the room says (default 5)")
    parser.add_argument("--jwt", default=os.environ.get("CHAT_TOKEN"),
                        help="a JWT, for clusters that require one [env CHAT_TOKEN]")
    asyncio.run(chat(parser.parse_args()))


if __name__ == "__main__":
    main()
