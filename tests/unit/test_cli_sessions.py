"""
Tests for C{hoopgate sessions list} and C{sessions show}
(L{hoopgate._sessionview} through L{hoopgate.cli}): who, where and when
in the header, the deciding rule of a refusal, approvals with their
state and votes, SSH commands and file operations, commands counted in
the list, and a reader that closes the pipe early.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.unit.test_cli_admin import CliCase

ROOT = Path(__file__).resolve().parents[2]

IDENTITY = {
    "subject": "ci-runner",
    "issuer": "http://127.0.0.1:58355",
    "groups": ["deploy"],
    "token_id_hash": "915d8d1ffa9d7049",
    "expires_at": 1796347746.0,
    "claims": [],
}


def envelope(session: str, protocol: str, seq: int, at: float) -> dict[str, Any]:
    return {
        "v": 1,
        "subject": "ci-runner",
        "session_id": session,
        "protocol": protocol,
        "at": at,
        "seq": seq,
    }


def postgres_lines(session: str) -> list[dict[str, Any]]:
    """
    A PostgreSQL session as the gateway records it: a statement refused
    by a guardrail, one held for approval and then approved, closed by
    the client.
    """
    reason = {
        "code": "guardrail.blocked",
        "detail": "no-destructive: part 1 DROP: command DROP, writes "
        "app.canary, writes public.canary",
        "rule": "no-destructive",
    }
    votes = [
        {
            "approver": "uid=alice,ou=people,dc=example,dc=org",
            "decision": "approve",
            "reason": "ticket 7",
            "at": 1796347035.97,
        }
    ]
    approval = {
        "event": "approval",
        "request_id": "aac4673d4f60907c",
        "rule": "customer-deletes",
        "mode": "hold",
        "target": "appdb",
        "event_id": f"{session}.2",
        "quorum": 1,
    }
    events: list[dict[str, Any]] = [
        {
            "event": "session.opened",
            "verdict": "allow",
            "identity": IDENTITY,
            "peer": "127.0.0.1:34658",
            "target": "appdb",
            "upstream_user": "app",
        },
        {
            "event": "statement",
            "verdict": "deny",
            "reason": reason,
            "text": "drop table canary",
        },
        {
            "event": "statement.completed",
            "verdict": "allow",
            "status": "denied",
            "command_tag": "",
            "rows": 0,
            "error_code": "42501",
            "error_message": "hoopgate: statement blocked by policy "
            "(rule no-destructive)",
        },
        {
            "event": "statement",
            "verdict": "hold",
            "hold_reason": "waiting for approval aac4673d4f60907c "
            "(rule customer-deletes)",
            "text": "delete from customers where id = 7",
        },
        {
            **approval,
            "verdict": "allow",
            "state": "requested",
            "votes": [],
            "detail": "approvers notified",
        },
        {
            **approval,
            "verdict": "allow",
            "state": "approved",
            "votes": votes,
            "detail": "approved by uid=alice,ou=people,dc=example,dc=org",
        },
        {
            "event": "statement",
            "verdict": "allow",
            "approved": ["customer-deletes"],
            "text": "delete from customers where id = 7",
        },
        {"event": "session.closed", "verdict": "allow", "reason": "client"},
    ]
    return [
        {**envelope(session, "postgres", n, 1796347030.0 + n), **e}
        for n, e in enumerate(events, 1)
    ]


def ssh_lines(session: str) -> list[dict[str, Any]]:
    """
    An SSH session as the gateway records it: an exec command, an SFTP
    subsystem with a file operation allowed and one refused.
    """
    refused = {
        "code": "guardrail.blocked",
        "detail": "no-etc: file path matches '/etc/**'",
        "rule": "no-etc",
    }
    file = {
        "event": "file.requested",
        "target_path": "",
        "command_id": f"{session}.2",
        "channel": "1",
    }
    events: list[dict[str, Any]] = [
        {
            "event": "session.requested",
            "verdict": "allow",
            "subject": None,
            "peer": "127.0.0.1:52318",
            "target": "box",
            "login": "root",
            "identity": IDENTITY,
            "presented": "ssh-certificate",
        },
        {
            "event": "session.opened",
            "verdict": "allow",
            "identity": IDENTITY,
            "peer": "127.0.0.1:52318",
            "target": "box",
            "upstream_user": "root",
        },
        {
            "event": "command",
            "verdict": "allow",
            "command_id": f"{session}.1",
            "command": "id -un; hostname",
            "channel": "0",
        },
        {
            "event": "ssh.exit",
            "verdict": "allow",
            "command_id": f"{session}.1",
            "channel": "0",
            "status": 0,
            "signal": "",
            "core_dumped": False,
        },
        {
            "event": "ssh.subsystem",
            "verdict": "allow",
            "command_id": f"{session}.2",
            "channel": "1",
            "subsystem": "sftp",
        },
        {
            **file,
            "verdict": "allow",
            "operation_id": f"{session}.3",
            "operations": ["write"],
            "path": "/tmp/report.txt",
        },
        {
            "event": "ssh.sftp",
            "verdict": "allow",
            "command_id": f"{session}.2",
            "operation": "open",
            "path": "/tmp/report.txt",
            "target_path": "",
            "status": "ok",
            "bytes_read": 0,
            "bytes_written": 17,
            "mode": "wct",
        },
        {
            **file,
            "verdict": "deny",
            "reason": refused,
            "operation_id": f"{session}.4",
            "operations": ["rename"],
            "path": "/tmp/report.txt",
            "target_path": "/etc/report.txt",
        },
        {
            "event": "command",
            "verdict": "allow",
            "command_id": f"{session}.5",
            "command": "",
            "channel": "2",
        },
        {"event": "session.closed", "verdict": "allow", "reason": "client"},
    ]
    return [
        {**envelope(session, "ssh", n, 1796347146.0 + n), **e}
        for n, e in enumerate(events, 1)
    ]


class SessionsShowTests(CliCase):
    """
    C{sessions show ID} prints a header and one line per event with what
    it was and why it got its verdict.
    """

    def record(self, session: str, lines: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(x) + "\n" for x in lines)
        (self.recordings / f"{session}.jsonl").write_text(text)

    def test_postgres_session(self) -> None:
        """
        The header names subject, issuer, groups, target and account,
        peer, start and end; a denied statement shows its deciding rule
        and detail; approval lines show state, rule, votes with their
        reasons; an approved statement names the approving rule.
        """
        self.write_config()
        self.record("pg1", postgres_lines("pg1"))

        code, out, err = self.run_cli("sessions", "show", "pg1")

        assert (code, err) == (0, "")
        assert out.splitlines() == [
            "session pg1 (postgres, closed)",
            "  subject: ci-runner (issuer http://127.0.0.1:58355; groups deploy)",
            "  target: appdb as app",
            "  peer: 127.0.0.1:34658",
            "  started: 2026-12-04T01:17:11Z",
            "  ended: 2026-12-04T01:17:18Z (client)",
            "  statements: 3, commands: 0",
            "    1 session.opened       allow   ci-runner -> appdb as app",
            "    2 statement            deny    drop table canary [denied by rule "
            "no-destructive (guardrail.blocked): no-destructive: part 1 DROP: "
            "command DROP, writes app.canary, writes public.canary]",
            "    3 statement.completed  allow   denied rows=0 42501: hoopgate: "
            "statement blocked by policy (rule no-destructive)",
            "    4 statement            hold    delete from customers where id = 7 "
            "[held: waiting for approval aac4673d4f60907c (rule customer-deletes)]",
            "    5 approval             allow   requested: request aac4673d4f60907c, "
            "rule customer-deletes (hold, quorum 1); approvers notified",
            "    6 approval             allow   approved: request aac4673d4f60907c, "
            "rule customer-deletes (hold, quorum 1); votes: uid=alice,ou=people,"
            "dc=example,dc=org approve (ticket 7); approved by uid=alice,"
            "ou=people,dc=example,dc=org",
            "    7 statement            allow   delete from customers where id = 7 "
            "[approved by rule customer-deletes]",
            "    8 session.closed       allow   client",
        ]

    def test_ssh_session(self) -> None:
        """
        SSH commands show their command line (an interactive shell says
        so), file operations their operations and paths, with the rule
        that refused one; exits and SFTP outcomes are shown too.
        """
        self.write_config()
        self.record("ssh1", ssh_lines("ssh1"))

        code, out, _ = self.run_cli("sessions", "show", "ssh1")

        assert code == 0
        assert out.splitlines() == [
            "session ssh1 (ssh, closed)",
            "  subject: ci-runner (issuer http://127.0.0.1:58355; groups deploy)",
            "  target: box as root (login root asked for)",
            "  peer: 127.0.0.1:52318",
            "  started: 2026-12-04T01:19:07Z",
            "  ended: 2026-12-04T01:19:16Z (client)",
            "  statements: 0, commands: 2",
            "    1 session.requested    allow   box login root from 127.0.0.1:52318 "
            "(ssh-certificate)",
            "    2 session.opened       allow   ci-runner -> box as root",
            "    3 command              allow   id -un; hostname",
            "    4 ssh.exit             allow   status 0",
            "    5 ssh.subsystem        allow   sftp",
            "    6 file.requested       allow   write /tmp/report.txt",
            "    7 ssh.sftp             allow   open /tmp/report.txt: ok (mode wct, "
            "0 bytes read, 17 written)",
            "    8 file.requested       deny    rename /tmp/report.txt -> "
            "/etc/report.txt [denied by rule no-etc (guardrail.blocked): no-etc: "
            "file path matches '/etc/**']",
            "    9 command              allow   (interactive shell)",
            "   10 session.closed       allow   client",
        ]

    def test_client_text_escaped(self) -> None:
        """
        A command line, a path and a deny detail from clients are shown
        with their control characters escaped.
        """
        self.write_config()
        lines = ssh_lines("ssh2")
        lines[2]["command"] = "echo \x1b[2J"
        lines[5]["path"] = "/tmp/\x1b]0;x\x07"
        lines[7]["reason"]["detail"] = "bad\rpath"
        self.record("ssh2", lines)

        code, out, _ = self.run_cli("sessions", "show", "ssh2")

        shown = out.splitlines()
        assert code == 0
        assert "\x1b" not in out and "\x07" not in out and "\r" not in out
        assert shown[9].endswith("allow   echo \\x1b[2J")
        assert shown[12].endswith("write /tmp/\\x1b]0;x\\x07")
        assert "(guardrail.blocked): bad\\rpath]" in shown[14]

    def test_json_unchanged(self) -> None:
        """
        C{--json} prints the recording's lines as they are, no header.
        """
        self.write_config()
        lines = ssh_lines("ssh3")
        self.record("ssh3", lines)

        code, out, _ = self.run_cli("sessions", "show", "ssh3", "--json")

        assert code == 0
        assert [json.loads(x) for x in out.splitlines()] == lines


class SessionsListTests(CliCase):
    """
    C{sessions list} counts what each session ran: statements and
    commands.
    """

    def test_commands_counted(self) -> None:
        """
        An SSH session that ran commands shows them in a COMMANDS column
        beside STATEMENTS; --json has C{commands} and the end time.
        """
        self.write_config()
        for name, lines in (
            ("a-pg", postgres_lines("a-pg")),
            ("b-ssh", ssh_lines("b-ssh")),
        ):
            text = "".join(json.dumps(x) + "\n" for x in lines)
            (self.recordings / f"{name}.jsonl").write_text(text)

        code, out, _ = self.run_cli("sessions", "list")
        _, raw, _ = self.run_cli("sessions", "list", "--json")

        assert code == 0
        assert out.splitlines() == [
            "SESSION                          STATE    SUBJECT              "
            "TARGET         STATEMENTS COMMANDS",
            "a-pg                             closed   ci-runner            "
            "appdb          3          0",
            "b-ssh                            closed   ci-runner            "
            "box            0          2",
        ]
        rows = json.loads(raw)
        assert [(r["statements"], r["commands"]) for r in rows] == [(3, 0), (0, 2)]
        assert rows[1] == {
            "session_id": "b-ssh",
            "subject": "ci-runner",
            "target": "box",
            "protocol": "ssh",
            "state": "closed",
            "statements": 0,
            "commands": 2,
            "started": 1796347147.0,
            "ended": 1796347156.0,
        }


class ClosedPipeTests(CliCase):
    """
    The console script stops quietly when its reader goes away
    (C{| head -c 10}), as Unix tools do.
    """

    def write_config(
        self, interface: str = "127.0.0.1", extra: str = "", port: int = 8091
    ) -> None:
        # Another process reads it: no in-process fake plugin there.
        Path(self.config_path).write_text(
            f"gateway:\n  recordings:\n    directory: {self.recordings}\n"
            "policy:\n  access: []\n",
            encoding="utf-8",
        )

    def run_closing(self, *argv: str) -> tuple[int, bytes, bytes]:
        """
        Run C{python -m hoopgate.cli ARGV}, read 10 bytes of its output,
        close the pipe and wait.

        Returns:
            Its exit status, the bytes read, and its standard error.
        """
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            [sys.executable, "-m", "hoopgate.cli", "--config", self.config_path, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
        )
        assert process.stdout is not None and process.stderr is not None
        head = process.stdout.read(10)
        process.stdout.close()
        err = process.stderr.read()
        process.stderr.close()
        return process.wait(timeout=120), head, err

    def big_recording(self) -> None:
        # Far more than a pipe holds, so the writer meets the closed end.
        lines = postgres_lines("big")[:1]
        for n in range(2, 4002):
            lines.append(
                {
                    **envelope("big", "postgres", n, 1796347030.0),
                    "event": "statement",
                    "verdict": "allow",
                    "text": f"select {n}, '{'x' * 400}'",
                }
            )
        text = "".join(json.dumps(x) + "\n" for x in lines)
        (self.recordings / "big.jsonl").write_text(text)

    def test_show_json(self) -> None:
        """
        C{sessions show --json ID | head -c 10}: no traceback, no
        complaint, and the status of a process SIGPIPE ended.
        """
        self.write_config()
        self.big_recording()

        code, head, err = self.run_closing("sessions", "show", "--json", "big")

        assert (code, err) == (141, b"")
        assert head == b'{"v": 1, "'

    def test_show_text(self) -> None:
        """
        The same for the text form.
        """
        self.write_config()
        self.big_recording()

        code, head, err = self.run_closing("sessions", "show", "big")

        assert (code, err) == (141, b"")
        assert head == b"session bi"

    def test_whole_output(self) -> None:
        """
        A reader that takes everything sees the whole output and status 0.
        """
        self.write_config()
        self.big_recording()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = ["--config", self.config_path, "sessions", "show", "--json", "big"]

        done = subprocess.run(
            [sys.executable, "-m", "hoopgate.cli", *argv],
            capture_output=True,
            cwd=ROOT,
            env=env,
            check=False,
            timeout=120,
        )

        assert (done.returncode, done.stderr) == (0, b"")
        assert len(done.stdout.splitlines()) == 4001
