"""
Other SSH clients than OpenSSH: paramiko sends the token whole as a
password, so tokens longer than the OpenSSH client's 1023-byte limit
work.

test-case-name: tests.integration.test_ssh_clients
"""

from __future__ import annotations

from collections.abc import Iterator

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
