"""
What C{hoopgate sessions list} and C{sessions show} make of a recording.

Pure functions from recording lines (L{hoopgate._recording}) to a
session's summary, the header of C{sessions show} and one line of text
per recorded event.  Recordings are read as they are: a field a line
lacks (an older or cut recording) is shown as C{-} or left out, never
an error.  Nothing here escapes client text: the CLI does, for every
line it prints.

test-case-name: tests.unit.test_cli_sessions
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

Line = dict[str, Any]

#: Events that stand for work a client asked the target to do.
_STATEMENT: Final = "statement"
_COMMAND: Final = "command"


def _first(lines: Iterable[Line], event: str) -> Line | None:
    return next((x for x in lines if x.get("event") == event), None)


def _count(lines: Iterable[Line], event: str) -> int:
    return sum(1 for x in lines if x.get("event") == event)


def _head(lines: Sequence[Line]) -> Line:
    """
    The line that best says who asked for the session and where.
    """
    for event in ("session.opened", "session.refused"):
        found = _first(lines, event)
        if found is not None:
            return found
    with_identity = next((x for x in lines if x.get("identity")), None)
    return with_identity or (lines[0] if lines else {})


def _state(lines: Sequence[Line]) -> str:
    if _first(lines, "session.refused") is not None:
        return "refused"
    if _first(lines, "session.closed") is not None:
        return "closed"
    return "open"


def summary(session_id: str, lines: Sequence[Line]) -> dict[str, Any]:
    """
    One row of C{sessions list}.

    Args:
        session_id: The recording's name.
        lines: Its lines.

    Returns:
        The session id, subject, target, protocol, state (C{open},
        C{closed}, C{refused}), the statements and commands it
        recorded, and when it started and ended (POSIX times, C{None}
        when unknown).
    """
    head = _head(lines)
    identity = head.get("identity") or {}
    end = _first(lines, "session.closed") or _first(lines, "session.refused")
    return {
        "session_id": session_id,
        "subject": identity.get("subject") or head.get("subject"),
        "target": head.get("target"),
        "protocol": head.get("protocol"),
        "state": _state(lines),
        "statements": _count(lines, _STATEMENT),
        "commands": _count(lines, _COMMAND),
        "started": lines[0].get("at") if lines else None,
        "ended": end.get("at") if end else None,
    }


def when(seconds: object) -> str:
    """
    A POSIX time as UTC ISO 8601 to the second, or C{-}.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _or_dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _identity_text(head: Line) -> str:
    identity = head.get("identity") or {}
    subject = _or_dash(identity.get("subject") or head.get("subject"))
    if not identity:
        return subject
    groups = ", ".join(map(str, identity.get("groups") or [])) or "none"
    return f"{subject} (issuer {_or_dash(identity.get('issuer'))}; groups {groups})"


def _ending(lines: Sequence[Line]) -> str:
    closed = _first(lines, "session.closed")
    if closed is not None:
        return f"{when(closed.get('at'))} ({_or_dash(closed.get('reason'))})"
    refused = _first(lines, "session.refused")
    if refused is not None:
        return f"{when(refused.get('at'))} (refused: {_or_dash(refused.get('reason'))})"
    return "- (open)"


def header(session_id: str, lines: Sequence[Line]) -> list[str]:
    """
    The lines C{sessions show} prints before the events: who, where,
    from where, when it started and ended, what it ran.
    """
    head = _head(lines)
    row = summary(session_id, lines)
    opened = _first(lines, "session.opened") or {}
    requested = _first(lines, "session.requested") or {}
    target = _or_dash(row["target"])
    if opened.get("upstream_user"):
        target += f" as {opened['upstream_user']}"
    if requested.get("login"):
        target += f" (login {requested['login']} asked for)"
    return [
        f"session {session_id} ({_or_dash(row['protocol'])}, {row['state']})",
        f"  subject: {_identity_text(head)}",
        f"  target: {target}",
        f"  peer: {_or_dash(head.get('peer') or requested.get('peer'))}",
        f"  started: {when(row['started'])}",
        f"  ended: {_ending(lines)}",
        f"  statements: {row['statements']}, commands: {row['commands']}",
    ]


# -- one line per event ---------------------------------------------------------


def _reason(line: Line) -> str:
    """
    Why the line's verdict is what it is, when it says: the deciding
    rule and its detail for a deny, the wait for a hold, the rules that
    noted it (dry-run hits, approvals).
    """
    notes = []
    reason = line.get("reason")
    if line.get("verdict") == "deny" and isinstance(reason, dict):
        by = f" by rule {reason['rule']}" if reason.get("rule") else ""
        notes.append(
            f"denied{by} ({_or_dash(reason.get('code'))}): "
            f"{_or_dash(reason.get('detail'))}"
        )
    if line.get("verdict") == "hold" and line.get("hold_reason"):
        notes.append(f"held: {line['hold_reason']}")
    for kind, label in (("dry_run", "dry-run hits"), ("approved", "approved by rule")):
        names = line.get(kind)
        if isinstance(names, list) and names:
            notes.append(f"{label} {', '.join(map(str, names))}")
    return f" [{'; '.join(notes)}]" if notes else ""


def _session_requested(line: Line) -> str:
    text = _or_dash(line.get("target"))
    if line.get("login"):
        text += f" login {line['login']}"
    text += f" from {_or_dash(line.get('peer'))}"
    if line.get("presented"):
        text += f" ({line['presented']})"
    return text


def _session_opened(line: Line) -> str:
    subject = (line.get("identity") or {}).get("subject") or line.get("subject")
    return (
        f"{_or_dash(subject)} -> {_or_dash(line.get('target'))} "
        f"as {_or_dash(line.get('upstream_user'))}"
    )


def _session_refused(line: Line) -> str:
    return f"{_or_dash(line.get('reason'))}: {_or_dash(line.get('detail'))}"


def _statement(line: Line) -> str:
    text = str(line.get("text", ""))
    length = line.get("text_length")
    if isinstance(length, int) and length > len(text):
        text += f"... ({length} characters in all)"
    return text


def _bound(line: Line) -> str:
    count = line.get("parameters_count", len(line.get("parameters") or []))
    return f"portal {line.get('portal') or '(unnamed)'}: {count} parameter(s)"


def _completed(line: Line) -> str:
    pieces = [
        _or_dash(line.get("status")),
        str(line.get("command_tag") or ""),
        f"rows={line.get('rows', 0)}",
        str(line.get("error_code") or ""),
    ]
    text = " ".join(p for p in pieces if p)
    if line.get("error_message"):
        text += f": {line['error_message']}"
    return text


def _described(line: Line) -> str:
    columns = line.get("columns") or []
    names = [str(c.get("name", "?")) for c in columns if isinstance(c, dict)]
    masked = [
        str(c.get("name", "?"))
        for c in columns
        if isinstance(c, dict) and c.get("masked")
    ]
    text = f"columns {', '.join(names)}" if names else "no columns"
    return text + (f" (masked: {', '.join(masked)})" if masked else "")


def _sample(line: Line) -> str:
    text = f"{line.get('total_rows', 0)} rows, {line.get('total_bytes', 0)} bytes"
    counts = [
        f"{m.get('column')} {m.get('count')} ({m.get('rule')}, {m.get('detector')}"
        + (", dry-run)" if m.get("dry_run") else ")")
        for m in line.get("masked") or []
        if isinstance(m, dict)
    ]
    return text + (f"; masked: {', '.join(counts)}" if counts else "")


def _diagnostic(line: Line) -> str:
    fields = {
        str(f[0]): str(f[1])
        for f in line.get("fields") or []
        if isinstance(f, list) and len(f) == 2
    }
    message = f": {fields['M']}" if "M" in fields else ""
    return f"{_or_dash(line.get('severity'))} {_or_dash(line.get('code'))}{message}"


def _command(line: Line) -> str:
    return str(line.get("command") or "(interactive shell)")


def _file(line: Line) -> str:
    operations = ", ".join(map(str, line.get("operations") or [])) or "-"
    second = f" -> {line['target_path']}" if line.get("target_path") else ""
    return f"{operations} {_or_dash(line.get('path'))}{second}"


def _forward(line: Line) -> str:
    text = f"{_or_dash(line.get('host'))}:{_or_dash(line.get('port'))}"
    if line.get("originator"):
        text += f" from {line['originator']}:{line.get('originator_port', 0)}"
    return text


def _http(line: Line) -> str:
    query = f"?{line['query']}" if line.get("query") else ""
    return f"{_or_dash(line.get('method'))} {_or_dash(line.get('path'))}{query}"


def _vote(vote: Any) -> str:
    if not isinstance(vote, dict):
        return str(vote)
    said = f" ({vote['reason']})" if vote.get("reason") else ""
    return f"{_or_dash(vote.get('approver'))} {_or_dash(vote.get('decision'))}{said}"


def _approval(line: Line) -> str:
    votes = line.get("votes") or []
    text = (
        f"{_or_dash(line.get('state'))}: request {_or_dash(line.get('request_id'))}, "
        f"rule {_or_dash(line.get('rule'))} ({_or_dash(line.get('mode'))}, "
        f"quorum {line.get('quorum', 1)})"
    )
    if votes:
        text += f"; votes: {', '.join(_vote(v) for v in votes)}"
    if line.get("detail"):
        text += f"; {line['detail']}"
    return text


def _notice(line: Line) -> str:
    detail = f": {line['detail']}" if line.get("detail") else ""
    return f"{_or_dash(line.get('kind'))}{detail}"


def _closed(line: Line) -> str:
    return _or_dash(line.get("reason"))


def _exit(line: Line) -> str:
    if line.get("signal"):
        core = " (core dumped)" if line.get("core_dumped") else ""
        return f"signal {line['signal']}{core}"
    return f"status {_or_dash(line.get('status'))}"


def _sftp(line: Line) -> str:
    second = f" -> {line['target_path']}" if line.get("target_path") else ""
    text = (
        f"{_or_dash(line.get('operation'))} {_or_dash(line.get('path'))}{second}: "
        f"{_or_dash(line.get('status'))}"
    )
    if line.get("operation") == "open":
        mode = f"mode {line['mode']}, " if line.get("mode") else ""
        text += (
            f" ({mode}{line.get('bytes_read', 0)} bytes read, "
            f"{line.get('bytes_written', 0)} written)"
        )
    return text


def _subsystem(line: Line) -> str:
    return _or_dash(line.get("subsystem"))


def _pty(line: Line) -> str:
    return (
        f"{_or_dash(line.get('term'))} "
        f"{line.get('columns', '?')}x{line.get('rows', '?')}"
    )


def _forward_closed(line: Line) -> str:
    error = f" ({line['error']})" if line.get("error") else ""
    return (
        f"{_forward(line)} {_or_dash(line.get('status'))}{error}: "
        f"{line.get('bytes_to_target', 0)} bytes sent, "
        f"{line.get('bytes_from_target', 0)} received"
    )


#: How each recorded event is shown, by its stable name.
_DETAILS: Final[dict[str, Callable[[Line], str]]] = {
    "session.requested": _session_requested,
    "session.opened": _session_opened,
    "session.refused": _session_refused,
    "session.closed": _closed,
    "statement": _statement,
    "statement.bound": _bound,
    "statement.completed": _completed,
    "result.described": _described,
    "result.sample": _sample,
    "diagnostic": _diagnostic,
    "command": _command,
    "file.requested": _file,
    "forward.requested": _forward,
    "http.request": _http,
    "approval": _approval,
    "notice": _notice,
    "ssh.exit": _exit,
    "ssh.sftp": _sftp,
    "ssh.subsystem": _subsystem,
    "ssh.pty": _pty,
    "ssh.forward.closed": _forward_closed,
}

#: Events whose own text already says why (an approval's state and
#: detail), so the verdict's reason is not repeated.
_SAYS_WHY: Final = frozenset({"approval", "session.refused"})


def describe(line: Line) -> str:
    """
    One recorded event as one line: sequence number, event, verdict,
    then what it was (the statement, the command, the file and what
    was done to it, an approval's state and votes, ...) and why the
    verdict is what it is.
    """
    event = str(line.get("event", "?"))
    verdict = str(line.get("verdict", ""))
    show = _DETAILS.get(event)
    detail = show(line) if show is not None else ""
    if event not in _SAYS_WHY:
        detail += _reason(line)
    return f"{line.get('seq', ''):>5} {event:<20} {verdict:<7} {detail}".rstrip()
