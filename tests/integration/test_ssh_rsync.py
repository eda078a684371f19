"""
rsync over ssh through the gateway: a directory tree goes up and comes
back byte for byte, and a second run sends only what changed.

test-case-name: tests.integration.test_ssh_rsync
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.support import ssh as fixtures
from tests.support.ssh import SshGateway

ssh_servers = fixtures.ssh_servers
ssh_gateway = fixtures.ssh_gateway

pytestmark = pytest.mark.timeout(180)


def tree_digests(root: Path) -> dict[str, str]:
    """
    SHA-256 of every file under C{root}, by relative path.
    """
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def rsync(
    gateway: SshGateway, *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    client = gateway.client()
    # ssh_argv ends with "-l LOGIN HOST": rsync names the login and host.
    shell = shlex.join(client.ssh_argv("box")[:-3])
    return subprocess.run(
        ["rsync", "-a", "--stats", "-e", shell, *args],
        env={**client.env, **(env_extra or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class TestRsync:
    """
    rsync's own protocol over an exec channel, both ways.
    """

    def test_up_and_down(self, ssh_gateway: SshGateway, tmp_path: Path) -> None:
        """
        A tree with a few MiB of random data, an empty file and a nested
        folder is copied up and back; every file's SHA-256 is equal, and
        a second upload after one change transfers one file.
        """
        source, back = tmp_path / "source", tmp_path / "back"
        remote = tmp_path / "remote"
        (source / "nested" / "deeper").mkdir(parents=True)
        (source / "big.bin").write_bytes(os.urandom(3 << 20))
        (source / "nested" / "small.txt").write_text("through the gateway\n")
        (source / "nested" / "deeper" / "empty").write_bytes(b"")
        host = f"box@127.0.0.1:{remote}/"

        up = rsync(ssh_gateway, f"{source}/", host)
        down = rsync(ssh_gateway, host, f"{back}/")
        (source / "nested" / "small.txt").write_text("changed\n")
        again = rsync(ssh_gateway, f"{source}/", host)

        assert up.returncode == 0, up.stderr
        assert down.returncode == 0, down.stderr
        assert again.returncode == 0, again.stderr
        assert tree_digests(back) == tree_digests(tmp_path / "source") | {
            "nested/small.txt": hashlib.sha256(b"through the gateway\n").hexdigest()
        }
        assert tree_digests(remote) == tree_digests(source)
        assert "Number of regular files transferred: 1" in again.stdout
