"""
Tests for L{hoopgate._admin.AdminSite}: which requests the admin listener
answers (C{Host}, C{Origin} and C{Referer}), methods a resource does not
serve, and terminating sessions.

Requests are real HTTP bytes into the real site over an in-memory
transport whose local address is the listener's.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen
from twisted.internet.address import IPv4Address
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactorClock,
    StringTransport,
)
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from hoopgate import _gateway
from hoopgate._admin import AdminSite
from hoopgate._config import parse_config
from hoopgate._configreader import ConfigError
from hoopgate._events import SessionRequested
from hoopgate._gateway import Gateway
from hoopgate._recording import Recorder
from hoopgate._session import Session
from hoopgate._store import MemoryStore
from tests.unit.test_config import temporary_folder
from tests.unit.test_gateway import FakePlugin, FakeVerifier, Handle, identity

ADMIN = """\
gateway:
  admin:
    listen: "tcp:8091:interface={interface}"
{admin}  recordings:
    directory: {recordings}
{approvals}identity:
  issuers:
    - name: corp
      issuer: https://id.example.test
      audience: https://hoopgate.test
targets:
  - name: db
    protocol: fake
    host: 127.0.0.1
    port: 5432
    credentials:
      - name: rw
        user: app
policy:
  access:
    - name: ci
      subjects: [ci-runner]
      targets: [db]
      credential: rw
"""

APPROVALS = """\
  approvals:
    public_url: https://gw.example.org
    link_secret: a-secret-of-at-least-16
    directory:
      url: ldap://127.0.0.1:1
      bind_dn: cn=gateway,dc=example,dc=org
      bind_password: pw
      people: ou=people,dc=example,dc=org
"""


@frozen
class Answer:
    """
    An HTTP response as the client read it.

    Attributes:
        status: The status code.
        headers: Header names in lower case, with their values.
        body: The body.
    """

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_answer(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return Answer(int(status_line.split()[1]), headers, body)


def dechunk(raw: bytes) -> bytes:
    body = b""
    while True:
        size, _, raw = raw.partition(b"\r\n")
        length = int(size, 16)
        if length == 0:
            return body
        body, raw = body + raw[:length], raw[length + 2 :]


class AdminCase(SynchronousTestCase):
    """
    An admin site over a real gateway with the in-memory store.
    """

    def make_site(
        self,
        interface: str = "127.0.0.1",
        admin: str = "",
        approvals: str = "",
    ) -> AdminSite:
        real = getattr(_gateway, "OIDCVerifier")  # noqa: B009 - put back below
        self.addCleanup(setattr, _gateway, "OIDCVerifier", real)
        setattr(_gateway, "OIDCVerifier", FakeVerifier)  # noqa: B010
        identities = {"good": identity(expires_at=None)}
        self.addCleanup(setattr, FakeVerifier, "identities", FakeVerifier.identities)
        FakeVerifier.identities = identities
        folder = temporary_folder(self)
        text = ADMIN.format(
            interface=interface,
            admin=admin,
            recordings=folder,
            approvals=approvals,
        )
        config = parse_config(text, "test.yaml", {"fake": FakePlugin()})
        self.reactor = MemoryReactorClock()
        self.store = MemoryStore(self.reactor)
        recorder = Recorder(folder)
        self.addCleanup(recorder.close)
        self.gateway = Gateway(self.reactor, config, self.store, recorder)
        self.reloads: list[bool] = []
        self.admin = AdminSite(self.gateway, lambda: self.reloads.append(True))
        self.access = io.StringIO()
        self.log = EventLoggingObserver()
        globalLogPublisher.addObserver(self.log)
        self.addCleanup(globalLogPublisher.removeObserver, self.log)
        return self.admin

    def send(
        self,
        method: str,
        path: str,
        *,
        host: str | None = "127.0.0.1:8091",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        local: str = "127.0.0.1",
    ) -> Answer:
        """
        Send one request to the site as a client connected to C{local}.
        """
        site = self.admin.site()
        site.reactor = self.reactor
        site.logFile = self.access
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        channel = site.buildProtocol(peer)
        transport = StringTransport(IPv4Address("TCP", local, 8091), peer)
        channel.makeConnection(transport)
        lines = [f"{method} {path} HTTP/1.1"]
        if host is not None:
            lines.append(f"Host: {host}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        channel.dataReceived("\r\n".join(lines).encode("latin-1") + body)
        answer = parse_answer(transport.value())
        channel.connectionLost(None)
        return answer

    def warnings(self) -> list[dict[str, Any]]:
        return [e for e in self.log if e["log_level"] == LogLevel.warn]

    def failures(self) -> list[dict[str, Any]]:
        return [e for e in self.log if "log_failure" in e]


class CrossSiteTests(AdminCase):
    """
    Requests that change state are refused when another site's page
    sent them; requests without C{Origin} or C{Referer} (the CLI, curl)
    and same-origin ones go on.
    """

    def test_cross_origin_reload(self) -> None:
        """
        A POST /reload from another origin is a plain 403; the reload
        does not happen; a warning names method, path, reason and the
        claimed origin.
        """
        self.make_site()

        answer = self.send("POST", "/reload", headers={"Origin": "http://evil.test"})

        assert answer.status == 403
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        assert answer.body == b"refused: the request came from another site's page\n"
        assert self.reloads == []
        [warning] = self.warnings()
        assert {k: warning[k] for k in ("method", "path", "reason", "origin")} == {
            "method": "POST",
            "path": "/reload",
            "reason": "the request came from another site's page",
            "origin": "http://evil.test",
        }
        assert warning["host"] == "127.0.0.1:8091"

    def test_cross_origin_terminate(self) -> None:
        """
        POST /sessions/ID/terminate from another origin ends nothing.
        """
        self.make_site()
        self.store.put("session:s1", json.dumps({"id": "s1"}))
        published: list[str] = []
        self.store.subscribe("hoopgate:terminate", published.append)

        answer = self.send(
            "POST", "/sessions/s1/terminate", headers={"Origin": "http://evil.test"}
        )

        assert (answer.status, published) == (403, [])

    def test_null_origin(self) -> None:
        """
        C{Origin: null} (a sandboxed or privacy-stripped page) is refused.
        """
        self.make_site()

        answer = self.send("POST", "/reload", headers={"Origin": "null"})

        assert (answer.status, self.reloads) == (403, [])

    def test_same_origin(self) -> None:
        """
        A POST whose Origin is the listener's own (scheme, host, port of
        the request) goes on; so does one without Origin or Referer.
        """
        self.make_site()

        same = self.send("POST", "/reload", headers={"Origin": "http://127.0.0.1:8091"})
        bare = self.send("POST", "/reload")

        assert (same.status, same.json()) == (200, {"status": "reloaded"})
        assert (bare.status, bare.json()) == (200, {"status": "reloaded"})
        assert self.reloads == [True, True]
        assert self.warnings() == []

    def test_other_port(self) -> None:
        """
        Another port of the same host is another origin.
        """
        self.make_site()

        answer = self.send(
            "POST", "/reload", headers={"Origin": "http://127.0.0.1:3000"}
        )

        assert (answer.status, self.reloads) == (403, [])

    def test_referer_without_origin(self) -> None:
        """
        Without Origin, the Referer's origin decides; the warning logs
        the Referer's origin only, never its path.
        """
        self.make_site()

        evil = self.send(
            "POST", "/reload", headers={"Referer": "http://evil.test/x?secret=1"}
        )
        own = self.send(
            "POST", "/reload", headers={"Referer": "http://127.0.0.1:8091/approve/t"}
        )

        assert (evil.status, own.status) == (403, 200)
        [warning] = self.warnings()
        assert warning["referer"] == "http://evil.test:80"

    def test_https_listener(self) -> None:
        """
        Behind TLS the listener's origin is https: an http page of the
        same host and port is another site.
        """
        folder = Path(temporary_folder(self))
        (folder / "c.pem").write_text("c")
        (folder / "k.pem").write_text("k")
        tls = (
            f"    tls:\n      certificate: {folder}/c.pem\n      key: {folder}/k.pem\n"
        )
        self.make_site(admin=tls)

        plain = self.send(
            "POST", "/reload", headers={"Origin": "http://127.0.0.1:8091"}
        )
        secure = self.send(
            "POST", "/reload", headers={"Origin": "https://127.0.0.1:8091"}
        )

        assert (plain.status, secure.status) == (403, 200)

    def test_public_url_origin(self) -> None:
        """
        The approvals' public_url (a TLS proxy in front of a plain
        listener) is an own origin, and its host an own name.
        """
        self.make_site(approvals=APPROVALS)

        answer = self.send(
            "POST",
            "/reload",
            host="gw.example.org",
            headers={"Origin": "https://gw.example.org"},
        )

        assert (answer.status, self.reloads) == (200, [True])

    def test_approval_page_form(self) -> None:
        """
        A form posted from the approval page itself (same Origin, the
        cookie matching the field) reaches the page's own steps; from
        another site it is refused before the page sees it.
        """
        self.make_site(approvals=APPROVALS)
        form = b"step=nothing&csrf=c1"
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": "hoopgate_csrf=c1",
        }

        own = self.send(
            "POST",
            "/approve/link",
            headers={**headers, "Origin": "http://127.0.0.1:8091"},
            body=form,
        )
        other = self.send(
            "POST",
            "/approve/link",
            headers={**headers, "Origin": "http://evil.test"},
            body=form,
        )

        assert own.status == 400
        assert b"<h1>Bad request</h1>" in own.body
        assert other.status == 403
        assert other.headers["content-type"] == "text/plain; charset=utf-8"
        [warning] = self.warnings()
        assert warning["path"] == "/approve/(link)"

    def test_approval_page_referrer_policy(self) -> None:
        """
        Approval pages ask for a same-origin referrer policy: under
        no-referrer, browsers would send C{Origin: null} with the page's
        own forms.
        """
        self.make_site(approvals=APPROVALS)

        answer = self.send("GET", "/approve/not-a-link")

        assert answer.status == 400
        assert answer.headers["referrer-policy"] == "same-origin"

    def test_approval_vote_cross_site(self) -> None:
        """
        A vote through the API from another site's page is refused
        before any sign-in is tried.
        """
        self.make_site(approvals=APPROVALS)

        answer = self.send(
            "POST",
            "/approvals/r1/approve",
            headers={
                "Origin": "http://evil.test",
                "Content-Type": "application/json",
                "Authorization": "Basic YTpi",
            },
            body=b"{}",
        )

        assert answer.status == 403
        assert answer.body == b"refused: the request came from another site's page\n"


class HostTests(AdminCase):
    """
    The listener answers only requests whose C{Host} names it, so a
    page rebinding its own name to the listener's address reads and
    changes nothing.
    """

    def test_rebound_name(self) -> None:
        """
        A GET with another site's name in Host is a 403, logged.
        """
        self.make_site()

        answer = self.send("GET", "/sessions", host="evil.test:8091")

        assert answer.status == 403
        assert answer.body == b"refused: the Host header names another site\n"
        [warning] = self.warnings()
        assert (warning["host"], warning["method"]) == ("evil.test:8091", "GET")

    def test_own_names(self) -> None:
        """
        The listener's address, localhost on a loopback listener, and
        the address without a port are its own.
        """
        self.make_site()

        answers = [
            self.send("GET", "/healthz", host=host)
            for host in ("127.0.0.1:8091", "localhost:8091", "LocalHost", "127.0.0.1")
        ]

        assert [a.status for a in answers] == [200] * 4

    def test_allowed_hosts(self) -> None:
        """
        C{gateway.admin.allowed_hosts} adds names.
        """
        self.make_site(admin="    allowed_hosts: [Gateway.Example.ORG]\n")

        allowed = self.send("GET", "/healthz", host="gateway.example.org:8091")
        other = self.send("GET", "/healthz", host="other.example.org:8091")

        assert (allowed.status, other.status) == (200, 403)

    def test_wildcard_listener(self) -> None:
        """
        On a wildcard listener the address the connection reached is
        the listener's own; localhost is not, off loopback.
        """
        self.make_site(interface="0.0.0.0")

        direct = self.send("GET", "/healthz", host="10.1.2.3:8091", local="10.1.2.3")
        named = self.send("GET", "/healthz", host="localhost:8091", local="10.1.2.3")

        assert (direct.status, named.status) == (200, 403)

    def test_malformed(self) -> None:
        """
        A request without Host, or with user information or a path in
        it, is refused.
        """
        self.make_site()

        missing = self.send("GET", "/healthz", host=None)
        user = self.send("GET", "/healthz", host="evil.test@127.0.0.1:8091")
        path = self.send("GET", "/healthz", host="127.0.0.1:8091/x")

        assert (missing.status, missing.body) == (
            403,
            b"refused: the request has no Host header\n",
        )
        assert (user.status, path.status) == (403, 403)
        assert user.body == b"refused: the Host header is not a host name\n"


class AccessLogTests(AdminCase):
    """
    The access log never holds an approval link's token or a query.
    """

    def test_link_left_out(self) -> None:
        """
        The line for an approval page names the page, not the link, and
        neither the query nor the referrer.
        """
        self.make_site(approvals=APPROVALS)

        self.send(
            "GET",
            "/approve/link-token-1?x=query-2",
            headers={"Referer": "http://127.0.0.1:8091/approve/link-token-3"},
        )

        line = self.access.getvalue()
        assert '"GET /approve/(link) HTTP/1.1" 400 ' in line
        for secret in ("link-token-1", "query-2", "link-token-3"):
            assert secret not in line


class ConfigTests(SynchronousTestCase):
    """
    C{gateway.admin.allowed_hosts} holds host names or addresses only.
    """

    def test_not_a_name(self) -> None:
        """
        A URL is not a host name: the error names the key and line.
        """
        text = ADMIN.format(
            interface="127.0.0.1",
            admin='    allowed_hosts: ["https://gw.example.org"]\n',
            recordings="/nonexistent",
            approvals="",
        )

        with pytest.raises(ConfigError) as caught:
            parse_config(text, "test.yaml", {"fake": FakePlugin()})

        assert str(caught.value) == (
            "gateway.admin.allowed_hosts (line 4): "
            "'https://gw.example.org' is not a host name or address"
        )


class MethodTests(AdminCase):
    """
    A method a resource does not serve is a 405 naming those it does,
    never a traceback.
    """

    def test_head_on_post_only(self) -> None:
        """
        HEAD /reload (POST only) is 405 with Allow: POST; nothing is
        logged as a failure.
        """
        self.make_site()

        answer = self.send("HEAD", "/reload")

        assert answer.status == 405
        assert answer.headers["allow"] == "POST"
        assert answer.body == b""
        assert self.failures() == []
        assert self.reloads == []

    def test_unserved_methods(self) -> None:
        """
        GET on a POST-only resource, PUT and DELETE anywhere: 405 with
        the served methods.
        """
        self.make_site(approvals=APPROVALS)

        get = self.send("GET", "/reload")
        put = self.send("PUT", "/sessions")
        delete = self.send("DELETE", "/approvals/r1")
        options = self.send("OPTIONS", "/reload")
        unheard = self.send("BREW", "/healthz")

        assert (get.status, get.headers["allow"]) == (405, "POST")
        assert get.body == b"method not allowed here (allowed: POST)\n"
        assert (put.status, put.headers["allow"]) == (405, "GET, HEAD, POST")
        assert (delete.status, delete.headers["allow"]) == (405, "GET, HEAD, POST")
        assert (options.status, options.headers["allow"]) == (405, "POST")
        assert (unheard.status, unheard.headers["allow"]) == (405, "GET, HEAD")
        assert self.failures() == []

    def test_head_where_get(self) -> None:
        """
        HEAD where GET is served answers as GET would, without a body.
        """
        self.make_site()

        answer = self.send("HEAD", "/healthz")

        assert (answer.status, answer.body) == (200, b"")
        assert answer.headers["content-type"] == "application/json"

    def test_folder(self) -> None:
        """
        A folder that serves nothing itself (C{/plugins}) is a 404.
        """
        self.make_site()

        answer = self.send("GET", "/plugins")

        assert (answer.status, answer.body) == (404, b"not found\n")


class TerminateTests(AdminCase):
    """
    POST /sessions/ID/terminate ends a live session wherever it runs,
    and says so when no process has it.
    """

    def open_session(self) -> tuple[Session, Handle]:
        handle = Handle()
        request = SessionRequested(
            session_id="",
            protocol="fake",
            peer="127.0.0.1:40000",
            target="db",
            token="good",
        )
        opened: list[Session] = []
        self.gateway.open_session(request, handle).addCallback(opened.append)
        self.reactor.advance(1)
        [session] = opened
        return session, handle

    def test_unknown(self) -> None:
        """
        An id no process registered is a 404 with a clear message.
        """
        self.make_site()

        answer = self.send("POST", "/sessions/nope/terminate")

        assert answer.status == 404
        assert answer.json() == {"error": "no live session nope"}

    def test_here(self) -> None:
        """
        A session of this process is ended at once: 202.
        """
        self.make_site()
        session, handle = self.open_session()

        answer = self.send("POST", f"/sessions/{session.id}/terminate")

        assert (answer.status, answer.json()) == (202, {"status": "terminating"})
        assert handle.terminated == [
            ("terminated", "session terminated by an operator")
        ]

    def test_elsewhere(self) -> None:
        """
        A session another process registered in the store is asked to
        end through the store: 202.
        """
        self.make_site()
        self.store.put("session:far", json.dumps({"id": "far"}))
        published: list[str] = []
        self.store.subscribe("hoopgate:terminate", published.append)

        answer = self.send("POST", "/sessions/far/terminate")

        assert answer.status == 202
        assert published == ["far"]

    def test_token_first(self) -> None:
        """
        With an admin token, a request without it learns nothing about
        which sessions exist.
        """
        self.make_site(admin="    token: s3cret-admin-token\n")

        answer = self.send("POST", "/sessions/nope/terminate")

        assert (answer.status, answer.json()) == (
            401,
            {"error": "admin token required"},
        )
