"""
Fakes for the SSH relay's unit tests: legs that keep what is sent, and a
session that answers with scripted verdicts and keeps what it records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hoopgate.plugin import ALLOW, Event, Verdict
from hoopgate_plugins.ssh import _codec as c
from hoopgate_plugins.ssh._settings import ForwardRule, TargetSettings


class FakeLeg:
    """
    A leg that keeps every message sent on it.
    """

    def __init__(self, side: str) -> None:
        self.side = side
        self.sent: list[tuple[int, bytes]] = []
        self.writable = True

    def send(self, message: int, payload: bytes) -> None:
        self.sent.append((message, payload))

    def take(self) -> list[tuple[int, bytes]]:
        """
        What was sent since the last call.
        """
        sent, self.sent = self.sent, []
        return sent

    def kinds(self) -> list[int]:
        return [m for m, _ in self.sent]


class FakeSession:
    """
    Decides with C{verdict(event)} (allow by default); keeps the events.
    """

    def __init__(self, verdict: Callable[[Event], Verdict] | None = None) -> None:
        self.id = "S1"
        self.decided: list[Event] = []
        self.observed: list[Event] = []
        self._verdict = verdict or (lambda event: ALLOW)
        self._counter = 0

    def next_id(self) -> str:
        self._counter += 1
        return f"S1.{self._counter}"

    def decide(self, event: Event) -> Verdict:
        self.decided.append(event)
        return self._verdict(event)

    def observe(self, event: Event) -> None:
        self.observed.append(event)

    def events(self, name: str) -> list[Any]:
        return [e for e in [*self.decided, *self.observed] if e.name == name]


def settings(
    forward_to: tuple[ForwardRule, ...] = (ForwardRule("127.0.0.1", 5432),),
    accept_env: tuple[str, ...] = ("LANG", "LC_*"),
) -> TargetSettings:
    return TargetSettings(
        host_keys=frozenset(),
        accept_env=accept_env,
        forward_to=forward_to,
        connect_timeout=10.0,
        login_timeout=30.0,
    )


def direct_tcpip(host: str, port: int) -> bytes:
    return (
        c.ns(host.encode())
        + port.to_bytes(4, "big")
        + c.ns(b"127.0.0.1")
        + (40000).to_bytes(4, "big")
    )
