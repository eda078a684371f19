"""
Tests for L{hoopgate._approvals}: rules and their matching, the hold,
grant and session modes, votes, quorum, links, withdrawal, and failing
closed when the directory or the store cannot answer.  The directory is
a scripted fake; the store is the in-memory one on a clock.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgate._approvals import (
    ApprovalInterceptor,
    ApprovalRecorded,
    ApprovalRefusedError,
    ApprovalRule,
    ApprovalService,
    ApprovalSettings,
    BadTokenError,
    admin_base_url,
    masked,
    normalise_command,
    normalise_statement,
    read_approval_rule,
)
from hoopgate._chain import Chain, Context
from hoopgate._configreader import ConfigError, load_yaml
from hoopgate._events import (
    CommandReceived,
    Event,
    HttpRequestReceived,
    SessionRequested,
    StatementPart,
    StatementReceived,
)
from hoopgate._identity import Identity
from hoopgate._interfaces import INotifier
from hoopgate._ldap import DirectorySettings, DirectoryUnavailableError, Person
from hoopgate._notify import Notification
from hoopgate._secrets import inline_secret
from hoopgate._store import MemoryStore, StoreUnavailableError
from hoopgate._verdicts import Allow, Deny, Hold, Verdict

T = TypeVar("T")

NOW = 1_000_000.0
DBA = "cn=dba-approvers,ou=groups,dc=example,dc=org"
OPS = "cn=ops,ou=groups,dc=example,dc=org"


def person(login: str) -> Person:
    return Person(
        dn=f"uid={login},ou=people,dc=example,dc=org",
        login=login,
        mail=f"{login}@example.org",
    )


ALICE, BOB, CAROL, RUNNER = (
    person("alice"),
    person("bob"),
    person("carol"),
    person("ci-runner"),
)


class FakeDirectory:
    """
    Groups and people as a test scripts them; C{down} makes every call
    fail as an unreachable directory does.
    """

    where = "ldap://fake:389"

    def __init__(self) -> None:
        self.groups: dict[str, list[Person]] = {DBA: [ALICE, BOB], OPS: [CAROL, RUNNER]}
        self.people = {p.login: p for p in (ALICE, BOB, CAROL, RUNNER)}
        self.down = False
        self.lookups = 0

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def _failing(self) -> Deferred[Any]:
        return fail(
            DirectoryUnavailableError("the directory at ldap://fake:389 is down")
        )

    def members(self, groups: Any) -> Deferred[dict[str, Person]]:
        self.lookups += 1
        if self.down:
            return self._failing()
        found = {p.key: p for g in groups for p in self.groups.get(g, [])}
        return succeed(found)

    def find(self, value: str) -> Deferred[Person | None]:
        if self.down:
            return self._failing()
        return succeed(self.people.get(value))

    def authenticate(self, login: str, password: str) -> Deferred[Person | None]:
        return succeed(self.people.get(login) if password == "pw" else None)


@implementer(INotifier)
class Notes:
    """
    A notifier keeping what it was given.
    """

    name = "notes"

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def notify(self, notification: Notification) -> Deferred[None]:
        self.sent.append(notification)
        return succeed(None)


class BrokenStore(MemoryStore):
    """
    An in-memory store that can be switched to fail every operation.
    """

    broken = False

    def get(self, key: str) -> Deferred[str | None]:
        if self.broken:
            return fail(StoreUnavailableError("Redis at redis://fake is unreachable"))
        return super().get(key)

    def put(self, key: str, value: str, ttl: float | None = None) -> Deferred[None]:
        if self.broken:
            return fail(StoreUnavailableError("Redis at redis://fake is unreachable"))
        return super().put(key, value, ttl)

    def put_if_absent(
        self, key: str, value: str, ttl: float | None = None
    ) -> Deferred[bool]:
        if self.broken:
            return fail(StoreUnavailableError("Redis at redis://fake is unreachable"))
        return super().put_if_absent(key, value, ttl)


def rule(**changes: Any) -> ApprovalRule:
    text = changes.pop("yaml", None)
    if text is not None:
        return read_approval_rule(load_yaml(text, "test.yaml"))
    base = ApprovalRule(name="deletes", mode="hold", approvers=(DBA,), timeout=600.0)
    reader = load_yaml(
        "name: deletes\nmode: hold\napprovers: [x]\nwhen: {commands: [DELETE]}\n",
        "t.yaml",
    )
    when = read_approval_rule(reader).when
    return attrs.evolve(base, when=when, **changes)


def statement(text: str, *parts: StatementPart, number: int = 1) -> StatementReceived:
    return StatementReceived(
        session_id="s-1",
        protocol="postgres",
        statement_id=f"s-1.{number}",
        text=text,
        parts=parts,
        classified=bool(parts),
    )


def delete(text: str = "delete from customers where id = 7") -> StatementReceived:
    part = StatementPart(
        text=text, command="DELETE", effect="write", writes=("public.customers",)
    )
    return statement(text, part)


class Fixture:
    """
    A service on a clock with a fake directory and a notifier.
    """

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = store or MemoryStore(self.clock)
        self.directory = FakeDirectory()
        self.notes = Notes()
        self.records: list[tuple[Event, Verdict]] = []
        settings = ApprovalSettings(
            directory=DirectorySettings(
                url="ldap://fake",
                bind_dn="cn=a",
                bind_password=inline_secret("x"),
                people="ou=p",
            ),
            groups={"dba": DBA},
            link_secret=inline_secret("0123456789abcdef0123"),
        )
        self.service = ApprovalService(
            self.clock,
            self.store,
            settings,
            lambda event, verdict, context: self.records.append((event, verdict)),
            admin_url="http://127.0.0.1:8091",
            directory=self.directory,  # type: ignore[arg-type]
            notifiers=[self.notes],
        )
        self.identity = Identity(subject="ci-runner", issuer="https://id.test")
        self.context = Context(
            session_id="s-1",
            protocol="postgres",
            target="appdb",
            identity=self.identity,
            policy=None,
        )

    def result(self, deferred: Deferred[T]) -> T:
        results: list[Any] = []
        deferred.addBoth(results.append)
        assert results, "the Deferred has not fired"
        value = results[0]
        if isinstance(value, Failure):
            value.raiseException()
        return value  # type: ignore[no-any-return]

    def failure(self, deferred: Deferred[Any]) -> BaseException:
        results: list[Any] = []
        deferred.addBoth(results.append)
        assert results and isinstance(results[0], Failure), results
        error = results[0].value
        assert error is not None
        return error

    def hold(
        self, the_rule: ApprovalRule | None = None, event: Event | None = None
    ) -> tuple[Hold, list[Verdict]]:
        held = self.service.hold(the_rule or rule(), event or delete(), self.context)
        outcome: list[Verdict] = []
        held.decision.addCallback(outcome.append)
        return held, outcome

    def request_id(self) -> str:
        return self.notes.sent[-1].request_id

    def vote(
        self,
        who: Person,
        approve: bool = True,
        reason: str = "",
        link: str | None = None,
    ) -> Any:
        return self.service.vote(self.request_id(), who.dn, approve, reason, link=link)

    def states(self) -> list[str]:
        return [e.state for e, _ in self.records if isinstance(e, ApprovalRecorded)]


@pytest.fixture
def fx() -> Fixture:
    return Fixture()


class TestRules:
    """
    Reading approval rules.
    """

    def test_hold_rule(self) -> None:
        """
        A hold rule with conditions, mapped approvers, quorum and timeout.
        """
        read = rule(
            yaml=(
                "name: deletes\nmode: hold\ntargets: [appdb]\napprovers: [dba]\n"
                "quorum: 2\ntimeout: 10m\nwhen: {commands: [DELETE], writes: [customers]}\n"
            )
        )

        assert (read.mode, read.quorum, read.timeout, read.targets) == (
            "hold",
            2,
            600.0,
            ("appdb",),
        )
        assert read.approvers == ("dba",)
        assert read.when is not None and read.when.statement.present

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("name: r\nmode: hold\napprovers: [dba]\n", "a hold rule needs conditions"),
            (
                "name: r\nmode: session\napprovers: [dba]\nwhen: {commands: [X]}\n",
                "no when",
            ),
            (
                "name: r\nmode: grant\nwhen: {commands: [X]}\n",
                "approvers (line 1): is required",
            ),
            (
                "name: r\nmode: later\napprovers: [a]\n",
                "must be one of hold, grant, session",
            ),
            ("name: r\napprovers: [a]\nquorum: 0\nwhen: {commands: [X]}\n", "quorum"),
            (
                "name: r\napprovers: [a]\nuses: 3\nwhen: {commands: [X]}\n",
                "window and uses",
            ),
            ("name: r\napprovers: [a]\nwhen: {colour: [red]}\n", "when.colour"),
        ],
    )
    def test_mistakes(self, text: str, message: str) -> None:
        """
        Mistakes name the key.
        """
        with pytest.raises(
            ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
        ):
            rule(yaml=text)

    def test_applies(self) -> None:
        """
        Targets, subjects and groups scope a rule as they scope guardrails.
        """
        scoped = attrs.evolve(rule(), targets=("appdb",), groups=("ops",))
        ops = Identity(subject="ann", issuer="i", groups=("ops",))
        dev = Identity(subject="dan", issuer="i", groups=("dev",))

        assert scoped.applies(ops, "appdb")
        assert not scoped.applies(dev, "appdb")
        assert not scoped.applies(ops, "other")
        assert scoped.applies(None, "appdb")

    def test_statement_matching(self) -> None:
        """
        Any part that hits the conditions, or could not be classified,
        asks for approval; others do not.
        """
        read = rule(
            yaml="name: r\napprovers: [a]\nwhen: {commands: [DELETE], writes: [customers]}\n"
        )
        select = StatementPart(text="select 1", command="SELECT", effect="read")
        unsure = StatementPart(text="?", command="", effect="unknown", problem="parser")

        assert read.matches(delete())
        assert not read.matches(statement("select 1", select))
        assert read.matches(statement("select 1; ?", select, unsure))
        assert read.matches(statement("delete from x"))  # no classifier: unknown
        dynamic = StatementPart(text="do $$ ... $$", command="DO", effect="unknown")
        assert read.matches(statement("do $$ ... $$", dynamic))
        assert not read.matches(
            CommandReceived(
                session_id="s", protocol="ssh", command_id="c", command="rm x"
            )
        )

    def test_every_key(self) -> None:
        """
        Every key given must match: a DELETE on customers, not any DELETE
        or any write to customers.
        """
        read = rule(
            yaml="name: r\napprovers: [a]\nwhen: {commands: [DELETE], writes: [customers]}\n"
        )
        other = StatementPart(
            text="delete from orders",
            command="DELETE",
            effect="write",
            writes=("public.orders",),
        )
        update = StatementPart(
            text="update customers set x = 1 where id = 1",
            command="UPDATE",
            effect="write",
            writes=("public.customers",),
        )

        assert read.matches(delete())
        assert not read.matches(statement(other.text, other))
        assert not read.matches(statement(update.text, update))

    def test_command_and_http(self) -> None:
        """
        Command-line and HTTP conditions match their own kind of event.
        """
        read = rule(
            yaml=(
                "name: r\napprovers: [a]\nwhen: {command_lines: ['systemctl restart *'],"
                " requests: ['DELETE /customers/*']}\n"
            )
        )
        restart = CommandReceived(
            session_id="s",
            protocol="ssh",
            command_id="c",
            command="systemctl restart web",
        )
        status = attrs.evolve(restart, command="systemctl status web")
        remove = HttpRequestReceived(
            session_id="s",
            protocol="http",
            request_id="r",
            method="delete",
            path="/customers/7",
        )
        sneaky = attrs.evolve(remove, path="/customers/%2e%2e/7")

        assert read.matches(restart)
        assert not read.matches(status)
        assert read.matches(remove)
        assert read.matches(sneaky)
        assert not read.matches(attrs.evolve(remove, method="GET"))


class TestText:
    """
    What notifications show and what grants compare.
    """

    def test_masked(self) -> None:
        """
        Quoted literals and detected values are masked.
        """
        text = "delete from customers where email = 'a@b.example' or card = 4111111111111111"

        shown = masked(text)

        assert "a@b.example" not in shown
        assert "4111111111111111" not in shown
        assert shown.startswith("delete from customers where email = '[masked]'")

    def test_normalise_statement(self) -> None:
        """
        Blanks and keyword case are normalised; literals and identifiers
        are kept; text with a backslash is kept exactly.
        """
        assert normalise_statement("delete  from\n customers WHERE id = 7 ;") == (
            "DELETE FROM customers WHERE id = 7"
        )
        assert normalise_statement("select 'a  b' from T") == "SELECT 'a  b' FROM T"
        assert normalise_statement('select "Id" from t') != normalise_statement(
            "select id from t"
        )
        assert normalise_statement("select 1 -- x  y") == "SELECT 1 -- x  y"
        assert normalise_statement("select E'a\\'  b'") == "select E'a\\'  b'"

    def test_normalise_command(self) -> None:
        """
        Blanks outside quotes collapse; inside quotes they stay.
        """
        assert normalise_command("ls   -l  '/tmp/a  b'") == "ls -l '/tmp/a  b'"

    def test_admin_base_url(self) -> None:
        """
        Links fall back to the admin listener's address.
        """
        assert admin_base_url("tcp:8091:interface=127.0.0.1") == "http://127.0.0.1:8091"
        assert admin_base_url("tcp:9000") == "http://127.0.0.1:9000"
        assert admin_base_url("tcp:9000", tls=True) == "https://127.0.0.1:9000"
        assert admin_base_url(r"tcp:9000:interface=\:\:1") == "http://[::1]:9000"


class TestHold:
    """
    Holding an event until it is decided.
    """

    def test_approved(self, fx: Fixture) -> None:
        """
        Approvers other than the requester are notified with a link each;
        one approval lets the event through, once.
        """
        held, outcome = fx.hold()

        [notice] = fx.notes.sent
        outcome_of_vote = fx.result(fx.vote(ALICE, reason="ticket 42"))

        assert isinstance(held, Hold)
        assert sorted(r.person.login for r in notice.recipients) == ["alice", "bob"]
        assert all(
            r.link.startswith("http://127.0.0.1:8091/approve/")
            for r in notice.recipients
        )
        assert notice.summary == "delete from customers where id = 7"
        assert outcome_of_vote.state == "approved" and outcome_of_vote.recorded
        assert len(outcome) == 1 and isinstance(outcome[0], Allow)
        assert fx.states() == ["requested", "approved"]
        final = fx.records[-1][0]
        assert isinstance(final, ApprovalRecorded)
        assert [(v.approver, v.decision, v.reason) for v in final.votes] == [
            (ALICE.dn, "approve", "ticket 42")
        ]

    def test_denied(self, fx: Fixture) -> None:
        """
        A denial refuses the event, naming the rule; later votes count
        for nothing.
        """
        _, outcome = fx.hold()

        fx.result(fx.vote(BOB, approve=False, reason="not today"))
        late = fx.failure(fx.vote(ALICE))

        [verdict] = outcome
        assert isinstance(verdict, Deny)
        assert (verdict.reason.code, verdict.reason.rule) == (
            "approval.denied",
            "deletes",
        )
        assert "not today" in verdict.reason.detail
        assert isinstance(late, ApprovalRefusedError) and "already denied" in str(late)

    def test_timeout(self, fx: Fixture) -> None:
        """
        Without a decision in time the event is refused; a late approval
        is refused too.
        """
        _, outcome = fx.hold(rule(timeout=60.0))

        fx.clock.advance(59)
        assert outcome == []
        fx.clock.advance(1)
        late = fx.failure(fx.vote(ALICE))

        [verdict] = outcome
        assert isinstance(verdict, Deny) and verdict.reason.code == "approval.timeout"
        assert isinstance(late, ApprovalRefusedError)

    def test_withdrawn(self, fx: Fixture) -> None:
        """
        Withdrawing a session's holds refuses them at once and ends the
        request for approvers.
        """
        _, outcome = fx.hold()

        found = fx.service.withdraw("s-1", "cancelled")
        again = fx.service.withdraw("s-1", "cancelled")
        late = fx.failure(fx.vote(ALICE))

        assert (found, again) == (True, False)
        [verdict] = outcome
        assert isinstance(verdict, Deny) and verdict.reason.code == "approval.withdrawn"
        assert "already withdrawn" in str(late)

    def test_quorum(self, fx: Fixture) -> None:
        """
        With a quorum of two, one approval waits and the second decides;
        the same approver cannot count twice.
        """
        _, outcome = fx.hold(rule(quorum=2))

        first = fx.result(fx.vote(ALICE))
        twice = fx.failure(fx.vote(ALICE))
        assert outcome == []
        second = fx.result(fx.vote(BOB))

        assert (first.state, first.approvals, first.quorum) == ("pending", 1, 2)
        assert "already" in str(twice)
        assert second.state == "approved"
        assert isinstance(outcome[0], Allow)

    def test_quorum_too_large(self, fx: Fixture) -> None:
        """
        A quorum larger than the approvers available is refused at once.
        """
        _, outcome = fx.hold(rule(quorum=3))

        [verdict] = outcome
        assert (
            isinstance(verdict, Deny) and verdict.reason.code == "approval.no_approver"
        )

    def test_self_approval(self, fx: Fixture) -> None:
        """
        A requester in the approver group is not notified and may not vote.
        """
        _, outcome = fx.hold(rule(approvers=(OPS,)))

        [notice] = fx.notes.sent
        refused = fx.failure(fx.vote(RUNNER))

        assert [r.person.login for r in notice.recipients] == ["carol"]
        assert "own request" in str(refused)
        assert outcome == []

    def test_non_member(self, fx: Fixture) -> None:
        """
        Someone outside the approver groups may not vote.
        """
        fx.hold()

        refused = fx.failure(fx.vote(CAROL))

        assert isinstance(refused, ApprovalRefusedError)
        assert "not (or no longer) an approver" in str(refused)

    def test_member_removed(self, fx: Fixture) -> None:
        """
        Membership is read again at decision time.
        """
        fx.hold()
        fx.directory.groups[DBA] = [ALICE]

        refused = fx.failure(fx.vote(BOB))

        assert "no longer" in str(refused)

    def test_directory_down(self, fx: Fixture) -> None:
        """
        With the directory down nothing is approvable: the hold is refused
        at once, and a vote on an open request cannot be checked.
        """
        fx.directory.down = True

        _, outcome = fx.hold()

        [verdict] = outcome
        assert (
            isinstance(verdict, Deny) and verdict.reason.code == "approval.unavailable"
        )
        assert "directory" in verdict.reason.detail
        self_check = Fixture()
        self_check.hold()
        self_check.directory.down = True
        assert isinstance(
            self_check.failure(self_check.vote(ALICE)), DirectoryUnavailableError
        )

    def test_store_down(self) -> None:
        """
        With the store down the hold is refused at once.
        """
        fx = Fixture(BrokenStore(Clock()))
        fx.store.broken = True  # type: ignore[attr-defined]

        _, outcome = fx.hold()

        [verdict] = outcome
        assert (
            isinstance(verdict, Deny) and verdict.reason.code == "approval.unavailable"
        )
        assert "unreachable" in verdict.reason.detail

    def test_store_lost_everything(self, fx: Fixture) -> None:
        """
        A store that lost the request (a restarted Redis) gets it back on
        resubscribe, and the request can still be decided.
        """
        _, outcome = fx.hold()
        fx.store._values.clear()

        fx.service._resubscribed()
        fx.result(fx.vote(ALICE))

        assert isinstance(outcome[0], Allow)

    def test_decided_elsewhere(self, fx: Fixture) -> None:
        """
        A decision written by another process is found by the poll even
        when no wake-up arrives.
        """
        _, outcome = fx.hold()
        request_id = fx.request_id()
        fx.store._subscribers.clear()
        fx.service.start()

        fx.store.put(
            f"approval:decision:{request_id}", '{"state": "approved", "at": 1.0}'
        )
        fx.clock.advance(2)
        fx.service.stop()

        assert isinstance(outcome[0], Allow)


class TestLinks:
    """
    Single-use links bound to their approver and request.
    """

    def test_link(self, fx: Fixture) -> None:
        """
        A link names its request and approver; it works once.
        """
        fx.hold()
        [notice] = fx.notes.sent
        link = next(r.link for r in notice.recipients if r.person.login == "alice")
        token = link.rsplit("/", 1)[1]

        request_id, approver = fx.service.check_link(token)
        first = fx.result(fx.vote(ALICE, link=token, approve=True))
        fx.clock.advance(1)
        second = Fixture()

        assert (request_id, approver) == (notice.request_id, ALICE.key)
        assert first.state == "approved"
        with pytest.raises(BadTokenError):
            second.service.check_link(token + "x")
        with pytest.raises(BadTokenError, match="not valid"):
            fx.service.check_link(token[:-2] + "AA")

    def test_replayed_link(self, fx: Fixture) -> None:
        """
        A link used for a vote cannot vote again, even on a quorum rule.
        """
        fx.hold(rule(quorum=2))
        token = fx.notes.sent[0].recipients[0].link.rsplit("/", 1)[1]
        who = fx.notes.sent[0].recipients[0].person

        fx.result(fx.vote(who, link=token))
        replay = fx.failure(fx.vote(who, link=token))

        assert "used already" in str(replay)

    def test_expiry(self, fx: Fixture) -> None:
        """
        A link expires with its request.
        """
        fx.hold(rule(timeout=60.0))
        token = fx.notes.sent[0].recipients[0].link.rsplit("/", 1)[1]

        fx.clock.advance(61)

        with pytest.raises(BadTokenError, match="expired"):
            fx.service.check_link(token)

    def test_sign_in_bound_to_link(self, fx: Fixture) -> None:
        """
        A sign-in proves an approver for one link only.
        """
        signed = fx.service.sign_in_token("link-a", ALICE.dn)

        assert fx.service.check_sign_in("link-a", signed) == ALICE.key
        with pytest.raises(BadTokenError, match="another link"):
            fx.service.check_sign_in("link-b", signed)


class TestGrant:
    """
    Grants: refused now, allowed once approved, within a window.
    """

    def grant_rule(self, **changes: Any) -> ApprovalRule:
        settings: dict[str, Any] = {"mode": "grant", "window": 3600.0, "uses": 1}
        return attrs.evolve(rule(), **(settings | changes))

    def use(
        self,
        fx: Fixture,
        event: Event | None = None,
        the_rule: ApprovalRule | None = None,
    ) -> Verdict:
        return fx.result(
            fx.service.use_grant(
                the_rule or self.grant_rule(), event or delete(), fx.context
            )
        )

    def test_grant_cycle(self, fx: Fixture) -> None:
        """
        First refused with a request id; asking again reuses the request;
        once approved, the same statement (normalised) runs once.
        """
        first = self.use(fx)
        first_id = fx.request_id()
        again = self.use(fx)
        fx.result(fx.vote(ALICE))
        used = self.use(fx, delete("DELETE  FROM customers where id = 7;"))
        exhausted = self.use(fx)

        assert isinstance(first, Deny) and first.reason.code == "approval.required"
        assert first_id in first.reason.message
        assert isinstance(again, Deny) and again.reason.message == first.reason.message
        assert [n.request_id for n in fx.notes.sent[:2]] == [first_id, fx.request_id()]
        assert isinstance(used, Allow)
        assert (
            isinstance(exhausted, Deny) and exhausted.reason.code == "approval.required"
        )
        assert "grant_used" in fx.states()

    def test_other_statement(self, fx: Fixture) -> None:
        """
        A grant covers its own statement only: another literal is another
        statement.
        """
        self.use(fx)
        fx.result(fx.vote(ALICE))

        other = self.use(fx, delete("delete from customers where id = 8"))

        assert isinstance(other, Deny) and other.reason.code == "approval.required"

    def test_window(self, fx: Fixture) -> None:
        """
        A grant lasts its window, then expires.
        """
        the_rule = self.grant_rule(uses=5, window=60.0)
        self.use(fx, the_rule=the_rule)
        fx.result(fx.vote(ALICE))

        inside = self.use(fx, the_rule=the_rule)
        fx.clock.advance(61)
        after = self.use(fx, the_rule=the_rule)

        assert isinstance(inside, Allow)
        assert isinstance(after, Deny) and after.reason.code == "approval.required"

    def test_denied_request_asks_again(self, fx: Fixture) -> None:
        """
        After a denial, sending the statement again makes a new request.
        """
        self.use(fx)
        first_id = fx.request_id()
        fx.result(fx.vote(ALICE, approve=False))

        self.use(fx)

        assert fx.request_id() != first_id


class TestSession:
    """
    Session access: refused without approved access, admitted with it.
    """

    def session_rule(self) -> ApprovalRule:
        return ApprovalRule(name="jit", mode="session", approvers=(DBA,), window=7200.0)

    def test_access(self, fx: Fixture) -> None:
        """
        Without access a session is refused with how to ask; once the
        request is approved it is admitted until the access ends.
        """
        the_rule = self.session_rule()
        expiries: list[tuple[str, float]] = []

        def check() -> Verdict:
            return fx.result(
                fx.service.check_access(
                    the_rule,
                    fx.identity,
                    "appdb",
                    fx.context,
                    lambda sid, until: expiries.append((sid, until)),
                )
            )

        before = check()
        request = fx.result(
            fx.service.open_request(
                the_rule, fx.identity, "appdb", reason="incident 7", duration=3600.0
            )
        )
        fx.result(fx.service.vote(request.id, ALICE.dn, True))
        admitted = check()
        fx.clock.advance(3601)
        expired = check()

        assert (
            isinstance(before, Deny)
            and "hoopgate approvals request appdb" in before.reason.message
        )
        assert isinstance(admitted, Allow)
        assert expiries == [("s-1", NOW + 3600.0)]
        assert isinstance(expired, Deny)
        assert "incident 7" in fx.notes.sent[0].reason

    def test_interceptor_on_sessions(self, fx: Fixture) -> None:
        """
        The interceptor judges session requests only with session rules,
        and statements only with hold or grant rules.
        """
        sessions = ApprovalInterceptor(
            fx.service, [self.session_rule()], lambda s, u: None
        )
        holds = ApprovalInterceptor(fx.service, [rule()], lambda s, u: None)

        assert sessions.event_types == (SessionRequested,)
        assert StatementReceived in holds.event_types
        assert SessionRequested not in holds.event_types


class TestChain:
    """
    The interceptor in the chain: holds resume the walk.
    """

    def test_hold_through_chain(self, fx: Fixture) -> None:
        """
        The chain returns a hold and resumes with the approval's verdict.
        """
        chain = Chain([ApprovalInterceptor(fx.service, [rule()], lambda s, u: None)])

        verdict = chain.decide(delete(), fx.context)
        passed = chain.decide(
            statement("select 1", StatementPart("select 1", "SELECT", "read")),
            fx.context,
        )
        final: list[Verdict] = []
        assert isinstance(verdict, Hold)
        verdict.decision.addCallback(final.append)
        fx.result(fx.vote(ALICE))

        assert isinstance(passed, Allow)
        assert len(final) == 1 and isinstance(final[0], Allow)

    def test_bound_parameters_refused(self, fx: Fixture) -> None:
        """
        An extended-protocol statement whose values are bound after it is
        judged is refused, not held: an approver would see placeholders
        and a grant would cover every value.  The same statement with
        literals, or sent as a simple query, is held.
        """
        interceptor = ApprovalInterceptor(fx.service, [rule()], lambda s, u: None)
        text = "delete from customers where id = $1"
        bound = attrs.evolve(delete(text), path="extended")

        refused = interceptor.decide(bound, fx.context)
        held = interceptor.decide(attrs.evolve(delete(), path="extended"), fx.context)

        assert isinstance(refused, Deny)
        assert (refused.reason.code, refused.reason.rule) == (
            "approval.parameters",
            "deletes",
        )
        assert "literals" in refused.reason.message
        assert isinstance(held, Hold)
