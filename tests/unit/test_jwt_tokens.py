"""Minting and verifying tokens, without a server."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from node.config import jwt_verifier, load_settings
from node.identity import mint
from node.identity.jwt_tokens import JwtVerifier, TokenRefused

SECRET = "a-test-secret-of-at-least-32-bytes!!"


def test_the_minting_command_makes_a_token_the_node_accepts(capsys) -> None:
    mint.main(["--sub", "alice", "--name", "Alice", "--rooms", "general, random",
               "--ttl", "120"], {"CHAT_JWT_SECRET": SECRET})
    claims = JwtVerifier.with_secret(SECRET).verify(capsys.readouterr().out.strip())
    assert (claims.user_id, claims.name, claims.rooms) == (
        "alice", "Alice", frozenset({"general", "random"}))
    assert 115 < claims.expires - time.time() <= 120


def test_the_minting_command_reads_its_secret_from_a_file(tmp_path, capsys) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    mint.main(["--sub", "bob", f"--jwt-secret-file={path}"], {})
    assert JwtVerifier.with_secret(SECRET).verify(capsys.readouterr().out.strip()).name == "bob"


def test_the_minting_command_refuses_to_run_without_a_key() -> None:
    with pytest.raises(SystemExit):
        mint.main(["--sub", "carol"], {})


def test_python_m_node_token_prints_a_token() -> None:
    done = subprocess.run([sys.executable, "-m", "node", "token", "--sub", "dave"],
                          env={"CHAT_JWT_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30, check=True)
    assert JwtVerifier.with_secret(SECRET).verify(done.stdout.strip()).user_id == "dave"


def test_a_token_names_only_valid_rooms_and_names(capsys) -> None:
    mint.main(["--sub", "erin", "--rooms", "no spaces"], {"CHAT_JWT_SECRET": SECRET})
    with pytest.raises(TokenRefused):
        JwtVerifier.with_secret(SECRET).verify(capsys.readouterr().out.strip())


@pytest.mark.parametrize("env", [{"CHAT_JWT_SECRET": "short"}])
def test_a_short_jwt_secret_is_refused_at_start(env: dict[str, str]) -> None:
    with pytest.raises(SystemExit):
        load_settings([], env)


def test_the_jwt_secret_comes_from_the_environment_or_its_flag() -> None:
    assert load_settings([], {"CHAT_JWT_SECRET": SECRET}).jwt_secret == SECRET
    assert load_settings(["--jwt-secret", SECRET], {}).jwt_secret == SECRET
    assert jwt_verifier(load_settings([], {})) is None


def test_a_token_living_longer_than_jwt_max_ttl_is_refused_at_its_edge(capsys) -> None:
    verifier = jwt_verifier(load_settings(["--jwt-max-ttl", "600"],
                                          env={"CHAT_JWT_SECRET": SECRET}))
    assert verifier is not None and verifier.max_ttl == 600
    mint.main(["--sub", "short", "--ttl", "595"], {"CHAT_JWT_SECRET": SECRET})
    assert verifier.verify(capsys.readouterr().out.strip()).user_id == "short"
    for ttl in ("605", str(10**12)):  # just past the edge, and a token for ever
        mint.main(["--sub", "long", "--ttl", ttl], {"CHAT_JWT_SECRET": SECRET})
        with pytest.raises(TokenRefused, match="--jwt-max-ttl"):
            verifier.verify(capsys.readouterr().out.strip())
    assert JwtVerifier.with_secret(SECRET).max_ttl == 86400  # the default: a day
