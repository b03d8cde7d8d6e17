"""The one exception tree of nubes, with stable machine codes.

Every error a user can see is a :class:`NubesError`. Each class carries a default
code; a raise site may pick a more precise code, but only one registered in
:data:`CODES` (a test keeps docs/errors.md equal to that registry). Codes are
never reused or renamed once published.

    NubesError                      500 nubes.internal.error
    ├── InvalidInput                400 nubes.request.invalid
    ├── NotAuthenticated            401 nubes.auth.unauthenticated
    ├── Forbidden                   403 nubes.policy.forbidden
    │   └── QuotaExceeded           403 nubes.quota.exceeded
    ├── NotFound                    404 nubes.<area>.not_found, nubes.request.not_found
    ├── Conflict                    409 nubes.<area>.in_use
    │   ├── AlreadyExists           409 nubes.<area>.exists
    │   ├── GenerationConflict      409 nubes.store.generation_conflict
    │   └── InvalidTransition       409 nubes.state.invalid_transition
    ├── PayloadTooLarge             413 nubes.request.too_large
    └── Unavailable                 503 nubes.service.unavailable

This module knows nothing of HTTP: the status column above is applied in exactly
one place, ``nubes.api.errors``.
"""

from __future__ import annotations

from typing import ClassVar

#: Every code nubes may return, with what it means. Append only.
CODES: dict[str, str] = {
    "nubes.internal.error": "An unexpected server error; the request id finds it in the log.",
    "nubes.request.invalid": "The request is malformed: a field is missing, of the wrong type "
    "or out of range. The message names the field.",
    "nubes.request.too_large": "The request body is larger than the configured maximum.",
    "nubes.request.not_found": "No such path or method on this API.",
    "nubes.auth.unauthenticated": "No token, or the token is malformed, expired or revoked.",
    "nubes.auth.invalid_credentials": "Wrong user name, password, project or secret.",
    "nubes.auth.disabled": "The user or project is disabled.",
    "nubes.auth.no_role": "The user has no role on the requested project.",
    "nubes.policy.forbidden": "The caller's role does not allow this action.",
    "nubes.quota.exceeded": "Granting the request would exceed the project's or user's quota.",
    "nubes.quota.invalid_resource": "No such quota resource.",
    "nubes.store.generation_conflict": "The resource changed since it was read; read it again "
    "and retry.",
    "nubes.user.not_found": "No such user (or not visible to the caller).",
    "nubes.user.exists": "A user with this name already exists.",
    "nubes.user.in_use": "The user cannot be deleted or changed this way (for example: the "
    "last cloud admin).",
    "nubes.project.not_found": "No such project (or not visible to the caller).",
    "nubes.project.exists": "A project with this name already exists.",
    "nubes.project.in_use": "The project still owns resources, or is the admin project.",
    "nubes.role.not_found": "No such role, or the user does not hold it on that project.",
    "nubes.flavor.not_found": "No such flavor (or not visible to the caller).",
    "nubes.flavor.exists": "A flavor with this name or id already exists.",
    "nubes.flavor.access_public": "Project access applies only to private flavors.",
    "nubes.keypair.not_found": "No such keypair for this user.",
    "nubes.keypair.exists": "The user already has a keypair with this name.",
    "nubes.keypair.invalid_key": "The public key is not a valid ssh-rsa, ssh-ed25519 or ecdsa key.",
    "nubes.credential.not_found": "No such EC2 or application credential.",
    "nubes.credential.exists": "The user already has an application credential with this name.",
    "nubes.credential.expired": "The application credential has expired.",
    "nubes.host.not_found": "No such compute host.",
    "nubes.host.exists": "A host with this name already exists.",
    "nubes.host.in_use": "The host still has instances; move or delete them first.",
    "nubes.host.join_refused": "The join token is wrong, used up or expired.",
    "nubes.host.unauthenticated": "The agent's host credential is wrong or the host was deleted.",
    "nubes.image.not_found": "No such image (or not visible to the caller).",
    "nubes.image.invalid": "The image or its file is unusable (format, size, checksum).",
    "nubes.image.in_use": "Instances still use this image.",
    "nubes.instance.not_found": "No such instance (or not visible to the caller).",
    "nubes.instance.busy": "Another action is in flight on this instance; wait for it.",
    "nubes.instance.invalid_state": "The instance is not in a state that allows this action.",
    "nubes.instance.no_host": "No compute host can take the instance; the message says why.",
    "nubes.state.invalid_transition": "The resource is not in a state that allows this action.",
    "nubes.service.unavailable": "A dependency (usually the database) is not reachable.",
}


class NubesError(Exception):
    """Root of every error nubes raises on purpose."""

    code: ClassVar[str] = "nubes.internal.error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        chosen = code or type(self).code
        if chosen not in CODES:
            raise ValueError(f"unregistered error code {chosen!r}; add it to nubes.domain.errors")
        self.error_code = chosen

    def __str__(self) -> str:
        return self.message


class InvalidInput(NubesError):
    code = "nubes.request.invalid"


class NotAuthenticated(NubesError):
    code = "nubes.auth.unauthenticated"


class Forbidden(NubesError):
    code = "nubes.policy.forbidden"


class QuotaExceeded(Forbidden):
    code = "nubes.quota.exceeded"


class NotFound(NubesError):
    code = "nubes.request.not_found"


class Conflict(NubesError):
    code = "nubes.store.generation_conflict"


class AlreadyExists(Conflict):
    pass


class GenerationConflict(Conflict):
    code = "nubes.store.generation_conflict"


class InvalidTransition(Conflict):
    code = "nubes.state.invalid_transition"


class PayloadTooLarge(NubesError):
    code = "nubes.request.too_large"


class Unavailable(NubesError):
    code = "nubes.service.unavailable"


def render_docs() -> str:
    """docs/errors.md, from :data:`CODES` and the tree above."""
    lines = [
        "# Error codes",
        "",
        "Every error response has the body",
        '`{"error": {"code": "nubes.<area>.<reason>", "message": "…", '
        '"request_id": "req-…"}}` (field errors add `details`). Codes are stable: never '
        "renamed or reused. This file is generated by `python -m nubes.domain.errors`; a test "
        "keeps it equal to the registry.",
        "",
        "## The exception tree and its HTTP status",
        "",
        "```",
        *(line[4:] for line in (__doc__ or "").splitlines() if line.startswith("    ")),
        "```",
        "",
        "## Codes",
        "",
        "| code | meaning |",
        "|---|---|",
        *(f"| `{code}` | {meaning} |" for code, meaning in sorted(CODES.items())),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_docs(), end="")
