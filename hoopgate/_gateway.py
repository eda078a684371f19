"""
The gateway: configuration snapshots, the chain, and live sessions.

test-case-name: tests.unit.test_gateway
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import (
    Deferred,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgate._approvals import ApprovalInterceptor, ApprovalService, admin_base_url
from hoopgate._chain import Chain, Context
from hoopgate._config import Config
from hoopgate._configreader import ConfigError
from hoopgate._events import Event, SessionClosed, SessionRefused, SessionRequested
from hoopgate._guardrails import GuardrailInterceptor
from hoopgate._identity import Identity
from hoopgate._interfaces import (
    IGateway,
    IInterceptor,
    IObserver,
    ISessionHandle,
    IStore,
)
from hoopgate._maskinterceptor import MaskingInterceptor
from hoopgate._oidc import OIDCVerifier, TokenRejected
from hoopgate._policy import Policy
from hoopgate._recording import Recorder
from hoopgate._session import (
    Session,
    SessionInfo,
    SessionRefusedError,
    new_session_id,
)
from hoopgate._store import StoreUnavailableError
from hoopgate._verdicts import (
    ALLOW,
    Deny,
    DenyReason,
    Hold,
    Rewrite,
    Verdict,
)

_IDENTITY_MESSAGE = "authentication failed"
_ACCESS_MESSAGE = "access denied"


#: Credentials a plugin verifies itself, presenting the request with its
#: identity already set (L{SessionRequested.presented}).
PRESET_CREDENTIALS = frozenset({"ssh-certificate"})


@implementer(IInterceptor)
class TokenInterceptor:
    """
    The identity stage: proves the caller from its bearer token.

    A request whose C{presented} is not C{token} carries an identity a
    plugin set from a credential it verified (an SSH certificate signed
    by the gateway's own CA); it is accepted only for the kinds in
    L{PRESET_CREDENTIALS}, with no token beside it and an expiry still
    ahead.  A token request with an identity already set is refused:
    only this stage fills it in.

    Args:
        verifier: Checks tokens against the trusted issuers.
        seconds: The clock preset identities' expiries are checked on.
    """

    name = "oidc"
    stage = "identity"
    event_types = (SessionRequested,)

    def __init__(
        self, verifier: OIDCVerifier, seconds: Callable[[], float] = time.time
    ) -> None:
        self._verifier = verifier
        self._seconds = seconds

    def decide(self, event: Event, context: Context) -> Deferred[Verdict]:
        if not isinstance(event, SessionRequested):
            return succeed(_not_a_request(self.name, event))
        if event.presented != "token":
            return succeed(self._preset(event))
        if event.identity is not None:
            return succeed(
                _identity_deny("preset", "a token request came with an identity set")
            )
        if not event.token:
            return succeed(_identity_deny("missing", "no token was presented"))
        request = event

        def proved(identity: Identity) -> Verdict:
            return Rewrite(event=attrs.evolve(request, identity=identity))

        def rejected(failure: Failure) -> Verdict:
            error = failure.value
            if not isinstance(error, TokenRejected):
                failure.raiseException()
            return _identity_deny(error.reason, error.detail)

        return self._verifier.verify(event.token).addCallbacks(proved, rejected)

    def _preset(self, event: SessionRequested) -> Verdict:
        kind = event.presented
        if kind not in PRESET_CREDENTIALS:
            return _identity_deny("presented", f"unknown credential kind {kind!r}")
        identity = event.identity
        if identity is None or event.token:
            return _identity_deny(
                "presented", f"a {kind} request needs an identity and no token"
            )
        if identity.expires_at is None or _expired(identity, self._seconds()):
            return _identity_deny("expired", f"the {kind} has expired")
        return ALLOW


def _expired(identity: Identity, now: float) -> bool:
    """
    Whether the credential behind C{identity} is no longer usable.

    Its C{expires_at} is the end of its use, leeway included (the OIDC
    verifier accepts a token only before that instant): the identity
    stage, admission and the expiry timers all measure against it.
    """
    return identity.expires_at is not None and identity.expires_at <= now


def _identity_deny(code: str, detail: str) -> Deny:
    return Deny(DenyReason(f"identity.{code}", _IDENTITY_MESSAGE, detail))


def _not_a_request(name: str, event: Event) -> Deny:
    # The chain hands these interceptors only the types they declare; any
    # other event is a wiring fault, and a security check fails closed.
    return Deny(
        DenyReason(
            "interceptor.failure",
            "the gateway could not check this request",
            f"interceptor {name} got a {type(event).__name__}",
        )
    )


@implementer(IInterceptor)
class AccessInterceptor:
    """
    Default-deny access control: may this identity reach this target?
    """

    name = "access"
    stage = "guardrails"
    event_types = (SessionRequested,)

    def decide(self, event: Event, context: Context) -> Verdict:
        if not isinstance(event, SessionRequested):
            return _not_a_request(self.name, event)
        if event.identity is None:
            return _identity_deny("missing", "no identity was established")

        policy: Policy = context.policy
        decision = policy.authorize(event.identity, event.target)
        if decision.rule is None:
            why = (
                f"rule {decision.decided_by} denies"
                if decision.decided_by
                else "no access rule matches"
            )
            return Deny(
                DenyReason(
                    "access.denied",
                    _ACCESS_MESSAGE,
                    f"{event.identity.subject} may not reach {event.target}: {why}",
                    decision.decided_by,
                    subject=event.identity.subject,
                )
            )

        rule = decision.rule
        if event.login and event.login not in rule.logins:
            return Deny(
                DenyReason(
                    "access.login",
                    _ACCESS_MESSAGE,
                    f"rule {rule.name} does not allow login {event.login}",
                    rule.name,
                    subject=event.identity.subject,
                )
            )
        return ALLOW


@implementer(IObserver)
class _Withdrawal:
    """
    Withdraws a session's held approval requests when it closes.
    """

    def __init__(self, approvals: ApprovalService) -> None:
        self._approvals = approvals

    def observe(self, event: Event, verdict: Verdict, context: Context) -> None:
        if isinstance(event, SessionClosed):
            self._approvals.withdraw(
                event.session_id, f"session closed ({event.reason})"
            )


@implementer(IGateway)
class Gateway:
    """
    Opens sessions under the current configuration and tracks them.

    A reload swaps the configuration and chain for new sessions; live
    sessions keep the snapshot they started with.

    Args:
        reactor: Schedules limits and fetches.
        config: The starting configuration.
        store: Shared state (session registry).
        recorder: Writes recordings.
        refusal_delay: Seconds to wait before telling a client it was
            refused, to slow down guessing.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        config: Config,
        store: IStore,
        recorder: Recorder,
        refusal_delay: float = 0.25,
    ) -> None:
        self.reactor = reactor
        self.store = store
        self.recorder = recorder
        self.refusal_delay = refusal_delay
        self._sessions: dict[str, Session] = {}
        self._timers: dict[str, list[IDelayedCall]] = {}
        self._cancel_keys: dict[str, str] = {}
        self.config = config
        self.approvals = self._make_approvals(config)
        self.chain = self._build_chain(config)
        store.subscribe("hoopgate:cancel", self._cancel_here)
        store.subscribe("hoopgate:terminate", self._terminate_here)

    def _build_chain(self, config: Config) -> Chain:
        verifier = OIDCVerifier(config.issuers, reactor=self.reactor)
        self.verifier = verifier
        self.guardrails = GuardrailInterceptor(config.policy.guardrails)
        self.identity_stage = TokenInterceptor(verifier, self.reactor.seconds)
        interceptors: list[IInterceptor] = [
            self.identity_stage,
            AccessInterceptor(),
        ]
        # Without rules it would allow everything; left out, plugins can
        # see (Session.wants) that nobody judges statements.
        if config.policy.guardrails:
            interceptors.append(self.guardrails)
        # Likewise: without masking rules nobody judges results, so the
        # plugins skip catalog lookups and relay rows untouched.
        self.masking = MaskingInterceptor(config.policy.masking)
        observers: list[IObserver] = [self.recorder]
        if config.policy.masking.rules:
            interceptors.append(self.masking)
            observers.insert(0, self.masking)
        self._add_approvals(config, interceptors, observers)
        return Chain(interceptors=interceptors, observers=observers)

    def _make_approvals(self, config: Config) -> ApprovalService | None:
        settings = config.gateway.approvals
        if settings is None:
            return None
        return ApprovalService(
            self.reactor,
            self.store,
            settings,
            self.recorder.observe,
            admin_url=admin_base_url(
                config.gateway.admin_listen, tls=config.gateway.admin_tls is not None
            ),
        )

    def _add_approvals(
        self,
        config: Config,
        interceptors: list[IInterceptor],
        observers: list[IObserver],
    ) -> None:
        if self.approvals is None:
            if config.policy.approvals:
                # The service is made once, at start, so that held events
                # survive reloads: approval settings need a restart.
                raise ConfigError(
                    "gateway.approvals was added after start: restart hoopgate"
                )
            return
        if config.gateway.approvals != self.approvals.settings:
            self._log.warn("Changes to gateway.approvals take effect after a restart")
        if config.policy.approvals:
            interceptors.append(
                ApprovalInterceptor(
                    self.approvals, config.policy.approvals, self._access_ends
                )
            )
        # Before the recorder: a session's held requests are withdrawn
        # (and recorded) before its closing line.
        observers.insert(0, _Withdrawal(self.approvals))

    def _access_ends(self, session_id: str, until: float) -> None:
        delay = max(0.0, until - self.reactor.seconds())
        self.reactor.callLater(
            delay, self._end, session_id, "access_expired", "approved access expired"
        )

    def reload(self, config: Config) -> None:
        """
        Use C{config} for sessions opened from now on.
        """
        self.config = config
        self.chain = self._build_chain(config)
        self._log.info(
            "Configuration reloaded from {source}; {live} live sessions keep theirs",
            source=config.source,
            live=len(self._sessions),
        )

    @property
    def sessions(self) -> dict[str, Session]:
        """
        This process's live sessions by id.
        """
        return self._sessions

    def open_session(
        self, request: SessionRequested, handle: ISessionHandle
    ) -> Deferred[Session]:
        """
        Authenticate and authorise a session request.
        """
        config, chain = self.config, self.chain
        request = attrs.evolve(
            request, session_id=request.session_id or new_session_id()
        )
        context = Context(
            session_id=request.session_id,
            protocol=request.protocol,
            target=request.target,
            identity=None,
            policy=config.policy,
        )
        if request.target not in config.targets or (
            config.targets[request.target].protocol != request.protocol
        ):
            return self._refuse(
                request,
                context,
                DenyReason(
                    "access.unknown_target",
                    _ACCESS_MESSAGE,
                    f"no {request.protocol} target named {request.target!r}",
                ),
            )

        verdict = chain.decide(request, context)
        if isinstance(verdict, Hold):
            decided: Deferred[Any] = verdict.decision
        else:
            decided = succeed(verdict)
        return decided.addCallback(
            self._admit,
            request=request,
            context=context,
            config=config,
            chain=chain,
            handle=handle,
        )

    def identify(self, token: str, protocol: str, peer: str = "") -> Deferred[Identity]:
        """
        Prove a caller from its token outside a session, for a plugin that
        issues a credential of its own (an SSH certificate).

        The token passes the identity stage as a session's would, and the
        access policy must let the identity reach at least one target of
        C{protocol}; which one is decided again at each session.

        Returns:
            A C{Deferred} firing with the identity, or failing with
            L{SessionRefusedError} after the refusal delay.
        """
        config = self.config
        request = SessionRequested(
            session_id="", protocol=protocol, peer=peer, target="", token=token
        )
        context = Context(
            session_id="",
            protocol=protocol,
            target="",
            identity=None,
            policy=config.policy,
        )

        def proved(verdict: Verdict) -> Identity:
            if isinstance(verdict, Deny):
                raise SessionRefusedError(verdict.reason)
            event = verdict.event if isinstance(verdict, Rewrite) else None
            identity = event.identity if isinstance(event, SessionRequested) else None
            if identity is None:
                raise SessionRefusedError(
                    _identity_deny("missing", "no identity").reason
                )
            _reachable(config, identity, protocol)
            return identity

        def refused(failure: Failure) -> Deferred[Identity]:
            if not failure.check(SessionRefusedError):
                self._log.failure(
                    "Identifying a {protocol} caller failed", failure, protocol=protocol
                )
                failure = Failure(SessionRefusedError(_failure_reason()))
            error = failure.value
            assert isinstance(error, SessionRefusedError)
            reason = error.reason
            self._log.warn(
                "Refused to identify a {protocol} caller from {peer}: "
                "{code} ({detail})",
                protocol=protocol,
                peer=peer,
                code=reason.code,
                detail=reason.detail,
                subject=reason.subject,
            )
            result: Deferred[Identity] = Deferred()
            self.reactor.callLater(self.refusal_delay, result.errback, failure)
            return result

        deciding = maybeDeferred(self.identity_stage.decide, request, context)
        return deciding.addCallback(proved).addErrback(refused)

    def _admit(
        self,
        verdict: Verdict,
        *,
        request: SessionRequested,
        context: Context,
        config: Config,
        chain: Chain,
        handle: ISessionHandle,
    ) -> Deferred[Session] | Session:
        if isinstance(verdict, Deny):
            return self._refuse(request, context, verdict.reason, recorded=True)
        if isinstance(verdict, Rewrite) and isinstance(verdict.event, SessionRequested):
            request = verdict.event
        identity = request.identity
        decision = (
            config.policy.authorize(identity, request.target) if identity else None
        )
        if identity is None or decision is None or decision.rule is None:
            reason = DenyReason("access.denied", _ACCESS_MESSAGE, "no identity")
            return self._refuse(request, context, reason)
        on_expiry = decision.rule.on_token_expiry
        if on_expiry == "close" and _expired(identity, self.reactor.seconds()):
            # Its use ended while the request was held (session approval):
            # refused, rather than opened only to be ended at once.
            denied = _identity_deny(
                "expired", "the credential expired before admission"
            )
            return self._refuse(request, context, denied.reason)

        session = Session(
            session_id=request.session_id,
            protocol=request.protocol,
            identity=identity,
            target=config.targets[request.target],
            rule=decision.rule,
            peer=request.peer,
            config=config,
            chain=chain,
            handle=handle,
            on_close=self._forget,
        )
        self._register(session)
        return session

    def _refuse(
        self,
        request: SessionRequested,
        context: Context,
        reason: DenyReason,
        recorded: bool = False,
    ) -> Deferred[Session]:
        subject = request.identity.subject if request.identity else reason.subject
        self._log.warn(
            "Refused {protocol} session {session_id} from {peer} to {target}: "
            "{code} ({detail})",
            protocol=request.protocol,
            session_id=request.session_id,
            peer=request.peer,
            target=request.target,
            code=reason.code,
            detail=reason.detail,
            subject=subject,
        )
        self.recorder.observe(
            SessionRefused(
                session_id=request.session_id,
                protocol=request.protocol,
                peer=request.peer,
                target=request.target,
                reason=reason.code,
                detail=reason.detail,
                subject=subject,
            ),
            Deny(reason),
            context,
        )
        result: Deferred[Session] = Deferred()
        self.reactor.callLater(
            self.refusal_delay,
            result.errback,
            Failure(SessionRefusedError(reason, request.session_id)),
        )
        return result

    def _register(self, session: Session) -> None:
        self._sessions[session.id] = session
        self._schedule_limits(session)
        info = attrs.asdict(session.info)
        limit = session.rule.session_limit
        self._written(
            self.store.put(f"session:{session.id}", json.dumps(info), ttl=limit + 60),
            "register session",
        )
        self._log.info(
            "Opened {protocol} session {session_id} for {subject} to {target} "
            "as {user}",
            protocol=session.protocol,
            session_id=session.id,
            subject=session.identity.subject,
            target=session.target.name,
            user=session.credential.user,
        )

    def _schedule_limits(self, session: Session) -> None:
        limit = session.rule.session_limit
        timers = [
            self.reactor.callLater(
                limit,
                self._end,
                session.id,
                "session_limit",
                "session time limit reached",
            )
        ]
        # The end of the token's use, leeway included: what the identity
        # stage accepted runs until then (see _expired).
        expires = session.identity.expires_at
        on_expiry = session.rule.on_token_expiry
        if on_expiry == "close" and expires is not None:
            delay = max(0.0, expires - self.reactor.seconds())
            if delay < limit:
                timers.append(
                    self.reactor.callLater(
                        delay, self._end, session.id, "token_expired", "token expired"
                    )
                )
        self._timers[session.id] = timers

    def _end(self, session_id: str, reason: str, message: str) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            return
        self._log.info(
            "Ending session {session_id}: {reason}",
            session_id=session_id,
            reason=reason,
        )
        session.handle.terminate(reason, message)

    def _forget(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        for timer in self._timers.pop(session.id, []):
            if timer.active():
                timer.cancel()
        for key in [k for k, v in self._cancel_keys.items() if v == session.id]:
            del self._cancel_keys[key]
            self._written(self.store.delete(key), "forget a cancel key")
        self._written(self.store.delete(f"session:{session.id}"), "forget session")
        self._log.info("Closed session {session_id}", session_id=session.id)

    def register_cancel_key(self, session: Session, key: bytes) -> None:
        """
        Let a cancel request carrying C{key} reach C{session}, from any
        gateway process sharing the store.
        """
        name = f"cancel:{session.protocol}:{key.hex()}"
        self._cancel_keys[name] = session.id
        self._written(
            self.store.put(name, session.id, ttl=session.rule.session_limit + 60),
            "register a cancel key",
        )

    def _written(self, writing: Deferred[None], what: str) -> None:
        # The registry is best effort: a session runs on when the shared
        # state cannot be written, and the operator hears about it.
        def failed(failure: Failure) -> None:
            self._log.warn(
                "Cannot {what} in the shared state: {error}",
                what=what,
                error=failure.getErrorMessage(),
            )

        writing.addErrback(failed)

    def cancel(self, protocol: str, key: bytes) -> Deferred[bool]:
        """
        Cancel the running work of the session that handed out C{key}.
        """
        name = f"cancel:{protocol}:{key.hex()}"

        def found(session_id: str | None) -> Deferred[bool] | bool:
            if session_id is None:
                return False
            if self._cancel_here(session_id):
                return True
            return self.store.publish("hoopgate:cancel", session_id).addCallback(
                lambda receivers: receivers > 0
            )

        def unreachable(failure: Failure) -> bool:
            failure.trap(StoreUnavailableError)
            self._log.warn(
                "Cannot look up a {protocol} cancel key: {error}",
                protocol=protocol,
                error=failure.getErrorMessage(),
            )
            return False

        looked_up: Deferred[bool] = self.store.get(name).addCallback(found)
        return looked_up.addErrback(unreachable)

    def _cancel_here(self, session_id: str) -> bool:
        session = self._sessions.get(session_id)
        if session is None:
            return False
        approvals = self.approvals
        if approvals is not None and approvals.withdraw(session_id, "cancelled"):
            # What the client cancelled never reached the target: a
            # cancel sent there now would hit whatever runs next.
            self._log.info(
                "Cancel withdrew the held request of session {session_id}",
                session_id=session_id,
            )
            return True
        self._log.info(
            "Cancel requested for session {session_id}", session_id=session_id
        )
        session.handle.cancel()
        return True

    def _terminate_here(self, message: str) -> bool:
        session = self._sessions.get(message)
        if session is None:
            return False
        session.handle.terminate("terminated", "session terminated by an operator")
        return True

    def terminate(self, session_id: str) -> Deferred[bool] | Deferred[int]:
        """
        End a session wherever it runs.

        Returns:
            A C{Deferred} firing with C{True} when the session ran here,
            otherwise with how many processes got the request.
        """
        if self._terminate_here(session_id):
            return succeed(True)
        return self.store.publish("hoopgate:terminate", session_id)

    def recording_failed(self, session_id: str) -> None:
        """
        A recording line could not be written: end the session if the
        configuration says recording failures close sessions.
        """
        if self.config.gateway.on_recording_failure == "close":
            self._end(session_id, "recording_failed", "the session cannot be recorded")

    def live(self) -> Deferred[list[SessionInfo]]:
        """
        Every live session the store knows, in any process.
        """

        def read(keys: list[str]) -> Deferred[list[SessionInfo]]:
            return gatherResults([self.store.get(k) for k in keys]).addCallback(
                lambda values: [SessionInfo(**json.loads(v)) for v in values if v]
            )

        return self.store.keys("session:").addCallback(read)


def _reachable(config: Config, identity: Identity, protocol: str) -> None:
    for target in config.targets.values():
        if target.protocol != protocol:
            continue
        if config.policy.authorize(identity, target.name).rule is not None:
            return
    raise SessionRefusedError(
        DenyReason(
            "access.denied",
            _ACCESS_MESSAGE,
            f"{identity.subject} may reach no {protocol} target",
            subject=identity.subject,
        )
    )


def _failure_reason() -> DenyReason:
    return DenyReason(
        "interceptor.failure",
        "the gateway could not check this request",
        "identifying the caller failed",
    )


def refuse_now(reason: DenyReason) -> Deferred[Session]:
    """
    A failed Deferred carrying a refusal (for plugins' own early checks).
    """
    return fail(SessionRefusedError(reason))


__all__ = ["Event", "Gateway", "refuse_now"]
