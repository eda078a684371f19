"""
SSH sessions end to end: the OpenSSH client through C{twistd hoopgate} to
the test sshd, every outcome compared with the same command run directly.

Covers BC18 (exit status after all output, whatever stdin and pty),
BC21 (keepalives that want a reply, from the client and from sshd),
logins (token by keyboard-interactive, refusals, C{LOGIN@TARGET}, the
1023-byte truncation hint), the environment allow-list, bounded memory
under a slow reader, and the recording of each session.

test-case-name: tests.integration.test_ssh_relay
"""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid

import pytest

from tests.support import ssh as fixtures
from tests.support.gateway import lines_of, wait_for
from tests.support.ssh import SshGateway

# The SSH fixtures, found by pytest under these names.
ssh_servers = fixtures.ssh_servers
ssh_gateway = fixtures.ssh_gateway

pytestmark = pytest.mark.timeout(180)

# (ssh flags, command, stdin): the BC18 cases.
EXIT_CASES = [
    ((), "exit 7", None),
    (("-T",), "cat; exit 3", b"hi\n"),
    (("-n",), "sleep 1; exit 5", None),
    (("-tt",), "exit 9", None),
    ((), "kill -TERM $$", None),
    ((), "echo out; echo err >&2; exit 0", None),
    (("-tt",), "seq 1 20000; exit 2", None),
]


def _both(
    gateway: SshGateway, flags: tuple[str, ...], command: str, stdin: bytes | None
) -> tuple[subprocess.CompletedProcess[bytes], subprocess.CompletedProcess[bytes]]:
    through = gateway.client().ssh("box", command, flags=flags, input=stdin)
    direct = gateway.direct().ssh("root", command, flags=flags, input=stdin)
    return through, direct


class TestExitStatus:
    """
    BC18: exit codes and output through the gateway equal direct ones.
    """

    @pytest.mark.parametrize(("flags", "command", "stdin"), EXIT_CASES)
    def test_same_as_direct(
        self,
        ssh_gateway: SshGateway,
        flags: tuple[str, ...],
        command: str,
        stdin: bytes | None,
    ) -> None:
        """
        Exit status, stdout and stderr match a direct run.
        """
        through, direct = _both(ssh_gateway, flags, command, stdin)

        assert (through.returncode, through.stdout) == (
            direct.returncode,
            direct.stdout,
        ), through.stderr
        if "-tt" not in flags:
            assert through.stderr == direct.stderr

    def test_known_codes(self, ssh_gateway: SshGateway) -> None:
        """
        The codes BC18 names, asserted as values and not only as equal.
        """
        client = ssh_gateway.client()

        assert client.ssh("box", "exit 7").returncode == 7
        cat = client.ssh("box", "cat; exit 3", flags=("-T",), input=b"hi\n")
        assert (cat.returncode, cat.stdout) == (3, b"hi\n")
        assert client.ssh("box", "exit 9", flags=("-tt",)).returncode == 9
        assert client.ssh("box", "kill -TERM $$").returncode == 255

    def test_output_bytes_equal(self, ssh_gateway: SshGateway) -> None:
        """
        C{seq 1 200000}: every byte arrives, the same as directly.
        """
        through, direct = _both(ssh_gateway, (), "seq 1 200000", None)
        expected = "".join(f"{i}\n" for i in range(1, 200001)).encode()

        assert through.returncode == 0, through.stderr
        assert hashlib.sha256(through.stdout).hexdigest() == (
            hashlib.sha256(direct.stdout).hexdigest()
        )
        assert through.stdout == expected

    def test_large_upload_through_stdin(self, ssh_gateway: SshGateway) -> None:
        """
        8 MiB to the target's stdin arrive whole (client-to-target windows).
        """
        data = bytes(range(256)) * (32 * 1024)

        result = ssh_gateway.client().ssh("box", "sha256sum", input=data)

        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()

    def test_recorded(self, ssh_gateway: SshGateway) -> None:
        """
        The recording holds the session, the command and its exit status
        under the caller's identity.
        """
        gateway = ssh_gateway.gateway
        mark = gateway.recording_mark()
        token = gateway.token()

        assert ssh_gateway.client(token).ssh("box", "exit 4").returncode == 4

        session = gateway.session_of(token)
        wait_for(
            lambda: lines_of(gateway.recording_lines(session), "session.closed"),
            10,
            "session.closed",
        )
        lines = [
            line for line in gateway.lines_since(mark) if line["session_id"] == session
        ]
        opened = lines_of(lines, "session.opened")[0]
        command = lines_of(lines, "command")[0]
        exit_line = lines_of(lines, "ssh.exit")[0]
        assert (opened["target"], opened["upstream_user"]) == ("box", "root")
        assert (command["command"], command["verdict"]) == ("exit 4", "allow")
        assert exit_line["status"] == 4
        assert exit_line["command_id"] == command["command_id"]
        after = lines[lines.index(opened) :]
        assert {line["subject"] for line in after} == {"ci-runner"}


class TestLogin:
    """
    Logins: the token is the only credential, refusals are SSH's own.
    """

    def test_login_at_target(self, ssh_gateway: SshGateway) -> None:
        """
        C{root@box} asks for an account the rule allows.
        """
        result = ssh_gateway.client().ssh("root@box", "id -un")

        assert (result.returncode, result.stdout) == (0, b"root\n")

    @pytest.mark.parametrize(
        ("login", "token"),
        [
            ("box", "not-a-token"),
            ("nobody@box", None),
            ("nobox", None),
            ("box", "expired"),
        ],
    )
    def test_refused(
        self, ssh_gateway: SshGateway, login: str, token: str | None
    ) -> None:
        """
        A bad token, a login the rule does not allow, an unknown target
        and an expired token all get "Permission denied".
        """
        if token == "expired":
            token = ssh_gateway.gateway.token(ttl=-60)

        result = ssh_gateway.client(token).ssh(login, "true")

        assert result.returncode == 255
        assert b"Permission denied" in result.stderr

    def test_truncated_token_hint(self, ssh_gateway: SshGateway) -> None:
        """
        A failed password of exactly 1023 bytes is logged as a probable
        truncation by the OpenSSH client, naming C{hoopgate ssh-cert}.
        """
        gateway = ssh_gateway.gateway

        result = ssh_gateway.client("x" * 1023).ssh("box", "true")

        assert result.returncode == 255
        wait_for(lambda: gateway.files_containing("probably truncated"), 10, "the hint")
        log = gateway.log_path.read_text(encoding="utf-8")
        assert "hoopgate ssh-cert" in log
        assert "x" * 1023 not in log

    def test_token_not_logged(self, ssh_gateway: SshGateway) -> None:
        """
        No token reaches the log or the recordings.
        """
        token = ssh_gateway.gateway.token()

        assert ssh_gateway.client(token).ssh("box", "true").returncode == 0
        assert ssh_gateway.gateway.files_containing(token) == []


class TestEnvironment:
    """
    C{env} requests pass only for names the target allows.
    """

    def test_allow_list(self, ssh_gateway: SshGateway) -> None:
        """
        C{HG_TEST_OK_1} passes; C{HG_TEST_NO} (which sshd would accept)
        is dropped by the gateway.
        """
        client = ssh_gateway.client()
        client.env.update(HG_TEST_OK_1="yes", HG_TEST_NO="leak")
        flags = ("-o", "SendEnv=HG_TEST_OK_1 HG_TEST_NO")

        result = client.ssh(
            "box", 'echo "${HG_TEST_OK_1:-unset} ${HG_TEST_NO:-unset}"', flags=flags
        )

        assert (result.returncode, result.stdout) == (0, b"yes unset\n")


class TestKeepalive:
    """
    BC21: requests that want a reply are answered on both legs.
    """

    def test_client_keepalive(self, ssh_gateway: SshGateway) -> None:
        """
        C{ServerAliveInterval 1}, count 2: idle past both, still alive.
        """
        flags = ("-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2")

        result = ssh_gateway.client().ssh("box", "sleep 6; echo done", flags=flags)

        assert (result.returncode, result.stdout) == (0, b"done\n"), result.stderr

    def test_target_keepalive(self, ssh_gateway: SshGateway) -> None:
        """
        sshd at C{ClientAliveInterval 1}, count 2 toward the gateway: the
        gateway answers, so the session lives past both.
        """
        result = ssh_gateway.client().ssh("box_keepalive", "sleep 6; echo done")

        assert (result.returncode, result.stdout) == (0, b"done\n"), result.stderr


class TestFlowControl:
    """
    A slow reader makes the gateway hold at most a window per direction.
    """

    def test_slow_reader_bounded(self, ssh_gateway: SshGateway) -> None:
        """
        200 MiB toward a client that stops reading: the gateway's memory
        stays within a few windows; once read, every byte arrives.
        """
        gateway = ssh_gateway.gateway
        size = 200 * 1024 * 1024
        before = gateway.rss_kib()
        client = ssh_gateway.client()
        process = client.popen(
            "box",
            f"head -c {size} /dev/zero",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            first = process.stdout.read(1024 * 1024)
            # The client stops reading: its pipe, its window and the
            # gateway's buffers fill, then everything waits.
            time.sleep(3)
            during = gateway.rss_kib()
            total = len(first)
            while chunk := process.stdout.read(1024 * 1024):
                total += len(chunk)
            assert process.wait(60) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()

        assert total == size
        assert during - before < 48 * 1024, f"RSS grew {during - before} KiB"


class TestTargetFailures:
    """
    The gateway fails closed toward targets it cannot trust or reach.
    """

    def test_unreachable(self, ssh_gateway: SshGateway) -> None:
        """
        Nothing listens: the client is told the target cannot be reached.
        """
        result = ssh_gateway.client().ssh("box_down", "true")

        assert result.returncode == 255
        assert b"could not reach the target" in result.stderr

    def test_host_key_mismatch(self, ssh_gateway: SshGateway) -> None:
        """
        A target presenting another host key than the pinned one is never
        logged in to; the log names the key it presented.
        """
        gateway = ssh_gateway.gateway

        result = ssh_gateway.client().ssh("box_wrong_key", "echo reached")

        assert result.returncode == 255
        assert b"reached" not in result.stdout
        assert b"host key is not the expected one" in result.stderr
        wait_for(
            lambda: gateway.files_containing("is not one pinned for the target"),
            10,
            "the host key mismatch in the log",
        )

    def test_token_expiry_ends_session(self, ssh_gateway: SshGateway) -> None:
        """
        A session whose token expires is ended with a message saying so
        (at exp plus the 30 s leeway, so long before the command ends).
        """
        token = ssh_gateway.gateway.token(ttl=3)

        result = ssh_gateway.client(token).ssh("box", "sleep 60; echo late")

        assert result.returncode == 255
        assert b"late" not in result.stdout
        assert b"token expired" in result.stderr


class TestGuardrails:
    """
    Commands pass the chain before the target sees them.
    """

    def test_denied_command(self, ssh_gateway: SshGateway) -> None:
        """
        A command a guardrail refuses never runs: the client sees the
        reason on stderr and exit status 1; the recording has the deny.
        """
        gateway = ssh_gateway.gateway
        marker = f"/tmp/hg-denied-{uuid.uuid4().hex}"
        token = gateway.token()

        result = ssh_gateway.client(token).ssh("box", f"touch {marker}")

        assert result.returncode == 1
        assert b"hoopgate: command blocked by policy" in result.stderr
        assert b"ssh-no-marker" in result.stderr
        exists = ssh_gateway.direct().ssh("root", f"test -e {marker}")
        assert exists.returncode == 1
        session = gateway.session_of(token)
        commands = wait_for(
            lambda: lines_of(gateway.recording_lines(session), "command"),
            10,
            "the command line",
        )
        assert [(c["command"], c["verdict"]) for c in commands] == [
            (f"touch {marker}", "deny")
        ]

    def test_other_command_allowed(self, ssh_gateway: SshGateway) -> None:
        """
        The same guardrail lets other commands through.
        """
        result = ssh_gateway.client().ssh("box", "echo /tmp/hg-denied-x")

        assert (result.returncode, result.stdout) == (0, b"/tmp/hg-denied-x\n")
