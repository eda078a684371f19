"""
The servers a benchmark run starts, and the processes' figures it reads.

  - L{Services}: PostgreSQL 15 and the OIDC issuer of C{tests/services.sh},
    in their own run directory;
  - L{Gateway}: C{twistd -n hoopgate} with recording on, in front of them;
  - L{PgBouncer}: Debian's pgbouncer, session pooling, as C{postgres}.

Every start waits a bounded time and fails with the tail of the server's
log; every C{stop} is safe to call twice and ends only the process it
started.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from attrs import frozen

__all__ = [
    "ROOT",
    "BenchError",
    "Endpoint",
    "Gateway",
    "PgBouncer",
    "Services",
    "cpu_seconds",
    "free_port",
    "peak_rss_kib",
    "reset_peak_rss",
    "rss_kib",
    "tail",
]

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"

#: Seconds a server has to answer after it was started.
START_TIMEOUT = 30.0

#: Seconds between SIGTERM and SIGKILL.
STOP_TIMEOUT = 10.0

#: The database every contender serves (the gateway's target has its name).
DATABASE = "appdb"

#: The PostgreSQL role the direct and pooled contenders log in as, and the
#: gateway's held credential.
ROLE = "app"


class BenchError(Exception):
    """
    A server or a tool failed; the message says which and why.
    """


def tail(text: str, lines: int = 20) -> str:
    """
    The last C{lines} lines of C{text}.
    """
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _tail_file(path: Path, lines: int = 40) -> str:
    try:
        return tail(path.read_text(encoding="utf-8", errors="replace"), lines)
    except OSError as e:
        return f"(cannot read {path}: {e.strerror})"


def free_port() -> int:
    """
    A free TCP port on 127.0.0.1 (released at once; a start-up check
    notices when another binder took it first).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait(check: Callable[[], bool], alive: Callable[[], bool], what: str) -> None:
    """
    Poll C{check} for up to L{START_TIMEOUT} seconds while C{alive()}.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while not check():
        if not alive():
            raise BenchError(f"{what} exited during start-up")
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not answer within {START_TIMEOUT:g} s")
        time.sleep(0.05)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


# --- process figures ---------------------------------------------------------


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {field}")


def rss_kib(pid: int) -> int:
    """
    The process's resident set now, KiB.
    """
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """
    The process's peak resident set since start or L{reset_peak_rss}, KiB.
    """
    return _status_kib(pid, "VmHWM")


def reset_peak_rss(pid: int) -> None:
    """
    Make the peak resident set start again from the current one.
    """
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> float:
    """
    User plus system CPU time the process has used, seconds.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; it ends at the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# --- endpoints ---------------------------------------------------------------


@frozen
class Endpoint:
    """
    Where one contender listens and how a libpq client logs in there.

    Attributes:
        contender: C{direct}, C{pgbouncer} or C{hoopgate}.
        port: Its port on 127.0.0.1.
        user: The login name (anything, for the gateway).
        password: The password, or the token for the gateway.
        pid: The process to watch (CPU, memory); None for direct.
    """

    contender: str
    port: int
    user: str
    password: str
    pid: int | None = None

    def libpq_env(self, tls: bool) -> dict[str, str]:
        """
        The environment for pgbench or psql: this process's, without any
        inherited C{PG*} setting, plus this endpoint's.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGHOST="127.0.0.1",
            PGPORT=str(self.port),
            PGUSER=self.user,
            PGPASSWORD=self.password,
            PGDATABASE=DATABASE,
            PGSSLMODE="require" if tls else "disable",
            PGCONNECT_TIMEOUT="20",
        )
        return env


# --- PostgreSQL and the OIDC issuer --------------------------------------------


class Services:
    """
    C{tests/services.sh} in a run directory of its own.

    Args:
        run_dir: The directory for C{HG_RUN} (must not exist yet, or be
            empty).
        max_connections: PostgreSQL's C{max_connections}.
    """

    def __init__(self, run_dir: Path, max_connections: int) -> None:
        self.run_dir = run_dir
        self.max_connections = max_connections
        self._started = False

    def _script(self, command: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, HG_RUN=str(self.run_dir))
        env["PG_MAX_CONNECTIONS"] = str(self.max_connections)
        for name in ("PG_PORT", "OIDC_PORT", "HG_KEEP"):
            env.pop(name, None)
        return subprocess.run(
            [str(ROOT / "tests" / "services.sh"), command],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def start(self) -> dict[str, str]:
        """
        Start the servers; return the variables of the env file they wrote.
        """
        self._started = True
        done = self._script("start")
        if done.returncode != 0:
            raise BenchError(f"tests/services.sh start failed:\n{tail(done.stderr)}")
        return self._read_env()

    def _read_env(self) -> dict[str, str]:
        env = {}
        for line in (self.run_dir / "env").read_text().splitlines():
            name, _, value = line.partition("=")
            words = shlex.split(value)
            env[name] = words[0] if words else ""
        return env

    def stop(self) -> None:
        """
        Stop the servers and remove their run directory.
        """
        if not self._started:
            return
        self._started = False
        done = self._script("stop")
        if done.returncode != 0:
            raise BenchError(f"tests/services.sh stop failed:\n{tail(done.stderr)}")


# --- the gateway ---------------------------------------------------------------


def _yaml(value: str) -> str:
    """
    A YAML double-quoted scalar (JSON strings are valid YAML).
    """
    return json.dumps(value)


def gateway_config(
    servers: dict[str, str],
    pg_port: int,
    admin_port: int,
    recordings: Path,
    upstream_tls: bool,
) -> str:
    """
    The gateway's configuration: one PostgreSQL listener (TLS offered,
    a token accepted without it too, for the rows without TLS), one target
    named like its database, recording to C{recordings}, one access rule
    for C{ci-runner}, and the demo's guardrail rule (DROP, TRUNCATE,
    DELETE or UPDATE without WHERE, writes to C{canary}), which none of
    the benchmark's statements match.

    Args:
        servers: The variables of the services' env file.
        pg_port: The PostgreSQL listener's port.
        admin_port: The admin listener's port.
        recordings: The recordings folder.
        upstream_tls: TLS toward PostgreSQL (verify-full), or none.
    """
    password_file = Path(servers["HG_RUN"]) / "pg" / f"{ROLE}.pw"
    if upstream_tls:
        tls = f"mode: verify-full\n      ca: {_yaml(servers['TLS_CERT'])}"
    else:
        tls = "mode: disable"
    return f"""\
# Written by bench/servers.py.
gateway:
  admin:
    listen: "tcp:{admin_port}:interface=127.0.0.1"
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
    - name: bench
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
    listen: "tcp:{pg_port}:interface=127.0.0.1"
    tls:
      certificate: {_yaml(servers["TLS_CERT"])}
      key: {_yaml(servers["TLS_KEY"])}
    cleartext_without_tls: true

targets:
  - name: {DATABASE}
    protocol: postgres
    host: 127.0.0.1
    port: {int(servers["PG_PORT"])}
    database: {DATABASE}
    tls:
      {tls}
    allowed_options: []
    credentials:
      - name: main
        user: {ROLE}
        password: {{file: {_yaml(str(password_file))}}}

policy:
  version: 1
  access:
    - name: bench
      subjects: [ci-runner]
      targets: ["*"]
      credential: main
      session_limit: 8h
      on_token_expiry: close
  # The demo's guardrails: loaded and judging every statement, matching none
  # of the benchmark's.
  guardrails:
    - name: no-destructive
      deny:
        commands: [DROP, TRUNCATE]
        shapes: [delete_without_where, update_without_where]
        writes: [public.canary]
"""


class Gateway:
    """
    C{twistd -n hoopgate} in a folder of its own.

    Args:
        folder: Holds its configuration, log and recordings (created).
        servers: The variables of the services' env file.
        upstream_tls: TLS toward PostgreSQL, or none.
    """

    def __init__(self, folder: Path, servers: dict[str, str], upstream_tls: bool):
        self.folder = folder
        self.recordings = folder / "recordings"
        self.port = free_port()
        self.admin_port = free_port()
        self._config = gateway_config(
            servers, self.port, self.admin_port, self.recordings, upstream_tls
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """
        The twistd process (it runs the reactor itself: C{-n}).
        """
        assert self._process is not None, "the gateway is not running"
        return self._process.pid

    def _healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.admin_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200) and _port_open(self.port)
        except (OSError, urllib.error.URLError):
            return False

    def start(self) -> None:
        """
        Start it and wait until its admin and PostgreSQL listeners answer.
        """
        self.recordings.mkdir(parents=True)
        config = self.folder / "hoopgate.yaml"
        config.write_text(self._config)
        command = [str(VENV_BIN / "twistd"), "-n", "--pidfile="]
        command += ["-l", str(self.folder / "hoopgate.log")]
        command += ["hoopgate", "--config", str(config)]
        with (self.folder / "twistd.out").open("wb") as out:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=ROOT
            )
        try:
            _wait(self._healthy, self._alive, "hoopgate")
        except BenchError as e:
            log = _tail_file(self.folder / "hoopgate.log")
            out_text = _tail_file(self.folder / "twistd.out")
            raise BenchError(f"{e}\n{out_text}\n{log}") from None

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """
        SIGTERM, then SIGKILL after L{STOP_TIMEOUT}.
        """
        if self._process is not None:
            _stop_process(self._process)
            self._process = None

    def clear_recordings(self) -> None:
        """
        Remove the recordings of finished sessions (bounded disk use).
        """
        for path in self.recordings.iterdir():
            path.unlink()


# --- PgBouncer -------------------------------------------------------------------


class PgBouncer:
    """
    Debian's pgbouncer in session pooling, run as C{postgres} (it refuses
    root), with the same TLS on both legs as the gateway's row.

    Args:
        folder: Holds its ini, user list, key and log (created, owned by
            C{postgres}).
        servers: The variables of the services' env file.
        tls: TLS toward the client and toward PostgreSQL (verify-full),
            or none.
    """

    def __init__(self, folder: Path, servers: dict[str, str], tls: bool) -> None:
        self.folder = folder
        self.servers = servers
        self.tls = tls
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    def _ini(self) -> str:
        folder = self.folder
        client = "require" if self.tls else "disable"
        server = "verify-full" if self.tls else "disable"
        return f"""\
; Written by bench/servers.py.
[databases]
{DATABASE} = host=127.0.0.1 port={int(self.servers["PG_PORT"])} dbname={DATABASE}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {folder}/userlist.txt
pool_mode = session
max_client_conn = 512
default_pool_size = 64
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
client_tls_sslmode = {client}
client_tls_cert_file = {folder}/tls.crt
client_tls_key_file = {folder}/tls.key
server_tls_sslmode = {server}
server_tls_ca_file = {folder}/tls.crt
"""

    def _write_files(self) -> None:
        self.folder.mkdir(mode=0o700)
        shutil.copy(self.servers["TLS_CERT"], self.folder / "tls.crt")
        shutil.copy(self.servers["TLS_KEY"], self.folder / "tls.key")
        password = self.servers["APP_PASSWORD"]
        (self.folder / "userlist.txt").write_text(f'"{ROLE}" "{password}"\n')
        (self.folder / "pgbouncer.ini").write_text(self._ini())
        for path in [self.folder, *self.folder.iterdir()]:
            shutil.chown(path, "postgres", "postgres")
            path.chmod(0o700 if path.is_dir() else 0o600)

    @property
    def pid(self) -> int:
        """
        pgbouncer's own process (runuser's child), from its pidfile.
        """
        assert self._pid is not None, "pgbouncer is not running"
        return self._pid

    def _read_pid(self) -> bool:
        try:
            self._pid = int((self.folder / "pgbouncer.pid").read_text())
        except (OSError, ValueError):
            return False
        return _port_open(self.port)

    def start(self) -> None:
        """
        Start it and wait until it accepts connections.
        """
        self._write_files()
        command = ["runuser", "-u", "postgres", "--", "pgbouncer"]
        command.append(str(self.folder / "pgbouncer.ini"))
        with (self.folder / "pgbouncer.out").open("wb") as out:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        try:
            _wait(self._read_pid, self._alive, "pgbouncer")
        except BenchError as e:
            log = _tail_file(self.folder / "pgbouncer.log")
            raise BenchError(f"{e}\n{log}") from None

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """
        SIGTERM to pgbouncer (runuser then exits), SIGKILL if it lingers.
        """
        if self._process is None:
            return
        if self._pid is not None and self._process.poll() is None:
            try:
                os.kill(self._pid, signal.SIGTERM)
                self._process.wait(STOP_TIMEOUT)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        _stop_process(self._process)
        self._process = None
        self._pid = None
