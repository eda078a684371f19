"""
The operator command line: C{hoopgate sessions|reload|check|policy|approvals}.

test-case-name: tests.unit.test_cli
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hoopgate._config import Config, TargetConfig, load_config
from hoopgate._configreader import ConfigError
from hoopgate._events import StatementPart, StatementReceived
from hoopgate._guardrails import Evaluation, RuleHit, evaluate
from hoopgate._identity import Identity
from hoopgate._interfaces import IProtocolPlugin
from hoopgate._policy import AccessDecision
from hoopgate._recording import read_recording

DEFAULT_CONFIG = os.environ.get("HOOPGATE_CONFIG", "etc/hoopgate.yaml")


def _admin_url(config: Config) -> str:
    parts = dict(
        p.split("=", 1) for p in config.gateway.admin_listen.split(":")[2:] if "=" in p
    )
    port = config.gateway.admin_listen.split(":")[1]
    host = parts.get("interface", "127.0.0.1")
    # A wildcard listener is reached on loopback.
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def _summary(path: Path) -> dict[str, Any]:
    lines = read_recording(path)
    first = next((x for x in lines if x.get("event") == "session.opened"), None)
    refused = next((x for x in lines if x.get("event") == "session.refused"), None)
    closed = next((x for x in lines if x.get("event") == "session.closed"), None)
    head = first or refused or (lines[0] if lines else {})
    identity = head.get("identity") or {}
    return {
        "session_id": path.stem,
        "subject": identity.get("subject") or head.get("subject"),
        "target": head.get("target"),
        "protocol": head.get("protocol"),
        "state": "refused" if refused else ("closed" if closed else "open"),
        "statements": sum(1 for x in lines if x.get("event") == "statement"),
        "started": head.get("at"),
    }


def _sessions_list(config: Config, args: argparse.Namespace) -> int:
    folder = Path(config.gateway.recordings)
    paths = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    rows = [_summary(p) for p in paths[-args.limit :]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'SESSION':<32} {'STATE':<8} {'SUBJECT':<20} {'TARGET':<14} STATEMENTS")
    for row in rows:
        print(
            f"{row['session_id']:<32} {row['state']:<8} {row['subject'] or '-':<20} "
            f"{row['target'] or '-':<14} {row['statements']}"
        )
    return 0


def _sessions_show(config: Config, args: argparse.Namespace) -> int:
    path = Path(config.gateway.recordings) / f"{args.session_id}.jsonl"
    if "/" in args.session_id or not path.is_file():
        print(f"no recording for session {args.session_id}", file=sys.stderr)
        return 1
    for line in read_recording(path):
        if args.json:
            print(json.dumps(line))
        else:
            print(_describe(line))
    return 0


def _describe(line: dict[str, Any]) -> str:
    event = line.get("event", "?")
    verdict = line.get("verdict", "")
    detail = _detail(event, line)
    return f"{line.get('seq', ''):>5} {event:<20} {verdict:<6} {detail}"


def _detail(event: str, line: dict[str, Any]) -> str:
    if event == "session.opened":
        return (
            f"{line['identity']['subject']} -> {line['target']} "
            f"as {line['upstream_user']}"
        )
    if event == "session.refused":
        return f"{line['reason']}: {line['detail']}"
    if event == "statement":
        return str(line["text"])
    if event == "statement.completed":
        return (
            f"{line['status']} {line['command_tag']} "
            f"rows={line['rows']} {line['error_code']}"
        ).rstrip()
    if event == "session.closed":
        return str(line["reason"])
    return ""


def _reload(config: Config, args: argparse.Namespace) -> int:
    request = urllib.request.Request(  # noqa: S310 - admin URL from config
        _admin_url(config) + "/reload", method="POST", data=b""
    )
    token = config.gateway.admin_token
    if token is not None:
        request.add_header("Authorization", f"Bearer {token.reveal()}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            print(json.loads(response.read())["status"])
            return 0
    except urllib.error.HTTPError as e:
        print(f"reload refused: {json.loads(e.read()).get('error')}", file=sys.stderr)
    except OSError as e:
        print(f"cannot reach the gateway's admin listener: {e}", file=sys.stderr)
    return 1


def _check(config: Config, args: argparse.Namespace) -> int:
    print(
        f"{config.source}: valid ({len(config.listeners)} listeners, "
        f"{len(config.targets)} targets, {len(config.policy.access)} access rules, "
        f"{len(config.policy.guardrails)} guardrails)"
    )
    return 0


Classify = Callable[[str], tuple[StatementPart, ...]]


def _classifier(plugin: IProtocolPlugin | None) -> Classify:
    # The plugin's own classifier (IStatementClassifier), so the test
    # judges text as the gateway does; without one, statements carry no
    # parts and count as one part of effect unknown, as in the gateway.
    classify = getattr(plugin, "classify", None)
    if not callable(classify):
        return lambda text: ()

    def guarded(text: str) -> tuple[StatementPart, ...]:
        try:
            return tuple(classify(text))
        except Exception as e:
            # Whatever went wrong, the text counts as unclassifiable.
            problem = f"the classifier failed: {type(e).__name__}: {e}"
            return (
                StatementPart(text=text, command="", effect="unknown", problem=problem),
            )

    return guarded


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
    text: str, evaluation: Evaluation, access: dict[str, Any]
) -> dict[str, Any]:
    denied = evaluation.denied or not access["allowed"]
    if not access["allowed"]:
        decided_by, rule = "access", access["rule"]
    elif evaluation.denied:
        decided_by, rule = "guardrails", evaluation.deciding_rule
    else:
        decided_by, rule = None, None
    return {
        "statement": text,
        "verdict": "deny" if denied else "allow",
        "decided_by": decided_by,
        "rule": rule,
        "blocked": _hits(evaluation.blocked),
        "dry_run": _hits(evaluation.dry_run),
        "rules_applied": list(evaluation.applied),
        "parts": [
            {
                "text": p.text,
                "command": p.command,
                "effect": p.effect,
                "reads": list(p.reads),
                "writes": list(p.writes),
                "shapes": list(p.shapes),
                "problem": p.problem,
            }
            for p in evaluation.parts
        ],
    }


def _test_statements(
    config: Config,
    target: TargetConfig,
    identity: Identity,
    access: dict[str, Any],
    texts: list[str],
) -> list[dict[str, Any]]:
    classify = _classifier(config.plugins.get(target.protocol))
    records = []
    for number, text in enumerate(texts, 1):
        event = StatementReceived(
            session_id="policy-test",
            protocol=target.protocol,
            statement_id=f"policy-test.{number}",
            text=text,
            parts=classify(text),
        )
        evaluation = evaluate(config.policy.guardrails, identity, target.name, event)
        records.append(_test_record(text, evaluation, access))
    return records


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
    elif record["decided_by"] == "access" and record["rule"]:
        line += f" (access rule {record['rule']})"
    elif record["decided_by"] == "access":
        line += " (no access rule matches)"
    if record["dry_run"]:
        names = ", ".join(hit["rule"] for hit in record["dry_run"])
        line += f"; dry-run hits: {names}"
    return line


def _print_test(number: int, record: dict[str, Any]) -> None:
    print(f"statement {number}: {record['statement']}")
    print(f"  verdict: {_verdict_line(record)}")
    for hit in record["blocked"]:
        print(f"  blocked by {hit['rule']}: {', '.join(hit['reasons'])}")
    for hit in record["dry_run"]:
        print(f"  dry-run {hit['rule']} would block: {', '.join(hit['reasons'])}")
    parts = record["parts"]
    if not parts:
        print("  no statement to run")
    for index, part in enumerate(parts, 1):
        print(_describe_part(index, part, len(parts) > 1))


def _policy_test(config: Config, args: argparse.Namespace) -> int:
    target = config.targets.get(args.target)
    if target is None:
        known = ", ".join(sorted(config.targets)) or "none"
        print(f"no target named {args.target!r} (known: {known})", file=sys.stderr)
        return 2

    texts = args.statements or [line.rstrip("\r\n") for line in sys.stdin]
    texts = [t for t in texts if t.strip()]
    identity = Identity(
        subject=args.subject, issuer="hoopgate policy test", groups=tuple(args.group)
    )
    decision = config.policy.authorize(identity, target.name)
    summary = _access_record(identity, target.name, decision)
    records = _test_statements(config, target, identity, summary, texts)

    if args.json:
        print(json.dumps({"access": summary, "results": records}, indent=2))
    else:
        print(f"access: {summary['summary']}")
        for number, record in enumerate(records, 1):
            _print_test(number, record)
    return _expected(args.expect, records)


def _expected(expect: str | None, records: list[dict[str, Any]]) -> int:
    if expect is None:
        return 0
    wrong = [n for n, r in enumerate(records, 1) if r["verdict"] != expect]
    for number in wrong:
        print(f"statement {number}: expected {expect}", file=sys.stderr)
    return 1 if wrong else 0


def _policy_parser(commands: Any) -> None:
    policy = commands.add_parser("policy", help="policy tools")
    which = policy.add_subparsers(dest="which", required=True)
    test = which.add_parser(
        "test",
        help="show the verdict and deciding rule for statements",
        description=(
            "Judge statements for an identity on a target as the gateway "
            "would, with the target protocol's own classifier. Statements "
            "come from the arguments, or from standard input, one per line."
        ),
    )
    test.add_argument("--subject", required=True)
    test.add_argument("--group", action="append", default=[])
    test.add_argument("--target", required=True)
    test.add_argument("--json", action="store_true")
    test.add_argument(
        "--expect",
        choices=("allow", "deny"),
        help="exit 1 unless every statement gets this verdict",
    )
    test.add_argument("statements", nargs="*", metavar="STATEMENT")
    test.set_defaults(run=_policy_test)


# -- approvals --------------------------------------------------------------


def _call(
    config: Config,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    authorization: str | None = None,
) -> tuple[int, Any]:
    """
    Call the admin listener's approval API; return the status and the
    decoded answer (an error's too).
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - admin URL from config
        _admin_url(config) + path, method=method, data=data
    )
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        with e:
            try:
                return e.code, json.loads(e.read() or b"{}")
            except ValueError:
                return e.code, {"error": e.reason}


def _admin_header(config: Config) -> str | None:
    token = config.gateway.admin_token
    return f"Bearer {token.reveal()}" if token is not None else None


def _unreachable(e: OSError) -> int:
    print(f"cannot reach the gateway's admin listener: {e}", file=sys.stderr)
    return 1


def _approvals_list(config: Config, args: argparse.Namespace) -> int:
    try:
        status, body = _call(config, "GET", "/approvals", None, _admin_header(config))
    except OSError as e:
        return _unreachable(e)
    if status != 200:
        print(f"refused: {body.get('error')}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body["requests"], indent=2))
        return 0
    head = ("REQUEST", "MODE", "RULE", "SUBJECT", "TARGET")
    widths = (17, 8, 20, 16, 12)
    print(
        " ".join(f"{h:<{w}}" for h, w in zip(head, widths, strict=True)),
        "VOTES  SUMMARY",
    )
    for row in body["requests"]:
        print(
            f"{row['id']:<17} {row['mode']:<8} {row['rule']:<20} "
            f"{row['subject']:<16} {row['target']:<12} "
            f"{row['approvals']}/{row['quorum']:<4} {row['summary']}"
        )
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
        print(f"no password: {e}", file=sys.stderr)
        return 2
    basic = base64.b64encode(f"{args.user}:{password}".encode()).decode()
    path = f"/approvals/{urllib.parse.quote(args.request_id, safe='')}/{args.which}"
    try:
        status, body = _call(
            config, "POST", path, {"reason": args.reason or ""}, f"Basic {basic}"
        )
    except OSError as e:
        return _unreachable(e)
    if status != 200:
        print(f"refused ({status}): {body.get('error')}", file=sys.stderr)
        return 1
    print(f"{body['message']} ({body['approvals']} of {body['quorum']} approvals)")
    return 0


def _approvals_request(config: Config, args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("HOOPGATE_TOKEN", "")
    if args.token_file:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    if not token:
        print("no token: give --token, --token-file or HOOPGATE_TOKEN", file=sys.stderr)
        return 2
    body = {"target": args.target, "duration": args.duration, "reason": args.reason}
    try:
        status, answer = _call(
            config, "POST", "/approvals/requests", body, f"Bearer {token}"
        )
    except OSError as e:
        return _unreachable(e)
    if status != 201:
        print(f"refused ({status}): {answer.get('error')}", file=sys.stderr)
        return 1
    print(
        f"request {answer['request_id']} (rule {answer['rule']}) sent to "
        f"{answer['approvers']} approvers; {answer['quorum']} must approve"
    )
    return 0


def _approvals_parser(commands: Any) -> None:
    approvals = commands.add_parser("approvals", help="approval requests")
    which = approvals.add_subparsers(dest="which", required=True)
    listing = which.add_parser("list", help="list open approval requests")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_approvals_list)
    for verb in ("approve", "deny"):
        vote = which.add_parser(
            verb,
            help=f"{verb} a request, signed in with your directory login",
            description=(
                "The password comes from --password-file, from "
                "HOOPGATE_APPROVER_PASSWORD, or is asked for."
            ),
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
    )
    request.add_argument("target", metavar="TARGET")
    request.add_argument("--for", dest="duration", required=True, help="such as 2h")
    request.add_argument("--reason", required=True)
    request.add_argument("--token")
    request.add_argument("--token-file")
    request.set_defaults(run=_approvals_request)


# -- SSH certificates ----------------------------------------------------------


def _admin_https(config: Config, args: argparse.Namespace) -> tuple[str, Any]:
    """
    The admin listener's base URL and the TLS context to reach it with
    (C{None} over plain HTTP).  Over HTTPS the configured certificate
    itself is trusted besides C{--ca-file} or the system's CAs: the CLI
    reads the gateway's own configuration.
    """
    url = args.url or _admin_url(config)
    files = config.gateway.admin_tls
    if files is not None and not args.url:
        url = "https" + url.removeprefix("http")
    if not url.startswith("https:"):
        return url, None
    context = ssl.create_default_context(cafile=args.ca_file)
    if files is not None and Path(files.certificate).is_file():
        context.load_verify_locations(files.certificate)
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return url, context


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
        print(
            f"no token: give --token, --token-file or set {args.token_env}",
            file=sys.stderr,
        )
        return 2
    key = Path(args.public_key)
    try:
        public = _read_public_key(key)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        print(f"cannot use {key}: {e}", file=sys.stderr)
        return 2

    body: dict[str, Any] = {"token": token, "public_key": public}
    if args.listener:
        body["listener"] = args.listener
    try:
        status, answer = _post_json(config, args, "/plugins/ssh/certificates", body)
    except OSError as e:
        return _unreachable(e)
    if status != 200:
        print(f"refused ({status}): {answer.get('error')}", file=sys.stderr)
        return 1
    return _write_certificate(_certificate_path(key), answer)


def _post_json(
    config: Config, args: argparse.Namespace, path: str, body: dict[str, Any]
) -> tuple[int, Any]:
    url, context = _admin_https(config, args)
    request = urllib.request.Request(  # noqa: S310 - admin URL from config
        url + path, method="POST", data=json.dumps(body).encode()
    )
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=30, context=context
        ) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            try:
                return e.code, json.loads(e.read() or b"{}")
            except ValueError:
                return e.code, {"error": e.reason}


def _write_certificate(path: Path, answer: dict[str, Any]) -> int:
    partial = path.with_name(path.name + ".tmp")
    try:
        partial.write_text(answer["certificate"] + "\n", encoding="ascii")
        partial.replace(path)
    except OSError as e:
        print(f"cannot write {path}: {e.strerror}", file=sys.stderr)
        return 1
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(answer["valid_before"]))
    principals = ", ".join(answer["principals"])
    print(f"wrote {path} (principal {principals}, valid until {until})")
    return 0


def _ssh_cert_parser(commands: Any) -> None:
    cert = commands.add_parser(
        "ssh-cert",
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
    cert.add_argument("--url", help="the admin listener (default: from the config)")
    cert.add_argument("--ca-file", help="CA bundle to verify an HTTPS admin listener")
    cert.set_defaults(run=_ssh_cert)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hoopgate", description="Operate hoopgate.")
    parser.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    commands = parser.add_subparsers(dest="command", required=True)

    sessions = commands.add_parser("sessions", help="recorded sessions")
    which = sessions.add_subparsers(dest="which", required=True)
    listing = which.add_parser("list", help="list recorded sessions")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_sessions_list)
    show = which.add_parser("show", help="show one session's recording")
    show.add_argument("session_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_sessions_show)

    commands.add_parser("reload", help="reload the configuration").set_defaults(
        run=_reload
    )
    commands.add_parser("check", help="validate the configuration").set_defaults(
        run=_check
    )
    _policy_parser(commands)
    _approvals_parser(commands)
    _ssh_cert_parser(commands)
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
        config = load_config(args.config, plugins)
    except ConfigError as e:
        print(f"invalid configuration: {e}", file=sys.stderr)
        return 2
    result: int = args.run(config, args)
    return result


def entry() -> None:
    """
    The console script.
    """
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
