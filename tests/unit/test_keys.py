"""SSH public keys: parsing, normalisation, fingerprints, rejection messages, generation."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from nubes.compute.keys import (
    ACCEPTED_TYPES,
    MAX_KEY_CHARS,
    ParsedKey,
    generate_keypair,
    parse_public_key,
)
from nubes.domain.errors import InvalidInput

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

# Made with OpenSSH's ssh-keygen; fingerprints as printed by `ssh-keygen -l [-E md5] -f`.
VECTORS = [
    (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFkBTlwibxMFwbGiaozLuCkxGyf+DTOwgkVO+S2168Ty "
        "alice@example",
        "SHA256:tDJ2c8wkMNfQPfsP6XP3qoloB5YuNqOw0T/yj7rWvCs",
        "84:3f:a0:18:d5:d9:f7:a3:dd:81:7b:ce:7b:da:28:98",
    ),
    (
        "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBO4DswkTqRGtRa9h"
        "lokKykaTVUyqDrWycZoIIL/hCpqqRudMC3RvlM9L1mT7iCJt0l0VZiydPF4ahaleT7jEHo8XoIJvighKt6iWjFu4"
        "FJ5yImo6NnzGiR8tzSprq5nAcg== bob@host",
        "SHA256:Kr2DgvxEbibRiFQkiWLcvXR40nxc8+SsIXbWuen2huI",
        "23:f0:17:b4:a3:0e:4e:66:87:5b:3f:56:3d:50:62:aa",
    ),
    (
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCs5rBDM+mv6LJfFaFOhqTV7hXrGAGHNPhCaUZDXrqzjEu4/b2Y"
        "CqEmZ0mwrh6bcIW8CM1ycasiQXoW6GMc9XNAIZoVDSHgvs8qwxZHnAyUljjav25O0jnbz8DgSMZAlu6zOihg2MDm"
        "J5nbwJhEZNySc8wiwfYgtkyh5eJNtBX0SrsFC36gW4UzrrayuYeelBtBJHMx4gfyCqtxLj4NDr5dPuU3/7qERXXB"
        "Mc52tnKEXRz7cozEPmH20ahauSDS5/kw99cYJ/URUtm4ziU2qXPX6p4hLdM0rOS+aIacBc71jW6dKE+Qr+oCiZoG"
        "OP5g68oCNlqOkYZaPNZV40atrgzl",
        "SHA256:yjlvDhknJmEOGzyfEMrd+oylb1ePHIQYbnB4+lxjFQg",
        "45:78:e0:2e:06:4a:46:0b:63:94:e9:f5:72:54:aa:20",
    ),
]


def _public_line(private: PrivateKey) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def _sha256_fp(line: str) -> str:
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _md5_fp(line: str) -> str:
    hexdigest = hashlib.md5(base64.b64decode(line.split()[1])).hexdigest()
    return ":".join(hexdigest[i : i + 2] for i in range(0, len(hexdigest), 2))


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _make(kind: str) -> PrivateKey:
    if kind == "ssh-rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ssh-rsa-4096":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    if kind == "ssh-ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    curve = {"nistp256": ec.SECP256R1(), "nistp384": ec.SECP384R1(), "nistp521": ec.SECP521R1()}
    return ec.generate_private_key(curve[kind.rsplit("-", 1)[1]])


KINDS = {
    "ssh-rsa-2048": ("ssh-rsa", 2048),
    "ssh-rsa-4096": ("ssh-rsa", 4096),
    "ssh-ed25519": ("ssh-ed25519", 256),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256", 256),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384", 384),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521", 521),
}


@pytest.fixture(scope="module", params=sorted(KINDS))
def keyed(request: pytest.FixtureRequest) -> tuple[str, int, str]:
    """(type, bits, one-line public key without comment) of a freshly generated key."""
    kind: str = request.param
    key_type, bits = KINDS[kind]
    return key_type, bits, _public_line(_make(kind))


@pytest.fixture(scope="module")
def ed_line() -> str:
    return _public_line(ed25519.Ed25519PrivateKey.generate())


def _rejects(text: str, *fragments: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_public_key(text)
    err = info.value
    assert err.error_code == "nubes.keypair.invalid_key"
    for fragment in fragments:
        assert fragment in str(err), (fragment, str(err))
    return err


# --- accepted keys ------------------------------------------------------------------------


def test_accepted_types() -> None:
    assert set(ACCEPTED_TYPES) == {
        "ssh-rsa",
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
    }


def test_parses_each_type_without_comment(keyed: tuple[str, int, str]) -> None:
    key_type, bits, line = keyed
    parsed = parse_public_key(line)
    assert parsed.type == key_type
    assert parsed.bits == bits
    assert parsed.public_key == line
    assert parsed.comment == ""
    assert parsed.fingerprint == _sha256_fp(line)
    assert parsed.fingerprint_md5 == _md5_fp(line)


def test_parses_each_type_with_comment(keyed: tuple[str, int, str]) -> None:
    key_type, _, line = keyed
    parsed = parse_public_key(f"{line} alice@laptop\n")
    assert parsed.type == key_type
    assert parsed.public_key == f"{line} alice@laptop"
    assert parsed.comment == "alice@laptop"
    assert parsed.fingerprint == _sha256_fp(line)


def test_fingerprint_shapes(ed_line: str) -> None:
    parsed = parse_public_key(ed_line)
    assert parsed.fingerprint.startswith("SHA256:")
    assert not parsed.fingerprint.endswith("=")
    assert len(parsed.fingerprint) == len("SHA256:") + 43
    groups = parsed.fingerprint_md5.split(":")
    assert len(groups) == 16
    assert all(len(g) == 2 and g == g.lower() for g in groups)
    blob = base64.b64decode(ed_line.split()[1])
    assert parsed.fingerprint_md5.replace(":", "") == hashlib.md5(blob).hexdigest()


@pytest.mark.parametrize(("line", "sha256", "md5"), VECTORS)
def test_fingerprints_match_ssh_keygen(line: str, sha256: str, md5: str) -> None:
    parsed = parse_public_key(line)
    assert parsed.fingerprint == sha256
    assert parsed.fingerprint_md5 == md5
    assert parsed.public_key == line


def test_comment_with_spaces_and_unicode_is_preserved(ed_line: str) -> None:
    parsed = parse_public_key(f"{ed_line} Zoë's key  (work)")
    assert parsed.comment == "Zoë's key  (work)"
    assert parsed.public_key == f"{ed_line} Zoë's key  (work)"


def test_comment_mentioning_private_key_is_fine(ed_line: str) -> None:
    parsed = parse_public_key(f"{ed_line} public half of my PRIVATE KEY-ring")
    assert parsed.comment == "public half of my PRIVATE KEY-ring"


def test_surrounding_whitespace_is_normalised(ed_line: str) -> None:
    key_type, data = ed_line.split()
    parsed = parse_public_key(f"  \t{key_type}   {data}\t  me@host  \r\n")
    assert parsed.public_key == f"{ed_line} me@host"
    assert parse_public_key(f"{ed_line}\r\n").public_key == ed_line


def test_normalised_key_parses_to_the_same_result(ed_line: str) -> None:
    parsed = parse_public_key(f" {ed_line}  note \n")
    assert parse_public_key(parsed.public_key) == parsed


def test_parsed_key_is_frozen(ed_line: str) -> None:
    parsed = parse_public_key(ed_line)
    assert isinstance(parsed, ParsedKey)
    with pytest.raises(AttributeError):
        parsed.type = "ssh-rsa"  # type: ignore[misc]


# --- rejected input -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "\t \r\n"])
def test_rejects_empty(text: str) -> None:
    _rejects(text, "empty")


def test_rejects_short_rsa_key() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    _rejects(_public_line(private) + " old@key", "1024 bits", "at least 2048")


def test_rejects_dsa_key() -> None:
    blob = b"".join(_ssh_string(x) for x in [b"ssh-dss", b"\x00" + b"\xab" * 128, b"\x11" * 20])
    blob += _ssh_string(b"\x02" * 128) + _ssh_string(b"\x03" * 128)
    err = _rejects(f"ssh-dss {base64.b64encode(blob).decode()} old@host", "DSA", "not accepted")
    assert "ssh-ed25519" in str(err)


def test_rejects_dsa_blob_under_another_type() -> None:
    blob = _ssh_string(b"ssh-dss") + _ssh_string(b"\x00" + b"\xab" * 128)
    _rejects(f"ssh-rsa {base64.b64encode(blob).decode()}", "says ssh-rsa", "ssh-dss key")


@pytest.mark.parametrize(
    "fmt",
    [
        serialization.PrivateFormat.OpenSSH,
        serialization.PrivateFormat.PKCS8,
        serialization.PrivateFormat.TraditionalOpenSSL,
    ],
    ids=["openssh", "pkcs8", "traditional"],
)
def test_rejects_private_key(fmt: serialization.PrivateFormat) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, fmt, serialization.NoEncryption()
    ).decode()
    _rejects(pem, "this looks like a private key; paste the .pub file")


def test_rejects_private_key_generated_by_nubes() -> None:
    _, pem = generate_keypair()
    _rejects(pem, "private key")


def test_rejects_putty_private_key() -> None:
    _rejects("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n", "private key")


def test_rejects_pem_public_key() -> None:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    _rejects(pem, "PEM or RFC 4716", "ssh-keygen -i")


def test_rejects_rfc4716_public_key(ed_line: str) -> None:
    data = ed_line.split()[1]
    text = f"---- BEGIN SSH2 PUBLIC KEY ----\n{data}\n---- END SSH2 PUBLIC KEY ----\n"
    _rejects(text, "RFC 4716")


@pytest.mark.parametrize(
    "text",
    [
        "hello world",
        "lorem ipsum dolor sit amet, consectetur adipiscing elit",
        "AAAAC3NzaC1lZDI1NTE5AAAAIFkBTlwibxMFwbGiaozLuCkxGyf+DTOwgkVO+S2168Ty",
        "\x00\x01\x02 binary",
        'command="/bin/true" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA',
    ],
)
def test_rejects_garbage(text: str) -> None:
    _rejects(text, "unknown key type", "ssh-ed25519")


def test_rejects_random_bytes_under_a_valid_type() -> None:
    data = base64.b64encode(bytes(range(7, 200))).decode()
    _rejects(f"ssh-rsa {data}", "not an SSH public key of type ssh-rsa")


def test_rejects_bad_base64() -> None:
    err = _rejects("ssh-rsa AAAA-not-base64", "not valid base64")
    assert err.__cause__ is not None


@pytest.mark.parametrize("data", ["AAAAC3NzaC1lZDI1NTE5===", "AAAA C3Nz", "AAAAC3NzaC1lZDI1NTE5A"])
def test_rejects_malformed_base64(data: str) -> None:
    _rejects(f"ssh-ed25519 {data}", "ssh-ed25519")


def test_rejects_two_keys_on_two_lines(ed_line: str) -> None:
    other = _public_line(ec.generate_private_key(ec.SECP256R1()))
    _rejects(f"{ed_line} a@x\n{other} b@y\n", "one public key on one line", "2 lines")


def test_rejects_two_keys_separated_by_blank_lines(ed_line: str) -> None:
    _rejects(f"{ed_line}\n\n\n{ed_line}", "2 lines")


def test_rejects_certificate(ed_line: str) -> None:
    data = ed_line.split()[1]
    _rejects(f"ssh-ed25519-cert-v01@openssh.com {data} me", "certificate", "plain public key")


def test_rejects_security_key_type() -> None:
    _rejects("sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t", "FIDO")


def test_rejects_type_without_data() -> None:
    _rejects("ssh-ed25519", "no key data")


def test_rejects_type_mismatch(ed_line: str) -> None:
    data = ed_line.split()[1]
    _rejects(f"ssh-rsa {data}", "says ssh-rsa", "ssh-ed25519 key")
    _rejects(f"ecdsa-sha2-nistp256 {data}", "says ecdsa-sha2-nistp256")


def test_rejects_curve_mismatch() -> None:
    line = _public_line(ec.generate_private_key(ec.SECP384R1()))
    _rejects("ecdsa-sha2-nistp256 " + line.split()[1], "ecdsa-sha2-nistp384 key")


def test_rejects_truncated_key(ed_line: str) -> None:
    blob = base64.b64decode(ed_line.split()[1])[:-5]
    err = _rejects(f"ssh-ed25519 {base64.b64encode(blob).decode()}", "not a valid ssh-ed25519")
    assert isinstance(err.__cause__, ValueError)


def test_rejects_trailing_data_in_blob(ed_line: str) -> None:
    blob = base64.b64decode(ed_line.split()[1]) + b"extra"
    _rejects(f"ssh-ed25519 {base64.b64encode(blob).decode()}", "not a valid ssh-ed25519")


def test_rejects_control_characters_in_comment(ed_line: str) -> None:
    _rejects(f"{ed_line} bad\x00comment", "control characters")
    _rejects(f"{ed_line} bell\x07", "control characters")


def test_rejects_huge_input(ed_line: str) -> None:
    _rejects(f"{ed_line} {'x' * MAX_KEY_CHARS}", "too long")


def test_unknown_type_name_is_shortened_in_message() -> None:
    err = _rejects("x" * 500 + " AAAA", "unknown key type")
    assert len(str(err)) < 300


# --- generation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "bits"), [("ssh-ed25519", 256), ("ssh-rsa", 3072), ("ecdsa-sha2-nistp256", 256)]
)
def test_generate_keypair(key_type: str, bits: int) -> None:
    parsed, pem = generate_keypair(key_type, comment="nova-generated")
    assert parsed.type == key_type
    assert parsed.bits == bits
    assert parsed.comment == "nova-generated"
    assert parsed.public_key.startswith(key_type + " ")
    assert parsed.public_key.endswith(" nova-generated")
    assert pem.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert pem.rstrip().endswith("-----END OPENSSH PRIVATE KEY-----")
    private = serialization.load_ssh_private_key(pem.encode(), password=None)
    assert isinstance(
        private, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    )
    line = _public_line(private)
    assert parsed.public_key == f"{line} nova-generated"
    assert parsed.fingerprint == _sha256_fp(line)
    assert parsed.fingerprint_md5 == _md5_fp(line)
    assert parse_public_key(parsed.public_key) == parsed


def test_generate_defaults_to_ed25519_without_comment() -> None:
    parsed, _ = generate_keypair()
    assert parsed.type == "ssh-ed25519"
    assert parsed.comment == ""
    assert len(parsed.public_key.split()) == 2


def test_generate_makes_distinct_keys() -> None:
    assert generate_keypair()[0].fingerprint != generate_keypair()[0].fingerprint


@pytest.mark.parametrize("key_type", ["ssh-dss", "rsa", "ecdsa-sha2-nistp384", ""])
def test_generate_rejects_unknown_type(key_type: str) -> None:
    with pytest.raises(InvalidInput) as info:
        generate_keypair(key_type)
    assert info.value.error_code == "nubes.request.invalid"
    message = str(info.value)
    assert f"unknown key type {key_type!r}" in message
    for allowed in ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"):
        assert allowed in message


def test_generate_rejects_multiline_comment() -> None:
    with pytest.raises(InvalidInput, match="single line") as info:
        generate_keypair(comment="a\nb")
    assert info.value.error_code == "nubes.request.invalid"
