"""``nubes keypair``: your SSH keys. A generated private key exists only in the answer to
``create``: it is written to ``--private-key-file`` (mode 0600, never over an existing file)
or printed once."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from nubes.cli.client import api, path
from nubes.cli.errors import CliError
from nubes.cli.output import (
    Column,
    Format,
    FormatOption,
    note,
    render_list,
    render_one,
    say,
    warn,
)

app = typer.Typer(help="SSH keypairs (yours; cloud admins: --user).", no_args_is_help=True)


class KeyType(StrEnum):
    ed25519 = "ssh-ed25519"
    rsa = "ssh-rsa"
    ecdsa = "ecdsa-sha2-nistp256"


COLUMNS: list[Column] = [
    ("name", "Name"),
    ("type", "Type"),
    ("fingerprint", "Fingerprint"),
]
FIELDS: list[Column] = [
    ("id", "ID"),
    *COLUMNS,
    ("user_id", "User"),
    ("project_id", "Project"),
    ("created_at", "Created"),
    ("public_key", "Public key"),
]

NameArgument = Annotated[str, typer.Argument(help="Keypair name.")]
UserOption = Annotated[
    str | None, typer.Option(help="Cloud admins: another user's keypair.", show_default=False)
]


def _read_public_key(file: Path) -> str:
    try:
        return file.expanduser().read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read the public key {file}: {exc.strerror}") from exc


def _write_private_key(file: Path, key: str) -> None:
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key if key.endswith("\n") else key + "\n")
    os.chmod(file, 0o600)


@app.command("create")
def keypair_create(
    ctx: typer.Context,
    name: NameArgument,
    public_key: Annotated[
        Path | None,
        typer.Option(help="Import this OpenSSH public key file; omit to generate a pair."),
    ] = None,
    key_type: Annotated[
        KeyType, typer.Option("--type", help="Key type to generate.")
    ] = KeyType.ed25519,
    private_key_file: Annotated[
        Path | None,
        typer.Option(help="Write the generated private key here (mode 0600)."),
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Import a public key, or generate a keypair."""
    if public_key is not None and private_key_file is not None:
        raise typer.BadParameter("--private-key-file is for generated keys, not --public-key")
    target = private_key_file.expanduser() if private_key_file else None
    if target is not None and (target.exists() or not target.parent.is_dir()):
        problem = "exists" if target.exists() else "is in a directory that does not exist"
        raise CliError(f"{target} {problem}; the private key would be lost, so nothing was made")
    body = {"name": name, "type": key_type.value}
    if public_key is not None:
        body["public_key"] = _read_public_key(public_key)
    made = api(ctx).post(path("keypairs"), json=body)
    private_key = made.get("private_key")
    if private_key and target is not None:
        try:
            _write_private_key(target, private_key)
        except OSError as exc:
            warn(f"cannot write {target} ({exc.strerror}); here is the key instead:")
            target = None
        else:
            del made["private_key"]  # on disk now; keep it out of logs and pipes
    render_one(made, fmt, FIELDS)
    if not private_key:
        return
    if target is not None:
        note(f"wrote the private key to {target} (mode 0600)")
        return
    if fmt is Format.table:
        typer.echo(private_key.rstrip("\n"))
    warn(
        "this private key is shown once and cannot be shown again: save it now "
        "(or use --private-key-file next time)"
    )


@app.command("list")
def keypair_list(
    ctx: typer.Context, user: UserOption = None, fmt: FormatOption = Format.table
) -> None:
    """List keypairs."""
    keypairs = api(ctx).list_all(path("keypairs"), "keypairs", {"user": user})
    render_list(keypairs, COLUMNS, fmt)


@app.command("show")
def keypair_show(
    ctx: typer.Context,
    name: NameArgument,
    user: UserOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Show a keypair and its public key."""
    render_one(api(ctx).get(path("keypairs", name), params={"user": user}), fmt, FIELDS)


@app.command("delete")
def keypair_delete(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Keypair names.")],
    user: UserOption = None,
) -> None:
    """Delete keypairs."""
    client = api(ctx)
    for name in names:
        client.delete(path("keypairs", name), params={"user": user})
        say(f"deleted keypair {name}")
