"""Controller configuration: one validated model, read from ``STATE_DIR/nubes.toml`` and the
environment.

Precedence, highest first: ``NUBES_*`` environment variables, the config file, the defaults
below. docs/configuration.md is rendered from this model (``python -m nubes.config``) and a
test keeps the two equal. This module reads files and the environment; it never writes.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from nubes.domain.errors import InvalidInput
from nubes.domain.quotas import QUOTA_RESOURCES

CONFIG_FILE_NAME = "nubes.toml"


def default_state_dir() -> Path:
    """/var/lib/nubes for root, ~/.local/share/nubes for everyone else."""
    if os.geteuid() == 0:
        return Path("/var/lib/nubes")
    return Path.home() / ".local" / "share" / "nubes"


class PasswordHashing(BaseModel):
    """argon2id cost. The defaults are OWASP's minimum (19 MiB, 2 passes) run on 2 lanes."""

    model_config = ConfigDict(extra="forbid")

    memory_kib: int = Field(19456, ge=1024, description="argon2id memory cost in KiB.")
    time_cost: int = Field(2, ge=1, description="argon2id passes over memory.")
    parallelism: int = Field(2, ge=1, le=16, description="argon2id lanes (threads).")


class SchedulerSettings(BaseModel):
    """How the scheduler chooses among hosts that fit (docs/scheduling.md)."""

    model_config = ConfigDict(extra="forbid")

    weigher: Literal["pack", "spread", "load"] = Field(
        "spread",
        description="pack: fill the fullest host first; spread: the emptiest; load: the least "
        "loaded (USED_CPU).",
    )
    rank_weight: float = Field(10.0, ge=0, description="Weight of a request's RANK.")
    ram_weight: float = Field(1.0, ge=0, description="Weight of free RAM in pack/spread.")
    cpu_weight: float = Field(1.0, ge=0, description="Weight of free vCPUs in pack/spread.")
    disk_weight: float = Field(0.5, ge=0, description="Weight of free disk in pack/spread.")
    load_weight: float = Field(1.0, ge=0, description="Weight of the host's load.")
    soft_affinity_weight: float = Field(
        5.0, ge=0, description="Weight of soft-affinity and soft-anti-affinity groups."
    )
    max_instances_per_host: int | None = Field(
        None, ge=1, description="Cap on instances per host (hosts and aggregates may lower it)."
    )
    refresh_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="The scheduler's snapshot of hosts is re-read at most this often (and "
        "when a claim loses a race twice, or nothing fits); metrics are at most this much older "
        "than their host.",
    )


class Settings(BaseModel):
    """Everything the controller reads at start-up."""

    model_config = ConfigDict(extra="forbid")

    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Where the database (SQLite), keys, logs and admin files live. "
        "Env: NUBES_STATE_DIR.",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL. Empty means SQLite in WAL mode at STATE_DIR/nubes.db. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db. Env: NUBES_DATABASE_URL.",
    )
    listen_host: str = Field(
        "0.0.0.0", description="Address the API listens on. Env: NUBES_LISTEN_HOST."
    )
    port: int = Field(8770, ge=1, le=65535, description="The one HTTP port. Env: NUBES_PORT.")
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Processes serving the API on that port (a supervisor restarts any that "
        "dies). 0: one per CPU, at most 4. Env: NUBES_WORKERS.",
    )
    public_url: str = Field(
        "",
        description="URL clients use to reach the API; written to admin-openrc.sh and "
        "clouds.yaml. Empty means http://127.0.0.1:PORT.",
    )
    token_ttl_seconds: int = Field(3600, ge=60, le=7 * 86400, description="Token lifetime.")
    token_max_active_keys: int = Field(
        3,
        ge=3,
        le=100,
        description="Token keys kept after rotation (primary + staged + older secondaries).",
    )
    token_key_refresh_seconds: int = Field(
        30,
        ge=1,
        description="How often a controller re-reads the token keys that another controller "
        "may have rotated.",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body accepted (413 above)."
    )
    admin_project: str = Field("admin", description="Name of the cloud-admin project.")
    admin_user: str = Field("admin", description="Name of the first admin user.")
    password_hashing: PasswordHashing = Field(default_factory=PasswordHashing)  # type: ignore[arg-type]
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)  # type: ignore[arg-type]
    default_quotas: dict[str, int] = Field(
        default_factory=lambda: dict(QUOTA_RESOURCES),
        description="Per-project limits for new projects (-1: unlimited); key_pairs is per user.",
    )
    instance_boot_timeout_seconds: int = Field(
        600, ge=10, description="An instance not running this long after create goes to error."
    )
    instance_action_timeout_seconds: int = Field(
        300, ge=10, description="Deadline of start, stop, reboot and delete."
    )
    cpu_allocation_ratio: float = Field(16.0, gt=0, description="vCPUs per host CPU.")
    ram_allocation_ratio: float = Field(1.5, gt=0, description="Guest RAM per host RAM.")
    disk_allocation_ratio: float = Field(1.0, gt=0, description="Guest disk per host disk.")
    log_level: str = Field("info", description="debug, info, warning or error.")
    default_availability_zone: str = Field(
        "nova",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="The availability zone of hosts in no aggregate with a zone (Nova's "
        "default name).",
    )

    vxlan_vni_min: int = Field(
        1, ge=1, le=16_777_215, description="Lowest VNI given to a vxlan network."
    )
    vxlan_vni_max: int = Field(
        16_777_215, ge=1, le=16_777_215, description="Highest VNI given to a vxlan network."
    )
    global_physnet_mtu: int = Field(
        1500,
        ge=1280,
        le=9216,
        description="MTU of the hosts' physical networks: flat, vlan and local networks get it, "
        "vxlan networks 50 bytes less (the VXLAN header).",
    )
    ip_cooldown_seconds: int = Field(
        60,
        ge=0,
        le=86400,
        description="A released fixed IP is not handed out again for this long (unless asked for "
        "by address), so a stale ARP entry or connection never reaches a new owner.",
    )
    default_network_cidr: str = Field(
        "10.42.0.0/24",
        description="CIDR of `default-subnet`, the subnet of the network `default` that "
        "`nubes up` makes for the admin project.",
    )

    @field_validator("vxlan_vni_max")
    @classmethod
    def _vni_range(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("vxlan_vni_min", 1)
        if value < low:
            raise ValueError(f"the VNI range is empty: vxlan_vni_max {value} < vxlan_vni_min {low}")
        return value

    @field_validator("default_network_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            network = ipaddress.ip_network(value)
        except ValueError as exc:
            raise ValueError(f"not a CIDR such as 10.42.0.0/24 ({exc})") from exc
        if network.version != 4 or network.prefixlen > 30:
            raise ValueError("an IPv4 CIDR of /30 or larger")
        return str(network)

    @field_validator("default_quotas")
    @classmethod
    def _known_quotas(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(QUOTA_RESOURCES))
        if unknown:
            raise ValueError(f"unknown quota resources {unknown}; known: {sorted(QUOTA_RESOURCES)}")
        if any(v < -1 for v in value.values()):
            raise ValueError("quota limits are -1 (unlimited) or ≥ 0")
        return {**QUOTA_RESOURCES, **value}

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'nubes.db'}"

    @property
    def effective_workers(self) -> int:
        return self.workers or max(1, min(os.cpu_count() or 1, 4))

    @property
    def effective_public_url(self) -> str:
        return self.public_url or f"http://127.0.0.1:{self.port}"


_ENV = {
    "NUBES_STATE_DIR": "state_dir",
    "NUBES_DATABASE_URL": "database_url",
    "NUBES_LISTEN_HOST": "listen_host",
    "NUBES_PORT": "port",
    "NUBES_WORKERS": "workers",
    "NUBES_LOG_LEVEL": "log_level",
}


def load_settings(state_dir: Path | None = None, **overrides: Any) -> Settings:
    """Read the file in the state directory, then the environment, then ``overrides``."""
    env = {field: os.environ[var] for var, field in _ENV.items() if os.environ.get(var)}
    directory = Path(state_dir or env.get("state_dir") or default_state_dir())
    values: dict[str, Any] = {}
    path = directory / CONFIG_FILE_NAME
    if path.exists():
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{path}: {exc}") from exc
    values.update(env)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["state_dir"] = directory
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid configuration ({path}): {problems}") from exc


def render_docs() -> str:
    """docs/configuration.md, from the model."""
    lines = [
        "# Configuration reference",
        "",
        f"The controller reads `STATE_DIR/{CONFIG_FILE_NAME}` (TOML), then `NUBES_*` environment "
        "variables, then command-line flags. This file is generated by `python -m nubes.config`; "
        "a test keeps it true.",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
    ]

    def rows(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                rows(annotation, f"{prefix}{name}.")
                continue
            if name == "state_dir":
                default = "/var/lib/nubes (root), ~/.local/share/nubes"
            elif field.default_factory is not None:
                default = str(field.default_factory())  # type: ignore[call-arg]
            else:
                default = repr(field.default)
            lines.append(f"| `{prefix}{name}` | `{default}` | {field.description or ''} |")

    rows(Settings, "")
    lines += [
        "",
        "Example `nubes.toml`:",
        "",
        "```toml",
        'database_url = "postgresql+psycopg://nubes:secret@db.example/nubes"',
        "port = 8770",
        "[password_hashing]",
        "memory_kib = 19456",
        "[default_quotas]",
        "instances = 20",
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_docs(), end="")
