"""
Recording v1: one JSON-lines file per session.

Every line has the format version, a sequence number, the event name, the
verdict, the session id and the subject, then the event's own fields.
A verdict's notes add one list of rule names per kind (C{dry_run}: the
dry-run rules that would have refused the event).  Secrets never reach
it: fields marked secret are dropped, and statements that set passwords
lose their literals, in the whole text and in each classified part.
Values masking hides never reach it either: an error or notice is
written as masking rewrote it, and the session's masking rules mask
detected values and, for statements using masked columns in
expressions, every literal and bound parameter
(L{hoopgate._maskrules.RecordMasker}).  Each line is flushed as it is
written, so a crash loses nothing the client was already told.

test-case-name: tests.unit.test_recording
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from hoopgate._chain import Context
from hoopgate._events import (
    DiagnosticReceived,
    Event,
    SessionClosed,
    SessionRefused,
    StatementReceived,
)
from hoopgate._interfaces import IObserver
from hoopgate._maskrules import NO_MASKING, MaskingPolicy, RecordMasker
from hoopgate._redact import redact_passwords
from hoopgate._verdicts import Allow, Deny, Hold, Rewrite, Verdict

FORMAT_VERSION = 1

_FINAL = (SessionClosed, SessionRefused)


def _verdict_fields(verdict: Verdict) -> dict[str, Any]:
    fields = _verdict_kind(verdict)
    if isinstance(verdict, Allow | Deny | Rewrite):
        for note in verdict.notes:
            fields.setdefault(note.kind, []).append(note.rule)
    return fields


def _verdict_kind(verdict: Verdict) -> dict[str, Any]:
    if isinstance(verdict, Allow):
        return {"verdict": "allow"}
    if isinstance(verdict, Deny):
        reason = verdict.reason
        return {
            "verdict": "deny",
            "reason": {
                "code": reason.code,
                "detail": reason.detail,
                "rule": reason.rule,
            },
        }
    if isinstance(verdict, Hold):
        return {"verdict": "hold", "hold_reason": verdict.reason}
    if isinstance(verdict, Rewrite):
        return {"verdict": "rewrite"}
    return {"verdict": "unknown"}


_SCALARS = frozenset({str, int, float, bool, type(None)})
_FIELDS: dict[type, tuple[str, ...]] = {}


def _recordable(kind: type) -> tuple[str, ...]:
    """
    The names of an attrs class's fields that are not marked secret,
    worked out once per class (this runs for every event).
    """
    names = _FIELDS.get(kind)
    if names is None:
        names = tuple(
            a.name for a in attrs.fields(kind) if not a.metadata.get("secret", False)
        )
        _FIELDS[kind] = names
    return names


def _plain(value: object) -> Any:
    """
    Turn attrs values and tuples into JSON-ready dicts and lists.
    """
    kind = type(value)
    if kind in _SCALARS:
        return value
    if isinstance(value, tuple | list):
        return [v if type(v) in _SCALARS else _plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if attrs.has(kind):
        fields = {}
        for name in _recordable(kind):
            field = getattr(value, name)
            fields[name] = field if type(field) in _SCALARS else _plain(field)
        return fields
    return value


def event_fields(event: Event) -> dict[str, Any]:
    """
    The recordable fields of an event, secrets removed.
    """
    fields: dict[str, Any] = _plain(event)
    if isinstance(event, StatementReceived):
        fields["text"] = redact_passwords(event.text)
        for part in fields["parts"]:
            part["text"] = redact_passwords(part["text"])
    return fields


def _masking(context: Context) -> Any:
    masking = getattr(context.policy, "masking", None)
    if not isinstance(masking, MaskingPolicy) or not masking.rules:
        return NO_MASKING
    return masking.for_session(context.identity, context.target)


class RecordingFailedError(Exception):
    """
    A recording line could not be written.
    """


@implementer(IObserver)
class Recorder:
    """
    Writes each session's events to C{DIRECTORY/SESSION_ID.jsonl}.

    Args:
        directory: The recordings folder; created if absent.
        on_failure: Called with the session id when a line cannot be
            written (the gateway ends that session if policy says so).
    """

    _log = Logger()

    def __init__(
        self, directory: str, on_failure: Callable[[str], None] | None = None
    ) -> None:
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._files: dict[str, list[int]] = {}
        self._masker = RecordMasker()
        self.on_failure = on_failure

    def path_for(self, session_id: str) -> Path:
        """
        The file a session is recorded in.
        """
        return self._directory / f"{session_id}.jsonl"

    def _open(self, session_id: str) -> list[int]:
        """
        The open file of a session and its line counter, as C{[fd, seq]}.
        """
        entry = self._files.get(session_id)
        if entry is None:
            fd = os.open(
                self.path_for(session_id),
                os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                0o640,
            )
            entry = [fd, 0]
            self._files[session_id] = entry
        return entry

    def observe(self, event: Event, verdict: Verdict, context: Context) -> None:
        if isinstance(verdict, Rewrite) and isinstance(
            verdict.event, DiagnosticReceived
        ):
            # What the client got, never the target's unmasked text.
            event = verdict.event
        fields = event_fields(event)
        self._masker.mask(event, fields, _masking(context))
        line = {
            "v": FORMAT_VERSION,
            "event": event.name,
            "subject": context.identity.subject if context.identity else None,
            **_verdict_fields(verdict),
            **fields,
        }
        try:
            self._write(event.session_id, line, isinstance(event, _FINAL))
        except (OSError, TypeError, ValueError) as e:
            self._log.error(
                "Cannot record {event} of session {session_id}: {error}",
                event=event.name,
                session_id=event.session_id,
                error=str(e),
            )
            if self.on_failure is not None:
                self.on_failure(event.session_id)

    def _write(self, session_id: str, line: dict[str, Any], last: bool) -> None:
        # One unbuffered write per line: each line is in the kernel before
        # the client hears about what it records.
        entry = self._open(session_id)
        entry[1] += 1
        line["seq"] = entry[1]
        text = json.dumps(line, separators=(",", ":"), default=str) + "\n"
        data = text.encode("utf-8")
        written = os.write(entry[0], data)
        while written < len(data):
            written += os.write(entry[0], data[written:])
        if last:
            os.close(entry[0])
            del self._files[session_id]

    def close(self) -> None:
        """
        Close every open file (at shutdown).
        """
        for fd, _ in self._files.values():
            os.close(fd)
        self._files.clear()


def read_recording(path: Path) -> list[dict[str, Any]]:
    """
    Read a recording; a torn last line (a crash mid-write) is skipped.
    """
    lines = []
    with path.open(encoding="utf-8") as handle:
        for raw in handle:
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return lines
