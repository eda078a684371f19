"""
Approvals when parts fail or are many: the directory unreachable (nothing
is approvable; the requester gets a clear error, the operator a log
line), Redis stopped and restarted while a statement is held (new holds
fail closed meanwhile; the held one survives and is decided after the
restart), and two gateways sharing Redis, where a decision taken on one
reaches the statement held by the other.

test-case-name: tests.integration.test_approvals_outage
"""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_approvals_hold import Psql, update
from tests.support.approvals import (
    Approver,
    hits,
    pending,
    request_of,
    scratch,
    start_approval_gateway,
)
from tests.support.gateway import free_ports, lines_of, wait_for
from tests.support.redis import PrivateRedis
from tests.support.servers import approval_servers

__all__ = ["approval_servers"]

pytestmark = pytest.mark.timeout(180)

RULES = """\
    - name: outage-hold
      mode: hold
      targets: [appdb]
      approvers: [dba]
      timeout: 10m
      when: {writes: [jit_outage]}
"""


def listing(admin_url: str) -> int:
    """
    The status of GET /approvals.
    """
    try:
        with urllib.request.urlopen(f"{admin_url}/approvals", timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as e:
        with e:
            return int(e.code)


def test_directory_down(approval_servers: dict[str, str], tmp_path: Path) -> None:
    """
    With the directory unreachable a held statement is refused at once,
    with a message saying approval is unavailable, and the log says why.
    """
    scratch(approval_servers, "jit_outage")
    [closed] = free_ports(1)
    gateway = start_approval_gateway(
        approval_servers, tmp_path, RULES, ldap_url=f"ldap://127.0.0.1:{closed}"
    )
    try:
        done = gateway.psql(gateway.token(), "-c", update("jit_outage", 1))
        after = gateway.psql(gateway.token(), "-c", "select 5")
        log = gateway.log_path.read_text()
    finally:
        gateway.stop()

    assert done.returncode != 0
    assert (
        "approval is unavailable right now, so this is refused (rule outage-hold)"
        in done.stderr
    )
    assert after.stdout.strip() == "5"
    assert (
        f"the directory at ldap://127.0.0.1:{closed} failed to find an identity" in log
    )
    assert hits(approval_servers, "jit_outage", 1) == 0


def test_redis_restarted_mid_hold(
    approval_servers: dict[str, str], tmp_path: Path
) -> None:
    """
    Redis stops while a statement is held: nothing can be listed or
    decided and new holds are refused, but the held statement waits; once
    Redis is back (empty), the gateway puts its request back and the
    approval runs the statement exactly once.
    """
    scratch(approval_servers, "jit_outage")
    redis = PrivateRedis(tmp_path / "redis")
    redis.start()
    try:
        gateway = start_approval_gateway(
            approval_servers,
            tmp_path / "gateway",
            RULES,
            redis_url=redis.url,
            redis_password_file=str(redis.password_file),
            poll="1s",
        )
        try:
            alice = Approver(approval_servers, "alice", gateway)
            psql = Psql(gateway, update("jit_outage", 2))
            request = request_of(gateway, "outage-hold")

            redis.stop()
            wait_for(
                lambda: listing(gateway.admin_url) == 503, 15, "the outage to show"
            )
            during = gateway.psql(gateway.token(), "-c", update("jit_outage", 3))
            vote_during = alice.vote(request["id"])
            still = psql.running()
            redis.start()
            wait_for(
                lambda: (
                    listing(gateway.admin_url) == 200
                    and any(r["id"] == request["id"] for r in pending(gateway))
                ),
                # Reconnect attempts are at most 2 s apart and the
                # requests are put back once subscriber and pool are
                # both up; 0.2-2.4 s were seen (outages of 0-20 s).
                20,
                "the held request to be back in Redis",
            )
            status, body = alice.vote(request["id"], reason="after the restart")
            code, out, err = psql.result()
            log = gateway.log_path.read_text()
        finally:
            gateway.stop()
    finally:
        redis.stop()

    assert during.returncode != 0
    assert "approval is unavailable right now" in during.stderr
    assert vote_during[0] == 503
    assert still
    assert (status, body["state"]) == (200, "approved")
    assert (code, out.strip()) == (0, "UPDATE 1"), err
    assert hits(approval_servers, "jit_outage", 2) == 1
    assert hits(approval_servers, "jit_outage", 3) == 0
    assert "is unreachable" in log


def test_two_gateways_share_redis(
    approval_servers: dict[str, str], tmp_path: Path
) -> None:
    """
    Two gateways on one Redis: a statement held by the first is decided
    on the second (its API, or a link followed on its page), and resumes
    at once on the first.
    """
    scratch(approval_servers, "jit_outage")
    shared = {
        "prefix": f"pair-{secrets.token_hex(4)}:",
        "link_secret": secrets.token_hex(24),
    }
    first = start_approval_gateway(approval_servers, tmp_path / "a", RULES, **shared)
    try:
        second = start_approval_gateway(
            approval_servers, tmp_path / "b", RULES, **shared
        )
        try:
            alice_on_b = Approver(approval_servers, "alice", second)
            held = Psql(first, update("jit_outage", 4))
            request = request_of(second, "outage-hold")
            status, body = alice_on_b.vote(request["id"], reason="decided on b")
            decided = time.monotonic()
            code, out, err = held.result()
            resumed = time.monotonic() - decided

            by_link = Psql(first, update("jit_outage", 5))
            other = request_of(second, "outage-hold")
            link = alice_on_b.link(other["id"]).replace(
                first.admin_url, second.admin_url
            )
            page = alice_on_b.decide_on_page(link, reason="link on b")
            link_code, link_out, link_err = by_link.result()
        finally:
            second.stop()
    finally:
        first.stop()

    assert (status, body["state"]) == (200, "approved")
    assert (code, out.strip()) == (0, "UPDATE 1"), err
    assert resumed < 1.0
    assert page.status == 200, page.text
    assert (link_code, link_out.strip()) == (0, "UPDATE 1"), link_err
    assert hits(approval_servers, "jit_outage", 4) == 1
    assert hits(approval_servers, "jit_outage", 5) == 1
    approved = [
        x
        for x in lines_of(first.recording_lines(request["session_id"]), "approval")
        if x["state"] == "approved"
    ]
    assert [(v["approver"], v["reason"]) for v in approved[0]["votes"]] == [
        (alice_on_b.dn, "decided on b")
    ]
