"""
The C{ssh-connection} service on both of the gateway's SSH connections.

Conch runs the transport and user authentication; once a connection is
authenticated, its connection-protocol messages go to a L{ConnectionLeg},
which hands them to its owner (the session's relay) instead of Conch's
own channel machinery.  A leg also knows whether its socket takes more
bytes: a push producer registered on the TCP transport turns that flag
off while the write buffer is full, and the relay holds data until it
is on again.

test-case-name: tests.unit.ssh.test_relay
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any, Protocol

from twisted.conch.ssh.service import SSHService
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


class LegOwner(Protocol):
    """
    What a leg reports to.
    """

    def leg_started(self, leg: ConnectionLeg) -> None:
        """
        The service runs: channels may open.
        """

    def leg_message(self, leg: ConnectionLeg, message: int, payload: bytes) -> None:
        """
        A connection-protocol message arrived on C{leg}.
        """


@implementer(IPushProducer)
class WriteGate:
    """
    Registered with a TCP transport: tells whether its buffer has room.

    Args:
        on_resume: Called when the buffer drained below its limit.
    """

    def __init__(self, on_resume: Callable[[], None]) -> None:
        self.writable = True
        self._on_resume = on_resume

    def pauseProducing(self) -> None:
        self.writable = False

    def resumeProducing(self) -> None:
        self.writable = True
        self._on_resume()

    def stopProducing(self) -> None:
        self.writable = False


def attach_gate(transport: Any, on_resume: Callable[[], None]) -> WriteGate:
    """
    Register a L{WriteGate} on C{transport} (and set TCP_NODELAY).
    """
    handle = getattr(transport, "getHandle", None)
    if handle is not None:
        with contextlib.suppress(OSError):
            handle().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    gate = WriteGate(on_resume)
    transport.registerProducer(gate, True)
    return gate


def detach_gate(transport: Any) -> None:
    """
    Unregister the gate before the transport closes.
    """
    with contextlib.suppress(RuntimeError, AttributeError):
        transport.unregisterProducer()


class ConnectionLeg(SSHService):
    """
    C{ssh-connection} on one of the gateway's two SSH connections.

    Args:
        side: C{client} (the gateway is the server) or C{upstream}.
        owner: Gets the messages.
        gate: The socket's L{WriteGate}.
    """

    name = b"ssh-connection"

    def __init__(self, side: str, owner: LegOwner, gate: WriteGate | None) -> None:
        self.side = side
        self._owner = owner
        self._gate = gate

    def serviceStarted(self) -> None:
        self._owner.leg_started(self)

    def packetReceived(self, messageNum: int, packet: bytes) -> None:
        self._owner.leg_message(self, messageNum, packet)

    def send(self, message: int, payload: bytes) -> None:
        """
        Send one connection-protocol message.
        """
        assert self.transport is not None
        self.transport.sendPacket(message, payload)

    @property
    def writable(self) -> bool:
        """
        Whether the socket's write buffer has room.
        """
        return self._gate is None or self._gate.writable


__all__ = ["ConnectionLeg", "LegOwner", "WriteGate", "attach_gate", "detach_gate"]
