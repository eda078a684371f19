"""
Just-in-time approval: a risky statement, command or request, or a whole
session on a sensitive target, waits for people to decide.

Approval rules sit in the policy beside guardrails and target the same
way (subjects, groups, targets, and a C{when} block with the
guardrails' condition keys, every one of which must match for an event
to need approval).  Each rule
names its approvers (LDAP group DNs, or names mapped to them under
C{gateway.approvals.groups}), a quorum (that many approvals; any denial
rejects), a timeout, and a mode:

  - C{hold}: the event waits, unanswered, until decided; approved, it
    goes on exactly once; denied, timed out or withdrawn (the client
    cancelled or left), it is refused in the protocol's own form and the
    session goes on.
  - C{grant}: the event is refused at once with a request id; once
    approved, the same identity may send that same event (whitespace and
    keyword case normalised, literals kept) on that target within a
    window, C{uses} times.
  - C{session}: sessions on the target are refused unless the identity
    holds approved access, asked for with C{hoopgate approvals request
    TARGET --for 2h --reason ...}; live sessions end when it expires.

The chain runs guardrails first, so what a guardrail refuses is never
sent for approval: deny beats approval beats allow.

Shared state (L{IStore}) holds requests, votes, decisions, grants and
access, each with a time to live, so any gateway process may take the
decision and any other may hold the event.  Decisions are keys written
once (set-if-absent); votes are one key per approver (set-if-absent);
quorum counts and grant uses are atomic counters; links are signed,
bound to request and approver, expiring, and single use (set-if-absent).
A published message only wakes the holder, which reads the decision
again on every wake-up, on every resubscribe and on a periodic poll, and
writes its request back if the store lost it.  When the directory or the
store cannot be reached, nothing is approved: holds and grants are
refused with a clear message and a log line.

test-case-name: tests.unit.test_approvals
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

import attrs
from attrs import field, frozen
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hoopgate._chain import Context
from hoopgate._configreader import ConfigError, ConfigReader
from hoopgate._events import (
    CommandReceived,
    Event,
    HttpRequestReceived,
    SessionRequested,
    StatementReceived,
)
from hoopgate._guardrails import (
    EFFECTS,
    CommandConditions,
    Conditions,
    HttpConditions,
    StatementConditions,
    _read_conditions,
    read_groups,
    request_path,
    statement_parts,
)
from hoopgate._identity import Identity
from hoopgate._interfaces import IInterceptor, INotifier, IStore
from hoopgate._ldap import (
    Directory,
    DirectorySettings,
    DirectoryUnavailableError,
    Person,
    looks_like_dn,
    normalise_dn,
    read_directory_settings,
)
from hoopgate._masking import DETECTORS, REDACT, mask_text
from hoopgate._notify import (
    Notification,
    NotifierSettings,
    Recipient,
    make_notifiers,
    read_notifier,
)
from hoopgate._scope import check_scope_targets, in_scope
from hoopgate._secrets import Secret
from hoopgate._store import StoreUnavailableError
from hoopgate._verdicts import ALLOW, Allow, Deny, DenyReason, Hold, Note, Verdict

MODES: Final = ("hold", "grant", "session")

#: Seconds decisions and votes outlive their request, for late readers.
GRACE: Final = 300.0

#: The channel that wakes holders; messages are request ids.
WAKE: Final = "approval:wake"

#: The longest reason an approver or requester may give.
MAX_REASON: Final = 500

#: The longest statement text kept in a request.
MAX_TEXT: Final = 16_384

_log = Logger(namespace="hoopgate._approvals")


# -- text: masking, normalising, fingerprints --------------------------------

_QUOTED: Final = re.compile(r"'(?:[^']|'')*'")


def masked(text: str) -> str:
    """
    What notifications show of a request: quoted literals replaced and
    whatever the default detectors find (mail addresses, card numbers,
    IBANs, tokens, keys) masked.
    """
    plain = _QUOTED.sub("'[masked]'", text)
    result, _ = mask_text(plain, DETECTORS.values(), REDACT)
    if len(result) > 2000:
        result = result[:2000] + " [...]"
    return result


_KEYWORDS: Final = frozenset(
    """
    all alter and any as asc begin between by call case cast check column commit
    constraint create cross current_date current_time current_timestamp default
    delete desc distinct do drop else end except exists false fetch for foreign
    from full grant group having ilike in index inner insert intersect into is
    join key left like limit lock not null nulls offset on only or order outer
    primary references returning revoke right rollback row rows select set some
    table then to true truncate union unique update using values view when where
    with
    """.split()  # noqa: SIM905 - a word list reads better as text
)

_SQL_TOKENS: Final = re.compile(
    r"""
    (?P<string>'(?:[^']|'')*(?:'|\Z))
    |(?P<ident>"(?:[^"]|"")*(?:"|\Z))
    |(?P<dollar>\$\$.*?(?:\$\$|\Z)|\$(?P<tag>[A-Za-z_]\w*)\$.*?(?:\$(?P=tag)\$|\Z))
    |(?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    |(?P<space>\s+)
    |(?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    |(?P<other>.)
    """,
    re.S | re.X,
)


def normalise_statement(text: str) -> str:
    """
    A statement as grants compare it: runs of blanks outside quotes made
    one space, SQL keywords in upper case, trailing semicolons dropped;
    literals, identifiers and parameters kept as they are.  Text holding
    a backslash is kept exactly (escapes make quoting ambiguous across
    dialects, and two texts must never be taken for one).
    """
    if "\\" in text:
        return text
    pieces = []
    for match in _SQL_TOKENS.finditer(text):
        kind = match.lastgroup
        token = match.group()
        if kind == "space":
            pieces.append(" ")
        elif kind == "word" and token.lower() in _KEYWORDS:
            pieces.append(token.upper())
        else:
            pieces.append(token)
    return "".join(pieces).strip().rstrip(";").strip()


_SHELL_TOKENS: Final = re.compile(
    r"""'[^']*(?:'|\Z)|"(?:[^"\\]|\\.)*(?:"|\Z)|\s+|[^\s'"]+"""
)


def normalise_command(line: str) -> str:
    """
    A command line as grants compare it: runs of blanks outside quotes
    made one space.
    """
    if "\\" in line:
        return line
    pieces = [
        " " if token.isspace() else token for token in _SHELL_TOKENS.findall(line)
    ]
    return "".join(pieces).strip()


def event_text(event: Event) -> str:
    """
    What an event asks for, as approvers read it.
    """
    if isinstance(event, StatementReceived):
        return event.text
    if isinstance(event, CommandReceived):
        return event.command or "(interactive shell)"
    if isinstance(event, HttpRequestReceived):
        query = f"?{event.query}" if event.query else ""
        return f"{event.method.upper()} {event.path}{query}"
    return ""


def fingerprint(event: Event) -> str:
    """
    What makes two events the same for a grant: the kind, the path for
    statements, and the normalised text.
    """
    if isinstance(event, StatementReceived):
        # FIXME(#5): an extended-protocol statement is judged on its Parse
        # text; parameters bound later (StatementBound) are neither shown
        # to approvers nor part of a grant, so statements with parameter
        # placeholders are refused (ApprovalInterceptor) rather than
        # approved blind.
        kind, text = f"statement:{event.path}", normalise_statement(event.text)
    elif isinstance(event, CommandReceived):
        kind, text = "command", normalise_command(event.command)
    else:
        kind, text = "http", event_text(event)
    return hashlib.sha256(f"{kind}\0{text}".encode()).hexdigest()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]


def _event_id(event: Event) -> str:
    for key in ("statement_id", "command_id", "request_id"):
        value = getattr(event, key, None)
        if isinstance(value, str):
            return value
    return ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


# -- rules -------------------------------------------------------------------


@frozen
class ApprovalRule:
    """
    One approval rule.

    Attributes:
        name: Shown when it decides; unique across the policy.
        mode: C{hold}, C{grant} or C{session}.
        subjects: Subjects it applies to; C{*} for all.
        groups: Groups it applies to; with neither, every identity.
        targets: Target names, or C{*}.
        when: Conditions that must all match for an event to need
            approval (none for C{session} rules, about whole targets).
        approvers: Approver groups: DNs, or names mapped to DNs.
        quorum: Approvals needed; any denial rejects.
        timeout: Seconds a request waits for its decision.
        window: C{grant}: seconds an approved grant lasts; C{session}:
            the longest access that may be asked for.
        uses: C{grant}: how many times an approved grant may be used.
        where: Where the rule is written, for errors found later.
    """

    name: str
    mode: str
    approvers: tuple[str, ...]
    subjects: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    targets: tuple[str, ...] = ("*",)
    when: Conditions | None = None
    quorum: int = 1
    timeout: float = 600.0
    window: float = 3600.0
    uses: int = 1
    where: str = field(default="", eq=False)

    def applies(self, identity: Identity | None, target: str) -> bool:
        """
        Whether the rule is about C{identity} on C{target}; without a
        known identity, every rule for the target applies (fail closed).
        """
        return in_scope(self, identity, target)

    def matches(self, event: Event) -> list[str]:
        """
        Why C{event} needs this rule's approval (empty: it does not).

        Only the C{when} keys of the event's kind count, and the event
        must match every one of them (a key matches when any of its
        entries does): C{{commands: [DELETE], writes: [customers]}} is a
        DELETE on customers.  A statement part that could not be
        classified or whose effect is C{unknown}, a command line with a
        NUL or an ambiguous HTTP path matches any rule with keys for its
        kind: uncertainty asks for approval.
        """
        when = self.when
        if when is None:
            return []
        if isinstance(event, StatementReceived):
            return self._statement(when, event)
        if isinstance(event, CommandReceived):
            if not when.command.present:
                return []
            if "\x00" in event.command:
                return ["the command line holds a NUL character"]
            return _every(
                [
                    attrs.evolve(CommandConditions(), **{k: v})
                    for k, v in _given(when.command)
                ],
                lambda c: c.hits(event.command),
            )
        if isinstance(event, HttpRequestReceived):
            if not when.http.present:
                return []
            path, problem = request_path(event.path)
            if problem:
                return [f"ambiguous path ({problem})"]
            method = event.method.upper()
            return _every(
                [
                    attrs.evolve(HttpConditions(), **{k: v})
                    for k, v in _given(when.http)
                ],
                lambda c: c.hits(method, path),
            )
        return []

    def _statement(self, when: Conditions, event: StatementReceived) -> list[str]:
        if not when.statement.present:
            return []
        keys = [
            attrs.evolve(StatementConditions(), **{k: v})
            for k, v in _given(when.statement)
        ]
        found = []
        for number, part in enumerate(statement_parts(event), 1):
            if part.problem or part.effect not in EFFECTS:
                found.append(f"part {number} could not be classified")
                continue
            if part.effect == "unknown":
                # Dynamic SQL, unknown functions: what it changes cannot
                # be told, so it may be what the rule is about.
                found.append(f"part {number} has effect unknown")
                continue
            hits = _every(keys, lambda c, p=part: c.hits(p))  # type: ignore[misc]
            if hits:
                found.append(f"part {number} {part.command}: {', '.join(hits)}")
        return found


def _given(conditions: Any) -> list[tuple[str, Any]]:
    return [
        (a.name, getattr(conditions, a.name))
        for a in attrs.fields(type(conditions))
        if getattr(conditions, a.name) is not None
    ]


def _every(keys: Sequence[Any], hits: Callable[[Any], list[str]]) -> list[str]:
    """
    Every key's hits, or none unless every key has some.
    """
    found: list[str] = []
    for key in keys:
        hit = hits(key)
        if not hit:
            return []
        found.extend(hit)
    return found


def read_approval_rule(reader: ConfigReader) -> ApprovalRule:
    """
    Validate one entry of C{policy.approvals}.

    Raises:
        ConfigError: Naming the key and line of the mistake.
    """
    mode = reader.choice("mode", MODES, "hold")
    groups = read_groups(reader)
    when = _read_conditions(reader, "when")
    if mode == "session" and when is not None:
        raise reader.error("when", "a session rule is about whole targets: no when")
    if mode != "session" and when is None:
        raise reader.error("when", f"a {mode} rule needs conditions under when")
    approvers = reader.strings("approvers")
    if not approvers:
        raise reader.error("approvers", "at least one approver group is required")

    rule = ApprovalRule(
        name=reader.string("name"),
        mode=mode,
        subjects=reader.strings("subjects", ()),
        groups=groups,
        targets=reader.strings("targets", ("*",)),
        when=when,
        approvers=approvers,
        quorum=reader.integer("quorum", 1, low=1, high=20),
        timeout=reader.duration("timeout", 600.0),
        window=reader.duration("window", 28800.0 if mode == "session" else 3600.0),
        uses=reader.integer("uses", 1, low=1, high=10_000),
        where=f"{reader.path} (line {reader.line})",
    )
    if mode == "hold" and (reader.has("window") or reader.has("uses")):
        raise reader.error("window", "window and uses are for grant and session rules")
    if mode == "session" and reader.has("uses"):
        raise reader.error("uses", "uses is for grant rules")
    reader.done()
    return rule


# -- settings ----------------------------------------------------------------


@frozen
class ApprovalSettings:
    """
    The machinery of approvals: directory, notifiers, links.

    Attributes:
        directory: Where approvers are found.
        groups: Approver group names mapped to DNs.
        notify: How approvers are told.
        public_url: The admin listener's address as approvers reach it,
            for links (C{http://127.0.0.1:8091} derived from the admin
            listener when not given).
        link_secret: Signs links and sign-ins; every gateway sharing a
            store must have the same.  Random per process when not given
            (only with the in-memory store).
        link_ttl: Longest life of a link (never beyond its request).
        sign_in_ttl: How long a sign-in on a link's page lasts.
        poll_interval: Seconds between the holder's own reads.
    """

    directory: DirectorySettings
    groups: Mapping[str, str] = field(factory=dict)
    notify: tuple[NotifierSettings, ...] = ()
    public_url: str | None = None
    link_secret: Secret | None = None
    link_ttl: float = 3600.0
    sign_in_ttl: float = 600.0
    poll_interval: float = 2.0


def read_approval_settings(reader: ConfigReader) -> ApprovalSettings:
    """
    Validate C{gateway.approvals}.

    Raises:
        ConfigError: Naming the key and line of the mistake.
    """
    mapping = reader.raw("groups", {})
    if not isinstance(mapping, dict):
        raise reader.error("groups", "must map group names to DNs")
    groups = {}
    for name, dn in mapping.items():
        if not isinstance(dn, str) or not looks_like_dn(dn):
            raise reader.error("groups", f"{name}: {dn!r} is not a DN")
        groups[str(name)] = dn
    public_url = reader.raw("public_url", None)
    if public_url is not None:
        parts = urlsplit(str(public_url))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise reader.error("public_url", "must be an http:// or https:// URL")

    settings = ApprovalSettings(
        directory=read_directory_settings(reader.section("directory", required=True)),
        groups=groups,
        notify=tuple(read_notifier(r) for r in reader.sections("notify")),
        public_url=str(public_url).rstrip("/") if public_url else None,
        link_secret=reader.secret("link_secret") if reader.has("link_secret") else None,
        link_ttl=reader.duration("link_ttl", 3600.0),
        sign_in_ttl=reader.duration("sign_in_ttl", 600.0),
        poll_interval=reader.duration("poll_interval", 2.0),
    )
    if settings.link_secret is not None and len(settings.link_secret.reveal()) < 16:
        raise reader.error("link_secret", "must be at least 16 characters")
    reader.done()
    return settings


def approver_groups(rule: ApprovalRule, settings: ApprovalSettings) -> tuple[str, ...]:
    """
    The group DNs of a rule's approvers.

    Raises:
        KeyError: A name is neither a DN nor mapped.
    """
    return tuple(
        settings.groups[name] if name in settings.groups else _as_dn(name)
        for name in rule.approvers
    )


def _as_dn(name: str) -> str:
    if looks_like_dn(name):
        return name
    raise KeyError(name)


def check_approvals(
    rules: Iterable[ApprovalRule],
    targets: Collection[str],
    settings: ApprovalSettings | None,
    store: str,
) -> None:
    """
    Refuse approval rules the configuration cannot carry out.

    Raises:
        ConfigError: Naming the rule and what is missing.
    """
    rules = tuple(rules)
    if rules and settings is None:
        first = rules[0]
        raise ConfigError(
            f"{first.where}: approval rule {first.name!r} needs "
            "gateway.approvals (a directory of approvers)"
        )
    check_scope_targets(rules, targets, "approval rule")
    for rule in rules:
        assert settings is not None
        for name in rule.approvers:
            if name not in settings.groups and not looks_like_dn(name):
                raise ConfigError(
                    f"{rule.where}: approval rule {rule.name!r}: approvers "
                    f"{name!r} is neither a DN nor a name under "
                    "gateway.approvals.groups"
                )
    if settings is not None and store == "redis" and settings.link_secret is None:
        raise ConfigError(
            "gateway.approvals.link_secret: is required with store kind redis "
            "(every gateway must verify the links the others sent)"
        )


# -- signed links and sign-ins -----------------------------------------------


class BadTokenError(Exception):
    """
    A link or sign-in token is not valid; the message says why.
    """


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """
    Signs and checks the tokens in links and sign-in forms.

    Args:
        secret: The key (shared by every gateway of a store).
    """

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"hoopgate approval tokens\0" + secret).digest()

    def sign(self, kind: str, fields: Mapping[str, str], expires: float) -> str:
        """
        A token of C{kind} carrying C{fields}, valid until C{expires}.
        """
        body = json.dumps(
            {"k": kind, "e": int(expires), **fields}, separators=(",", ":")
        ).encode()
        mac = hmac.new(self._key, body, hashlib.sha256).digest()
        return f"{_b64(body)}.{_b64(mac)}"

    def verify(self, kind: str, token: str, now: float) -> dict[str, str]:
        """
        The fields of a valid token.

        Raises:
            BadTokenError: Altered, of another kind, or expired.
        """
        try:
            body_text, mac_text = token.split(".")
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (ValueError, binascii.Error):
            raise BadTokenError("the link is not valid") from None
        expected = hmac.new(self._key, body, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise BadTokenError("the link is not valid")
        fields = json.loads(body)
        if fields.get("k") != kind:
            raise BadTokenError("the link is not valid")
        if float(fields.get("e", 0)) <= now:
            raise BadTokenError("the link has expired")
        return {k: str(v) for k, v in fields.items() if k not in ("k", "e")}


def token_id(token: str) -> str:
    """
    A short digest of a token, for keys and logs (never the token).
    """
    return hashlib.sha256(token.encode()).hexdigest()[:32]


# -- records -----------------------------------------------------------------


@frozen
class Vote:
    """
    One approver's answer.

    Attributes:
        approver: Their DN.
        decision: C{approve} or C{deny}.
        reason: What they wrote (may be empty).
        at: POSIX time.
    """

    approver: str
    decision: str
    reason: str = ""
    at: float = 0.0


@frozen
class ApprovalRequest:
    """
    A request for approval, as the store keeps it.

    Attributes:
        id: The request id.
        rule: The rule that asked for it.
        mode: C{hold}, C{grant} or C{session}.
        target: The target.
        protocol: The protocol (C{""} for access requests).
        session_id: The session it came from (C{""} for access).
        event_id: The statement, command or request id.
        subject: The requester's subject.
        issuer: The requester's issuer.
        requester_dn: The requester's directory entry, if it has one.
        text: What is asked for, in full (approvers see it signed in).
        summary: The same, masked (notifications, listings).
        reason: The requester's reason (access requests).
        duration: Seconds of access asked for (access requests).
        groups: The approver group DNs.
        approvers: The approvers' DNs at request time.
        quorum: Approvals needed.
        created: POSIX time.
        expires: POSIX time it times out.
        window: Grant window in seconds (grant).
        uses: Grant uses (grant).
        fingerprint: What a grant matches (grant).
    """

    id: str
    rule: str
    mode: str
    target: str
    protocol: str
    session_id: str
    event_id: str
    subject: str
    issuer: str
    requester_dn: str
    text: str
    summary: str
    reason: str
    duration: float
    groups: tuple[str, ...]
    approvers: tuple[str, ...]
    quorum: int
    created: float
    expires: float
    window: float = 0.0
    uses: int = 0
    fingerprint: str = ""

    def dump(self) -> str:
        """
        The request as JSON text.
        """
        return json.dumps(attrs.asdict(self), separators=(",", ":"))

    @classmethod
    def load(cls, text: str) -> ApprovalRequest:
        """
        A request from its JSON text.
        """
        data = json.loads(text)
        data["groups"] = tuple(data["groups"])
        data["approvers"] = tuple(data["approvers"])
        return cls(**data)

    def public(self) -> dict[str, Any]:
        """
        What listings show: everything but the full text.
        """
        data = attrs.asdict(self)
        del data["text"]
        return data


@frozen
class Decision:
    """
    How a request ended.

    Attributes:
        state: C{approved}, C{denied}, C{timeout} or C{withdrawn}.
        at: POSIX time.
        by: The deciding approver's DN (approved, denied).
        reason: Their reason, or why it ended otherwise.
        votes: Every vote cast.
        quorum: Approvals that were needed.
    """

    state: str
    at: float
    by: str = ""
    reason: str = ""
    votes: tuple[Vote, ...] = ()
    quorum: int = 1

    @property
    def approvals(self) -> int:
        """
        How many approved.
        """
        return sum(1 for v in self.votes if v.decision == "approve")

    def dump(self) -> str:
        """
        The decision as JSON text.
        """
        return json.dumps(attrs.asdict(self), separators=(",", ":"))

    @classmethod
    def load(cls, text: str) -> Decision:
        """
        A decision from its JSON text.
        """
        data = json.loads(text)
        data["votes"] = tuple(Vote(**v) for v in data.get("votes", ()))
        return cls(**data)


@frozen(kw_only=True)
class ApprovalRecorded(Event):
    """
    An approval request, decision or use, for the session's recording.

    Attributes:
        request_id: The request.
        rule: Its rule.
        mode: Its mode.
        state: C{requested}, C{approved}, C{denied}, C{timeout},
            C{withdrawn}, C{unavailable}, C{grant_used} or
            C{access_granted}.
        target: The target.
        event_id: The statement, command or request it is about.
        approvers: The approvers' DNs at request time.
        quorum: Approvals needed.
        votes: The votes (approver DN, decision, reason, time).
        detail: Why, in words.
    """

    name: ClassVar[str] = "approval"

    request_id: str
    rule: str
    mode: str
    state: str
    target: str
    event_id: str = ""
    approvers: tuple[str, ...] = ()
    quorum: int = 1
    votes: tuple[Vote, ...] = ()
    detail: str = ""


@frozen
class VoteOutcome:
    """
    What became of a vote.

    Attributes:
        recorded: Whether the vote counted.
        state: The request's state after it: C{pending} or a decision.
        message: For the approver.
        approvals: Approvals so far.
        quorum: Approvals needed.
    """

    recorded: bool
    state: str
    message: str
    approvals: int = 0
    quorum: int = 1


class ApprovalRefusedError(Exception):
    """
    A vote or a request was refused; the message is safe for the caller.

    Attributes:
        status: The HTTP status the admin listener answers with.
    """

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


# -- the service -------------------------------------------------------------


def _keys(request_id: str) -> dict[str, str]:
    return {
        "request": f"approval:request:{request_id}",
        "decision": f"approval:decision:{request_id}",
        "votes": f"approval:vote:{request_id}:",
        "yes": f"approval:yes:{request_id}",
    }


def _grant_key(target: str, subject: str, print_: str) -> str:
    return f"approval:grant:{_digest(target, subject, print_)}"


def _pending_grant_key(target: str, subject: str, print_: str) -> str:
    return f"approval:grant-pending:{_digest(target, subject, print_)}"


def _access_key(target: str, subject: str) -> str:
    return f"approval:access:{_digest(target, subject)}"


_PLACEHOLDER = re.compile(r"\$[0-9]+")


def _binds_later(event: Event) -> bool:
    """
    Whether a statement's values come after it is judged (an extended
    protocol Parse with C{$1}-style placeholders): an approver would see
    neither them nor what a grant allows.
    """
    return (
        isinstance(event, StatementReceived)
        and event.path == "extended"
        and _PLACEHOLDER.search(event.text) is not None
    )


def _deny(code: str, message: str, detail: str, rule: str) -> Deny:
    return Deny(DenyReason(f"approval.{code}", message, detail, rule))


class _Waiter:
    """
    A held event waiting for its decision in this process.
    """

    def __init__(
        self, request_id: str, rule: ApprovalRule, event: Event, context: Context
    ) -> None:
        self.request_id = request_id
        self.rule = rule
        self.event = event
        self.context = context
        self.result: Deferred[Verdict] = Deferred()
        self.request: ApprovalRequest | None = None
        self.timer: IDelayedCall | None = None
        self.withdrawn = ""

    @property
    def done(self) -> bool:
        return self.result.called


Record = Callable[[Event, Verdict, Context], None]


class ApprovalService:
    """
    Requests, votes and decisions, in any gateway process.

    Args:
        reactor: Schedules timeouts and polls.
        store: The shared state.
        settings: The directory, notifiers and links.
        record: Writes approval lines into a session's recording.
        admin_url: The admin listener's own URL, for links when no
            C{public_url} is configured.
        directory: The directory (one from the settings by default).
        notifiers: The notifiers (from the settings by default).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        store: IStore,
        settings: ApprovalSettings,
        record: Record,
        *,
        admin_url: str = "http://127.0.0.1:8091",
        directory: Directory | None = None,
        notifiers: Sequence[INotifier] | None = None,
    ) -> None:
        self._reactor = reactor
        self._store = store
        self.settings = settings
        self._record = record
        self.base_url = settings.public_url or admin_url
        self.directory = directory or Directory(reactor, settings.directory)
        if notifiers is None:
            notifiers = make_notifiers(reactor, settings.notify)
        self._notifiers = tuple(notifiers)
        secret = settings.link_secret
        self.signer = Signer(
            secret.reveal().encode() if secret else secrets.token_bytes(32)
        )
        self._waiters: dict[str, _Waiter] = {}
        self._poller = LoopingCall(self._poll)
        self._poller.clock = reactor
        store.subscribe(WAKE, self._woken)
        store.on_resubscribe(self._resubscribed)

    # -- life cycle ------------------------------------------------------

    def start(self) -> None:
        """
        Start the directory's threads and the holders' poll.
        """
        self.directory.start()
        self._poller.start(self.settings.poll_interval, now=False)

    def stop(self) -> None:
        """
        Stop polling and the directory's threads; refuse what is held.
        """
        if self._poller.running:
            self._poller.stop()
        for waiter in list(self._waiters.values()):
            self._finish_local(waiter, "withdrawn", "the gateway is stopping")
        self.directory.stop()

    def _now(self) -> float:
        return float(self._reactor.seconds())

    # -- opening a request -----------------------------------------------

    def _requester(self, identity: Identity) -> Deferred[Person | None]:
        claim = self.settings.directory.identity_claim
        value = identity.subject if claim in ("sub", "subject") else None
        if value is None:
            value = dict(identity.claims).get(claim)
        if not value:
            self._log.warn(
                "Identity {subject} has no claim {claim}; its directory entry "
                "is unknown",
                subject=identity.subject,
                claim=claim,
            )
            return succeed(None)
        return self.directory.find(value)

    def _approvers(
        self, groups: tuple[str, ...], requester: Person | None
    ) -> Deferred[tuple[Person, ...]]:
        def chosen(members: dict[str, Person]) -> tuple[Person, ...]:
            mine = requester.key if requester else None
            return tuple(p for key, p in sorted(members.items()) if key != mine)

        return self.directory.members(groups).addCallback(chosen)

    def open_request(
        self,
        rule: ApprovalRule,
        identity: Identity,
        target: str,
        *,
        request_id: str | None = None,
        event: Event | None = None,
        reason: str = "",
        duration: float = 0.0,
    ) -> Deferred[ApprovalRequest]:
        """
        Ask a rule's approvers: find them, store the request, notify them.

        Raises (in the Deferred):
            ApprovalRefusedError: No approver is left (or too few for
                the quorum) once the requester is left out.
            DirectoryUnavailableError: The directory cannot answer.
            StoreUnavailableError: The store cannot be written.
        """
        request_id = request_id or new_request_id()
        groups = approver_groups(rule, self.settings)
        text = _clip(event_text(event), MAX_TEXT) if event else f"access to {target}"
        if event is None:
            text += f" for {duration:g} s: {reason}"
        found: dict[str, Any] = {}

        def people(requester: Person | None) -> Deferred[tuple[Person, ...]]:
            found["requester"] = requester
            return self._approvers(groups, requester)

        def store(approvers: tuple[Person, ...]) -> Deferred[ApprovalRequest]:
            if len(approvers) < rule.quorum:
                raise ApprovalRefusedError(
                    f"rule {rule.name} needs {rule.quorum} approvers but "
                    f"{len(approvers)} are available",
                    status=409,
                )
            now = self._now()
            requester = found["requester"]
            request = ApprovalRequest(
                id=request_id,
                rule=rule.name,
                mode=rule.mode,
                target=target,
                protocol=event.protocol if event else "",
                session_id=event.session_id if event else "",
                event_id=_event_id(event) if event else "",
                subject=identity.subject,
                issuer=identity.issuer,
                requester_dn=requester.dn if requester else "",
                text=text,
                summary=masked(text),
                reason=_clip(reason, MAX_REASON),
                duration=duration,
                groups=groups,
                approvers=tuple(p.dn for p in approvers),
                quorum=rule.quorum,
                created=now,
                expires=now + rule.timeout,
                window=rule.window if rule.mode == "grant" else 0.0,
                uses=rule.uses if rule.mode == "grant" else 0,
                fingerprint=fingerprint(event)
                if event and rule.mode == "grant"
                else "",
            )
            ttl = rule.timeout + GRACE
            key = _keys(request_id)["request"]
            writing = self._store.put(key, request.dump(), ttl=ttl)
            return writing.addCallback(lambda _: self._notify(request, approvers))

        opening = self._requester(identity).addCallback(people)
        return opening.addCallback(store)

    def _notify(
        self, request: ApprovalRequest, approvers: tuple[Person, ...]
    ) -> ApprovalRequest:
        recipients = tuple(
            Recipient(person, self.link(request, person.dn)) for person in approvers
        )
        notification = Notification(
            request_id=request.id,
            rule=request.rule,
            mode=request.mode,
            target=request.target,
            protocol=request.protocol,
            requester=request.subject,
            summary=request.summary,
            reason=masked(request.reason) if request.reason else "",
            quorum=request.quorum,
            expires=request.expires,
            recipients=recipients,
        )
        for notifier in self._notifiers:
            try:
                sending = notifier.notify(notification)
            except Exception:
                self._log.failure("Notifier {name} failed", name=notifier.name)
                continue
            sending.addErrback(self._notify_failed, notifier.name)
        return request

    def _notify_failed(self, failure: Failure, name: str) -> None:
        self._log.warn(
            "Notifier {name} did not deliver: {error}",
            name=name,
            error=failure.getErrorMessage(),
        )

    def link(self, request: ApprovalRequest, approver_dn: str) -> str:
        """
        The single-use link of one approver for one request.
        """
        expires = min(request.expires, self._now() + self.settings.link_ttl)
        token = self.signer.sign(
            "link", {"r": request.id, "a": normalise_dn(approver_dn)}, expires
        )
        return f"{self.base_url}/approve/{token}"

    # -- holding ---------------------------------------------------------

    def hold(self, rule: ApprovalRule, event: Event, context: Context) -> Hold:
        """
        Hold C{event} until its request is decided.
        """
        # A hold inside an open transaction is also bounded by the
        # protocol plugin, which knows whether one is open (PostgreSQL:
        # the target's hold_in_transaction), through the same withdrawal
        # a cancel makes.
        request_id = new_request_id()
        waiter = _Waiter(request_id, rule, event, context)
        self._waiters[request_id] = waiter
        identity = context.identity
        if identity is None:
            self._finish_local(waiter, "unavailable", "no identity is known")
            return Hold(waiter.result, reason="approval without identity")

        opening = self.open_request(
            rule, identity, context.target, request_id=request_id, event=event
        )
        opening.addCallbacks(
            lambda request: self._opened(waiter, request),
            lambda failure: self._open_failed(waiter, failure),
        )
        return Hold(
            waiter.result,
            reason=f"waiting for approval {request_id} (rule {rule.name})",
        )

    def _opened(self, waiter: _Waiter, request: ApprovalRequest) -> None:
        waiter.request = request
        self._record_request(request, waiter.context)
        if waiter.done:
            # Withdrawn while the request was being made: tell approvers.
            ended = Decision("withdrawn", self._now(), reason=waiter.withdrawn)
            self._decide(request, ended).addErrback(lambda f: None)
            return
        delay = max(0.0, request.expires - self._now())
        waiter.timer = self._reactor.callLater(delay, self._timed_out, waiter)
        self._check(waiter)

    def _open_failed(self, waiter: _Waiter, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, ApprovalRefusedError):
            self._finish_local(waiter, "no_approver", str(error))
            return
        if not isinstance(error, DirectoryUnavailableError | StoreUnavailableError):
            self._log.failure("Opening an approval request failed", failure)
        self._log.error(
            "Approval request {request_id} (rule {rule}) cannot be made: {error}; "
            "refusing",
            request_id=waiter.request_id,
            rule=waiter.rule.name,
            error=str(error),
        )
        self._finish_local(waiter, "unavailable", str(error))

    def _record_request(self, request: ApprovalRequest, context: Context) -> None:
        self._record(
            ApprovalRecorded(
                session_id=context.session_id,
                protocol=context.protocol,
                request_id=request.id,
                rule=request.rule,
                mode=request.mode,
                state="requested",
                target=request.target,
                event_id=request.event_id,
                approvers=request.approvers,
                quorum=request.quorum,
                detail=f"approvers notified; open until {request.expires:.0f}",
            ),
            ALLOW,
            context,
        )

    def _timed_out(self, waiter: _Waiter) -> None:
        waiter.timer = None
        request = waiter.request
        if waiter.done or request is None:
            return
        ended = Decision("timeout", self._now(), reason="no decision in time")
        deciding = self._decide(request, ended)

        def unreachable(failure: Failure) -> None:
            self._finish_local(waiter, "timeout", "no decision in time")

        deciding.addCallbacks(
            lambda decision: self._finish(waiter, decision), unreachable
        )

    def _check(self, waiter: _Waiter) -> None:
        if waiter.done or waiter.request is None:
            return
        reading = self._store.get(_keys(waiter.request_id)["decision"])

        def read(text: str | None) -> None:
            if text is not None and not waiter.done:
                self._finish(waiter, Decision.load(text))

        def unreachable(failure: Failure) -> None:
            # Keep waiting: the next wake-up, poll or resubscribe reads
            # again, and the timeout ends the wait in any case.
            failure.trap(StoreUnavailableError)

        reading.addCallbacks(read, unreachable)

    def _woken(self, message: str) -> None:
        waiter = self._waiters.get(message)
        if waiter is not None:
            self._check(waiter)

    def _poll(self) -> None:
        for waiter in list(self._waiters.values()):
            self._check(waiter)

    def _resubscribed(self) -> None:
        # The store may have lost everything (a restarted Redis): put our
        # requests back, then read their decisions again.
        for waiter in list(self._waiters.values()):
            request = waiter.request
            if request is None or waiter.done:
                continue
            ttl = max(1.0, request.expires - self._now() + GRACE)
            key = _keys(request.id)["request"]
            restoring = self._store.put_if_absent(key, request.dump(), ttl=ttl)
            restoring.addCallbacks(
                lambda _, w=waiter: self._check(w),
                lambda f: f.trap(StoreUnavailableError),
            )

    def withdraw(self, session_id: str, why: str) -> bool:
        """
        Withdraw every request held for a session (the client cancelled
        or left): the held events are refused at once.

        Returns:
            Whether anything was held.
        """
        found = False
        for waiter in list(self._waiters.values()):
            if waiter.context.session_id != session_id or waiter.done:
                continue
            found = True
            waiter.withdrawn = why
            self._finish_local(waiter, "withdrawn", why)
            if waiter.request is not None:
                ended = Decision("withdrawn", self._now(), reason=why)
                self._decide(waiter.request, ended).addErrback(lambda f: None)
        return found

    def _finish_local(self, waiter: _Waiter, state: str, detail: str) -> None:
        self._finish(waiter, Decision(state, self._now(), reason=detail))

    def _finish(self, waiter: _Waiter, decision: Decision) -> None:
        if waiter.done:
            return
        self._waiters.pop(waiter.request_id, None)
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        verdict = self._verdict(waiter, decision)
        self._log.info(
            "Approval request {request_id} (rule {rule}) of session {session_id}: "
            "{state}",
            request_id=waiter.request_id,
            rule=waiter.rule.name,
            session_id=waiter.context.session_id,
            state=decision.state,
        )
        request = waiter.request
        self._record(
            ApprovalRecorded(
                session_id=waiter.context.session_id,
                protocol=waiter.context.protocol,
                request_id=waiter.request_id,
                rule=waiter.rule.name,
                mode=waiter.rule.mode,
                state=decision.state,
                target=waiter.context.target,
                event_id=_event_id(waiter.event),
                approvers=request.approvers if request else (),
                quorum=waiter.rule.quorum,
                votes=decision.votes,
                detail=_describe(decision),
            ),
            verdict,
            waiter.context,
        )
        waiter.result.callback(verdict)

    def _verdict(self, waiter: _Waiter, decision: Decision) -> Verdict:
        rule = waiter.rule.name
        request = waiter.request_id
        detail = f"request {request}: {_describe(decision)}"
        if decision.state == "approved":
            return Allow(notes=(Note("approved", rule),))
        if decision.state == "denied":
            return _deny("denied", "an approver refused this", detail, rule)
        if decision.state == "timeout":
            return _deny("timeout", "no approver answered in time", detail, rule)
        if decision.state == "withdrawn":
            return _deny(
                "withdrawn", "the approval request was withdrawn", detail, rule
            )
        if decision.state == "no_approver":
            return _deny(
                "no_approver", "no approver is available for this", detail, rule
            )
        return _deny(
            "unavailable",
            "approval is unavailable right now, so this is refused",
            detail,
            rule,
        )

    # -- grants ----------------------------------------------------------

    def use_grant(
        self, rule: ApprovalRule, event: Event, context: Context
    ) -> Deferred[Verdict]:
        """
        Let C{event} through on an approved grant, or ask for one and
        refuse it for now.
        """
        identity = context.identity
        if identity is None:
            return succeed(
                _deny("unavailable", "approval needs an identity", "", rule.name)
            )
        print_ = fingerprint(event)
        key = _grant_key(context.target, identity.subject, print_)

        def found(text: str | None) -> Deferred[Verdict] | Verdict:
            if text is None:
                return self._ask_grant(rule, event, context, print_)
            grant = json.loads(text)
            uses_key = f"approval:grant-uses:{grant['request']}"
            counting = self._store.increment(uses_key, ttl=rule.window + GRACE)
            return counting.addCallback(
                lambda used: self._granted(
                    rule=rule,
                    event=event,
                    context=context,
                    grant=grant,
                    used=used,
                    print_=print_,
                )
            )

        looking: Deferred[Verdict] = self._store.get(key).addCallback(found)
        return looking.addErrback(self._unavailable, rule)

    def _granted(
        self,
        *,
        rule: ApprovalRule,
        event: Event,
        context: Context,
        grant: dict[str, Any],
        used: int,
        print_: str,
    ) -> Deferred[Verdict] | Verdict:
        if used > int(grant["uses"]):
            return self._ask_grant(rule, event, context, print_)
        votes = tuple(Vote(**v) for v in grant.get("votes", ()))
        self._record(
            ApprovalRecorded(
                session_id=context.session_id,
                protocol=context.protocol,
                request_id=grant["request"],
                rule=rule.name,
                mode="grant",
                state="grant_used",
                target=context.target,
                event_id=_event_id(event),
                quorum=rule.quorum,
                votes=votes,
                detail=(
                    f"use {used} of {grant['uses']}, valid until {grant['until']:.0f}"
                ),
            ),
            ALLOW,
            context,
        )
        return Allow(notes=(Note("granted", rule.name),))

    def _ask_grant(
        self, rule: ApprovalRule, event: Event, context: Context, print_: str
    ) -> Deferred[Verdict]:
        identity = context.identity
        assert identity is not None
        pending_key = _pending_grant_key(context.target, identity.subject, print_)
        request_id = new_request_id()
        claiming = self._store.put_if_absent(pending_key, request_id, ttl=rule.timeout)

        def claimed(fresh: bool) -> Deferred[Verdict]:
            if not fresh:
                return self._store.get(pending_key).addCallback(
                    lambda known: self._grant_pending(rule, known or request_id)
                )
            opening = self.open_request(
                rule, identity, context.target, request_id=request_id, event=event
            )

            def opened(request: ApprovalRequest) -> Verdict:
                self._record_request(request, context)
                return self._grant_pending(rule, request.id)

            def refused(failure: Failure) -> Failure:
                self._store.delete(pending_key).addErrback(lambda f: None)
                return failure

            return opening.addCallbacks(opened, refused)

        asking: Deferred[Verdict] = claiming.addCallback(claimed)
        return asking

    def _grant_pending(self, rule: ApprovalRule, request_id: str) -> Verdict:
        return _deny(
            "required",
            f"this needs approval: request {request_id}; run it again once approved",
            f"grant request {request_id} is pending",
            rule.name,
        )

    def _unavailable(self, failure: Failure, rule: ApprovalRule) -> Verdict:
        error = failure.value
        if isinstance(error, ApprovalRefusedError):
            return _deny(
                "no_approver",
                "no approver is available for this",
                str(error),
                rule.name,
            )
        if not isinstance(error, DirectoryUnavailableError | StoreUnavailableError):
            self._log.failure("Approval rule {rule} failed", failure, rule=rule.name)
        self._log.error(
            "Approval (rule {rule}) is unavailable: {error}; refusing",
            rule=rule.name,
            error=str(error),
        )
        return _deny(
            "unavailable",
            "approval is unavailable right now, so this is refused",
            str(error),
            rule.name,
        )

    # -- session access --------------------------------------------------

    def check_access(
        self,
        rule: ApprovalRule,
        identity: Identity,
        target: str,
        context: Context,
        on_expiry: Callable[[str, float], None],
    ) -> Deferred[Verdict]:
        """
        Admit a session on approved access, or refuse it with how to ask.
        """
        key = _access_key(target, identity.subject)

        def found(text: str | None) -> Verdict:
            if text is None:
                return _deny(
                    "required",
                    f"access to {target} needs approval: hoopgate approvals "
                    f"request {target} --for DURATION --reason TEXT",
                    f"no approved access of {identity.subject} to {target}",
                    rule.name,
                )
            access = json.loads(text)
            until = float(access["until"])
            self._record(
                ApprovalRecorded(
                    session_id=context.session_id,
                    protocol=context.protocol,
                    request_id=access["request"],
                    rule=rule.name,
                    mode="session",
                    state="access_granted",
                    target=target,
                    quorum=rule.quorum,
                    votes=tuple(Vote(**v) for v in access.get("votes", ())),
                    detail=f"access until {until:.0f}: {access.get('reason', '')}",
                ),
                ALLOW,
                context,
            )
            on_expiry(context.session_id, until)
            return Allow(notes=(Note("access", rule.name),))

        looking: Deferred[Verdict] = self._store.get(key).addCallback(found)
        return looking.addErrback(self._unavailable, rule)

    # -- approvers' side -------------------------------------------------

    def get(self, request_id: str) -> Deferred[ApprovalRequest | None]:
        """
        A request by id, if the store still has it.
        """
        if not _REQUEST_ID.fullmatch(request_id):
            return succeed(None)
        reading = self._store.get(_keys(request_id)["request"])
        return reading.addCallback(
            lambda text: ApprovalRequest.load(text) if text else None
        )

    def decision(self, request_id: str) -> Deferred[Decision | None]:
        """
        A request's decision, if it has one.
        """
        reading = self._store.get(_keys(request_id)["decision"])
        return reading.addCallback(lambda text: Decision.load(text) if text else None)

    def pending(self) -> Deferred[list[tuple[ApprovalRequest, list[Vote]]]]:
        """
        Every undecided request the store knows, oldest first, with the
        votes cast so far.
        """

        def read(keys: list[str]) -> Deferred[list[Any]]:
            ids = [k.rsplit(":", 1)[1] for k in keys]
            return gatherResults([self._state(i) for i in ids], consumeErrors=True)

        def open_only(states: list[Any]) -> list[tuple[ApprovalRequest, list[Vote]]]:
            found = [(r, v) for r, d, v in states if r is not None and d is None]
            return sorted(found, key=lambda pair: pair[0].created)

        listing: Deferred[list[str]] = self._store.keys("approval:request:")
        return listing.addCallback(read).addCallback(open_only)

    def _state(self, request_id: str) -> Deferred[Any]:
        return gatherResults(
            [self.get(request_id), self.decision(request_id), self._votes(request_id)],
            consumeErrors=True,
        )

    def _votes(self, request_id: str) -> Deferred[list[Vote]]:
        prefix = _keys(request_id)["votes"]

        def read(keys: list[str]) -> Deferred[list[Vote]]:
            reading = gatherResults(
                [self._store.get(k) for k in keys], consumeErrors=True
            )
            return reading.addCallback(
                lambda texts: sorted(
                    (Vote(**json.loads(t)) for t in texts if t), key=lambda v: v.at
                )
            )

        return self._store.keys(prefix).addCallback(read)

    def check_link(self, token: str) -> tuple[str, str]:
        """
        The request id and approver DN a link is for.

        Raises:
            BadTokenError: Altered or expired.
        """
        fields = self.signer.verify("link", token, self._now())
        return fields["r"], fields["a"]

    def sign_in_token(self, link: str, approver_dn: str) -> str:
        """
        A short-lived proof that the approver of a link signed in on it.
        """
        fields = {"l": token_id(link), "a": normalise_dn(approver_dn)}
        return self.signer.sign(
            "sign-in", fields, self._now() + self.settings.sign_in_ttl
        )

    def check_sign_in(self, link: str, token: str) -> str:
        """
        The approver DN a sign-in token proves, for this link only.

        Raises:
            BadTokenError: Altered, expired or made for another link.
        """
        fields = self.signer.verify("sign-in", token, self._now())
        if fields.get("l") != token_id(link):
            raise BadTokenError("the sign-in is for another link")
        return fields["a"]

    def vote(
        self,
        request_id: str,
        approver_dn: str,
        approve: bool,
        reason: str = "",
        link: str | None = None,
    ) -> Deferred[VoteOutcome]:
        """
        Count one approver's answer, after checking, at this moment, that
        they may give it.

        Raises (in the Deferred):
            ApprovalRefusedError: Not theirs to give (unknown or decided
                request, the requester themselves, not a member of the
                approver groups now, a link used before, a second vote).
            DirectoryUnavailableError: Membership cannot be checked.
            StoreUnavailableError: The store cannot be reached.
        """
        reason = _clip(reason.strip(), MAX_REASON)

        def loaded(request: ApprovalRequest | None) -> Deferred[VoteOutcome]:
            if request is None:
                raise ApprovalRefusedError("no such request (it may have expired)", 404)
            return self.decision(request.id).addCallback(undecided, request)

        def undecided(
            decision: Decision | None, request: ApprovalRequest
        ) -> Deferred[VoteOutcome]:
            if decision is not None:
                raise ApprovalRefusedError(
                    f"the request is already {decision.state}", 409
                )
            if request.expires <= self._now():
                raise ApprovalRefusedError("the request has timed out", 409)
            if request.requester_dn and normalise_dn(
                request.requester_dn
            ) == normalise_dn(approver_dn):
                raise ApprovalRefusedError("nobody may approve their own request")
            checking = self.directory.members(request.groups)
            return checking.addCallback(member, request)

        def member(
            members: dict[str, Person], request: ApprovalRequest
        ) -> Deferred[VoteOutcome]:
            if normalise_dn(approver_dn) not in members:
                raise ApprovalRefusedError(
                    "you are not (or no longer) an approver of this request"
                )
            if link is None:
                return self._cast(request, approver_dn, approve, reason)
            ttl = max(1.0, request.expires - self._now() + GRACE)
            using = self._store.put_if_absent(
                f"approval:link:{token_id(link)}", approver_dn, ttl=ttl
            )
            return using.addCallback(first_use, request)

        def first_use(fresh: bool, request: ApprovalRequest) -> Deferred[VoteOutcome]:
            if not fresh:
                raise ApprovalRefusedError("this link has been used already", 409)
            return self._cast(request, approver_dn, approve, reason)

        return self.get(request_id).addCallback(loaded)

    def _cast(
        self, request: ApprovalRequest, approver_dn: str, approve: bool, reason: str
    ) -> Deferred[VoteOutcome]:
        keys = _keys(request.id)
        now = self._now()
        vote = Vote(approver_dn, "approve" if approve else "deny", reason, now)
        ttl = max(1.0, request.expires - now + GRACE)
        key = (
            keys["votes"]
            + hashlib.sha256(normalise_dn(approver_dn).encode()).hexdigest()[:24]
        )
        casting = self._store.put_if_absent(
            key, json.dumps(attrs.asdict(vote)), ttl=ttl
        )

        def cast(fresh: bool) -> Deferred[VoteOutcome] | VoteOutcome:
            if not fresh:
                raise ApprovalRefusedError(
                    "you have answered this request already", 409
                )
            self._log.info(
                "Approval request {request_id}: {approver} votes {decision}",
                request_id=request.id,
                approver=approver_dn,
                decision=vote.decision,
            )
            if not approve:
                return self._conclude(request, "denied", vote)
            counting = self._store.increment(keys["yes"], ttl=ttl)
            return counting.addCallback(counted)

        def counted(approvals: int) -> Deferred[VoteOutcome] | VoteOutcome:
            if approvals >= request.quorum:
                return self._conclude(request, "approved", vote)
            return VoteOutcome(
                True,
                "pending",
                f"approval recorded: {approvals} of {request.quorum}",
                approvals,
                request.quorum,
            )

        return casting.addCallback(cast)

    def _conclude(
        self, request: ApprovalRequest, state: str, vote: Vote
    ) -> Deferred[VoteOutcome]:
        def decide(votes: list[Vote]) -> Deferred[Decision]:
            decision = Decision(
                state,
                self._now(),
                by=vote.approver,
                reason=vote.reason,
                votes=tuple(votes),
                quorum=request.quorum,
            )
            return self._decide(request, decision)

        def outcome(decision: Decision) -> VoteOutcome:
            mine = decision.by == vote.approver and decision.state == state
            message = f"the request is {decision.state}"
            return VoteOutcome(
                mine, decision.state, message, decision.approvals, request.quorum
            )

        return self._votes(request.id).addCallback(decide).addCallback(outcome)

    def _decide(
        self, request: ApprovalRequest, decision: Decision
    ) -> Deferred[Decision]:
        """
        Write a decision unless there is one already; return the one that
        stands, after its effects (grant, access) and the wake-up.
        """
        keys = _keys(request.id)
        ttl = max(1.0, request.expires - self._now() + GRACE)
        writing = self._store.put_if_absent(keys["decision"], decision.dump(), ttl=ttl)

        def written(fresh: bool) -> Deferred[Decision]:
            if not fresh:
                return self.decision(request.id).addCallback(lambda d: d or decision)
            self._log.info(
                "Approval request {request_id} (rule {rule}) is {state}",
                request_id=request.id,
                rule=request.rule,
                state=decision.state,
            )
            effects = self._effects(request, decision)
            return effects.addCallback(lambda _: self._wake(request.id)).addCallback(
                lambda _: decision
            )

        return writing.addCallback(written)

    def _wake(self, request_id: str) -> Deferred[None]:
        waking = self._store.publish(WAKE, request_id)
        waiter = self._waiters.get(request_id)
        if waiter is not None:
            self._check(waiter)
        return waking.addCallbacks(lambda _: None, lambda f: None)

    def _effects(self, request: ApprovalRequest, decision: Decision) -> Deferred[None]:
        if request.mode == "grant":
            pending = _pending_grant_key(
                request.target, request.subject, request.fingerprint
            )
            self._store.delete(pending).addErrback(lambda f: None)
        if decision.state != "approved":
            return succeed(None)
        votes = [attrs.asdict(v) for v in decision.votes]
        now = self._now()
        if request.mode == "grant":
            grant = {
                "request": request.id,
                "uses": request.uses,
                "until": now + request.window,
                "votes": votes,
            }
            key = _grant_key(request.target, request.subject, request.fingerprint)
            return self._store.put(key, json.dumps(grant), ttl=request.window)
        if request.mode == "session":
            access = {
                "request": request.id,
                "until": now + request.duration,
                "votes": votes,
                "reason": request.reason,
            }
            key = _access_key(request.target, request.subject)
            return self._store.put(key, json.dumps(access), ttl=request.duration)
        return succeed(None)


_REQUEST_ID: Final = re.compile(r"[0-9a-f]{16}")


def new_request_id() -> str:
    """
    A new request id: 16 hex digits.
    """
    return secrets.token_hex(8)


def _describe(decision: Decision) -> str:
    votes = ", ".join(f"{v.approver} {v.decision}" for v in decision.votes)
    text = decision.state
    if decision.by:
        text += f" by {decision.by}"
    if decision.reason:
        text += f" ({decision.reason})"
    if votes:
        text += f"; votes: {votes}; {decision.approvals} of {decision.quorum} approvals"
    return text


# -- the interceptor ---------------------------------------------------------


@implementer(IInterceptor)
class ApprovalInterceptor:
    """
    The approval stage: holds, grants and session access per the rules.

    Args:
        service: Requests and decisions.
        rules: The policy's approval rules, in file order.
        on_expiry: Called with a session id and the time its approved
            access ends, to end the session then.
    """

    name = "approval"
    stage = "approval"

    _log = Logger()

    def __init__(
        self,
        service: ApprovalService,
        rules: Sequence[ApprovalRule],
        on_expiry: Callable[[str, float], None],
    ) -> None:
        self._service = service
        self._rules = tuple(rules)
        self._on_expiry = on_expiry
        kinds: list[type[Event]] = []
        if any(r.mode == "session" for r in self._rules):
            kinds.append(SessionRequested)
        if any(r.mode != "session" for r in self._rules):
            kinds += [StatementReceived, CommandReceived, HttpRequestReceived]
        self.event_types = tuple(kinds)

    def decide(self, event: Event, context: Context) -> Verdict | Deferred[Verdict]:
        if isinstance(event, SessionRequested):
            return self._session(event, context)

        for rule in self._rules:
            if rule.mode == "session" or not rule.applies(
                context.identity, context.target
            ):
                continue
            reasons = rule.matches(event)
            if not reasons:
                continue
            self._log.info(
                "Approval rule {rule} ({mode}) applies to {event} {event_id} of "
                "session {session_id}: {reasons}",
                rule=rule.name,
                mode=rule.mode,
                event=event.name,
                event_id=_event_id(event),
                session_id=context.session_id,
                reasons=reasons,
            )
            if _binds_later(event):
                return _deny(
                    "parameters",
                    "approval needs the statement's values: send it with "
                    "literals instead of bound parameters",
                    f"rule {rule.name} matched a statement whose parameters "
                    "are bound after it is judged",
                    rule.name,
                )
            if rule.mode == "hold":
                return self._service.hold(rule, event, context)
            return self._service.use_grant(rule, event, context)
        return ALLOW

    def _session(
        self, event: SessionRequested, context: Context
    ) -> Verdict | Deferred[Verdict]:
        identity = event.identity
        for rule in self._rules:
            if rule.mode != "session" or not rule.applies(identity, event.target):
                continue
            if identity is None:
                return _deny("unavailable", "approval needs an identity", "", rule.name)
            return self._service.check_access(
                rule, identity, event.target, context, self._on_expiry
            )
        return ALLOW


def session_rule(
    rules: Iterable[ApprovalRule], identity: Identity, target: str
) -> ApprovalRule | None:
    """
    The first session rule about C{identity} on C{target}, if any.
    """
    for rule in rules:
        if rule.mode == "session" and rule.applies(identity, target):
            return rule
    return None


def admin_base_url(listen: str, tls: bool = False) -> str:
    """
    The URL of an admin listener from its endpoint string
    (C{tcp:8091:interface=127.0.0.1} is C{http://127.0.0.1:8091}), with
    C{https} when it speaks TLS.
    """
    pieces = [p.replace("\\:", ":") for p in re.split(r"(?<!\\):", listen)]
    port = pieces[1] if len(pieces) > 1 else "8091"
    options = dict(p.split("=", 1) for p in pieces[2:] if "=" in p)
    host = options.get("interface", "127.0.0.1")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if tls else "http"
    return f"{scheme}://{host}:{port}"


_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*")
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """
    A duration written C{90s}, C{30m}, C{2h}, C{1d} or in seconds.

    Raises:
        ValueError: It is not one, or not more than zero.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 30m or 2h")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError("a duration must be more than zero")
    return seconds
