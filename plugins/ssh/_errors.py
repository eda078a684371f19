"""
The gateway's own SSH replies: refusals and failures in SSH's own forms.

Every reply the gateway makes on its own is built here: channel-open
failure codes, disconnect codes, and the text a refused command shows on
stderr.  Texts are short and generic, with the session id as a
correlation reference; the detail goes to the log and the recording.

test-case-name: tests.unit.ssh.test_relay
"""

from __future__ import annotations

from attrs import frozen

from hoopgate.plugin import Deny, DenyReason
from hoopgate_plugins.ssh import _codec as c

# Disconnect reason codes (RFC 4253, section 11.1).
DISCONNECT_PROTOCOL_ERROR = 2
DISCONNECT_SERVICE_NOT_AVAILABLE = 7
DISCONNECT_CONNECTION_LOST = 10
DISCONNECT_BY_APPLICATION = 11
DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE = 14


@frozen
class OpenRefusal:
    """
    A channel-open failure the gateway sends on its own.

    Attributes:
        code: The RFC 4254 reason code.
        text: The description the client shows.
    """

    code: int
    text: str


FORWARD_REFUSED = OpenRefusal(
    c.OPEN_ADMINISTRATIVELY_PROHIBITED,
    "hoopgate: forwarding to that destination is not allowed",
)
CHANNEL_REFUSED = OpenRefusal(
    c.OPEN_ADMINISTRATIVELY_PROHIBITED, "hoopgate: channel type not allowed"
)
TARGET_GONE = OpenRefusal(
    c.OPEN_CONNECT_FAILED, "hoopgate: the target connection ended"
)

#: Told to the client when the target cannot be reached or logged in to.
TARGET_UNREACHABLE = "hoopgate: the gateway could not reach the target"
TARGET_LOGIN_FAILED = "hoopgate: the gateway could not log in to the target"
TARGET_CLOSED = "hoopgate: the target closed the connection"
PROTOCOL_VIOLATION = "hoopgate: protocol violation"
INTERNAL = "hoopgate: the gateway failed"


def with_reference(text: str, reference: str) -> bytes:
    """
    A disconnect description carrying the session id.
    """
    if reference:
        text = f"{text} (reference {reference})"
    return text.encode("utf-8")


def command_refused(reason: DenyReason, reference: str) -> bytes:
    """
    The stderr line a refused command or subsystem shows.
    """
    text = f"hoopgate: {reason.message}"
    if reason.rule:
        text = f"{text} (rule {reason.rule})"
    return f"{text}; reference {reference}\r\n".encode()


def file_refused(reason: DenyReason | None, reference: str) -> str:
    """
    The message of the permission-denied status a refused SFTP request
    gets (C{None}: the request was too long to read).
    """
    text = reason.message if reason is not None else "request too long"
    if reason is not None and reason.rule:
        text = f"{text} (rule {reason.rule})"
    return f"hoopgate: {text}; reference {reference}"


def internal_deny() -> Deny:
    """
    The refusal used when a held verdict failed (fail closed).
    """
    return Deny(
        DenyReason(
            "interceptor.failure",
            "the gateway could not check this request",
            "a held verdict failed",
        )
    )
