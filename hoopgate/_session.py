"""
Sessions: a connection's identity, target, credentials and decisions.

test-case-name: tests.unit.test_gateway
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import Callable

from attrs import frozen

from hoopgate._chain import Chain, Context
from hoopgate._config import Config, Credential, TargetConfig
from hoopgate._events import Event, SessionClosed
from hoopgate._identity import Identity
from hoopgate._interfaces import ISessionHandle
from hoopgate._masking import DETECTORS, Redact, mask_text
from hoopgate._policy import AccessRule
from hoopgate._verdicts import DenyReason, Verdict


def new_session_id() -> str:
    """
    A sortable, unique session id: UTC time, then random hex.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{secrets.token_hex(5)}"


class SessionRefusedError(Exception):
    """
    A session was refused; C{reason} says why.

    Attributes:
        reason: The deny reason; its C{message} is safe for the client.
        session_id: The refused session's id, where the refusal is
            recorded and logged, when it had one: a reference the client
            may quote to the operator.
    """

    def __init__(self, reason: DenyReason, session_id: str = "") -> None:
        super().__init__(reason.code)
        self.reason = reason
        self.session_id = session_id


@frozen
class SessionInfo:
    """
    What the registry knows of a live session, in any process.
    """

    session_id: str
    protocol: str
    target: str
    subject: str
    peer: str
    started: float
    pid: int


class Session:
    """
    A live, authorised session.

    Plugins hold one per connection once L{IGateway.open_session} has
    succeeded, send its events through L{decide} or L{observe}, and call
    L{close} once when the connection ends.

    Attributes:
        id: The session id (also the recording's name).
        protocol: The plugin name.
        identity: Who is calling.
        target: The target configuration.
        credential: The credential set to log in upstream with.
        rule: The access rule that admitted the session.
        peer: The client address.
        handle: The plugin's handle on the connection.
    """

    def __init__(
        self,
        *,
        session_id: str,
        protocol: str,
        identity: Identity,
        target: TargetConfig,
        rule: AccessRule,
        peer: str,
        config: Config,
        chain: Chain,
        handle: ISessionHandle,
        on_close: Callable[[Session], None],
    ) -> None:
        self.id = session_id
        self.protocol = protocol
        self.identity = identity
        self.target = target
        self.rule = rule
        self.credential: Credential = target.credentials[rule.credential]
        self.peer = peer
        self.config = config
        self.handle = handle
        self.context = Context(
            session_id=session_id,
            protocol=protocol,
            target=target.name,
            identity=identity,
            policy=config.policy,
        )
        self._chain = chain
        self._counter = itertools.count(1)
        self._on_close = on_close
        self.closed = False
        self.started = time.time()

    @property
    def info(self) -> SessionInfo:
        """
        The registry's view of this session.
        """
        return SessionInfo(
            session_id=self.id,
            protocol=self.protocol,
            target=self.target.name,
            subject=self.identity.subject,
            peer=self.peer,
            started=self.started,
            pid=os.getpid(),
        )

    def next_id(self) -> str:
        """
        A new id for a statement or command of this session.
        """
        return f"{self.id}.{next(self._counter)}"

    def decide(self, event: Event) -> Verdict:
        """
        Walk the chain for an event of this session.
        """
        return self._chain.decide(event, self.context)

    def wants(self, kind: type[Event]) -> bool:
        """
        Whether any interceptor decides about events of C{kind}; a
        plugin may skip costly preparation (catalog lookups for column
        names) for events nobody judges.
        """
        return bool(self._chain._for(kind))

    def observe(self, event: Event) -> None:
        """
        Record an event that needs no decision.
        """
        self._chain.observe(event, self.context)

    def mask_text(self, text: str) -> str:
        """
        Mask free text a plugin is about to write down (terminal output
        for a recording): what the built-in detectors find (e-mail
        addresses, card numbers, IBANs, tokens, keys, ...) is redacted.
        """
        masked, _ = mask_text(text, DETECTORS.values(), Redact())
        return masked

    def close(
        self, reason: str, bytes_from_client: int = 0, bytes_to_client: int = 0
    ) -> None:
        """
        End the session once: record it and leave the registry.
        """
        if self.closed:
            return
        self.closed = True
        self.observe(
            SessionClosed(
                session_id=self.id,
                protocol=self.protocol,
                reason=reason,
                bytes_from_client=bytes_from_client,
                bytes_to_client=bytes_to_client,
            )
        )
        self._on_close(self)
