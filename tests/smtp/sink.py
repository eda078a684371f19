"""
An SMTP sink for tests and the demo (never for production).

It accepts every message for every recipient on 127.0.0.1 and writes each
one, as received, into a maildir folder: first into C{MAILDIR/tmp}, then
renamed into C{MAILDIR/new}, so a reader never sees half a message.  A
message is only acknowledged (250) once its file is in C{new}.

With C{--cert} and C{--key} it offers STARTTLS (ESMTP), so clients can be
tested for upgrading and for verifying the certificate; C{--require-tls}
refuses mail sent without it.  Each message file starts with the
envelope as C{X-Sink-*} headers: sender, recipients, whether TLS was on.

Run: C{python tests/smtp/sink.py --port 2525 --maildir /tmp/run/mail}.

test-case-name: tests.integration.test_approvals_services
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, ssl
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.mail import smtp
from twisted.python.failure import Failure
from zope.interface import implementer

_log = Logger(namespace="smtp-sink")

#: The largest message accepted, in bytes.
MAX_MESSAGE = 10 * 1024 * 1024

_counter = itertools.count(1)


def maildir(path: Path) -> Path:
    """
    Make the C{tmp}, C{new} and C{cur} folders of a maildir at C{path}.
    """
    for name in ("tmp", "new", "cur"):
        (path / name).mkdir(parents=True, exist_ok=True)
    return path


def _unique_name() -> str:
    return f"{time.time():.6f}.{os.getpid()}_{next(_counter)}.{socket.gethostname()}"


@implementer(smtp.IMessage)
class _Message:
    """
    One message on its way into the maildir.
    """

    def __init__(self, folder: Path, envelope: list[bytes]) -> None:
        self._folder = folder
        self._name = _unique_name()
        self._tmp = folder / "tmp" / self._name
        self._file = self._tmp.open("wb")
        self._size = 0
        for line in envelope:
            self._file.write(line + b"\n")

    def lineReceived(self, line: bytes) -> None:
        self._size += len(line) + 1
        if self._size <= MAX_MESSAGE:
            self._file.write(line + b"\n")

    def eomReceived(self) -> defer.Deferred[str]:
        self._file.close()
        if self._size > MAX_MESSAGE:
            self._tmp.unlink()
            return defer.fail(smtp.SMTPServerError(552, b"message too large"))
        os.replace(self._tmp, self._folder / "new" / self._name)
        _log.info("stored message {name}", name=self._name)
        return defer.succeed(self._name)

    def connectionLost(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


@implementer(smtp.IMessageDelivery)
class _Delivery:
    """
    Accepts every sender and recipient of one SMTP connection.
    """

    def __init__(self, folder: Path, tls: Callable[[], bool], require: bool) -> None:
        self._folder = folder
        self._tls = tls
        self._require = require
        self._sender = b""

    def receivedHeader(
        self, helo: tuple[bytes, bytes], origin: smtp.Address, recipients: list[Any]
    ) -> bytes:
        return b"Received: from " + helo[0] + b" by hoopgate-smtp-sink"

    def validateFrom(
        self, helo: tuple[bytes, bytes], origin: smtp.Address
    ) -> smtp.Address:
        if self._require and not self._tls():
            raise smtp.SMTPBadSender(origin, 530, b"Must issue a STARTTLS first")
        self._sender = bytes(str(origin), "ascii")
        return origin

    def validateTo(self, user: smtp.User) -> Callable[[], _Message]:
        envelope = [
            b"X-Sink-From: " + self._sender,
            b"X-Sink-To: " + bytes(str(user.dest), "ascii"),
            b"X-Sink-TLS: " + (b"yes" if self._tls() else b"no"),
        ]
        return lambda: _Message(self._folder, envelope)


class SinkFactory(smtp.SMTPFactory):
    """
    Builds an ESMTP server per connection, offering STARTTLS when it has
    a certificate.

    Args:
        folder: The maildir.
        tls: Server TLS options, or C{None} for no STARTTLS.
        require_tls: Refuse mail from connections that did not upgrade.
    """

    def __init__(
        self, folder: Path, tls: ssl.CertificateOptions | None, require_tls: bool
    ) -> None:
        # SMTPFactory.__init__ has no annotations (Twisted 26.10).
        super().__init__()  # type: ignore[no-untyped-call]
        self._folder = folder
        self._tls = tls
        self._require = require_tls

    def buildProtocol(self, addr: Any) -> smtp.ESMTP:
        server = smtp.ESMTP(contextFactory=self._tls)
        server.factory = self
        server.host = b"hoopgate-smtp-sink"

        def upgraded() -> bool:
            return bool(server.startedTLS)

        server.delivery = _Delivery(self._folder, upgraded, self._require)
        return server


def _tls_options(cert: str | None, key: str | None) -> ssl.CertificateOptions | None:
    if not cert or not key:
        return None
    pem = Path(cert).read_text(encoding="ascii") + Path(key).read_text(encoding="ascii")
    options: ssl.CertificateOptions = ssl.PrivateCertificate.loadPEM(pem).options()
    return options


def main(argv: list[str] | None = None) -> None:
    """
    Parse arguments and serve until SIGTERM.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--require-tls", action="store_true")
    args = parser.parse_args(argv)

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    folder = maildir(Path(args.maildir))
    tls = _tls_options(args.cert, args.key)
    factory = SinkFactory(folder, tls, args.require_tls)
    endpoint = TCP4ServerEndpoint(reactor, args.port, interface="127.0.0.1")

    def listening(_: object) -> None:
        _log.info(
            "SMTP sink on 127.0.0.1:{port} into {folder} (STARTTLS {tls})",
            port=args.port,
            folder=str(folder),
            tls="offered" if tls else "off",
        )

    def failed(failure: Failure) -> None:
        _log.failure("cannot listen on port {port}", failure, port=args.port)
        reactor.stop()

    endpoint.listen(factory).addCallbacks(listening, failed)
    reactor.run()


if __name__ == "__main__":
    main()
