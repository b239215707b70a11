"""What the node's logs say about clients: who connected from where, never what they wrote."""

from __future__ import annotations

import logging

import pytest


async def test_connection_logs_name_the_client_address_and_never_message_text(
        make_node, connect, caplog: pytest.LogCaptureFixture) -> None:
    node = await make_node(trusted_proxies="127.0.0.1")
    caplog.set_level(logging.DEBUG, logger="node")
    client = await connect(node, headers={"X-Real-IP": "203.0.113.9"})
    await client.auth("alice")
    await client.join("general")
    await client.say("a private 5ecret")
    await client.expect("message")
    await client.close()
    logged = "\n".join(record.getMessage() for record in caplog.records
                       if record.levelno >= logging.INFO)
    assert "client=203.0.113.9" in logged
    assert "5ecret" not in "\n".join(record.getMessage() for record in caplog.records)
