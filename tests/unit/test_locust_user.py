"""The Locust user's session rules that a smoke run cannot make happen on demand. Locust
monkey-patches the process with gevent when imported: these run in a process of their own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
USER = """
import argparse
from locust.env import Environment
from loadtest.locustfile import ChatUser

options = argparse.Namespace(chat_rate=0.0, chat_size=64, chat_session=0.0, chat_away=0.0,
                             chat_rooms=1, chat_skew=0.0)
user = ChatUser(Environment(user_classes=[ChatUser], parsed_options=options))
user.identity = {"userId": "u-1", "token": "t-1"}
first_name = user.name
sent = []

def request(name, frame, reply):
    sent.append(frame)
    user.refusal = REFUSALS[len(sent) - 1]
    return None if user.refusal else {"type": "auth_success"}

user.request = request
"""


def _run(script: str) -> None:
    done = subprocess.run([sys.executable, "-c", USER + script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.timeout(60)
def test_a_name_taken_on_a_resume_is_replaced_and_the_user_resumes_as_itself() -> None:
    _run("""
REFUSALS = ["name_taken", None]
assert user.authenticate(resume=True) == {"type": "auth_success"}
assert [frame["userId"] for frame in sent] == ["u-1", "u-1"], "the same user both times"
assert sent[0]["name"] == first_name and sent[1]["name"] == user.name != first_name
""")


@pytest.mark.timeout(60)
def test_other_refusals_end_the_attempt() -> None:
    _run("""
REFUSALS = ["invalid_name", None]
assert user.authenticate(resume=True) is None and len(sent) == 1
""")


@pytest.mark.timeout(60)
def test_a_resume_larger_than_a_reply_is_paged_in_before_what_came_live() -> None:
    _run("""
REFUSALS = []
frames, seen, failures = [], [], []
user.send = frames.append
user.delivered = lambda message: seen.append(message["seq"])
user.fail = lambda name, why: failures.append(name)
user.seq, user.epoch = 3, "e"
message = lambda seq: {"type": "message", "seq": seq, "text": ""}
user.dispatch({"type": "room_joined", "presence": 1, "userCount": 1, "epoch": "e",
               "recovered": True, "more": True, "seq": 9, "history": [message(8), message(9)]})
assert frames == [{"type": "history", "before": 8}] and seen == []
user.dispatch(message(10))  # live, while the gap is paged in: it waits
user.dispatch({"type": "history", "room": "r", "epoch": "e", "more": True,
               "messages": [message(6), message(7)]})
assert frames[-1] == {"type": "history", "before": 6} and seen == []
user.dispatch({"type": "history", "room": "r", "epoch": "e", "more": True,
               "messages": [message(4), message(5)]})
assert seen == [4, 5, 6, 7, 8, 9, 10] and not failures
""")
