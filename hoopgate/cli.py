"""
The operator command line: C{hoopgate sessions|reload|check}.

test-case-name: tests.unit.test_cli
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hoopgate._config import Config, load_config
from hoopgate._configreader import ConfigError
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
        f"{len(config.targets)} targets, {len(config.policy.access)} access rules)"
    )
    return 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    """
    Run the C{hoopgate} command.
    """
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
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
