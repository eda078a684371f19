"""
Redaction of secrets inside statement text before it is written down.

test-case-name: tests.unit.test_redact
"""

from __future__ import annotations

import re

from pglast.parser import ParseError, scan

REDACTED = "'[redacted]'"

_LITERALS = frozenset({"SCONST", "USCONST", "BCONST", "XCONST"})
_PASSWORD = re.compile(r"password", re.IGNORECASE)


def redact_passwords(text: str) -> str:
    """
    Replace every string literal of a statement that sets a password.

    C{CREATE ROLE ... PASSWORD '...'}, C{ALTER USER ... PASSWORD '...'} and
    anything else with the PASSWORD keyword lose all their literals.  Text
    that cannot be scanned loses everything after the word.
    """
    match = _PASSWORD.search(text)
    if match is None:
        return text

    try:
        tokens = scan(text)
    except ParseError:
        return text[: match.start()] + "PASSWORD [redacted]"

    if not any(t.name == "PASSWORD" for t in tokens):
        return text

    pieces = []
    position = 0
    for token in tokens:
        if token.name in _LITERALS:
            pieces.append(text[position : token.start])
            pieces.append(REDACTED)
            position = token.end + 1
    pieces.append(text[position:])
    return "".join(pieces)
