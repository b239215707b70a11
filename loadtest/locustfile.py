"""Locust users that chat over the cluster's WebSocket protocol.

    .venv/bin/locust -f loadtest/locustfile.py --headless --host ws://127.0.0.1:8080 \\
        --users 200 --spawn-rate 20 --run-time 60s --csv results/chat --html results/chat.html

Each user connects (one greenlet reads, as in Locust's contrib users), authenticates, joins a
room and sends `--chat-rate` messages a minute of `--chat-size` characters. Every step lands
in Locust's statistics as a request of type WS: `connect` (handshake), `auth`, `join` (time
to `room_joined`) and `delivery` (end-to-end latency of every message received, from the
sender's timestamp at the start of the text). Failures are named by what went wrong: the
error `code` of an `error` event, `close <code>` for a close the user did not ask for,
`missing_delivery` / `duplicate_delivery` for a gap or a repeat in a room's seq,
`not_recovered` when a resume lost messages, `timeout` for a reply that never came.
A user that is told `server_shutdown` (a drain) reconnects through the host, no sooner than its
`retryAfterMs` (and no sooner than a refused upgrade's `Retry-After`), and resumes its
identity and room from its last seq, as the client library does; a close that means "do not
come back" (1003, 1008, 1009, 4000-4999) ends the user's session for the run. A presence
version skipped is counted (`missing_presence`) and answered as the protocol says: a join
with `since`/`epoch` for a fresh snapshot. A resume answered `"recovered": false` is counted
and the newest window it carries is delivered after what the user saw. With `--chat-session`,
users leave after about that many seconds, stay away `--chat-away` seconds and come back as
a new session (churn). A run in which messages were sent and none was delivered exits 1.
Latency compares the sender's clock with the receiver's: run all Locust processes on one
machine (or on machines with synchronised clocks). Against a cluster in JWT mode, set
CHAT_JWT_SECRET to its secret: each user then mints its own token (sub = its name).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from typing import Any

import gevent
import websocket
from gevent.event import AsyncResult
from locust import User, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtest import scrape
from node.client import is_final
from node.identity.jwt_tokens import mint

KIND = "WS"
REPLY_TIMEOUT = 10.0
NO_MESSAGES_WAIT = 3600.0
RECONNECT_DELAY = 1.0
ABNORMAL_CLOSE, NO_STATUS = 1006, 1005
JWT_SECRET = os.environ.get("CHAT_JWT_SECRET")  # the cluster's: users mint their own tokens
JWT_TTL = 24 * 3600.0  # longer than any run
log = logging.getLogger("chat-locust")


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("chat cluster")
    group.add_argument("--chat-rooms", type=int, default=10, env_var="CHAT_LOAD_ROOMS",
                       help="rooms the users spread over (default 10)")
    group.add_argument("--chat-skew", type=float, default=0.0, env_var="CHAT_LOAD_SKEW",
                       help="Zipf exponent of room popularity: 0 spreads users uniformly, "
                            "1 makes room k about k times less popular than the first")
    group.add_argument("--chat-rate", type=float, default=2.0, env_var="CHAT_LOAD_RATE",
                       help="messages per user per minute (default 2; 0 only listens)")
    group.add_argument("--chat-size", type=int, default=64, env_var="CHAT_LOAD_SIZE",
                       help="characters per message text (default 64)")
    group.add_argument("--chat-session", type=float, default=0.0, env_var="CHAT_LOAD_SESSION",
                       help="mean seconds a user stays before leaving (exponential; 0 = the "
                            "whole run)")
    group.add_argument("--chat-metrics", default="", env_var="CHAT_LOAD_METRICS",
                       help="comma list of node base URLs (http://host:port) whose /metrics "
                            "are read at the start and end: the p99 inside each node is "
                            "logged beside Locust's end-to-end figures")
    group.add_argument("--chat-away", type=float, default=5.0, env_var="CHAT_LOAD_AWAY",
                       help="seconds a user that left stays away before it comes back")


def websocket_url(host: str) -> str:
    """The chat endpoint for a Locust host: http(s) becomes ws(s), a bare host gets /ws."""
    for plain, secure in (("http://", "ws://"), ("https://", "wss://")):
        if host.startswith(plain):
            host = secure + host[len(plain):]
    scheme, _, rest = host.partition("://")
    return host if "/" in rest else f"{scheme}://{rest}/ws"


def room_weights(rooms: int, skew: float) -> list[float]:
    """Popularity of each room: 1 / rank ** skew."""
    return [1 / (rank ** skew) for rank in range(1, rooms + 1)]


def message_text(size: int, now_ms: float) -> str:
    """A text of `size` characters that starts with the sender's clock in milliseconds."""
    stamp = f"{now_ms:.3f}|"
    return stamp + "x" * max(0, size - len(stamp))


def sent_at_ms(text: str) -> float | None:
    """The sender's clock from a text made by `message_text`, None for other texts."""
    stamp, bar, _ = text.partition("|")
    try:
        return float(stamp) if bar else None
    except ValueError:
        return None


def _retry_after(refused: Exception) -> float:
    """The seconds a refused upgrade's Retry-After asks for (0 without one)."""
    headers = getattr(refused, "resp_headers", None) or {}
    try:
        return float(headers.get("retry-after", 0))
    except ValueError:
        return 0.0


def new_name() -> str:
    """A user's display name, unique in the run."""
    return f"locust-{uuid.uuid4().hex[:12]}"


class ChatUser(User):
    """One person in the chat: a connection, a room, a message every 60/rate seconds."""

    abstract = False

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        options = environment.parsed_options
        self.rate: float = options.chat_rate
        self.size: int = options.chat_size
        self.session: float = options.chat_session
        self.away: float = options.chat_away
        self.room = random.choices([f"load-{k}" for k in range(options.chat_rooms)],
                                   room_weights(options.chat_rooms, options.chat_skew))[0]
        self.ws: websocket.WebSocket | None = None
        self.waiting: dict[str, AsyncResult] = {}
        self.name = new_name()
        self.refusal: str | None = None  # the code of the last request's error reply
        # A resume's messages while its gap is paged in with `history`, and live ones meanwhile
        self.backfill: list[dict[str, Any]] | None = None
        self.held: list[dict[str, Any]] = []
        self.identity: dict[str, str] = {}
        self.seq = 0
        self.epoch = ""
        self.presence = 0  # the room's presence version this user's view reflects
        self.user_count = 0
        self.leaving = False  # this user closes: not a failure, no reconnect
        self.drained = False  # the server said server_shutdown: not a failure, reconnect
        self.retry_after = 0.0  # seconds the server asked to wait before coming back
        self.final_close: int | None = None  # the server said never to come back
        self.session_ends = float("inf")

    def wait_time(self) -> float:
        return 60.0 / self.rate if self.rate > 0 else NO_MESSAGES_WAIT

    def on_start(self) -> None:
        gevent.sleep(random.random() * self.wait_time() if self.rate > 0 else 0)
        self.connect(resume=False)

    def on_stop(self) -> None:
        self.disconnect()

    @task
    def chat(self) -> None:
        if time.monotonic() >= self.session_ends:
            self.disconnect()
            gevent.sleep(self.away)
            self.name = new_name()  # a new user: the old one's name is kept for its grace
            self.connect(resume=False)
        elif self.rate > 0 and self.ws is not None and self.final_close is None:
            self.send({"type": "message", "text": message_text(self.size, time.time() * 1000)})

    # --- the session -------------------------------------------------------------------

    def connect(self, resume: bool) -> None:
        """Connect, authenticate and join; `resume` keeps identity and room position."""
        started = time.perf_counter()
        try:
            ws = websocket.create_connection(websocket_url(self.host), timeout=REPLY_TIMEOUT,
                                             enable_multithread=True)
        except Exception as exc:  # any handshake failure is a failed connect
            self.fire("connect", started, exc)
            self.retry_after = _retry_after(exc)
            gevent.spawn_later(self.reconnect_delay(), self.connect, resume)
            return
        self.fire("connect", started)
        ws.settimeout(None)
        self.ws, self.leaving, self.drained = ws, False, False
        gevent.spawn(self.read, ws)
        success = self.authenticate(resume)
        if success is None:
            return
        if "token" in success:  # the resume token of a cluster without JWT
            self.identity = {"userId": success["userId"], "token": success["token"]}
        join: dict[str, Any] = {"type": "join", "room": self.room}
        if resume and self.epoch:
            join |= {"since": self.seq, "epoch": self.epoch}
        if self.request("join", join, "room_joined") is not None and self.session > 0:
            self.session_ends = time.monotonic() + random.expovariate(1 / self.session)

    def authenticate(self, resume: bool) -> dict[str, Any] | None:
        """`auth_success`, or None. A name taken while this user was away past the server's
        grace does not end the session: the user takes a fresh name and resumes as itself
        (the refusal still counts as a failure: it happened)."""
        success = self.request("auth", self.credentials(resume), "auth_success")
        if success is None and self.refusal == "name_taken":
            self.name = new_name()
            success = self.request("auth", self.credentials(resume), "auth_success")
        return success

    def credentials(self, resume: bool) -> dict[str, Any]:
        """The `auth` message: a minted JWT, or a name (and the identity to resume)."""
        if JWT_SECRET is not None:
            return {"type": "auth",
                    "token": mint(JWT_SECRET, "HS256", self.name, self.name, ttl=JWT_TTL)}
        return {"type": "auth", "name": self.name} | (self.identity if resume else {})

    def disconnect(self) -> None:
        """Leave on purpose: the close that follows is not a failure."""
        self.leaving = True
        self.session_ends = float("inf")
        ws, self.ws = self.ws, None
        if ws is None:
            return
        # Not `ws.close()`: it waits for the server's answer under a bare `except:` that
        # swallows the GreenletExit Locust stops a user with, so a user stopped mid-close
        # lived on, reconnecting, and the run never ended.
        try:
            ws.send_close()
        except (websocket.WebSocketException, OSError):
            pass
        ws.shutdown()

    def request(self, name: str, frame: dict[str, Any], reply: str) -> dict[str, Any] | None:
        """Send `frame` and wait for the `reply` event; its time is the request's time."""
        started = time.perf_counter()
        waiter = self.waiting[reply] = AsyncResult()
        self.send(frame)
        try:
            event = waiter.get(timeout=REPLY_TIMEOUT)
        except gevent.Timeout:
            self.fail("timeout", f"no {reply} within {REPLY_TIMEOUT} s")
            return None
        finally:
            self.waiting.pop(reply, None)
        self.refusal = event["code"] if event["type"] == "error" else None
        if self.refusal is not None:
            self.fail(event["code"], event.get("message", ""))
            return None
        self.fire(name, started)
        return event

    def send(self, frame: dict[str, Any]) -> None:
        if self.ws is None:
            return
        try:
            self.ws.send(json.dumps(frame))
        except (websocket.WebSocketException, OSError):
            pass  # the reader reports the lost connection

    # --- what arrives ------------------------------------------------------------------

    def read(self, ws: websocket.WebSocket) -> None:
        """The receive greenlet: dispatch frames until the connection ends, then reconnect
        unless this user closed it or the server said never to come back."""
        code = ABNORMAL_CLOSE
        try:
            while True:
                opcode, data = ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else NO_STATUS
                    break
                self.dispatch(json.loads(data))
        except (websocket.WebSocketException, OSError):
            pass
        if self.leaving or self.ws is not ws:
            return
        self.ws = None
        if not self.drained:
            self.fail(f"close {code}", "connection closed by the server")
        if is_final(code):
            self.final_close = code
            return
        gevent.sleep(self.reconnect_delay())
        self.connect(resume=True)

    def reconnect_delay(self) -> float:
        """Full jitter, and no sooner than the server asked."""
        delay, self.retry_after = max(self.retry_after, random.uniform(0, RECONNECT_DELAY)), 0.0
        return delay

    def dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message" and self.backfill is not None:
            self.held.append(event)
        elif kind == "history" and self.backfill is not None:
            self.take_history(event["messages"] + self.backfill, event["more"])
        elif kind == "message":
            self.delivered(event)
        elif kind == "ping":
            self.send({"type": "pong", "timestamp": event.get("timestamp")})
        elif kind == "server_shutdown":
            self.drained = True
            self.retry_after = event.get("retryAfterMs", 0) / 1000
        elif kind == "error" and self.backfill is not None:  # a page refused: what is
            self.fail(event.get("code", "error"), event.get("message", ""))  # missing shows
            self.take_history(self.backfill, more=False)
        elif kind == "error" and self.waiting:
            for waiter in self.waiting.values():
                waiter.set(event)
        elif kind == "error":
            self.fail(event.get("code", "error"), event.get("message", ""))
        elif kind == "room_joined":
            self.joined(event)
        elif kind == "messages_lost" and event["to"] > self.seq:
            self.fail("messages_lost", f"{self.room} seq {event['from']}..{event['to']} lost")
            self.seq = event["to"]
        elif kind == "history_reset":
            self.fail("history_reset", f"{self.room} forked after seq {event['seq']}")
            self.seq, self.epoch = min(self.seq, event["seq"]), event["epoch"]
        elif kind in ("user_joined", "user_left"):
            self.presence_changed(event)
        elif kind == "user_count":
            self.count_changed(event)
        if kind in self.waiting:
            self.waiting[kind].set(event)

    def joined(self, event: dict[str, Any]) -> None:
        """Take the room's position from `room_joined` before any live message is read."""
        self.presence, self.user_count = event["presence"], event["userCount"]
        recovered = event.get("recovered")
        if recovered is False:
            self.fail("not_recovered", f"{self.room}: messages after seq {self.seq} lost")
        self.epoch = event["epoch"]
        self.backfill, self.held = None, []
        if recovered is None:  # a first join: its history is not this user's to count
            self.seq = event["seq"]
        elif recovered:
            self.take_history(event["history"], event["more"])
        else:  # what follows the gap: the newest window
            history = event["history"]
            self.seq = history[0]["seq"] - 1 if history else event["seq"]
            self.take_history(history, more=False)

    def take_history(self, messages: list[dict[str, Any]], more: bool) -> None:
        """A resume's messages, checked once every one after the last seen is at hand: while
        the room keeps older ones this user has not seen, page back for them first (live
        messages wait meanwhile), as the client library does."""
        if more and messages and messages[0]["seq"] > self.seq + 1:
            self.backfill = messages
            self.send({"type": "history", "before": messages[0]["seq"]})
            return
        held, self.backfill, self.held = self.held, None, []
        for message in messages + held:
            self.delivered(message)

    def presence_changed(self, event: dict[str, Any]) -> None:
        """The presence rule: skip what the snapshot holds; a skipped version is a failure,
        and a fresh snapshot is asked for."""
        if event["presence"] <= self.presence:
            return
        if event["presence"] > self.presence + 1:
            self.fail("missing_presence", f"{self.room} presence "
                      f"{self.presence + 1}..{event['presence'] - 1} missing")
            self.send({"type": "join", "room": self.room, "since": self.seq, "epoch": self.epoch})
        self.presence, self.user_count = event["presence"], event["userCount"]

    def count_changed(self, event: dict[str, Any]) -> None:
        """A large room's newest count: versions skip by design, they only never go back."""
        if event["presence"] > self.presence:
            self.presence, self.user_count = event["presence"], event["userCount"]

    def delivered(self, message: dict[str, Any]) -> None:
        """One delivery: check the room's seq for gaps and repeats, record the latency."""
        seq = message["seq"]
        if seq <= self.seq:
            self.fail("duplicate_delivery", f"{self.room} seq {seq} after {self.seq}")
            return
        if seq > self.seq + 1:
            self.fail("missing_delivery", f"{self.room} seq {self.seq + 1}..{seq - 1} missing")
        self.seq = seq
        sent = sent_at_ms(message.get("text", ""))
        if sent is not None:
            self.environment.events.request.fire(
                request_type=KIND, name="delivery", response_time=time.time() * 1000 - sent,
                response_length=len(message["text"]), exception=None, context={})

    # --- statistics --------------------------------------------------------------------

    def fire(self, name: str, started: float, exception: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type=KIND, name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=0, exception=exception, context={})

    def fail(self, name: str, why: str) -> None:
        self.environment.events.request.fire(
            request_type=KIND, name=name, response_time=0, response_length=0,
            exception=Exception(why), context={})


_node_marks: dict[str, scrape.Buckets] = {}


def _metric_urls(environment: Environment) -> list[str]:
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return []
    return [u.strip().rstrip("/") for u in environment.parsed_options.chat_metrics.split(",")
            if u.strip()]


@events.test_start.add_listener
def _mark_node_latencies(environment: Environment, **_: Any) -> None:
    for url in _metric_urls(environment):
        _node_marks[url] = scrape.buckets(url)


@events.test_stop.add_listener
def _log_node_latencies(environment: Environment, **_: Any) -> None:
    """The latency inside each node over the run, from its /metrics histograms."""
    for url in _metric_urls(environment):
        p99 = scrape.p99_between(_node_marks[url], scrape.buckets(url))
        log.info("inside %s, p99 at most (ms): publish %s, fan-out %s", url, p99["publish"],
                 p99["fanout"])


@events.quitting.add_listener
def _fail_without_deliveries(environment: Environment, **_: Any) -> None:
    """A run that sent messages and saw none delivered measured nothing: exit 1."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    if environment.parsed_options.chat_rate <= 0:
        return
    deliveries = environment.stats.entries.get(("delivery", KIND))
    if deliveries is None or deliveries.num_requests == 0:
        log.error("no message was delivered")
        environment.process_exit_code = 1
