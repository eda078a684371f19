"""
File transfers through the gateway: scp (SFTP and the old protocol) and
sftp batch mode, checked by SHA-256 against the files the target holds.

Covers BC19 (a successful copy exits 0, a failing one does not, and the
recording lists the file).

test-case-name: tests.integration.test_ssh_sftp
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ssh as fixtures
from tests.support.gateway import lines_of, wait_for
from tests.support.ssh import SshGateway

ssh_servers = fixtures.ssh_servers
ssh_gateway = fixtures.ssh_gateway

pytestmark = pytest.mark.timeout(180)

SIZE = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """
    A file of random bytes and its SHA-256.
    """
    path = tmp_path_factory.mktemp("sftp") / "payload.bin"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture
def remote_dir(ssh_gateway: SshGateway) -> Iterator[str]:
    """
    A fresh directory on the target, made and removed directly.
    """
    made = ssh_gateway.direct().ssh("root", "mktemp -d /tmp/hg-sftp.XXXXXX")
    assert made.returncode == 0, made.stderr
    path = made.stdout.decode().strip()
    try:
        yield path
    finally:
        ssh_gateway.direct().ssh("root", f"rm -rf '{path}'")


def _remote_sha(gateway: SshGateway, path: str) -> str:
    result = gateway.direct().ssh("root", f"sha256sum '{path}'")
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[0].decode()


class TestTransfers:
    """
    BC19: transfers exit 0 and the bytes arrive unchanged.
    """

    def test_scp_sftp_mode(
        self, ssh_gateway: SshGateway, payload: tuple[Path, str], remote_dir: str
    ) -> None:
        """
        C{scp} (SFTP by default in OpenSSH 9) up and back down.
        """
        local, digest = payload
        client = ssh_gateway.client()

        up = client.scp("box", str(local), f"REMOTE:{remote_dir}/f")
        back = local.parent / "back-sftp.bin"
        down = client.scp("box", f"REMOTE:{remote_dir}/f", str(back))

        assert up.returncode == 0, up.stderr
        assert _remote_sha(ssh_gateway, f"{remote_dir}/f") == digest
        assert down.returncode == 0, down.stderr
        assert hashlib.sha256(back.read_bytes()).hexdigest() == digest

    def test_scp_legacy(
        self, ssh_gateway: SshGateway, payload: tuple[Path, str], remote_dir: str
    ) -> None:
        """
        C{scp -O}: the old protocol over an exec channel.
        """
        local, digest = payload

        result = ssh_gateway.client().scp(
            "box", "-O", str(local), f"REMOTE:{remote_dir}/f2"
        )

        assert result.returncode == 0, result.stderr
        assert _remote_sha(ssh_gateway, f"{remote_dir}/f2") == digest

    def test_sftp_batch(
        self, ssh_gateway: SshGateway, payload: tuple[Path, str], remote_dir: str
    ) -> None:
        """
        C{sftp -b -}: put, rename, list; exit 0; the file is whole.
        """
        local, digest = payload
        batch = f"put {local} {remote_dir}/g\nrename {remote_dir}/g {remote_dir}/h\n"
        batch += f"ls {remote_dir}\n"

        result = ssh_gateway.client().sftp_batch("box", batch)

        assert result.returncode == 0, result.stderr
        assert f"{remote_dir}/h".encode() in result.stdout
        assert _remote_sha(ssh_gateway, f"{remote_dir}/h") == digest

    def test_failing_copy(
        self, ssh_gateway: SshGateway, payload: tuple[Path, str]
    ) -> None:
        """
        A copy into a missing directory exits non-zero with the server's
        error, as it does directly.
        """
        local, _ = payload
        target = "REMOTE:/nonexistent-hoopgate/x/"

        through = ssh_gateway.client().scp("box", str(local), target)

        assert through.returncode != 0
        assert b"No such file or directory" in through.stderr


class TestRecording:
    """
    The recording lists each file and operation.
    """

    def test_upload_recorded(
        self, ssh_gateway: SshGateway, payload: tuple[Path, str], remote_dir: str
    ) -> None:
        """
        An upload is one C{ssh.sftp} line: the path, written mode, every
        byte counted; a rename is its own line.
        """
        local, _ = payload
        gateway = ssh_gateway.gateway
        token = gateway.token()
        batch = f"put {local} {remote_dir}/r\nrename {remote_dir}/r {remote_dir}/s\n"

        result = ssh_gateway.client(token).sftp_batch("box", batch)

        assert result.returncode == 0, result.stderr
        session = gateway.session_of(token)
        wait_for(
            lambda: lines_of(gateway.recording_lines(session), "session.closed"),
            10,
            "session.closed",
        )
        lines = gateway.recording_lines(session)
        subsystem = lines_of(lines, "ssh.subsystem")[0]
        operations = lines_of(lines, "ssh.sftp")
        opened = [o for o in operations if o["operation"] == "open"]
        renamed = [o for o in operations if o["operation"] == "rename"]
        assert subsystem["subsystem"] == "sftp"
        assert [(o["path"], o["bytes_written"], o["status"]) for o in opened] == [
            (f"{remote_dir}/r", SIZE, "ok")
        ]
        assert "w" in opened[0]["mode"]
        assert [(o["path"], o["target_path"]) for o in renamed] == [
            (f"{remote_dir}/r", f"{remote_dir}/s")
        ]
        exits = lines_of(lines, "ssh.exit")
        assert [e["command_id"] for e in exits] == [subsystem["command_id"]]

    def test_failed_open_recorded(
        self, ssh_gateway: SshGateway, payload: tuple[Path, str]
    ) -> None:
        """
        A refused open is recorded with the target's status.
        """
        local, _ = payload
        gateway = ssh_gateway.gateway
        token = gateway.token()

        result = ssh_gateway.client(token).sftp_batch(
            "box", f"put {local} /nonexistent-hoopgate/y\n"
        )

        assert result.returncode != 0
        session = gateway.session_of(token)
        wait_for(
            lambda: lines_of(gateway.recording_lines(session), "session.closed"),
            10,
            "session.closed",
        )
        operations = lines_of(gateway.recording_lines(session), "ssh.sftp")
        assert [(o["path"], o["status"]) for o in operations] == [
            ("/nonexistent-hoopgate/y", "no_such_file")
        ]


class TestFileGuardrails:
    """
    Guardrail C{ssh-guarded-files} refuses writes, removes and renames
    under C{guarded/}, one SFTP request at a time.
    """

    @pytest.fixture
    def guarded(self, ssh_gateway: SshGateway, remote_dir: str) -> str:
        """
        A file under C{guarded/}, made directly; its SHA-256 is of b"keep".
        """
        path = f"{remote_dir}/guarded/kept"
        made = ssh_gateway.direct().ssh(
            "root", f"mkdir '{remote_dir}/guarded' && printf keep > '{path}'"
        )
        assert made.returncode == 0, made.stderr
        return path

    def test_remove_refused(self, ssh_gateway: SshGateway, guarded: str) -> None:
        """
        C{rm} of a guarded file fails with permission denied; the file
        is still there, unchanged; the refusal is recorded with its rule.
        """
        gateway = ssh_gateway.gateway
        token = gateway.token()

        result = ssh_gateway.client(token).sftp_batch("box", f"rm {guarded}\n")

        assert result.returncode != 0
        assert b"Permission denied" in result.stderr, result.stderr
        assert _remote_sha(ssh_gateway, guarded) == hashlib.sha256(b"keep").hexdigest()
        session = gateway.session_of(token)
        refused = wait_for(
            lambda: [
                r
                for r in lines_of(gateway.recording_lines(session), "file.requested")
                if r["verdict"] != "allow"
            ],
            10,
            "the refused file.requested line",
        )
        assert [(r["operations"], r["path"]) for r in refused] == [
            (["remove"], guarded)
        ]

    def test_write_refused_session_goes_on(
        self,
        ssh_gateway: SshGateway,
        payload: tuple[Path, str],
        guarded: str,
        remote_dir: str,
    ) -> None:
        """
        C{put} over a guarded file fails and leaves it untouched; with
        C{-} in front the batch goes on, and an upload outside
        C{guarded/} in the same session arrives whole.
        """
        local, digest = payload
        batch = f"-put {local} {guarded}\nput {local} {remote_dir}/free\n"

        result = ssh_gateway.client().sftp_batch("box", batch)

        assert result.returncode == 0, result.stderr
        assert b"Permission denied" in result.stderr, result.stderr
        assert _remote_sha(ssh_gateway, guarded) == hashlib.sha256(b"keep").hexdigest()
        assert _remote_sha(ssh_gateway, f"{remote_dir}/free") == digest

    def test_read_allowed(
        self, ssh_gateway: SshGateway, guarded: str, tmp_path: Path
    ) -> None:
        """
        Reading a guarded file is not refused: the rule lists writes only.
        """
        back = tmp_path / "kept"

        result = ssh_gateway.client().sftp_batch("box", f"get {guarded} {back}\n")

        assert result.returncode == 0, result.stderr
        assert back.read_bytes() == b"keep"
