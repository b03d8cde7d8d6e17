"""Join tokens and host credentials: ``<kind>.<id>.<secret>``; only a SHA-256 of the secret is
stored (the secrets are 256-bit random, so a slow hash adds nothing)."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def make(kind: str, ident: str) -> tuple[str, str]:
    """A new ``(token, secret_hash)`` for ``ident``."""
    secret = secrets.token_urlsafe(32)
    return f"{kind}.{ident}.{secret}", digest(secret)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split(kind: str, token: str) -> tuple[str, str] | None:
    """``(id, secret)`` from a token of this kind, or None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != kind or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_hash)
