"""JWT mode: the identity provider's token is the only way in, and it is checked strictly."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from node.identity.jwt_tokens import mint
from tests.chat_client import ChatClient

SECRET = "a-test-secret-of-at-least-32-bytes!!"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand, as an attacker would: any header, any key, HMAC-SHA256."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(),
                                                   hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "u-alice", "name": "Alice", "exp": int(time.time()) + 600, **extra}


@pytest.fixture
def rsa_key(tmp_path: Path) -> tuple[Any, Path]:
    """An RSA key pair: the private key, and the public key's PEM file."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "public.pem"
    path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, path


async def _auth(connect, node, token: str | None) -> tuple[ChatClient, dict[str, Any]]:
    client = await connect(node)
    await client.send(type="auth", **({} if token is None else {"token": token}))
    return client, await client.recv()


async def _refused(client: ChatClient, event: dict[str, Any]) -> str:
    """The auth was refused with auth_failed, then the connection closed with 4001."""
    assert event["type"] == "error" and event["code"] == "auth_failed", event
    assert await client.expect_close() == (4001, "Authentication failed")
    return str(event["message"])


async def test_a_valid_token_is_the_identity(make_node, connect) -> None:
    node = await make_node(jwt_secret=SECRET)
    exp = int(time.time()) + 600
    client, event = await _auth(connect, node, pyjwt.encode(_claims(exp=exp), SECRET))
    assert event["type"] == "auth_success"
    assert (event["userId"], event["name"], event["exp"]) == ("u-alice", "Alice", exp)
    assert "token" not in event, "no resume token: the JWT itself identifies the user"
    joined = await client.join("general")
    assert joined["members"] == [{"userId": "u-alice", "name": "Alice"}]


@pytest.mark.parametrize("case", [
    "missing", "malformed", "expired", "bad signature", "alg none", "no exp", "no sub",
    "wrong audience", "wrong issuer",
])
async def test_tokens_that_prove_nothing_are_refused_and_closed_with_4001(
        make_node, connect, case: str) -> None:
    node = await make_node(jwt_secret=SECRET, jwt_audience="chat", jwt_issuer="idp")
    good = {"aud": "chat", "iss": "idp"}
    tokens: dict[str, str | None] = {
        "missing": None,
        "malformed": "not.a.jwt",
        "expired": pyjwt.encode(_claims(exp=int(time.time()) - 5, **good), SECRET),
        "bad signature": pyjwt.encode(_claims(**good), SECRET + "-other"),
        "alg none": _forged({"alg": "none", "typ": "JWT"}, _claims(**good), None),
        "no exp": pyjwt.encode({"sub": "u-alice", **good}, SECRET),
        "no sub": pyjwt.encode({"exp": int(time.time()) + 60, **good}, SECRET),
        "wrong audience": pyjwt.encode(_claims(aud="other", iss="idp"), SECRET),
        "wrong issuer": pyjwt.encode(_claims(aud="chat", iss="other"), SECRET),
    }
    client, event = await _auth(connect, node, tokens[case])
    await _refused(client, event)


async def test_hs256_signed_with_the_public_key_is_refused(make_node, connect, rsa_key) -> None:
    """The HS/RS confusion: a verifier that took `alg` from the token would check this HMAC
    with the (public) PEM as its secret, and accept it."""
    _, public_pem = rsa_key
    node = await make_node(jwt_public_key=str(public_pem))
    token = _forged({"alg": "HS256", "typ": "JWT"}, _claims(), public_pem.read_bytes())
    client, event = await _auth(connect, node, token)
    await _refused(client, event)


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
async def test_public_key_tokens_of_either_family_are_accepted(make_node, connect, tmp_path,
                                                               kind: str) -> None:
    private = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "RS256"
               else ec.generate_private_key(ec.SECP256R1()))
    path = tmp_path / "public.pem"
    path.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    node = await make_node(jwt_public_key=str(path))
    _, event = await _auth(connect, node, mint(private, kind, "u-bob", "Bob"))
    assert (event["type"], event["userId"], event["name"]) == ("auth_success", "u-bob", "Bob")


async def test_the_rooms_claim_limits_joins(make_node, connect) -> None:
    node = await make_node(jwt_secret=SECRET)
    client, _ = await _auth(connect, node, mint(SECRET, "HS256", "u-carol", rooms=["random"]))
    await client.send(type="join", room="general")
    await client.expect_error("forbidden")
    assert (await client.join("random"))["room"] == "random"


async def test_a_session_on_an_expired_token_is_closed_with_4001(make_node, connect) -> None:
    node = await make_node(jwt_secret=SECRET)
    client, event = await _auth(connect, node, mint(SECRET, "HS256", "u-dave", ttl=1))
    assert event["type"] == "auth_success"
    assert await client.expect_close(timeout=5) == (4001, "Token expired")


async def test_a_refresh_before_expiry_keeps_the_session(make_node, connect) -> None:
    node = await make_node(jwt_secret=SECRET, ping_interval=60)
    client, event = await _auth(connect, node, mint(SECRET, "HS256", "u-erin", ttl=2))
    await client.join("general")
    fresh = mint(SECRET, "HS256", "u-erin", ttl=600)
    await client.send(type="refresh", token=fresh)
    refreshed = await client.expect("refreshed")
    assert refreshed["exp"] > event["exp"]
    await asyncio.sleep(max(0.0, event["exp"] + 0.5 - time.time()))  # past the first exp
    await client.say("still here")
    assert (await client.expect("message"))["text"] == "still here"


async def test_a_refresh_for_another_user_is_refused(make_node, connect) -> None:
    node = await make_node(jwt_secret=SECRET)
    client, _ = await _auth(connect, node, mint(SECRET, "HS256", "u-frank"))
    await client.send(type="refresh", token=mint(SECRET, "HS256", "u-mallory"))
    assert "another user" in await _refused(client, await client.recv())


async def test_a_refresh_that_drops_the_current_room_leaves_it(make_node, connect) -> None:
    node = await make_node(jwt_secret=SECRET)
    client, _ = await _auth(connect, node, mint(SECRET, "HS256", "u-gina"))
    await client.join("general")
    await client.send(type="refresh", token=mint(SECRET, "HS256", "u-gina", rooms=["random"]))
    await client.expect("refreshed")
    assert await client.expect("room_left") == {"type": "room_left", "room": "general"}
    await client.expect_error("forbidden")
