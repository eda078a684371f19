"""
The servers a benchmark run starts, and the processes' figures it reads.

  - L{Services}: PostgreSQL 15 and the OIDC issuer of C{tests/services.sh},
    in their own run directory;
  - L{Gateway}: C{twistd -n hoopgate} with recording on, in front of them
    (with or without masking rules);
  - L{SshGateway}: the same with an SSH listener in front of the test sshd;
  - L{Bastion}: a second throwaway sshd, the jump host of C{ssh -J};
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

from bench.report import SSH_CTR

__all__ = [
    "MASKED_COLUMNS",
    "MASKED_TABLE",
    "ROOT",
    "SSH_TARGET",
    "Bastion",
    "BenchError",
    "Endpoint",
    "Gateway",
    "PgBouncer",
    "Services",
    "SshGateway",
    "cpu_seconds",
    "free_port",
    "gateway_config",
    "peak_rss_kib",
    "reset_peak_rss",
    "rss_kib",
    "ssh_gateway_config",
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

#: The table of the masking row, created by the benchmark (owned by C{ROLE}).
MASKED_TABLE = "public.bench_people"

#: Its columns that the masking gateway's rule redacts (the fourth, C{id},
#: is relayed as it is).
MASKED_COLUMNS = ("email", "ssn", "card")

#: The SSH gateway's target: the test sshd of C{tests/services.sh}.
SSH_TARGET = "box"


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


def _gateway_head(servers: dict[str, str], admin_port: int, recordings: Path) -> str:
    """
    What every benchmark gateway shares: the admin listener, recording to
    C{recordings} (a failed write closes the session), the memory store,
    the built-in plugins and the test issuer.
    """
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
"""


def _masking_yaml() -> str:
    columns = ", ".join(f"{MASKED_TABLE}.{c}" for c in MASKED_COLUMNS)
    return f"""\
  # The masking row's rule: three columns of {MASKED_TABLE} redacted whole.
  masking:
    rules:
      - name: bench-columns
        columns: [{columns}]
        strategy: redact
"""


def gateway_config(
    servers: dict[str, str],
    pg_port: int,
    admin_port: int,
    recordings: Path,
    upstream_tls: bool,
    *,
    masking: bool = False,
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
        masking: Add the masking row's rule (L{MASKED_COLUMNS} of
            L{MASKED_TABLE} redacted); without it no masking rule is loaded.
    """
    password_file = Path(servers["HG_RUN"]) / "pg" / f"{ROLE}.pw"
    if upstream_tls:
        tls = f"mode: verify-full\n      ca: {_yaml(servers['TLS_CERT'])}"
    else:
        tls = "mode: disable"
    text = (
        _gateway_head(servers, admin_port, recordings)
        + f"""\

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
    )
    return text + (_masking_yaml() if masking else "")


def ssh_gateway_config(
    servers: dict[str, str],
    ssh_port: int,
    admin_port: int,
    recordings: Path,
    host_key: Path,
) -> str:
    """
    The SSH gateway's configuration: one SSH listener (token login), the
    test sshd as target L{SSH_TARGET} (pinned host key, the client key the
    test servers authorised), recording to C{recordings}, one access rule
    for C{ci-runner}, and a command allow-list judging every exec: the
    benchmark's two commands and nothing else.

    Args:
        servers: The variables of the services' env file.
        ssh_port: The SSH listener's port.
        admin_port: The admin listener's port.
        recordings: The recordings folder.
        host_key: The listener's host key file (created on first start).
    """
    return (
        _gateway_head(servers, admin_port, recordings)
        + f"""\

listeners:
  - name: ssh
    protocol: ssh
    listen: "tcp:{ssh_port}:interface=127.0.0.1"
    host_key: {_yaml(str(host_key))}
    failure_delay: 0.2s
    login_timeout: 30s

targets:
  - name: {SSH_TARGET}
    protocol: ssh
    host: {_yaml(servers["SSH_HOST"])}
    port: {int(servers["SSH_PORT"])}
    known_hosts: {_yaml(servers["SSH_KNOWN_HOSTS"])}
    credentials:
      - name: main
        user: {_yaml(servers["SSH_USER"])}
        private_key: {{file: {_yaml(servers["SSH_CLIENT_KEY"])}}}

policy:
  version: 1
  access:
    - name: bench-ssh
      subjects: [ci-runner]
      targets: [{SSH_TARGET}]
      credential: main
      session_limit: 8h
      on_token_expiry: close
  # Judged for every exec; the benchmark runs only these.
  guardrails:
    - name: bench-commands
      targets: [{SSH_TARGET}]
      allow_only:
        command_lines: ["head -c * /dev/zero", "wc -c", "true"]
"""
    )


class Gateway:
    """
    C{twistd -n hoopgate} in a folder of its own.

    Args:
        folder: Holds its configuration, log and recordings (created).
        servers: The variables of the services' env file.
        upstream_tls: TLS toward PostgreSQL, or none.
        masking: Load the masking row's rule (L{gateway_config}).

    Attributes:
        port: Its protocol listener's port.
    """

    def __init__(
        self,
        folder: Path,
        servers: dict[str, str],
        upstream_tls: bool,
        *,
        masking: bool = False,
    ):
        self.folder = folder
        self.recordings = folder / "recordings"
        self.port = free_port()
        self.admin_port = free_port()
        self._config = gateway_config(
            servers,
            self.port,
            self.admin_port,
            self.recordings,
            upstream_tls,
            masking=masking,
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


class SshGateway(Gateway):
    """
    C{twistd -n hoopgate} with one SSH listener in front of the test sshd
    (L{ssh_gateway_config}); C{port} is the SSH listener's.

    Args:
        folder: Holds its configuration, host key, log and recordings
            (created).
        servers: The variables of the services' env file.
    """

    def __init__(self, folder: Path, servers: dict[str, str]) -> None:
        self.folder = folder
        self.recordings = folder / "recordings"
        self.host_key = folder / "ssh_host_ed25519"
        self.port = free_port()
        self.admin_port = free_port()
        self._config = ssh_gateway_config(
            servers, self.port, self.admin_port, self.recordings, self.host_key
        )
        self._process = None

    def host_public_key(self) -> str:
        """
        The listener's host public key (C{TYPE BASE64}), written at start.
        """
        text = self.host_key.with_name(self.host_key.name + ".pub").read_text()
        return " ".join(text.split()[:2])


# --- the jump host ---------------------------------------------------------------


class Bastion:
    """
    A second throwaway OpenSSH sshd on loopback, the jump host of
    C{ssh -J}: key login only (the test servers' client key), TCP
    forwarding on, nothing else. Runs as root, like the test sshd.

    Args:
        folder: Holds its configuration, host key and log (created).
        servers: The variables of the services' env file.
    """

    def __init__(self, folder: Path, servers: dict[str, str]) -> None:
        self.folder = folder
        self.servers = servers
        self.port = free_port()
        self.host_key = folder / "host_ed25519"
        self._process: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        folder = self.folder
        return f"""\
# Written by bench/servers.py.
ListenAddress 127.0.0.1
Port {self.port}
HostKey {folder}/host_ed25519
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
PermitTTY no
X11Forwarding no
LogLevel INFO
"""

    def _write_files(self) -> None:
        self.folder.mkdir(mode=0o700)
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-bastion"]
        done = subprocess.run(
            [*keygen, "-f", str(self.host_key)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"ssh-keygen for the bastion: {tail(done.stderr)}")
        client = Path(self.servers["SSH_CLIENT_KEY"] + ".pub").read_text()
        (self.folder / "authorized_keys").write_text(client)
        (self.folder / "sshd_config").write_text(self._config())
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    def host_public_key(self) -> str:
        """
        Its host public key (C{TYPE BASE64}).
        """
        text = self.host_key.with_name(self.host_key.name + ".pub").read_text()
        return " ".join(text.split()[:2])

    def start(self) -> None:
        """
        Start it and wait until its port accepts.
        """
        self._write_files()
        config = str(self.folder / "sshd_config")
        check = subprocess.run(
            ["/usr/sbin/sshd", "-t", "-f", config],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check.returncode != 0:
            raise BenchError(f"the bastion's sshd_config: {tail(check.stderr)}")
        # -D -e: foreground, log to stderr; sshd re-execs by its absolute path.
        with (self.folder / "sshd.log").open("wb") as out:
            self._process = subprocess.Popen(
                ["/usr/sbin/sshd", "-D", "-e", "-f", config],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        try:
            _wait(lambda: _port_open(self.port), self._alive, "the bastion sshd")
        except BenchError as e:
            raise BenchError(f"{e}\n{_tail_file(self.folder / 'sshd.log')}") from None

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """
        SIGTERM, then SIGKILL after L{STOP_TIMEOUT}; sessions still open
        end with their clients.
        """
        if self._process is not None:
            _stop_process(self._process)
            self._process = None


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


# --- SSH clients ---------------------------------------------------------------


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(mode)


class SshClients:
    """
    How the OpenSSH client reaches the sshd as each SSH contender, all from
    one C{ssh_config} file (C{-F}, so nothing of C{~/.ssh} applies; ssh
    hands it on to the ProxyJump process too):

      - C{direct}: the test sshd, with the client key;
      - C{proxyjump}: the same sshd through L{Bastion} (C{ssh -J}), the
        client key on both hops;
      - C{hoopgate}: the gateway's SSH listener as target L{SSH_TARGET},
        the token answering its keyboard-interactive prompt through an
        C{SSH_ASKPASS} script (never on a command line);
      - C{direct-ctr}, C{proxyjump-ctr}: as C{direct} and C{proxyjump},
        every connection held to C{SSH_CTR}, the cipher and MAC the client
        and the gateway agree on.

    Args:
        folder: Holds the configuration, known hosts, token and askpass
            script (created).
        servers: The variables of the services' env file.
        bastion: The started jump host.
        gateway: The started SSH gateway.
        token: The token the gateway sessions log in with.
    """

    def __init__(
        self,
        folder: Path,
        servers: dict[str, str],
        bastion: Bastion,
        gateway: SshGateway,
        token: str,
    ) -> None:
        folder.mkdir(mode=0o700)
        self.folder = folder
        self.config = folder / "ssh_config"
        known_hosts = folder / "known_hosts"
        sshd_key = Path(servers["SSH_HOST_KEY_PUB"]).read_text().split()[:2]
        known_hosts.write_text(
            f"[127.0.0.1]:{int(servers['SSH_PORT'])} {' '.join(sshd_key)}\n"
            f"[127.0.0.1]:{bastion.port} {bastion.host_public_key()}\n"
            f"[127.0.0.1]:{gateway.port} {gateway.host_public_key()}\n"
        )
        token_file = folder / "token"
        _write_private(token_file, token)
        self.askpass = folder / "askpass"
        _write_private(self.askpass, f"#!/bin/sh\nexec cat '{token_file}'\n", 0o700)
        self.config.write_text(
            self._config(servers, bastion.port, gateway.port, known_hosts)
        )

    @staticmethod
    def _config(
        servers: dict[str, str], bastion_port: int, gateway_port: int, known: Path
    ) -> str:
        # ssh takes the first value it reads of an option: the hosts' own
        # settings come before the common ones.
        user = servers["SSH_USER"]
        return f"""\
# Written by bench/servers.py.
Host target
  HostName 127.0.0.1
  Port {int(servers["SSH_PORT"])}
  User {user}
Host bastion
  HostName 127.0.0.1
  Port {bastion_port}
  User {user}
Host target-ctr
  HostName 127.0.0.1
  Port {int(servers["SSH_PORT"])}
  User {user}
  Ciphers {SSH_CTR[0]}
  MACs {SSH_CTR[1]}
Host bastion-ctr
  HostName 127.0.0.1
  Port {bastion_port}
  User {user}
  Ciphers {SSH_CTR[0]}
  MACs {SSH_CTR[1]}
Host hoopgate
  HostName 127.0.0.1
  Port {gateway_port}
  User {SSH_TARGET}
  PubkeyAuthentication no
  PreferredAuthentications keyboard-interactive,password
  NumberOfPasswordPrompts 1
  BatchMode no
Host *
  IdentityFile {servers["SSH_CLIENT_KEY"]}
  IdentitiesOnly yes
  IdentityAgent none
  BatchMode yes
  UserKnownHostsFile {known}
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  UpdateHostKeys no
  ConnectTimeout 10
  LogLevel ERROR
  ControlMaster no
  ControlPath none
  ForwardAgent no
  ForwardX11 no
  RequestTTY no
  ServerAliveInterval 0
"""

    def argv(self, contender: str, command: str, *, verbose: bool = False) -> list[str]:
        """
        C{ssh} running C{command} as C{contender}.
        """
        argv = ["ssh", "-F", str(self.config)]
        if verbose:
            argv.append("-v")
        if contender == "direct":
            return [*argv, "target", command]
        if contender == "proxyjump":
            return [*argv, "-J", "bastion", "target", command]
        if contender == "hoopgate":
            return [*argv, "hoopgate", command]
        if contender == "direct-ctr":
            return [*argv, "target-ctr", command]
        if contender == "proxyjump-ctr":
            return [*argv, "-J", "bastion-ctr", "target-ctr", command]
        raise ValueError(f"no SSH contender {contender!r}")

    def env(self, contender: str) -> dict[str, str]:
        """
        The environment for C{contender}'s ssh: a minimal one, with the
        askpass script for the gateway.
        """
        keep = ("PATH", "LANG", "LC_ALL")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env["HOME"] = os.environ.get("HOME", "/root")
        if contender == "hoopgate":
            env.update(SSH_ASKPASS=str(self.askpass), SSH_ASKPASS_REQUIRE="force")
        return env
