"""
Tests for L{hoopgate._recording} and L{hoopgate._redact}: JSON-lines
recordings with nothing secret in them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from hoopgate._chain import Chain, Context
from hoopgate._events import (
    Event,
    SessionClosed,
    SessionOpened,
    SessionRequested,
    StatementPart,
    StatementReceived,
)
from hoopgate._identity import Identity
from hoopgate._interfaces import IObserver
from hoopgate._recording import FORMAT_VERSION, Recorder, read_recording
from hoopgate._redact import REDACTED, redact_passwords
from hoopgate._verdicts import (
    ALLOW,
    Allow,
    Deny,
    DenyReason,
    Hold,
    Note,
    Rewrite,
    Verdict,
)

SESSION = "20260101T000000Z-0a1b2c3d4e"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.secret-token-body.signature"
ALICE = Identity(
    subject="alice",
    issuer="https://id.test",
    groups=("dba",),
    token_id_hash="ab12",
)
CONTEXT = Context(
    session_id=SESSION,
    protocol="postgres",
    target="db",
    identity=ALICE,
    policy=None,
)


def statement(text: str, number: int = 1) -> StatementReceived:
    return StatementReceived(
        session_id=SESSION,
        protocol="postgres",
        at=1.0,
        statement_id=f"{SESSION}.{number}",
        text=text,
    )


def closed() -> SessionClosed:
    return SessionClosed(session_id=SESSION, protocol="postgres", reason="client")


class RecorderTestCase(SynchronousTestCase):
    """
    A L{Recorder} writing into a fresh folder.
    """

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="hoopgate-rec-")
        self.addCleanup(shutil.rmtree, self.folder, ignore_errors=True)
        self.failed: list[str] = []
        self.recorder = Recorder(self.folder, on_failure=self.failed.append)
        self.addCleanup(self.recorder.close)

    def record(
        self, event: Event, verdict: Verdict = ALLOW, context: Context = CONTEXT
    ) -> None:
        self.recorder.observe(event, verdict, context)

    def lines(self) -> list[dict[str, Any]]:
        """
        The session's recording as it is on disk now.
        """
        return read_recording(self.recorder.path_for(SESSION))

    def raw(self) -> str:
        return self.recorder.path_for(SESSION).read_text(encoding="utf-8")


class RecorderTests(RecorderTestCase):
    """
    Each event becomes one flushed JSON line with a common envelope.
    """

    def test_observer(self) -> None:
        """
        A recorder is a chain observer.
        """
        assert verifyObject(IObserver, self.recorder)

    def test_envelope(self) -> None:
        """
        A line holds the format version, sequence number, event name,
        verdict, session id, subject and the event's fields.
        """
        self.record(statement("SELECT 1"))

        assert self.lines() == [
            {
                "v": FORMAT_VERSION,
                "seq": 1,
                "event": "statement",
                "verdict": "allow",
                "subject": "alice",
                "session_id": SESSION,
                "protocol": "postgres",
                "at": 1.0,
                "statement_id": f"{SESSION}.1",
                "text": "SELECT 1",
                "path": "simple",
                "statement_name": "",
                "parts": [],
                "classified": False,
            }
        ]
        assert FORMAT_VERSION == 1

    def test_flushed(self) -> None:
        """
        Each line is on disk as soon as it is observed, one per line, in
        sequence.
        """
        self.record(statement("SELECT 1", 1))
        first = self.raw()
        self.record(statement("SELECT 2", 2))
        second = self.raw()

        assert first.count("\n") == 1
        assert first.endswith("\n")
        assert second.startswith(first)
        assert [line["seq"] for line in self.lines()] == [1, 2]
        assert [line["text"] for line in self.lines()] == ["SELECT 1", "SELECT 2"]

    def test_file_mode(self) -> None:
        """
        Recordings are not readable by everyone.
        """
        self.record(statement("SELECT 1"))

        mode = os.stat(self.recorder.path_for(SESSION)).st_mode & 0o777

        assert mode & 0o007 == 0

    def test_no_identity(self) -> None:
        """
        Before identity is known the subject is null.
        """
        anonymous = Context(
            session_id=SESSION,
            protocol="postgres",
            target="db",
            identity=None,
            policy=None,
        )

        self.record(statement("SELECT 1"), context=anonymous)

        assert self.lines()[0]["subject"] is None

    def test_token_dropped(self) -> None:
        """
        Fields marked secret (the bearer token) never reach the file.
        """
        self.record(
            SessionRequested(
                session_id=SESSION,
                protocol="postgres",
                peer="127.0.0.1:40000",
                target="db",
                token=TOKEN,
            )
        )

        (line,) = self.lines()
        assert "token" not in line
        assert line["target"] == "db"
        assert "secret-token-body" not in self.raw()

    def test_identity_recorded(self) -> None:
        """
        A session's identity is recorded by subject, issuer, groups and
        token id hash.
        """
        self.record(
            SessionOpened(
                session_id=SESSION,
                protocol="postgres",
                identity=ALICE,
                peer="127.0.0.1:40000",
                target="db",
                upstream_user="app",
            )
        )

        identity = self.lines()[0]["identity"]
        assert identity["subject"] == "alice"
        assert identity["issuer"] == "https://id.test"
        assert identity["groups"] == ["dba"]
        assert identity["token_id_hash"] == "ab12"

    def test_verdicts(self) -> None:
        """
        Each kind of verdict is written with what explains it.
        """
        refusal = Deny(DenyReason("guardrail.blocked", "blocked", "DROP", "no-drop"))
        waiting: Deferred[Verdict] = Deferred()

        self.record(statement("SELECT 1", 1), ALLOW)
        self.record(statement("DROP TABLE t", 2), refusal)
        self.record(statement("DELETE FROM t", 3), Hold(waiting, "approval by dba"))
        self.record(statement("SELECT 4", 4), Rewrite(event=statement("SELECT 5")))

        lines = self.lines()
        assert [line["verdict"] for line in lines] == [
            "allow",
            "deny",
            "hold",
            "rewrite",
        ]
        assert lines[1]["reason"] == {
            "code": "guardrail.blocked",
            "detail": "DROP",
            "rule": "no-drop",
        }
        assert lines[2]["hold_reason"] == "approval by dba"

    def test_notes(self) -> None:
        """
        A verdict's notes become one list of rule names per kind, on an
        allow, a rewrite or a deny alike.
        """
        notes = (Note("dry_run", "watch-drops"), Note("dry_run", "watch-reads"))
        refusal = DenyReason("guardrail.blocked", "blocked", "DROP", "no-drop")

        self.record(statement("SELECT 1", 1), ALLOW)
        self.record(statement("DROP TABLE t", 2), Allow(notes=notes))
        self.record(statement("SELECT 3", 3), Rewrite(notes=notes[:1]))
        self.record(statement("DROP TABLE t", 4), Deny(refusal, notes=notes[1:]))

        lines = self.lines()
        assert "dry_run" not in lines[0]
        assert [line.get("dry_run") for line in lines[1:]] == [
            ["watch-drops", "watch-reads"],
            ["watch-drops"],
            ["watch-reads"],
        ]
        assert lines[3]["reason"]["rule"] == "no-drop"

    def test_close_ends_file(self) -> None:
        """
        The session's last event is written and flushed like the others.
        """
        self.record(statement("SELECT 1"))
        self.record(closed())

        assert [line["event"] for line in self.lines()] == [
            "statement",
            "session.closed",
        ]
        assert self.lines()[-1]["reason"] == "client"

    def test_sessions_apart(self) -> None:
        """
        Each session has its own file and its own sequence.
        """
        other = StatementReceived(
            session_id="other-session",
            protocol="postgres",
            statement_id="other-session.1",
            text="SELECT 9",
        )

        self.record(statement("SELECT 1"))
        self.record(other)

        assert [line["seq"] for line in self.lines()] == [1]
        elsewhere = read_recording(self.recorder.path_for("other-session"))
        assert [(line["seq"], line["text"]) for line in elsewhere] == [(1, "SELECT 9")]

    def test_write_failure(self) -> None:
        """
        A line that cannot be written calls C{on_failure} with the session
        id, and does not raise into the chain.
        """
        os.mkdir(self.recorder.path_for(SESSION))

        self.record(statement("SELECT 1"))

        assert self.failed == [SESSION]

    def test_through_chain(self) -> None:
        """
        Recording a chain's decisions records the event as sent with the
        chain's final verdict.
        """
        chain = Chain(observers=[self.recorder])

        chain.decide(statement("SELECT 1"), CONTEXT)
        chain.observe(closed(), CONTEXT)

        assert [(line["event"], line["verdict"]) for line in self.lines()] == [
            ("statement", "allow"),
            ("session.closed", "allow"),
        ]


class ReadRecordingTests(SynchronousTestCase):
    """
    L{read_recording} reads what a crash left behind.
    """

    def test_torn_last_line(self) -> None:
        """
        A half-written last line is skipped; the complete lines are kept.
        """
        folder = tempfile.mkdtemp(prefix="hoopgate-rec-")
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        path = Path(folder, "torn.jsonl")
        whole = json.dumps({"v": 1, "seq": 1, "event": "statement"})
        path.write_text(whole + "\n" + '{"v": 1, "seq": 2, "ev', encoding="utf-8")

        assert read_recording(path) == [{"v": 1, "seq": 1, "event": "statement"}]


class RedactionTests(RecorderTestCase):
    """
    Statements that set passwords lose their literals before recording.
    """

    def recorded_text(self, text: str) -> str:
        self.record(statement(text))
        recorded: str = self.lines()[-1]["text"]
        return recorded

    def test_create_role(self) -> None:
        """
        C{CREATE ROLE ... PASSWORD '...'} is recorded without the password.
        """
        text = "CREATE ROLE app LOGIN PASSWORD 'hunter2'"

        assert self.recorded_text(text) == (
            f"CREATE ROLE app LOGIN PASSWORD {REDACTED}"
        )
        assert "hunter2" not in self.raw()

    def test_alter_role(self) -> None:
        """
        C{ALTER ROLE} and C{ALTER USER} lose every literal, whatever the
        case of the keyword.
        """
        assert self.recorded_text("alter role app with password 's3cr3t'") == (
            f"alter role app with password {REDACTED}"
        )
        assert self.recorded_text(
            "ALTER USER app PASSWORD 'p1' VALID UNTIL '2030-01-01'"
        ) == (f"ALTER USER app PASSWORD {REDACTED} VALID UNTIL {REDACTED}")
        assert "s3cr3t" not in self.raw()
        assert "'p1'" not in self.raw()

    def test_literal_forms(self) -> None:
        """
        Escaped, dollar-quoted, Unicode and doubled-quote literals are all
        redacted whole.
        """
        cases = [
            "CREATE USER u ENCRYPTED PASSWORD 'it''s-secret'",
            "CREATE USER u PASSWORD E'back\\\\slash-secret'",
            "CREATE USER u PASSWORD $pw$dollar-secret$pw$",
            "CREATE USER u PASSWORD U&'unicode-secret'",
        ]

        for text in cases:
            assert self.recorded_text(text).endswith(f"PASSWORD {REDACTED}"), text
        assert "secret" not in self.raw()

    def test_unscannable(self) -> None:
        """
        Text the scanner cannot read loses everything after the word.
        """
        text = "CREATE ROLE app PASSWORD 'unterminated-secret"

        assert self.recorded_text(text) == "CREATE ROLE app PASSWORD [redacted]"

    def test_other_statements_kept(self) -> None:
        """
        Statements that set no password are recorded as sent, even when
        the word appears in a literal or a quoted name.
        """
        for text in (
            "SELECT 'password' AS hint",
            'SELECT "password" FROM accounts WHERE id = 7',
            "INSERT INTO t VALUES ('keep me')",
        ):
            assert redact_passwords(text) == text
            assert self.recorded_text(text) == text

    def test_parts_redacted(self) -> None:
        """
        Each classified part's text loses its password literals too.
        """
        text = "SELECT 1; ALTER ROLE app PASSWORD 'hunter2'"
        parts = (
            StatementPart(text="SELECT 1", command="SELECT", effect="read"),
            StatementPart(
                text="ALTER ROLE app PASSWORD 'hunter2'",
                command="ALTER",
                effect="privilege",
            ),
        )

        self.record(
            StatementReceived(
                session_id=SESSION,
                protocol="postgres",
                statement_id=f"{SESSION}.1",
                text=text,
                parts=parts,
            )
        )

        line = self.lines()[-1]
        assert [p["text"] for p in line["parts"]] == [
            "SELECT 1",
            f"ALTER ROLE app PASSWORD {REDACTED}",
        ]
        assert "hunter2" not in self.raw()
