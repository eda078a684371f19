"""
Operating the gateway with PostgreSQL sessions: bounded memory while a
large result streams through, configuration reload with a live session,
and the C{hoopgate sessions} command.

This module's gateway is its own (the reload test changes its policy and
the memory test wants a quiet process).

test-case-name: tests.integration.test_postgres_ops
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.error
import urllib.request
from typing import Any

import psycopg
import pytest

from tests.support.gateway import RunningGateway, lines_of

pytestmark = pytest.mark.timeout(240)

ROWS = 1_000_000
MAX_GROWTH_KIB = 64 * 1024
SAMPLE_EVERY = 0.1


class TestMemory:
    """
    A result far larger than the memory bound streams through.
    """

    @pytest.mark.parametrize(
        ("query", "pad"),
        [
            ("select g, md5(g::text) from generate_series(1, 1000000) g", 0),
            (
                "select g, md5(g::text), repeat(md5(g::text), 5)"
                " from generate_series(1, 1000000) g",
                5,
            ),
        ],
        ids=["50MB", "210MB"],
    )
    def test_million_rows_bounded_memory(
        self, gateway: RunningGateway, query: str, pad: int
    ) -> None:
        """
        One million rows (about 50 MB on the wire; 210 MB with padding, so
        that a gateway holding the result could not stay under the bound)
        stream to a psycopg client that reads one row at a time; every row
        arrives intact, and the gateway's RSS, sampled every 0.1 s, never
        grows by 64 MiB.
        """
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(SAMPLE_EVERY):
                samples.append(gateway.rss_kib())

        count = total = wrong = 0
        with psycopg.connect(**gateway.connect_args(gateway.token())) as conn:
            conn.execute("select 1")
            baseline = gateway.rss_kib()
            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                with conn.cursor() as cur:
                    for g, digest, *padding in cur.stream(query):
                        count += 1
                        total += g
                        if digest != hashlib.md5(str(g).encode()).hexdigest():  # noqa: S324
                            wrong += 1
                        if padding != ([digest * pad] if pad else []):
                            wrong += 1
            finally:
                stop.set()
                sampler.join(10)
        samples.append(gateway.rss_kib())

        assert (count, total, wrong) == (ROWS, ROWS * (ROWS + 1) // 2, 0)
        assert len(samples) > 5
        growth = max(samples) - baseline
        assert growth < MAX_GROWTH_KIB, f"RSS grew by {growth} KiB"


class TestReload:
    """
    hoopgate reload: new sessions follow the new policy, live ones go on.
    """

    def test_reload_refuses_new_keeps_live(self, gateway: RunningGateway) -> None:
        """
        After removing ci-runner's access to appdb_ro and running
        `hoopgate reload`, a session opened before keeps working, a new one
        to appdb_ro is refused (access.denied) and appdb still admits.
        """
        live = psycopg.connect(
            **gateway.connect_args(gateway.token(), target="appdb_ro")
        )
        try:
            before = live.execute(
                "select current_user, count(*) from customers group by 1"
            ).fetchone()
            gateway.write_config(ci_targets=["appdb", "appdb_md5", "appdb_trust"])
            reload = gateway.cli("reload")
            after = live.execute(
                "select current_user, count(*) from customers group by 1"
            ).fetchone()
            mark = gateway.recording_mark()
            with pytest.raises(psycopg.OperationalError) as refused:
                psycopg.connect(
                    **gateway.connect_args(gateway.token(), target="appdb_ro")
                )
            refusals = lines_of(gateway.lines_since(mark), "session.refused")
            with psycopg.connect(**gateway.connect_args(gateway.token())) as other:
                still = other.execute("select current_user").fetchone()
        finally:
            live.close()
            gateway.write_config()
            restored = gateway.cli("reload")

        assert before == ("app_ro", 1000)
        assert (reload.returncode, reload.stdout.strip()) == (0, "reloaded"), (
            reload.stderr
        )
        assert after == before
        assert "FATAL" in str(refused.value)
        assert [(x["target"], x["reason"]) for x in refusals] == [
            ("appdb_ro", "access.denied")
        ]
        assert still == ("app",)
        assert restored.returncode == 0, restored.stderr

    def test_invalid_config_keeps_running_one(self, gateway: RunningGateway) -> None:
        """
        A broken file: `hoopgate reload` refuses it itself (exit 2, the key
        named), the admin listener's POST /reload answers 400 with the
        error, and the gateway keeps its configuration and still admits.
        """
        good = gateway.config_path.read_text(encoding="utf-8")
        broken = good.replace("session_limit: 1h", "session_limit: soon")
        assert broken != good
        gateway.config_path.write_text(broken, encoding="utf-8")
        try:
            reload = gateway.cli("reload")
            status, body = _post(gateway.admin_url + "/reload")
        finally:
            gateway.config_path.write_text(good, encoding="utf-8")
        with psycopg.connect(
            **gateway.connect_args(gateway.token(), target="appdb_ro")
        ) as conn:
            row = conn.execute("select current_user").fetchone()

        assert reload.returncode == 2
        assert "session_limit" in reload.stderr
        assert status == 400
        assert "session_limit" in body["error"]
        assert row == ("app_ro",)


def _post(url: str) -> tuple[int, Any]:
    """
    POST nothing to the gateway's admin listener (loopback); the status
    and the decoded JSON body, for errors too.
    """
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.load(e)


class TestSessionsCommand:
    """
    hoopgate sessions list and show read the recordings.
    """

    def test_list_and_show(self, gateway: RunningGateway) -> None:
        """
        `sessions list` shows a live session of ci-runner on appdb as
        open, then closed; `sessions show ID` prints its statement.
        """
        token = gateway.token()
        statement = "select 40 + 2 as answer"

        with psycopg.connect(**gateway.connect_args(token, autocommit=True)) as conn:
            assert conn.execute(statement).fetchone() == (42,)
            session_id = gateway.session_of(token)
            live = _listed(gateway, session_id)
        gateway.wait_event(session_id, "session.closed")
        closed = _listed(gateway, session_id)
        text = gateway.cli("sessions", "list", "--limit", "1000")
        show = gateway.cli("sessions", "show", session_id)
        show_json = gateway.cli("sessions", "show", session_id, "--json")
        missing = gateway.cli("sessions", "show", "no-such-session")

        assert (live["subject"], live["target"], live["state"]) == (
            "ci-runner",
            "appdb",
            "open",
        )
        assert live["statements"] == 1
        assert closed["state"] == "closed"
        assert text.returncode == 0
        row = next(
            line for line in text.stdout.splitlines() if line.startswith(session_id)
        )
        assert row.split()[1:4] == ["closed", "ci-runner", "appdb"]
        assert show.returncode == 0, show.stderr
        assert statement in show.stdout
        assert "session.opened" in show.stdout
        recorded = [json.loads(line) for line in show_json.stdout.splitlines()]
        assert recorded == gateway.recording_lines(session_id)
        assert token not in show.stdout + show_json.stdout + text.stdout
        assert missing.returncode == 1


def _listed(gateway: RunningGateway, session_id: str) -> dict[str, Any]:
    listing = gateway.cli("sessions", "list", "--json", "--limit", "1000")
    assert listing.returncode == 0, listing.stderr
    rows = [r for r in json.loads(listing.stdout) if r["session_id"] == session_id]
    assert len(rows) == 1, listing.stdout
    row: dict[str, Any] = rows[0]
    return row
