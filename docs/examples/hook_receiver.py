"""A small application backend for the chat cluster's hooks and webhooks (docs/hooks.md).

    CHAT_HOOK_SECRET=whsec_... python docs/examples/hook_receiver.py --port 8090

POST /publish  the publish hook: rejects a message with a blocked word, masks a rude one
POST /connect  the connect hook: lets everyone in, except the name "admin"
POST /events   the webhooks: prints each event once (a redelivery has the same id)

Every request is verified with the `standardwebhooks` library against the cluster's secret:
a body or header changed on the way is answered 401 and not acted on.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

BLOCKED = re.compile(r"\b(spam|scam)\b", re.IGNORECASE)  # the message is rejected
RUDE = re.compile(r"\b(darn|heck)\b", re.IGNORECASE)  # the word is masked
SEEN = 100_000  # webhook ids remembered to drop redeliveries


def checked(secret: str) -> web.Middleware:
    """Verify every request's signature before its handler sees the body."""
    verifier = Webhook(secret)

    @web.middleware
    async def verify(request: web.Request, handler) -> web.StreamResponse:
        body = await request.read()
        try:
            request["body"] = verifier.verify(body, dict(request.headers))
        except WebhookVerificationError as error:
            return web.json_response({"error": str(error)}, status=401)
        return await handler(request)

    return verify


async def publish(request: web.Request) -> web.Response:
    text = request["body"]["text"]
    if BLOCKED.search(text):
        return web.json_response({"result": "reject", "code": "blocked_word",
                                  "reason": "That word is not allowed here"})
    masked = RUDE.sub(lambda word: word[0][0] + "*" * (len(word[0]) - 1), text)
    if masked != text:
        return web.json_response({"result": "replace", "text": masked})
    return web.json_response({"result": "accept"})


async def connect(request: web.Request) -> web.Response:
    if (request["body"].get("name") or "").lower() == "admin":
        return web.json_response({"result": "reject", "code": "reserved_name",
                                  "reason": "Choose another name"})
    return web.json_response({"result": "accept"})


async def events(request: web.Request) -> web.Response:
    """Deduplicate by the webhook id: delivery is at least once."""
    seen: collections.OrderedDict[str, None] = request.app["seen"]
    event = request["body"]
    if event["id"] not in seen:
        seen[event["id"]] = None
        if len(seen) > SEEN:
            seen.popitem(last=False)
        print(json.dumps(event), flush=True)
    return web.Response(status=204)


def make_app(secret: str) -> web.Application:
    app = web.Application(middlewares=[checked(secret)])
    app["seen"] = collections.OrderedDict()
    app.add_routes([web.post("/publish", publish), web.post("/connect", connect),
                    web.post("/events", events)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    web.run_app(make_app(os.environ["CHAT_HOOK_SECRET"]), host=args.host, port=args.port,
                print=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
