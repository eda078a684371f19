"""
The gateway harness itself (L{tests.support.gateway}): a gateway that
cannot start fails fast and says why, with the tails of its output and log.

test-case-name: tests.integration.test_postgres_harness
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.support.gateway import (
    START_TIMEOUT,
    GatewayStartError,
    Ports,
    free_ports,
    start_gateway,
)

pytestmark = pytest.mark.timeout(120)


class TestStartFailures:
    """
    Start-up failures are reported with the gateway's own words.
    """

    def test_config_error_reported(
        self, servers: dict[str, str], tmp_path: Path
    ) -> None:
        """
        A configuration naming an unknown protocol makes twistd exit; the
        error says so at once (well before the start timeout) and quotes
        what twistd printed.
        """
        started = time.monotonic()

        with pytest.raises(GatewayStartError) as raised:
            start_gateway(
                servers,
                tmp_path,
                edit=lambda text: text.replace(
                    "protocol: postgres", "protocol: nosuch", 1
                ),
            )

        message = str(raised.value)
        assert "exited during start-up" in message
        assert "no plugin serves 'nosuch'" in message
        assert f"last lines of {tmp_path / 'twistd.out'}" in message
        assert f"last lines of {tmp_path / 'hoopgate.log'}" in message
        assert time.monotonic() - started < START_TIMEOUT

    def test_listen_failure_reported(
        self, servers: dict[str, str], tmp_path: Path
    ) -> None:
        """
        When the PostgreSQL listener's port is taken, the error holds the
        tail of the gateway's log, which reports the failed listen.
        """
        admin, plain = free_ports(2)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            ports = Ports(admin=admin, pg=taken.getsockname()[1], plain=plain)
            with pytest.raises(GatewayStartError) as raised:
                start_gateway(servers, tmp_path, ports=ports, timeout=15)

        log_tail = str(raised.value).split(
            f"last lines of {tmp_path / 'hoopgate.log'}"
        )[1]
        assert f"Couldn't listen on 127.0.0.1:{ports.pg}" in log_tail
        assert "Address already in use" in log_tail
