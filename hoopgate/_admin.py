"""
The admin HTTP listener: health, reload and live sessions.

Loopback by default.  Requests that change anything are POSTs and, when
C{gateway.admin.token} is set, need C{Authorization: Bearer TOKEN}.

test-case-name: tests.unit.test_admin
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import resource, server
from twisted.web.iweb import IRequest

from hoopgate._configreader import ConfigError
from hoopgate._gateway import Gateway


def _json(request: IRequest, code: int, body: object) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, default=str).encode() + b"\n"


class _Leaf(resource.Resource):
    isLeaf = True

    def __init__(self, admin: AdminSite) -> None:
        # mypy's untyped_calls_exclude does not cover super() calls, and
        # Twisted's Resource.__init__ has no annotations.
        super().__init__()  # type: ignore[no-untyped-call]
        self.admin = admin


class _Health(_Leaf):
    def render_GET(self, request: IRequest) -> bytes:
        gateway = self.admin.gateway
        return _json(
            request,
            200,
            {
                "status": "ok",
                "sessions": len(gateway.sessions),
                "config": gateway.config.source,
                "protocols": sorted(gateway.config.plugins),
            },
        )


class _Reload(_Leaf):
    def render_POST(self, request: IRequest) -> bytes:
        if not self.admin.authorized(request):
            return _json(request, 401, {"error": "admin token required"})
        try:
            self.admin.reload()
        except ConfigError as e:
            return _json(request, 400, {"error": str(e)})
        return _json(request, 200, {"status": "reloaded"})


class _Sessions(_Leaf):
    def render_GET(self, request: IRequest) -> int:
        def send(infos: list[Any]) -> None:
            body = [attrs.asdict(i) for i in infos]
            request.write(_json(request, 200, {"sessions": body}))
            request.finish()

        deferred: Deferred[Any] = self.admin.gateway.live()
        deferred.addCallback(send)
        return server.NOT_DONE_YET

    def render_POST(self, request: IRequest) -> bytes:
        if not self.admin.authorized(request):
            return _json(request, 401, {"error": "admin token required"})
        parts = [p for p in request.postpath if p]
        if len(parts) != 2 or parts[1] != b"terminate":
            return _json(request, 404, {"error": "POST /sessions/ID/terminate"})
        self.admin.gateway.terminate(parts[0].decode("ascii", "replace"))
        return _json(request, 202, {"status": "terminating"})


class AdminSite:
    """
    The admin listener's resources.

    Args:
        gateway: The gateway to report on.
        reload: Reloads the configuration (raises L{ConfigError}).
    """

    _log = Logger()

    def __init__(self, gateway: Gateway, reload: Callable[[], None]) -> None:
        self.gateway = gateway
        self.reload = reload
        root = resource.Resource()
        root.putChild(b"healthz", _Health(self))
        root.putChild(b"reload", _Reload(self))
        root.putChild(b"sessions", _Sessions(self))
        self.root = root

    def authorized(self, request: IRequest) -> bool:
        """
        Whether a state-changing request carries the admin token (when
        one is configured).
        """
        token = self.gateway.config.gateway.admin_token
        if token is None:
            return True
        given = request.getHeader(b"authorization") or ""
        expected = f"Bearer {token.reveal()}"
        return hmac.compare_digest(given.encode(), expected.encode())

    def site(self) -> server.Site:
        """
        The site to listen with.
        """
        site = server.Site(self.root)
        site.displayTracebacks = False
        return site
