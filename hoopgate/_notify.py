"""
Telling approvers that a request waits for them.

A notifier provides L{INotifier}: it gets one L{Notification} per
request, holding the request with its literals masked and one link per
approver, and delivers it its own way.  Built in:

  - C{log}: one line in the gateway's log (no links: they are for their
    approver only);
  - C{email}: one mail per approver, to their directory C{mail}, over
    SMTP (twisted.mail), with STARTTLS whenever the server offers it
    (and a verified certificate), or only with it (C{tls: required});
  - C{webhook}: a JSON POST signed with HMAC-SHA256 over the timestamp
    and the body (headers C{X-Hoopgate-Timestamp} and
    C{X-Hoopgate-Signature: sha256=HEX}), retried with backoff on
    network errors, 429 and 5xx; C{format} C{json} (our own document),
    C{slack} or C{teams} (their incoming-webhook message formats).

A notification that cannot be delivered is logged; the request waits
all the same (approvers can still answer through the API or the CLI).

twisted.mail imports the global reactor: it is imported when a mail is
sent, after twistd chose the reactor.

test-case-name: tests.unit.test_approvals_notify
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from io import BytesIO
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from attrs import frozen
from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, FileBodyProducer
from twisted.web.http_headers import Headers
from zope.interface import implementer

from hoopgate._configreader import ConfigReader
from hoopgate._interfaces import INotifier
from hoopgate._ldap import Person
from hoopgate._secrets import Secret

FORMATS: Final = ("json", "slack", "teams")
TLS_MODES: Final = ("starttls", "required", "none")

#: The most response body read from a webhook (it is discarded).
_MAX_REPLY: Final = 64 * 1024


@frozen
class Recipient:
    """
    One approver and the link that is theirs alone.

    Attributes:
        person: Their directory entry.
        link: Their single-use link to the request's page.
    """

    person: Person
    link: str


@frozen
class Notification:
    """
    A request waiting for approval, as notifiers show it.

    Attributes:
        request_id: The request.
        rule: The approval rule that asked for it.
        mode: C{hold}, C{grant} or C{session}.
        target: The target.
        protocol: The protocol.
        requester: The requester's subject.
        summary: What is asked for, literals masked.
        reason: The requester's reason, masked (session mode).
        quorum: Approvals needed.
        expires: POSIX time the request times out.
        recipients: The approvers, each with their link.
    """

    request_id: str
    rule: str
    mode: str
    target: str
    protocol: str
    requester: str
    summary: str
    reason: str
    quorum: int
    expires: float
    recipients: tuple[Recipient, ...]

    @property
    def title(self) -> str:
        """
        One line: what needs approving.
        """
        what = "access" if self.mode == "session" else self.protocol
        return f"Approval needed: {what} on {self.target} for {self.requester}"

    def lines(self) -> list[str]:
        """
        The request in a few lines of plain text (no links).
        """
        expires = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.expires))
        lines = [
            f"Request {self.request_id} (rule {self.rule}, mode {self.mode})",
            f"Requester: {self.requester}",
            f"Target: {self.target} ({self.protocol})",
            f"Request: {self.summary}",
        ]
        if self.reason:
            lines.append(f"Reason: {self.reason}")
        lines.append(f"Approvals needed: {self.quorum}; open until {expires}")
        return lines

    def as_json(self) -> dict[str, Any]:
        """
        The notification as our own JSON document.
        """
        return {
            "type": "hoopgate.approval.requested",
            "request_id": self.request_id,
            "rule": self.rule,
            "mode": self.mode,
            "target": self.target,
            "protocol": self.protocol,
            "requester": self.requester,
            "summary": self.summary,
            "reason": self.reason,
            "quorum": self.quorum,
            "expires": self.expires,
            "approvers": [
                {
                    "dn": r.person.dn,
                    "login": r.person.login,
                    "mail": r.person.mail,
                    "link": r.link,
                }
                for r in self.recipients
            ],
        }


# -- log ------------------------------------------------------------------


@implementer(INotifier)
class LogNotifier:
    """
    Notes each request in the gateway's log, without the links.
    """

    name = "log"
    _log = Logger()

    def notify(self, notification: Notification) -> Deferred[None]:
        self._log.info(
            "Approval request {request_id} ({rule}, {mode}) on {target} for "
            "{requester}: {summary}; approvers {approvers}; quorum {quorum}",
            request_id=notification.request_id,
            rule=notification.rule,
            mode=notification.mode,
            target=notification.target,
            requester=notification.requester,
            summary=notification.summary,
            approvers=[r.person.dn for r in notification.recipients],
            quorum=notification.quorum,
        )
        return succeed(None)


# -- e-mail ---------------------------------------------------------------


@frozen
class EmailSettings:
    """
    An SMTP relay to send approval mails through.

    Attributes:
        host: The relay.
        port: Its port.
        sender: The envelope and header sender.
        tls: C{starttls} (whenever offered), C{required} or C{none}.
        ca: A CA file to verify the relay with (else the system's).
        username: For SMTP AUTH, if the relay wants it.
        password: Its password.
        timeout: Seconds for one delivery attempt.
    """

    host: str
    port: int
    sender: str
    tls: str = "starttls"
    ca: str | None = None
    username: str | None = None
    password: Secret | None = None
    timeout: float = 30.0


def _first_error(failure: Failure) -> Failure:
    # gatherResults wraps the first failure in a FirstError: unwrap it,
    # so the log names what went wrong.
    while isinstance(failure.value, FirstError):
        failure = failure.value.subFailure
    return failure


def _message(notification: Notification, recipient: Recipient, sender: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient.person.mail
    message["Subject"] = f"[hoopgate] {notification.title}"
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="hoopgate")
    message["X-Hoopgate-Request"] = notification.request_id
    body = [
        f"Hello {recipient.person.login or recipient.person.dn},",
        "",
        *notification.lines(),
        "",
        "Review it and decide (you will sign in with your directory password):",
        recipient.link,
        "",
        "The link is yours alone and works once. Opening it decides nothing.",
    ]
    text = "\n".join(body) + "\n"
    # Plain 7-bit text keeps the link on one line for whoever reads the
    # raw message; anything else goes quoted-printable.
    cte = "7bit" if text.isascii() else "quoted-printable"
    message.set_content(text, cte=cte)
    return message.as_bytes()


@implementer(INotifier)
class EmailNotifier:
    """
    Mails each approver their link, through an SMTP relay.

    Args:
        reactor: Connects and times out.
        settings: The relay.
    """

    name = "email"
    _log = Logger()

    def __init__(self, reactor: Any, settings: EmailSettings) -> None:
        self._reactor = reactor
        self._settings = settings

    def notify(self, notification: Notification) -> Deferred[None]:
        sending = [
            self._send(notification, recipient)
            for recipient in notification.recipients
            if recipient.person.mail
        ]
        for recipient in notification.recipients:
            if not recipient.person.mail:
                self._log.warn(
                    "Approver {dn} has no mail address; not mailed about {request_id}",
                    dn=recipient.person.dn,
                    request_id=notification.request_id,
                )
        done: Deferred[Any] = gatherResults(sending, consumeErrors=True)
        return done.addCallbacks(lambda _: None, _first_error)

    def _context(self) -> Any:
        settings = self._settings
        if settings.tls == "none":
            return None
        trust: Any = platformTrust()
        if settings.ca:
            trust = Certificate.loadPEM(Path(settings.ca).read_bytes())
        return optionsForClientTLS(settings.host, trustRoot=trust)

    def _send(self, notification: Notification, recipient: Recipient) -> Deferred[None]:
        from twisted.mail.smtp import ESMTPSenderFactory  # noqa: PLC0415 - reactor

        settings = self._settings
        sent: Deferred[Any] = Deferred()
        closed: Deferred[None] = Deferred()

        # Twisted's mail factories have no annotations (Twisted 26.10), and
        # mypy's untyped_calls_exclude does not cover calls through super().
        class Sender(ESMTPSenderFactory):
            def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
                super().clientConnectionLost(connector, reason)  # type: ignore[no-untyped-call]
                if not closed.called:
                    closed.callback(None)

            def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
                super().clientConnectionFailed(connector, reason)  # type: ignore[no-untyped-call]
                if not closed.called:
                    closed.callback(None)

        password = settings.password.reveal().encode() if settings.password else None
        factory = Sender(  # type: ignore[no-untyped-call]
            settings.username.encode() if settings.username else None,
            password,
            settings.sender,
            [recipient.person.mail],
            BytesIO(_message(notification, recipient, settings.sender)),
            sent,
            retries=0,
            timeout=settings.timeout,
            contextFactory=self._context(),
            requireAuthentication=settings.username is not None,
            requireTransportSecurity=settings.tls == "required",
        )
        factory.noisy = False
        self._reactor.connectTCP(
            settings.host, settings.port, factory, timeout=settings.timeout
        )

        def delivered(_: object) -> None:
            self._log.info(
                "Mailed {mail} about approval request {request_id}",
                mail=recipient.person.mail,
                request_id=notification.request_id,
            )

        def failed(failure: Failure) -> Failure:
            self._log.error(
                "Cannot mail {mail} about approval request {request_id} through "
                "{host}:{port}: {error}",
                mail=recipient.person.mail,
                request_id=notification.request_id,
                host=settings.host,
                port=settings.port,
                error=failure.getErrorMessage(),
            )
            return failure

        sent.addCallbacks(delivered, failed)
        # Done once the relay connection is closed too, so nothing of it
        # outlives the notification.
        both: Deferred[Any] = gatherResults([sent, closed], consumeErrors=True)
        return both.addCallbacks(lambda _: None, _first_error)


# -- webhook --------------------------------------------------------------


@frozen
class WebhookSettings:
    """
    An HTTP endpoint that is told about each request.

    Attributes:
        url: Where to POST.
        format: C{json}, C{slack} or C{teams}.
        secret: The HMAC key the receiver checks signatures with.
        ca: A CA file for HTTPS (else the system's).
        retries: Attempts after the first.
        backoff: Seconds before the first retry; doubled for each next.
        timeout: Seconds for one attempt.
    """

    url: str
    format: str = "json"
    secret: Secret | None = None
    ca: str | None = None
    retries: int = 3
    backoff: float = 1.0
    timeout: float = 10.0


def slack_message(notification: Notification) -> dict[str, Any]:
    """
    A Slack incoming-webhook message (text plus blocks).
    """
    links = " | ".join(
        f"<{r.link}|{r.person.login or r.person.dn}>" for r in notification.recipients
    )
    body = "\n".join(notification.lines())
    return {
        "text": notification.title,
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": notification.title},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{body}```"}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Each approver opens their own link: {links}",
                    }
                ],
            },
        ],
    }


def teams_message(notification: Notification) -> dict[str, Any]:
    """
    A Microsoft Teams incoming-webhook message (an Adaptive Card).
    """
    facts = [{"title": "Request", "value": notification.summary}]
    if notification.reason:
        facts.append({"title": "Reason", "value": notification.reason})
    card = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "size": "Medium",
                "weight": "Bolder",
                "text": notification.title,
            },
            {"type": "TextBlock", "wrap": True, "text": notification.lines()[0]},
            {"type": "FactSet", "facts": facts},
        ],
        "actions": [
            {
                "type": "Action.OpenUrl",
                "title": f"Review as {r.person.login or r.person.dn}",
                "url": r.link,
            }
            for r in notification.recipients
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }


def _document(notification: Notification, kind: str) -> dict[str, Any]:
    if kind == "slack":
        return slack_message(notification)
    if kind == "teams":
        return teams_message(notification)
    return notification.as_json()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """
    The C{X-Hoopgate-Signature} value of a webhook body.
    """
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class _RetryableError(Exception):
    """
    An attempt failed in a way worth trying again.
    """


@implementer(INotifier)
class WebhookNotifier:
    """
    POSTs each request to a webhook, signed, retrying with backoff.

    Args:
        reactor: Connects, waits and times out.
        settings: The webhook.
        agent: The HTTP client (one verifying HTTPS by default).
    """

    name = "webhook"
    _log = Logger()

    def __init__(
        self, reactor: Any, settings: WebhookSettings, agent: Any = None
    ) -> None:
        self._reactor = reactor
        self._settings = settings
        if agent is None:
            trust: Any = None
            if settings.ca:
                trust = Certificate.loadPEM(Path(settings.ca).read_bytes())
            policy = BrowserLikePolicyForHTTPS(trustRoot=trust)
            agent = Agent(
                reactor, contextFactory=policy, connectTimeout=settings.timeout
            )
        self._agent = agent
        self._where = urlsplit(settings.url)._replace(query="", fragment="").geturl()

    def notify(self, notification: Notification) -> Deferred[None]:
        body = json.dumps(
            _document(notification, self._settings.format), separators=(",", ":")
        ).encode()
        return self._attempt(body, notification.request_id, 0)

    def _headers(self, body: bytes) -> Headers:
        headers = Headers({b"content-type": [b"application/json"]})
        headers.addRawHeader(b"user-agent", b"hoopgate")
        secret = self._settings.secret
        if secret is not None:
            stamp = str(int(self._reactor.seconds()))
            headers.addRawHeader(b"x-hoopgate-timestamp", stamp.encode())
            headers.addRawHeader(
                b"x-hoopgate-signature",
                signature(secret.reveal(), stamp, body).encode(),
            )
        return headers

    def _attempt(self, body: bytes, request_id: str, attempt: int) -> Deferred[None]:
        settings = self._settings
        posting: Deferred[Any] = self._agent.request(
            b"POST",
            settings.url.encode(),
            self._headers(body),
            FileBodyProducer(BytesIO(body)),
        )
        posting.addTimeout(settings.timeout, self._reactor)
        posting.addCallback(self._answered)

        def delivered(_: object) -> None:
            self._log.info(
                "Webhook {url} told of approval request {request_id}",
                url=self._where,
                request_id=request_id,
            )

        def failed(failure: Failure) -> Deferred[None] | Failure:
            error = failure.getErrorMessage()
            retry = not failure.check(_FinalError)
            if retry and attempt < settings.retries:
                delay = settings.backoff * 2**attempt
                self._log.warn(
                    "Webhook {url} failed for {request_id} ({error}); "
                    "retrying in {delay} s",
                    url=self._where,
                    request_id=request_id,
                    error=error,
                    delay=delay,
                )
                waited: Deferred[None] = deferLater(self._reactor, delay, lambda: None)
                return waited.addCallback(
                    lambda _: self._attempt(body, request_id, attempt + 1)
                )
            self._log.error(
                "Webhook {url} could not be told of approval request "
                "{request_id}: {error}",
                url=self._where,
                request_id=request_id,
                error=error,
            )
            return failure

        return posting.addCallbacks(delivered, failed)

    def _answered(self, response: Any) -> Deferred[None]:
        code = int(response.code)
        drained = _Drain()
        response.deliverBody(drained)

        def judged(_: object) -> None:
            if 200 <= code < 300:
                return
            if code == 429 or code >= 500:
                raise _RetryableError(f"HTTP {code}")
            raise _FinalError(f"HTTP {code}")

        return drained.finished.addCallback(judged)


class _Drain(Protocol):
    """
    Reads a webhook's answer to its end and keeps none of it.
    """

    def __init__(self) -> None:
        self.finished: Deferred[None] = Deferred()
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > _MAX_REPLY and not self.finished.called:
            self.finished.callback(None)
            stop = getattr(self.transport, "stopProducing", None)
            if stop is not None:
                stop()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.finished.called:
            self.finished.callback(None)


class _FinalError(Exception):
    """
    An attempt failed in a way another attempt would not change.
    """


# -- configuration --------------------------------------------------------


def _read_email(reader: ConfigReader) -> EmailSettings:
    ca = reader.raw("ca", None)
    if ca is not None and not Path(str(ca)).is_file():
        raise reader.error("ca", f"{ca} is not a readable file")
    settings = EmailSettings(
        host=reader.string("host"),
        port=reader.integer("port", 25, low=1, high=65535),
        sender=reader.string("from"),
        tls=reader.choice("tls", TLS_MODES, "starttls"),
        ca=ca,
        username=reader.string("username") if reader.has("username") else None,
        password=reader.secret("password") if reader.has("password") else None,
        timeout=reader.duration("timeout", 30.0),
    )
    if (settings.username is None) != (settings.password is None):
        raise reader.error("username", "username and password go together")
    return settings


def _read_webhook(reader: ConfigReader) -> WebhookSettings:
    url = reader.string("url")
    if urlsplit(url).scheme not in ("http", "https"):
        raise reader.error("url", "must be an http:// or https:// URL")
    ca = reader.raw("ca", None)
    if ca is not None and not Path(str(ca)).is_file():
        raise reader.error("ca", f"{ca} is not a readable file")
    return WebhookSettings(
        url=url,
        format=reader.choice("format", FORMATS, "json"),
        secret=reader.secret("secret") if reader.has("secret") else None,
        ca=ca,
        retries=reader.integer("retries", 3, low=0, high=10),
        backoff=reader.duration("backoff", 1.0),
        timeout=reader.duration("timeout", 10.0),
    )


NotifierSettings = EmailSettings | WebhookSettings | str


def read_notifier(reader: ConfigReader) -> NotifierSettings:
    """
    Validate one entry of C{gateway.approvals.notify}.

    Raises:
        ConfigError: Naming the key and line of the mistake.
    """
    kind = reader.choice("kind", ("log", "email", "webhook"))
    settings: NotifierSettings = "log"
    if kind == "email":
        settings = _read_email(reader)
    elif kind == "webhook":
        settings = _read_webhook(reader)
    reader.done()
    return settings


def make_notifiers(
    reactor: Any, settings: Sequence[NotifierSettings]
) -> list[INotifier]:
    """
    The notifiers the settings describe (C{log} when none are given).
    """
    notifiers: list[INotifier] = []
    for entry in settings or ("log",):
        if isinstance(entry, EmailSettings):
            notifiers.append(EmailNotifier(reactor, entry))
        elif isinstance(entry, WebhookSettings):
            notifiers.append(WebhookNotifier(reactor, entry))
        else:
            notifiers.append(LogNotifier())
    return notifiers
