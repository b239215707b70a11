"""What leaves the Redis layer when Redis, or redis-py itself, fails: `Unavailable`, which a
client hears as the `unavailable` error code, never an internal error."""

from __future__ import annotations

import pytest
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from node.backends.errors import Unavailable
from node.backends.redis.support import translate_errors


@translate_errors
async def _redis_refuses() -> None:
    raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")


@translate_errors
async def _redis_py_breaks() -> None:
    key_slot(None)  # type: ignore[arg-type]  # fails inside redis-py, as its torn connections do


@translate_errors
async def _our_bug() -> None:
    raise AttributeError("a bug of ours")


async def test_a_redis_failure_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="Connection refused"):
        await _redis_refuses()


async def test_an_error_raised_inside_redis_py_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="redis client failed"):
        await _redis_py_breaks()


async def test_our_own_errors_are_not_hidden_as_an_outage() -> None:
    with pytest.raises(AttributeError, match="a bug of ours"):
        await _our_bug()
