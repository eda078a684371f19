"""
The admin listener and the operator CLI against a real gateway: the
listener refuses other sites' pages and rebound names, answers methods it
does not serve with 405, and says when a session to terminate is unknown;
the CLI speaks verified HTTPS when the listener has TLS, prints refusals
and shows client text with control characters made visible.

test-case-name: tests.integration.test_admin
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.approvals import approval_yaml, scratch
from tests.support.gateway import RunningGateway, wait_for
from tests.support.servers import approval_servers
from tests.support.ssh import _admin_tls, _start_https_admin

__all__ = ["approval_servers"]

pytestmark = pytest.mark.timeout(180)

#: An escape sequence that clears a terminal, and one that retitles it.
CLEAR = "\x1b[2J"
TITLE = "\x1b]0;owned\x07"

TABLE = "admin_jit"

RULES = f"""\
    - name: hold-admin-jit
      mode: hold
      targets: [appdb]
      approvers: [dba]
      timeout: 10m
      when: {{writes: [{TABLE}]}}
"""


def http(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """
    One plain HTTP request; the status, headers and body, errors too.
    """
    request = urllib.request.Request(  # noqa: S310 - the test gateway
        url, method=method, data=data, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), e.read()


def log_text(gateway: RunningGateway) -> str:
    return "".join(p.read_text(errors="replace") for p in gateway.log_files())


class TestListener:
    """
    What the admin listener answers, whoever asks.
    """

    def test_cross_site_post(self, gateway: RunningGateway) -> None:
        """
        A POST /reload from another site's page is refused with a plain
        403 and a log line naming it; the CLI's own reload goes on.
        """
        status, headers, body = http(
            gateway.admin_url + "/reload",
            "POST",
            {"Origin": "http://evil.test"},
            b"",
        )
        reload = gateway.cli("reload")

        assert status == 403
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert body == b"refused: the request came from another site's page\n"
        port = gateway.ports.admin
        expected = (
            "Refused POST /reload from 127.0.0.1 on the admin listener: the request "
            f"came from another site's page (Host 127.0.0.1:{port}, Origin "
            "http://evil.test, Referer -)"
        )
        wait_for(lambda: expected in log_text(gateway), 10, "the refusal's log line")
        assert (reload.returncode, reload.stdout, reload.stderr) == (
            0,
            "reloaded\n",
            "",
        )

    def test_rebound_name(self, gateway: RunningGateway) -> None:
        """
        A page whose name was rebound to the listener's address gets a
        403 even for a GET: it reads nothing.
        """
        port = gateway.ports.admin

        status, _, body = http(
            gateway.admin_url + "/sessions", headers={"Host": f"evil.test:{port}"}
        )
        own, _, _ = http(
            gateway.admin_url + "/sessions", headers={"Host": f"localhost:{port}"}
        )

        assert (status, body) == (403, b"refused: the Host header names another site\n")
        assert own == 200

    def test_head_on_post_only(self, gateway: RunningGateway) -> None:
        """
        HEAD on a POST-only page is a 405 naming POST, with no traceback
        in the log.
        """
        status, headers, body = http(gateway.admin_url + "/reload", "HEAD")
        put, put_headers, _ = http(gateway.admin_url + "/sessions", "PUT", data=b"")

        assert (status, headers["Allow"], body) == (405, "POST", b"")
        assert (put, put_headers["Allow"]) == (405, "GET, HEAD, POST")
        text = log_text(gateway)
        assert "Traceback" not in text
        assert "AttributeError" not in text


class TestTerminate:
    """
    C{hoopgate sessions terminate} ends live sessions and says when a
    session is unknown.
    """

    def test_unknown(self, gateway: RunningGateway) -> None:
        """
        An unknown session: the listener's 404 message, exit 1.
        """
        result = gateway.cli("sessions", "terminate", "no-such-session")

        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr == (
            "terminate refused (404): no live session no-such-session\n"
        )

    def test_live(self, gateway: RunningGateway) -> None:
        """
        A live session is ended: the CLI says so, the client's next
        statement fails, the recording says it was terminated.
        """
        token = gateway.token()
        with psycopg.connect(**gateway.connect_args(token), autocommit=True) as conn:
            conn.execute("select 1")
            session_id = gateway.session_of(token)

            result = gateway.cli("sessions", "terminate", session_id)
            closed = gateway.wait_event(session_id, "session.closed")

            with pytest.raises(psycopg.OperationalError):
                conn.execute("select 1")

        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout == f"session {session_id}: terminating\n"
        assert closed["reason"] == "terminated"


class TestVisible:
    """
    Client text reaches the operator's terminal with its control
    characters visible.
    """

    def test_sessions_show(self, gateway: RunningGateway) -> None:
        """
        A statement carrying escape sequences in a comment is shown with
        them escaped; the recording keeps the exact text.
        """
        token = gateway.token()
        statement = f"select 1 /* {CLEAR}{TITLE} */"
        with psycopg.connect(**gateway.connect_args(token), autocommit=True) as conn:
            conn.execute(statement)
            session_id = gateway.session_of(token)
        gateway.wait_event(session_id, "session.closed")

        shown = gateway.cli("sessions", "show", session_id)

        assert shown.returncode == 0
        assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
        lines = [x for x in shown.stdout.splitlines() if " statement " in x]
        assert lines[0].endswith("select 1 /* \\x1b[2J\\x1b]0;owned\\x07 */"), (
            shown.stdout
        )
        recorded = [
            x["text"]
            for x in gateway.recording_lines(session_id)
            if x["event"] == "statement"
        ]
        assert recorded[0] == statement


# -- an admin listener with TLS ----------------------------------------------


def approvals_edit(servers: dict[str, str], directory: Path) -> Callable[[str], str]:
    """
    The configuration edits: approvals (memory store) with one hold rule
    on L{TABLE}, and HTTPS on the admin listener.
    """
    sections = approval_yaml(servers, directory, store="memory")

    def edit(text: str) -> str:
        text = text.replace("  store:\n    kind: memory\n", sections)
        text = text.rstrip("\n") + "\n  approvals:\n" + RULES
        return _admin_tls(text, servers)

    return edit


@pytest.fixture(scope="module")
def tls_gateway(
    approval_servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    """
    A gateway whose admin listener speaks HTTPS with the run's
    certificate, with approvals.
    """
    scratch(approval_servers, TABLE)
    directory = tmp_path_factory.mktemp("admin-tls")
    running = _start_https_admin(
        approval_servers, directory, approvals_edit(approval_servers, directory), 30
    )
    try:
        yield running
    finally:
        running.stop()


def other_ca(directory: Path) -> Path:
    """
    A self-signed certificate that did not sign the gateway's.
    """
    path = directory / "other-ca.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
            "-keyout",
            str(directory / "other-ca.key"),
            "-out",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


class TestTLS:
    """
    With C{gateway.admin.tls} the CLI speaks HTTPS, verified, and never
    plain HTTP.
    """

    def test_reload(self, tls_gateway: RunningGateway) -> None:
        """
        C{hoopgate reload} reaches the HTTPS listener, verified against
        the configured certificate.
        """
        result = tls_gateway.cli("reload")

        assert (result.returncode, result.stdout, result.stderr) == (
            0,
            "reloaded\n",
            "",
        )

    def test_terminate_unknown(self, tls_gateway: RunningGateway) -> None:
        """
        The 404 of an unknown session comes back over HTTPS too.
        """
        result = tls_gateway.cli("sessions", "terminate", "nope")

        assert (result.returncode, result.stderr) == (
            1,
            "terminate refused (404): no live session nope\n",
        )

    def test_url_by_name(self, tls_gateway: RunningGateway) -> None:
        """
        --url with a name the certificate holds works.
        """
        url = f"https://localhost:{tls_gateway.ports.admin}"

        result = tls_gateway.cli("reload", "--url", url)

        assert (result.returncode, result.stdout) == (0, "reloaded\n")

    def test_plain_url_refused(self, tls_gateway: RunningGateway) -> None:
        """
        A plain http --url is refused before anything is sent.
        """
        url = f"http://127.0.0.1:{tls_gateway.ports.admin}"

        result = tls_gateway.cli("reload", "--url", url)

        assert result.returncode == 2
        assert result.stderr == (
            "gateway.admin.tls is set, so the admin listener speaks https: give "
            "an https:// --url\n"
        )

    def test_wrong_ca(self, tls_gateway: RunningGateway, tmp_path: Path) -> None:
        """
        A --ca-file that did not sign the listener's certificate fails
        verification, said plainly; nothing is reloaded.
        """
        result = tls_gateway.cli("reload", "--ca-file", str(other_ca(tmp_path)))

        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.startswith(
            "cannot verify the admin listener's certificate at "
            f"https://127.0.0.1:{tls_gateway.ports.admin}: "
        )

    def test_approvals(
        self, approval_servers: dict[str, str], tls_gateway: RunningGateway
    ) -> None:
        """
        A held statement whose text carries escape sequences is listed
        and shown over HTTPS with them visible; denying it with the CLI
        releases the client with a refusal.
        """
        statement = (
            f"update {TABLE} set hits = hits + 1 where id = 1 /* {CLEAR}{TITLE} */"  # noqa: S608 - constants
        )
        argv, env = tls_gateway.psql_command(tls_gateway.token(), "-c", statement)
        held = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            request = request_of_https(tls_gateway)
            listed = tls_gateway.cli("approvals", "list")
            shown = tls_gateway.cli("approvals", "show", request)
            password = tls_gateway.directory / "alice.pw"
            password.write_text(approval_servers["LDAP_USER_PASSWORD"])
            denied = tls_gateway.cli(
                "approvals",
                "deny",
                request,
                "--user",
                "alice",
                "--password-file",
                str(password),
                "--reason",
                "not now",
            )
            _, err = held.communicate(timeout=60)
        finally:
            if held.poll() is None:
                held.kill()
                held.wait()

        for result in (listed, shown):
            assert result.returncode == 0, result.stderr
            assert "\x1b" not in result.stdout and "\x07" not in result.stdout
            assert "/* \\x1b[2J\\x1b]0;owned\\x07 */" in result.stdout
        assert shown.stdout.splitlines()[0] == (
            f"request {request}: rule hold-admin-jit (hold)"
        )
        assert denied.returncode == 0, denied.stderr
        assert held.returncode != 0
        assert "an approver refused this (rule hold-admin-jit)" in err


def request_of_https(gateway: RunningGateway) -> str:
    """
    The id of the one open request, read with C{hoopgate approvals list
    --json} over HTTPS (bounded wait).
    """

    def find() -> str | None:
        result = gateway.cli("approvals", "list", "--json")
        if result.returncode != 0:
            return None
        found = json.loads(result.stdout)
        return str(found[0]["id"]) if len(found) == 1 else None

    found: str = wait_for(find, 30, "the held request", interval=0.5)
    return found
