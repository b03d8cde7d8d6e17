"""What every identity service shares: the database, settings, the hasher and the codec."""

from __future__ import annotations

from dataclasses import dataclass

from nubes.config import Settings
from nubes.identity.passwords import Hasher
from nubes.identity.tokens import TokenCodec
from nubes.store.db import Database


@dataclass
class IdentityCore:
    db: Database
    settings: Settings
    hasher: Hasher
    codec: TokenCodec

    @classmethod
    def build(cls, db: Database, settings: Settings) -> IdentityCore:
        return cls(
            db=db,
            settings=settings,
            hasher=Hasher(settings.password_hashing),
            codec=TokenCodec(db, settings.token_key_refresh_seconds),
        )
