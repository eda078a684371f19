"""
Verdicts: what an interceptor decides about an event.

A verdict is a value.  Plugins turn L{Deny} into their protocol's own error
through one error module each; L{Hold} carries a Deferred that later
yields one of the other verdicts.  L{Allow}, L{Rewrite} and L{Deny} may
carry L{Note}s: things noticed that changed nothing (a dry-run rule's
hit), which the chain gathers and the recording shows.

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
        subject: Who was refused, when a credential proved it (so that
            a refused session's record names the caller).
    """

    code: str
    message: str
    detail: str = ""
    rule: str | None = None
    subject: str | None = None


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
class Note:
    """
    Something an interceptor noticed without acting on it, for the record.

    A dry-run rule that would have refused an event is the first use:
    the event goes on as if the rule did not exist, and the recording
    line of the event names the rule under C{kind}.

    Attributes:
        kind: What was noticed, a short stable word used as the
            recording key (C{dry_run}).
        rule: The policy rule it is about.
    """

    kind: str
    rule: str


@frozen
class Allow:
    """
    Let the event through unchanged.

    Attributes:
        notes: What was noticed along the way (dry-run hits).
    """

    notes: tuple[Note, ...] = ()


@frozen
class Deny:
    """
    Refuse the event.

    Attributes:
        reason: Why.
        notes: What else was noticed along the way (dry-run hits).
    """

    reason: DenyReason
    notes: tuple[Note, ...] = ()


@frozen
class Rewrite:
    """
    Let a changed event through, or apply a plan to what follows.

    Attributes:
        event: The replacement event, if the event itself changes.
        plan: A row transformer for the result this event describes.
        notes: What was noticed along the way (dry-run hits).
    """

    event: Event | None = None
    plan: RowTransformer | None = None
    notes: tuple[Note, ...] = ()


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
