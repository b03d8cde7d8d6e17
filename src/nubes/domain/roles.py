"""Roles and their order. A higher role implies every lower one (admin ⊃ member ⊃ reader)."""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    reader = 1
    member = 2
    admin = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        from nubes.domain.errors import NotFound

        try:
            return cls[name]
        except KeyError:
            raise NotFound(
                f"no role {name!r}; roles are: {', '.join(r.name for r in cls)}",
                code="nubes.role.not_found",
            ) from None
