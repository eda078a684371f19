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

Lines stay small whatever the client sends.  A statement's text is
written once: each classified part names its place in it as C{span},
C{[start, end]} in characters, and carries its own C{text} only when
masking made it differ from that place.  A text longer than the
recorder's C{max_text} keeps its first C{max_text} characters, beside
C{text_length} (the whole length) and C{text_sha256} (the SHA-256 of the
whole text in UTF-8), all as masking left it; a span may then reach
past the kept text.  Error messages (C{error_message_length},
C{error_message_sha256}) and each text of an error or notice (listed in
C{cut_fields}) are cut the same way.  The parts of a statement share
one allowance of C{max_text} characters of JSON: the first is always
kept, those that do not fit are left out, and C{parts_count} and
C{parts_sha256} (over the compact JSON array of them all) say what was
there.  Bound parameters share one allowance too: the values that do
not fit are left out, the one that crosses it is cut (its
C{value_length} says by how much), and C{parameters_count} and
C{parameters_sha256} say what was there.

Sequence numbers rise by one per line of a session's file, whatever
arrives after its closing line (a session ended at once may still hear
from its target): the file is reopened and counting goes on from its
last line, which always ends with C{seq}.

test-case-name: tests.unit.test_recording
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
    ResultDescribed,
    SessionClosed,
    SessionRefused,
    StatementBound,
    StatementCompleted,
    StatementReceived,
)
from hoopgate._interfaces import IObserver
from hoopgate._maskrules import NO_MASKING, MaskingPolicy, RecordMasker
from hoopgate._redact import redact_passwords
from hoopgate._verdicts import Allow, Deny, Hold, Rewrite, Verdict

FORMAT_VERSION = 1

DEFAULT_MAX_TEXT = 64 * 1024
"""Characters of one text a line keeps by default (64 KiB)."""

_FINAL = (SessionClosed, SessionRefused)

# What a parameter costs beyond its value, so that a long list of
# NULLs cannot make a long line either.
_PARAMETER_COST = 32

# The end of every whole line: its sequence number.  A JSON string never
# holds a raw line break, so the pattern cannot match inside a value.
_LAST_SEQ = re.compile(rb'"seq":(\d+)\}\n')
_TAIL_CHUNK = 64 * 1024

# Long texts are hashed this many characters at a time.
_SLICE = 1 << 20

# The most characters between two parts (separators, comments) for the
# second to be found as a span of the text.
_PART_GAP = 4096
_SEQ_WIDTH = 32


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
        text = fields["text"] = redact_passwords(event.text)
        for part, source in zip(fields["parts"], event.parts, strict=True):
            whole = source.text == event.text
            part["text"] = text if whole else redact_passwords(source.text)
    return fields


def _whole_parts(event: Event, fields: dict[str, Any]) -> list[dict[str, Any]]:
    """
    Take the text out of the parts that are the whole statement, so
    that it is masked, and written, once.
    """
    if not isinstance(event, StatementReceived):
        return []
    whole = [
        part
        for part, source in zip(fields["parts"], event.parts, strict=True)
        if source.text == event.text
    ]
    for part in whole:
        part["text"] = ""
    return whole


def _sha256(text: str) -> str:
    # A slice at a time: a long text is not encoded whole beside itself.
    digest = hashlib.sha256()
    for start in range(0, len(text), _SLICE):
        piece = text[start : start + _SLICE]
        digest.update(piece.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _cut(fields: dict[str, Any], key: str, limit: int) -> None:
    """
    Keep the first C{limit} characters of C{fields[key]}, with the whole
    length and hash beside them.
    """
    text = fields.get(key)
    if not isinstance(text, str) or len(text) <= limit:
        return

    fields[key] = text[:limit]
    fields[f"{key}_length"] = len(text)
    fields[f"{key}_sha256"] = _sha256(text)


def _place_parts(fields: dict[str, Any], limit: int) -> None:
    """
    Point each part of a statement at its place in the whole text, then
    cut the text.
    """
    text: str = fields["text"]
    position = 0

    for part in fields["parts"]:
        own = part.pop("text")
        if own is None:
            # The whole statement, masked as the whole was.
            part["span"] = [0, len(text)]
            continue
        # Near where the last part ended: statements follow each other,
        # and a search to the end for each part would take quadratic time.
        start = text.find(own, position, position + len(own) + _PART_GAP)
        if start < 0:
            part["text"] = own
            _cut(part, "text", limit)
            continue
        position = start + len(own)
        part["span"] = [start, position]

    _cut(fields, "text", limit)
    _cut_parts(fields, limit)


def _cut_parts(fields: dict[str, Any], limit: int) -> None:
    """
    Keep the first part, and those after it that fit in C{limit}
    characters of JSON (a query string may hold many thousands).
    """
    parts: list[dict[str, Any]] = fields["parts"]
    budget = limit

    for index, part in enumerate(parts):
        size = len(json.dumps(part, separators=(",", ":"), default=str))
        budget -= size
        if budget >= 0 or index == 0:
            continue
        fields["parts_count"] = len(parts)
        fields["parts_sha256"] = _list_sha256(parts)
        fields["parts"] = parts[:index]
        return


def _cut_parameters(fields: dict[str, Any], limit: int) -> None:
    """
    Keep the bound parameters that fit in C{limit} characters.
    """
    parameters: list[dict[str, Any]] = fields["parameters"]
    budget = limit

    for index, parameter in enumerate(parameters):
        value = parameter["value"]
        size = _PARAMETER_COST + (len(value) if isinstance(value, str) else 0)
        if size <= budget:
            budget -= size
            continue
        fields["parameters_count"] = len(parameters)
        fields["parameters_sha256"] = _list_sha256(parameters)
        fields["parameters"] = parameters[:index]
        if isinstance(value, str) and budget > _PARAMETER_COST:
            kept = value[: budget - _PARAMETER_COST]
            fields["parameters"].append(
                {**parameter, "value": kept, "value_length": len(value)}
            )
        return


def _list_sha256(values: list[dict[str, Any]]) -> str:
    """
    The SHA-256 of the compact JSON array of C{values} (flat mappings), as
    a line would write it, an element at a time; a bound value may be as
    long as a message, so long texts are escaped a slice at a time.
    """
    digest = hashlib.sha256(b"[")

    for index, value in enumerate(values):
        if index:
            digest.update(b",")
        if not any(isinstance(v, str) and len(v) > _SLICE for v in value.values()):
            digest.update(_compact(value).encode("ascii"))
            continue
        digest.update(b"{")
        for number, (key, item) in enumerate(value.items()):
            digest.update(b"," if number else b"")
            digest.update(_compact(key).encode("ascii") + b":")
            if isinstance(item, str):
                _digest_text(digest, item)
            else:
                digest.update(_compact(item).encode("ascii"))
        digest.update(b"}")

    digest.update(b"]")
    return digest.hexdigest()


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _digest_text(digest: Any, text: str) -> None:
    # Escaping is per character, so slices escape as the whole does.
    digest.update(b'"')
    for start in range(0, len(text), _SLICE):
        digest.update(json.dumps(text[start : start + _SLICE])[1:-1].encode("ascii"))
    digest.update(b'"')


def _cut_diagnostic(fields: dict[str, Any], limit: int) -> None:
    """
    Cut each long text of an error or notice, listing what was cut.
    """
    cut = []
    for pair in fields["fields"]:
        key, text = pair
        if isinstance(text, str) and len(text) > limit:
            pair[1] = text[:limit]
            cut.append({"key": key, "length": len(text), "sha256": _sha256(text)})
    if cut:
        fields["cut_fields"] = cut


def limit_fields(event: Event, fields: dict[str, Any], limit: int) -> None:
    """
    Bound what a line writes of an event's texts, in place (after
    masking: lengths and hashes are those of the masked texts).

    Args:
        event: The event the fields are of.
        fields: Its recordable fields, as masking left them.
        limit: The most characters of one text, of a statement's parts
            together (as JSON) and of its bound parameters together.
    """
    if isinstance(event, StatementReceived):
        _place_parts(fields, limit)
    elif isinstance(event, StatementBound):
        _cut_parameters(fields, limit)
    elif isinstance(event, StatementCompleted):
        _cut(fields, "error_message", limit)
    elif isinstance(event, DiagnosticReceived):
        _cut_diagnostic(fields, limit)


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

    A session's file stays open until its closing line; a line that
    comes later opens it again and goes on counting from its last line.

    Args:
        directory: The recordings folder; created if absent.
        on_failure: Called with the session id when a line cannot be
            written (the gateway ends that session if policy says so).
        max_text: The most characters of one text a line keeps (see the
            module's description).

    Attributes:
        on_failure: As given.
        max_text: As given.
    """

    _log = Logger()

    def __init__(
        self,
        directory: str,
        on_failure: Callable[[str], None] | None = None,
        *,
        max_text: int = DEFAULT_MAX_TEXT,
    ) -> None:
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._files: dict[str, list[int]] = {}
        self._masker = RecordMasker()
        self.on_failure = on_failure
        self.max_text = max_text

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
                os.O_RDWR | os.O_CREAT | os.O_APPEND,
                0o640,
            )
            try:
                seq = _resume(fd)
            except OSError:
                os.close(fd)
                raise
            entry = [fd, seq]
            self._files[session_id] = entry
        return entry

    def observe(self, event: Event, verdict: Verdict, context: Context) -> None:
        if isinstance(verdict, Rewrite) and isinstance(
            verdict.event, DiagnosticReceived | ResultDescribed
        ):
            # What the client got: never the target's unmasked text, and
            # the columns as masking re-described them.
            event = verdict.event
        fields = event_fields(event)
        whole = _whole_parts(event, fields)
        self._masker.mask(event, fields, _masking(context))
        for part in whole:
            part["text"] = None
        limit_fields(event, fields, self.max_text)
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


def _resume(fd: int) -> int:
    """
    The sequence number of the last whole line of an open recording (0
    for an empty one).  A torn last line gets its line break, so that
    the next line starts on its own.
    """
    end = os.fstat(fd).st_size
    if end and os.pread(fd, 1, end - 1) != b"\n":
        os.write(fd, b"\n")
        end += 1

    # Backwards a chunk at a time; each chunk is searched with the start
    # of the one after it, where a match may have begun.
    after = b""
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        chunk = os.pread(fd, end - start, start) + after[:_SEQ_WIDTH]
        found = [m.group(1) for m in _LAST_SEQ.finditer(chunk)]
        if found:
            return int(found[-1])
        after = chunk
        end = start
    return 0


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
