"""
Local forwarding through the gateway: C{ssh -L} and C{ssh -W} open
C{direct-tcpip} channels that the target connects, never the gateway.

Covers BC22 (a forward to a real service works both ways, a server that
speaks first is heard, half-close passes, the recording names host and
port) and the refusals ("administratively prohibited") of destinations
the target's C{forward_to} does not list.

test-case-name: tests.integration.test_ssh_forward
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.support import ssh as fixtures
from tests.support.gateway import free_ports, lines_of, wait_for
from tests.support.ssh import SshGateway

ssh_servers = fixtures.ssh_servers
ssh_gateway = fixtures.ssh_gateway

pytestmark = pytest.mark.timeout(120)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_forward(ssh_gateway: SshGateway) -> Iterator[tuple[int, str]]:
    """
    C{ssh -N -L PORT:127.0.0.1:PG_PORT box} running; yields the local
    port and the token it logged in with.
    """
    (port,) = free_ports(1)
    token = ssh_gateway.gateway.token()
    destination = f"{port}:127.0.0.1:{ssh_gateway.servers['PG_PORT']}"
    process = ssh_gateway.client(token).popen(
        "box",
        flags=("-N", "-L", destination, "-o", "ExitOnForwardFailure=yes"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: process.poll() is not None or _listening(port),
            20,
            "the forward's local port",
        )
        assert process.poll() is None, process.stderr and process.stderr.read()
        yield port, token
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()


def _psql(
    ssh_gateway: SshGateway, port: int, sql: str
) -> subprocess.CompletedProcess[str]:
    servers = ssh_gateway.servers
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = servers["APP_PASSWORD"]
    conninfo = (
        f"host=localhost hostaddr=127.0.0.1 port={port} user=app "
        f"dbname={servers['PG_DATABASE']} sslmode=verify-full "
        f"sslrootcert={servers['TLS_CERT']} connect_timeout=10"
    )
    return subprocess.run(
        ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestLocalForward:
    """
    BC22: forwards reach services from the target's side.
    """

    def test_psql_through_forward(
        self, ssh_gateway: SshGateway, pg_forward: tuple[int, str]
    ) -> None:
        """
        psql through C{ssh -L} (TLS inside the tunnel) reads what a direct
        connection reads.
        """
        port, _ = pg_forward
        sql = "select count(*), sum(id) from customers"

        through = _psql(ssh_gateway, port, sql)
        direct = _psql(ssh_gateway, int(ssh_gateway.servers["PG_PORT"]), sql)

        assert through.returncode == 0, through.stderr
        assert through.stdout == direct.stdout
        assert through.stdout.strip().split("|")[0] != "0"

    def test_forward_recorded(
        self, ssh_gateway: SshGateway, pg_forward: tuple[int, str]
    ) -> None:
        """
        The forward is recorded with host and port when asked for, and
        with the bytes each way when it closes.
        """
        port, token = pg_forward
        gateway = ssh_gateway.gateway
        pg_port = int(ssh_gateway.servers["PG_PORT"])

        assert _psql(ssh_gateway, port, "select 1").stdout.strip() == "1"

        session = gateway.session_of(token)

        def busy_closed() -> list[dict[str, object]]:
            closed = lines_of(gateway.recording_lines(session), "ssh.forward.closed")
            return closed if any(c["bytes_from_target"] for c in closed) else []

        closed = wait_for(busy_closed, 10, "the psql forward's ssh.forward.closed")
        # The fixture's readiness probe was a forward too (no bytes).
        requested = lines_of(gateway.recording_lines(session), "forward.requested")
        assert {(r["host"], r["port"], r["verdict"]) for r in requested} == {
            ("127.0.0.1", pg_port, "allow")
        }
        ids = {r["forward_id"] for r in requested}
        busy = [c for c in closed if c["bytes_to_target"] and c["bytes_from_target"]]
        assert busy, closed
        assert {c["forward_id"] for c in closed} <= ids
        assert {c["status"] for c in closed} == {"closed"}

    def test_server_speaks_first(self, ssh_gateway: SshGateway) -> None:
        """
        C{ssh -W} to the sshd itself: its greeting arrives although the
        client sends nothing, and the client's EOF (half-close) ends it.
        """
        destination = f"127.0.0.1:{ssh_gateway.servers['SSH_PORT']}"

        result = ssh_gateway.client().ssh("box", flags=("-W", destination), input=b"")

        assert result.stdout.startswith(b"SSH-2.0-OpenSSH"), result.stderr

    def test_refused_destination(self, ssh_gateway: SshGateway) -> None:
        """
        A destination outside C{forward_to} (the gateway's own admin
        listener) is refused as "administratively prohibited" and the
        refusal is recorded.
        """
        gateway = ssh_gateway.gateway
        token = gateway.token()
        destination = f"127.0.0.1:{gateway.ports.admin}"

        result = ssh_gateway.client(token).ssh(
            "box",
            flags=("-W", destination, "-o", "LogLevel=INFO"),
            input=b"GET /healthz HTTP/1.0\r\n\r\n",
        )

        assert result.returncode == 255
        assert b"administratively prohibited" in result.stderr
        assert b"200" not in result.stdout
        session = gateway.session_of(token)
        notices = wait_for(
            lambda: [
                n
                for n in lines_of(gateway.recording_lines(session), "notice")
                if n["kind"] == "forward.refused"
            ],
            10,
            "the forward.refused notice",
        )
        assert notices[0]["detail"] == destination

    def test_destination_refused_by_policy(self, ssh_gateway: SshGateway) -> None:
        """
        A destination C{forward_to} lists but guardrail
        C{ssh-no-second-loopback} refuses is "administratively
        prohibited"; the decided request is recorded with its rule.
        """
        gateway = ssh_gateway.gateway
        token = gateway.token()
        port = int(ssh_gateway.servers["SSH_PORT"])

        result = ssh_gateway.client(token).ssh(
            "box", flags=("-W", f"127.0.0.2:{port}", "-o", "LogLevel=INFO")
        )

        assert result.returncode == 255
        assert b"administratively prohibited" in result.stderr
        assert not result.stdout.startswith(b"SSH-2.0")
        session = gateway.session_of(token)
        requested = wait_for(
            lambda: lines_of(gateway.recording_lines(session), "forward.requested"),
            10,
            "the forward.requested line",
        )
        assert [(r["host"], r["port"], r["verdict"]) for r in requested] == [
            ("127.0.0.2", port, "deny")
        ]

    def test_remote_forward_refused(self, ssh_gateway: SshGateway) -> None:
        """
        C{ssh -R} is refused: with C{ExitOnForwardFailure} the client
        gives up.
        """
        (port,) = free_ports(1)

        result = ssh_gateway.client().ssh(
            "box",
            "true",
            flags=("-R", f"{port}:127.0.0.1:9", "-o", "ExitOnForwardFailure=yes"),
        )

        assert result.returncode == 255
        assert b"remote port forwarding failed" in result.stderr
