"""Every Lua script the node runs is valid Lua that Redis accepts, and every .lua file is one
the node runs (the key-layout and envelope tests keep the Lua and Python halves in step)."""

from __future__ import annotations

from importlib import resources

import redis.asyncio as aioredis

import node.backends.redis.broker  # noqa: F401  (each module loads its scripts)
import node.backends.redis.coordination  # noqa: F401
import node.backends.redis.presence  # noqa: F401
from node.backends.redis.lua import SCRIPTS, lua_script


async def test_redis_loads_every_script(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        for name, text in sorted(SCRIPTS.items()):
            assert len(await client.script_load(text)) == 40, name  # a SHA1: compiled
    finally:
        await client.aclose()


def test_every_lua_file_is_a_script_the_node_runs() -> None:
    files = resources.files("node.backends.redis.lua")
    scripts = {item.name.removesuffix(".lua") for item in files.iterdir()
               if item.name.endswith(".lua")}
    libraries = {item.name.removesuffix(".lua") for item in (files / "lib").iterdir()}
    assert scripts == set(SCRIPTS), "a .lua file no module loads, or a script without a file"
    assert libraries == {"envelope", "budget", "room", "shared"}


async def test_a_script_with_a_syntax_error_is_refused(redis_url: str) -> None:
    """The load above can fail: Redis compiles what it loads."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        text = lua_script("heartbeat") + "\nlocal function ("
        try:
            await client.script_load(text)
        except aioredis.ResponseError as refused:
            assert "Error compiling script" in str(refused)
        else:
            raise AssertionError("Redis loaded a script with a syntax error")
    finally:
        await client.aclose()
