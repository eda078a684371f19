"""
Notifiers delivering for real: e-mail through the SMTP sink (STARTTLS
when offered, with the certificate verified; refused when required and
not offered) and webhooks to an HTTP receiver on loopback (HMAC
signature, retries with backoff on 5xx, none on 4xx, Slack and Teams
formats).

test-case-name: tests.integration.test_approvals_notify
"""

from __future__ import annotations

import email
import email.policy
import json
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.mail.smtp import SMTPConnectError, TLSRequiredError
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from hoopgate._ldap import Person
from hoopgate._notify import (
    EmailNotifier,
    EmailSettings,
    Notification,
    Recipient,
    WebhookNotifier,
    WebhookSettings,
    signature,
)
from hoopgate._secrets import inline_secret
from tests.support.gateway import free_ports, wait_for
from tests.support.servers import APPROVAL_SERVER_VARS, SERVER_VARS, require_env

ROOT = Path(__file__).resolve().parents[2]


def notification(*logins: str) -> Notification:
    return Notification(
        request_id="0123456789abcdef",
        rule="customer-deletes",
        mode="hold",
        target="appdb",
        protocol="postgres",
        requester="ci-runner",
        summary="delete from customers where id = '[masked]'",
        reason="",
        quorum=1,
        expires=2_000_000_000.0,
        recipients=tuple(
            Recipient(
                Person(
                    dn=f"uid={login},ou=people,dc=example,dc=org",
                    login=login,
                    mail=f"{login}@example.org",
                ),
                f"http://127.0.0.1:8091/approve/token-of-{login}",
            )
            for login in logins
        ),
    )


def failure_of(deferred: Deferred[Any]) -> Deferred[BaseException]:
    def succeeded(value: object) -> BaseException:
        raise AssertionError(f"expected a failure, got {value!r}")

    caught: Deferred[BaseException] = deferred.addCallbacks(
        succeeded, lambda f: f.value
    )
    return caught


def mails_to(folder: Path, address: str) -> Iterator[email.message.EmailMessage]:
    for path in sorted((folder / "new").iterdir()):
        message = email.message_from_bytes(
            path.read_bytes(), policy=email.policy.default
        )
        if message["X-Sink-To"] == address:
            yield message


class EmailTests(TestCase):
    """
    Mail to each approver, through the SMTP sink.
    """

    def setUp(self) -> None:
        self.env = require_env(SERVER_VARS + APPROVAL_SERVER_VARS, "the SMTP sink")
        self.folder = Path(self.env["SMTP_MAILDIR"])

    def notifier(self, **changes: Any) -> EmailNotifier:
        fields: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": int(self.env["SMTP_PORT"]),
            "sender": "hoopgate@example.org",
            "ca": self.env["TLS_CERT"],
            "timeout": 10.0,
        }
        return EmailNotifier(reactor, EmailSettings(**(fields | changes)))

    @inlineCallbacks
    def test_one_mail_each(self) -> Any:
        """
        Each approver gets one mail with their own link, over STARTTLS.
        """
        run = secrets.token_hex(4)
        logins = (f"mail-a-{run}", f"mail-b-{run}")
        sent = notification(*logins)

        yield self.notifier().notify(sent)

        for login, other in (logins, logins[::-1]):
            [mail] = list(mails_to(self.folder, f"{login}@example.org"))
            body = mail.get_content()
            assert mail["X-Sink-TLS"] == "yes"
            assert (
                mail["Subject"]
                == "[hoopgate] Approval needed: postgres on appdb for ci-runner"
            )
            assert f"token-of-{login}" in body
            assert f"token-of-{other}" not in body
            assert "delete from customers where id = '[masked]'" in body

    @inlineCallbacks
    def test_unverified_certificate(self) -> Any:
        """
        A relay whose certificate does not verify gets no mail.
        """
        login = f"mail-c-{secrets.token_hex(4)}"
        refused = yield failure_of(self.notifier(ca=None).notify(notification(login)))

        assert isinstance(refused, SMTPConnectError)
        assert "certificate verify failed" in str(refused)
        assert list(mails_to(self.folder, f"{login}@example.org")) == []

    @inlineCallbacks
    def test_tls_required(self) -> Any:
        """
        With C{tls: required}, a relay that offers no STARTTLS gets no mail.
        """
        [port] = free_ports(1)
        folder = Path(tempfile.mkdtemp(prefix="hoopgate-sink-"))
        sink = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests/smtp/sink.py"),
                "--port",
                str(port),
                "--maildir",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(sink.wait, 10)
        self.addCleanup(sink.terminate)
        wait_for(
            lambda: (folder / "new").is_dir() and _listening(port), 10, "the plain sink"
        )

        refused = yield failure_of(
            self.notifier(port=port, tls="required").notify(notification("x"))
        )
        plain = yield self.notifier(port=port).notify(notification("mailtest-d"))

        assert isinstance(refused, TLSRequiredError)
        assert plain is None
        [mail] = list(mails_to(folder, "mailtest-d@example.org"))
        assert mail["X-Sink-TLS"] == "no"


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class _Receiver(resource.Resource):
    isLeaf = True

    def __init__(self, answers: list[int]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.answers = answers
        self.seen: list[tuple[dict[str, str], bytes]] = []

    def render_POST(self, request: Any) -> bytes:
        headers = {
            k.decode().lower(): v[0].decode()
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        self.seen.append((headers, request.content.read()))
        request.setResponseCode(self.answers.pop(0) if self.answers else 200)
        return b"ok"


class WebhookTests(TestCase):
    """
    Webhooks to a receiver on loopback.
    """

    def receiver(self, *answers: int) -> tuple[_Receiver, str]:
        receiver = _Receiver(list(answers))
        site: Any = server.Site(receiver)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address: Any = port.getHost()
        return receiver, f"http://127.0.0.1:{address.port}/hook"

    def notifier(self, url: str, **changes: Any) -> WebhookNotifier:
        fields: dict[str, Any] = {
            "url": url,
            "secret": inline_secret("hook-secret-123456"),
            "backoff": 0.05,
        }
        return WebhookNotifier(reactor, WebhookSettings(**(fields | changes)))

    @inlineCallbacks
    def test_signed_json(self) -> Any:
        """
        Our JSON document, signed over the timestamp and the body.
        """
        receiver, url = self.receiver()

        yield self.notifier(url).notify(notification("alice", "bob"))

        [(headers, body)] = receiver.seen
        document = json.loads(body)
        assert headers["content-type"] == "application/json"
        assert headers["x-hoopgate-signature"] == signature(
            "hook-secret-123456", headers["x-hoopgate-timestamp"], body
        )
        assert document["request_id"] == "0123456789abcdef"
        assert [a["link"] for a in document["approvers"]] == [
            "http://127.0.0.1:8091/approve/token-of-alice",
            "http://127.0.0.1:8091/approve/token-of-bob",
        ]

    @inlineCallbacks
    def test_retries(self) -> Any:
        """
        5xx answers are retried with backoff until one succeeds.
        """
        receiver, url = self.receiver(500, 503)

        yield self.notifier(url).notify(notification("alice"))

        assert len(receiver.seen) == 3

    @inlineCallbacks
    def test_no_retry_on_client_error(self) -> Any:
        """
        A 4xx answer is final.
        """
        receiver, url = self.receiver(400, 200)

        refused = yield failure_of(self.notifier(url).notify(notification("alice")))

        assert "HTTP 400" in str(refused)
        assert len(receiver.seen) == 1

    @inlineCallbacks
    def test_gives_up(self) -> Any:
        """
        After its retries the notifier gives up.
        """
        receiver, url = self.receiver(500, 500, 500)

        refused = yield failure_of(
            self.notifier(url, retries=2).notify(notification("alice"))
        )

        assert "HTTP 500" in str(refused)
        assert len(receiver.seen) == 3

    @inlineCallbacks
    def test_slack_and_teams(self) -> Any:
        """
        Slack gets text and blocks with each approver's link; Teams gets an
        Adaptive Card with one button per approver.
        """
        receiver, url = self.receiver()

        yield self.notifier(url, format="slack").notify(notification("alice", "bob"))
        yield self.notifier(url, format="teams").notify(notification("alice", "bob"))

        slack = json.loads(receiver.seen[0][1])
        teams = json.loads(receiver.seen[1][1])
        assert slack["text"] == "Approval needed: postgres on appdb for ci-runner"
        assert "<http://127.0.0.1:8091/approve/token-of-bob|bob>" in json.dumps(
            slack["blocks"]
        )
        card = teams["attachments"][0]["content"]
        assert card["type"] == "AdaptiveCard"
        assert [a["url"] for a in card["actions"]] == [
            "http://127.0.0.1:8091/approve/token-of-alice",
            "http://127.0.0.1:8091/approve/token-of-bob",
        ]
