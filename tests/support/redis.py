"""
A private Redis for tests that stop and restart it (the shared one of
C{tests/services.sh} must stay up for everyone else).

L{PrivateRedis} runs C{redis-server} on a free loopback port with a
password, no persistence (a restart loses every key, as the tests of
lost state want), its files in a folder of the test's own.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from pathlib import Path

from tests.support.gateway import free_ports

__all__ = ["PrivateRedis"]


class PrivateRedis:
    """
    A C{redis-server} of one test, started and stopped on demand.

    Args:
        directory: Its folder (config, log).
        port: Its port; a free one by default.

    Attributes:
        port: The port, kept across restarts.
        password: Its C{requirepass}.
        password_file: The password in a file, for the gateway's config.
    """

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_ports(1)[0]
        self.password = secrets.token_hex(16)
        self.password_file = directory / "redis.pw"
        self.password_file.write_text(self.password)
        self.password_file.chmod(0o600)
        conf = directory / "redis.conf"
        conf.write_text(f"requirepass {self.password}\n")
        conf.chmod(0o600)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """
        C{redis://127.0.0.1:PORT/0}.
        """
        return f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> str:
        """
        Run C{redis-cli} against it and return what it printed.
        """
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            env={"REDISCLI_AUTH": self.password},
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.stdout.strip()

    def start(self, timeout: float = 10.0) -> None:
        """
        Start it and wait (bounded) until it answers PING.
        """
        self._process = subprocess.Popen(
            [
                "redis-server",
                str(self.directory / "redis.conf"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while self.cli("ping") != "PONG":
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"private redis on port {self.port} did not start: "
                    + (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """
        Stop it (SIGTERM, then SIGKILL after 5 s) and wait until it is gone.
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
