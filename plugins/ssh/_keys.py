"""
Keys: the gateway's host key, the keys it logs in with, and the host keys
it expects of targets.

The host key is created on first start when its file is absent (Ed25519,
owner-only).  A target's host key is pinned from an OpenSSH known-hosts
file or from inline public keys; unlike Conch's C{KnownHostsFile}, the
lookup honours C{[host]:port} entries, so two targets on one address
with different ports keep different keys.

test-case-name: tests.unit.ssh.test_keys
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh.keys import BadKeyError, EncryptedKeyError, Key


class KeyFileError(Exception):
    """
    A key file is missing, unreadable or not a key; the message says which.
    """


def load_or_create_host_key(path: str) -> tuple[Key, bool]:
    """
    The gateway's host key from C{path}, created there if absent.

    Returns:
        The private key and whether it was created now.

    Raises:
        KeyFileError: The file exists but cannot be read as a private key,
            or cannot be created.
    """
    target = Path(path)
    if target.exists():
        return load_private_key(path), False

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        Path(f"{path}.pub").write_bytes(public + b" hoopgate-host-key\n")
    except OSError as e:
        raise KeyFileError(f"cannot create host key {path}: {e.strerror}") from None
    created: Key = Key.fromString(pem)
    return created, True


def load_private_key(path: str) -> Key:
    """
    An unencrypted private key (OpenSSH or PEM format) from C{path}.

    Raises:
        KeyFileError: It cannot be read or is not such a key.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read {path}: {e.strerror}") from None
    return parse_private_key(raw, path)


def parse_private_key(data: bytes, where: str) -> Key:
    """
    An unencrypted private key (OpenSSH or PEM format) from its text.

    Args:
        data: The key's text.
        where: Where it came from, for messages (never the key).

    Raises:
        KeyFileError: It is not such a key.
    """
    try:
        key: Key = Key.fromString(data)
    except EncryptedKeyError:
        raise KeyFileError(
            f"{where} is encrypted; the gateway needs it clear"
        ) from None
    except (BadKeyError, ValueError):
        raise KeyFileError(f"{where} is not a private key") from None
    if not key.isPublic() and key.type():
        return key
    raise KeyFileError(f"{where} holds a public key, not a private one")


def public_key_blob(line: str) -> bytes:
    """
    The wire form of an OpenSSH public key line (C{TYPE BASE64 [comment]}).

    Raises:
        ValueError: The line is not a public key.
    """
    fields = line.split()
    if len(fields) < 2:
        raise ValueError("not an OpenSSH public key line")
    try:
        key = Key.fromString(f"{fields[0]} {fields[1]}".encode("ascii"))
    except (BadKeyError, ValueError, UnicodeEncodeError):
        raise ValueError(f"not a valid {fields[0]} public key") from None
    blob: bytes = key.blob()
    return blob


def fingerprint(blob: bytes) -> str:
    """
    The OpenSSH SHA256 fingerprint of a public key blob.
    """
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _hashed_match(entry: str, name: str) -> bool:
    # |1|base64(salt)|base64(HMAC-SHA1(salt, name))
    parts = entry.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt = base64.b64decode(parts[2])
        wanted = base64.b64decode(parts[3])
    except ValueError:
        return False
    digest = hmac.new(salt, name.encode("utf-8"), hashlib.sha1).digest()
    return hmac.compare_digest(digest, wanted)


def _names_match(field: str, name: str) -> bool:
    if field.startswith("|"):
        return _hashed_match(field, name)
    return name in field.split(",")


def known_host_keys(lines: Iterable[str], host: str, port: int) -> frozenset[bytes]:
    """
    The key blobs a known-hosts text accepts for C{host} on C{port}.

    Plain and hashed host names are matched exactly (C{[host]:port} when
    the port is not 22); wildcard patterns, negations and
    C{@cert-authority} lines are not honoured, and a key on a
    C{@revoked} line is never accepted, whatever host that line names.
    """
    name = _host_pattern(host, port)
    accepted: set[bytes] = set()
    revoked: set[bytes] = set()
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        marker = ""
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3:
            continue
        try:
            blob = public_key_blob(f"{fields[1]} {fields[2]}")
        except ValueError:
            continue
        if marker == "@revoked":
            revoked.add(blob)
        elif not marker and _names_match(fields[0], name):
            accepted.add(blob)
    return frozenset(accepted - revoked)


__all__ = [
    "KeyFileError",
    "fingerprint",
    "known_host_keys",
    "load_or_create_host_key",
    "load_private_key",
    "parse_private_key",
    "public_key_blob",
]
