"""
SSH through the gateway under test: configuration, fixtures, clients.

L{start_ssh_gateway} starts C{twistd hoopgate} (L{tests.support.gateway})
with an SSH listener and SSH targets in front of the test sshd of
C{tests/services.sh} added to its configuration:

  - target C{box}: the sshd on C{SSH_PORT} as C{root} with the client key
    the test servers authorised; forwards allowed only to the test
    PostgreSQL and to the sshd itself (a server that speaks first), both
    as C{127.0.0.1}, and to the sshd as C{127.0.0.2} (which policy
    refuses); environment names C{LANG},
    C{LC_*} and C{HG_TEST_OK*} pass;
  - target C{box_keepalive}: the same sshd on C{SSH_KEEPALIVE_PORT},
    whose sessions get sshd's own keepalives every second;
  - target C{box_down}: a loopback port nothing listens on (its host
    key given inline, as C{host_keys});
  - target C{box_wrong_key}: the sshd again, but pinned to a key that is
    not its host key;
  - access rule C{ssh-ci}: C{ci-runner} may reach them all, as the
    credential set's account or as C{LOGIN@TARGET} with login C{root}.
    C{ci-runner}'s PostgreSQL rule covers only the PostgreSQL targets;
  - guardrail C{ssh-no-marker}: on C{box}, command lines matching
    C{touch /tmp/hg-denied-*} are refused;
  - guardrail C{ssh-guarded-files}: on C{box}, writes, removes and
    renames under C{/tmp/hg-sftp.*/guarded/} are refused;
  - guardrail C{ssh-no-second-loopback}: on C{box}, forwards to
    C{127.0.0.2} are refused, though C{forward_to} lists
    C{127.0.0.2:SSH_PORT}.

Clients are the real OpenSSH C{ssh}, C{scp} and C{sftp}: the token is
the answer to the gateway's keyboard-interactive prompt, given by an
C{SSH_ASKPASS} script (L{OpenSSH.env}), never on a command line.

With C{certificates=True} (L{start_ssh_gateway}) the listener also has a
CA (C{ca_key}, made with C{ssh-keygen}, certificates for
C{127.0.0.0/8} only) and the admin listener speaks HTTPS with
C{TLS_CERT}; L{SshGateway.certified} builds clients that log in with
C{ssh -i KEY -o CertificateFile=KEY-cert.pub}, and L{sign} makes
certificates by hand (wrong principal, expired, another CA) with the
C{cryptography} package.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization as ser

from tests.support.gateway import (
    START_TIMEOUT,
    TARGETS,
    VENV_BIN,
    GatewayStartError,
    Ports,
    RunningGateway,
    _spawn,
    free_ports,
    render_config,
    start_gateway,
    wait_for,
)
from tests.support.servers import SSH_SERVER_VARS, require_env

__all__ = [
    "SSH_TARGETS",
    "OpenSSH",
    "SshGateway",
    "sign",
    "ssh_cert_gateway",
    "ssh_gateway",
    "ssh_servers",
    "start_ssh_gateway",
]

#: SSH targets of the gateway under test.
SSH_TARGETS = ("box", "box_keepalive", "box_down", "box_wrong_key")

#: Seconds any client command may take.
COMMAND_TIMEOUT = 120.0


def _q(value: str | int) -> str:
    # A YAML double-quoted scalar.
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _ssh_yaml(
    servers: dict[str, str], port: int, host_key: Path, ca_key: Path | None = None
) -> dict[str, str]:
    listener = f"""\
  - name: ssh
    protocol: ssh
    listen: "tcp:{port}:interface=127.0.0.1"
    host_key: {_q(str(host_key))}
    failure_delay: 0.2s
    login_timeout: 30s
"""
    if ca_key is not None:
        listener += f"""\
    certificates:
      ca_key: {_q(str(ca_key))}
      validity: 10m
      permit_pty: true
      permit_port_forwarding: true
      source_address: ["127.0.0.0/8"]
"""
    targets = ""
    for name, key in (("box", "SSH_PORT"), ("box_keepalive", "SSH_KEEPALIVE_PORT")):
        targets += f"""\
  - name: {name}
    protocol: ssh
    host: {servers["SSH_HOST"]}
    port: {int(servers[key])}
    known_hosts: {_q(servers["SSH_KNOWN_HOSTS"])}
    forward_to: [{_q("127.0.0.1:" + servers["PG_PORT"])}, {_q("127.0.0.1:" + servers["SSH_PORT"])}, {_q("127.0.0.2:" + servers["SSH_PORT"])}]
    accept_env: [LANG, "LC_*", "HG_TEST_OK*"]
    credentials:
      - name: main
        user: {servers["SSH_USER"]}
        private_key: {{file: {_q(servers["SSH_CLIENT_KEY"])}}}
"""
    sshd_key = Path(servers["SSH_HOST_KEY_PUB"]).read_text(encoding="ascii").strip()
    other_key = Path(servers["SSH_CLIENT_KEY"] + ".pub").read_text(encoding="ascii")
    for name, target_port, key in (
        ("box_down", free_ports(1)[0], sshd_key),
        ("box_wrong_key", int(servers["SSH_PORT"]), other_key.strip()),
    ):
        targets += f"""\
  - name: {name}
    protocol: ssh
    host: {servers["SSH_HOST"]}
    port: {target_port}
    host_keys: [{_q(key)}]
    connect_timeout: 5s
    credentials:
      - name: main
        user: {servers["SSH_USER"]}
        private_key: {{file: {_q(servers["SSH_CLIENT_KEY"])}}}
"""
    rule = f"""\
    - name: ssh-ci
      subjects: [ci-runner]
      targets: [{", ".join(SSH_TARGETS)}]
      credential: main
      logins: [{servers["SSH_USER"]}]
      session_limit: 1h
      on_token_expiry: close
  guardrails:
    - name: ssh-no-marker
      subjects: ["*"]
      targets: [box]
      deny:
        command_lines: ["touch /tmp/hg-denied-*"]
    - name: ssh-guarded-files
      subjects: ["*"]
      targets: [box]
      deny:
        file_paths: ["/tmp/hg-sftp.*/guarded/**"]
        file_operations: [write, remove, rename]
    - name: ssh-no-second-loopback
      subjects: ["*"]
      targets: [box]
      deny:
        destinations: ["127.0.0.2:*"]
"""
    return {"listener": listener, "targets": targets, "rule": rule}


def _admin_tls(text: str, servers: dict[str, str]) -> str:
    """
    Make the admin listener speak HTTPS with the test certificate.
    """
    anchor = "  admin:\n"
    if text.count(anchor) != 1:
        raise AssertionError("configuration has no single gateway.admin")
    tls = (
        f"    tls:\n      certificate: {_q(servers['TLS_CERT'])}\n"
        f"      key: {_q(servers['TLS_KEY'])}\n"
    )
    return text.replace(anchor, anchor + tls)


def _add_ssh(text: str, parts: dict[str, str]) -> str:
    """
    Insert the SSH listener, targets and rule into the gateway's
    configuration text (L{tests.support.gateway.render_config}).
    """
    for key, anchor in (("listener", "listeners:\n"), ("targets", "targets:\n")):
        if text.count(anchor) != 1:
            raise AssertionError(f"configuration has no single {anchor!r}")
        text = text.replace(anchor, anchor + parts[key])
    if not text.endswith("\n"):
        text += "\n"
    return text + parts["rule"]


class SshGateway:
    """
    A gateway with an SSH listener, and how OpenSSH clients reach it.

    Attributes:
        gateway: The running gateway (recordings, logs, tokens).
        servers: The test servers' environment, SSH variables included.
        port: The SSH listener's port.
        host_key: The gateway's host private key file.
        known_hosts: A known-hosts file naming the gateway's host key.
    """

    def __init__(
        self,
        gateway: RunningGateway,
        servers: dict[str, str],
        port: int,
        ca_key: Path | None = None,
    ) -> None:
        self.gateway = gateway
        self.servers = servers
        self.port = port
        self.ca_key = ca_key
        self.host_key = gateway.directory / "ssh_host_ed25519"
        self.known_hosts = gateway.directory / "known_hosts_gateway"
        public = (self.host_key.parent / (self.host_key.name + ".pub")).read_text()
        self.known_hosts.write_text(
            f"[127.0.0.1]:{port} {' '.join(public.split()[:2])}\n", encoding="ascii"
        )

    def client(self, token: str | None = None) -> OpenSSH:
        """
        OpenSSH clients logging in to the gateway with C{token} (a fresh
        C{ci-runner} token by default).
        """
        if token is None:
            token = self.gateway.token()
        return OpenSSH.through(self, token)

    def direct(self) -> OpenSSH:
        """
        OpenSSH clients logging in to the test sshd directly with the
        client key: the ground truth.
        """
        return OpenSSH.direct(self.servers, self.gateway.directory)

    def certified(self, key: Path, certificate: Path | None = None) -> OpenSSH:
        """
        OpenSSH clients logging in with private key C{key} and its
        certificate (C{KEY-cert.pub} by default), nothing else.
        """
        return OpenSSH.certified(self, key, certificate or _cert_of(key))

    def new_key(self, name: str) -> Path:
        """
        A new Ed25519 key pair made by C{ssh-keygen}; the private key's
        path (C{.pub} beside it).
        """
        path = self.gateway.directory / "keys" / name
        path.parent.mkdir(exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return path

    def tls_context(self) -> ssl.SSLContext:
        """
        A context trusting the admin listener's test certificate.
        """
        return ssl.create_default_context(cafile=self.servers["TLS_CERT"])

    def post_certificate(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """
        POST C{body} to the certificate endpoint over HTTPS.
        """
        url = self.gateway.admin_url + "/plugins/ssh/certificates"
        request = urllib.request.Request(  # noqa: S310 - the test gateway
            url, data=json.dumps(body).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=30, context=self.tls_context()
            ) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read())

    def stop(self) -> int:
        return self.gateway.stop()


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(mode)


class OpenSSH:
    """
    Argument lists and environment for C{ssh}, C{scp} and C{sftp}.

    Attributes:
        host: The address to connect to.
        port: Its port.
        options: C{-o} options common to the three programs.
        env: The environment to run them with.
    """

    def __init__(self, host: str, port: int, options: list[str], env: dict[str, str]):
        self.host = host
        self.port = port
        self.options = options
        self.env = env

    @classmethod
    def through(cls, gateway: SshGateway, token: str) -> OpenSSH:
        directory = gateway.gateway.directory
        token_file = directory / f"token-{os.getpid()}-{id(token)}"
        _write_private(token_file, token)
        askpass = directory / f"askpass-{os.getpid()}-{id(token)}"
        _write_private(askpass, f"#!/bin/sh\nexec cat '{token_file}'\n", 0o700)
        env = _base_env()
        env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force")
        options = [
            f"UserKnownHostsFile={gateway.known_hosts}",
            "PubkeyAuthentication=no",
            "PreferredAuthentications=keyboard-interactive,password",
            "NumberOfPasswordPrompts=1",
        ]
        return cls("127.0.0.1", gateway.port, _common(options), env)

    @classmethod
    def certified(cls, gateway: SshGateway, key: Path, certificate: Path) -> OpenSSH:
        options = [
            f"UserKnownHostsFile={gateway.known_hosts}",
            f"IdentityFile={key}",
            f"CertificateFile={certificate}",
            "IdentitiesOnly=yes",
            "IdentityAgent=none",
            "PreferredAuthentications=publickey",
            "BatchMode=yes",
        ]
        return cls("127.0.0.1", gateway.port, _common(options), _base_env())

    @classmethod
    def direct(cls, servers: dict[str, str], directory: Path) -> OpenSSH:
        options = [
            f"UserKnownHostsFile={servers['SSH_KNOWN_HOSTS']}",
            f"IdentityFile={servers['SSH_CLIENT_KEY']}",
            "IdentitiesOnly=yes",
            "BatchMode=yes",
        ]
        return cls(
            servers["SSH_HOST"], int(servers["SSH_PORT"]), _common(options), _base_env()
        )

    def _o(self, first: Sequence[str]) -> list[str]:
        argv: list[str] = []
        for option in [*first, *self.options]:
            argv += ["-o", option]
        return argv

    def ssh_argv(
        self, login: str, *command: str, flags: Sequence[str] = ()
    ) -> list[str]:
        """
        C{ssh} as C{login} (C{TARGET} or C{LOGIN@TARGET}) with C{flags},
        running C{command}.
        """
        # ssh takes the first value of an option: the caller's go first.
        return [
            "ssh",
            *flags,
            *self._o(()),
            "-p",
            str(self.port),
            "-l",
            login,
            self.host,
            *command,
        ]

    def ssh(
        self,
        login: str,
        *command: str,
        flags: Sequence[str] = (),
        input: bytes | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[bytes]:
        """
        Run C{ssh} and return its result, whatever its exit status.
        """
        return subprocess.run(
            self.ssh_argv(login, *command, flags=flags),
            env=self.env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def scp(
        self, login: str, *args: str, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        """
        Run C{scp}; C{REMOTE:path} in C{args} names a path on C{login}.
        """
        argv = ["scp", *self._o(()), "-P", str(self.port)]
        argv += [a.replace("REMOTE:", f"{login}@{self.host}:") for a in args]
        return subprocess.run(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def sftp_batch(
        self, login: str, batch: str, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        """
        Run C{sftp -b -} with C{batch} on its standard input.
        """
        # sftp -b adds BatchMode=yes, which disables the askpass answer;
        # ssh takes an option's first value, so this one comes first.
        # (Certificate logins, the main path, need no prompt at all.)
        argv = ["sftp", *self._o(["BatchMode=no"]), "-P", str(self.port)]
        argv += ["-b", "-"]
        argv.append(f"{login}@{self.host}")
        return subprocess.run(
            argv,
            env=self.env,
            input=batch.encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def popen(
        self, login: str, *command: str, flags: Sequence[str] = (), **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """
        Start C{ssh} in the background (forwards); the caller stops it.
        """
        return subprocess.Popen(
            self.ssh_argv(login, *command, flags=flags), env=self.env, **kwargs
        )


def _base_env() -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["HOME"] = os.environ.get("HOME", "/root")
    return env


def _common(options: list[str]) -> list[str]:
    return [
        *options,
        "StrictHostKeyChecking=yes",
        "GlobalKnownHostsFile=/dev/null",
        "ConnectTimeout=10",
        "LogLevel=ERROR",
        "ControlMaster=no",
        "ControlPath=none",
        "ForwardAgent=no",
        "ForwardX11=no",
        "ServerAliveInterval=0",
    ]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _make_ca(directory: Path) -> Path:
    path = directory / "ssh_ca"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test-ca", "-f", path],
        check=True,
        capture_output=True,
        timeout=30,
    )
    path.chmod(0o600)
    return path


def _https_healthy(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(  # noqa: S310 - the test gateway
            url + "/healthz", timeout=2, context=context
        ) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def _start_https_admin(
    servers: dict[str, str],
    directory: Path,
    edit: Callable[[str], str],
    timeout: float,
) -> RunningGateway:
    """
    As L{tests.support.gateway.start_gateway}, for an admin listener
    speaking HTTPS, which that harness's wait cannot reach.
    """
    admin, pg, plain = free_ports(3)
    ports = Ports(admin=admin, pg=pg, plain=plain)
    recordings = directory / "recordings"
    recordings.mkdir(parents=True, exist_ok=True)
    text = render_config(servers, ports, recordings, tuple(TARGETS))
    (directory / "hoopgate.yaml").write_text(edit(text), encoding="utf-8")

    running = _spawn(servers, directory, ports, VENV_BIN / "twistd")
    running.admin_url = f"https://127.0.0.1:{admin}"
    context = ssl.create_default_context(cafile=servers["TLS_CERT"])
    deadline = time.monotonic() + timeout
    while not _https_healthy(running.admin_url, context):
        if running.process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            raise GatewayStartError(
                running.describe_failure("hoopgate did not answer over HTTPS")
            )
        time.sleep(0.1)
    return running


def start_ssh_gateway(
    servers: dict[str, str],
    directory: Path,
    *,
    timeout: float = START_TIMEOUT,
    certificates: bool = False,
) -> SshGateway:
    """
    Start the gateway with the SSH listener and targets added; wait until
    the SSH listener accepts.

    Args:
        servers: The test servers' environment.
        directory: An empty folder for the gateway's files.
        timeout: Seconds to wait for it.
        certificates: Give the listener a CA and the admin listener TLS.
    """
    (port,) = free_ports(1)
    host_key = directory / "ssh_host_ed25519"
    ca_key = _make_ca(directory) if certificates else None
    parts = _ssh_yaml(servers, port, host_key, ca_key)
    if certificates:
        running = _start_https_admin(
            servers,
            directory,
            lambda text: _admin_tls(_add_ssh(text, parts), servers),
            timeout,
        )
    else:
        running = start_gateway(
            servers,
            directory,
            ci_targets=tuple(TARGETS),
            edit=lambda text: _add_ssh(text, parts),
            timeout=timeout,
        )
    try:
        wait_for(lambda: _accepts(port), timeout, "the gateway's SSH listener")
        mode = stat.S_IMODE(host_key.stat().st_mode)
        if mode != 0o600:
            raise AssertionError(f"host key {host_key} has mode {mode:o}")
        return SshGateway(running, servers, port, ca_key)
    except BaseException:
        running.stop()
        raise


def _cert_of(key: Path) -> Path:
    return key.with_name(key.name + "-cert.pub")


def sign(
    ca_key: Path,
    public_key: Path,
    *,
    subject: str = "ci-runner",
    principals: Sequence[str] | None = None,
    valid_after: float | None = None,
    valid_before: float | None = None,
    pty: bool = True,
) -> Path:
    """
    Make a certificate for C{public_key} by hand with C{ca_key}, as the
    gateway would (the identity extension included) unless told
    otherwise; write it as C{NAME-cert.pub} beside the key.
    """
    ca = ser.load_ssh_private_key(ca_key.read_bytes(), None)
    user = ser.load_ssh_public_key(public_key.read_bytes())
    now = time.time()
    claims = {"sub": subject, "iss": "hand-made", "groups": [], "tid": "0"}
    names = [p.encode() for p in (principals if principals is not None else [subject])]
    builder = (
        ser.SSHCertificateBuilder()
        .public_key(user)  # type: ignore[arg-type]
        .serial(1)
        .type(ser.SSHCertificateType.USER)
        .key_id(subject.encode())
        .valid_principals(names)
        .valid_after(int(valid_after if valid_after is not None else now - 60))
        .valid_before(int(valid_before if valid_before is not None else now + 600))
        .add_extension(b"identity@hoopgate", json.dumps(claims).encode())
    )
    if pty:
        builder = builder.add_extension(b"permit-pty", b"")
    certificate = builder.sign(ca)  # type: ignore[arg-type]
    path = _cert_of(public_key.with_suffix(""))
    path.write_bytes(certificate.public_bytes() + b"\n")
    return path


@pytest.fixture(scope="session")
def ssh_servers(servers: dict[str, str]) -> dict[str, str]:
    """
    The test servers' environment with the sshd's variables; fails or
    skips like C{servers} when they are missing.
    """
    ssh = require_env(SSH_SERVER_VARS, "test sshd")
    return {**servers, **ssh}


@pytest.fixture(scope="module")
def ssh_gateway(
    ssh_servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SshGateway]:
    """
    A gateway with the SSH listener in front of the test sshd, one per
    test module.
    """
    running = start_ssh_gateway(ssh_servers, tmp_path_factory.mktemp("sshgw"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def ssh_cert_gateway(
    ssh_servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SshGateway]:
    """
    A gateway whose SSH listener has a CA and whose admin listener speaks
    HTTPS, one per test module.
    """
    running = start_ssh_gateway(
        ssh_servers, tmp_path_factory.mktemp("sshca"), certificates=True
    )
    try:
        yield running
    finally:
        running.stop()
