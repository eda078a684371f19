"""
Other SSH clients than the OpenSSH command line: paramiko and asyncssh
send the token whole as a password, so tokens longer than the OpenSSH
client's 1023-byte limit work; git pushes and clones over ssh.

test-case-name: tests.integration.test_ssh_clients
"""

from __future__ import annotations

import asyncio
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import paramiko
import pytest

from tests.support import ssh as fixtures
from tests.support.ssh import SshGateway

ssh_servers = fixtures.ssh_servers
ssh_gateway = fixtures.ssh_gateway

pytestmark = pytest.mark.timeout(120)


def _client(gateway: SshGateway) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(gateway.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


@pytest.fixture
def long_token(ssh_gateway: SshGateway) -> str:
    """
    A token of more than 2 KB (many groups), as real IdPs issue.
    """
    groups = ",".join(f"team-{i:03d}-platform-operators" for i in range(80))
    token = ssh_gateway.gateway.token(groups=groups)
    assert len(token) > 2048
    return token


@pytest.fixture
def connected(ssh_gateway: SshGateway, long_token: str) -> Iterator[paramiko.SSHClient]:
    client = _client(ssh_gateway)
    client.connect(
        "127.0.0.1",
        port=ssh_gateway.port,
        username="box",
        password=long_token,
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
    try:
        yield client
    finally:
        client.close()


class TestParamiko:
    """
    paramiko, token as password.
    """

    def test_long_token_exec(self, connected: paramiko.SSHClient) -> None:
        """
        A 2 KB token logs in by password; exec output and status arrive.
        """
        _, stdout, stderr = connected.exec_command("echo through; exit 6", timeout=30)

        assert stdout.read() == b"through\n"
        assert stdout.channel.recv_exit_status() == 6
        assert stderr.read() == b""

    def test_sftp(self, connected: paramiko.SSHClient) -> None:
        """
        paramiko's SFTP client over the relayed subsystem.
        """
        data = bytes(range(256)) * 4096
        sftp = connected.open_sftp()
        try:
            with sftp.open("/tmp/hoopgate-paramiko.bin", "wb") as handle:
                handle.write(data)
            with sftp.open("/tmp/hoopgate-paramiko.bin", "rb") as handle:
                back = handle.read()
            sftp.remove("/tmp/hoopgate-paramiko.bin")
        finally:
            sftp.close()

        assert back == data

    def test_wrong_password(self, ssh_gateway: SshGateway) -> None:
        """
        A bad token is an authentication failure.
        """
        client = _client(ssh_gateway)
        try:
            with pytest.raises(paramiko.AuthenticationException):
                client.connect(
                    "127.0.0.1",
                    port=ssh_gateway.port,
                    username="box",
                    password="x" * 3000,
                    allow_agent=False,
                    look_for_keys=False,
                    timeout=10,
                )
        finally:
            client.close()


def _asyncssh(gateway: SshGateway, token: str) -> Any:
    """
    An asyncssh connection to the gateway with C{token} as password,
    checking the gateway's host key.
    """
    return asyncssh.connect(
        "127.0.0.1",
        port=gateway.port,
        username="box",
        password=token,
        known_hosts=str(gateway.known_hosts),
        client_keys=None,
        agent_path=None,
        preferred_auth="password",
        connect_timeout=10,
    )


async def _asyncssh_run(
    gateway: SshGateway, token: str, command: str
) -> asyncssh.SSHCompletedProcess:
    async with _asyncssh(gateway, token) as connection:
        return await asyncio.wait_for(connection.run(command), 60)


class TestAsyncSSH:
    """
    asyncssh, token as password.
    """

    def test_long_token_exec(self, ssh_gateway: SshGateway, long_token: str) -> None:
        """
        A token over 2 KB logs in whole; exit status and both streams
        arrive as the target sent them.
        """
        done = asyncio.run(
            _asyncssh_run(ssh_gateway, long_token, "echo out; echo err >&2; exit 4")
        )

        assert (done.exit_status, done.stdout, done.stderr) == (4, "out\n", "err\n")
        session_id = ssh_gateway.gateway.session_of(long_token)
        opened = ssh_gateway.gateway.wait_event(session_id, "session.opened")
        assert opened["identity"]["subject"] == "ci-runner"

    def test_sftp_round_trip(self, ssh_gateway: SshGateway, long_token: str) -> None:
        data = bytes(range(256)) * 2048

        async def transfer() -> bytes:
            path = "/tmp/hoopgate-asyncssh.bin"
            async with (
                _asyncssh(ssh_gateway, long_token) as connection,
                connection.start_sftp_client() as sftp,
            ):
                async with sftp.open(path, "wb") as handle:
                    await handle.write(data)
                async with sftp.open(path, "rb") as handle:
                    back: bytes = await handle.read()
                await sftp.remove(path)
                return back

        assert asyncio.run(asyncio.wait_for(transfer(), 60)) == data

    def test_bad_token(self, ssh_gateway: SshGateway) -> None:
        with pytest.raises(asyncssh.PermissionDenied):
            asyncio.run(_asyncssh_run(ssh_gateway, "x" * 3000, "true"))


def _git(
    *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestGit:
    """
    git over ssh: push and clone through the gateway (exec of
    git-receive-pack and git-upload-pack).
    """

    def test_push_and_clone(self, ssh_gateway: SshGateway, tmp_path: Path) -> None:
        """
        A commit pushed through the gateway comes back through it whole.
        """
        bare = tmp_path / "remote.git"
        work, clone = tmp_path / "work", tmp_path / "clone"
        client = ssh_gateway.client()
        env = {
            **client.env,
            "GIT_SSH_COMMAND": shlex.join(client.ssh_argv("box")[:-3]),
            "GIT_AUTHOR_NAME": "ci",
            "GIT_AUTHOR_EMAIL": "ci@example.org",
            "GIT_COMMITTER_NAME": "ci",
            "GIT_COMMITTER_EMAIL": "ci@example.org",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
        }
        url = f"ssh://box@127.0.0.1:{ssh_gateway.port}{bare}"
        assert (
            _git("init", "-q", "--bare", str(bare), cwd=tmp_path, env=env).returncode
            == 0
        )
        work.mkdir()
        (work / "data.bin").write_bytes(bytes(range(256)) * 1024)
        for step in (
            ("init", "-q", "-b", "main"),
            ("add", "data.bin"),
            ("commit", "-q", "-m", "through the gateway"),
        ):
            assert _git(*step, cwd=work, env=env).returncode == 0

        pushed = _git("push", "-q", url, "main", cwd=work, env=env)
        cloned = _git(
            "clone", "-q", "-b", "main", url, str(clone), cwd=tmp_path, env=env
        )

        assert pushed.returncode == 0, pushed.stderr
        assert cloned.returncode == 0, cloned.stderr
        assert (clone / "data.bin").read_bytes() == (work / "data.bin").read_bytes()
        head = _git("rev-parse", "HEAD", cwd=work, env=env).stdout
        assert _git("rev-parse", "HEAD", cwd=clone, env=env).stdout == head
