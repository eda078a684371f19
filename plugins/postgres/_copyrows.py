"""
Rows of COPY TO STDOUT in text and CSV format, sans-IO: split, decoded,
masked with a result's row plan, and encoded again.

PostgreSQL sends one row per CopyData message.  Text format: fields
separated by a tab, C{\\N} for NULL, backslash escapes for backslash and
control characters.  CSV format: fields separated by commas, quoted with
C{"} (doubled inside) when they hold a comma, a quote or a line break,
and an unquoted empty field for NULL.  Only the default delimiters,
quotes and NULL strings are read (the classifier reports other options
as a stream format masking refuses).  A field the plan leaves alone is
sent as the very bytes it came in.

test-case-name: tests.unit.postgres.test_copyrows
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from hoopgate.plugin import RowTransformer

_TEXT_ESCAPES: Final = {
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("v"): b"\v",
}
_ESCAPE: Final = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.DOTALL)
_TO_ESCAPE: Final = re.compile(rb"[\\\b\f\n\r\t\v]")
_ESCAPED: Final = {
    b"\\": b"\\\\",
    b"\b": b"\\b",
    b"\f": b"\\f",
    b"\n": b"\\n",
    b"\r": b"\\r",
    b"\t": b"\\t",
    b"\v": b"\\v",
}
_NULL: Final = b"\\N"
_CSV_SPECIAL: Final = re.compile(rb'[,"\r\n]')


class CopyFormatError(ValueError):
    """
    A row that does not read as its format says (the caller fails
    closed).
    """


def _unescape(match: re.Match[bytes]) -> bytes:
    octal, hexadecimal, other = match.groups()
    if octal is not None:
        return bytes([int(octal, 8) & 0xFF])
    if hexadecimal is not None:
        return bytes([int(hexadecimal, 16)])
    code = other[0]
    return _TEXT_ESCAPES.get(code, other)


def decode_text_field(raw: bytes) -> bytes | None:
    """
    One field of a text-format row as its value (C{None} for NULL).
    """
    if raw == _NULL:
        return None
    if b"\\" not in raw:
        return raw
    return _ESCAPE.sub(_unescape, raw)


def encode_text_field(value: bytes | None) -> bytes:
    """
    A value as a text-format field.
    """
    if value is None:
        return _NULL
    return _TO_ESCAPE.sub(lambda m: _ESCAPED[m.group()], value)


def split_text_row(payload: bytes) -> list[bytes]:
    """
    The raw fields of one text-format row (its line break removed).

    Raises:
        CopyFormatError: It does not end with a line break.
    """
    if not payload.endswith(b"\n"):
        raise CopyFormatError("a COPY text row must end with a line break")
    return payload[:-1].split(b"\t")


def split_csv_row(payload: bytes) -> tuple[list[bytes], list[bytes | None]]:
    """
    The raw fields of one CSV row and their values (C{None} for NULL).

    Raises:
        CopyFormatError: A quote is not closed, or the row does not end
            with a line break.
    """
    if payload.endswith(b"\r\n"):
        line = payload[:-2]
    elif payload.endswith(b"\n"):
        line = payload[:-1]
    else:
        raise CopyFormatError("a COPY CSV row must end with a line break")

    if b'"' not in line:
        raws = line.split(b",")
        return raws, [raw if raw else None for raw in raws]
    return _split_quoted(line)


def _split_quoted(line: bytes) -> tuple[list[bytes], list[bytes | None]]:
    raws: list[bytes] = []
    values: list[bytes | None] = []
    position = 0
    size = len(line)
    while True:
        if line.startswith(b'"', position):
            end = position + 1
            while True:
                end = line.find(b'"', end)
                if end < 0:
                    raise CopyFormatError("a quoted CSV field is not closed")
                if not line.startswith(b'""', end):
                    break
                end += 2
            raw = line[position : end + 1]
            values.append(raw[1:-1].replace(b'""', b'"'))
            position = end + 1
            if position < size and line[position : position + 1] != b",":
                raise CopyFormatError("text after a quoted CSV field")
        else:
            end = line.find(b",", position)
            end = size if end < 0 else end
            raw = line[position:end]
            if b'"' in raw:
                raise CopyFormatError("a quote inside an unquoted CSV field")
            values.append(raw if raw else None)
            position = end
        raws.append(raw)
        if position >= size:
            return raws, values
        position += 1
        if position == size:
            raws.append(b"")
            values.append(None)
            return raws, values


def encode_csv_field(value: bytes | None) -> bytes:
    """
    A value as a CSV field.
    """
    if value is None:
        return b""
    if not value or value == b"\\." or _CSV_SPECIAL.search(value):
        return b'"' + value.replace(b'"', b'""') + b'"'
    return value


class CopyMasker:
    """
    Masks the rows of one COPY TO STDOUT with a row plan.

    Args:
        plan: The result's row plan, one action per field.
        stream_format: C{text}, C{csv}, or either with C{+header}.

    Raises:
        ValueError: The format cannot be masked.
    """

    def __init__(self, plan: RowTransformer, stream_format: str) -> None:
        kind, _, header = stream_format.partition("+")
        if kind not in ("text", "csv") or header not in ("", "header"):
            raise ValueError(f"COPY in {stream_format} format cannot be masked")
        self._plan = plan
        self._header = header == "header"
        self._csv = kind == "csv"
        self.last: list[bytes | None] = []

    def __call__(self, payload: bytes) -> bytes:
        """
        One CopyData payload (one row) as it may leave.

        Raises:
            CopyFormatError: It is not a row of the format.
        """
        if self._header:
            self._header = False
            self.last = []
            return payload

        if self._csv:
            raws, values = split_csv_row(payload)
            encode: Callable[[bytes | None], bytes] = encode_csv_field
            separator = b","
        else:
            raws = split_text_row(payload)
            values = [decode_text_field(raw) for raw in raws]
            encode = encode_text_field
            separator = b"\t"

        out = self._plan(values)
        self.last = out
        if all(new is old for new, old in zip(out, values, strict=True)):
            return payload
        fields = [
            raw if new is old else encode(new)
            for raw, new, old in zip(raws, out, values, strict=True)
        ]
        return separator.join(fields) + b"\n"
