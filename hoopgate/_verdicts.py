"""
Verdicts: what an interceptor decides about an event.

A verdict is a value.  Plugins turn L{Deny} into their protocol's own error
through one error module each; L{Hold} carries a Deferred that later
yields one of the other verdicts.

test-case-name: tests.unit.test_chain
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias

from attrs import frozen
from twisted.internet.defer import Deferred

from hoopgate._events import Event


@frozen
class DenyReason:
    """
    Why something was refused.

    Attributes:
        code: A stable dotted code (C{identity.expired}, C{access.denied},
            C{guardrail.blocked}, C{interceptor.failure}).
        message: A short generic text safe to show the client.
        detail: The precise reason for the log and the recording.
        rule: The policy rule that decided, if one did.
    """

    code: str
    message: str
    detail: str = ""
    rule: str | None = None


class RowTransformer(Protocol):
    """
    A per-result plan applied to each row in a tight loop.

    Plugins call it with the row's raw values and get the values to send.
    """

    def __call__(self, values: list[bytes | None]) -> list[bytes | None]:
        """
        Transform one row's values.
        """


@frozen
class Allow:
    """
    Let the event through unchanged.
    """


@frozen
class Deny:
    """
    Refuse the event.

    Attributes:
        reason: Why.
    """

    reason: DenyReason


@frozen
class Rewrite:
    """
    Let a changed event through, or apply a plan to what follows.

    Attributes:
        event: The replacement event, if the event itself changes.
        plan: A row transformer for the result this event describes.
    """

    event: Event | None = None
    plan: RowTransformer | None = None


@frozen
class Hold:
    """
    Wait for a decision made elsewhere (a human approval, a slow check).

    Attributes:
        decision: Fires with the final verdict.
        reason: What is being waited for, for the log and the client.
    """

    decision: Deferred[Any]
    reason: str = ""


Verdict: TypeAlias = Allow | Deny | Rewrite | Hold

ALLOW = Allow()
