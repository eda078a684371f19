"""
The gateway under test: C{twistd hoopgate} as a real subprocess.

L{start_gateway} writes a configuration in front of the test servers of
C{tests/services.sh} (the format of C{docs/config-schema-draft.md}, as
C{scripts/demo.sh} writes it), starts C{.venv/bin/twistd -n hoopgate} with
it and waits, for a bounded time, until the admin listener answers
C{GET /healthz} and both PostgreSQL listeners accept connections. When the
gateway exits or does not answer in time, L{GatewayStartError} carries the
tail of its log and of what twistd printed before logging began.

The configuration:

  - listener C{pg}: TLS with C{TLS_CERT}/C{TLS_KEY}, and
    C{cleartext_without_tls: true} (a token is accepted without TLS too);
  - listener C{pg_plain}: no TLS and no cleartext: a token must never be
    accepted on it;
  - targets C{appdb} (role C{app}, SCRAM), C{appdb_md5} (C{mduser}, md5),
    C{appdb_trust} (C{trusty}, no password) and C{appdb_ro} (C{app_ro}), all
    database C{appdb}, each with one credential set named C{main};
  - one access rule: C{ci-runner} may reach the targets in C{ci_targets}
    (all by default); nobody else has a rule (C{mallory} is refused).

Clients log in with any user name, the token as password and the target
name as database; L{RunningGateway.connect_args} builds psycopg arguments.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from hoopgate._oidc import _token_id_hash
from hoopgate._recording import read_recording
from tests.oidc.mint import mint

__all__ = [
    "CREDENTIAL",
    "TARGETS",
    "GatewayStartError",
    "Ports",
    "RunningGateway",
    "free_ports",
    "lines_of",
    "render_config",
    "start_gateway",
    "wait_for",
]

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"

#: Seconds the gateway has to answer after it was started.
START_TIMEOUT = 30.0

#: Seconds between SIGTERM and SIGKILL when stopping it.
STOP_TIMEOUT = 10.0

#: Lines of each log shown when start-up fails.
TAIL_LINES = 60

#: The credential set name every target uses, so one rule covers them all.
CREDENTIAL = "main"

#: Target name -> (role, password file under $HG_RUN/pg, or None).
TARGETS: dict[str, tuple[str, str | None]] = {
    "appdb": ("app", "app.pw"),
    "appdb_md5": ("mduser", "mduser.pw"),
    "appdb_trust": ("trusty", None),
    "appdb_ro": ("app_ro", "app_ro.pw"),
}


class GatewayStartError(Exception):
    """
    The gateway exited during start-up or did not answer in time.

    The message holds the reason and the tails of its logs.
    """


@frozen
class Ports:
    """
    The loopback ports one gateway listens on.

    Attributes:
        admin: The admin HTTP listener.
        pg: The PostgreSQL listener with TLS (cleartext allowed too).
        plain: The PostgreSQL listener without TLS and without cleartext.
    """

    admin: int
    pg: int
    plain: int


def free_ports(count: int) -> list[int]:
    """
    C{count} distinct free TCP ports on 127.0.0.1.

    The kernel picks them and they are released at once, so a later
    binder could take one first; the start-up check notices that.
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _yaml(value: str) -> str:
    """
    A YAML double-quoted scalar (JSON strings are valid YAML).
    """
    return json.dumps(value)


def _target_yaml(name: str, servers: dict[str, str]) -> str:
    user, password_file = TARGETS[name]
    password = ""
    if password_file is not None:
        path = Path(servers["HG_RUN"]) / "pg" / password_file
        password = f"\n        password: {{file: {_yaml(str(path))}}}"
    return f"""\
  - name: {name}
    protocol: postgres
    host: 127.0.0.1
    port: {int(servers["PG_PORT"])}
    database: {_yaml(servers["PG_DATABASE"])}
    tls:
      mode: verify-full
      ca: {_yaml(servers["TLS_CERT"])}
    allowed_options: []
    credentials:
      - name: {CREDENTIAL}
        user: {user}{password}
"""


def render_config(
    servers: dict[str, str],
    ports: Ports,
    recordings: Path,
    ci_targets: Sequence[str] = ("*",),
) -> str:
    """
    The gateway's configuration text.

    Args:
        servers: The test servers' environment (the C{servers} fixture).
        ports: Where the gateway listens.
        recordings: The recordings folder.
        ci_targets: The targets C{ci-runner} may reach (C{"*"}: all).
    """
    targets = "".join(_target_yaml(name, servers) for name in TARGETS)
    allowed = ", ".join(_yaml(t) for t in ci_targets)
    return f"""\
# Written by tests/support/gateway.py.
gateway:
  admin:
    listen: "tcp:{ports.admin}:interface=127.0.0.1"
  recordings:
    directory: {_yaml(str(recordings))}
    on_failure: close
  store:
    kind: memory
  plugins:
    packages: [hoopgate_plugins]
    dropin_dirs: []

identity:
  issuers:
    - name: test
      issuer: {_yaml(servers["OIDC_ISSUER"])}
      audience: {_yaml(servers["OIDC_AUDIENCE"])}
      algorithms: [RS256]
      subject_claim: sub
      groups_claim: groups
      required_claims: []
      leeway: 30s

listeners:
  - name: pg
    protocol: postgres
    listen: "tcp:{ports.pg}:interface=127.0.0.1"
    tls:
      certificate: {_yaml(servers["TLS_CERT"])}
      key: {_yaml(servers["TLS_KEY"])}
    cleartext_without_tls: true
  - name: pg_plain
    protocol: postgres
    listen: "tcp:{ports.plain}:interface=127.0.0.1"

targets:
{targets}
policy:
  version: 1
  access:
    - name: ci-runner
      subjects: [ci-runner]
      targets: [{allowed}]
      credential: {CREDENTIAL}
      session_limit: 1h
      on_token_expiry: close
"""


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """
    Call C{check} until it returns something true, for at most C{timeout}
    seconds; return that value.

    Raises:
        AssertionError: The time ran out; the message names C{what}.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"(cannot read {path}: {e.strerror})"
    if not text:
        return "(empty)"
    return "\n".join(text.splitlines()[-lines:])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def _jwt_claims(token: str) -> dict[str, Any]:
    """
    The payload of a compact JWS, unverified (the test minted it).
    """
    part = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    )
    return claims


class RunningGateway:
    """
    A started C{twistd hoopgate} and what tests need to reach it.

    Attributes:
        servers: The test servers' environment.
        directory: The folder holding its configuration, logs, recordings.
        ports: Its listening ports.
        process: The twistd process (running in the foreground, C{-n}).
        pg_host: The address of both PostgreSQL listeners.
        pg_port: The listener with TLS.
        plain_port: The listener without TLS.
        admin_url: The admin listener's base URL.
        config_path: Its configuration file.
        log_path: Its log (C{twistd -l}).
        output_path: What twistd printed to stdout and stderr.
        recordings: Its recordings folder.
    """

    def __init__(
        self,
        servers: dict[str, str],
        directory: Path,
        ports: Ports,
        process: subprocess.Popen[bytes],
    ) -> None:
        self.servers = servers
        self.directory = directory
        self.ports = ports
        self.process = process
        self.pg_host = "127.0.0.1"
        self.pg_port = ports.pg
        self.plain_port = ports.plain
        self.admin_url = f"http://127.0.0.1:{ports.admin}"
        self.config_path = directory / "hoopgate.yaml"
        self.log_path = directory / "hoopgate.log"
        self.output_path = directory / "twistd.out"
        self.recordings = directory / "recordings"

    @property
    def pid(self) -> int:
        """
        The gateway's process id.
        """
        return self.process.pid

    def token(
        self,
        sub: str = "ci-runner",
        ttl: int = 600,
        *,
        aud: str | None = None,
        groups: str | None = None,
    ) -> str:
        """
        A token from the test issuer (C{ttl <= 0}: already expired).
        """
        return mint(self.servers["OIDC_ISSUER"], sub, ttl, aud=aud, groups=groups)

    def connect_args(
        self, password: str, target: str = "appdb", **extra: Any
    ) -> dict[str, Any]:
        """
        psycopg C{connect} arguments for a login through the TLS listener,
        verifying the gateway's certificate; C{extra} adds or overrides.
        """
        args: dict[str, Any] = {
            "host": "localhost",
            "hostaddr": self.pg_host,
            "port": self.pg_port,
            "user": "ci-runner",
            "password": password,
            "dbname": target,
            "sslmode": "verify-full",
            "sslrootcert": self.servers["TLS_CERT"],
            "connect_timeout": 10,
        }
        args.update(extra)
        return args

    def psql_command(
        self,
        password: str,
        *args: str,
        sslmode: str = "require",
        target: str = "appdb",
        port: int | None = None,
        options: str = "",
    ) -> tuple[list[str], dict[str, str]]:
        """
        The argument list and environment of a C{psql} run through the
        gateway: no C{.psqlrc}, unaligned tuples-only output, stop on the
        first error, the password in C{PGPASSWORD}.

        Args:
            password: The token (or anything else to send as password).
            args: More C{psql} arguments (C{-c}, ...).
            sslmode: libpq's C{sslmode}.
            target: The database name, that is the target.
            port: The listener; the TLS one by default.
            options: More C{key=value} conninfo settings.
        """
        conninfo = (
            f"host=localhost hostaddr={self.pg_host} "
            f"port={port or self.pg_port} user=ci-runner dbname={target} "
            f"sslmode={sslmode} sslrootcert={self.servers['TLS_CERT']} "
            f"connect_timeout=10 {options}"
        ).strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = password
        argv = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", conninfo, *args]
        return argv, env

    def psql(
        self,
        password: str,
        *args: str,
        timeout: float = 60.0,
        **settings: Any,
    ) -> subprocess.CompletedProcess[str]:
        """
        Run C{psql} through the gateway (see L{psql_command}) and return
        its result, whatever its exit status.
        """
        argv, env = self.psql_command(password, *args, **settings)
        return subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def recording_files(self) -> list[Path]:
        """
        The recording files, oldest session first.
        """
        return sorted(self.recordings.glob("*.jsonl"))

    def recording_lines(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """
        The recorded lines of one session, or of all sessions in order.
        """
        if session_id is not None:
            path = self.recordings / f"{session_id}.jsonl"
            return read_recording(path) if path.is_file() else []
        lines: list[dict[str, Any]] = []
        for path in self.recording_files():
            lines.extend(read_recording(path))
        return lines

    def recording_mark(self) -> set[tuple[str, int]]:
        """
        Which lines exist now, for L{lines_since}.
        """
        return {(line["session_id"], line["seq"]) for line in self.recording_lines()}

    def lines_since(self, mark: set[tuple[str, int]]) -> list[dict[str, Any]]:
        """
        The recorded lines written after L{recording_mark} gave C{mark}.
        """
        return [
            line
            for line in self.recording_lines()
            if (line["session_id"], line["seq"]) not in mark
        ]

    def session_of(self, token: str, timeout: float = 10.0) -> str:
        """
        The id of the session opened with C{token}, waiting for its
        C{session.opened} line (bounded).
        """
        wanted = _token_id_hash(token, _jwt_claims(token))

        def find() -> str | None:
            for line in self.recording_lines():
                identity = line.get("identity") or {}
                if (
                    line.get("event") == "session.opened"
                    and identity.get("token_id_hash") == wanted
                ):
                    return str(line["session_id"])
            return None

        found: str = wait_for(find, timeout, "the session.opened line of a token")
        return found

    def wait_event(
        self, session_id: str, event: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """
        The first line of C{event} in a session's recording, waiting for it
        (bounded).
        """

        def find() -> dict[str, Any] | None:
            for line in self.recording_lines(session_id):
                if line.get("event") == event:
                    return line
            return None

        found: dict[str, Any] = wait_for(find, timeout, f"{event} of {session_id}")
        return found

    def log_files(self) -> list[Path]:
        """
        The log and any rotated parts of it.
        """
        return sorted(self.directory.glob(self.log_path.name + "*"))

    def files_containing(self, needle: str) -> list[Path]:
        """
        Which recording, log or output files contain C{needle}.
        """
        paths = [*self.recording_files(), *self.log_files(), self.output_path]
        data = needle.encode()
        return [p for p in paths if p.is_file() and data in p.read_bytes()]

    def rss_kib(self) -> int:
        """
        The gateway's resident set size in KiB (C{/proc/PID/status}).
        """
        status = Path(f"/proc/{self.pid}/status").read_text(encoding="ascii")
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS in /proc/{self.pid}/status")

    def write_config(self, ci_targets: Sequence[str] = ("*",)) -> None:
        """
        Rewrite the configuration file (a reload picks it up).
        """
        text = render_config(self.servers, self.ports, self.recordings, ci_targets)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.config_path)

    def cli(
        self, *args: str, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """
        Run C{.venv/bin/hoopgate --config FILE ARGS...}.
        """
        return subprocess.run(
            [str(VENV_BIN / "hoopgate"), "--config", str(self.config_path), *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def describe_failure(self, why: str) -> str:
        """
        C{why}, followed by the tails of the twistd output and the log.
        """
        return (
            f"{why}\n"
            f"----- last lines of {self.output_path} -----\n"
            f"{_tail(self.output_path)}\n"
            f"----- last lines of {self.log_path} -----\n"
            f"{_tail(self.log_path)}\n"
            "-----"
        )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """
        Wait until the admin listener answers and both PostgreSQL
        listeners accept.

        Raises:
            GatewayStartError: The process exited, or time ran out.
        """
        deadline = time.monotonic() + timeout
        ports = (self.pg_port, self.plain_port)
        while not (_healthy(self.admin_url) and all(map(_accepts, ports))):
            code = self.process.poll()
            if code is not None:
                raise GatewayStartError(
                    self.describe_failure(
                        f"hoopgate exited during start-up (status {code})"
                    )
                )
            if time.monotonic() > deadline:
                raise GatewayStartError(
                    self.describe_failure(
                        f"hoopgate did not answer within {timeout:g} s"
                    )
                )
            time.sleep(0.1)

    def stop(self) -> int:
        """
        SIGTERM, up to L{STOP_TIMEOUT} seconds, then SIGKILL.

        Returns:
            The exit status.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(STOP_TIMEOUT)


def start_gateway(
    servers: dict[str, str],
    directory: Path,
    *,
    ci_targets: Sequence[str] = ("*",),
    edit: Callable[[str], str] | None = None,
    ports: Ports | None = None,
    timeout: float = START_TIMEOUT,
) -> RunningGateway:
    """
    Write a configuration into C{directory}, start the gateway and wait
    until it answers.

    Args:
        servers: The test servers' environment (the C{servers} fixture).
        directory: An empty folder for configuration, logs and recordings.
        ci_targets: The targets C{ci-runner} may reach.
        edit: Changes the configuration text before it is written (to
            test the harness itself with a broken one).
        ports: Where to listen; free loopback ports by default.
        timeout: Seconds to wait for the gateway to answer.

    Raises:
        GatewayStartError: It exited or did not answer in time; the message
            holds the tails of its logs.  The process is stopped.
    """
    twistd = VENV_BIN / "twistd"
    if not os.access(twistd, os.X_OK):
        raise GatewayStartError(f"{twistd} is missing: run make setup")

    if ports is None:
        admin, pg, plain = free_ports(3)
        ports = Ports(admin=admin, pg=pg, plain=plain)
    recordings = directory / "recordings"
    recordings.mkdir(parents=True, exist_ok=True)
    text = render_config(servers, ports, recordings, ci_targets)
    (directory / "hoopgate.yaml").write_text(
        edit(text) if edit else text, encoding="utf-8"
    )

    gateway = _spawn(servers, directory, ports, twistd)
    try:
        gateway.wait_ready(timeout)
    except BaseException:
        gateway.stop()
        raise
    return gateway


def _spawn(
    servers: dict[str, str], directory: Path, ports: Ports, twistd: Path
) -> RunningGateway:
    log_path = directory / "hoopgate.log"
    output = (directory / "twistd.out").open("wb")
    with output:
        process = subprocess.Popen(
            [
                str(twistd),
                "-n",
                "--pidfile=",
                "-l",
                str(log_path),
                "hoopgate",
                "--config",
                str(directory / "hoopgate.yaml"),
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return RunningGateway(servers, directory, ports, process)


def lines_of(lines: Iterable[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    """
    The lines of one event, in order.
    """
    return [line for line in lines if line.get("event") == event]
