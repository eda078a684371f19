"""
Tests for L{hoopgate._chain}: the fixed-order, fail-closed chain.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from hoopgate._chain import STAGES, Chain, Context
from hoopgate._events import CommandReceived, Event, StatementReceived
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

Answer = Verdict | Deferred[Verdict] | Callable[[Event], Verdict]

AT = 1_700_000_000.0

CONTEXT = Context(
    session_id="s-1",
    protocol="postgres",
    target="db",
    identity=None,
    policy=None,
)


def statement(text: str = "SELECT 1") -> StatementReceived:
    return StatementReceived(
        session_id="s-1",
        protocol="postgres",
        at=AT,
        statement_id="s-1.1",
        text=text,
    )


def deny(code: str = "guardrail.blocked") -> Deny:
    return Deny(DenyReason(code, "blocked", "a test rule blocks it", "rule-1"))


@implementer(IInterceptor)
class Step:
    """
    An interceptor that notes what it was asked and gives a set answer.

    Args:
        name: Its name.
        stage: Its stage.
        answer: A verdict, a Deferred, or a function of the event.
        calls: A list shared by several steps, to see their order.
        event_types: The event classes it decides about.
    """

    def __init__(
        self,
        name: str,
        stage: str = "guardrails",
        answer: Answer = ALLOW,
        calls: list[str] | None = None,
        event_types: tuple[type[Event], ...] = (Event,),
    ) -> None:
        self.name = name
        self.stage = stage
        self.event_types = event_types
        self.seen: list[Event] = []
        self._answer = answer
        self._calls = calls

    def decide(self, event: Event, context: Context) -> Verdict | Deferred[Verdict]:
        self.seen.append(event)
        if self._calls is not None:
            self._calls.append(self.name)
        if isinstance(self._answer, Deferred):
            return self._answer
        if callable(self._answer):
            return self._answer(event)
        return self._answer


@implementer(IObserver)
class Witness:
    """
    An observer that keeps every event and verdict it was told about.
    """

    def __init__(self) -> None:
        self.seen: list[tuple[Event, Verdict]] = []

    def observe(self, event: Event, verdict: Verdict, context: Context) -> None:
        self.seen.append((event, verdict))

    @property
    def verdicts(self) -> list[Verdict]:
        return [verdict for _, verdict in self.seen]


@implementer(IObserver)
class BrokenObserver:
    """
    An observer that fails on every event.
    """

    def observe(self, event: Event, verdict: Verdict, context: Context) -> None:
        raise ZeroDivisionError("observer bug")


def broken(event: Event) -> Verdict:
    raise RuntimeError("interceptor bug")


def suffix(tag: bytes) -> RowTransformer:
    """
    A row plan that appends C{tag} to every non-NULL value.
    """

    def plan(values: list[bytes | None]) -> list[bytes | None]:
        return [None if v is None else v + tag for v in values]

    return plan


class ChainTestCase(SynchronousTestCase):
    """
    Helpers for walking a chain over one statement.
    """

    def decided(self, verdict: Verdict) -> Verdict:
        """
        The final verdict: C{verdict} itself, or what its hold fired with.
        """
        if isinstance(verdict, Hold):
            result: Verdict = self.successResultOf(verdict.decision)
            return result
        return verdict

    def logged(self, kind: type[BaseException]) -> int:
        """
        How many failures of C{kind} were logged; they count as handled.
        """
        # trial's flushLoggedErrors is unannotated (Twisted 26.10).
        return len(self.flushLoggedErrors(kind))  # type: ignore[no-untyped-call]

    def pending(self, deferred: Deferred[Verdict]) -> None:
        """
        Check that C{deferred} has not fired yet.
        """
        # trial's assertNoResult is unannotated (Twisted 26.10).
        self.assertNoResult(deferred)  # type: ignore[no-untyped-call]


class StageOrderTests(ChainTestCase):
    """
    Interceptors run by stage, and in insertion order within a stage.
    """

    def test_interfaces(self) -> None:
        """
        The test fakes provide the interfaces the chain expects.
        """
        assert verifyObject(IInterceptor, Step("a"))
        assert verifyObject(IObserver, Witness())

    def test_stage_order(self) -> None:
        """
        Identity, guardrails, approval and masking run in that order,
        whatever order they were given in.
        """
        calls: list[str] = []
        steps = [Step(stage, stage=stage, calls=calls) for stage in reversed(STAGES)]

        verdict = Chain(steps).decide(statement(), CONTEXT)

        assert calls == ["identity", "guardrails", "approval", "masking"]
        assert verdict == ALLOW

    def test_insertion_order_within_stage(self) -> None:
        """
        Two interceptors of one stage run in the order they were added.
        """
        calls: list[str] = []
        chain = Chain(
            [
                Step("mask-2", "masking", calls=calls),
                Step("guard-1", "guardrails", calls=calls),
                Step("mask-1", "masking", calls=calls),
                Step("guard-2", "guardrails", calls=calls),
            ]
        )

        chain.decide(statement(), CONTEXT)

        assert calls == ["guard-1", "guard-2", "mask-2", "mask-1"]

    def test_unknown_stage(self) -> None:
        """
        An interceptor with a stage outside the fixed order is refused
        when the chain is built.
        """
        with pytest.raises(ValueError, match=r"odd .*'afterwards'"):
            Chain([Step("odd", stage="afterwards")])

    def test_event_types(self) -> None:
        """
        An interceptor is asked only about the event types it declares.
        """
        commands = Step("commands", event_types=(CommandReceived,))
        statements = Step("statements", event_types=(StatementReceived,))

        Chain([commands, statements]).decide(statement(), CONTEXT)

        assert commands.seen == []
        assert statements.seen == [statement()]

    def test_nobody_asked(self) -> None:
        """
        An event no interceptor is about is allowed and still observed.
        """
        witness = Witness()
        chain = Chain([Step("x", event_types=(CommandReceived,))], [witness])

        verdict = chain.decide(statement(), CONTEXT)

        assert verdict == ALLOW
        assert witness.seen == [(statement(), ALLOW)]


class DenyTests(ChainTestCase):
    """
    The first deny ends the walk.
    """

    def test_first_deny_ends_walk(self) -> None:
        """
        A deny is the chain's verdict, and no later interceptor is asked.
        """
        refusal = deny()
        later = Step("later", "masking")
        chain = Chain([Step("guard", answer=refusal), later])

        verdict = chain.decide(statement(), CONTEXT)

        assert verdict == refusal
        assert later.seen == []

    def test_first_of_two_denies(self) -> None:
        """
        Of two denying interceptors, the earlier stage's reason wins.
        """
        chain = Chain(
            [
                Step("approval", "approval", answer=deny("approval.denied")),
                Step("guard", "guardrails", answer=deny("guardrail.blocked")),
            ]
        )

        verdict = chain.decide(statement(), CONTEXT)

        assert isinstance(verdict, Deny)
        assert verdict.reason.code == "guardrail.blocked"

    def test_deny_after_rewrite(self) -> None:
        """
        A deny after a rewrite is still a deny: the rewrite is dropped.
        """
        chain = Chain(
            [
                Step("rewrite", answer=Rewrite(event=statement("SELECT 2"))),
                Step("guard", "approval", answer=deny()),
            ]
        )

        assert chain.decide(statement(), CONTEXT) == deny()


class RewriteTests(ChainTestCase):
    """
    Rewrites hand the changed event on and compose row plans.
    """

    def test_rewritten_event_reaches_next_step(self) -> None:
        """
        The interceptor after a rewrite sees the new event, and the chain's
        verdict carries it.
        """
        changed = statement("SELECT 1 LIMIT 10")
        after = Step("after", "approval")
        chain = Chain([Step("limit", answer=Rewrite(event=changed)), after])

        verdict = chain.decide(statement(), CONTEXT)

        assert after.seen == [changed]
        assert verdict == Rewrite(event=changed, plan=None)

    def test_plans_compose_in_order(self) -> None:
        """
        Row plans of several interceptors apply one after the other, in
        chain order, as one plan.
        """
        chain = Chain(
            [
                Step("second", "masking", answer=Rewrite(plan=suffix(b"-2"))),
                Step("first", "guardrails", answer=Rewrite(plan=suffix(b"-1"))),
                Step("third", "masking", answer=Rewrite(plan=suffix(b"-3"))),
            ]
        )

        verdict = chain.decide(statement(), CONTEXT)

        assert isinstance(verdict, Rewrite)
        assert verdict.event is None
        assert verdict.plan is not None
        assert verdict.plan([b"a", None, b"b"]) == [b"a-1-2-3", None, b"b-1-2-3"]

    def test_single_plan_kept(self) -> None:
        """
        One plan among allows is the verdict's plan itself.
        """
        plan = suffix(b"!")
        chain = Chain([Step("a"), Step("mask", "masking", answer=Rewrite(plan=plan))])

        verdict = chain.decide(statement(), CONTEXT)

        assert isinstance(verdict, Rewrite)
        assert verdict.plan is plan

    def test_event_and_plan(self) -> None:
        """
        An event rewrite and a later plan both reach the verdict.
        """
        changed = statement("SELECT 3")
        chain = Chain(
            [
                Step("limit", answer=Rewrite(event=changed)),
                Step("mask", "masking", answer=Rewrite(plan=suffix(b"*"))),
            ]
        )

        verdict = chain.decide(statement(), CONTEXT)

        assert isinstance(verdict, Rewrite)
        assert verdict.event == changed
        assert verdict.plan is not None
        assert verdict.plan([b"x"]) == [b"x*"]

    def test_all_allow(self) -> None:
        """
        When every step allows, the verdict is a plain allow.
        """
        verdict = Chain([Step("a"), Step("b", "masking")]).decide(statement(), CONTEXT)

        assert isinstance(verdict, Allow)


class HoldTests(ChainTestCase):
    """
    A hold pauses the walk until its Deferred fires.
    """

    def test_hold_then_resume(self) -> None:
        """
        Later interceptors are asked only once the held decision allows;
        the hold then fires with the walk's final verdict.
        """
        waiting: Deferred[Verdict] = Deferred()
        later = Step("mask", "masking", answer=Rewrite(plan=suffix(b"#")))
        chain = Chain([Step("approval", "approval", answer=waiting), later])

        verdict = chain.decide(statement(), CONTEXT)

        assert isinstance(verdict, Hold)
        assert verdict.reason == "waiting for approval"
        assert later.seen == []
        self.pending(verdict.decision)
        waiting.callback(ALLOW)
        final = self.successResultOf(verdict.decision)
        assert later.seen == [statement()]
        assert isinstance(final, Rewrite)
        assert final.plan is not None
        assert final.plan([b"v"]) == [b"v#"]

    def test_hold_then_deny(self) -> None:
        """
        A held decision that denies ends the walk with that deny.
        """
        waiting: Deferred[Verdict] = Deferred()
        later = Step("mask", "masking")
        chain = Chain([Step("approval", "approval", answer=waiting), later])

        verdict = chain.decide(statement(), CONTEXT)
        waiting.callback(deny("approval.denied"))

        assert self.decided(verdict) == deny("approval.denied")
        assert later.seen == []

    def test_hold_rewrite_continues(self) -> None:
        """
        A held rewrite hands its event to the rest of the walk.
        """
        waiting: Deferred[Verdict] = Deferred()
        changed = statement("SELECT 4")
        later = Step("mask", "masking")
        chain = Chain([Step("approval", "approval", answer=waiting), later])

        verdict = chain.decide(statement(), CONTEXT)
        waiting.callback(Rewrite(event=changed))

        assert self.decided(verdict) == Rewrite(event=changed)
        assert later.seen == [changed]

    def test_held_failure_denies(self) -> None:
        """
        A held decision that fails is a deny with code
        C{interceptor.failure}, and the failure is logged.
        """
        chain = Chain(
            [Step("slow", "approval", answer=fail(ConnectionError("approver down")))]
        )

        final = self.decided(chain.decide(statement(), CONTEXT))

        assert isinstance(final, Deny)
        assert final.reason.code == "interceptor.failure"
        assert "slow" in final.reason.detail
        assert self.logged(ConnectionError) == 1

    def test_held_nonsense_denies(self) -> None:
        """
        A held decision that fires with something not a verdict denies.
        """
        waiting: Deferred[Verdict] = Deferred()
        chain = Chain([Step("slow", "approval", answer=waiting)])

        verdict = chain.decide(statement(), CONTEXT)
        waiting.callback("yes")  # type: ignore[arg-type]  # the wrong type on purpose

        final = self.decided(verdict)
        assert isinstance(final, Deny)
        assert final.reason.code == "interceptor.failure"

    def test_two_holds(self) -> None:
        """
        Two holds in one walk resume one after the other, and observers
        see each hold and then the final verdict exactly once.
        """
        first: Deferred[Verdict] = Deferred()
        second: Deferred[Verdict] = Deferred()
        witness = Witness()
        chain = Chain(
            [
                Step("guard", "guardrails", answer=first),
                Step("approval", "approval", answer=second),
            ],
            [witness],
        )

        verdict = chain.decide(statement(), CONTEXT)
        first.callback(ALLOW)
        assert isinstance(verdict, Hold)
        self.pending(verdict.decision)
        second.callback(deny("approval.denied"))

        assert self.decided(verdict) == deny("approval.denied")
        kinds = [type(v).__name__ for v in witness.verdicts]
        assert kinds == ["Hold", "Hold", "Deny"]

    def test_hold_resolving_to_hold(self) -> None:
        """
        A held decision may itself be a hold; the walk waits for both.
        """
        outer: Deferred[Verdict] = Deferred()
        inner: Deferred[Verdict] = Deferred()
        witness = Witness()
        chain = Chain([Step("approval", "approval", answer=outer)], [witness])

        verdict = chain.decide(statement(), CONTEXT)
        outer.callback(Hold(inner, "second approver"))
        assert isinstance(verdict, Hold)
        self.pending(verdict.decision)
        inner.callback(ALLOW)

        assert self.decided(verdict) == ALLOW
        kinds = [type(v).__name__ for v in witness.verdicts]
        assert kinds == ["Hold", "Hold", "Allow"]


class FailureTests(ChainTestCase):
    """
    An interceptor that fails makes the chain deny (fail closed).
    """

    def test_exception_is_deny(self) -> None:
        """
        An exception becomes a deny with code C{interceptor.failure} that
        names the interceptor, and no later step is asked.
        """
        later = Step("mask", "masking")
        chain = Chain([Step("guard", answer=broken), later])

        verdict = chain.decide(statement(), CONTEXT)

        assert isinstance(verdict, Deny)
        assert verdict.reason.code == "interceptor.failure"
        assert verdict.reason.detail == "interceptor guard failed"
        assert "bug" not in verdict.reason.message
        assert later.seen == []
        assert self.logged(RuntimeError) == 1

    def test_not_a_verdict_is_deny(self) -> None:
        """
        An interceptor answering with something not a verdict denies.
        """

        def nonsense(event: Event) -> Verdict:
            return True  # type: ignore[return-value]  # the wrong type on purpose

        verdict = Chain([Step("odd", answer=nonsense)]).decide(statement(), CONTEXT)

        assert isinstance(verdict, Deny)
        assert verdict.reason.code == "interceptor.failure"

    def test_failure_is_observed(self) -> None:
        """
        Observers see the failure deny, as the final verdict.
        """
        witness = Witness()
        chain = Chain([Step("guard", answer=broken)], [witness])

        verdict = chain.decide(statement(), CONTEXT)

        assert witness.seen == [(statement(), verdict)]
        assert self.logged(RuntimeError) == 1


class ObserverTests(ChainTestCase):
    """
    Observers see final verdicts and change nothing.
    """

    def test_sees_original_event_and_final_verdict(self) -> None:
        """
        An observer is told the event as the plugin sent it, with the
        chain's final verdict, once.
        """
        changed = statement("SELECT 5")
        witness = Witness()
        chain = Chain([Step("limit", answer=Rewrite(event=changed))], [witness])

        verdict = chain.decide(statement(), CONTEXT)

        assert witness.seen == [(statement(), verdict)]
        assert verdict == Rewrite(event=changed)

    def test_sees_held_then_final(self) -> None:
        """
        A held walk is observed as held, then with its final verdict.
        """
        waiting: Deferred[Verdict] = Deferred()
        witness = Witness()
        chain = Chain([Step("approval", "approval", answer=waiting)], [witness])

        verdict = chain.decide(statement(), CONTEXT)
        assert witness.verdicts == [verdict]
        waiting.callback(ALLOW)

        assert witness.verdicts == [verdict, ALLOW]

    def test_failure_changes_nothing(self) -> None:
        """
        An observer that raises changes neither the verdict nor what the
        next observer sees; the failure is logged.
        """
        witness = Witness()
        chain = Chain([Step("guard", answer=deny())], [BrokenObserver(), witness])

        verdict = chain.decide(statement(), CONTEXT)

        assert verdict == deny()
        assert witness.seen == [(statement(), deny())]
        assert self.logged(ZeroDivisionError) == 1

    def test_failure_after_hold(self) -> None:
        """
        An observer failing on a held walk's outcome does not turn the
        outcome into a failure.
        """
        waiting: Deferred[Verdict] = Deferred()
        chain = Chain(
            [Step("approval", "approval", answer=waiting)], [BrokenObserver()]
        )

        verdict = chain.decide(statement(), CONTEXT)
        waiting.callback(ALLOW)

        assert self.decided(verdict) == ALLOW
        assert self.logged(ZeroDivisionError) == 2

    def test_observe_without_decision(self) -> None:
        """
        L{Chain.observe} tells observers about an event as allowed and
        asks no interceptor.
        """
        step = Step("guard", answer=deny())
        witness = Witness()
        event = CommandReceived(
            session_id="s-1", protocol="ssh", at=AT, command_id="c-1", command="ls"
        )

        Chain([step], [witness]).observe(event, CONTEXT)

        assert witness.seen == [(event, ALLOW)]
        assert step.seen == []


def noted(rule: str) -> Allow:
    return Allow(notes=(Note("dry_run", rule),))


class NoteTests(ChainTestCase):
    """
    Notes of allowing and rewriting steps are gathered along the walk and
    carried by the final verdict, whatever it is.
    """

    def test_gathered_in_order(self) -> None:
        """
        Notes of several steps end up on the final allow, in stage order.
        """
        chain = Chain(
            [
                Step("mask", "masking", answer=Rewrite(notes=(Note("dry_run", "m"),))),
                Step("guard", answer=noted("g")),
                Step("quiet"),
            ]
        )

        verdict = chain.decide(statement(), CONTEXT)

        assert verdict == Allow(notes=(Note("dry_run", "g"), Note("dry_run", "m")))

    def test_on_rewrite(self) -> None:
        """
        A walk ending in a rewrite carries the notes on the rewrite.
        """
        replaced = statement("SELECT 2")
        chain = Chain(
            [
                Step("guard", answer=noted("g")),
                Step("mask", "masking", answer=Rewrite(replaced)),
            ]
        )

        verdict = chain.decide(statement(), CONTEXT)

        assert verdict == Rewrite(event=replaced, notes=(Note("dry_run", "g"),))

    def test_on_later_deny(self) -> None:
        """
        A later step's deny keeps the notes gathered before it.
        """
        chain = Chain(
            [
                Step("guard", answer=noted("g")),
                Step("approval", "approval", answer=deny()),
            ]
        )

        verdict = chain.decide(statement(), CONTEXT)

        assert verdict == Deny(deny().reason, notes=(Note("dry_run", "g"),))

    def test_across_hold(self) -> None:
        """
        Notes from before a hold and from the held decision both reach the
        final verdict and the observers.
        """
        waiting: Deferred[Verdict] = Deferred()
        witness = Witness()
        chain = Chain(
            [
                Step("guard", answer=noted("g")),
                Step("approval", "approval", answer=waiting),
            ],
            [witness],
        )

        verdict = chain.decide(statement(), CONTEXT)
        waiting.callback(noted("a"))

        final = Allow(notes=(Note("dry_run", "g"), Note("dry_run", "a")))
        assert self.decided(verdict) == final
        assert witness.verdicts[-1] == final

    def test_failure_after_hold_keeps_notes(self) -> None:
        """
        A held decision that fails is a failure deny still carrying the
        notes.
        """
        waiting: Deferred[Verdict] = Deferred()
        chain = Chain(
            [
                Step("guard", answer=noted("g")),
                Step("approval", "approval", answer=waiting),
            ]
        )

        verdict = chain.decide(statement(), CONTEXT)
        waiting.errback(RuntimeError("approver down"))

        final = self.decided(verdict)
        assert isinstance(final, Deny)
        assert final.reason.code == "interceptor.failure"
        assert final.notes == (Note("dry_run", "g"),)
        assert self.logged(RuntimeError) == 1

    def test_no_notes_is_plain_allow(self) -> None:
        """
        Without notes the walk still answers the shared L{ALLOW}.
        """
        assert Chain([Step("guard")]).decide(statement(), CONTEXT) is ALLOW
