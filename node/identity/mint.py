"""`python -m node token`: mint a JWT the way the identity provider would, for operators and
tests. The key comes from the environment or a file, never from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from node.identity.jwt_tokens import mint


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m node token",
        description="Print a JWT for one user. HS256 with the secret in CHAT_JWT_SECRET or "
        "--jwt-secret-file, or RS256/ES256 with --jwt-private-key; aud and iss from "
        "CHAT_JWT_AUDIENCE and CHAT_JWT_ISSUER unless given.")
    parser.add_argument("--sub", required=True, help="the user id")
    parser.add_argument("--name", help="the display name (default: the user id)")
    parser.add_argument("--rooms", help="comma list of the only rooms the user may join")
    parser.add_argument("--ttl", type=float, default=3600.0,
                        help="seconds until the token expires (default 3600)")
    parser.add_argument("--jwt-secret-file", type=Path, help="file holding the HS256 secret")
    parser.add_argument("--jwt-private-key", type=Path,
                        help="PEM private key (RSA: RS256, EC: ES256) instead of a secret")
    parser.add_argument("--audience", help="the `aud` claim")
    parser.add_argument("--issuer", help="the `iss` claim")
    return parser


def _signing_key(args: argparse.Namespace, env: Mapping[str, str],
                 parser: argparse.ArgumentParser) -> tuple[object, str]:
    if args.jwt_private_key is not None:
        key = serialization.load_pem_private_key(args.jwt_private_key.read_bytes(), None)
        if isinstance(key, rsa.RSAPrivateKey):
            return key, "RS256"
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key, "ES256"
        parser.error("--jwt-private-key: an RSA or EC private key is needed")
    if args.jwt_secret_file is not None:
        secret = args.jwt_secret_file.read_text().strip()
    else:
        secret = env.get("CHAT_JWT_SECRET", "")
    if not secret:
        parser.error("no key: set CHAT_JWT_SECRET, or give --jwt-secret-file or "
                     "--jwt-private-key")
    return secret, "HS256"


def main(argv: Sequence[str], env: Mapping[str, str] = os.environ) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    key, algorithm = _signing_key(args, env, parser)
    rooms = [room.strip() for room in args.rooms.split(",")] if args.rooms else None
    token = mint(key, algorithm, args.sub, args.name, rooms, args.ttl,
                 args.audience or env.get("CHAT_JWT_AUDIENCE"),
                 args.issuer or env.get("CHAT_JWT_ISSUER"))
    sys.stdout.write(token + "\n")
