"""
Tests for L{hoopgate._recording} and L{hoopgate._redact}: JSON-lines
recordings with nothing secret in them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from hoopgate._chain import Chain, Context
from hoopgate._config import parse_config
from hoopgate._configreader import ConfigError, load_yaml
from hoopgate._events import (
    DiagnosticReceived,
    Event,
    Notice,
    Parameter,
    SessionClosed,
    SessionOpened,
    SessionRefused,
    SessionRequested,
    StatementBound,
    StatementCompleted,
    StatementPart,
    StatementReceived,
)
from hoopgate._identity import Identity
from hoopgate._interfaces import IObserver
from hoopgate._maskrules import read_masking
from hoopgate._policy import Policy
from hoopgate._recording import (
    DEFAULT_MAX_TEXT,
    FORMAT_VERSION,
    Recorder,
    read_recording,
)
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
from tests.unit.test_config import BASE, PLUGINS

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
        Each classified part points into the redacted text, so no part
        brings the password back.
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
        recorded = line["text"]
        assert recorded == f"SELECT 1; ALTER ROLE app PASSWORD {REDACTED}"
        assert [recorded[slice(*p["span"])] for p in line["parts"]] == [
            "SELECT 1",
            f"ALTER ROLE app PASSWORD {REDACTED}",
        ]
        assert "hunter2" not in self.raw()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def with_parts(text: str, *texts: str) -> StatementReceived:
    return StatementReceived(
        session_id=SESSION,
        protocol="postgres",
        statement_id=f"{SESSION}.1",
        text=text,
        parts=tuple(
            StatementPart(text=t, command="SELECT", effect="read") for t in texts
        ),
        classified=True,
    )


class StatementTextTests(RecorderTestCase):
    """
    A statement's text is written once, and at most C{max_text}
    characters of it.
    """

    def setUp(self) -> None:
        super().setUp()
        self.recorder = Recorder(self.folder, max_text=100)
        self.addCleanup(self.recorder.close)

    def test_default_limit(self) -> None:
        """
        Without a limit given, a line keeps 64 KiB of a text.
        """
        assert DEFAULT_MAX_TEXT == 65_536
        assert Recorder(self.folder).max_text == DEFAULT_MAX_TEXT

    def test_single_part_written_once(self) -> None:
        """
        A statement whose one part is the whole text writes that text
        once; the part spans all of it.
        """
        text = "SELECT 'only-once' FROM t"

        self.record(with_parts(text, text))

        [line] = self.lines()
        [part] = line["parts"]
        assert line["text"] == text
        assert part["span"] == [0, len(text)]
        assert (part["command"], part["effect"]) == ("SELECT", "read")
        assert "text" not in part
        assert self.raw().count("only-once") == 1

    def test_parts_point_into_text(self) -> None:
        """
        Each part of a query string with several statements is a span of
        its text, in order, even when two parts read the same.
        """
        text = "SELECT 1;  SELECT 1; SELECT 22"
        self.recorder = Recorder(self.folder, max_text=1000)
        self.addCleanup(self.recorder.close)

        self.record(with_parts(text, "SELECT 1", "SELECT 1", "SELECT 22"))

        [line] = self.lines()
        assert [p["span"] for p in line["parts"]] == [[0, 8], [11, 19], [21, 30]]
        assert [p.get("text") for p in line["parts"]] == [None, None, None]
        assert self.raw().count("SELECT 22") == 1

    def test_long_text_cut(self) -> None:
        """
        A text over the limit keeps its first 100 characters, its whole
        length and the SHA-256 of all of it; the span still measures the
        whole.
        """
        text = "SELECT '" + "x" * 1000 + "'"

        self.record(with_parts(text, text))

        [line] = self.lines()
        assert line["text"] == text[:100]
        assert line["text_length"] == 1009
        assert line["text_sha256"] == sha256(text)
        assert line["parts"][0]["span"] == [0, 1009]
        assert "text" not in line["parts"][0]
        assert len(self.raw()) < 1000

    def test_text_at_limit_kept(self) -> None:
        """
        A text of exactly the limit is kept whole, with no length or hash.
        """
        text = "S" * 100

        self.record(statement(text))

        [line] = self.lines()
        assert line["text"] == text
        assert "text_length" not in line and "text_sha256" not in line

    def test_non_ascii_hash(self) -> None:
        """
        Lengths count characters; the hash is of the UTF-8 bytes.
        """
        text = "SELECT '" + "é" * 200 + "'"

        self.record(statement(text))

        [line] = self.lines()
        assert line["text"] == text[:100]
        assert line["text_length"] == 209
        assert line["text_sha256"] == sha256(text)

    def test_masked_before_cut(self) -> None:
        """
        Masking runs over the whole text first: what is kept, the length
        and the hash are those of the masked text, and the address found
        past the cut is in none of them.
        """
        masking = read_masking(
            load_yaml(
                textwrap.dedent(
                    """
                    rules:
                      - name: detected
                        detect: [email]
                    """
                ),
                "test.yaml",
            )
        )
        context = Context(
            session_id=SESSION,
            protocol="postgres",
            target="db",
            identity=ALICE,
            policy=Policy(version=1, access=(), masking=masking),
        )
        text = "SELECT '" + "x" * 120 + "', 'someone@example.org'"
        masked = "SELECT '" + "x" * 120 + "', '[masked]'"

        self.record(with_parts(text, text), context=context)

        [line] = self.lines()
        assert line["text"] == masked[:100]
        assert line["text_length"] == len(masked) == 141
        assert line["text_sha256"] == sha256(masked)
        assert line["parts"][0]["span"] == [0, 141]
        assert "someone" not in self.raw()

    def test_many_parts_cut(self) -> None:
        """
        Of a query string of 1,000 statements, the first part is kept and
        the count and hash describe all 1,000 as an uncut line has them.
        """
        texts = [f"SELECT {i}" for i in range(1000)]
        event = with_parts("; ".join(texts), *texts)
        roomy = Recorder(tempfile.mkdtemp(dir=self.folder), max_text=1 << 20)
        self.addCleanup(roomy.close)

        self.record(event)
        roomy.observe(event, ALLOW, CONTEXT)

        [line] = self.lines()
        [whole] = read_recording(roomy.path_for(SESSION))
        everything = json.dumps(whole["parts"], separators=(",", ":"))
        assert len(whole["parts"]) == 1000
        assert line["parts"] == whole["parts"][:1]
        assert line["parts_count"] == 1000
        assert line["parts_sha256"] == sha256(everything)
        assert len(self.raw()) < 1000

    def test_parts_far_apart(self) -> None:
        """
        A part beyond a long comment after the one before it keeps its
        own text rather than be searched for to the end of the text.
        """
        text = "SELECT 1; /*" + " " * 5000 + "*/ SELECT 2"
        self.recorder = Recorder(self.folder, max_text=100_000)
        self.addCleanup(self.recorder.close)

        self.record(with_parts(text, "SELECT 1", "SELECT 2"))

        [line] = self.lines()
        assert line["parts"][0]["span"] == [0, 8]
        assert line["parts"][1]["text"] == "SELECT 2"
        assert "span" not in line["parts"][1]

    def test_part_not_found_keeps_own_text(self) -> None:
        """
        A part that masking made differ from its place in the text keeps
        its own text, cut like any other.
        """
        text = "CREATE ROLE r PASSWORD 'pw'"
        other = "SELECT '" + "y" * 200 + "'"

        self.record(with_parts(text, other))

        [line] = self.lines()
        [part] = line["parts"]
        assert "span" not in part
        assert part["text"] == other[:100]
        assert part["text_length"] == 209
        assert part["text_sha256"] == sha256(other)


class OtherTextTests(RecorderTestCase):
    """
    Error texts and bound parameters are bounded by C{max_text} too.
    """

    def setUp(self) -> None:
        super().setUp()
        self.recorder = Recorder(self.folder, max_text=100)
        self.addCleanup(self.recorder.close)

    def bound(self, *values: str | None) -> StatementBound:
        return StatementBound(
            session_id=SESSION,
            protocol="postgres",
            statement_id=f"{SESSION}.1",
            portal="",
            parameters=tuple(Parameter(v) for v in values),
        )

    def test_error_message_cut(self) -> None:
        """
        An error message quoting a long value keeps 100 characters, its
        length and hash.
        """
        message = 'invalid input syntax for type integer: "' + "9" * 500 + '"'

        self.record(
            StatementCompleted(
                session_id=SESSION,
                protocol="postgres",
                statement_id=f"{SESSION}.1",
                status="error",
                error_code="22P02",
                error_message=message,
            )
        )

        [line] = self.lines()
        assert line["error_message"] == message[:100]
        assert line["error_message_length"] == 541
        assert line["error_message_sha256"] == sha256(message)

    def test_diagnostic_fields_cut(self) -> None:
        """
        Each long text of an error or notice is cut and listed in
        C{cut_fields}; short ones stay as they are.
        """
        long = "z" * 300

        self.record(
            DiagnosticReceived(
                session_id=SESSION,
                protocol="postgres",
                statement_id=f"{SESSION}.1",
                severity="NOTICE",
                code="00000",
                fields=(("S", "NOTICE"), ("M", long)),
            )
        )

        [line] = self.lines()
        assert line["fields"] == [["S", "NOTICE"], ["M", long[:100]]]
        assert line["cut_fields"] == [
            {"key": "M", "length": 300, "sha256": sha256(long)}
        ]

    def test_few_parameters_kept(self) -> None:
        """
        Parameters that fit are written as they are, with no count.
        """
        self.record(self.bound("a", None))

        [line] = self.lines()
        assert line["parameters"] == [
            {"value": "a", "binary": False},
            {"value": None, "binary": False},
        ]
        assert "parameters_count" not in line

    def test_many_parameters_cut(self) -> None:
        """
        Of 40,000 parameters, those fitting in 100 characters (each
        costing 32 beside its value) are kept, and the count and hash
        describe all 40,000.
        """
        values = [f"v{i}" for i in range(40_000)]
        everything = json.dumps(
            [{"value": v, "binary": False} for v in values], separators=(",", ":")
        )

        self.record(self.bound(*values))

        [line] = self.lines()
        assert line["parameters"] == [
            {"value": "v0", "binary": False},
            {"value": "v1", "binary": False},
        ]
        assert line["parameters_count"] == 40_000
        assert line["parameters_sha256"] == sha256(everything)
        assert len(self.raw()) < 1000

    def test_parameter_hash_is_of_the_json(self) -> None:
        """
        The hash of cut parameters is that of the compact JSON array a
        line would hold, escapes included, also for a value longer than
        the slices it is hashed in.
        """
        values = ['quote " and é\n', None, "l" * (3 << 20), "😀"]
        everything = json.dumps(
            [{"value": v, "binary": False} for v in values], separators=(",", ":")
        )

        self.record(self.bound(*values))

        [line] = self.lines()
        assert line["parameters_count"] == 4
        assert line["parameters_sha256"] == sha256(everything)

    def test_one_huge_parameter(self) -> None:
        """
        A single value longer than the allowance keeps its start.
        """
        value = "q" * 10_000

        self.record(self.bound(value))

        [line] = self.lines()
        assert line["parameters"] == [
            {"value": "q" * 68, "binary": False, "value_length": 10_000}
        ]
        assert line["parameters_count"] == 1


class SequenceTests(RecorderTestCase):
    """
    Sequence numbers rise by one per line of a session's file, whatever
    comes after its closing line.
    """

    def seqs(self) -> list[int]:
        return [line["seq"] for line in self.lines()]

    def completed(self) -> StatementCompleted:
        return StatementCompleted(
            session_id=SESSION,
            protocol="postgres",
            statement_id=f"{SESSION}.1",
            status="cancelled",
        )

    def test_after_close(self) -> None:
        """
        Lines after session.closed (a session ended at once still hears
        from its target) continue the count instead of starting again.
        """
        self.record(statement("SELECT 1"))
        self.record(closed())
        self.record(self.completed())
        self.record(
            Notice(
                session_id=SESSION,
                protocol="postgres",
                kind="late",
                detail="after the end",
            )
        )

        assert self.seqs() == [1, 2, 3, 4]
        assert [line["event"] for line in self.lines()] == [
            "statement",
            "session.closed",
            "statement.completed",
            "notice",
        ]

    def test_closed_twice(self) -> None:
        """
        A refusal after a close, and a close after that, still count on.
        """
        self.record(closed())
        self.record(
            SessionRefused(
                session_id=SESSION,
                protocol="postgres",
                peer="127.0.0.1:5",
                target="db",
                reason="identity.expired",
                detail="the token has expired",
            )
        )
        self.record(closed())

        assert self.seqs() == [1, 2, 3]

    def test_new_recorder_continues(self) -> None:
        """
        A second recorder writing the same file (after a restart) goes on
        from the last line the first one wrote.
        """
        self.record(statement("SELECT 1"))
        self.record(statement("SELECT 2", 2))
        self.recorder.close()

        again = Recorder(self.folder)
        self.addCleanup(again.close)
        again.observe(statement("SELECT 3", 3), ALLOW, CONTEXT)

        assert self.seqs() == [1, 2, 3]

    def test_long_last_line(self) -> None:
        """
        The last number is found even when the last line is longer than
        the chunks the file is searched in.
        """
        big = Recorder(self.folder, max_text=300_000)
        self.addCleanup(big.close)
        big.observe(statement("SELECT 1"), ALLOW, CONTEXT)
        big.observe(statement("SELECT '" + "w" * 200_000 + "'", 2), ALLOW, CONTEXT)
        big.observe(closed(), ALLOW, CONTEXT)
        big.observe(self.completed(), ALLOW, CONTEXT)

        assert self.seqs() == [1, 2, 3, 4]

    def test_torn_line(self) -> None:
        """
        After a torn last line (a crash mid-write), the next line starts
        on a line of its own and follows the last whole one.
        """
        self.record(statement("SELECT 1"))
        self.recorder.close()
        with self.recorder.path_for(SESSION).open("ab") as handle:
            handle.write(b'{"v":1,"event":"statement","te')

        again = Recorder(self.folder)
        self.addCleanup(again.close)
        again.observe(statement("SELECT 2", 2), ALLOW, CONTEXT)

        assert [(line["seq"], line["text"]) for line in self.lines()] == [
            (1, "SELECT 1"),
            (2, "SELECT 2"),
        ]


class MaxTextConfigTests(SynchronousTestCase):
    """
    C{gateway.recordings.max_text} sets the recorder's limit.
    """

    def test_default(self) -> None:
        """
        Without the key a line keeps 64 KiB of a text.
        """
        config = parse_config(BASE, "t.yaml", PLUGINS)

        assert config.gateway.recording_max_text == DEFAULT_MAX_TEXT

    def test_set(self) -> None:
        """
        The key's value is read (the service gives it to its recorder:
        see tests.integration.test_postgres_limits).
        """
        text = BASE.replace(
            "    on_failure: continue\n",
            "    on_failure: continue\n    max_text: 1000\n",
        )

        config = parse_config(text, "t.yaml", PLUGINS)

        assert config.gateway.recording_max_text == 1000

    def test_too_small(self) -> None:
        """
        A limit under 256 characters is refused, naming the key.
        """
        text = BASE.replace(
            "    on_failure: continue\n", "    on_failure: continue\n    max_text: 10\n"
        )

        with pytest.raises(ConfigError) as caught:
            parse_config(text, "t.yaml", PLUGINS)

        assert str(caught.value) == (
            "gateway.recordings.max_text (line 7): must be between 256 and 1073741824"
        )
