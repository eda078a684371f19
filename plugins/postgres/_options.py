"""
Filtering the C{options} start-up parameter: run-time settings a client
asks for (C{-c search_path=app}, C{--work_mem=64MB}).

Only settings a target allows pass; the rest are dropped and reported,
because some (C{role}, C{session_authorization}) would change what the
gateway's credentials may do.

test-case-name: tests.unit.postgres.test_options
"""

from __future__ import annotations

from collections.abc import Iterable


def _split(options: str) -> list[str]:
    """
    Split on unescaped white space, as the server does (backslash quotes
    the next character).
    """
    words: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in options:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


def _settings(words: list[str]) -> list[tuple[str, str]] | None:
    """
    The C{name=value} pairs of C{-c name=value}, C{-cname=value} and
    C{--name=value}; C{None} if anything else is there.
    """
    pairs = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-c" and index + 1 < len(words):
            setting = words[index + 1]
            index += 2
        elif (word.startswith("-c") and len(word) > 2) or word.startswith("--"):
            setting = word[2:]
            index += 1
        else:
            return None
        name, equals, value = setting.partition("=")
        if not equals or not name:
            return None
        pairs.append((name.replace("-", "_").lower(), value))
    return pairs


def _escape(value: str) -> str:
    return "".join(f"\\{c}" if c.isspace() or c == "\\" else c for c in value)


def filter_options(options: str, allowed: Iterable[str]) -> tuple[str, list[str]]:
    """
    Keep the allowed settings of a start-up C{options} string.

    Args:
        options: The client's C{options}.
        allowed: Setting names (lower case) that may pass.

    Returns:
        The C{options} to send upstream (maybe empty) and the names
        dropped (C{"options"} when the string could not be read).
    """
    if not options.strip():
        return "", []
    pairs = _settings(_split(options))
    if pairs is None:
        return "", ["options"]

    permitted = set(allowed)
    kept = [(n, v) for n, v in pairs if n in permitted]
    dropped = [n for n, _ in pairs if n not in permitted]
    text = " ".join(f"-c {n}={_escape(v)}" for n, v in kept)
    return text, dropped


def option_settings(options: str) -> list[tuple[str, str]]:
    """
    The settings a start-up C{options} string sets, as names (lower
    case) and values; none when it cannot be read.
    """
    return _settings(_split(options)) or []
