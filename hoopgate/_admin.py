"""
The admin HTTP listener: health, reload, live sessions and approvals.

Loopback by default.  Requests that change anything are POSTs and, when
C{gateway.admin.token} is set, need C{Authorization: Bearer TOKEN};
approvals authenticate their own way: an approver signs in with their
directory password (HTTP Basic for the API, a form on the page a link
opens), a requester of access with their OIDC token.

Whatever the token says, the listener answers only requests whose
C{Host} names it (its address, C{localhost} on loopback, the approvals'
C{public_url}, C{gateway.admin.allowed_hosts}), so a page that rebinds
its own name to the listener's address learns and changes nothing; and
it refuses requests that change state when their C{Origin} (or
C{Referer}) is another site, so a page in the operator's browser cannot
post to it.  A method a resource does not serve is a 405 naming those it
does.

test-case-name: tests.unit.test_admin
"""

from __future__ import annotations

import base64
import hmac
import html
import ipaddress
import json
import secrets
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from hoopgate._approvals import (
    ApprovalRefusedError,
    ApprovalRequest,
    ApprovalService,
    BadTokenError,
    VoteOutcome,
    admin_base_url,
    parse_duration,
    session_rule,
)
from hoopgate._configreader import ConfigError
from hoopgate._gateway import Gateway
from hoopgate._identity import Identity
from hoopgate._interfaces import IAdminResource
from hoopgate._ldap import DirectoryUnavailableError, Person
from hoopgate._oidc import TokenRejected
from hoopgate._store import StoreUnavailableError
from hoopgate._tls import server_tls_options


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

    def render_POST(self, request: IRequest) -> bytes | int:
        if not self.admin.authorized(request):
            return _json(request, 401, {"error": "admin token required"})
        parts = _parts(request)
        if len(parts) != 2 or parts[1] != "terminate":
            return _json(request, 404, {"error": "POST /sessions/ID/terminate"})
        work = self._terminate(parts[0]).addErrback(_refusal)
        return _deliver(request, work, _api_reply)

    def _terminate(self, session_id: str) -> Deferred[Reply]:
        """
        End a live session, here or in another process sharing the
        store; an id no process registered is a 404.
        """
        gateway = self.admin.gateway
        if session_id in gateway.sessions:
            gateway.terminate(session_id)
            return succeed((202, {"status": "terminating"}))

        def known(value: str | None) -> Deferred[Reply] | Reply:
            if value is None:
                return 404, {"error": f"no live session {session_id}"}
            sent: Deferred[Any] = gateway.terminate(session_id)
            return sent.addCallback(lambda _: (202, {"status": "terminating"}))

        found: Deferred[str | None] = gateway.store.get(f"session:{session_id}")
        return found.addCallback(known)


def plugin_resources(gateway: Gateway) -> resource.Resource:
    """
    C{/plugins/NAME/}: what each plugin providing L{IAdminResource}
    serves, built once at start from the configuration's listeners.
    """
    mount = resource.Resource()
    config = gateway.config
    for name, plugin in sorted(config.plugins.items()):
        if not IAdminResource.providedBy(plugin):
            continue
        listeners = tuple(x for x in config.listeners if x.protocol == name)
        child = IAdminResource(plugin).admin_resource(gateway, listeners)
        if child is not None:
            mount.putChild(name.encode("utf-8"), IResource(child))
    return mount


# -- approvals -----------------------------------------------------------

_MAX_BODY = 16 * 1024
_CSRF_COOKIE = b"hoopgate_csrf"
_PAGE_HEADERS = {
    b"content-type": b"text/html; charset=utf-8",
    b"cache-control": b"no-store",
    # Same-origin, not no-referrer: under no-referrer browsers send
    # "Origin: null" with the page's own form posts, which the listener
    # must refuse; other sites still get no referrer (the link's token).
    b"referrer-policy": b"same-origin",
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"content-security-policy": (
        b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'"
    ),
}

Reply = tuple[int, Any]


def _parts(request: IRequest) -> list[str]:
    return [p.decode("utf-8", "replace") for p in request.postpath if p]


def _basic(request: IRequest) -> tuple[str, str] | None:
    header = (request.getHeader("authorization") or "").strip()
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    login, colon, password = decoded.partition(":")
    return (login, password) if colon else None


def _bearer(request: IRequest) -> str | None:
    header = (request.getHeader("authorization") or "").strip()
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def _json_body(request: IRequest) -> dict[str, Any] | None:
    """
    A JSON object body, or C{None}.  Only C{application/json} is read: a
    cross-site form cannot send it, which keeps the API safe from CSRF.
    """
    kind = (request.getHeader("content-type") or "").split(";")[0].strip()
    if kind != "application/json":
        return None
    raw = request.content.read(_MAX_BODY + 1) if request.content else b""
    if len(raw) > _MAX_BODY:
        return None
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _deliver(
    request: Any, work: Deferred[Any], write: Callable[[IRequest, Any], bytes]
) -> int:
    """
    Answer C{request} once C{work} fires, unless the client left.
    """
    gone: list[bool] = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))

    def send(result: Any) -> None:
        if gone:
            return
        request.write(write(request, result))
        request.finish()

    def broken(failure: Failure) -> None:
        AdminSite._log.failure(
            "An approval request to the admin listener failed", failure
        )
        if not gone:
            request.setResponseCode(500)
            request.write(b"internal error\n")
            request.finish()

    work.addCallback(send).addErrback(broken)
    return server.NOT_DONE_YET


def _api_reply(request: IRequest, reply: Reply) -> bytes:
    code, body = reply
    if code == 401:
        request.setHeader(b"www-authenticate", b'Basic realm="hoopgate approvals"')
    return _json(request, code, body)


def _refusal(failure: Failure) -> Reply:
    """
    The answer to a refused or failed approval action.
    """
    error = failure.value
    if isinstance(error, ApprovalRefusedError):
        return error.status, {"error": str(error)}
    if isinstance(error, BadTokenError):
        return 400, {"error": str(error)}
    if isinstance(error, TokenRejected):
        return 401, {"error": "the token was not accepted"}
    if isinstance(error, DirectoryUnavailableError | StoreUnavailableError):
        AdminSite._log.error(
            "An approval action could not be carried out: {error}", error=str(error)
        )
        return 503, {"error": "approval is unavailable right now; nothing was decided"}
    failure.raiseException()
    raise AssertionError("unreachable")


class ApprovalApi(_Leaf):
    """
    C{/approvals}: list, show, vote on and request approvals, in JSON.

      - C{GET /approvals}, C{GET /approvals/ID}: open requests (literals
        masked); the admin token when one is configured.
      - C{POST /approvals/ID/approve} and C{.../deny}: HTTP Basic with the
        approver's directory login and password, body C{{"reason": ...}}
        as C{application/json}.
      - C{POST /approvals/requests}: access for a session-mode target,
        C{Authorization: Bearer OIDC-TOKEN}, body C{{"target": ...,
        "duration": "2h", "reason": ...}}.
    """

    @property
    def service(self) -> ApprovalService:
        approvals = self.admin.gateway.approvals
        assert approvals is not None
        return approvals

    def render_GET(self, request: IRequest) -> bytes | int:
        if not self.admin.authorized(request):
            return _json(request, 401, {"error": "admin token required"})
        parts = _parts(request)
        if not parts:
            return _deliver(request, self._list(), _api_reply)
        if len(parts) == 1:
            return _deliver(request, self._show(parts[0]), _api_reply)
        return _json(request, 404, {"error": "GET /approvals or /approvals/ID"})

    def render_POST(self, request: IRequest) -> bytes | int:
        parts = _parts(request)
        if parts == ["requests"]:
            work = self._request_access(request)
        elif len(parts) == 2 and parts[1] in ("approve", "deny"):
            work = self._vote(request, parts[0], parts[1] == "approve")
        else:
            return _json(request, 404, {"error": "POST /approvals/ID/approve|deny"})
        return _deliver(request, work.addErrback(_refusal), _api_reply)

    def _list(self) -> Deferred[Reply]:
        def listed(found: list[Any]) -> Reply:
            body = [
                {
                    **request.public(),
                    "approvals": sum(1 for v in votes if v.decision == "approve"),
                }
                for request, votes in found
            ]
            return 200, {"requests": body}

        return self.service.pending().addCallback(listed).addErrback(_refusal)

    def _show(self, request_id: str) -> Deferred[Reply]:
        service = self.service

        def shown(state: list[Any]) -> Reply:
            request, decision, votes = state
            if request is None:
                return 404, {"error": "no such request (it may have expired)"}
            return 200, {
                **request.public(),
                "decision": attrs.asdict(decision) if decision else None,
                "votes": [attrs.asdict(v) for v in votes],
            }

        return service._state(request_id).addCallback(shown).addErrback(_refusal)

    def _vote(
        self, request: IRequest, request_id: str, approve: bool
    ) -> Deferred[Reply]:
        body = _json_body(request)
        if body is None:
            return succeed((415, {"error": "send a JSON object (application/json)"}))
        credentials = _basic(request)
        if credentials is None:
            return succeed((401, {"error": "sign in with your directory login"}))
        reason = str(body.get("reason") or "")
        service = self.service

        def signed_in(person: Person | None) -> Deferred[Reply]:
            if person is None:
                return _slowly(self.admin.gateway, (401, {"error": "sign-in failed"}))
            voting = service.vote(request_id, person.dn, approve, reason)
            return voting.addCallback(lambda o: (200, attrs.asdict(o)))

        return service.directory.authenticate(*credentials).addCallback(signed_in)

    def _request_access(self, request: IRequest) -> Deferred[Reply]:
        token = _bearer(request)
        body = _json_body(request)
        if token is None:
            return succeed(
                (401, {"error": "present your OIDC token as a bearer token"})
            )
        if body is None:
            return succeed((415, {"error": "send a JSON object (application/json)"}))
        gateway = self.admin.gateway

        def proved(identity: Identity) -> Deferred[Reply] | Reply:
            return self._open_access(identity, body)

        return gateway.verifier.verify(token).addCallback(proved)

    def _open_access(
        self, identity: Identity, body: dict[str, Any]
    ) -> Deferred[Reply] | Reply:
        config = self.admin.gateway.config
        target = str(body.get("target") or "")
        reason = str(body.get("reason") or "").strip()
        if target not in config.targets:
            return 404, {"error": f"no target named {target!r}"}
        if config.policy.authorize(identity, target).rule is None:
            return 403, {"error": f"{identity.subject} may not reach {target}"}
        rule = session_rule(config.policy.approvals, identity, target)
        if rule is None:
            return 409, {"error": f"access to {target} needs no approval"}
        try:
            duration = parse_duration(str(body.get("duration") or ""))
        except ValueError as e:
            return 400, {"error": str(e)}
        if duration > rule.window:
            return 400, {"error": f"rule {rule.name} grants at most {rule.window:g} s"}
        if not reason:
            return 400, {"error": "give a reason"}

        opening = self.service.open_request(
            rule, identity, target, reason=reason, duration=duration
        )
        return opening.addCallback(
            lambda r: (
                201,
                {
                    "request_id": r.id,
                    "rule": r.rule,
                    "expires": r.expires,
                    "approvers": len(r.approvers),
                    "quorum": r.quorum,
                },
            )
        )


def _slowly(gateway: Gateway, reply: Reply) -> Deferred[Reply]:
    """
    C{reply}, after the gateway's refusal delay (slows password guessing).
    """
    waited: Deferred[Reply] = deferLater(
        gateway.reactor, gateway.refusal_delay, lambda: reply
    )
    return waited


def _html(title: str, *body: str) -> bytes:
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}"
        "pre{background:#f4f4f4;padding:1rem;white-space:pre-wrap;word-break:break-all}"
        "dt{font-weight:bold}label{display:block;margin:.5rem 0}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(body)}</body></html>\n"
    )
    return page.encode("utf-8")


def _facts(request: ApprovalRequest, full: bool) -> str:
    shown = request.text if full else request.summary
    rows = [
        ("Request", request.id),
        ("Rule", f"{request.rule} ({request.mode})"),
        ("Requester", request.subject),
        ("Target", request.target),
        ("Approvals needed", str(request.quorum)),
        (
            "Open until",
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(request.expires)),
        ),
    ]
    if request.reason:
        rows.append(("Reason", request.reason))
    items = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows
    )
    label = "The request in full" if full else "The request (literals masked)"
    return f"<dl>{items}</dl><h2>{label}</h2><pre>{html.escape(shown)}</pre>"


def _hidden(name: str, value: str) -> str:
    return f"<input type=hidden name={name} value='{html.escape(value, quote=True)}'>"


class ApprovalPage(_Leaf):
    """
    C{/approve/LINK}: the page an approver's link opens.

    A GET only shows the request (literals masked) and a sign-in form: it
    never decides anything, since mail scanners open links.  Signing in
    (the approver's directory login and password, a simple bind) shows
    the request in full and a form to approve or deny with a reason.
    Both forms are POSTs protected against cross-site requests (a cookie
    that must match a form field, and the C{Origin} or C{Referer} when
    sent, as for every POST to the listener); the link
    is bound to its approver and request, expires, and decides once.
    """

    @property
    def service(self) -> ApprovalService:
        approvals = self.admin.gateway.approvals
        assert approvals is not None
        return approvals

    def _send(self, request: IRequest, reply: Reply) -> bytes:
        code, page = reply
        request.setResponseCode(code)
        for name, value in _PAGE_HEADERS.items():
            request.setHeader(name, value)
        return bytes(page)

    def _token(self, request: IRequest) -> str | None:
        parts = _parts(request)
        return parts[0] if len(parts) == 1 else None

    def render_GET(self, request: IRequest) -> bytes | int:
        token = self._token(request)
        if token is None:
            return self._send(request, (404, _html("Not found")))
        csrf = secrets.token_urlsafe(24)
        cookie = b"%s=%s; Path=/approve; HttpOnly; SameSite=Strict" % (
            _CSRF_COOKIE,
            csrf.encode(),
        )
        if self.service.base_url.startswith("https:"):
            cookie += b"; Secure"
        request.setHeader(b"set-cookie", cookie)
        work = self._open(token).addCallback(self._sign_in_page, token, csrf)
        return _deliver(request, work.addErrback(self._trouble), self._send)

    def render_POST(self, request: IRequest) -> bytes | int:
        token = self._token(request)
        if token is None:
            return self._send(request, (404, _html("Not found")))
        if not self._same_site(request):
            return self._send(
                request,
                (403, _html("Refused", "<p>The form did not come from this page.</p>")),
            )
        step = _arg(request, "step")
        if step == "sign-in":
            work = self._sign_in(request, token)
        elif step == "decide":
            work = self._decide(request, token)
        else:
            return self._send(request, (400, _html("Bad request")))
        return _deliver(request, work.addErrback(self._trouble), self._send)

    def _same_site(self, request: IRequest) -> bool:
        cookie = request.getCookie(_CSRF_COOKIE) or b""
        field = _arg(request, "csrf").encode()
        if not cookie or not hmac.compare_digest(cookie, field):
            return False
        return self.admin.cross_site(request) is None

    def _open(self, token: str) -> Deferred[tuple[ApprovalRequest, str]]:
        """
        The open request a link is for, and the link's approver.
        """
        try:
            request_id, approver = self.service.check_link(token)
        except BadTokenError as e:
            return fail(
                ApprovalRefusedError(str(e), 410 if "expired" in str(e) else 400)
            )
        service = self.service

        def found(state: list[Any]) -> tuple[ApprovalRequest, str]:
            request, decision, _ = state
            if request is None:
                raise ApprovalRefusedError("the request is no longer open", 410)
            if decision is not None:
                raise ApprovalRefusedError(
                    f"the request is already {decision.state}", 409
                )
            return request, approver

        return service._state(request_id).addCallback(found)

    def _sign_in_page(
        self, opened: tuple[ApprovalRequest, str], token: str, csrf: str
    ) -> Reply:
        request, _ = opened
        form = (
            "<h2>Sign in to decide</h2><form method=post>"
            + _hidden("step", "sign-in")
            + _hidden("csrf", csrf)
            + "<label>Login <input name=login autocomplete=username required></label>"
            "<label>Password <input name=password type=password "
            "autocomplete=current-password required></label>"
            "<button type=submit>Sign in</button></form>"
            "<p>Opening this page decides nothing.</p>"
        )
        return 200, _html("Approval request", _facts(request, full=False), form)

    def _sign_in(self, http: IRequest, token: str) -> Deferred[Reply]:
        login, password = _arg(http, "login"), _arg(http, "password")
        csrf = _arg(http, "csrf")
        service = self.service

        def opened(found: tuple[ApprovalRequest, str]) -> Deferred[Reply]:
            request, approver = found
            checking = service.directory.authenticate(login, password)
            return checking.addCallback(signed_in, request, approver)

        def signed_in(
            person: Person | None, request: ApprovalRequest, approver: str
        ) -> Deferred[Reply] | Reply:
            if person is None:
                page = _html("Sign-in failed", "<p>The login or password is wrong.</p>")
                return _slowly(self.admin.gateway, (401, page))
            if person.key != approver:
                return 403, _html(
                    "Refused", "<p>This link was sent to another approver.</p>"
                )
            return 200, self._decide_page(request, token, person, csrf)

        return self._open(token).addCallback(opened)

    def _decide_page(
        self, request: ApprovalRequest, token: str, person: Person, csrf: str
    ) -> bytes:
        ticket = self.service.sign_in_token(token, person.dn)
        form = (
            f"<p>Signed in as {html.escape(person.dn)}.</p><form method=post>"
            + _hidden("step", "decide")
            + _hidden("csrf", csrf)
            + _hidden("sign_in", ticket)
            + "<label>Reason (optional) "
            "<textarea name=reason maxlength=500></textarea></label>"
            "<button type=submit name=decision value=approve>Approve</button> "
            "<button type=submit name=decision value=deny>Deny</button></form>"
        )
        return _html("Approval request", _facts(request, full=True), form)

    def _decide(self, http: IRequest, token: str) -> Deferred[Reply]:
        decision = _arg(http, "decision")
        if decision not in ("approve", "deny"):
            return succeed((400, _html("Bad request", "<p>Approve or deny.</p>")))
        service = self.service
        try:
            request_id, approver = service.check_link(token)
            signed = service.check_sign_in(token, _arg(http, "sign_in"))
        except BadTokenError as e:
            return succeed(
                (403, _html("Refused", f"<p>{html.escape(str(e))}; sign in again.</p>"))
            )
        if signed != approver:
            return succeed(
                (
                    403,
                    _html("Refused", "<p>This link was sent to another approver.</p>"),
                )
            )

        voting = service.vote(
            request_id, signed, decision == "approve", _arg(http, "reason"), link=token
        )

        def voted(outcome: VoteOutcome) -> Reply:
            text = (
                f"<p>Your answer ({html.escape(decision)}) was recorded: "
                f"{html.escape(outcome.message)}.</p>"
            )
            return 200, _html("Thank you", text)

        return voting.addCallback(voted)

    def _trouble(self, failure: Failure) -> Reply:
        code, body = _refusal(failure)
        return code, _html("Not possible", f"<p>{html.escape(body['error'])}.</p>")


def _arg(request: IRequest, name: str) -> str:
    values: list[bytes] = (request.args or {}).get(name.encode(), [b""])
    return values[0].decode("utf-8", "replace")[:4096]


# -- the listener's guard ---------------------------------------------------

#: Methods that change nothing, so a cross-site request does no harm.
_SAFE_METHODS: Final = frozenset({b"GET", b"HEAD"})

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

#: What a host name or an address in a C{Host} header may hold.
_HOST_CHARACTERS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-:")

#: Control characters as escapes, for log lines.
_CONTROL_ESCAPES: Final = {c: f"\\x{c:02x}" for c in [*range(32), 127]}

#: A scheme, a normalised host and a port: what makes a web origin.
Origin = tuple[str, str, int]


def _normal_host(name: str) -> str:
    """
    A host name in lower case without a final dot, or an address in its
    canonical form (C{::1} for C{0:0::1}).
    """
    name = name.lower().strip("[]").rstrip(".")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _host_header(value: str) -> tuple[str, int | None] | None:
    """
    The host and port a C{Host} header names; C{None} when it is not a
    plain C{host[:port]}.
    """
    parts = urlsplit(f"//{value}")
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    extra = parts.username, parts.password
    if not host or extra != (None, None) or parts.path or parts.query:
        return None
    if parts.fragment or not set(host) <= _HOST_CHARACTERS:
        return None
    return _normal_host(host), port


def _origin(url: str) -> Origin | None:
    """
    The origin of an C{http} or C{https} URL, or C{None}.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, _normal_host(parts.hostname), port


def _loggable(value: str | bytes | None, limit: int = 200) -> str:
    """
    A client-supplied value for a log line: clipped, control characters
    and non-ASCII escaped.
    """
    if value is None:
        return "-"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    clipped = value[:limit].encode("ascii", "backslashreplace").decode("ascii")
    return clipped.translate(_CONTROL_ESCAPES)


def _origin_text(url: str | None) -> str | None:
    """
    The origin part of a URL, to log a C{Referer} without its path.
    """
    if url is None:
        return None
    origin = _origin(url)
    return f"{origin[0]}://{origin[1]}:{origin[2]}" if origin else "(not a URL)"


def _loggable_path(request: IRequest) -> str:
    """
    The request's path for logs, without the query and with an approval
    link's token left out.
    """
    path = (request.path or b"").decode("utf-8", "replace")
    if path.startswith("/approve/"):
        path = "/approve/(link)"
    return _loggable(path)


def _access_line(timestamp: str, request: Any) -> str:
    """
    The access log's line for a request: no query string, no referrer,
    no approval link token.
    """
    length = request.sentLength or "-"
    return (
        f'"{_loggable(request.getClientAddress().host)}" - - {timestamp} '
        f'"{_loggable(request.method)} {_loggable_path(request)} '
        f'{_loggable(request.clientproto)}" {request.code} {length} '
        f'"{_loggable(request.getHeader(b"user-agent"))}"'
    )


def _plain(request: IRequest, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    if request.method == b"HEAD":
        request.setHeader(b"content-length", b"%d" % (len(text) + 1))
        return b""
    return text.encode("utf-8") + b"\n"


class _Answer(resource.Resource):
    """
    A fixed plain answer to any method: a refusal, a 404 or a 405.
    """

    isLeaf = True

    def __init__(self, code: int, text: str, allow: tuple[bytes, ...] = ()) -> None:
        # As in _Leaf: Resource.__init__ has no annotations.
        super().__init__()  # type: ignore[no-untyped-call]
        self.code = code
        self.text = text
        self.allow = allow

    def render(self, request: IRequest) -> bytes:
        if self.code == 405:
            request.setHeader(b"allow", b", ".join(self.allow))
        return _plain(request, self.code, self.text)


def _methods(found: object) -> tuple[bytes, ...] | None:
    """
    The methods a resource serves, when it lets L{resource.Resource}
    dispatch to its C{render_METHOD}s (C{None}: it renders itself).
    HEAD counts only where GET is served or HEAD is its own.
    """
    if not isinstance(found, resource.Resource):
        return None
    kind = type(found)
    if kind.render is not resource.Resource.render:
        return None
    methods = {
        name.removeprefix("render_").encode("ascii")
        for name in dir(kind)
        if name.startswith("render_") and name != "render_HEAD"
    }
    if b"GET" in methods or kind.render_HEAD is not resource.Resource.render_HEAD:
        methods.add(b"HEAD")
    return tuple(sorted(methods))


def _served(found: Any, method: bytes) -> Any:
    """
    C{found}, or the answer for a method it does not serve: 405 with
    C{Allow}, or 404 for a resource that serves nothing (a folder).
    """
    methods = _methods(found)
    if methods is None or method in methods:
        return found
    if not methods:
        return _Answer(404, "not found")
    allowed = ", ".join(m.decode("ascii") for m in methods)
    return _Answer(405, f"method not allowed here (allowed: {allowed})", methods)


class _GuardedSite(server.Site):
    """
    The admin site: every request passes L{AdminSite.refusal} before any
    resource sees it, and unserved methods never reach a resource.
    """

    def __init__(self, admin: AdminSite) -> None:
        # Twisted's Site and its getResourceFor have no annotations.
        super().__init__(  # type: ignore[no-untyped-call]
            admin.root, logFormatter=_access_line
        )
        self.admin = admin
        self.displayTracebacks = False

    def getResourceFor(self, request: IRequest) -> Any:
        reason = self.admin.refusal(request)
        if reason is not None:
            self.admin.log_refusal(request, reason)
            return _Answer(403, f"refused: {reason}")
        found = super().getResourceFor(request)  # type: ignore[no-untyped-call]
        return _served(found, request.method)


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
        root.putChild(b"plugins", plugin_resources(gateway))
        if gateway.approvals is not None:
            root.putChild(b"approvals", ApprovalApi(self))
            root.putChild(b"approve", ApprovalPage(self))
        self.root = root

    def authorized(self, request: IRequest) -> bool:
        """
        Whether a state-changing request carries the admin token (when
        one is configured).
        """
        token = self.gateway.config.gateway.admin_token
        if token is None:
            return True
        given = request.getHeader("authorization") or ""
        expected = f"Bearer {token.reveal()}"
        return hmac.compare_digest(given.encode(), expected.encode())

    def site(self) -> server.Site:
        """
        The site to listen with.
        """
        return _GuardedSite(self)

    # Which requests the listener answers.

    def _public_origin(self) -> Origin | None:
        approvals = self.gateway.config.gateway.approvals
        url = approvals.public_url if approvals is not None else None
        return _origin(url) if url else None

    def host_names(self, request: IRequest) -> frozenset[str]:
        """
        The names a request's C{Host} may give: the address it reached
        (and C{localhost} if that is loopback), the configured interface,
        the approvals' C{public_url} host and C{gateway.admin.allowed_hosts}.
        """
        settings = self.gateway.config.gateway
        names = {_normal_host(n) for n in settings.admin_allowed_hosts}
        configured = urlsplit(admin_base_url(settings.admin_listen)).hostname
        names.add(_normal_host(configured or ""))
        local = _normal_host(str(getattr(request.getHost(), "host", "")))
        names.add(local)
        try:
            if ipaddress.ip_address(local).is_loopback:
                names.add("localhost")
        except ValueError:
            pass
        public = self._public_origin()
        if public is not None:
            names.add(public[1])
        names.discard("")
        return frozenset(names)

    def own_origins(self, request: IRequest) -> frozenset[Origin]:
        """
        The origins of pages this listener served for a request's C{Host}
        (and the approvals' C{public_url}): the only ones that may post.
        """
        scheme = "https" if self.gateway.config.gateway.admin_tls else "http"
        origins = set()
        named = _host_header(request.getHeader("host") or "")
        if named is not None:
            host, port = named
            origins.add((scheme, host, port or _DEFAULT_PORTS[scheme]))
        public = self._public_origin()
        if public is not None:
            origins.add(public)
        return frozenset(origins)

    def cross_site(self, request: IRequest) -> str | None:
        """
        Why a request seems to come from another site's page, if it does:
        its C{Origin}, or without one its C{Referer}, is not one of
        L{own_origins}.  A request with neither (a command-line client)
        does not.
        """
        sent = request.getHeader("origin")
        if sent is None:
            referer = request.getHeader("referer")
            if referer is None:
                return None
            sent = referer
        origin = _origin(sent)
        if origin is None or origin not in self.own_origins(request):
            return "the request came from another site's page"
        return None

    def refusal(self, request: IRequest) -> str | None:
        """
        Why the listener refuses a request before any resource sees it:
        a C{Host} that is not one of L{host_names}, or a state-changing
        request from another site's page (L{cross_site}).
        """
        header = request.getHeader("host")
        if header is None:
            return "the request has no Host header"
        named = _host_header(header)
        if named is None:
            return "the Host header is not a host name"
        if named[0] not in self.host_names(request):
            return "the Host header names another site"
        if request.method in _SAFE_METHODS:
            return None
        return self.cross_site(request)

    def log_refusal(self, request: IRequest, reason: str) -> None:
        """
        Log a refused request, with what it claimed.
        """
        self._log.warn(
            "Refused {method} {path} from {peer} on the admin listener: "
            "{reason} (Host {host}, Origin {origin}, Referer {referer})",
            method=_loggable(request.method),
            path=_loggable_path(request),
            peer=_loggable(str(getattr(request.getClientAddress(), "host", ""))),
            reason=reason,
            host=_loggable(request.getHeader("host")),
            origin=_loggable(request.getHeader("origin")),
            referer=_loggable(_origin_text(request.getHeader("referer"))),
        )

    def factory(self) -> server.Site | TLSMemoryBIOFactory:
        """
        The site, behind TLS when C{gateway.admin.tls} is set.

        Raises:
            ValueError: The certificate or key cannot be read.
        """
        files = self.gateway.config.gateway.admin_tls
        if files is None:
            return self.site()
        return TLSMemoryBIOFactory(server_tls_options(files), False, self.site())
