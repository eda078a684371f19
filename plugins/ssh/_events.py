"""
Events only SSH has, beside the core's C{CommandReceived} (exec, shell),
C{FileOperationRequested} (each SFTP request, decided before the target
sees it) and C{ForwardRequested} (C{direct-tcpip}, decided before it is
opened).

Each has a stable C{name}: recordings and policy use names, never class
names.  Channel references are the gateway's channel number on the
client's connection, as text.

test-case-name: tests.unit.ssh.test_relay
"""

from __future__ import annotations

from typing import ClassVar

from attrs import frozen

from hoopgate.plugin import Event


@frozen(kw_only=True)
class ForwardClosed(Event):
    """
    A forward channel ended (or the target could not open it).

    Attributes:
        forward_id: The C{ForwardRequested} it belongs to.
        host: The destination.
        port: Its port.
        status: C{closed}, or C{failed} when the target refused to open it.
        bytes_to_target: Bytes the client sent through it.
        bytes_from_target: Bytes that came back.
        error: The target's reason for a failed open.
    """

    name: ClassVar[str] = "ssh.forward.closed"

    forward_id: str
    host: str
    port: int
    status: str
    bytes_to_target: int = 0
    bytes_from_target: int = 0
    error: str = ""


@frozen(kw_only=True)
class SubsystemRequested(Event):
    """
    A client asks for a subsystem (C{sftp}) on a session channel.

    Attributes:
        command_id: Gateway-unique id, shared with L{ExitStatus}.
        channel: The channel reference.
        subsystem: Its name.
    """

    name: ClassVar[str] = "ssh.subsystem"

    command_id: str
    channel: str
    subsystem: str


@frozen(kw_only=True)
class PtyRequested(Event):
    """
    A client asks for a terminal on a session channel.

    Attributes:
        channel: The channel reference.
        term: The TERM value.
        columns: Width in characters.
        rows: Height in characters.
    """

    name: ClassVar[str] = "ssh.pty"

    channel: str
    term: str
    columns: int
    rows: int


@frozen(kw_only=True)
class ExitStatus(Event):
    """
    A command, shell or subsystem on the target ended.

    Recorded when the target reports it, before the client sees it.

    Attributes:
        command_id: The C{CommandReceived} or L{SubsystemRequested} it
            ends.
        channel: The channel reference.
        status: The exit code, or C{None} when a signal ended it.
        signal: The signal's name (C{TERM}) when one did.
        core_dumped: Whether that signal left a core.
    """

    name: ClassVar[str] = "ssh.exit"

    command_id: str
    channel: str
    status: int | None
    signal: str = ""
    core_dumped: bool = False


@frozen(kw_only=True)
class SftpOperation(Event):
    """
    One SFTP operation the client asked the target for, with its outcome.

    File transfers are recorded once per open file, when it is closed,
    with the bytes read and written through that handle.

    Attributes:
        command_id: The subsystem's L{SubsystemRequested}.
        operation: C{open}, C{remove}, C{rename}, C{mkdir}, C{rmdir},
            C{setstat} or C{symlink}.
        path: The path the operation names.
        target_path: The second path (C{rename}, C{symlink}).
        status: C{ok}, or the SFTP status name the target answered.
        bytes_read: For C{open}: bytes read from the file.
        bytes_written: For C{open}: bytes written to it.
        mode: For C{open}: C{r}, C{w}, C{rw} and C{a}/C{c}/C{t} flags.
    """

    name: ClassVar[str] = "ssh.sftp"

    command_id: str
    operation: str
    path: str
    target_path: str = ""
    status: str = "ok"
    bytes_read: int = 0
    bytes_written: int = 0
    mode: str = ""


__all__ = [
    "ExitStatus",
    "ForwardClosed",
    "PtyRequested",
    "SftpOperation",
    "SubsystemRequested",
]
