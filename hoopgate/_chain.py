"""
The interceptor chain: one fixed order, failing closed.

Interceptors run by stage: identity, then guardrails, then approval, then
masking; within a stage in the order they were added.  The first deny
ends the walk; a rewrite hands the changed event to the next step; a hold
pauses the walk until its Deferred fires.  Notes that allowing or
rewriting steps attach (a dry-run rule's hit) are gathered along the walk
and carried by the final verdict, a deny included.  Observers (recording)
see every final verdict and change none.  An exception in an interceptor is a
deny with code C{interceptor.failure}.

test-case-name: tests.unit.test_chain
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgate._events import Event
from hoopgate._identity import Identity
from hoopgate._interfaces import IInterceptor, IObserver
from hoopgate._verdicts import (
    ALLOW,
    Allow,
    Deny,
    DenyReason,
    Hold,
    Note,
    Rewrite,
    RowTransformer,
    Verdict,
)

STAGES = ("identity", "guardrails", "approval", "masking")


@frozen
class Context:
    """
    What an interceptor knows about the session an event belongs to.

    Attributes:
        session_id: The session.
        protocol: The plugin name.
        target: The target name.
        identity: Who is calling, once known.
        policy: The policy snapshot the session runs under.
    """

    session_id: str
    protocol: str
    target: str
    identity: Identity | None
    policy: Any


def _failure_deny(name: str) -> Deny:
    return Deny(
        DenyReason(
            code="interceptor.failure",
            message="the gateway could not check this request",
            detail=f"interceptor {name} failed",
        )
    )


def _noted(deny: Deny, notes: tuple[Note, ...]) -> Deny:
    # A deny keeps what earlier steps noticed (a dry-run rule's hit), so
    # the recording shows it whatever refused the event in the end.
    if not notes:
        return deny
    return attrs.evolve(deny, notes=notes + deny.notes)


def _compose(
    first: RowTransformer | None, second: RowTransformer | None
) -> RowTransformer | None:
    if first is None or second is None:
        return first or second

    def both(values: list[bytes | None]) -> list[bytes | None]:
        return second(first(values))

    return both


class Chain:
    """
    The fixed-order chain of interceptors and its observers.

    Args:
        interceptors: Interceptors, each with a known stage.
        observers: Observers told about every final verdict.
    """

    _log = Logger()

    def __init__(
        self,
        interceptors: Sequence[IInterceptor] = (),
        observers: Sequence[IObserver] = (),
    ) -> None:
        for interceptor in interceptors:
            if interceptor.stage not in STAGES:
                raise ValueError(
                    f"interceptor {interceptor.name} has unknown stage "
                    f"{interceptor.stage!r}"
                )
        self._interceptors = sorted(interceptors, key=lambda i: STAGES.index(i.stage))
        self._observers = tuple(observers)
        self._by_type: dict[type[Event], tuple[IInterceptor, ...]] = {}

    def _for(self, kind: type[Event]) -> tuple[IInterceptor, ...]:
        steps = self._by_type.get(kind)
        if steps is None:
            steps = tuple(
                i for i in self._interceptors if issubclass(kind, i.event_types)
            )
            self._by_type[kind] = steps
        return steps

    def decide(self, event: Event, context: Context) -> Verdict:
        """
        Walk the chain for C{event}.

        Returns:
            L{Allow}, L{Deny} or L{Rewrite} when every step answered at
            once; otherwise L{Hold}, whose Deferred fires with one of
            those once the walk has finished.
        """
        steps = self._for(type(event))
        verdict = self._walk(steps, 0, event, None, original=event, context=context)
        if not isinstance(verdict, Hold):
            self._observe(event, verdict, context)
        return verdict

    def _walk(
        self,
        steps: tuple[IInterceptor, ...],
        start: int,
        event: Event,
        plan: RowTransformer | None,
        *,
        original: Event,
        context: Context,
        notes: tuple[Note, ...] = (),
    ) -> Verdict:
        for index in range(start, len(steps)):
            step = steps[index]
            verdict = self._ask(step, event, context)
            if isinstance(verdict, Deny):
                return _noted(verdict, notes)
            if isinstance(verdict, Hold):
                return self._pause(
                    steps,
                    index,
                    event,
                    plan,
                    verdict,
                    original=original,
                    context=context,
                    notes=notes,
                )
            notes += verdict.notes
            if isinstance(verdict, Rewrite):
                event = verdict.event or event
                plan = _compose(plan, verdict.plan)

        if event is original and plan is None:
            return Allow(notes=notes) if notes else ALLOW
        return Rewrite(
            event=None if event is original else event, plan=plan, notes=notes
        )

    def _ask(self, step: IInterceptor, event: Event, context: Context) -> Verdict:
        try:
            verdict = step.decide(event, context)
        except Exception:
            self._log.failure(
                "Interceptor {interceptor} failed; denying", interceptor=step.name
            )
            return _failure_deny(step.name)

        if isinstance(verdict, Deferred):
            return Hold(verdict, reason=f"waiting for {step.name}")
        if not isinstance(verdict, Allow | Deny | Rewrite | Hold):
            self._log.critical(
                "Interceptor {interceptor} returned {value!r}; denying",
                interceptor=step.name,
                value=verdict,
            )
            return _failure_deny(step.name)
        return verdict

    def _pause(
        self,
        steps: tuple[IInterceptor, ...],
        index: int,
        event: Event,
        plan: RowTransformer | None,
        hold: Hold,
        *,
        original: Event,
        context: Context,
        notes: tuple[Note, ...],
    ) -> Hold:
        name = steps[index].name
        self._observe(original, hold, context)

        def resumed(decision: object) -> Verdict:
            if isinstance(decision, Hold):
                return self._pause(
                    steps,
                    index,
                    event,
                    plan,
                    decision,
                    original=original,
                    context=context,
                    notes=notes,
                )
            if isinstance(decision, Deny):
                return _noted(decision, notes)
            if not isinstance(decision, Allow | Rewrite):
                self._log.critical(
                    "Held decision of {interceptor} was {value!r}; denying",
                    interceptor=name,
                    value=decision,
                )
                return _noted(_failure_deny(name), notes)

            next_event, next_plan = event, plan
            if isinstance(decision, Rewrite):
                next_event = decision.event or event
                next_plan = _compose(plan, decision.plan)
            return self._walk(
                steps,
                index + 1,
                next_event,
                next_plan,
                original=original,
                context=context,
                notes=notes + decision.notes,
            )

        def failed(failure: Failure) -> Verdict:
            self._log.failure(
                "Held decision of {interceptor} failed; denying",
                failure,
                interceptor=name,
            )
            return _noted(_failure_deny(name), notes)

        def settle(verdict: Verdict) -> Verdict | Deferred[Any]:
            if isinstance(verdict, Hold):
                # A later hold: the pause that made it tells the observers
                # its outcome; telling them here too would record it twice.
                return verdict.decision
            self._observe(original, verdict, context)
            return verdict

        decision: Deferred[Any] = hold.decision
        decision.addCallbacks(resumed, failed)
        decision.addCallback(settle)
        return Hold(decision, hold.reason)

    def observe(self, event: Event, context: Context) -> None:
        """
        Tell the observers about an event that needs no decision.
        """
        self._observe(event, ALLOW, context)

    def _observe(self, event: Event, verdict: Verdict, context: Context) -> None:
        for observer in self._observers:
            try:
                observer.observe(event, verdict, context)
            except Exception:
                self._log.failure(
                    "Observer {observer!r} failed on {event}",
                    observer=observer,
                    event=event.name,
                )
