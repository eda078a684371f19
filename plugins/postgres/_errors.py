"""
The gateway's own PostgreSQL errors: verdicts and failures in native form.

Every reply the gateway makes on its own is built here, so SQLSTATEs and
wording stay consistent: a short text safe for the client, with the
session id as a correlation reference; details go to the log only.

test-case-name: tests.unit.postgres.test_errors
"""

from __future__ import annotations

from hoopgate.plugin import DenyReason
from hoopgate_plugins.postgres import _codec as pg

AUTHORIZATION = "28000"
PRIVILEGE = "42501"
PROTOCOL = "08P01"
UNREACHABLE = "08001"
REJECTED = "08004"
CONNECTION_FAILURE = "08006"
NOT_SUPPORTED = "0A000"
SHUTDOWN = "57P01"
PROGRAM_LIMIT = "54000"
INTERNAL = "XX000"

_RULE_CODES = {
    "guardrail": PRIVILEGE,
    "approval": PRIVILEGE,
    "masking": PRIVILEGE,
    "limit": PROGRAM_LIMIT,
}


def fatal(sqlstate: str, text: str, *, reference: str = "") -> bytes:
    """
    A FATAL ErrorResponse: the connection ends after it.

    Args:
        sqlstate: The SQLSTATE.
        text: The client-safe message.
        reference: A correlation id (the session id) for the detail.
    """
    detail = f"hoopgate reference {reference}" if reference else None
    return pg.error_response("FATAL", sqlstate, text, detail=detail)


def error(
    sqlstate: str, text: str, *, reference: str = "", encoding: str = "utf-8"
) -> bytes:
    """
    An ERROR ErrorResponse: the session goes on.
    """
    detail = f"hoopgate reference {reference}" if reference else None
    return pg.error_response("ERROR", sqlstate, text, detail=detail, encoding=encoding)


def denied(reason: DenyReason, reference: str, encoding: str = "utf-8") -> bytes:
    """
    The ErrorResponse for a statement a verdict refused.

    The rule's name is shown so the caller knows what to ask about; the
    detail of the decision stays in the log and the recording.
    """
    family = reason.code.split(".", 1)[0]
    sqlstate = _RULE_CODES.get(family, PRIVILEGE)
    text = f"hoopgate: {reason.message}"
    if reason.rule:
        text = f"{text} (rule {reason.rule})"
    return error(sqlstate, text, reference=reference, encoding=encoding)
