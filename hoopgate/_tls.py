"""
TLS context helpers for plugins: toward clients and toward targets.

test-case-name: tests.unit.test_tls
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl

from hoopgate._config import TLSFiles

_RELEASE_BUFFERS = getattr(SSL, "MODE_RELEASE_BUFFERS", 0x10)


class _LeanOptions(ssl.CertificateOptions):
    """
    Certificate options whose connections free idle buffers, so that
    thousands of idle TLS sessions stay small.
    """

    _lean = False

    def getContext(self) -> SSL.Context:
        # The context is built once and cached; OpenSSL refuses changes
        # once a connection has used it, so set the mode the first time.
        context = super().getContext()
        if not self._lean:
            context.set_mode(_RELEASE_BUFFERS)
            self._lean = True
        return context


def server_tls_options(
    files: TLSFiles, protocols: tuple[bytes, ...] = ()
) -> ssl.CertificateOptions:
    """
    Options for the gateway's side of a client's TLS connection.

    Args:
        files: The certificate and key.
        protocols: ALPN protocol names to accept (libpq 17 and later
            offer C{postgresql}); empty for none.

    Raises:
        ValueError: The certificate or key cannot be read.
    """
    try:
        certificate = ssl.PrivateCertificate.loadPEM(
            Path(files.key).read_text() + Path(files.certificate).read_text()
        )
    except (OSError, SSL.Error) as e:
        raise ValueError(f"cannot load TLS certificate or key: {e}") from None

    return _LeanOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableProtocols=list(protocols) or None,
    )


def client_tls_options(mode: str, hostname: str, ca_file: str | None) -> Any:
    """
    Options for the gateway's TLS connection to a target.

    C{verify-full} checks the chain against C{ca_file} and the name
    against C{hostname}; C{require} and C{prefer} encrypt without
    verifying (as libpq's modes of the same names do).
    """
    if mode == "verify-full":
        if ca_file is None:
            raise ValueError("verify-full needs a CA file")
        authority = ssl.Certificate.loadPEM(Path(ca_file).read_bytes())
        return ssl.optionsForClientTLS(hostname, trustRoot=authority)

    return _LeanOptions(verify=False, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
