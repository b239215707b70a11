"""The Redis scripts build envelopes and close templates in Lua: the same as
node.backends.envelope."""

from __future__ import annotations

import redis.asyncio as aioredis

from node.backends import envelope
from node.backends.envelope import Publication
from node.backends.redis.lua import library


async def _lua(redis_url: str, body: str, *args: object) -> bytes:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return bytes(await client.eval(library("envelope") + body, 0, *args))
    finally:
        await client.aclose()


async def test_the_lua_envelope_is_the_python_envelope(redis_url) -> None:
    for publication in (Publication("général", 7, b'{"seq":7}', epoch="9f3a.6"),
                        Publication("r", 0, b'{"presence":9}', "session-1", 1_800_000_000_009)):
        data = await _lua(redis_url, "return envelope(ARGV[1], tonumber(ARGV[2]), ARGV[3], "
                          "ARGV[4], tonumber(ARGV[5]), ARGV[6])", publication.room,
                          publication.seq, publication.exclude, publication.payload,
                          publication.presence, publication.epoch)
        assert envelope.unpack(data) == publication == envelope.unpack(envelope.pack(publication))


async def test_lua_closes_and_splits_templates_as_python_does(redis_url) -> None:
    template = (b'{"type":"user_left","user":"\\u0000a","userCount":', b',"presence":')
    closed = await _lua(redis_url, "return close(split(ARGV[1]), {tonumber(ARGV[2]), "
                        "tonumber(ARGV[3])})", envelope.joined(template), 12, 1_800_000_000_123)
    assert closed == envelope.close(template, 12, 1_800_000_000_123)
