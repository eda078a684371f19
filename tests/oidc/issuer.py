"""
A small OIDC issuer for tests and the demo (never for production).

It serves, on 127.0.0.1 only:

  - C{GET /.well-known/openid-configuration}: the discovery document;
  - C{GET /jwks}: the public signing key (RS256, kid C{test-rs256});
  - C{POST /token}: the OAuth 2.0 client_credentials grant for the clients in
    L{CLIENTS} (HTTP Basic or form client authentication);
  - C{POST /mint}: a development shortcut returning a bare access token for any
    subject, form fields C{sub} (required), C{ttl} (seconds, default 300),
    C{aud} (default the configured audience) and C{groups} (comma list).

Tokens are RFC 9068 JWTs: header C{alg=RS256, typ=at+jwt, kid=test-rs256},
claims C{iss, sub, aud, iat, nbf, exp, jti} and C{groups} when given.

A C{ttl} of zero or less mints an I{already-expired} token: it expired
C{-ttl} seconds plus L{EXPIRED_MARGIN} ago, so that a verifier's clock
leeway (typically 30 s to a few minutes) cannot make it valid again.

The private key is generated at start and written as a JWK to C{--key-file}
(mode 0600) so tests can forge tokens that carry the same kid.

Run: C{python tests/oidc/issuer.py --port 54444 --key-file /tmp/run/key.json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from joserfc import jwk, jwt
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.server import Request

KID = "test-rs256"
DEFAULT_AUDIENCE = "https://hoopgate.test"
DEFAULT_TTL = 300
EXPIRED_MARGIN = 300

# client_id -> (secret, scopes it may ask for)
CLIENTS: dict[str, tuple[str, frozenset[str]]] = {
    "svc-ci": ("svc-ci-secret", frozenset({"db:read", "db:write", "ssh:exec"})),
    "svc-other": ("svc-other-secret", frozenset({"db:read"})),
}

Reply = tuple[int, dict[str, Any]]


class Issuer:
    """
    Mints and publishes tokens for one issuer URL.

    Attributes:
        issuer: The issuer URL, C{http://127.0.0.1:PORT}.
        audience: The default C{aud} of minted tokens.
        key: The RSA signing key (private).
        clock: Returns the current POSIX time; replaceable in tests.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        key: jwk.RSAKey,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.key = key
        self.clock = clock

    def discovery(self) -> dict[str, Any]:
        """
        The OpenID Connect discovery document.
        """
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + "/jwks",
            "token_endpoint": self.issuer + "/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
            ],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        }

    def jwks(self) -> dict[str, Any]:
        """
        The public key set.
        """
        return {"keys": [self.key.as_dict(private=False)]}

    def mint(
        self,
        sub: str,
        ttl: int,
        aud: str | None = None,
        groups: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """
        Sign an access token for C{sub}, valid for C{ttl} seconds.

        A C{ttl} of zero or less gives a token that is already expired,
        by more than any reasonable leeway (see the module docstring).
        """
        now = int(self.clock())
        if ttl > 0:
            iat, exp = now, now + ttl
        else:
            exp = now + ttl - EXPIRED_MARGIN
            iat = exp - DEFAULT_TTL
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": aud or self.audience,
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "jti": uuid.uuid4().hex,
        }
        if groups:
            claims["groups"] = groups
        claims.update(extra or {})
        header = {"alg": "RS256", "typ": "at+jwt", "kid": KID}
        return jwt.encode(header, claims, self.key)


def _form(request: Request, name: str, default: str = "") -> str:
    """
    One form or query field of C{request}, decoded, or C{default}.
    """
    values = (request.args or {}).get(name.encode())
    return values[0].decode() if values else default


def _client(request: Request) -> tuple[str, str]:
    """
    The client id and secret, from HTTP Basic or from the form.
    """
    user, password = request.getUser(), request.getPassword()
    if user:
        return user.decode(), password.decode()
    return _form(request, "client_id"), _form(request, "client_secret")


def _int_field(request: Request, name: str, default: int) -> int | None:
    """
    An integer form field, C{default} when absent, C{None} when malformed.
    """
    text = _form(request, name, str(default))
    try:
        return int(text)
    except ValueError:
        return None


class JSONResource(resource.Resource):
    """
    A leaf answering every request with C{fn(request)} rendered as JSON.
    """

    isLeaf = True

    def __init__(self, fn: Callable[[Request], Reply], methods: set[bytes]) -> None:
        # Not super().__init__(): mypy's untyped_calls_exclude misses that form.
        resource.Resource.__init__(self)
        self.fn = fn
        self.methods = methods

    def render(self, request: Request) -> bytes:
        if request.method not in self.methods:
            code, body = 405, {"error": "method_not_allowed"}
        else:
            code, body = self.fn(request)
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(body).encode()


class MintResource(resource.Resource):
    """
    C{POST /mint}: the bare token as text/plain (development only).
    """

    isLeaf = True

    def __init__(self, issuer: Issuer) -> None:
        resource.Resource.__init__(self)
        self.issuer = issuer

    def render_POST(self, request: Request) -> bytes:
        sub = _form(request, "sub")
        ttl = _int_field(request, "ttl", DEFAULT_TTL)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if not sub or ttl is None:
            request.setResponseCode(400)
            return b"sub is required and ttl must be an integer\n"
        groups = [g.strip() for g in _form(request, "groups").split(",") if g.strip()]
        token = self.issuer.mint(sub, ttl, _form(request, "aud") or None, groups)
        return token.encode()


def token_endpoint(issuer: Issuer) -> Callable[[Request], Reply]:
    """
    The client_credentials grant (RFC 6749 section 4.4).
    """

    def token(request: Request) -> Reply:
        client_id, secret = _client(request)
        known = CLIENTS.get(client_id)
        if known is None or known[0] != secret:
            return 401, {"error": "invalid_client"}
        if _form(request, "grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        scope = _form(request, "scope") or " ".join(sorted(known[1]))
        if not set(scope.split()) <= known[1]:
            return 400, {"error": "invalid_scope"}
        ttl = _int_field(request, "ttl", DEFAULT_TTL)
        if ttl is None:
            return 400, {"error": "invalid_request"}
        extra = {"client_id": client_id, "scope": scope}
        aud = _form(request, "resource") or None
        access_token = issuer.mint(client_id, ttl, aud, extra=extra)
        return 200, {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": scope,
        }

    return token


def make_root(issuer: Issuer) -> resource.Resource:
    """
    The resource tree: discovery, JWKS, token and mint endpoints.
    """
    root = resource.Resource()
    well_known = resource.Resource()
    root.putChild(b".well-known", well_known)
    well_known.putChild(
        b"openid-configuration",
        JSONResource(lambda r: (200, issuer.discovery()), {b"GET", b"HEAD"}),
    )
    root.putChild(b"jwks", JSONResource(lambda r: (200, issuer.jwks()), {b"GET"}))
    root.putChild(b"token", JSONResource(token_endpoint(issuer), {b"POST"}))
    root.putChild(b"mint", MintResource(issuer))
    return root


def generate_key(path: str) -> jwk.RSAKey:
    """
    Make the RSA signing key and write it (private) as a JWK to C{path}.
    """
    key = jwk.RSAKey.generate_key(
        2048, parameters={"kid": KID, "alg": "RS256", "use": "sig"}
    )
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(key.as_dict(private=True), f)
    os.replace(tmp, path)
    return key


def main(argv: list[str] | None = None) -> None:
    """
    Parse arguments, write the key and serve until SIGTERM.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("OIDC_PORT", "54444"))
    )
    parser.add_argument("--audience", default=DEFAULT_AUDIENCE)
    parser.add_argument("--key-file", required=True)
    args = parser.parse_args(argv)

    log = Logger(namespace="oidc-issuer")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    url = f"http://127.0.0.1:{args.port}"
    issuer = Issuer(url, args.audience, generate_key(args.key_file))
    site = server.Site(make_root(issuer))
    endpoint = TCP4ServerEndpoint(reactor, args.port, interface="127.0.0.1")

    def listening(_: object) -> None:
        log.info("issuer {url} ready", url=url)

    def failed(failure: Failure) -> None:
        log.failure("cannot listen on {url}", failure, url=url)
        reactor.stop()

    endpoint.listen(site).addCallbacks(listening, failed)
    reactor.run()


if __name__ == "__main__":
    main()
