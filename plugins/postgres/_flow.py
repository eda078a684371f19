"""
Flow control between the two legs of a relayed session.

test-case-name: tests.unit.postgres.test_flow
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


def nodelay(transport: Any) -> None:
    handle = getattr(transport, "getHandle", None)
    if handle is None:
        return
    try:
        handle().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return


class PauseGate:
    """
    The reasons a transport's reading is paused; it reads again once no
    reason is left.  Flow control and pending verdicts share one gate, so
    neither resumes what the other paused.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._reasons: set[str] = set()

    def pause(self, reason: str) -> None:
        if not self._reasons:
            self._transport.pauseProducing()
        self._reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self._reasons:
            return
        self._reasons.discard(reason)
        if not self._reasons:
            self._transport.resumeProducing()


@implementer(IPushProducer)
class _Backpressure:
    """
    Registered with one leg's transport: when its write buffer is full,
    stop reading from the other leg.
    """

    def __init__(self, gate: PauseGate) -> None:
        self._gate = gate

    def pauseProducing(self) -> None:
        self._gate.pause("backpressure")

    def resumeProducing(self) -> None:
        self._gate.resume("backpressure")

    def stopProducing(self) -> None:
        self._gate.pause("stopped")


def link(consumer: Any, producer_gate: PauseGate) -> None:
    """
    Stop reading through C{producer_gate} while C{consumer} is full.
    """
    consumer.registerProducer(_Backpressure(producer_gate), True)


def hang_up(transport: Any, clock: Any, grace: float = 2.0) -> None:
    """
    Close a transport after what was written to it.

    A TLS transport waits for its producer to be unregistered before it
    shuts down, so the producer goes first; it then waits for the peer's
    own close_notify, which an idle peer may never send, so the
    connection is aborted if it is still open after C{grace} seconds.
    """
    with contextlib.suppress(RuntimeError):
        # Raised by transports that had no producer (in-memory ones).
        transport.unregisterProducer()
    transport.loseConnection()

    def abort() -> None:
        if getattr(transport, "connected", False):
            transport.abortConnection()

    clock.callLater(grace, abort)
