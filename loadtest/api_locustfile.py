"""Locust users for the server API: an application's backend posting into rooms.

    CHAT_API_KEY=<admin key> .venv/bin/locust -f loadtest/api_locustfile.py --headless \\
        --host http://127.0.0.1:8001 --users 20 --spawn-rate 10 --run-time 1m --api-rooms general

Each user posts `--api-rate` messages a second (`publish`, with a `clientId`, so a retried
call could not store twice) into one of `--api-rooms`, and now and then a `broadcast` to all of
them and a `presence_stats`; a refused command counts as a failure named by its error code.
Run it beside `loadtest/locustfile.py` (the members who receive the posts) to see the
application's traffic in the rooms' order; `/metrics` on each node counts the calls
(`chat_api_calls_total`).
"""

from __future__ import annotations

import os
import random
import uuid
from typing import Any

from locust import HttpUser, events, task


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--api-rooms", default="general",
                        help="comma list of rooms the backend posts into (they must exist)")
    parser.add_argument("--api-rate", type=float, default=1.0,
                        help="posts a second per user")


class BackendPublisher(HttpUser):
    """An application's backend: posts, broadcasts, asks for counts."""

    def on_start(self) -> None:
        key = os.environ.get("CHAT_API_KEY")
        if not key:
            raise RuntimeError("set CHAT_API_KEY to a key of the server API")
        self.client.headers["X-API-Key"] = key
        options = self.environment.parsed_options
        self.rooms = [room for room in options.api_rooms.split(",") if room]
        self.pause = 1.0 / options.api_rate

    def wait_time(self) -> float:
        """About 1 / --api-rate between calls, at random phases."""
        return random.uniform(self.pause * 0.5, self.pause * 1.5)

    def _call(self, command: str, body: dict[str, Any]) -> None:
        with self.client.post(f"/api/{command}", json=body, name=command,
                              catch_response=True) as reply:
            try:
                answer = reply.json()
            except ValueError:
                reply.failure(f"{command}: not JSON (HTTP {reply.status_code})")
                return
            if "error" in answer:
                reply.failure(f"{command}: {answer['error']['code']}")
            else:
                reply.success()

    @task(20)
    def publish(self) -> None:
        self._call("publish", {"room": random.choice(self.rooms), "text": "from the backend",
                               "clientId": uuid.uuid4().hex})

    @task(1)
    def broadcast(self) -> None:
        self._call("broadcast", {"rooms": self.rooms, "text": "to every room"})

    @task(2)
    def presence_stats(self) -> None:
        self._call("presence_stats", {"room": random.choice(self.rooms)})
