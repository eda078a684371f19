"""
The operator CLI against what a real gateway recorded: C{sessions show}
and C{sessions list} on SSH sessions of real OpenSSH clients (commands,
a refused command, SFTP file operations), and C{policy test} judging
command lines and statements as the live gateway did, with the same
deciding rules and the same relations (the credential's C{"$user"}
schema included).  Then the same commands on a copy of the
configuration whose secrets and files are gone, as after a demo stops.

The gateway is the one of L{tests.support.ssh}: guardrail
C{ssh-no-marker} refuses C{touch /tmp/hg-denied-*} on C{box}, and
C{ssh-guarded-files} refuses writes under C{/tmp/hg-sftp.*/guarded/}.

test-case-name: tests.integration.test_cli_recordings
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.support.gateway import ROOT, VENV_BIN
from tests.support.ssh import SshGateway, ssh_gateway, ssh_servers

__all__ = ["ssh_gateway", "ssh_servers"]

pytestmark = pytest.mark.timeout(180)


def _policy_test(gw: SshGateway, target: str, *texts: str) -> dict[str, Any]:
    done = gw.gateway.cli(
        "policy", "test", "--json", "--subject", "ci-runner", "--target", target, *texts
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


class TestSshSessions:
    """
    What OpenSSH did through the gateway, as the CLI shows it.
    """

    def test_commands(self, ssh_gateway: SshGateway) -> None:
        """
        An exec session is listed with its command counted, and shown
        with its header and command line; a refused one with the rule
        and detail the gateway recorded.
        """
        gw = ssh_gateway
        marker = f"hg-denied-{uuid.uuid4().hex[:8]}"
        ran = _run(gw, "echo hg-cli-ok")
        refused = _run(gw, f"touch /tmp/{marker}")

        listing = gw.gateway.cli("sessions", "list", "--json", "--limit", "1000")
        text = gw.gateway.cli("sessions", "list", "--limit", "1000")
        shown = gw.gateway.cli("sessions", "show", ran["session_id"])
        denied = gw.gateway.cli("sessions", "show", refused["session_id"])

        rows = {r["session_id"]: r for r in json.loads(listing.stdout)}
        assert (
            rows[ran["session_id"]]["statements"],
            rows[ran["session_id"]]["commands"],
        ) == (0, 1)
        row = next(
            x for x in text.stdout.splitlines() if x.startswith(ran["session_id"])
        )
        assert row.split()[1:] == ["closed", "ci-runner", "box", "0", "1"]
        assert shown.returncode == 0, shown.stderr
        header = shown.stdout.splitlines()[:7]
        assert header[0] == f"session {ran['session_id']} (ssh, closed)"
        assert header[1].startswith("  subject: ci-runner (issuer ")
        assert header[2] == "  target: box as root"
        assert header[6] == "  statements: 0, commands: 1"
        assert f"{ran['seq']:>5} command              allow   echo hg-cli-ok" in (
            shown.stdout.splitlines()
        )
        reason = refused["reason"]
        assert (refused["verdict"], reason["rule"]) == ("deny", "ssh-no-marker")
        assert (
            f"{refused['seq']:>5} command              deny    touch /tmp/{marker} "
            f"[denied by rule ssh-no-marker ({reason['code']}): {reason['detail']}]"
        ) in denied.stdout.splitlines()

    def test_file_operations(self, ssh_gateway: SshGateway) -> None:
        """
        An SFTP session shows the operations and paths of its file
        requests, the refused write with its rule.
        """
        gw = ssh_gateway
        work = f"/tmp/hg-sftp.{uuid.uuid4().hex[:8]}"
        local = gw.gateway.directory / "cli-upload.txt"
        local.write_text("seventeen bytes!\n")
        token = gw.gateway.token()
        batch = (
            f"mkdir {work}\nmkdir {work}/guarded\nput {local} {work}/ok.txt\n"
            f"-put {local} {work}/guarded/no.txt\n"
        )

        done = gw.client(token).sftp_batch("box", batch)
        session_id = gw.gateway.session_of(token)
        gw.gateway.wait_event(session_id, "session.closed")
        shown = gw.gateway.cli("sessions", "show", session_id).stdout.splitlines()

        assert done.returncode == 0, done.stderr
        put = _line_with(gw, session_id, "file.requested", f"{work}/ok.txt")
        guarded = next(
            x
            for x in gw.gateway.recording_lines(session_id)
            if x["event"] == "file.requested" and x["verdict"] == "deny"
        )
        ops = ", ".join(put["operations"])
        assert f"{put['seq']:>5} file.requested       allow   {ops} {work}/ok.txt" in (
            shown
        )
        why = guarded["reason"]
        assert guarded["path"] == f"{work}/guarded/no.txt"
        assert why["rule"] == "ssh-guarded-files"
        ops = ", ".join(guarded["operations"])
        assert (
            f"{guarded['seq']:>5} file.requested       deny    {ops} "
            f"{guarded['path']} [denied by rule ssh-guarded-files ({why['code']}): "
            f"{why['detail']}]"
        ) in shown

    def test_policy_test_as_the_gateway(self, ssh_gateway: SshGateway) -> None:
        """
        C{policy test} on C{box} judges command lines as the gateway
        judged them live: the refused one by the same rule, the other
        allowed; no statement rule, masking or SQL in sight.
        """
        gw = ssh_gateway
        marker = f"hg-denied-{uuid.uuid4().hex[:8]}"
        live = _run(gw, f"touch /tmp/{marker}")

        result = _policy_test(gw, "box", f"touch /tmp/{marker}", "ls -l /tmp")
        text = gw.gateway.cli(
            "policy", "test", "--subject", "ci-runner", "--target", "box", "ls -l /tmp"
        )

        assert result["judged_as"]["event"] == "command"
        first, second = result["results"]
        assert (first["verdict"], first["rule"]) == ("deny", live["reason"]["rule"])
        assert (
            f"{first['rule']}: {first['blocked'][0]['reasons'][0]}"
            == (live["reason"]["detail"])
        )
        assert (second["verdict"], second["masking"]) == ("allow", None)
        assert text.stdout.splitlines()[1:4] == [
            "judged as: command events (each text one command line, as the ssh "
            "plugin judges an exec request)",
            "command 1: ls -l /tmp",
            "  verdict: allow",
        ]


class TestStatements:
    """
    C{policy test} classifies as the relay does, for the same user.
    """

    def test_same_relations(self, ssh_gateway: SshGateway) -> None:
        """
        An unqualified table resolves to the credential user's schema and
        public, in the recording and in C{policy test} alike.
        """
        gw = ssh_gateway
        token = gw.gateway.token()
        statement = "select * from hg_cli_no_such_table"
        args = gw.gateway.connect_args(token, target="appdb", autocommit=True)
        with psycopg.connect(**args) as conn:
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute(statement)
            session_id = gw.gateway.session_of(token)
        live = next(
            x
            for x in gw.gateway.recording_lines(session_id)
            if x["event"] == "statement" and x["text"] == statement
        )

        result = _policy_test(gw, "appdb", statement)

        reads = live["parts"][0]["reads"]
        assert reads[0].startswith("app.") and reads[1].startswith("public.")
        assert result["judged_as"]["user"] == "app"
        assert result["results"][0]["parts"][0]["reads"] == reads


class TestGoneSecrets:
    """
    The commands that read recordings or judge policy work on a copy of
    the configuration whose secrets and files are gone; C{check} names
    what is missing.
    """

    def test_copy_without_files(self, ssh_gateway: SshGateway, tmp_path: Path) -> None:
        """
        Every secret, key, certificate and known-hosts file the copy
        names is moved under a folder that does not exist.
        """
        gw = ssh_gateway
        session = _run(gw, "echo hg-cli-gone")
        gone = tmp_path / "gone"
        config = yaml.safe_load(gw.gateway.config_path.read_text(encoding="utf-8"))
        moved = _move_files(config, gone)
        pg_password = str(Path(gw.servers["HG_RUN"]) / "pg" / "app.pw")
        assert {pg_password, gw.servers["SSH_CLIENT_KEY"]} <= set(moved), moved
        copy = tmp_path / "hoopgate.yaml"
        copy.write_text(yaml.safe_dump(config), encoding="utf-8")

        def cli(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(VENV_BIN / "hoopgate"), "--config", str(copy), *argv],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        listed = cli("sessions", "list", "--limit", "1000")
        shown = cli("sessions", "show", session["session_id"])
        judged = cli(
            "policy", "test", "--subject", "ci-runner", "--target", "box", "uptime"
        )
        checked = cli("check")

        assert (listed.returncode, listed.stderr) == (0, "")
        assert session["session_id"] in listed.stdout
        assert (shown.returncode, shown.stderr) == (0, "")
        assert "allow   echo hg-cli-gone" in shown.stdout
        assert (judged.returncode, judged.stderr) == (0, "")
        assert "  verdict: allow" in judged.stdout.splitlines()
        assert checked.returncode == 2
        assert checked.stderr.startswith(f"invalid configuration: {copy}: ")
        assert str(gone) in checked.stderr


def _move_files(value: Any, gone: Path) -> list[str]:
    """
    Point every existing file a parsed configuration names (secrets,
    keys, certificates, known hosts) under C{gone}, in place.

    Returns:
        The files moved.
    """
    moved: list[str] = []
    items = (
        list(value.items())
        if isinstance(value, dict)
        else list(enumerate(value))
        if isinstance(value, list)
        else []
    )
    for key, item in items:
        if isinstance(item, str) and item.startswith("/") and Path(item).is_file():
            value[key] = f"{gone}{item}"
            moved.append(item)
        else:
            moved += _move_files(item, gone)
    return moved


def _run(gw: SshGateway, command: str) -> dict[str, Any]:
    """
    Run C{command} on C{box} with C{ssh} through the gateway (a session
    of its own) and return its recorded C{command} line, once the
    session closed.
    """
    token = gw.gateway.token()
    gw.client(token).ssh("box", command)
    session_id = gw.gateway.session_of(token)
    gw.gateway.wait_event(session_id, "session.closed")
    return _line_with(gw, session_id, "command", command)


def _line_with(
    gw: SshGateway, session_id: str, event: str, needle: str
) -> dict[str, Any]:
    """
    The first C{event} line of a session whose command or path holds
    C{needle}.
    """
    for line in gw.gateway.recording_lines(session_id):
        if line.get("event") != event:
            continue
        if needle in str(line.get("command", "")) + str(line.get("path", "")):
            return line
    raise AssertionError(f"no {event} line with {needle!r} in {session_id}")
