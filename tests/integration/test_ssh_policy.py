"""
SSH policy end to end, against the test sshd with real clients: typed
input in terminal recordings (C{policy.recording}), and file guardrails
that symbolic links, hard links and open handles cannot walk past.

The gateway is the one of L{tests.support.ssh} with three more policy
entries: guardrail C{ssh-secret-files} refuses every operation under
C{/tmp/hg-sftp.*/secret/}, guardrail C{ssh-no-chmod} refuses setstat
under C{/tmp/hg-sftp.*/open/}, and recording rule C{ssh-keys} records
what C{ci-runner} types into terminals on C{box} (not on
C{box_keepalive}).

test-case-name: tests.integration.test_ssh_policy
"""

from __future__ import annotations

import errno
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from tests.support import ssh as fixtures
from tests.support.gateway import (
    START_TIMEOUT,
    TARGETS,
    free_ports,
    lines_of,
    start_gateway,
    wait_for,
)
from tests.support.servers import SERVER_VARS, SSH_SERVER_VARS, require_env
from tests.support.ssh import SshGateway

pytestmark = pytest.mark.timeout(180)

CARD = "4111111111111111"
EMAIL = "ada.lovelace@example.org"
SECRET = "hunter2-typed-secret"

EXTRA_POLICY = """\
    - name: ssh-secret-files
      subjects: ["*"]
      targets: [box]
      deny:
        file_paths: ["/tmp/hg-sftp.*/secret/**"]
    - name: ssh-no-chmod
      subjects: ["*"]
      targets: [box]
      deny:
        file_paths: ["/tmp/hg-sftp.*/open/**"]
        file_operations: [setstat]
  recording:
    - name: ssh-keys
      subjects: [ci-runner]
      targets: [box]
      keyboard_input: true
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshGateway]:
    """
    The SSH gateway of L{tests.support.ssh} with L{EXTRA_POLICY}.
    """
    servers = require_env(SSH_SERVER_VARS, "test sshd")
    servers = {**require_env(SERVER_VARS, "test servers"), **servers}
    directory = tmp_path_factory.mktemp("sshpolicy")
    (port,) = free_ports(1)
    parts = fixtures._ssh_yaml(servers, port, directory / "ssh_host_ed25519")
    parts["rule"] += EXTRA_POLICY
    running = start_gateway(
        servers,
        directory,
        ci_targets=tuple(TARGETS),
        edit=lambda text: fixtures._add_ssh(text, parts),
        timeout=START_TIMEOUT,
    )
    try:
        wait_for(lambda: fixtures._accepts(port), START_TIMEOUT, "the SSH listener")
        yield SshGateway(running, servers, port)
    finally:
        running.stop()


def _connect(gateway: SshGateway, token: str, login: str = "box") -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(gateway.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=gateway.port,
        username=login,
        password=token,
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
    return client


def _recorded_files(gateway: SshGateway, needle: str) -> list[Path]:
    """
    Every file of the recordings folder (JSON lines and casts) and
    every log holding C{needle}.
    """
    running = gateway.gateway
    paths = [*running.recordings.iterdir(), *running.log_files(), running.output_path]
    data = needle.encode()
    return [p for p in paths if p.is_file() and data in p.read_bytes()]


# -- terminals ------------------------------------------------------------------


class Terminal:
    """
    A paramiko shell on a pty through the gateway, typed into a key
    (an SSH packet) at a time.
    """

    def __init__(self, gateway: SshGateway, login: str = "box") -> None:
        self.gateway = gateway
        self.token = gateway.gateway.token()
        self.client = _connect(gateway, self.token, login)
        self.channel = self.client.invoke_shell(term="xterm", width=100, height=30)
        self.output = b""

    def read_until(self, marker: bytes, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {marker!r} in {self.output[-300:]!r}")
            if self.channel.recv_ready():
                self.output += self.channel.recv(65536)
            else:
                time.sleep(0.02)

    def ends_with(self, marker: bytes, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.output.endswith(marker):
            if time.monotonic() > deadline:
                raise AssertionError(f"output does not end {marker!r}")
            if self.channel.recv_ready():
                self.output += self.channel.recv(65536)
            else:
                time.sleep(0.02)

    def type(self, text: str) -> None:
        for char in text:
            self.channel.sendall(char.encode())

    def finish(self) -> list[Any]:
        """
        Exit the shell; the cast's events once the session is closed.
        """
        self.type("exit\r")
        self.channel.recv_exit_status()
        self.client.close()
        running = self.gateway.gateway
        session = running.session_of(self.token)
        wait_for(
            lambda: lines_of(running.recording_lines(session), "session.closed"),
            15,
            "session.closed",
        )
        [cast] = running.recordings.glob(f"{session}.*.cast")
        lines = [json.loads(line) for line in cast.read_text().splitlines()]
        assert lines[0]["version"] == 2
        return lines[1:]


def _typed(events: list[Any]) -> str:
    return "".join(e[2] for e in events if e[1] == "i")


class TestKeyboardInput:
    """
    Typed input is recorded, masked, only where C{policy.recording}
    says so, and never after a password prompt.
    """

    def test_typed_commands_masked(self, gateway: SshGateway) -> None:
        """
        A card number and an e-mail typed key by key are recorded as
        "i" events, masked; neither value is in any recording file.
        """
        terminal = Terminal(gateway)
        terminal.read_until(b"#")

        terminal.type(f"echo {CARD} {EMAIL}; echo done-$((40+2))\r")
        terminal.read_until(b"done-42")
        events = terminal.finish()

        typed = _typed(events)
        assert "echo [masked] [masked]; echo done-$((40+2))\r" in typed
        assert "exit\r" in typed
        assert [e for e in events if e[1] == "i"]
        assert "done-42" in "".join(e[2] for e in events if e[1] == "o")
        assert _recorded_files(gateway, CARD) == []
        assert _recorded_files(gateway, EMAIL) == []
        assert _recorded_files(gateway, CARD[:8]) == []

    def test_password_not_recorded(self, gateway: SshGateway) -> None:
        """
        What is typed after a "Password:" prompt (echo off, as C{read
        -s} sets it) is not recorded; the command before it and the one
        after it are.
        """
        terminal = Terminal(gateway)
        terminal.read_until(b"#")

        terminal.type("read -s -p 'Password: ' pw; echo len=${#pw}\r")
        terminal.ends_with(b"Password: ")
        terminal.type(SECRET + "\r")
        terminal.read_until(f"len={len(SECRET)}".encode())
        terminal.type("echo after-$((2+3))\r")
        terminal.read_until(b"after-5")
        events = terminal.finish()

        typed = _typed(events)
        assert "read -s -p 'Password: ' pw; echo len=${#pw}\r" in typed
        assert "echo after-$((2+3))\r" in typed
        assert SECRET not in typed
        assert _recorded_files(gateway, SECRET) == []
        assert _recorded_files(gateway, SECRET[:8]) == []

    def test_off_elsewhere(self, gateway: SshGateway) -> None:
        """
        On a target no recording rule names, the cast has output only.
        """
        terminal = Terminal(gateway, login="box_keepalive")
        terminal.read_until(b"#")

        terminal.type("echo quiet-$((1+1))\r")
        terminal.read_until(b"quiet-2")
        events = terminal.finish()

        assert [e for e in events if e[1] == "i"] == []
        assert "quiet-2" in "".join(e[2] for e in events if e[1] == "o")


# -- files ------------------------------------------------------------------------


@pytest.fixture
def tree(gateway: SshGateway) -> Iterator[str]:
    """
    A fresh directory on the target, made directly: C{secret/kept}
    (b"keep"), C{guarded/kept} (b"keep"), C{open/plain} (b"plain"),
    C{open/link} -> C{../secret}, C{open/file-link} -> C{secret/kept}
    (absolute).
    """
    made = gateway.direct().ssh(
        "root",
        "d=$(mktemp -d /tmp/hg-sftp.XXXXXX) && cd $d && mkdir secret guarded open"
        " && printf keep > secret/kept && printf keep > guarded/kept"
        " && printf plain > open/plain && chmod 644 open/plain"
        " && ln -s ../secret open/link && ln -s $d/secret/kept open/file-link"
        " && echo $d",
    )
    assert made.returncode == 0, made.stderr
    path = made.stdout.decode().strip()
    try:
        yield path
    finally:
        gateway.direct().ssh("root", f"rm -rf '{path}'")


@pytest.fixture
def sftp(gateway: SshGateway) -> Iterator[tuple[paramiko.SFTPClient, str]]:
    """
    A paramiko SFTP client through the gateway, and its token.
    """
    token = gateway.gateway.token()
    client = _connect(gateway, token)
    try:
        yield client.open_sftp(), token
    finally:
        client.close()


def _raw(client: paramiko.SFTPClient, kind: int, *fields: object) -> None:
    """
    Send an SFTP request paramiko has no method for (or refuses to send,
    such as a write on a handle opened for reading) and wait for its
    answer; a status other than OK raises L{OSError}.
    """
    # _request is paramiko's own request sender; types-paramiko leaves
    # private methods out.
    client._request(kind, *fields)  # type: ignore[attr-defined]


def _remote(gateway: SshGateway, command: str) -> str:
    result = gateway.direct().ssh("root", command)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def _denied(error: pytest.ExceptionInfo[OSError], rule: str) -> None:
    # paramiko turns SSH_FX_PERMISSION_DENIED (3), and only it, into
    # EACCES; the gateway's message names the rule.
    assert error.value.errno == errno.EACCES, error.value
    assert rule in str(error.value)


class TestSymbolicLinks:
    """
    Paths are judged as the target resolves them.
    """

    def test_read_through_link_refused(
        self, gateway: SshGateway, sftp: tuple[paramiko.SFTPClient, str], tree: str
    ) -> None:
        """
        Reading C{secret/kept} through a linked directory or a link to
        the file is refused with permission denied; the recording names
        the resolved path.
        """
        client, token = sftp

        for path in (f"{tree}/open/link/kept", f"{tree}/open/file-link"):
            with pytest.raises(OSError) as refused:
                client.open(path, "r")
            _denied(refused, "ssh-secret-files")
        with pytest.raises(OSError) as listed:
            client.listdir(f"{tree}/open/link")
        _denied(listed, "ssh-secret-files")
        with client.open(f"{tree}/open/plain", "r") as plain:
            assert plain.read() == b"plain"

        session = gateway.gateway.session_of(token)
        denied = wait_for(
            lambda: [
                r
                for r in lines_of(
                    gateway.gateway.recording_lines(session), "file.requested"
                )
                if r["verdict"] == "deny"
            ],
            10,
            "the denied file.requested lines",
        )
        assert {r["path"] for r in denied} == {f"{tree}/secret/kept", f"{tree}/secret"}

    def test_write_through_link_refused(
        self, gateway: SshGateway, sftp: tuple[paramiko.SFTPClient, str], tree: str
    ) -> None:
        """
        Writing, creating, renaming and removing through the link are
        refused; C{secret/} on disk is unchanged.
        """
        client, _ = sftp

        with pytest.raises(OSError) as wrote:
            client.open(f"{tree}/open/link/kept", "w")
        _denied(wrote, "ssh-secret-files")
        with pytest.raises(OSError) as created:
            client.open(f"{tree}/open/link/new", "w")
        _denied(created, "ssh-secret-files")
        with pytest.raises(OSError) as renamed:
            client.rename(f"{tree}/open/link/kept", f"{tree}/open/stolen")
        _denied(renamed, "ssh-secret-files")
        with pytest.raises(OSError) as removed:
            client.remove(f"{tree}/open/link/kept")
        _denied(removed, "ssh-secret-files")

        assert _remote(gateway, f"ls -A {tree}/secret; cat {tree}/secret/kept") == (
            "kept\nkeep"
        )

    def test_link_creation_judged_on_both_paths(
        self, gateway: SshGateway, sftp: tuple[paramiko.SFTPClient, str], tree: str
    ) -> None:
        """
        A symbolic link or a hard link from C{open/} to C{secret/kept}
        is refused and never made; a link within C{open/} is made.
        """
        client, _ = sftp

        with pytest.raises(OSError) as linked:
            client.symlink(f"{tree}/secret/kept", f"{tree}/open/new-link")
        _denied(linked, "ssh-secret-files")
        with pytest.raises(OSError) as relative:
            client.symlink("../secret/kept", f"{tree}/open/rel-link")
        _denied(relative, "ssh-secret-files")
        with pytest.raises(OSError) as hard:
            _raw(
                client,
                paramiko.sftp.CMD_EXTENDED,
                "hardlink@openssh.com",
                f"{tree}/secret/kept",
                f"{tree}/open/hard",
            )
        _denied(hard, "ssh-secret-files")
        client.symlink("plain", f"{tree}/open/ok-link")

        assert _remote(gateway, f"ls -A {tree}/open") == (
            "file-link\nlink\nok-link\nplain\n"
        )
        assert _remote(gateway, f"readlink {tree}/open/ok-link") == "plain\n"

    def test_link_name_not_utf8(
        self, gateway: SshGateway, sftp: tuple[paramiko.SFTPClient, str], tree: str
    ) -> None:
        """
        A link whose name is not UTF-8 is resolved by its exact bytes:
        reading C{secret/kept} through it is refused.
        """
        client, _ = sftp
        _remote(gateway, f"ln -s ../secret/kept {tree}/open/$'\\xff'link")

        with pytest.raises(OSError) as refused:
            client.open(tree.encode() + b"/open/\xfflink", "r")

        _denied(refused, "ssh-secret-files")

    def test_openssh_sftp_through_link(
        self, gateway: SshGateway, tree: str, tmp_path: Path
    ) -> None:
        """
        OpenSSH's C{sftp -b}: C{get} through the link fails (its glob's
        stat is refused, which C{sftp} reports as "not found") and C{put}
        fails with "Permission denied"; the file is unchanged.
        """
        local = tmp_path / "up"
        local.write_bytes(b"overwritten")
        client = gateway.client()

        got = client.sftp_batch("box", f"get {tree}/open/link/kept {tmp_path}/k\n")
        put = client.sftp_batch("box", f"put {local} {tree}/open/link/kept\n")

        assert got.returncode != 0
        assert b"not found" in got.stderr, got.stderr
        assert not (tmp_path / "k").exists()
        assert put.returncode != 0
        assert b"Permission denied" in put.stderr, put.stderr
        assert _remote(gateway, f"cat {tree}/secret/kept") == "keep"

    def test_unresolvable_path(
        self, sftp: tuple[paramiko.SFTPClient, str], tree: str
    ) -> None:
        """
        A path whose directory does not exist fails as the target
        answers it: no such file.
        """
        client, _ = sftp

        with pytest.raises(OSError) as missing:
            client.open(f"{tree}/nope/x", "w")

        assert missing.value.errno == errno.ENOENT


class TestHandles:
    """
    Requests on an open handle are judged against its open's path.
    """

    def test_fsetstat_refused(
        self, gateway: SshGateway, sftp: tuple[paramiko.SFTPClient, str], tree: str
    ) -> None:
        """
        C{chmod} on a handle of C{open/plain} (fsetstat) is refused like
        setstat on the path; fstat on it works; the mode is unchanged.
        """
        client, _ = sftp

        with client.open(f"{tree}/open/plain", "r") as handle:
            assert handle.stat().st_size == 5
            with pytest.raises(OSError) as chmod:
                handle.chmod(0o777)
            _denied(chmod, "ssh-no-chmod")
        with pytest.raises(OSError) as by_path:
            client.chmod(f"{tree}/open/plain", 0o777)
        _denied(by_path, "ssh-no-chmod")

        mode = _remote(gateway, f"stat -c %a {tree}/open/plain")
        assert mode == "644\n"

    def test_write_on_read_handle_refused(
        self, gateway: SshGateway, sftp: tuple[paramiko.SFTPClient, str], tree: str
    ) -> None:
        """
        A write sent on a handle of C{guarded/kept} opened for reading
        (allowed) is judged as a write there: permission denied, and the
        file is unchanged.
        """
        client, _ = sftp

        with client.open(f"{tree}/guarded/kept", "r") as handle:
            with pytest.raises(OSError) as wrote:
                _raw(
                    client,
                    paramiko.sftp.CMD_WRITE,
                    handle.handle,
                    paramiko.sftp.int64(0),
                    b"changed",
                )
            _denied(wrote, "ssh-guarded-files")
            assert handle.read() == b"keep"

        assert _remote(gateway, f"cat {tree}/guarded/kept") == "keep"
        assert stat.S_ISREG(client.stat(f"{tree}/guarded/kept").st_mode or 0)
