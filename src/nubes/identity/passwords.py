"""Password and secret hashing (argon2id). Plain secrets never reach the store."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from nubes.config import PasswordHashing


class Hasher:
    def __init__(self, params: PasswordHashing | None = None) -> None:
        p = params or PasswordHashing()
        self._hasher = PasswordHasher(
            time_cost=p.time_cost, memory_cost=p.memory_kib, parallelism=p.parallelism
        )
        # Verifying against this costs what a real verification costs, so an unknown user
        # name takes as long as a wrong password (no user enumeration by timing).
        self._decoy = self._hasher.hash("decoy-password-never-matches")

    def hash(self, secret: str) -> str:
        return self._hasher.hash(secret)

    def verify(self, stored_hash: str | None, secret: str) -> bool:
        try:
            return self._hasher.verify(stored_hash or self._decoy, secret) and bool(stored_hash)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
