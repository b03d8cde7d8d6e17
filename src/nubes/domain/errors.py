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
    "nubes.aggregate.not_found": "No such host aggregate.",
    "nubes.zone.not_found": "No such availability zone; the message lists the zones.",
    "nubes.aggregate.exists": "A host aggregate with this name already exists.",
    "nubes.aggregate.in_use": "The aggregate still has hosts; remove them first.",
    "nubes.aggregate.host_exists": "The host is already in this aggregate.",
    "nubes.aggregate.zone_conflict": "A host would be in two availability zones; the message "
    "names both.",
    "nubes.aggregate.zone_in_use": "Instances on the host asked for its availability zone, so "
    "the host may not leave that zone.",
    "nubes.server_group.not_found": "No such server group (or not visible to the caller).",
    "nubes.server_group.exists": "The project already has a server group with this name.",
    "nubes.network.not_found": "No such network (or not visible to the caller).",
    "nubes.network.in_use": "The network still has ports, a router gateway or floating IPs; the "
    "message says which.",
    "nubes.network.segment_in_use": "Another network of this type already uses the "
    "segmentation id (VNI or VLAN id).",
    "nubes.network.segments_exhausted": "Every VNI of the configured range is in use.",
    "nubes.network.ambiguous_name": "Several networking resources visible to the caller have "
    "this name; use the id.",
    "nubes.subnet.not_found": "No such subnet (or not visible to the caller).",
    "nubes.subnet.invalid": "The subnet's CIDR, gateway, allocation pools, DNS servers or routes "
    "are wrong; the message says which and why.",
    "nubes.subnet.overlap": "The CIDR overlaps another subnet on the same network (or on the "
    "same router); the message names it.",
    "nubes.subnet.in_use": "Ports or a router interface still use addresses of the subnet.",
    "nubes.subnet.exhausted": "The subnet has no free address left in its allocation pools.",
    "nubes.subnet.address_invalid": "The requested address is not in the subnet (or is its "
    "network, broadcast or gateway address).",
    "nubes.subnet.address_in_use": "The requested address is held by another port (named in the "
    "message).",
    "nubes.port.not_found": "No such port (or not visible to the caller).",
    "nubes.port.in_use": "The port is bound to an instance, owned by a router, DHCP or a floating "
    "IP, or otherwise taken.",
    "nubes.port.mac_in_use": "Another port on the network has this MAC address.",
    "nubes.security_group.not_found": "No such security group (or not visible to the caller).",
    "nubes.security_group.exists": "The project already has a security group with this name.",
    "nubes.security_group.in_use": "Ports still use the security group.",
    "nubes.security_group.protected": "The project's default security group cannot be deleted "
    "or renamed.",
    "nubes.security_group_rule.not_found": "No such security group rule.",
    "nubes.security_group_rule.invalid": "The rule's protocol, ports or remote are inconsistent; "
    "the message says how.",
    "nubes.security_group_rule.exists": "The group already has an identical rule.",
    "nubes.router.not_found": "No such router (or not visible to the caller).",
    "nubes.router.in_use": "The router still has interfaces, or floating IPs need its gateway or "
    "interface.",
    "nubes.router.interface_invalid": "The subnet cannot be attached to (or detached from) the "
    "router; the message says why.",
    "nubes.router.interface_not_found": "The router has no interface on that subnet.",
    "nubes.router.gateway_invalid": "The network is not external, or has no subnet to take the "
    "gateway address from.",
    "nubes.floating_ip.not_found": "No such floating IP (or not visible to the caller).",
    "nubes.floating_ip.unreachable": "No router joins the port's subnet to the floating IP's "
    "external network.",
    "nubes.floating_ip.in_use": "The fixed address already has a floating IP.",
    "nubes.probe.invalid": "A file in the controller's probes directory is not a safe, "
    "executable probe; the message names it.",
    "nubes.metadata.not_found": "No metadata at that path for that port: the port is not bound "
    "to the asking host, its instance is gone, or the path is unknown.",
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
