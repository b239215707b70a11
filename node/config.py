"""Node settings: one typed object built from CLI flags and CHAT_* environment variables."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import secrets
import socket
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.hooks.endpoints import parse_endpoint
from node.hooks.signing import Signer
from node.identity.api_keys import parse_api_keys
from node.identity.jwt_tokens import DEFAULT_MAX_TTL, JwtVerifier
from node.identity.rules import ROOM_PATTERN
from node.transport.addresses import trusted_networks

ENV_PREFIX = "CHAT_"
MIN_JWT_SECRET = 32  # bytes: HS256's key is at least as long as its hash
MAX_WRITE_DELAY = 1.0  # seconds: past it, batching would be felt as lag, not save writes
DEFAULT_MAX_HEAD = 16384  # the gateway renders its header buffers from it too


def _default_node_id() -> str:
    """Unique per process without telling clients the process id."""
    return f"{socket.gethostname()}-{secrets.token_hex(4)}"


def _setting(default: Any, help: str, positive: bool = False) -> Any:
    """A settings field whose help text feeds `--help`; a `positive` one must be above 0
    (load_settings refuses any other value)."""
    return field(default=default, metadata={"help": help, "positive": positive})


def _positive(default: Any, help: str) -> Any:
    return _setting(default, help, positive=True)


def _secret(help: str, flag: bool = False) -> Any:
    """A secret: from CHAT_<NAME> or the file `--<name>-file` names. Not from argv, where
    every local user can read it (`ps`) and a value starting with "-" reads as a flag, unless
    `flag` keeps a documented `--<name>` for compatibility."""
    return field(default=None, metadata={"help": help, "secret": True, "flag": flag})


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
        metadata={"help": "this node's id in the cluster (default: hostname-<random hex>)"},
    )
    redis_url: str | None = _setting(
        None, "Redis URL for cluster mode; absent = embedded single-node mode"
    )
    redis_cluster: bool = _setting(
        False, "the Redis URL names a seed node of a Redis Cluster: room traffic on sharded "
        "Pub/Sub, each room's keys on its shard")
    redis_prefix: str = _setting("chat", "prefix of every Redis key and channel this cluster uses")
    node_ttl: float = _positive(
        10.0, "seconds after its last heartbeat that a dead node's users leave presence"
    )
    ping_interval: float = _positive(30.0, "seconds between server pings")
    ping_timeout: float = _positive(
        60.0, "seconds without a pong before a client is closed (once a ping went unanswered)")
    rate: float = _positive(10.0, "chat frames per second one connection may send (token "
                           "bucket refill); more get error rate_limited")
    burst: int = _positive(20, "chat frames one connection may send at once (token bucket size)")
    join_rate: float = _positive(
        2.0, "room joins per second one connection may make, resumes, re-joins and history "
        "requests included (each reads the room's history); more get error rate_limited")
    join_burst: int = _positive(5, "room joins (and history requests) one connection may make "
                               "at once")
    frame_rate: float = _positive(
        50.0, "WebSocket frames per second one connection may send, pings and fragments "
        "included; past --frame-burst the connection is closed (1008)"
    )
    frame_burst: int = _positive(200, "WebSocket frames one connection may send at once")
    user_rate: float = _positive(
        10.0, "chat messages per second one user may publish, over all its connections and "
        "nodes; more get error rate_limited"
    )
    user_burst: int = _positive(20, "chat messages one user may publish at once")
    address_rate: float = _positive(
        100.0, "chat messages per second one client address may publish, cluster-wide"
    )
    address_burst: int = _positive(400, "chat messages one client address may publish at once")
    flood_limit: int = _positive(
        50, "rate-limited frames within --flood-window that get a client closed (1008)"
    )
    flood_window: float = _positive(10.0, "seconds over which rate-limited frames are counted")
    max_text: int = _positive(10000, "longest chat message text, in characters")
    client_id_window: float = _positive(
        600.0, "seconds within which a message sent again with the same clientId (by the same "
        "user, to the same room) is stored and delivered once")
    max_frame: int = _positive(
        65536, "largest client message in bytes (a frame, or its fragments together); larger "
        "closes with 1009"
    )
    max_fragments: int = _positive(
        128, "frames one fragmented WebSocket message may have; more closes with 1009"
    )
    max_connections: int = _positive(
        10000, "open sockets this node accepts (chat, echo, plain HTTP and unread requests)"
    )
    max_connections_per_address: int = _positive(
        1000, "open sockets one client address may hold on this node; more get 429"
    )
    trusted_proxies: str = _setting(
        "", "comma list of proxy addresses (IPs, CIDRs, 'unix' for --unix-socket peers) whose "
        "X-Real-IP / X-Forwarded-For header names the client"
    )
    handshake_timeout: float = _positive(
        10.0, "seconds a client has to send a complete request (head and body) before its "
        "connection is closed; applies to every request on every connection"
    )
    handshake_backlog: int = _positive(
        500, "chat handshakes (upgrade to first room_joined, at most --handshake-timeout) this "
        "node works on at once; more upgrades get 503 with Retry-After, which nginx passes to "
        "another node"
    )
    max_head: int = _positive(
        DEFAULT_MAX_HEAD, "largest HTTP request head in bytes; larger gets 431 (the gateway's header "
        "buffers are rendered from the same value)"
    )
    keepalive_timeout: float = _positive(
        5.0, "seconds an idle keep-alive HTTP connection is kept open"
    )
    echo: bool = _setting(False, "serve the diagnostic echo WebSocket at /ws/echo")
    max_buffer: int = _positive(
        4 * 1024 * 1024, "bytes queued to one client before it is closed as too slow"
    )
    max_address_output: int = _positive(
        32 * 1024 * 1024, "bytes queued to all the sockets of one client address together; "
        "past it, the one written to is closed as too slow (1013)")
    max_node_output: int = _positive(
        256 * 1024 * 1024, "bytes queued to all the node's sockets together; past it, the "
        "one written to is closed as too slow (1013)")
    write_delay: float = _setting(
        0.05, "seconds a busy client's room events may wait to share one write: its events "
        "are gathered and written once per this tick, each at most this late; 0 writes each "
        "at once"
    )
    busy_rate: float = _positive(
        50.0, "room events per second a client is written one by one (after a burst of 4); "
        "a client sent more is busy and gets them every --write-delay"
    )
    history: int = _positive(100, "messages kept per room")
    rooms: str = _setting("general,random", "comma list of fixed rooms, which always exist")
    max_rooms: int = _positive(
        1000, "rooms that joining may create, cluster-wide; more get error room_limit"
    )
    user_rooms_per_hour: int = _positive(
        20, "rooms one user may create per hour; more get error room_limit"
    )
    address_identities_per_minute: int = _positive(
        600, "new anonymous users (an auth without userId) one client address may start per "
        "minute, across the cluster; more get error rate_limited")
    address_rooms_per_hour: int = _positive(
        60, "rooms one client address may create per hour, whatever users it claims to be; "
        "more get error room_limit")
    room_ttl: float = _positive(
        3600.0, "seconds an empty created room is kept before it expires with its history"
    )
    history_window: int = _positive(
        50, "newest messages sent to a joiner, and the most one history request returns")
    history_reply_bytes: int = _positive(
        65536, "bytes of stored messages one room_joined or history reply carries at most (the "
        "newest first, and always one): past them the reply says more and the client pages")
    history_cache_bytes: int = _positive(
        16777216, "bytes of rooms' encoded newest history a node keeps to answer joins without "
        "asking Redis (least recently used rooms go first)")
    history_bytes: int = _positive(
        262144, "bytes of messages a room's history keeps, its newest message always: with "
        "--max-rooms, it bounds what history may take of Redis's memory")
    presence_limit: int = _positive(
        1000, "most members a room lists: past it a joiner's room_joined lists none (\"large\": "
        "true) and members get user_count, at most every --presence-interval, instead of "
        "user_joined / user_left"
    )
    presence_interval: float = _positive(
        1.0, "seconds between user_count updates to the members of a large room"
    )
    shutdown_timeout: float = _setting(10.0, "seconds a stopping node waits for its clients")
    drain_window: float = _positive(
        10.0, "seconds over which a draining node closes its clients")
    presence_grace: float = _setting(
        5.0, "seconds a drained user stays in presence, so a reconnect elsewhere does not flap, "
        "and any dropped user keeps its name (anonymous mode), so its resume gets it back"
    )
    admin_token: str | None = _secret("bearer token for /admin/* routes; absent = admin routes off")
    api_listen: str | None = _setting(
        None, "HOST:PORT of the server API (docs/server-api.md), a listener of its own that the "
        "gateway never routes; absent (and no --api-socket): the API is off")
    api_socket: str | None = _setting(
        None, "Unix socket of the server API (owner-only), beside or instead of --api-listen")
    api_keys: str | None = _secret(
        "server API keys: <scope>:<key> entries (scope publish or admin, key of 16-256 "
        "printable ASCII characters) separated by commas or new lines")
    api_rate: float = _positive(100.0, "server API commands per second per key")
    api_burst: int = _positive(200, "server API commands one key may send at once")
    api_max_body: int = _positive(65536, "bytes of one server API request body")
    publish_hook: str | None = _setting(
        None, "URL the node asks, signed, before accepting each client message: accept, reject "
        "or replace its text (docs/hooks.md); absent: no hook")
    publish_hook_timeout: float = _positive(
        1.0, "seconds a publish (or connect) hook call may take, waiting for a free slot "
        "included; past it --publish-hook-failure decides")
    publish_hook_concurrency: int = _positive(
        64, "publish and connect hook calls one node has in flight at once; more wait for a "
        "slot within the hook's timeout")
    publish_hook_failure: str = _setting(
        "reject", "what happens to a message when the publish hook fails, answers badly or "
        "times out: reject (the client gets error unavailable) or accept (published unchecked)")
    connect_hook: str | None = _setting(
        None, "URL the node asks, signed, at each auth: accept (maybe setting the name and the "
        "rooms allowed) or refuse; a failing hook refuses (docs/hooks.md); absent: no hook")
    webhook_url: tuple[str, ...] = field(default=(), metadata={"help": (
        "webhook endpoint, URL#event,event... (the fragment, never sent, picks the events; "
        "none: all); the flag repeats, the variable takes them separated by spaces; needs "
        "--redis-url (the queue is in Redis) and the same list on every node"),
        "repeat": True})
    webhook_timeout: float = _positive(5.0, "seconds one webhook POST may take")
    webhook_max_age: float = _positive(
        3600.0, "seconds an event is retried for, from when it happened; older, it goes to "
        "the endpoint's dead letters (python -m node webhooks)")
    webhook_max_backoff: float = _positive(
        30.0, "the longest wait between two tries of an event (exponential from 0.5 s, full "
        "jitter)")
    webhook_concurrency: int = _positive(
        16, "rooms whose events one node delivers at once, per endpoint (each room's in order)")
    webhook_dead_max: int = _positive(
        100000, "dead letters kept per endpoint; past it the oldest go")
    hook_secret: str | None = _secret(
        "Standard Webhooks secret (whsec_<base64>) that signs hook calls and webhooks")
    jwt_secret: str | None = _secret(
        "HS256 secret of the identity provider's JWTs; set, `auth` requires a token (prefer "
        "the environment or the file: a flag's value is visible to every local user)",
        flag=True)
    jwt_public_key: str | None = _setting(
        None, "PEM file of the identity provider's public key (RSA: RS256, EC: ES256); set, "
        "`auth` requires a token"
    )
    jwt_audience: str | None = _setting(None, "the `aud` every JWT must carry")
    jwt_issuer: str | None = _setting(None, "the `iss` every JWT must carry")
    jwt_max_ttl: float = _positive(
        DEFAULT_MAX_TTL, "seconds a JWT may still live when presented: a token valid for longer "
        "(a leaked one would be usable for as long) is refused")
    allowed_origins: str = _setting(
        "", "comma list of browser origins (scheme://host[:port]) that may open WebSockets, or "
        "'*' for any; requests without Origin and same-origin requests always may"
    )
    public_host: str | None = _setting(
        None, "the Host (host[:port]) clients must use; others get 421 (default: any)"
    )
    cors_origin: str = _setting("*", "Access-Control-Allow-Origin for /api/*")
    log_level: str = _setting("INFO", "log level (DEBUG, INFO, WARNING, ERROR)")

    @property
    def embedded(self) -> bool:
        """True when the node runs alone with in-memory state."""
        return self.redis_url is None

    @property
    def fixed_rooms(self) -> tuple[str, ...]:
        return tuple(room.strip() for room in self.rooms.split(",") if room.strip())


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _value_type(f: dataclasses.Field[Any]) -> type:
    """What a flag's value is read as: the field's type, or the type it makes optional."""
    hint = _field_types()[f.name]
    kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)] or [hint]
    return kinds[0] if kinds[0] in (bool, int, float) else str


@functools.cache
def _field_types() -> dict[str, Any]:
    """Settings' annotations as types (they are strings under `from __future__ import
    annotations`), resolved once: resolving them takes 0.7 ms each time."""
    return typing.get_type_hints(Settings)


def _boolean(value: str) -> bool:
    """A CHAT_* value for an on/off setting."""
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


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
        if f.metadata.get("secret"):
            _add_secret_file(parser, f, env)
            continue
        kind = _value_type(f)
        convert = _boolean if kind is bool else kind
        env_name = _env_name(f.name)
        default = convert(env[env_name]) if env_name in env else _default(f)
        options: dict[str, Any] = (
            {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": convert})
        if f.metadata.get("repeat"):  # None when no flag is given: see _repeated
            options, default = {"action": "append"}, _repeated(None, env, f)
        parser.add_argument(
            _flag(f.name),
            dest=f.name,
            default=None if f.metadata.get("repeat") else default,
            help=f"{f.metadata['help']} [env {env_name}, default {default}]",
            **options,
        )
    return parser


def _repeated(given: list[str] | None, env: Mapping[str, str],
              f: dataclasses.Field[Any]) -> tuple[str, ...]:
    """A repeated flag's values: those given, else the CHAT_* variable's (separated by
    white space), else the default. Given flags replace the rest rather than add to it."""
    if given is not None:
        return tuple(given)
    env_name = _env_name(f.name)
    return tuple(env[env_name].split()) if env_name in env else _default(f)


def _add_secret_file(parser: argparse.ArgumentParser, f: dataclasses.Field[Any],
                     env: Mapping[str, str]) -> None:
    """`--<name>-file PATH` for a secret field (and `--<name>` where it keeps one)."""
    env_name = _env_name(f.name)
    if f.metadata["flag"]:
        parser.add_argument(_flag(f.name), dest=f.name + "_flag", default=None,
                            help=f"the {f.metadata['help']} [env {env_name}]")
    parser.add_argument(
        _flag(f.name) + "-file",
        dest=f.name + "_file",
        default=env.get(env_name + "_FILE"),
        help=f"file holding the {f.metadata['help']} [or its value in env {env_name}, "
        f"or the file in env {env_name}_FILE]",
    )


def _read_secrets(values: dict[str, Any], env: Mapping[str, str],
                  parser: argparse.ArgumentParser) -> None:
    """Replace each secret's `_file` entry by the secret: from its file, else from env."""
    for f in dataclasses.fields(Settings):
        if not f.metadata.get("secret"):
            continue
        path = values.pop(f.name + "_file")
        values[f.name] = values.pop(f.name + "_flag", None) or env.get(_env_name(f.name)) or None
        if path is not None:
            try:
                with open(path, encoding="utf-8") as file:
                    values[f.name] = file.read().strip() or None
            except OSError as error:
                parser.error(f"{_flag(f.name)}-file: {error}")
            if values[f.name] is None:
                parser.error(f"{_flag(f.name)}-file: {path} is empty")


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from command-line flags over CHAT_* variables over defaults."""
    env = os.environ if env is None else env
    parser = build_parser(env)
    values = vars(parser.parse_args(argv))
    _read_secrets(values, env, parser)
    for f in dataclasses.fields(Settings):
        if f.metadata.get("repeat"):
            values[f.name] = _repeated(values[f.name], env, f)
    settings = Settings(**values)
    _validate(settings, parser)
    return settings


def jwt_verifier(settings: Settings) -> JwtVerifier | None:
    """The verifier of the configured identity provider's tokens; None in anonymous mode."""
    if settings.jwt_secret is not None:
        return JwtVerifier.with_secret(settings.jwt_secret, settings.jwt_audience,
                                       settings.jwt_issuer, settings.jwt_max_ttl)
    if settings.jwt_public_key is not None:
        return JwtVerifier.with_public_key(settings.jwt_public_key, settings.jwt_audience,
                                           settings.jwt_issuer, settings.jwt_max_ttl)
    return None


def _validate(settings: Settings, parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(Settings):
        if f.metadata.get("positive") and getattr(settings, f.name) <= 0:
            parser.error(f"{_flag(f.name)} must be positive")
    if not 0 <= settings.write_delay <= MAX_WRITE_DELAY:
        parser.error(f"--write-delay must be 0 to {MAX_WRITE_DELAY:g} seconds")
    if not settings.fixed_rooms or not all(map(ROOM_PATTERN.fullmatch, settings.fixed_rooms)):
        parser.error("--rooms must name at least one room of 1-64 characters of A-Za-z0-9._-")
    if not settings.redis_prefix or any(char in settings.redis_prefix for char in "{}"):
        parser.error("--redis-prefix must be non-empty, without { or } (they shape keys "
                     "and their hash slots)")
    if settings.redis_cluster and settings.redis_url is None:
        parser.error("--redis-cluster needs --redis-url (a seed node of the cluster)")
    try:
        trusted_networks(settings.trusted_proxies)
    except ValueError as error:
        parser.error(f"--trusted-proxies: {error}")
    if settings.jwt_secret is not None and settings.jwt_public_key is not None:
        parser.error("give the JWT secret or --jwt-public-key, not both")
    if settings.jwt_secret is not None and len(settings.jwt_secret.encode()) < MIN_JWT_SECRET:
        parser.error(f"the JWT secret must be at least {MIN_JWT_SECRET} bytes (RFC 7518 3.2)")
    try:
        jwt_verifier(settings)
    except (OSError, ValueError) as error:
        parser.error(f"--jwt-public-key: {error}")
    _validate_api(settings, parser)
    _validate_hooks(settings, parser)
    if logging.getLevelName(settings.log_level.upper()) not in range(0, 60):
        parser.error(f"unknown --log-level {settings.log_level}")


def api_address(listen: str) -> tuple[str, int]:
    """HOST and PORT of `--api-listen` (an IPv6 host in brackets); ValueError otherwise."""
    host, _, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{listen!r} is not HOST:PORT")
    return host, int(port)


def _validate_api(settings: Settings, parser: argparse.ArgumentParser) -> None:
    """An API listener needs keys; keys must parse. An empty value is no listener (as
    compose passes an unset variable)."""
    if settings.api_listen:
        try:
            api_address(settings.api_listen)
        except ValueError as error:
            parser.error(f"--api-listen: {error}")
    if (settings.api_listen or settings.api_socket) and settings.api_keys is None:
        parser.error("the server API needs keys: CHAT_API_KEYS or --api-keys-file")
    if settings.api_keys is not None:
        try:
            parse_api_keys(settings.api_keys)
        except ValueError as error:
            parser.error(f"the server API's keys: {error}")


def _validate_hooks(settings: Settings, parser: argparse.ArgumentParser) -> None:
    """Hooks and webhooks are signed, so they need the secret; the webhooks' queue is in
    Redis; every URL and event name must parse."""
    if settings.publish_hook_failure not in ("reject", "accept"):
        parser.error("--publish-hook-failure must be reject or accept")
    wanted = [settings.publish_hook, settings.connect_hook, *settings.webhook_url]
    for url in filter(None, wanted):
        try:
            parse_endpoint(url)
        except ValueError as error:
            parser.error(str(error))
    if any(wanted) and settings.hook_secret is None:
        parser.error("hooks and webhooks are signed: give CHAT_HOOK_SECRET or --hook-secret-file")
    if settings.hook_secret is not None:
        try:
            Signer(settings.hook_secret)
        except ValueError as error:
            parser.error(f"the hook secret: {error}")
    if settings.webhook_url and settings.redis_url is None:
        parser.error("--webhook-url needs --redis-url: the webhooks' queue is kept in Redis")
    if len({parse_endpoint(url).key for url in settings.webhook_url}) < len(settings.webhook_url):
        parser.error("--webhook-url names one URL twice")
