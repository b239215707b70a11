"""Plays the protocol scenarios (tests/protocol_scenarios.json) with the Locust users of
loadtest/locustfile.py against the scripted server, in a process of its own (Locust patches
the standard library for gevent): `python -m tests.locust_scenarios BASE SCENARIOS_JSON`
prints {scenario: what the user reported} as JSON. Run by tests/integration/test_scenarios.py."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import gevent
from locust.env import Environment

from loadtest.locustfile import ChatUser

SCENARIO_TIMEOUT = 15.0


class Observed(ChatUser):
    """A Locust user that also records what it delivered and what it was told was lost."""

    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.seqs: list[int] = []
        self.lost: list[list[int]] = []

    def delivered(self, message: dict[str, Any]) -> None:
        before = self.seq
        super().delivered(message)
        if self.seq > before:
            self.seqs.append(self.seq)

    def dispatch(self, event: dict[str, Any]) -> None:
        if event.get("type") == "messages_lost" and event["to"] > self.seq:
            self.lost.append([event["from"], event["to"]])
        super().dispatch(event)


def play(base: str, scenario: dict[str, Any]) -> dict[str, Any]:
    options = argparse.Namespace(chat_rate=0.0, chat_size=64, chat_session=0.0, chat_away=5.0,
                                 chat_rooms=1, chat_skew=0.0, chat_metrics="")
    environment = Environment(user_classes=[Observed], parsed_options=options)
    failures: list[str] = []
    environment.events.request.add_listener(
        lambda name, exception, **_: failures.append(name) if exception else None)
    Observed.host = f"{base.replace('http', 'ws', 1)}/s/{scenario['name']}/locust/ws"
    user = Observed(environment)
    user.name, user.room = "alice", "general"
    user.connect(resume=False)
    for text in scenario.get("say", []):
        user.send({"type": "message", "text": text})
    deadline = time.monotonic() + SCENARIO_TIMEOUT
    while user.final_close is None and time.monotonic() < deadline:
        gevent.sleep(0.01)
    user.disconnect()
    return {"delivered": user.seqs, "lost": user.lost, "failures": failures,
            "finalClose": user.final_close, "userCount": user.user_count}


def main() -> None:
    base, table = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({scenario["name"]: play(base, scenario) for scenario in table}))


if __name__ == "__main__":
    main()
