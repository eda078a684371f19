"""
Grant and session modes end to end, with the operator CLI: a statement
refused with a request id runs once approved (normalised the same), as
often as the grant allows and only within its window; access to a
target is asked for with C{hoopgate approvals request}, approved with
C{hoopgate approvals approve}, admits sessions until it expires and then
ends the live one.

test-case-name: tests.integration.test_approvals_grant
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.approvals import (
    Approver,
    hits,
    pending,
    scratch,
    start_approval_gateway,
)
from tests.support.gateway import RunningGateway, lines_of, wait_for
from tests.support.servers import approval_servers

__all__ = ["approval_servers"]

pytestmark = pytest.mark.timeout(120)

RULES = """\
    - name: grant-once
      mode: grant
      targets: [appdb]
      approvers: [dba]
      window: 1h
      uses: 1
      when: {writes: [jit_grant]}
    - name: grant-short
      mode: grant
      targets: [appdb]
      approvers: [dba]
      window: 3s
      uses: 5
      when: {writes: [jit_grant_short]}
    - name: jit-access
      mode: session
      subjects: [ci-runner]
      targets: [appdb_ro]
      approvers: [dba]
      window: 1h
"""

REQUEST_ID = re.compile(r"request ([0-9a-f]{16})")


@pytest.fixture(scope="module")
def gateway(
    approval_servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    scratch(approval_servers, "jit_grant", "jit_grant_short")
    running = start_approval_gateway(
        approval_servers, tmp_path_factory.mktemp("grants"), RULES
    )
    try:
        yield running
    finally:
        running.stop()


def run(gateway: RunningGateway, sql: str) -> tuple[int, str]:
    done = gateway.psql(gateway.token(), "-c", sql)
    return done.returncode, done.stdout.strip() or done.stderr.strip()


class TestGrant:
    """
    Refused at once, allowed once approved.
    """

    def test_used_within_window(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        The first try is refused with a request id; once approved the
        same statement (spaced and cased differently) runs once, and a
        third try needs approval again.
        """
        alice = Approver(approval_servers, "alice", gateway)

        code, first = run(gateway, "update jit_grant set hits = hits + 1 where id = 1")
        [request_id] = REQUEST_ID.findall(first)
        status, body = alice.vote(request_id, reason="one-off fix")
        used = run(gateway, "UPDATE  jit_grant SET hits = hits + 1\n WHERE id = 1;")
        again = run(gateway, "update jit_grant set hits = hits + 1 where id = 1")

        assert code != 0
        assert "this needs approval: request" in first and "(rule grant-once)" in first
        assert (status, body["state"]) == (200, "approved")
        assert used == (0, "UPDATE 1")
        assert again[0] != 0 and "needs approval" in again[1]
        assert REQUEST_ID.findall(again[1]) != [request_id]
        assert hits(approval_servers, "jit_grant", 1) == 1

    def test_other_literal_not_covered(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        A grant covers its statement with its literals only.
        """
        alice = Approver(approval_servers, "alice", gateway)
        _, first = run(gateway, "update jit_grant set hits = hits + 1 where id = 2")
        [request_id] = REQUEST_ID.findall(first)
        alice.vote(request_id)

        other = run(gateway, "update jit_grant set hits = hits + 1 where id = 3")
        mine = run(gateway, "update jit_grant set hits = hits + 1 where id = 2")

        assert other[0] != 0 and "needs approval" in other[1]
        assert mine == (0, "UPDATE 1")
        assert hits(approval_servers, "jit_grant", 3) == 0

    def test_expired(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        Within its window a grant is used as often as it allows; after
        the window it is gone.
        """
        alice = Approver(approval_servers, "alice", gateway)
        sql = "update jit_grant_short set hits = hits + 1 where id = 1"
        _, first = run(gateway, sql)
        [request_id] = REQUEST_ID.findall(first)
        alice.vote(request_id)
        approved = time.monotonic()

        inside = [run(gateway, sql) for _ in range(2)]
        assert time.monotonic() - approved < 3, "too slow to test a 3 s window"
        wait_for(lambda: time.monotonic() - approved > 3.5, 10, "the window to pass")
        after = run(gateway, sql)

        assert inside == [(0, "UPDATE 1"), (0, "UPDATE 1")]
        assert after[0] != 0 and "needs approval" in after[1]
        assert hits(approval_servers, "jit_grant_short", 1) == 2


class TestSessionAccess:
    """
    Access to a whole target, asked for and approved with the CLI.
    """

    def test_granted_and_expired(
        self,
        approval_servers: dict[str, str],
        gateway: RunningGateway,
        tmp_path: object,
    ) -> None:
        """
        Without access the login is refused with how to ask; the CLI asks,
        an approver approves with the CLI, sessions are admitted and the
        recording names the approver; when the access ends the live
        session is ended and new ones are refused again.
        """
        token = gateway.token()
        before = gateway.psql(token, "-c", "select 1", target="appdb_ro")
        asked = gateway.cli(
            "approvals",
            "request",
            "appdb_ro",
            "--for",
            "5s",
            "--reason",
            "incident 42",
            "--token",
            token,
        )
        [request_id] = REQUEST_ID.findall(asked.stdout)
        listed = gateway.cli("approvals", "list")
        password_file = approval_servers["LDAP_USER_PASSWORD_FILE"]
        approved = gateway.cli(
            "approvals",
            "approve",
            request_id,
            "--user",
            "alice",
            "--password-file",
            password_file,
            "--reason",
            "on call",
        )
        conn = psycopg.connect(
            **gateway.connect_args(gateway.token(), target="appdb_ro"), autocommit=True
        )
        inside = conn.execute("select 1").fetchone()
        session = gateway.session_of(conn.info.password)

        def ended() -> bool:
            try:
                conn.execute("select 1")
            except psycopg.OperationalError:
                return True
            return False

        wait_for(ended, 15, "the session to end with its access")
        conn.close()
        after = gateway.psql(gateway.token(), "-c", "select 1", target="appdb_ro")
        granted = [
            x
            for x in lines_of(gateway.recording_lines(session), "approval")
            if x["state"] == "access_granted"
        ]
        closed = lines_of(gateway.recording_lines(session), "session.closed")

        assert before.returncode != 0
        assert (
            "access to appdb_ro needs approval: hoopgate approvals request appdb_ro"
            in before.stderr
        )
        assert asked.returncode == 0, asked.stderr
        assert "sent to 2 approvers; 1 must approve" in asked.stdout
        assert request_id in listed.stdout and "incident 42" in listed.stdout
        assert approved.returncode == 0, approved.stderr
        assert "approved" in approved.stdout
        assert inside == (1,)
        assert (
            granted
            and granted[0]["votes"][0]["approver"]
            == "uid=alice,ou=people,dc=example,dc=org"
        )
        assert closed and closed[0]["reason"] == "access_expired"
        assert after.returncode != 0 and "needs approval" in after.stderr

    def test_request_refused(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        Asking for more than the rule allows, without a reason, for a
        target that needs no approval, or with a bad token is refused.
        """
        token = gateway.token()
        too_long = gateway.cli(
            "approvals",
            "request",
            "appdb_ro",
            "--for",
            "2h",
            "--reason",
            "x",
            "--token",
            token,
        )
        no_rule = gateway.cli(
            "approvals",
            "request",
            "appdb",
            "--for",
            "1h",
            "--reason",
            "x",
            "--token",
            token,
        )
        bad_token = gateway.cli(
            "approvals",
            "request",
            "appdb_ro",
            "--for",
            "1h",
            "--reason",
            "x",
            "--token",
            "nope",
        )
        bad_login = gateway.cli(
            "approvals",
            "approve",
            "0123456789abcdef",
            "--user",
            "alice",
            "--password-file",
            "/dev/null",
        )

        assert too_long.returncode == 1 and "at most 3600 s" in too_long.stderr
        assert no_rule.returncode == 1 and "needs no approval" in no_rule.stderr
        assert bad_token.returncode == 1 and "(401)" in bad_token.stderr
        assert bad_login.returncode == 1 and "(401)" in bad_login.stderr
        assert all(r["reason"] != "x" for r in pending(gateway))
