"""Node settings: one typed object built from CLI flags and CHAT_* environment variables."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "CHAT_"


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _setting(default: Any, help: str, **kwargs: Any) -> Any:
    """A settings field whose help text feeds `--help`."""
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a node can be told; passed down explicitly, never read from globals."""

    host: str = _setting("127.0.0.1", "address to listen on")
    port: int = _setting(8000, "port to listen on")
    unix_socket: str | None = _setting(
        None, "also listen on this Unix socket, for a gateway on the same host (cheaper than "
        "TCP; made connectable by any local user, as a loopback port is)"
    )
    node_id: str = field(
        default_factory=_default_node_id,
        metadata={"help": "this node's id in the cluster (default: hostname-pid)"},
    )
    redis_url: str | None = _setting(
        None, "Redis URL for cluster mode; absent = embedded single-node mode"
    )
    redis_prefix: str = _setting("chat", "prefix of every Redis key and channel this cluster uses")
    node_ttl: float = _setting(
        10.0, "seconds after its last heartbeat that a dead node's users leave presence"
    )
    ping_interval: float = _setting(30.0, "seconds between server pings")
    ping_timeout: float = _setting(60.0, "seconds without a pong before a client is closed")
    rate: float = _setting(10.0, "client frames per second allowed (token bucket refill)")
    burst: int = _setting(20, "client frames allowed in a burst (token bucket size)")
    flood_limit: int = _setting(
        50, "rate-limited frames within --flood-window that get a client closed (1008)"
    )
    flood_window: float = _setting(10.0, "seconds over which rate-limited frames are counted")
    max_text: int = _setting(10000, "longest chat message text, in characters")
    max_frame: int = _setting(
        65536, "largest client message in bytes (a frame, or its fragments together); larger "
        "closes with 1009"
    )
    max_connections: int = _setting(10000, "WebSocket connections this node accepts")
    handshake_timeout: float = _setting(
        10.0, "seconds a new connection has to send its request head before it is closed"
    )
    max_buffer: int = _setting(
        4 * 1024 * 1024, "bytes queued to one client before it is closed as too slow"
    )
    history: int = _setting(100, "messages kept per room")
    history_window: int = _setting(50, "newest messages sent to a joiner")
    shutdown_timeout: float = _setting(10.0, "seconds a stopping node waits for its clients")
    drain_window: float = _setting(10.0, "seconds over which a draining node closes its clients")
    presence_grace: float = _setting(
        5.0, "seconds a drained user stays in presence, so a reconnect elsewhere does not flap"
    )
    admin_token: str | None = _setting(
        None, "bearer token for /admin/* routes; absent = admin routes off"
    )
    cors_origin: str = _setting("*", "Access-Control-Allow-Origin for /api/*")
    log_level: str = _setting("INFO", "log level (DEBUG, INFO, WARNING, ERROR)")

    @property
    def embedded(self) -> bool:
        """True when the node runs alone with in-memory state."""
        return self.redis_url is None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _value_type(f: dataclasses.Field[Any]) -> type:
    annotation = str(f.type)
    for candidate in (int, float):
        if annotation.startswith(candidate.__name__):
            return candidate
    return str


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """An argument parser whose defaults come from `env`, then from `Settings`."""
    parser = argparse.ArgumentParser(
        prog="python -m node",
        description="Run one chat node. Every flag has a CHAT_* environment variable twin.",
    )
    for f in dataclasses.fields(Settings):
        convert = _value_type(f)
        env_name = _env_name(f.name)
        default = convert(env[env_name]) if env_name in env else _default(f)
        parser.add_argument(
            _flag(f.name),
            dest=f.name,
            type=convert,
            default=default,
            help=f"{f.metadata['help']} [env {env_name}, default {default}]",
        )
    return parser


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from command-line flags over CHAT_* variables over defaults."""
    parser = build_parser(os.environ if env is None else env)
    settings = Settings(**vars(parser.parse_args(argv)))
    _validate(settings, parser)
    return settings


def _validate(settings: Settings, parser: argparse.ArgumentParser) -> None:
    positive = ("ping_interval", "ping_timeout", "rate", "burst", "max_text", "max_frame",
                "max_connections", "max_buffer", "history", "history_window", "flood_limit",
                "flood_window", "node_ttl", "drain_window", "handshake_timeout")
    for name in positive:
        if getattr(settings, name) <= 0:
            parser.error(f"{_flag(name)} must be positive")
    if logging.getLevelName(settings.log_level.upper()) not in range(0, 60):
        parser.error(f"unknown --log-level {settings.log_level}")
