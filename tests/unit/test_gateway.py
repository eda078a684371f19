"""
Tests for L{hoopgate._gateway.Gateway}: admitting and refusing sessions,
the registry in the store, session limits and token expiry, cancel keys
and termination, and reloads that leave live sessions alone.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from typing import Any, ClassVar

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgate import _gateway
from hoopgate._config import Config, ListenerConfig, parse_config
from hoopgate._configreader import ConfigReader
from hoopgate._events import SessionRequested
from hoopgate._gateway import Gateway
from hoopgate._identity import Identity
from hoopgate._interfaces import IGateway, IProtocolPlugin, ISessionHandle
from hoopgate._oidc import OIDCVerifier, TokenRejected
from hoopgate._recording import Recorder, read_recording
from hoopgate._session import Session, SessionRefusedError
from hoopgate._store import MemoryStore
from tests.unit.test_oidc import FakeIssuer, claims, sign

NOW = 1_000_000.0
GOOD = "good"  # the token FakeVerifier proves

CONFIG = """\
gateway:
  recordings:
    directory: {recordings}
identity:
  issuers:
    - name: corp
      issuer: https://id.example.test
      audience: https://hoopgate.test
targets:
  - name: db
    protocol: fake
    host: 127.0.0.1
    port: 5432
    credentials:
      - name: rw
        user: app
        password: inline-pass-1
  - name: other
    protocol: fake
    host: 127.0.0.1
    port: 5433
    credentials:
      - name: rw
        user: app
policy:
  access:
    - name: ci
      subjects: [ci-runner]
      targets: [{targets}]
      credential: rw
      session_limit: 1h
      on_token_expiry: {expiry}
"""


@implementer(IProtocolPlugin)
class FakePlugin:
    """
    A protocol plugin without keys of its own.
    """

    name = "fake"

    def read_listener(self, reader: ConfigReader) -> None:
        return None

    def read_target(self, reader: ConfigReader) -> None:
        return None

    def make_factory(self, listener: ListenerConfig, gateway: IGateway) -> object:
        raise NotImplementedError("gateway tests serve nothing")


class FakeVerifier:
    """
    Proves the identities of a fixed set of tokens; refuses the rest.
    """

    identities: ClassVar[dict[str, Identity]] = {}

    def __init__(self, issuers: object, reactor: object) -> None:
        self.primed = False

    def verify(self, token: str) -> Deferred[Identity]:
        identity = self.identities.get(token)
        if identity is None:
            return fail(TokenRejected("signature", detail="bad signature"))
        return succeed(identity)

    def prime(self) -> Deferred[None]:
        self.primed = True
        return succeed(None)


@implementer(ISessionHandle)
class Handle:
    """
    Notes what the gateway asks of a connection.
    """

    def __init__(self) -> None:
        self.terminated: list[tuple[str, str]] = []
        self.cancels = 0

    def terminate(self, reason: str, message: str) -> None:
        self.terminated.append((reason, message))

    def cancel(self) -> None:
        self.cancels += 1


def identity(expires_at: float | None = NOW + 600) -> Identity:
    return Identity(
        subject="ci-runner",
        issuer="https://id.example.test",
        token_id_hash="0123456789abcdef",
        expires_at=expires_at,
    )


class Fixture:
    """
    A gateway on a clock, with an in-memory store and recordings in a
    temporary folder.
    """

    def __init__(self, expiry: str = "close", targets: str = "db, other") -> None:
        self.folder = tempfile.mkdtemp(prefix="hoopgate-gateway-")
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryStore(self.clock)
        self.recorder = Recorder(self.folder)
        self.gateway = Gateway(
            self.clock,
            self.config(expiry, targets),
            self.store,
            self.recorder,
            refusal_delay=0.25,
        )

    def config(self, expiry: str = "close", targets: str = "db, other") -> Config:
        text = CONFIG.format(recordings=self.folder, expiry=expiry, targets=targets)
        return parse_config(text, "test.yaml", {"fake": FakePlugin()})

    def request(self, token: str = GOOD, target: str = "db") -> SessionRequested:
        return SessionRequested(
            session_id="",
            protocol="fake",
            peer="127.0.0.1:40000",
            target=target,
            token=token,
        )

    def open(
        self, token: str = GOOD, target: str = "db", handle: Handle | None = None
    ) -> Session | Failure:
        results: list[Session | Failure] = []
        opened = self.gateway.open_session(
            self.request(token, target), handle or Handle()
        )
        opened.addBoth(results.append)
        self.clock.advance(1)
        [result] = results
        return result

    def lines(self, session_id: str) -> list[dict[str, Any]]:
        return read_recording(self.recorder.path_for(session_id))

    def close(self) -> None:
        self.recorder.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def gw(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(_gateway, "OIDCVerifier", FakeVerifier)
    monkeypatch.setattr(FakeVerifier, "identities", {"good": identity()})
    fixture = Fixture()
    yield fixture
    fixture.close()


def refusal(result: Session | Failure) -> SessionRefusedError:
    assert isinstance(result, Failure)
    error = result.value
    assert isinstance(error, SessionRefusedError)
    return error


class TestOpening:
    """
    Sessions are admitted only with a proven identity and an access rule.
    """

    def test_admits_and_registers(self, gw: Fixture) -> None:
        """
        A good token for an allowed target opens a session holding the
        rule's credential, listed in the store for every process.
        """
        session = gw.open()

        assert isinstance(session, Session)
        assert (session.identity.subject, session.credential.user) == (
            "ci-runner",
            "app",
        )
        assert session.id in gw.gateway.sessions
        stored = gw.store.get(f"session:{session.id}")
        values: list[str | None] = []
        stored.addCallback(values.append)
        [value] = values
        assert value is not None
        assert json.loads(value)["subject"] == "ci-runner"

    def test_bad_token_refused_after_delay(self, gw: Fixture) -> None:
        """
        A token the verifier rejects is refused with an identity code,
        only after the refusal delay, and recorded as refused.
        """
        results: list[object] = []
        opened = gw.gateway.open_session(gw.request(token="forged"), Handle())
        opened.addBoth(results.append)
        gw.clock.advance(0.2)
        assert results == []

        gw.clock.advance(0.1)
        [result] = results
        assert isinstance(result, Failure)
        error = refusal(result)
        assert error.reason.code == "identity.signature"
        assert error.reason.message == "authentication failed"
        assert gw.gateway.sessions == {}

    def test_unknown_target(self, gw: Fixture) -> None:
        """
        A target that does not exist is refused without asking for the
        token's identity, with the generic access message.
        """
        error = refusal(gw.open(target="nope"))

        assert error.reason.code == "access.unknown_target"
        assert error.reason.message == "access denied"

    def test_no_rule(self, gw: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        A proven identity without an access rule is refused, and the
        recording names the subject.
        """
        mallory = Identity(subject="mallory", issuer="https://id.example.test")
        monkeypatch.setattr(FakeVerifier, "identities", {"m": mallory})
        gw.gateway.reload(gw.config())

        error = refusal(gw.open(token="m"))

        assert error.reason.code == "access.denied"
        refused = [
            line
            for path in sorted(gw.recorder.path_for("x").parent.glob("*.jsonl"))
            for line in read_recording(path)
            if line["event"] == "session.refused"
        ]
        assert [(r["reason"], r["subject"]) for r in refused] == [
            ("access.denied", "mallory")
        ]

    def test_close_leaves_registry(self, gw: Fixture) -> None:
        """
        A closed session leaves this process's registry and the store,
        and its recording ends with the close.
        """
        session = gw.open()
        assert isinstance(session, Session)

        session.close("client", 10, 20)

        assert gw.gateway.sessions == {}
        keys: list[list[str]] = []
        gw.store.keys("session:").addCallback(keys.append)
        assert keys == [[]]
        last = gw.lines(session.id)[-1]
        assert (last["event"], last["reason"], last["bytes_to_client"]) == (
            "session.closed",
            "client",
            20,
        )


class TestLimits:
    """
    Session length and token lifetime end sessions through their handle.
    """

    def test_token_expiry_closes(self, gw: Fixture) -> None:
        """
        With C{on_token_expiry: close}, the session ends when the token
        expires (600 s), long before the session limit (1 h).
        """
        handle = Handle()
        session = gw.open(handle=handle)
        assert isinstance(session, Session)

        gw.clock.advance(590)
        assert handle.terminated == []

        gw.clock.advance(20)
        assert handle.terminated == [("token_expired", "token expired")]

    def test_token_expiry_continue(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        With C{on_token_expiry: continue}, only the session limit ends it.
        """
        monkeypatch.setattr(_gateway, "OIDCVerifier", FakeVerifier)
        monkeypatch.setattr(FakeVerifier, "identities", {"good": identity()})
        fixture = Fixture(expiry="continue")
        try:
            handle = Handle()
            fixture.open(handle=handle)

            fixture.clock.advance(3000)
            assert handle.terminated == []

            fixture.clock.advance(700)
            assert handle.terminated == [
                ("session_limit", "session time limit reached")
            ]
        finally:
            fixture.close()

    def test_limits_cancelled_on_close(self, gw: Fixture) -> None:
        """
        A session that closed is never terminated by its old timers.
        """
        handle = Handle()
        session = gw.open(handle=handle)
        assert isinstance(session, Session)
        session.close("client")

        gw.clock.advance(7200)

        assert handle.terminated == []
        assert gw.clock.getDelayedCalls() == []


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> Any:
    """
    A gateway whose identity stage is the real OIDC verifier (leeway
    30 s, the default) over a fake issuer, on the gateway's clock.
    """
    issuer = FakeIssuer()

    def verifier(issuers: Any, reactor: Any) -> OIDCVerifier:
        return OIDCVerifier(issuers, reactor=reactor, fetch=issuer.fetch)

    monkeypatch.setattr(_gateway, "OIDCVerifier", verifier)
    fixture = Fixture()
    yield fixture
    fixture.close()


def token(gw: Fixture, expired_ago: float) -> str:
    """
    A genuine token whose exp was C{expired_ago} seconds before now.
    """
    now = gw.clock.seconds()
    return sign(claims(iat=now - 600, nbf=now - 600, exp=now - expired_ago))


class TestLeeway:
    """
    The identity stage and the expiry timer follow one rule: a token is
    usable until exp plus the issuer's leeway.
    """

    def test_accepted_within_leeway_lives_until_it_ends(
        self, verified: Fixture
    ) -> None:
        """
        A token 5 s past its exp is accepted (leeway 30 s), and the
        session runs until exp plus leeway, then is ended as expired.
        """
        handle = Handle()
        exp = verified.clock.seconds() - 5

        session = verified.open(token(verified, expired_ago=5), handle=handle)
        assert isinstance(session, Session)
        verified.clock.advance(exp + 30 - verified.clock.seconds() - 0.01)
        before = list(handle.terminated)
        verified.clock.advance(0.01)

        assert session.identity.expires_at == exp + 30
        assert before == []
        assert handle.terminated == [("token_expired", "token expired")]

    def test_refused_past_leeway(self, verified: Fixture) -> None:
        """
        A token whose exp plus leeway has passed is refused as expired
        and opens nothing.
        """
        error = refusal(verified.open(token(verified, expired_ago=30)))

        assert error.reason.code == "identity.expired"
        assert verified.gateway.sessions == {}

    def test_expired_before_admission(self, gw: Fixture) -> None:
        """
        An identity whose use ended before admission (a request held for
        session approval past its token's end) is refused as expired,
        not opened and ended at once.
        """
        FakeVerifier.identities = {"late": identity(expires_at=NOW)}

        error = refusal(gw.open("late"))

        assert error.reason.code == "identity.expired"
        assert gw.gateway.sessions == {}


class TestCancelAndTerminate:
    """
    Cancel keys and termination reach the session that owns them.
    """

    def test_cancel_key(self, gw: Fixture) -> None:
        """
        A registered cancel key cancels its own session and no other;
        an unknown key finds nothing.
        """
        mine, other = Handle(), Handle()
        session = gw.open(handle=mine)
        second = gw.open(handle=other)
        assert isinstance(session, Session) and isinstance(second, Session)
        gw.gateway.register_cancel_key(session, b"\x00\x00\x00\x01key1")

        found: list[bool] = []
        gw.gateway.cancel("fake", b"\x00\x00\x00\x01key1").addCallback(found.append)
        gw.gateway.cancel("fake", b"\x00\x00\x00\x01nope").addCallback(found.append)

        assert found == [True, False]
        assert (mine.cancels, other.cancels) == (1, 0)

    def test_cancel_key_forgotten_on_close(self, gw: Fixture) -> None:
        """
        After its session closed, a cancel key cancels nothing.
        """
        handle = Handle()
        session = gw.open(handle=handle)
        assert isinstance(session, Session)
        gw.gateway.register_cancel_key(session, b"key")
        session.close("client")

        found: list[bool] = []
        gw.gateway.cancel("fake", b"key").addCallback(found.append)

        assert found == [False]
        assert handle.cancels == 0

    def test_terminate(self, gw: Fixture) -> None:
        """
        An operator's termination reaches the session's handle.
        """
        handle = Handle()
        session = gw.open(handle=handle)
        assert isinstance(session, Session)

        gw.gateway.terminate(session.id)

        assert handle.terminated == [
            ("terminated", "session terminated by an operator")
        ]


class TestReload:
    """
    A reload applies to new sessions; live ones keep their snapshot.
    """

    def test_live_session_keeps_config(self, gw: Fixture) -> None:
        """
        After access to C{db} is withdrawn, the live session still runs
        under the rule it started with, and a new one is refused.
        """
        session = gw.open()
        assert isinstance(session, Session)

        gw.gateway.reload(gw.config(targets="other"))

        assert session.id in gw.gateway.sessions
        assert session.rule.targets == ("db", "other")
        assert refusal(gw.open()).reason.code == "access.denied"
        assert isinstance(gw.open(target="other"), Session)
