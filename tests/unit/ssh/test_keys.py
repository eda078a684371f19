"""
Host keys: created once with owner-only permissions; targets' keys
pinned from known-hosts files that honour ports.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from pathlib import Path

import pytest
from twisted.conch.ssh.keys import Key

from hoopgate_plugins.ssh._keys import (
    KeyFileError,
    fingerprint,
    known_host_keys,
    load_or_create_host_key,
    load_private_key,
)


def _public_line(key: Key) -> str:
    line: str = key.public().toString("openssh").decode()
    return line


class TestHostKey:
    """
    The gateway's own host key.
    """

    def test_created_once(self, tmp_path: Path) -> None:
        """
        Absent: created (Ed25519, mode 0600, a .pub beside it); present:
        the same key is loaded.
        """
        path = tmp_path / "host_key"

        key, created = load_or_create_host_key(str(path))
        again, created_again = load_or_create_host_key(str(path))

        assert (created, created_again) == (True, False)
        assert key.type() == "Ed25519"
        assert again.public().blob() == key.public().blob()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        public = Path(f"{path}.pub").read_text()
        assert public.startswith(_public_line(key))

    def test_not_a_key(self, tmp_path: Path) -> None:
        path = tmp_path / "k"
        path.write_text("hello\n")

        with pytest.raises(KeyFileError):
            load_private_key(str(path))

    def test_public_key_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "k"
        key, _ = load_or_create_host_key(str(path) + ".k")
        path.write_text(_public_line(key) + "\n")

        with pytest.raises(KeyFileError) as caught:
            load_private_key(str(path))
        error = caught.value
        assert "public key" in str(error)

    def test_fingerprint(self) -> None:
        blob = b"\x00\x00\x00\x0bssh-ed25519" + bytes(36)
        digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")

        assert fingerprint(blob) == f"SHA256:{digest}"


class TestKnownHosts:
    """
    Pinning a target's key: ports matter, hashes work, revoked keys lose.
    """

    @pytest.fixture(autouse=True)
    def _keys(self, tmp_path: Path) -> None:
        base = tmp_path / "k"
        self.one, _ = load_or_create_host_key(str(base) + "1")
        self.two, _ = load_or_create_host_key(str(base) + "2")

    def test_port_entries(self) -> None:
        """
        C{[host]:port} names one port; a bare host name means port 22.
        """
        lines = [
            f"[127.0.0.1]:2222 {_public_line(self.one)}",
            f"127.0.0.1 {_public_line(self.two)}",
        ]

        assert known_host_keys(lines, "127.0.0.1", 2222) == {self.one.public().blob()}
        assert known_host_keys(lines, "127.0.0.1", 22) == {self.two.public().blob()}
        assert known_host_keys(lines, "127.0.0.1", 2223) == frozenset()

    def test_hashed(self) -> None:
        salt = b"0123456789abcdefghij"
        digest = hmac.new(salt, b"[box]:2200", hashlib.sha1).digest()
        name = (
            f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
        )

        found = known_host_keys([f"{name} {_public_line(self.one)}"], "box", 2200)

        assert found == {self.one.public().blob()}

    def test_revoked(self) -> None:
        lines = [
            f"box {_public_line(self.one)}",
            f"@revoked * {_public_line(self.one)}",
            "# comment",
            "box ssh-ed25519 not-base64",
        ]

        assert known_host_keys(lines, "box", 22) == frozenset()
