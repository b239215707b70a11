"""Redis as a trust boundary: the node works with an ACL user confined to its prefix, with TLS,
and is not ready when its credentials are wrong."""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.processes import LOOPBACK, Children, Service, find_binary, free_port
from tests.conftest import REDIS_PASSWORD


@pytest.fixture
def backend() -> str:
    return "redis"




async def _round_trip(connect, node) -> None:  # type: ignore[no-untyped-def]
    """A member joins, speaks and hears itself: every Redis path of a chat was used."""
    client = await connect(node)
    await client.auth("alice")
    await client.join("general")
    await client.say("over redis")
    assert (await client.expect("message"))["text"] == "over redis"


@pytest.fixture
def acl_user(redis_server, redis_prefix: str) -> Iterator[str]:
    """A Redis URL of an ACL user that may touch only the test's prefix. Requested before
    the node, it outlives it: deleting the user drops the connections of a node still up."""
    admin = redis_sync.Redis(host=LOOPBACK, port=redis_server.port, password=REDIS_PASSWORD)
    user, password = f"chat-{redis_prefix}", "user-password-1"
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"],
                      keys=[f"{redis_prefix}:*"], channels=[f"{redis_prefix}:*"],
                      commands=["+@all"])
    try:
        yield f"redis://{user}:{password}@{LOOPBACK}:{redis_server.port}/0"
    finally:
        admin.acl_deluser(user)
        admin.close()


async def test_an_acl_user_confined_to_the_prefix_is_enough(acl_user: str, make_node,
                                                            connect) -> None:
    node = await make_node(redis_url=acl_user)
    await _round_trip(connect, node)
    assert (await node.get("/readyz")).status == 200


async def test_wrong_credentials_leave_the_node_not_ready(make_node, redis_server) -> None:
    url = f"redis://default:wrong@{LOOPBACK}:{redis_server.port}/0"
    node = await make_node(redis_url=url)
    response = await node.get("/readyz")
    assert response.status == 503 and (await response.json())["reason"] == "broker unavailable"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[Service, Path]]:
    """A redis-server that speaks only TLS, with a password; its CA file."""
    cert, key = _self_signed(tmp_path)
    port = free_port()
    config = tmp_path / "redis.conf"
    config.write_text(f"requirepass {REDIS_PASSWORD}\n")
    children = Children()
    service = children.spawn("redis", [
        find_binary("redis-server", "redis-server"), str(config), "--port", "0",
        "--tls-port", str(port), "--bind", LOOPBACK, "--tls-cert-file", str(cert),
        "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
        "--save", "", "--appendonly", "no", "--dir", str(tmp_path)], port, tmp_path / "redis.log")
    try:
        probe = redis_sync.Redis(host=LOOPBACK, port=port, password=REDIS_PASSWORD, ssl=True,
                                 ssl_ca_certs=str(cert))
        deadline = time.monotonic() + 10
        while True:
            try:
                probe.ping()
                break
            except redis_sync.ConnectionError:
                assert time.monotonic() < deadline and service.running, service.log_tail()
                time.sleep(0.05)
        probe.close()
        yield service, cert
    finally:
        service.stop()


async def test_tls_with_a_password_works_everywhere_the_node_uses_redis(
        make_node, connect, tls_redis: tuple[Service, Path]) -> None:
    service, ca = tls_redis
    url = f"rediss://:{REDIS_PASSWORD}@{LOOPBACK}:{service.port}/0?ssl_ca_certs={ca}"
    node = await make_node(redis_url=url)
    await _round_trip(connect, node)
    assert (await node.get("/readyz")).status == 200
    listing = await (await node.get("/api/rooms")).json()
    assert {"name": "general", "userCount": 1} in listing["details"]
