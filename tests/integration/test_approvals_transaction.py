"""
A statement held for approval inside an open transaction waits no longer
than the target's C{hold_in_transaction}: its request is withdrawn, the
client is told while its transaction is still alive, and nothing of the
held statement reaches the target.

test-case-name: tests.integration.test_approvals_transaction
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.approvals import (
    Approver,
    approval_yaml,
    hits,
    request_of,
    scratch,
)
from tests.support.gateway import RunningGateway, start_gateway
from tests.support.servers import approval_servers

__all__ = ["approval_servers"]

pytestmark = pytest.mark.timeout(120)

LIMIT = 2

RULES = """\
    - name: hold-in-tx
      mode: hold
      targets: [appdb]
      approvers: [dba]
      timeout: 10m
      when: {writes: [jit_tx]}
"""


def start(servers: dict[str, str], directory: Path) -> RunningGateway:
    directory.mkdir(parents=True, exist_ok=True)
    sections = approval_yaml(servers, directory)

    def edit(text: str) -> str:
        text = text.replace("  store:\n    kind: memory\n", sections)
        text = text.replace(
            "    allowed_options: []\n",
            f"    allowed_options: []\n    hold_in_transaction: {LIMIT}s\n",
        )
        return text.rstrip("\n") + "\n  approvals:\n" + RULES

    return start_gateway(servers, directory, edit=edit)


@pytest.fixture(scope="module")
def gateway(
    approval_servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    scratch(approval_servers, "jit_tx")
    running = start(approval_servers, tmp_path_factory.mktemp("approvals-tx"))
    try:
        yield running
    finally:
        running.stop()


class TestHoldInTransaction:
    """
    The transaction outlives no hold.
    """

    def test_withdrawn_at_the_limit(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        Inside BEGIN, the held UPDATE is refused once the limit passes,
        long before the rule's ten-minute timeout; the transaction then
        rolls back cleanly, and approving afterwards is refused.
        """
        alice = Approver(approval_servers, "alice", gateway)
        conn = psycopg.connect(**gateway.connect_args(gateway.token()))
        outcome: dict[str, object] = {}

        def run() -> None:
            started = time.monotonic()
            try:
                conn.execute("update jit_tx set hits = hits + 1 where id = 1")
                outcome["ok"] = True
            except psycopg.Error as e:
                outcome["error"] = e
            outcome["waited"] = time.monotonic() - started

        try:
            conn.execute("select 1")
            thread = threading.Thread(target=run)
            thread.start()
            request = request_of(gateway, "hold-in-tx")
            thread.join(30)
            conn.rollback()
            after = conn.execute("select 2").fetchone()
        finally:
            conn.close()
        status, _ = alice.vote(request["id"])

        assert "the approval request was withdrawn" in str(outcome["error"])
        assert LIMIT - 0.5 <= float(outcome["waited"]) < 60  # type: ignore[arg-type]
        assert after == (2,)
        assert status == 409
        assert hits(approval_servers, "jit_tx", 1) == 0

    def test_outside_a_transaction_no_limit(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        In autocommit the limit does not apply: the statement is still
        held after it, and runs once approved.
        """
        alice = Approver(approval_servers, "alice", gateway)
        conn = psycopg.connect(**gateway.connect_args(gateway.token()), autocommit=True)
        try:
            cursor = conn.cursor()
            done: dict[str, object] = {}

            def run() -> None:
                try:
                    cursor.execute("update jit_tx set hits = hits + 1 where id = 2")
                    done["ok"] = True
                except psycopg.Error as e:
                    done["error"] = e

            thread = threading.Thread(target=run)
            thread.start()
            request = request_of(gateway, "hold-in-tx")
            time.sleep(LIMIT + 1)
            assert thread.is_alive()
            status, _ = alice.vote(request["id"])
            thread.join(30)
        finally:
            conn.close()

        assert status == 200
        assert done == {"ok": True}
        assert hits(approval_servers, "jit_tx", 2) == 1
