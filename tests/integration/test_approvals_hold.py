"""
Hold mode end to end: the gateway as a twistd subprocess with Redis as
its store, slapd as its directory and the SMTP sink for mail, psql and
psycopg as clients.  A held statement waits, unanswered, until decided:
approved (on the page a link opens, or through the API) it runs exactly
once and resumes within a second; denied, timed out or withdrawn (a
cancel, a disconnect) it is refused and the session goes on.  Quorum,
self-approval, non-members, members removed before deciding, replayed
links and link GETs that decide nothing are covered too, and guardrails
decide before approval.

test-case-name: tests.integration.test_approvals_hold
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.approvals import (
    Approver,
    hits,
    ldap_modify,
    pending,
    request_of,
    scratch,
    start_approval_gateway,
)
from tests.support.gateway import RunningGateway, lines_of, wait_for
from tests.support.servers import approval_servers

__all__ = ["approval_servers"]

pytestmark = pytest.mark.timeout(120)

TABLES = ("jit_hold", "jit_quorum", "jit_self", "jit_rotation", "jit_timeout")

RULES = """\
    - name: hold-updates
      mode: hold
      targets: [appdb]
      approvers: [dba]
      timeout: 10m
      when: {writes: [jit_hold]}
    - name: two-approvers
      mode: hold
      targets: [appdb]
      approvers: [dba]
      quorum: 2
      when: {writes: [jit_quorum]}
    - name: runner-group
      mode: hold
      targets: [appdb]
      approvers: [runner]
      when: {writes: [jit_self]}
    - name: rotation-group
      mode: hold
      targets: [appdb]
      approvers: [rotation]
      when: {writes: [jit_rotation]}
    - name: short-timeout
      mode: hold
      targets: [appdb]
      approvers: ["cn=dba-approvers,ou=groups,dc=example,dc=org"]
      timeout: 3s
      when: {writes: [jit_timeout]}
"""

GUARDRAILS = """\
    - name: no-unbounded-writes
      deny:
        shapes: [update_without_where, delete_without_where]
"""


@pytest.fixture(scope="module")
def gateway(
    approval_servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    scratch(approval_servers, *TABLES)
    running = start_approval_gateway(
        approval_servers,
        tmp_path_factory.mktemp("approvals"),
        RULES,
        guardrails=GUARDRAILS,
    )
    try:
        yield running
    finally:
        running.stop()


def approver(servers: dict[str, str], login: str, gateway: RunningGateway) -> Approver:
    return Approver(servers, login, gateway)


class Psql:
    """
    A psql run through the gateway, in the background.
    """

    def __init__(self, gateway: RunningGateway, sql: str) -> None:
        argv, env = gateway.psql_command(gateway.token(), "-c", sql)
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def result(self, timeout: float = 30.0) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err


def update(table: str, row: int) -> str:
    return f"update {table} set hits = hits + 1 where id = {row}"  # noqa: S608 - test constants


class TestHold:
    """
    One statement held, then decided.
    """

    def test_approved_on_the_page(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        Approvers other than the requester are mailed their own link;
        signing in on the page and approving runs the statement exactly
        once, within a second; the recording names approver and reason.
        """
        alice = approver(approval_servers, "alice", gateway)
        bob = approver(approval_servers, "bob", gateway)
        runner = approver(approval_servers, "ci-runner", gateway)
        psql = Psql(gateway, update("jit_hold", 1))

        request = request_of(gateway, "hold-updates")
        link = alice.link(request["id"])
        bob_link = bob.link(request["id"])
        assert psql.running()
        assert hits(approval_servers, "jit_hold", 1) == 0
        page = alice.decide_on_page(link, approve=True, reason="ticket OPS-1")
        decided = time.monotonic()
        code, out, err = psql.result()
        resumed = time.monotonic() - decided

        assert page.status == 200 and "approved" in page.text, page.text
        assert (code, out.strip()) == (0, "UPDATE 1"), err
        assert resumed < 1.0
        assert hits(approval_servers, "jit_hold", 1) == 1
        assert link != bob_link
        assert runner.mails(request["id"]) == []
        [line] = [
            x
            for x in lines_of(
                gateway.recording_lines(request["session_id"]), "approval"
            )
            if x["state"] == "approved"
        ]
        assert [(v["approver"], v["decision"], v["reason"]) for v in line["votes"]] == [
            (alice.dn, "approve", "ticket OPS-1")
        ]

    def test_denied(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        A denial refuses the statement with an error naming the rule;
        the session goes on.
        """
        bob = approver(approval_servers, "bob", gateway)
        result: dict[str, Any] = {}

        def client() -> None:
            with psycopg.connect(
                **gateway.connect_args(gateway.token()), autocommit=True
            ) as conn:
                try:
                    conn.execute(update("jit_hold", 2))
                except psycopg.Error as e:
                    result["error"] = e
                result["after"] = conn.execute("select 42").fetchone()

        thread = threading.Thread(target=client)
        thread.start()
        request = request_of(gateway, "hold-updates")
        status, body = bob.vote(request["id"], approve=False, reason="not in a freeze")
        thread.join(30)

        assert (status, body["state"]) == (200, "denied")
        error = result["error"]
        assert isinstance(error, psycopg.errors.InsufficientPrivilege)
        assert "an approver refused this (rule hold-updates)" in str(error)
        assert result["after"] == (42,)
        assert hits(approval_servers, "jit_hold", 2) == 0

    def test_timed_out(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        Without a decision the statement is refused once the rule's
        timeout passes, and a late approval is refused.
        """
        alice = approver(approval_servers, "alice", gateway)
        psql = Psql(gateway, update("jit_timeout", 1))
        request = request_of(gateway, "short-timeout")

        code, _, err = psql.result(timeout=30)
        late, body = alice.vote(request["id"])

        assert code != 0
        assert "no approver answered in time (rule short-timeout)" in err
        assert late == 409 and "timeout" in body["error"]
        assert hits(approval_servers, "jit_timeout", 1) == 0

    def test_withdrawn_by_cancel(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        A client's cancel withdraws the request: the statement is refused
        at once, nothing reaches the target, and approving is refused.
        """
        alice = approver(approval_servers, "alice", gateway)
        result: dict[str, Any] = {}
        conn = psycopg.connect(**gateway.connect_args(gateway.token()), autocommit=True)

        def client() -> None:
            try:
                conn.execute(update("jit_hold", 3))
            except psycopg.Error as e:
                result["error"] = e

        thread = threading.Thread(target=client)
        thread.start()
        request = request_of(gateway, "hold-updates")
        conn.cancel()
        thread.join(30)
        after = conn.execute("select 7").fetchone()
        conn.close()
        status, body = alice.vote(request["id"])

        assert "the approval request was withdrawn" in str(result["error"])
        assert after == (7,)
        assert (status, "withdrawn" in body["error"]) == (409, True)
        assert hits(approval_servers, "jit_hold", 3) == 0
        assert [r for r in pending(gateway) if r["id"] == request["id"]] == []

    def test_withdrawn_by_disconnect(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        A client that goes away withdraws its request.
        """
        psql = Psql(gateway, update("jit_hold", 4))
        request = request_of(gateway, "hold-updates")

        psql.process.send_signal(signal.SIGKILL)
        psql.result()
        wait_for(
            lambda: all(r["id"] != request["id"] for r in pending(gateway)),
            10,
            "the request to be withdrawn",
        )
        lines = lines_of(gateway.recording_lines(request["session_id"]), "approval")

        assert [x["state"] for x in lines] == ["requested", "withdrawn"]
        assert hits(approval_servers, "jit_hold", 4) == 0


class TestWhoMayDecide:
    """
    Quorum, self-approval, membership and links.
    """

    def test_quorum_of_two(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        The first approval keeps the statement waiting; the second runs it.
        """
        alice = approver(approval_servers, "alice", gateway)
        bob = approver(approval_servers, "bob", gateway)
        psql = Psql(gateway, update("jit_quorum", 1))
        request = request_of(gateway, "two-approvers")

        first = alice.vote(request["id"], reason="looks right")
        twice = alice.vote(request["id"])
        still = psql.running() and hits(approval_servers, "jit_quorum", 1) == 0
        listed = [r for r in pending(gateway) if r["id"] == request["id"]]
        second = bob.vote(request["id"])
        code, out, err = psql.result()

        assert first == (
            200,
            {
                "recorded": True,
                "state": "pending",
                "message": "approval recorded: 1 of 2",
                "approvals": 1,
                "quorum": 2,
            },
        )
        assert twice[0] == 409
        assert still
        assert listed[0]["approvals"] == 1
        assert second[1]["state"] == "approved"
        assert (code, out.strip()) == (0, "UPDATE 1"), err
        assert hits(approval_servers, "jit_quorum", 1) == 1

    def test_self_approval_refused(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        The requester, though in the approver group, is not mailed and may
        not approve; the other member may.
        """
        runner = approver(approval_servers, "ci-runner", gateway)
        alice = approver(approval_servers, "alice", gateway)
        psql = Psql(gateway, update("jit_self", 1))
        request = request_of(gateway, "runner-group")

        refused = runner.vote(request["id"])
        alice.link(request["id"])
        mailed_runner = runner.mails(request["id"])
        allowed = alice.vote(request["id"])
        code, _, err = psql.result()

        assert refused == (403, {"error": "nobody may approve their own request"})
        assert mailed_runner == []
        assert request["approvers"] == [alice.dn]
        assert allowed[1]["state"] == "approved"
        assert code == 0, err

    def test_non_member_refused(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        Someone outside the approver group may not approve, with a correct
        password or not.
        """
        carol = approver(approval_servers, "carol", gateway)
        alice = approver(approval_servers, "alice", gateway)
        psql = Psql(gateway, update("jit_hold", 5))
        request = request_of(gateway, "hold-updates")

        refused = carol.vote(request["id"])
        carol.password = "wrong"
        unknown = carol.vote(request["id"])
        alice.vote(request["id"], approve=False)
        psql.result()

        assert (
            refused[0] == 403
            and "not (or no longer) an approver" in refused[1]["error"]
        )
        assert unknown[0] == 401

    def test_member_removed_before_deciding(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        An approver removed from the group after being notified is refused.
        """
        dave = approver(approval_servers, "dave", gateway)
        alice = approver(approval_servers, "alice", gateway)
        group = "cn=rotation-approvers,ou=groups,dc=example,dc=org"
        psql = Psql(gateway, update("jit_rotation", 1))
        request = request_of(gateway, "rotation-group")
        link = dave.link(request["id"])
        ldap_modify(
            approval_servers,
            f"dn: {group}\nchangetype: modify\ndelete: member\nmember: {dave.dn}\n",
        )
        try:
            page = dave.decide_on_page(link)
            api = dave.vote(request["id"])
        finally:
            ldap_modify(
                approval_servers,
                f"dn: {group}\nchangetype: modify\nadd: member\nmember: {dave.dn}\n",
            )
        alice.vote(request["id"], approve=False)
        psql.result()

        assert page.status == 403 and "no longer" in page.text
        assert api[0] == 403
        assert dave.dn in request["approvers"]
        assert hits(approval_servers, "jit_rotation", 1) == 0

    def test_replayed_link_refused(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        A link decides once: replaying it, even on a request that still
        needs approvals, is refused.
        """
        alice = approver(approval_servers, "alice", gateway)
        bob = approver(approval_servers, "bob", gateway)
        psql = Psql(gateway, update("jit_quorum", 2))
        request = request_of(gateway, "two-approvers")
        link = alice.link(request["id"])

        first = alice.decide_on_page(link)
        replay = alice.decide_on_page(link)
        other = bob.sign_in(link)
        bob.vote(request["id"], approve=False)
        psql.result()

        assert first.status == 200 and "1 of 2" in first.text
        assert replay.status == 409 and "used already" in replay.text
        assert other.status == 403 and "another approver" in other.text

    def test_get_decides_nothing(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        Opening a link, however often, shows the request (literals masked)
        and decides nothing; a POST without the page's cookie is refused.
        """
        alice = approver(approval_servers, "alice", gateway)
        psql = Psql(
            gateway,
            "update jit_hold set hits = hits + 1 where id = 6 and 'secret-note' <> ''",
        )
        request = request_of(gateway, "hold-updates")
        link = alice.link(request["id"])

        pages = [alice.visit(link) for _ in range(3)]
        forged = Approver(approval_servers, "alice", gateway)._open(
            link, {"step": "decide", "decision": "approve", "csrf": "x", "sign_in": "x"}
        )
        still = psql.running() and any(
            r["id"] == request["id"] for r in pending(gateway)
        )
        alice.vote(request["id"], approve=False)
        psql.result()

        assert all(p.status == 200 for p in pages)
        assert "secret-note" not in pages[0].text and "[masked]" in pages[0].text
        assert "Opening this page decides nothing" in pages[0].text
        assert forged.status == 403
        assert still
        assert hits(approval_servers, "jit_hold", 6) == 0

    def test_guardrails_first(
        self, approval_servers: dict[str, str], gateway: RunningGateway
    ) -> None:
        """
        A statement a guardrail refuses never asks for approval.
        """
        before = {r["id"] for r in pending(gateway)}

        done = gateway.psql(
            gateway.token(), "-c", "update jit_hold set hits = hits + 1"
        )

        assert done.returncode != 0
        assert "statement blocked by policy (rule no-unbounded-writes)" in done.stderr
        assert {r["id"] for r in pending(gateway)} == before
