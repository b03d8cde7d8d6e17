"""Fernet tokens: encrypted, authenticated, carrying who, which project, when, and an audit id.

Keys live in the ``token_keys`` table so every controller over the same database shares them
(Keystone keeps them in files that operators must sync). The layout follows Keystone's key
repository: one *staged* key (next primary), one *primary* (signs new tokens) and older
*secondaries* (still decrypt). ``rotate`` promotes the staged key and prunes the oldest.

A token is only the proof of an authentication; whether it is still good (revoked, user or
project disabled, roles) is decided by :mod:`nubes.identity.auth` on every request.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from nubes.domain.errors import NotAuthenticated
from nubes.store.db import Database
from nubes.store.models import TokenKey

TOKEN_VERSION = 1


@dataclass(frozen=True)
class TokenPayload:
    user_id: str
    project_id: str
    audit_id: str
    issued_at: float
    expires_at: float
    methods: tuple[str, ...]
    app_cred_id: str | None = None

    def encode(self) -> bytes:
        body: dict[str, object] = {
            "v": TOKEN_VERSION,
            "u": self.user_id,
            "p": self.project_id,
            "a": self.audit_id,
            "i": self.issued_at,
            "e": self.expires_at,
            "m": list(self.methods),
        }
        if self.app_cred_id:
            body["c"] = self.app_cred_id
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> TokenPayload:
        try:
            body = json.loads(raw)
            if body.get("v") != TOKEN_VERSION:
                raise ValueError("version")
            return cls(
                user_id=str(body["u"]),
                project_id=str(body["p"]),
                audit_id=str(body["a"]),
                issued_at=float(body["i"]),
                expires_at=float(body["e"]),
                methods=tuple(body["m"]),
                app_cred_id=body.get("c"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise NotAuthenticated("malformed token") from exc


def new_key() -> str:
    return Fernet.generate_key().decode()


def ensure_keys(session: Session) -> None:
    """Create the first staged and primary keys if there are none."""
    if session.scalar(select(TokenKey.serial).limit(1)) is None:
        session.add_all(
            [TokenKey(serial=0, key=new_key(), staged=True), TokenKey(serial=1, key=new_key())]
        )


def rotate(session: Session, max_active_keys: int) -> int:
    """Promote the staged key to primary, stage a new one, prune the oldest secondaries.

    Returns the new primary's serial. Tokens signed by a pruned key stop working, so
    ``max_active_keys`` rotations must take longer than the token lifetime.
    """
    ensure_keys(session)
    session.flush()
    keys = list(session.scalars(select(TokenKey).with_for_update().order_by(TokenKey.serial)))
    staged = next(k for k in keys if k.staged)
    serial = max(k.serial for k in keys) + 1
    session.add(TokenKey(serial=serial, key=staged.key))
    staged.key = new_key()
    keep = max_active_keys - 1  # the staged key counts as one active key
    active = sorted((k.serial for k in keys if not k.staged), reverse=True)
    stale = active[keep - 1 :]  # the new primary takes one of the kept places
    if stale:
        session.execute(delete(TokenKey).where(TokenKey.serial.in_(stale)))
    return serial


#: tokens a controller process keeps opened (:class:`TokenCodec`)
OPENED_TOKENS = 4096


class TokenCodec:
    """Encrypts and decrypts tokens with the shared keys, re-reading them when they change."""

    def __init__(self, db: Database, refresh_seconds: float = 30.0) -> None:
        self._db = db
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        self._fernet: MultiFernet | None = None
        self._loaded_at = 0.0
        #: tokens opened with the keys as loaded: a client sends the same token with every
        #: request, and opening one (HMAC, AES, decoding) costs more than the rest of its
        #: check. Emptied with every load of the keys, so a retired key's tokens fail as
        #: soon as without it; expiry and revocation are checked on every request anyway.
        self._opened: dict[str, TokenPayload] = {}

    def reload(self) -> None:
        with self._db.transaction(write=False) as session:
            keys = list(session.scalars(select(TokenKey)))
        if not keys:
            raise NotAuthenticated("no token keys: the cloud is not initialised")
        ordered = sorted((k for k in keys if not k.staged), key=lambda k: -k.serial)
        ordered += [k for k in keys if k.staged]
        with self._lock:
            self._fernet = MultiFernet([Fernet(k.key.encode()) for k in ordered])
            self._loaded_at = time.monotonic()
            self._opened = {}

    def _current(self) -> MultiFernet:
        if self._fernet is None or time.monotonic() - self._loaded_at > self._refresh:
            self.reload()
        assert self._fernet is not None
        return self._fernet

    def encrypt(self, payload: TokenPayload) -> str:
        return self._current().encrypt(payload.encode()).decode()

    def decrypt(self, token: str) -> TokenPayload:
        fernet = self._current()
        opened = self._opened
        found = opened.get(token)
        if found is not None:
            return found
        raw = token.encode()
        try:
            payload = TokenPayload.decode(fernet.decrypt(raw))
        except InvalidToken:
            # Perhaps another controller rotated the keys: re-read them once, at most once a s.
            if time.monotonic() - self._loaded_at > 1.0:
                self.reload()
                try:
                    return TokenPayload.decode(self._current().decrypt(raw))
                except InvalidToken:
                    pass
            raise NotAuthenticated(
                "the token is invalid (malformed, or signed by a retired key)"
            ) from None
        with self._lock:
            if opened is self._opened and fernet is self._fernet:  # no load of keys meanwhile
                if len(opened) >= OPENED_TOKENS:
                    del opened[next(iter(opened))]  # the oldest
                opened[token] = payload
        return payload


def new_audit_id() -> str:
    return secrets.token_hex(16)
