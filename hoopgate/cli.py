"""
The operator command line: C{hoopgate
sessions|reload|check|policy|approvals|ssh-cert}.

Commands that talk to the admin listener find it in the configuration
they read (C{https}, verified against the configured admin certificate,
when C{gateway.admin.tls} is set) or take C{--url} and C{--ca-file}; they
never fall back to plain HTTP nor skip verification, and never send
credentials in clear off loopback.  Text that came from clients
(statements, subjects, reasons) is printed with control and invisible
format characters made visible, so it cannot drive the terminal.

C{sessions list}, C{sessions show} and C{policy test} read the
configuration offline (L{hoopgate._config.load_config}): without the
secrets and files only a running gateway uses, so they work on the
file of a gateway that is not running.  C{policy test} judges each text
as the event the target's plugin makes of what clients send: a
statement classified by the plugin's own classifier, or a command line
on an SSH target.  A closed standard output (C{| head}) ends a command
quietly.

test-case-name: tests.unit.test_cli_admin, tests.unit.test_cli_policy,
    tests.unit.test_cli_sessions, tests.unit.test_cli_config
"""

from __future__ import annotations

import argparse
import base64
import getpass
import http.client
import ipaddress
import json
import os
import re
import signal
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, cast

from attrs import frozen

from hoopgate._approvals import (
    ApprovalInterceptor,
    ApprovalRule,
    ApprovalService,
    admin_base_url,
    session_rule,
)
from hoopgate._chain import Context
from hoopgate._config import Config, TargetConfig, TLSFiles, load_config
from hoopgate._configreader import ConfigError
from hoopgate._events import (
    CommandReceived,
    Event,
    StatementPart,
    StatementReceived,
)
from hoopgate._guardrails import Evaluation, RuleHit, evaluate, statement_parts
from hoopgate._identity import Identity
from hoopgate._interfaces import IProtocolPlugin, IStatementClassifier
from hoopgate._masking import Strategy
from hoopgate._maskinterceptor import MaskingInterceptor
from hoopgate._maskrules import MaskRule, SessionMasking
from hoopgate._policy import AccessDecision
from hoopgate._recording import read_recording
from hoopgate._sessionview import describe, header, summary
from hoopgate._verdicts import ALLOW, Deny, Hold, Verdict

DEFAULT_CONFIG = os.environ.get("HOOPGATE_CONFIG", "etc/hoopgate.yaml")


class CommandError(Exception):
    """
    A command cannot go on; the message says why, for the operator.

    Attributes:
        code: The exit status.
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- output -------------------------------------------------------------------

#: Characters a terminal acts on or hides rather than shows: C0 and C1
#: controls, DEL, and the invisible format characters (bidirectional
#: overrides, zero-width ones) that make text read other than it is.
_INVISIBLE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
)
_NAMED: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object) -> str:
    """
    C{text} as a terminal should show it: control and invisible format
    characters written as escapes (ESC as C{\\x1b}, a newline as
    C{\\n}), so text from clients cannot move the cursor, clear the
    screen, retitle the window or fake a line of output.
    """
    return _INVISIBLE.sub(_escape, str(text))


def _say(line: object = "") -> None:
    print(visible(line))


def _complain(line: object) -> None:
    print(visible(line), file=sys.stderr)


def _sessions_list(config: Config, args: argparse.Namespace) -> int:
    folder = Path(config.gateway.recordings)
    paths = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    rows = [summary(p.stem, read_recording(p)) for p in paths[-args.limit :]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    _say(
        f"{'SESSION':<32} {'STATE':<8} {'SUBJECT':<20} {'TARGET':<14} "
        f"{'STATEMENTS':<10} COMMANDS"
    )
    for row in rows:
        subject, target = visible(row["subject"] or "-"), visible(row["target"] or "-")
        _say(
            f"{row['session_id']:<32} {row['state']:<8} {subject:<20} "
            f"{target:<14} {row['statements']:<10} {row['commands']}"
        )
    return 0


def _sessions_show(config: Config, args: argparse.Namespace) -> int:
    path = Path(config.gateway.recordings) / f"{args.session_id}.jsonl"
    if "/" in args.session_id or not path.is_file():
        _complain(f"no recording for session {args.session_id}")
        return 1
    lines = read_recording(path)
    if args.json:
        for line in lines:
            print(json.dumps(line))
        return 0
    for text in header(args.session_id, lines):
        _say(text)
    for line in lines:
        _say(describe(line))
    return 0


def _sessions_terminate(config: Config, args: argparse.Namespace) -> int:
    path = f"/sessions/{urllib.parse.quote(args.session_id, safe='')}/terminate"
    status, body = _call(
        config, args, "POST", path, b"", authorization=_admin_header(config)
    )
    if status != 202:
        _complain(f"terminate refused ({status}): {_error(body)}")
        return 1
    _say(f"session {args.session_id}: {body.get('status')}")
    return 0


def _reload(config: Config, args: argparse.Namespace) -> int:
    status, body = _call(
        config, args, "POST", "/reload", b"", authorization=_admin_header(config)
    )
    if status != 200:
        _complain(f"reload refused ({status}): {_error(body)}")
        return 1
    _say(body.get("status"))
    return 0


def _check(config: Config, args: argparse.Namespace) -> int:
    _say(
        f"{config.source}: valid ({len(config.listeners)} listeners, "
        f"{len(config.targets)} targets, {len(config.policy.access)} access rules, "
        f"{len(config.policy.guardrails)} guardrails)"
    )
    return 0


Classify = Callable[[str], tuple[StatementPart, ...]]

#: Protocols whose plugin turns what a client asks to run into a command
#: line (L{CommandReceived}) rather than a statement: the SSH plugin
#: judges an exec request by its command line.
_COMMAND_LINE_PROTOCOLS: Final = frozenset({"ssh"})


@frozen
class _Judging:
    """
    How C{policy test} turns each text into the event the target's
    plugin would make of it, so that it is judged as in the gateway.

    Attributes:
        event: The event's name in recordings and policy: C{statement}
            (L{StatementReceived}) or C{command} (L{CommandReceived}).
        plugin: The name of the target's plugin.
        classifier: Whether the plugin classifies statements
            (L{IStatementClassifier}).
        user: The account a session would use on the target (the user
            of the credential set the access rule picks), as the
            classifier resolves names for it; C{None} without access.
    """

    event: str
    plugin: str
    classifier: bool
    user: str | None

    def describe(self) -> str:
        """
        One line saying what the texts were judged as.
        """
        if self.event == "command":
            return (
                "judged as: command events (each text one command line, as the "
                f"{self.plugin} plugin judges an exec request)"
            )
        line = "judged as: statement events (each text one query string)"
        if not self.classifier:
            return (
                f"{line}; the {self.plugin} plugin classifies no statements, so "
                "each text counts as one statement of effect unknown"
            )
        line += f", classified by the {self.plugin} plugin"
        return line + (f" for a session of user {self.user}" if self.user else "")

    def record(self) -> dict[str, Any]:
        """
        The same for C{--json}.
        """
        return {
            "event": self.event,
            "plugin": self.plugin,
            "classified": self.classifier,
            "user": self.user,
        }


def _judging(
    plugin: IProtocolPlugin | None, target: TargetConfig, access: AccessDecision
) -> _Judging:
    classifier = plugin is not None and IStatementClassifier.providedBy(plugin)
    commands = not classifier and target.protocol in _COMMAND_LINE_PROTOCOLS
    credential = target.credentials.get(access.rule.credential) if access.rule else None
    return _Judging(
        event="command" if commands else "statement",
        plugin=target.protocol,
        classifier=classifier,
        user=credential.user if credential else None,
    )


def _classifier(plugin: IProtocolPlugin | None, judging: _Judging) -> Classify:
    # The plugin's own classifier, so the test judges text as the
    # gateway does, for the session's user; without one, statements
    # carry no parts and count as one part of effect unknown, as in the
    # gateway.
    if plugin is None or not judging.classifier:
        return lambda text: ()
    classify = cast(IStatementClassifier, plugin).classify

    def guarded(text: str) -> tuple[StatementPart, ...]:
        try:
            return tuple(classify(text, user=judging.user))
        except Exception as e:
            # Whatever went wrong, the text counts as unclassifiable.
            problem = f"the classifier failed: {type(e).__name__}: {e}"
            return (
                StatementPart(text=text, command="", effect="unknown", problem=problem),
            )

    return guarded


def _event(
    judging: _Judging, classify: Classify, number: int, text: str
) -> StatementReceived | CommandReceived:
    """
    The event the target's plugin would make of C{text}.
    """
    if judging.event == "command":
        return CommandReceived(
            session_id="policy-test",
            protocol=judging.plugin,
            command_id=f"policy-test.{number}",
            command=text,
        )
    return StatementReceived(
        session_id="policy-test",
        protocol=judging.plugin,
        statement_id=f"policy-test.{number}",
        text=text,
        parts=classify(text),
        classified=judging.classifier,
    )


def _access_record(
    identity: Identity, target: str, access: AccessDecision
) -> dict[str, Any]:
    allowed = access.rule is not None
    if allowed:
        why = f"rule {access.decided_by}"
    elif access.decided_by:
        why = f"rule {access.decided_by} denies"
    else:
        why = "no access rule matches"
    return {
        "allowed": allowed,
        "rule": access.decided_by,
        "summary": (
            f"{identity.subject} {'may' if allowed else 'may not'} reach "
            f"{target} ({why})"
        ),
    }


def _hits(hits: tuple[RuleHit, ...]) -> list[dict[str, Any]]:
    return [{"rule": h.rule, "reasons": list(h.reasons)} for h in hits]


def _test_record(
    event: StatementReceived | CommandReceived,
    evaluation: Evaluation,
    access: dict[str, Any],
) -> dict[str, Any]:
    denied = evaluation.denied or not access["allowed"]
    if not access["allowed"]:
        decided_by, rule = "access", access["rule"]
    elif evaluation.denied:
        decided_by, rule = "guardrails", evaluation.deciding_rule
    else:
        decided_by, rule = None, None
    record: dict[str, Any] = {"event": event.name}
    if isinstance(event, CommandReceived):
        record["command"] = event.command
    else:
        record["statement"] = event.text
    record.update(
        verdict="deny" if denied else "allow",
        decided_by=decided_by,
        rule=rule,
        blocked=_hits(evaluation.blocked),
        dry_run=_hits(evaluation.dry_run),
        rules_applied=list(evaluation.applied),
    )
    if isinstance(event, StatementReceived):
        record["parts"] = _parts(evaluation.parts)
    return record


def _parts(parts: tuple[StatementPart, ...]) -> list[dict[str, Any]]:
    return [
        {
            "text": p.text,
            "command": p.command,
            "effect": p.effect,
            "reads": list(p.reads),
            "writes": list(p.writes),
            "shapes": list(p.shapes),
            "problem": p.problem,
        }
        for p in parts
    ]


# What masking and approval would do with a statement or command.


class _NotingApprovals:
    """
    Stands in for the approval service under the real approval stage:
    notes the rule that would hold the statement or command or ask for a
    grant, asks nobody and decides nothing.
    """

    def __init__(self) -> None:
        self.rule: ApprovalRule | None = None

    def hold(self, rule: ApprovalRule, event: Event, context: Context) -> Verdict:
        self.rule = rule
        return ALLOW

    use_grant = hold


def _strategy(strategy: Strategy) -> str:
    count = getattr(strategy, "count", None)
    return f"keep last {count}" if count is not None else strategy.kind


def _masked_columns(
    masking: SessionMasking, parts: tuple[StatementPart, ...], enforced: bool
) -> list[dict[str, Any]]:
    """
    Each column of a table the statement uses that a column rule masks,
    with the strictest such rule (as the result's row plan would pick).
    """
    effects = frozenset(p.effect for p in parts)
    relations = dict.fromkeys(r for p in parts for r in (*p.reads, *p.writes))
    chosen: dict[str, MaskRule] = {}
    for relation in relations:
        for rule, column in masking.masked_columns((relation,), enforced):
            if not rule.covers_effects(effects):
                continue
            name = f"{relation}.{column}"
            if name not in chosen or rule.rank < chosen[name].rank:
                chosen[name] = rule
    return [
        {"column": name, "rule": rule.name, "strategy": _strategy(rule.strategy)}
        for name, rule in chosen.items()
    ]


def _detectors(
    masking: SessionMasking, parts: tuple[StatementPart, ...], enforced: bool
) -> list[dict[str, Any]]:
    effects = frozenset(p.effect for p in parts)
    return [
        {
            "rule": rule.name,
            "detectors": [d.name for d in rule.detectors],
            "strategy": _strategy(rule.strategy),
        }
        for rule in masking.detect_rules(effects, enforced)
    ]


def _masking_record(
    config: Config, context: Context, event: StatementReceived
) -> dict[str, Any] | None:
    """
    What masking would do with the statement's results, from the rules
    that apply to the identity on the target; C{None} when none do.  The
    refusal comes from the real masking stage.
    """
    policy = config.policy.masking
    masking = policy.for_session(context.identity, context.target)
    if not masking.rules:
        return None
    verdict = MaskingInterceptor(policy).decide(event, context)
    notes = () if isinstance(verdict, Hold) else verdict.notes
    parts = statement_parts(event)
    refused = verdict.reason if isinstance(verdict, Deny) else None
    columns = _masked_columns(masking, parts, True)
    shadow = _masked_columns(masking, parts, False)
    return {
        "refused": refused is not None,
        "rule": refused.rule if refused else None,
        "detail": refused.detail if refused else "",
        "columns": columns,
        "detectors": _detectors(masking, parts, True),
        "lineage": bool(columns or shadow),
        "dry_run": {
            "columns": shadow,
            "detectors": _detectors(masking, parts, False),
            "refused": [n.rule for n in notes if n.kind == "dry_run"],
        },
    }


def _approval_record(
    config: Config, context: Context, event: StatementReceived | CommandReceived
) -> dict[str, Any] | None:
    """
    Which approval rule would hold the statement or command (or ask for
    a grant), judged by the real approval stage; C{None} when no rule
    about statements or commands applies to the identity on the target.
    """
    rules = tuple(
        r
        for r in config.policy.approvals
        if r.mode != "session" and r.applies(context.identity, context.target)
    )
    if not rules:
        return None
    noting = _NotingApprovals()
    stage = ApprovalInterceptor(cast(ApprovalService, noting), rules, lambda *_: None)
    verdict = stage.decide(event, context)
    rule = noting.rule
    record: dict[str, Any] = {
        "needed": rule is not None,
        "rule": rule.name if rule else None,
        "mode": rule.mode if rule else None,
        "quorum": rule.quorum if rule else None,
        "timeout": rule.timeout if rule else None,
        "reasons": rule.matches(event) if rule else [],
    }
    if isinstance(verdict, Deny):
        record.update(needed=True, refused=verdict.reason.detail)
    return record


def _outcome(record: dict[str, Any], access: dict[str, Any]) -> str:
    """
    What the gateway would do: C{deny}, C{approval} (held, asking for a
    grant, or access approval first) or C{allow}.
    """
    if record["verdict"] == "deny":
        return "deny"
    approval = record["approval"]
    if access.get("approval") or (approval and approval["needed"]):
        return "approval"
    return "allow"


def _judge(
    config: Config,
    target: TargetConfig,
    identity: Identity,
    access: dict[str, Any],
    event: StatementReceived | CommandReceived,
) -> dict[str, Any]:
    """
    One text's record: access, then guardrails, masking (statements
    only: masking judges no command line) and approval, in the
    gateway's order.
    """
    evaluation = evaluate(config.policy.guardrails, identity, target.name, event)
    record = _test_record(event, evaluation, access)
    context = Context(
        session_id="policy-test",
        protocol=target.protocol,
        target=target.name,
        identity=identity,
        policy=config.policy,
    )
    masking = None
    if isinstance(event, StatementReceived):
        masking = _masking_record(config, context, event)
    record["masking"] = masking
    record["approval"] = _approval_record(config, context, event)
    if record["verdict"] == "allow" and masking and masking["refused"]:
        record.update(verdict="deny", decided_by="masking", rule=masking["rule"])
    record["outcome"] = _outcome(record, access)
    return record


def _test_texts(
    config: Config,
    target: TargetConfig,
    identity: Identity,
    access: dict[str, Any],
    texts: list[str],
    *,
    judging: _Judging,
) -> list[dict[str, Any]]:
    classify = _classifier(config.plugins.get(target.protocol), judging)
    return [
        _judge(config, target, identity, access, _event(judging, classify, n, text))
        for n, text in enumerate(texts, 1)
    ]


def _describe_part(number: int, part: dict[str, Any], several: bool) -> str:
    facts = [part["command"] or "(no command)", f"effect {part['effect']}"]
    for key in ("reads", "writes", "shapes"):
        if part[key]:
            facts.append(f"{key} {' '.join(part[key])}")
    if part["problem"]:
        facts.append(f"problem: {part['problem']}")
    where = f" ({part['text'].strip()})" if several else ""
    return f"  part {number}{where}: {', '.join(facts)}"


def _verdict_line(record: dict[str, Any]) -> str:
    line = str(record["verdict"])
    if record["decided_by"] == "guardrails":
        line += f" (guardrail {record['rule']})"
    elif record["decided_by"] == "masking":
        line += f" (masking rule {record['rule']})"
    elif record["decided_by"] == "access" and record["rule"]:
        line += f" (access rule {record['rule']})"
    elif record["decided_by"] == "access":
        line += " (no access rule matches)"
    if record["dry_run"]:
        names = ", ".join(hit["rule"] for hit in record["dry_run"])
        line += f"; dry-run hits: {names}"
    return line


def _columns_text(columns: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c['column']} ({c['rule']}, {c['strategy']})" for c in columns)


def _detectors_text(detecting: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{', '.join(d['detectors'])} ({d['rule']}, {d['strategy']})" for d in detecting
    )


def _masking_lines(masking: dict[str, Any]) -> list[str]:
    lines = []
    if masking["refused"]:
        # The detail starts with the rule's name.
        lines.append(f"  masking: refused: {masking['detail']}")
    if masking["columns"]:
        lines.append(
            f"  masking: columns {_columns_text(masking['columns'])}, where a "
            "result carries them (the target's column lineage decides at run time)"
        )
    else:
        lines.append("  masking: no column rule names a table this statement uses")
    if masking["detectors"]:
        lines.append(
            f"  masking: detectors {_detectors_text(masking['detectors'])} "
            "in every other text value"
        )
    shadow = masking["dry_run"]
    if shadow["columns"]:
        lines.append(f"  masking dry-run: columns {_columns_text(shadow['columns'])}")
    if shadow["detectors"]:
        lines.append(
            f"  masking dry-run: detectors {_detectors_text(shadow['detectors'])}"
        )
    if shadow["refused"]:
        lines.append(f"  masking dry-run would refuse: {', '.join(shadow['refused'])}")
    return lines


def _approval_line(record: dict[str, Any]) -> str:
    approval = record["approval"]
    if not approval["needed"]:
        return "  approval: none needed"
    if approval.get("refused"):
        return f"  approval: refused ({approval['refused']})"
    if approval["mode"] == "grant":
        action = "refused with a request id until a grant is approved"
    else:
        action = "held until approved"
    line = (
        f"  approval: {action} (rule {approval['rule']}, {approval['mode']}, "
        f"{approval['quorum']} approval(s), timeout {approval['timeout']:g} s)"
    )
    if record["verdict"] == "deny":
        line += ", were it not denied first"
    return f"{line}: {'; '.join(approval['reasons'])}"


def _print_test(number: int, record: dict[str, Any]) -> None:
    kind = record["event"]
    _say(f"{kind} {number}: {record[kind]}")
    _say(f"  verdict: {_verdict_line(record)}")
    for hit in record["blocked"]:
        _say(f"  blocked by {hit['rule']}: {', '.join(hit['reasons'])}")
    for hit in record["dry_run"]:
        _say(f"  dry-run {hit['rule']} would block: {', '.join(hit['reasons'])}")
    if record["masking"] is not None:
        for line in _masking_lines(record["masking"]):
            _say(line)
    if record["approval"] is not None:
        _say(_approval_line(record))
    if kind != "statement":
        return
    parts = record["parts"]
    if not parts:
        _say("  no statement to run")
    for index, part in enumerate(parts, 1):
        _say(_describe_part(index, part, len(parts) > 1))


def _policy_test(config: Config, args: argparse.Namespace) -> int:
    target = config.targets.get(args.target)
    if target is None:
        known = ", ".join(sorted(config.targets)) or "none"
        _complain(f"no target named {args.target!r} (known: {known})")
        return 2

    texts = args.statements or [line.rstrip("\r\n") for line in sys.stdin]
    texts = [t for t in texts if t.strip()]
    identity = Identity(
        subject=args.subject, issuer="hoopgate policy test", groups=tuple(args.group)
    )
    decision = config.policy.authorize(identity, target.name)
    access = _access_record(identity, target.name, decision)
    gate = session_rule(config.policy.approvals, identity, target.name)
    if gate is not None:
        access["approval"] = gate.name
    judging = _judging(config.plugins.get(target.protocol), target, decision)
    records = _test_texts(config, target, identity, access, texts, judging=judging)

    if args.json:
        result = {"access": access, "judged_as": judging.record(), "results": records}
        print(json.dumps(result, indent=2))
    else:
        _say(f"access: {access['summary']}")
        if gate is not None:
            _say(
                f"access: sessions need approved access first (approval rule "
                f"{gate.name}): hoopgate approvals request {target.name} --for ..."
            )
        _say(judging.describe())
        for number, record in enumerate(records, 1):
            _print_test(number, record)
    return _expected(args.expect, records)


def _expected(expect: str | None, records: list[dict[str, Any]]) -> int:
    if expect is None:
        return 0
    wrong = [(n, r) for n, r in enumerate(records, 1) if r["outcome"] != expect]
    for number, record in wrong:
        _complain(f"{record['event']} {number}: expected {expect}")
    return 1 if wrong else 0


def _policy_parser(commands: Any) -> None:
    policy = commands.add_parser("policy", help="policy tools")
    which = policy.add_subparsers(dest="which", required=True)
    test = which.add_parser(
        "test",
        help="show the verdict and deciding rule for statements or commands",
        description=(
            "Judge texts for an identity on a target as the gateway would: "
            "as the events the target's plugin makes of what clients send "
            "(statements, classified by the plugin's own classifier for the "
            "session's user; command lines on an SSH target): access, "
            "guardrails, masking (what would be masked or refused) and "
            "approval (which rule would hold it). Texts come from the "
            "arguments, or from standard input, one per line. The "
            "configuration is read without the secrets and files only a "
            "running gateway uses."
        ),
    )
    test.add_argument("--subject", required=True)
    test.add_argument("--group", action="append", default=[])
    test.add_argument("--target", required=True)
    test.add_argument("--json", action="store_true")
    test.add_argument(
        "--expect",
        choices=("allow", "deny", "approval"),
        help="exit 1 unless every text gets this outcome (approval: an "
        "approval rule would hold it or ask for a grant)",
    )
    test.add_argument("statements", nargs="*", metavar="TEXT")
    test.set_defaults(run=_policy_test, offline=True)


# -- the admin listener ---------------------------------------------------------


@frozen
class AdminEndpoint:
    """
    Where the admin listener is and how to reach it.

    Attributes:
        url: Its base URL, without a final slash.
        context: The TLS context verifying it (C{None} for plain HTTP).
    """

    url: str
    context: ssl.SSLContext | None


def _tls_context(files: TLSFiles | None, ca_file: str | None) -> ssl.SSLContext:
    """
    A context that verifies the admin listener: against C{ca_file} when
    given, else against the configured admin certificate itself (this
    CLI reads the gateway's own configuration) besides the system's CAs.
    Names are always checked.
    """
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as e:
        raise CommandError(f"cannot use --ca-file {ca_file}: {e}", 2) from None
    if ca_file or files is None:
        return context
    try:
        context.load_verify_locations(files.certificate)
    except (OSError, ssl.SSLError) as e:
        raise CommandError(
            f"cannot read the admin certificate {files.certificate} to verify the "
            f"admin listener ({e}): give --ca-file",
            2,
        ) from None
    # The configured certificate is trusted as it is, not only a root CA.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def admin_endpoint(config: Config, args: argparse.Namespace) -> AdminEndpoint:
    """
    The admin listener: C{--url} when given, else from the configuration
    (C{https} when C{gateway.admin.tls} is set, a wildcard interface on
    loopback).  HTTPS is always verified; never does a listener with
    TLS get plain HTTP.

    Raises:
        CommandError: C{--url} is not an http or https URL, or is plain
            http where the configuration says the listener speaks TLS.
    """
    files = config.gateway.admin_tls
    given = getattr(args, "url", None)
    if given:
        parts = urllib.parse.urlsplit(given)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CommandError(f"--url {given!r} is not an http:// or https:// URL", 2)
        if parts.scheme == "http" and files is not None:
            raise CommandError(
                "gateway.admin.tls is set, so the admin listener speaks https: "
                "give an https:// --url",
                2,
            )
        url = given.rstrip("/")
    else:
        url = admin_base_url(config.gateway.admin_listen, tls=files is not None)
    if url.startswith("http:"):
        return AdminEndpoint(url, None)
    return AdminEndpoint(url, _tls_context(files, getattr(args, "ca_file", None)))


def _loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _call(
    config: Config,
    args: argparse.Namespace,
    method: str,
    path: str,
    body: dict[str, Any] | bytes | None = None,
    *,
    authorization: str | None = None,
    secret_body: bool = False,
) -> tuple[int, Any]:
    """
    Call the admin listener; return the status and the decoded answer (an
    error's too; a body that is not JSON becomes C{{"error": TEXT}}).

    Raises:
        CommandError: The listener cannot be reached or verified, or
            credentials would cross the network in clear.
    """
    endpoint = admin_endpoint(config, args)
    clear = endpoint.context is None and not _loopback(endpoint.url)
    if clear and (authorization or secret_body):
        raise CommandError(
            f"refusing to send credentials over plain http to {endpoint.url}: "
            "configure gateway.admin.tls, or give an https:// --url"
        )
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(  # noqa: S310 - http or https, checked above
        endpoint.url + path, method=method, data=data
    )
    if isinstance(body, dict):
        request.add_header("Content-Type", "application/json")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    return _send(request, endpoint)


def _send(request: urllib.request.Request, endpoint: AdminEndpoint) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(  # noqa: S310 - http or https, checked
            request, timeout=30, context=endpoint.context
        ) as response:
            return response.status, _decoded(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, _decoded(e.read())
    except urllib.error.URLError as e:
        raise CommandError(_unreachable(endpoint.url, e.reason)) from None
    except (OSError, http.client.HTTPException) as e:
        raise CommandError(_unreachable(endpoint.url, e)) from None


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        return {"error": raw.decode("utf-8", "replace").strip()}


def _unreachable(url: str, reason: object) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            f"cannot verify the admin listener's certificate at {url}: "
            f"{reason.verify_message}; give --ca-file, or --url with a name "
            "the certificate holds"
        )
    if isinstance(reason, ssl.SSLError):
        return f"TLS with the admin listener at {url} failed: {reason}"
    if isinstance(reason, http.client.HTTPException | ConnectionResetError):
        return (
            f"the admin listener at {url} did not answer HTTP: does it speak "
            "https (gateway.admin.tls)?"
        )
    return f"cannot reach the gateway's admin listener at {url}: {reason}"


def _error(body: Any) -> str:
    return str(body.get("error") if isinstance(body, dict) else body)


def _admin_header(config: Config) -> str | None:
    token = config.gateway.admin_token
    return f"Bearer {token.reveal()}" if token is not None else None


def _admin_options() -> argparse.ArgumentParser:
    """
    The options of every command that talks to the admin listener.
    """
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--url",
        help="the admin listener, such as https://gateway.example.org:8091 "
        "(default: from the configuration)",
    )
    options.add_argument(
        "--ca-file",
        help="CA bundle to verify an HTTPS admin listener (default: the "
        "configured admin certificate)",
    )
    return options


# -- approvals --------------------------------------------------------------


def _approvals_list(config: Config, args: argparse.Namespace) -> int:
    status, body = _call(
        config, args, "GET", "/approvals", authorization=_admin_header(config)
    )
    if status != 200:
        _complain(f"refused ({status}): {_error(body)}")
        return 1
    if args.json:
        print(json.dumps(body["requests"], indent=2))
        return 0
    head = ("REQUEST", "MODE", "RULE", "SUBJECT", "TARGET")
    widths = (17, 8, 20, 16, 12)
    _say(
        " ".join(f"{h:<{w}}" for h, w in zip(head, widths, strict=True))
        + " VOTES  SUMMARY"
    )
    for row in body["requests"]:
        shown = {k: visible(row[k]) for k in ("id", "mode", "rule", "subject")}
        _say(
            f"{shown['id']:<17} {shown['mode']:<8} {shown['rule']:<20} "
            f"{shown['subject']:<16} {visible(row['target']):<12} "
            f"{row['approvals']}/{row['quorum']:<4} {row['summary']}"
        )
    return 0


def _when(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _approvals_show(config: Config, args: argparse.Namespace) -> int:
    path = f"/approvals/{urllib.parse.quote(args.request_id, safe='')}"
    status, body = _call(config, args, "GET", path, authorization=_admin_header(config))
    if status != 200:
        _complain(f"refused ({status}): {_error(body)}")
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    approvals = sum(1 for v in body["votes"] if v.get("decision") == "approve")
    _say(f"request {body['id']}: rule {body['rule']} ({body['mode']})")
    _say(f"  requester: {body['subject']}")
    _say(f"  target: {body['target']}")
    _say(f"  approvals: {approvals} of {body['quorum']}")
    _say(f"  open until: {_when(body['expires'])}")
    if body.get("reason"):
        _say(f"  reason: {body['reason']}")
    _say(f"  summary: {body['summary']}")
    for vote in body["votes"]:
        said = f": {vote['reason']}" if vote.get("reason") else ""
        _say(f"  vote: {vote['approver']} {vote['decision']}{said}")
    decision = body.get("decision")
    _say(f"  decision: {decision['state'] if decision else 'none yet'}")
    return 0


def _approver_password(args: argparse.Namespace) -> str:
    if args.password_file:
        return Path(args.password_file).read_text(encoding="utf-8").rstrip("\r\n")
    from_env = os.environ.get("HOOPGATE_APPROVER_PASSWORD")
    if from_env:
        return from_env
    return getpass.getpass(f"directory password of {args.user}: ")


def _approvals_vote(config: Config, args: argparse.Namespace) -> int:
    try:
        password = _approver_password(args)
    except (OSError, EOFError) as e:
        _complain(f"no password: {e}")
        return 2
    basic = base64.b64encode(f"{args.user}:{password}".encode()).decode()
    path = f"/approvals/{urllib.parse.quote(args.request_id, safe='')}/{args.which}"
    status, body = _call(
        config,
        args,
        "POST",
        path,
        {"reason": args.reason or ""},
        authorization=f"Basic {basic}",
    )
    if status != 200:
        _complain(f"refused ({status}): {_error(body)}")
        return 1
    _say(f"{body['message']} ({body['approvals']} of {body['quorum']} approvals)")
    return 0


def _approvals_request(config: Config, args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("HOOPGATE_TOKEN", "")
    if args.token_file:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    if not token:
        _complain("no token: give --token, --token-file or HOOPGATE_TOKEN")
        return 2
    body = {"target": args.target, "duration": args.duration, "reason": args.reason}
    status, answer = _call(
        config,
        args,
        "POST",
        "/approvals/requests",
        body,
        authorization=f"Bearer {token}",
    )
    if status != 201:
        _complain(f"refused ({status}): {_error(answer)}")
        return 1
    _say(
        f"request {answer['request_id']} (rule {answer['rule']}) sent to "
        f"{answer['approvers']} approvers; {answer['quorum']} must approve"
    )
    return 0


def _approvals_parser(commands: Any, admin: argparse.ArgumentParser) -> None:
    approvals = commands.add_parser("approvals", help="approval requests")
    which = approvals.add_subparsers(dest="which", required=True)
    listing = which.add_parser(
        "list", help="list open approval requests", parents=[admin]
    )
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_approvals_list)
    show = which.add_parser(
        "show", help="one request, its votes and its decision", parents=[admin]
    )
    show.add_argument("request_id", metavar="REQUEST")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_approvals_show)
    for verb in ("approve", "deny"):
        vote = which.add_parser(
            verb,
            help=f"{verb} a request, signed in with your directory login",
            description=(
                "The password comes from --password-file, from "
                "HOOPGATE_APPROVER_PASSWORD, or is asked for."
            ),
            parents=[admin],
        )
        vote.add_argument("request_id", metavar="REQUEST")
        vote.add_argument("--reason", default="")
        vote.add_argument(
            "--user",
            default=os.environ.get("HOOPGATE_APPROVER") or getpass.getuser(),
            help="your directory login (default: HOOPGATE_APPROVER or your user)",
        )
        vote.add_argument("--password-file")
        vote.set_defaults(run=_approvals_vote)
    request = which.add_parser(
        "request",
        help="ask for access to a target that needs approval",
        description=(
            "The OIDC token comes from --token, --token-file or HOOPGATE_TOKEN."
        ),
        parents=[admin],
    )
    request.add_argument("target", metavar="TARGET")
    request.add_argument("--for", dest="duration", required=True, help="such as 2h")
    request.add_argument("--reason", required=True)
    request.add_argument("--token")
    request.add_argument("--token-file")
    request.set_defaults(run=_approvals_request)


# -- SSH certificates ----------------------------------------------------------


def _certificate_path(public_key: Path) -> Path:
    # ssh-keygen's naming: NAME.pub is certified as NAME-cert.pub.
    name = public_key.name.removesuffix(".pub")
    return public_key.with_name(f"{name}-cert.pub")


def _read_public_key(path: Path) -> str:
    text = path.read_text(encoding="ascii").strip()
    if "PRIVATE KEY" in text:
        # Never send a private key anywhere, not even to the gateway.
        raise ValueError(f"{path} is a private key: give its .pub file")
    return text


def _ssh_cert(config: Config, args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(args.token_env, "")
    if args.token_file:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    if not token:
        _complain(f"no token: give --token, --token-file or set {args.token_env}")
        return 2
    key = Path(args.public_key)
    try:
        public = _read_public_key(key)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        _complain(f"cannot use {key}: {e}")
        return 2

    body: dict[str, Any] = {"token": token, "public_key": public}
    if args.listener:
        body["listener"] = args.listener
    status, answer = _call(
        config, args, "POST", "/plugins/ssh/certificates", body, secret_body=True
    )
    if status != 200:
        _complain(f"refused ({status}): {_error(answer)}")
        return 1
    return _write_certificate(_certificate_path(key), answer)


def _write_certificate(path: Path, answer: dict[str, Any]) -> int:
    partial = path.with_name(path.name + ".tmp")
    try:
        partial.write_text(answer["certificate"] + "\n", encoding="ascii")
        partial.replace(path)
    except OSError as e:
        _complain(f"cannot write {path}: {e.strerror}")
        return 1
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(answer["valid_before"]))
    principals = ", ".join(answer["principals"])
    _say(f"wrote {path} (principal {principals}, valid until {until})")
    return 0


def _ssh_cert_parser(commands: Any, admin: argparse.ArgumentParser) -> None:
    cert = commands.add_parser(
        "ssh-cert",
        parents=[admin],
        help="get a short-lived SSH certificate for a public key",
        description=(
            "Send an OIDC token and a public key to the gateway's admin "
            "listener; write the OpenSSH certificate it signs beside the "
            "key (NAME.pub gets NAME-cert.pub), for ssh -i NAME. The token "
            "comes from --token, --token-file or the variable --token-env "
            "names."
        ),
    )
    cert.add_argument("--public-key", required=True, metavar="FILE")
    cert.add_argument(
        "--token", help="the token (process lists show it: prefer the variable)"
    )
    cert.add_argument("--token-file")
    cert.add_argument(
        "--token-env",
        default="HOOPGATE_TOKEN",
        metavar="NAME",
        help="environment variable holding the token (default HOOPGATE_TOKEN)",
    )
    cert.add_argument("--listener", help="the SSH listener, when several have a CA")
    cert.set_defaults(run=_ssh_cert)


def _sessions_parser(commands: Any, admin: argparse.ArgumentParser) -> None:
    sessions = commands.add_parser("sessions", help="recorded and live sessions")
    which = sessions.add_subparsers(dest="which", required=True)
    listing = which.add_parser("list", help="list recorded sessions")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_sessions_list, offline=True)
    show = which.add_parser("show", help="show one session's recording")
    show.add_argument("session_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_sessions_show, offline=True)
    terminate = which.add_parser(
        "terminate",
        help="end a live session, in whichever gateway process runs it",
        parents=[admin],
    )
    terminate.add_argument("session_id")
    terminate.set_defaults(run=_sessions_terminate)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hoopgate", description="Operate hoopgate.")
    parser.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    parser.set_defaults(offline=False)
    commands = parser.add_subparsers(dest="command", required=True)
    admin = _admin_options()

    _sessions_parser(commands, admin)
    commands.add_parser(
        "reload", help="reload the configuration", parents=[admin]
    ).set_defaults(run=_reload)
    commands.add_parser("check", help="validate the configuration").set_defaults(
        run=_check
    )
    _policy_parser(commands)
    _approvals_parser(commands, admin)
    _ssh_cert_parser(commands, admin)
    return parser


def main(
    argv: list[str] | None = None,
    plugins: Mapping[str, IProtocolPlugin] | None = None,
) -> int:
    """
    Run the C{hoopgate} command.

    Args:
        argv: The arguments; the process's when not given.
        plugins: Protocol plugins by name; discovered as the
            configuration says when not given.
    """
    args = _parser().parse_args(argv)
    try:
        # Commands that only read recordings or judge policy read the
        # configuration offline: not the secrets and files only a
        # running gateway uses.
        config = load_config(args.config, plugins, offline=args.offline)
    except ConfigError as e:
        _complain(f"invalid configuration: {e}")
        return 2
    try:
        result: int = args.run(config, args)
    except CommandError as e:
        _complain(e)
        return e.code
    return result


def entry() -> None:
    """
    The console script.  When standard output is closed early (C{|
    head}), it stops quietly, with the status of a process SIGPIPE ended,
    as Unix tools do.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # What is still buffered can go nowhere; without this, the
        # interpreter's own flush at exit would complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + signal.SIGPIPE
    raise SystemExit(code)


if __name__ == "__main__":
    entry()
