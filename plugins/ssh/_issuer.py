"""
The certificate endpoint on the gateway's admin listener:
C{POST /plugins/ssh/certificates}.

A service account sends its OIDC token and an OpenSSH public key as
JSON, C{{"token": "...", "public_key": "ssh-ed25519 AAAA..."}} (and
C{"listener"} when several SSH listeners have a CA); the token passes
the gateway's identity stage and access policy (L{IGateway.identify}),
and the answer is a user certificate signed by the listener's CA:
C{{"certificate": "ssh-ed25519-cert-v01@openssh.com AAAA...",
"serial": N, "valid_before": T, "principals": [...]}}.

A token must not cross a network in clear: over plain HTTP only a
loopback client is served.  Refusals say only "authentication failed"
or "access denied" (after the gateway's refusal delay); the log has the
detail.  Nothing here records or logs the token.

test-case-name: tests.unit.ssh.test_issuer
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from hoopgate.plugin import Identity, IGateway, SessionRefusedError
from hoopgate_plugins.ssh._certs import CertificateError, issue
from hoopgate_plugins.ssh._settings import CertificateSettings

#: The largest request body read (a token and a public key).
MAX_BODY = 64 * 1024


def _answer(request: server.Request, code: int, body: Mapping[str, object]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body).encode("utf-8") + b"\n"


def _loopback(request: server.Request) -> bool:
    host = getattr(request.getClientAddress(), "host", "")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _client(request: server.Request) -> str:
    return str(getattr(request.getClientAddress(), "host", ""))


class CertificateRequestError(Exception):
    """
    A request that cannot be served; C{code} and the message go back.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _read_body(request: server.Request) -> dict[str, Any]:
    content = request.content
    data = content.read(MAX_BODY + 1) if content is not None else b""
    if len(data) > MAX_BODY:
        raise CertificateRequestError(413, "the request is too large")
    try:
        body = json.loads(data)
    except ValueError:
        raise CertificateRequestError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise CertificateRequestError(400, "the body must be a JSON object")
    for key in ("token", "public_key"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise CertificateRequestError(400, f"{key} is required (text)")
    return body


class Certificates(resource.Resource):
    """
    Issues certificates with the CA of an SSH listener.

    Args:
        gateway: Proves tokens.
        authorities: The listeners' certificate settings by listener
            name, only those with a signing key.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self, gateway: IGateway, authorities: Mapping[str, CertificateSettings]
    ) -> None:
        # Twisted's Resource.__init__ has no annotations.
        super().__init__()  # type: ignore[no-untyped-call]
        self._gateway = gateway
        self._authorities = dict(authorities)

    def render_POST(self, request: server.Request) -> bytes | int:
        if request.postpath not in ([], [b""]):
            return _answer(request, 404, {"error": "POST /plugins/ssh/certificates"})
        if not request.isSecure() and not _loopback(request):
            return _answer(
                request, 403, {"error": "use HTTPS: a token must not cross in clear"}
            )
        try:
            body = _read_body(request)
            authority = self._authority(body.get("listener"))
        except CertificateRequestError as e:
            return _answer(request, e.code, {"error": str(e)})

        self._issue(request, body, authority)
        return server.NOT_DONE_YET

    def _authority(self, name: object) -> CertificateSettings:
        if name is None and len(self._authorities) == 1:
            return next(iter(self._authorities.values()))
        if name is None:
            raise CertificateRequestError(400, "listener is required: several CAs")
        if not isinstance(name, str) or name not in self._authorities:
            raise CertificateRequestError(404, "no such SSH listener with a CA")
        return self._authorities[name]

    def _issue(
        self,
        request: server.Request,
        body: dict[str, Any],
        authority: CertificateSettings,
    ) -> None:
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))
        peer = _client(request)

        def proved(identity: Identity) -> None:
            if finished:
                return
            request.write(self._signed(request, identity, body, authority, peer))
            request.finish()

        def refused(failure: Failure) -> None:
            if finished:
                return
            error = failure.value
            if isinstance(error, SessionRefusedError):
                code = 401 if error.reason.code.startswith("identity.") else 403
                answer = {"error": error.reason.message}
            else:
                self._log.failure("Issuing an SSH certificate failed", failure)
                code, answer = 500, {"error": "the gateway could not issue it"}
            request.write(_answer(request, code, answer))
            request.finish()

        identified = self._gateway.identify(body["token"], "ssh", peer)
        identified.addCallbacks(proved, refused)

    def _signed(
        self,
        request: server.Request,
        identity: Identity,
        body: dict[str, Any],
        authority: CertificateSettings,
        peer: str,
    ) -> bytes:
        assert authority.ca_key is not None
        try:
            issued = issue(
                authority.ca_key,
                authority.policy,
                identity,
                body["public_key"],
                requester=peer,
                now=self._gateway.reactor.seconds(),
            )
        except CertificateError as e:
            return _answer(request, 400, {"error": str(e)})
        self._log.info(
            "Issued SSH certificate {serial} for {subject} to {peer}, valid until "
            "{valid_before}",
            serial=issued.serial,
            subject=identity.subject,
            peer=peer,
            valid_before=issued.valid_before,
        )
        return _answer(
            request,
            200,
            {
                "certificate": issued.text,
                "serial": issued.serial,
                "valid_before": issued.valid_before,
                "principals": list(issued.principals),
            },
        )


def certificate_resource(
    gateway: IGateway, authorities: Mapping[str, CertificateSettings]
) -> resource.Resource | None:
    """
    The plugin's admin resource: C{certificates} under its mount point,
    or C{None} when no listener has a signing key.
    """
    signing = {n: a for n, a in authorities.items() if a.ca_key is not None}
    if not signing:
        return None
    root = resource.Resource()
    root.putChild(b"certificates", Certificates(gateway, signing))
    return root


__all__ = ["MAX_BODY", "Certificates", "certificate_resource"]
