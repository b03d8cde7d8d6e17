"""SSH public keys of keypairs: validation, normalisation, fingerprints and generation.

This module owns what nubes accepts as a keypair's public key (one OpenSSH line of type
``ssh-rsa`` of at least 2048 bits, ``ssh-ed25519`` or ``ecdsa-sha2-nistp256/384/521``), how it
is stored (normalised to ``"<type> <base64> [comment]"``), its fingerprints (OpenSSH ``SHA256:``
and the MD5 colon form Nova shows), and server-side key generation. It is pure: it uses
``cryptography`` only, never a subprocess, and never touches the database; the compute service
stores what it returns.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from nubes.domain.errors import InvalidInput

__all__ = [
    "ACCEPTED_TYPES",
    "GENERATABLE_TYPES",
    "MIN_RSA_BITS",
    "ParsedKey",
    "fingerprint_md5",
    "fingerprint_sha256",
    "generate_keypair",
    "parse_public_key",
]

_INVALID_KEY: Final = "nubes.keypair.invalid_key"
_INVALID_REQUEST: Final = "nubes.request.invalid"

#: The smallest RSA modulus accepted, in bits.
MIN_RSA_BITS: Final = 2048
#: Longest accepted public-key text; a 16384-bit RSA key is under 3 KiB.
MAX_KEY_CHARS: Final = 16384

_CURVES: Final[dict[str, str]] = {
    "ecdsa-sha2-nistp256": "secp256r1",
    "ecdsa-sha2-nistp384": "secp384r1",
    "ecdsa-sha2-nistp521": "secp521r1",
}
#: Key types parse_public_key accepts.
ACCEPTED_TYPES: Final[tuple[str, ...]] = ("ssh-rsa", "ssh-ed25519", *_CURVES)
#: Key types generate_keypair can make; the first is the default.
GENERATABLE_TYPES: Final[tuple[str, ...]] = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256")
_GENERATED_RSA_BITS: Final = 3072


@dataclass(frozen=True)
class ParsedKey:
    """A validated SSH public key.

    ``public_key`` is the normalised one-line OpenSSH text, ``"<type> <base64>"`` followed by
    ``" <comment>"`` when there is a comment. ``fingerprint`` is the OpenSSH form
    (``SHA256:`` + unpadded base64 of the SHA-256 of the key blob), ``fingerprint_md5`` the
    legacy colon form (``aa:bb:...``) shown by Nova.
    """

    type: str
    public_key: str
    fingerprint: str
    fingerprint_md5: str
    comment: str
    bits: int


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code=_INVALID_KEY)


def fingerprint_sha256(blob: bytes) -> str:
    """OpenSSH's fingerprint of a key blob: ``SHA256:`` + unpadded base64 of its SHA-256."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def fingerprint_md5(blob: bytes) -> str:
    """The legacy MD5 fingerprint of a key blob, as lowercase hex pairs joined by colons."""
    digest = hashlib.md5(blob, usedforsecurity=False).digest()
    return ":".join(f"{byte:02x}" for byte in digest)


def _blob_type(blob: bytes) -> str | None:
    """The key type string a wire-format blob starts with, or None if it has none."""
    if len(blob) < 4:
        return None
    (length,) = struct.unpack(">I", blob[:4])
    if length == 0 or length > 64 or len(blob) < 4 + length:
        return None
    try:
        return blob[4 : 4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None


def _check_comment(comment: str, code: str) -> None:
    if any(not ch.isprintable() and ch != "\t" for ch in comment):
        raise InvalidInput("the key comment contains control characters", code=code)


def _reject_not_a_public_key_line(text: str) -> None:
    """Recognise the usual wrong pastes and say what they are."""
    # Match the armour lines, not words: a comment may well say "private key".
    upper = text.upper()
    if "PRIVATE KEY-----" in upper or text.startswith("PuTTY-User-Key-File"):
        raise _invalid("this looks like a private key; paste the .pub file")
    if "---- BEGIN SSH2 PUBLIC KEY ----" in upper or "-----BEGIN PUBLIC KEY-----" in upper:
        raise _invalid(
            "this is a PEM or RFC 4716 public key; paste the one-line OpenSSH format "
            "('ssh-keygen -i -f KEY' converts it)"
        )


def parse_public_key(text: str) -> ParsedKey:
    """Validate and normalise one OpenSSH public key line.

    Accepts ``"<type> <base64> [comment]"`` with surrounding whitespace and one trailing newline.
    Raises :class:`InvalidInput` (code ``nubes.keypair.invalid_key``) saying what is wrong:
    empty input, several lines, a private key, a DSA key, a certificate, an unknown type,
    bad base64, data that is not a key of the stated type, or an RSA key under 2048 bits.
    """
    if len(text) > MAX_KEY_CHARS:
        raise _invalid(
            f"the public key is too long ({len(text)} characters; at most {MAX_KEY_CHARS})"
        )
    stripped = text.strip()
    if not stripped:
        raise _invalid("the public key is empty")
    _reject_not_a_public_key_line(stripped)
    lines = [line for line in stripped.splitlines() if line.strip()]
    if len(lines) > 1:
        raise _invalid(
            f"expected one public key on one line, got {len(lines)} lines; "
            "paste a single key (one keypair holds one key)"
        )
    fields = stripped.split(None, 2)
    key_type = fields[0]
    if key_type == "ssh-dss":
        raise _invalid("DSA (ssh-dss) keys are not accepted; use ssh-ed25519, ecdsa or ssh-rsa")
    if "-cert-v01@openssh.com" in key_type:
        raise _invalid(f"{key_type} is an SSH certificate; paste the plain public key instead")
    if key_type.startswith("sk-"):
        raise _invalid(
            f"{key_type} is a FIDO security-key type, which is not accepted; "
            "use ssh-ed25519, ecdsa or ssh-rsa"
        )
    if key_type not in ACCEPTED_TYPES:
        shown = key_type if len(key_type) <= 40 else key_type[:40] + "..."
        raise _invalid(
            f"unknown key type {shown!r}; expected '<type> <base64 key> [comment]' with type "
            f"one of {', '.join(ACCEPTED_TYPES)}"
        )
    if len(fields) < 2:
        raise _invalid(f"the {key_type} key has no key data after the type")
    data = fields[1]
    comment = fields[2].strip() if len(fields) == 3 else ""
    _check_comment(comment, _INVALID_KEY)

    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(f"the {key_type} key data is not valid base64") from exc
    inner = _blob_type(blob)
    if inner != key_type:
        if inner in ACCEPTED_TYPES or inner == "ssh-dss":
            raise _invalid(f"the key says {key_type} but its data is a {inner} key")
        raise _invalid(f"the key data is not an SSH public key of type {key_type}")

    try:
        loaded = serialization.load_ssh_public_key(f"{key_type} {data}".encode("ascii"))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _invalid(f"the key data is not a valid {key_type} key ({exc})") from exc

    key, bits = _check_loaded(key_type, loaded)
    return _parsed(key_type, key, comment, bits)


_PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


def _check_loaded(key_type: str, loaded: object) -> tuple[_PublicKey, int]:
    """Check the loaded key is of ``key_type`` and strong enough; return it and its bits."""
    if key_type == "ssh-rsa" and isinstance(loaded, rsa.RSAPublicKey):
        if loaded.key_size < MIN_RSA_BITS:
            raise _invalid(
                f"the RSA key is {loaded.key_size} bits; at least {MIN_RSA_BITS} are required"
            )
        return loaded, loaded.key_size
    if key_type == "ssh-ed25519" and isinstance(loaded, ed25519.Ed25519PublicKey):
        return loaded, 256
    if (
        key_type in _CURVES
        and isinstance(loaded, ec.EllipticCurvePublicKey)
        and loaded.curve.name == _CURVES[key_type]
    ):
        return loaded, loaded.curve.key_size
    # load_ssh_public_key checks the header against the body; this is belt and braces.
    raise _invalid(f"the key data is not a valid {key_type} key")


def _parsed(key_type: str, key: _PublicKey, comment: str, bits: int) -> ParsedKey:
    line = key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")
    blob = base64.b64decode(line.split()[1])
    return ParsedKey(
        type=key_type,
        public_key=f"{line} {comment}" if comment else line,
        fingerprint=fingerprint_sha256(blob),
        fingerprint_md5=fingerprint_md5(blob),
        comment=comment,
        bits=bits,
    )


def generate_keypair(key_type: str = "ssh-ed25519", comment: str = "") -> tuple[ParsedKey, str]:
    """Make a new keypair: the parsed public key and the private key as OpenSSH PEM text.

    ``key_type`` is ``ssh-ed25519`` (default), ``ssh-rsa`` (3072 bits) or
    ``ecdsa-sha2-nistp256``; anything else raises :class:`InvalidInput` with code
    ``nubes.request.invalid``. The private key is unencrypted and is never stored by nubes:
    the caller hands it to the user once.
    """
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if key_type == "ssh-ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    elif key_type == "ssh-rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=_GENERATED_RSA_BITS)
    elif key_type == "ecdsa-sha2-nistp256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise InvalidInput(
            f"unknown key type {key_type!r}; choose one of {', '.join(GENERATABLE_TYPES)}",
            code=_INVALID_REQUEST,
        )
    comment = comment.strip()
    if "\n" in comment or "\r" in comment:
        raise InvalidInput("the key comment must be a single line", code=_INVALID_REQUEST)
    _check_comment(comment, _INVALID_REQUEST)
    public, bits = _check_loaded(key_type, private.public_key())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")
    return _parsed(key_type, public, comment, bits), pem
