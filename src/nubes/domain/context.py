"""Who is asking: the identity a request (or a system task) acts as. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field

from nubes.domain.roles import Role


@dataclass(frozen=True)
class RequestContext:
    """Made by the API from a validated token; services authorise against it."""

    user_id: str | None
    project_id: str | None
    roles: frozenset[Role] = frozenset()
    is_cloud_admin: bool = False
    request_id: str | None = None
    audit_id: str | None = None
    user_name: str = ""
    project_name: str = ""
    expires_at: float = 0.0
    methods: tuple[str, ...] = field(default_factory=tuple)

    @property
    def highest_role(self) -> Role | None:
        return max(self.roles) if self.roles else None

    def has_role(self, at_least: Role) -> bool:
        return any(r >= at_least for r in self.roles)

    @classmethod
    def system(cls, request_id: str | None = None) -> RequestContext:
        """The controller acting on its own (initialisation, background loops)."""
        return cls(
            user_id=None,
            project_id=None,
            roles=frozenset({Role.admin}),
            is_cloud_admin=True,
            request_id=request_id,
            user_name="system",
        )
