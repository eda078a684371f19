"""
The masking engine's building blocks, protocol-neutral and free of I/O.

Three parts:

  - L{Detector}s find sensitive substrings in a text value: e-mail
    addresses, card numbers, IBANs, US social security numbers, phone
    numbers, JWTs, API keys, PEM private keys, or a custom pattern.
  - Strategies say what replaces a masked value or span: L{Redact},
    L{KeepLast}, L{KeyedHash} or L{Nullify}.
  - L{compile_plan} turns one action per result column into a L{RowPlan},
    the row transformer a protocol plugin applies to each row in a tight
    loop.  The plan counts what it masked (counts only, never values).

L{mask_text} and L{mask_values_in_text} mask free text: error messages,
notices and statement literals on their way to the client or a recording.

Decisions worth knowing:

  - C{NULL} stays C{NULL} under every strategy: masking never reveals or
    invents a value, and clients keep telling a missing value from a mask.
  - A value the plan leaves alone is the very same C{bytes} object.  A
    scanned value is decoded with C{errors="surrogateescape"}, so bytes
    that are not valid in the client encoding (a MySQL blob, a SQL_ASCII
    database) survive a re-encoding unchanged around a masked span.
  - C{user@localhost} is not an e-mail address here: the domain needs a
    dot and an alphabetic top-level label.  Mailboxes of a single host
    are not personal addresses, and matching them would mask every
    C{role@host} in log-like text.
  - Phone numbers need a leading C{+} (international form), so plain
    integers, ids and amounts are never taken for phone numbers.
  - US social security numbers need the dashed C{AAA-GG-SSSS} form; a
    bare run of nine digits is any integer.
  - Card numbers are 13 to 19 digits, contiguous or in groups of 3 to 6
    joined by single spaces or dashes, passing the Luhn check, and not
    glued to letters: a run of digits inside a hex string or a hash is
    not a card number (one in ten such runs passes the Luhn check).  One
    integer of that length in ten passes it, so a caller scanning a
    numeric column must be ready to re-describe it as text (or null it).

test-case-name: tests.unit.test_masking
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import json
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import ClassVar, TypeAlias

from attrs import field, frozen
from attrs.validators import ge, instance_of, le
from stdnum import luhn as _luhn
from stdnum import numdb
from stdnum.us import ssn as _ssn

Span: TypeAlias = tuple[int, int]
"""
A half-open C{(start, end)} range of character offsets in a text.
"""

REDACTED = "[masked]"
"""
What L{Redact} puts in place of a whole value or a detected span.  Plain
ASCII, so every client encoding can carry it, and obviously not data.
"""

PAD = "*"
"""
The character L{KeepLast} puts in place of each hidden character.
"""

HASH_PREFIX = "h:"
"""
The start of every L{KeyedHash} output, so a reader knows it is a hash.
"""

COLUMN_RULE = "column"
"""
The name L{RowPlan.counts} uses for a whole-column (lineage) rule, in the
place of a detector's name.
"""

SHORT_VALUE = 4
"""
Known values shorter than this are replaced by L{mask_values_in_text}
only where they stand alone (not inside a word or a number).
"""

_REMEMBERED_SIZE = 512
_MIN_HASH_KEY = 16
_SHA256_BLOCK = 64
_SHA256: TypeAlias = "hashlib._Hash"


# Strategies.


@frozen
class Redact:
    """
    Replace the value or span by L{REDACTED}.
    """

    kind: ClassVar[str] = "redact"

    def mask(self, text: str) -> str:
        """
        Mask a value or a span of a value.

        Args:
            text: The sensitive text.

        Returns:
            L{REDACTED}.
        """
        return REDACTED


@frozen
class KeepLast:
    """
    Hide all but the last C{count} characters, keeping the length.

    Each hidden character becomes L{PAD}, so C{4111111111111111} with a
    count of 4 becomes C{************1111}.  A value no longer than
    C{count} is hidden entirely: keeping it would keep all of it.

    Attributes:
        count: How many trailing characters stay readable.
    """

    kind: ClassVar[str] = "keep_last"

    count: int = field(validator=[instance_of(int), ge(0)])

    def mask(self, text: str) -> str:
        """
        Mask a value or a span of a value.

        Args:
            text: The sensitive text.

        Returns:
            The text with every character but the last C{count} padded.
        """
        keep = self.count if len(text) > self.count else 0
        hidden = len(text) - keep
        return PAD * hidden + text[hidden:]


def _check_key(instance: object, attribute: object, key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < _MIN_HASH_KEY:
        raise ValueError(f"a hash key needs at least {_MIN_HASH_KEY} bytes")


@frozen
class KeyedHash:
    """
    Replace the value by a short keyed hash: C{h:} and hex digits.

    The hash is HMAC-SHA-256 over the text as UTF-8, cut to C{digits} hex
    digits.  Equal values give equal outputs, whatever the client
    encoding, so masked columns still join in analysis; without the key
    the output cannot be reversed or guessed from candidate values.

    Attributes:
        key: The secret key (at least 16 bytes).  Never shown in a repr.
        digits: How many hex digits to keep (8 to 64).
    """

    kind: ClassVar[str] = "hash"

    key: bytes = field(repr=False, validator=_check_key)
    digits: int = field(default=12, validator=[instance_of(int), ge(8), le(64)])
    _pads: tuple[_SHA256, _SHA256] = field(init=False, repr=False, eq=False, hash=False)

    @_pads.default
    def _hmac_pads(self) -> tuple[_SHA256, _SHA256]:
        # HMAC as RFC 2104 builds it, with the keyed inner and outer hash
        # states made once: half the cost of hmac.digest per value.
        key = self.key
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()

        key = key.ljust(_SHA256_BLOCK, b"\0")
        inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key))
        outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))
        return inner, outer

    def mask(self, text: str) -> str:
        """
        Mask a value or a span of a value.

        Args:
            text: The sensitive text.

        Returns:
            L{HASH_PREFIX} and the first C{digits} hex digits of the HMAC.
        """
        data = text.encode("utf-8", "surrogateescape")
        return HASH_PREFIX + self._hex(data).decode("ascii")

    def _hex(self, data: bytes) -> bytes:
        inner, outer = self._pads
        inner = inner.copy()
        inner.update(data)
        outer = outer.copy()
        outer.update(inner.digest())
        return binascii.hexlify(outer.digest())[: self.digits]


@frozen
class Nullify:
    """
    Replace the whole value by C{NULL}.

    A detector hit inside a scanned value nulls the whole value.  Free
    text has no C{NULL}, so there a span becomes L{REDACTED}.
    """

    kind: ClassVar[str] = "null"

    def mask(self, text: str) -> str:
        """
        Mask a span of free text, where C{NULL} cannot stand.

        Args:
            text: The sensitive text.

        Returns:
            L{REDACTED}.
        """
        return REDACTED


Strategy: TypeAlias = Redact | KeepLast | KeyedHash | Nullify

REDACT = Redact()
NULLIFY = Nullify()


# Detectors.


def _hint_tuple(hints: Iterable[str]) -> tuple[str, ...]:
    return tuple(hints)


def _ascii_hints(instance: object, attribute: object, hints: tuple[str, ...]) -> None:
    for hint in hints:
        if not hint or not hint.isascii():
            raise ValueError(f"detector hints must be non-empty ASCII: {hint!r}")


@frozen
class Detector:
    """
    Finds one kind of sensitive substring in a text value.

    Candidates are the matches of C{pattern}; a C{validator}, if given,
    decides which candidates are real (a checksum, a decodable header).
    Before the pattern runs, two cheap checks skip most values: the text
    must be at least C{min_length} long and contain one of the C{hints}.

    Attributes:
        name: A stable name, used in policy and in masking counts.
        pattern: Finds candidates.
        validator: Takes a candidate's text, says whether it is a hit.
        hints: Literal ASCII substrings; a hit contains at least one of
            them.  Empty means the pattern always runs.
        min_length: The shortest text that can hold a hit.
        split: When a candidate fails the validator, try runs of its
            groups (split on single spaces or dashes), longest first:
            C{DE89 3704 0044 0532 0130 00 EUR} still holds an IBAN.
    """

    name: str
    pattern: re.Pattern[str] = field(repr=lambda p: repr(p.pattern))
    validator: Callable[[str], bool] | None = field(default=None, repr=False)
    hints: tuple[str, ...] = field(
        default=(), converter=_hint_tuple, validator=_ascii_hints
    )
    min_length: int = field(default=1, validator=[instance_of(int), ge(1)])
    split: bool = False

    def find(self, text: str) -> list[Span]:
        """
        Find the hits in a text.

        Args:
            text: The text to search.

        Returns:
            The spans of the hits, in order, not overlapping.
        """
        if len(text) < self.min_length:
            return []

        if self.hints and not any(hint in text for hint in self.hints):
            return []

        return self.search(text)

    def search(self, text: str) -> list[Span]:
        """
        Find the hits in a text, skipping the cheap checks.

        The row plan calls this once its own checks on the raw bytes have
        passed.

        Args:
            text: The text to search.

        Returns:
            The spans of the hits, in order, not overlapping.
        """
        validator = self.validator
        spans = []

        for match in self.pattern.finditer(text):
            start, end = match.span()
            if start == end:
                continue

            if validator is None or validator(match.group()):
                spans.append((start, end))
            elif self.split:
                spans.extend(_windows(text, start, end, validator))

        return spans


_GROUP = re.compile(r"[^ \-]+")


def _windows(
    text: str, start: int, end: int, validator: Callable[[str], bool]
) -> list[Span]:
    """
    Find valid runs of groups inside a candidate that failed as a whole.

    Leftmost first; from each starting group the longest valid run wins.
    """
    groups = [match.span() for match in _GROUP.finditer(text, start, end)]
    last = len(groups) - 1
    spans = []
    first = 0

    while first <= last:
        for final in range(last, first - 1, -1):
            if first == 0 and final == last:
                continue

            begin, stop = groups[first][0], groups[final][1]
            if validator(text[begin:stop]):
                spans.append((begin, stop))
                first = final
                break

        first += 1

    return spans


def _compact(text: str) -> str:
    return text.replace(" ", "").replace("-", "")


def is_card_number(text: str) -> bool:
    """
    Whether a candidate is a payment card number.

    Args:
        text: Digits, possibly separated by spaces or dashes.

    Returns:
        Whether it has 13 to 19 ASCII digits that pass the Luhn check.
    """
    digits = _compact(text)
    if not 13 <= len(digits) <= 19:
        return False

    if not (digits.isascii() and digits.isdigit()):
        return False

    return _luhn.is_valid(digits)


def is_luhn(text: str) -> bool:
    """
    Whether a candidate's digits pass the Luhn check, whatever their count.

    Args:
        text: Digits, possibly separated by spaces or dashes.

    Returns:
        Whether it is all ASCII digits once separators go, and passes.
    """
    digits = _compact(text)
    if not (digits.isascii() and digits.isdigit()):
        return False

    return _luhn.is_valid(digits)


_IBAN_HEAD = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+\Z")
_IBAN_REGISTRY = numdb.get("iban")
_BBAN_PART = re.compile(r"([1-9][0-9]*)!([nac])")
_BBAN_CHARS = {"n": "[0-9]", "a": "[A-Z]", "c": "[A-Z0-9]"}
_BBAN_FORMATS: dict[str, re.Pattern[str] | None] = {}
_BASE36 = str.maketrans({chr(ord("A") + i): str(10 + i) for i in range(26)})


def _bban_format(country: str) -> re.Pattern[str] | None:
    """
    The account-number format the IBAN registry gives for a country.

    Looked up in python-stdnum's copy of the registry on first use, then
    kept: a country code is no secret.
    """
    if country in _BBAN_FORMATS:
        return _BBAN_FORMATS[country]

    found = None
    for part, properties in _IBAN_REGISTRY.info(country):
        structure = properties.get("bban")
        if part == country and structure:
            pieces = _BBAN_PART.findall(structure)
            if "".join(f"{n}!{kind}" for n, kind in pieces) != structure:
                raise ValueError(f"unreadable IBAN format for {country}")
            found = re.compile(
                "".join(f"{_BBAN_CHARS[kind]}{{{n}}}" for n, kind in pieces)
            )

    _BBAN_FORMATS[country] = found
    return found


def is_iban(text: str) -> bool:
    """
    Whether a candidate is an IBAN.

    The country must be in the IBAN registry, the account number must
    have that country's format, and the ISO 7064 MOD 97-10 checksum must
    hold: the checks of C{stdnum.iban.validate(check_country=False)},
    with stdnum's registry, done here without its per-call overhead
    because an IBAN column is scanned on every row.  National check
    digits inside the account number are not checked: a number failing
    only those still looks like a bank account and is better masked.

    Args:
        text: The candidate, possibly in groups separated by spaces.

    Returns:
        Whether it is a valid IBAN.
    """
    number = text.replace(" ", "").upper()
    if not 15 <= len(number) <= 34 or not _IBAN_HEAD.match(number):
        return False

    bban = _bban_format(number[:2])
    if bban is None or not bban.fullmatch(number, 4):
        return False

    return int((number[4:] + number[:4]).translate(_BASE36)) % 97 == 1


def is_us_ssn(text: str) -> bool:
    """
    Whether a candidate is a US social security number.

    Args:
        text: The candidate, C{AAA-GG-SSSS}.

    Returns:
        Whether its area, group and serial could have been issued.
    """
    return _ssn.is_valid(text)


def is_jwt(text: str) -> bool:
    """
    Whether a candidate is a JSON web token.

    Args:
        text: Three base64url parts separated by dots.

    Returns:
        Whether the first part decodes to a JSON object with an C{alg}.
    """
    header = text.split(".", 1)[0]

    try:
        raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        decoded = json.loads(raw)
    except (ValueError, RecursionError):
        # Bad base64, bad UTF-8, bad JSON, or JSON nested too deeply.
        return False

    return isinstance(decoded, dict) and isinstance(decoded.get("alg"), str)


# A pattern that starts with a literal or a character set lets the regex
# engine skip ahead to where a hit can begin; a leading lookbehind would
# make it try every position.  So lookbehinds come after the first
# character where they can.

_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+"
    r"@[^\W_](?:[\w-]*[^\W_])?"
    r"(?:\.[^\W_](?:[\w-]*[^\W_])?)*"
    r"\.[^\W\d_]{2,63}(?![\w-])"
)

_CARD = re.compile(
    r"[0-9](?<![0-9A-Za-z][0-9])"
    r"(?:[0-9]{2,5}(?:[ -][0-9]{3,6}){1,5}|[0-9]{12,18})"
    r"(?![0-9A-Za-z])"
)

_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])"
)

_SSN = re.compile(r"[0-9](?<![0-9][0-9])[0-9]{2}-[0-9]{2}-[0-9]{4}(?![0-9])")

_PHONE = re.compile(r"\+(?<![\w+]\+)[1-9](?:[ .()-]{0,2}[0-9]){7,14}(?![0-9])")

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")

_API_KEY = re.compile(
    r"AKIA[0-9A-Z]{16}"
    r"|ASIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|sk_live_[A-Za-z0-9]{16,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|glpat-[A-Za-z0-9_-]{20,}"
)

# An unterminated key (a value cut short) is masked to the end of the text.
_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
    r".*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)

EMAIL = Detector("email", _EMAIL, hints=("@",), min_length=6)
CARD_NUMBER = Detector("card_number", _CARD, is_card_number, min_length=13, split=True)
IBAN = Detector("iban", _IBAN, is_iban, min_length=15, split=True)
US_SSN = Detector("us_ssn", _SSN, is_us_ssn, hints=("-",), min_length=11)
PHONE = Detector("phone", _PHONE, hints=("+",), min_length=9)
JWT = Detector("jwt", _JWT, is_jwt, hints=("eyJ",), min_length=10)
API_KEY = Detector(
    "api_key",
    _API_KEY,
    hints=("AKIA", "ASIA", "gh", "github_pat_", "sk_live_", "xox", "glpat-"),
    min_length=15,
)
PRIVATE_KEY = Detector(
    "private_key", _PRIVATE_KEY, hints=("-----BEGIN ",), min_length=27
)

DETECTORS: Mapping[str, Detector] = MappingProxyType(
    {
        detector.name: detector
        for detector in (
            EMAIL,
            CARD_NUMBER,
            IBAN,
            US_SSN,
            PHONE,
            JWT,
            API_KEY,
            PRIVATE_KEY,
        )
    }
)
"""
The built-in detectors by name.
"""

VALIDATORS: Mapping[str, Callable[[str], bool]] = MappingProxyType(
    {"luhn": is_luhn, "iban": is_iban}
)
"""
The validators a custom detector may name.
"""


def custom_detector(
    name: str,
    pattern: str,
    validator: str | None = None,
    *,
    hints: Iterable[str] = (),
) -> Detector:
    """
    Build a detector from configuration.

    Args:
        name: The detector's name.
        pattern: A regular expression; each match is a candidate.
        validator: A name from L{VALIDATORS}, or C{None} to take every
            match.
        hints: Literal ASCII substrings every match contains, if known.

    Returns:
        The detector.

    Raises:
        ValueError: The pattern does not compile, or the validator is
            unknown.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"detector {name}: invalid pattern: {e}") from None

    check = None
    if validator is not None:
        check = VALIDATORS.get(validator)
        if check is None:
            known = ", ".join(sorted(VALIDATORS))
            raise ValueError(
                f"detector {name}: unknown validator {validator!r} (known: {known})"
            )

    return Detector(name, compiled, check, hints=tuple(hints))


# Free text.


def _splice(text: str, spans: list[Span], mask: Callable[[str], str]) -> str:
    """
    Replace each span, overlapping spans merged, by its masked form.
    """
    spans.sort()
    pieces = []
    position = 0
    start, end = spans[0]

    for next_start, next_end in spans[1:]:
        if next_start < end:
            end = max(end, next_end)
            continue

        pieces.append(text[position:start])
        pieces.append(mask(text[start:end]))
        position = end
        start, end = next_start, next_end

    pieces.append(text[position:start])
    pieces.append(mask(text[start:end]))
    pieces.append(text[end:])
    return "".join(pieces)


def mask_text(
    text: str, detectors: Iterable[Detector], strategy: Strategy
) -> tuple[str, dict[str, int]]:
    """
    Mask what the detectors find in free text.

    For error messages, notices and statement literals.  Hits of several
    detectors that overlap are masked as one span.

    Args:
        text: The text.
        detectors: What to look for.
        strategy: What replaces each hit (L{Nullify} gives L{REDACTED}).

    Returns:
        The masked text, and the number of hits by detector name (empty
        when nothing was found, and then the text is returned as is).
    """
    spans: list[Span] = []
    hits: dict[str, int] = {}

    for detector in detectors:
        found = detector.find(text)
        if found:
            hits[detector.name] = hits.get(detector.name, 0) + len(found)
            spans.extend(found)

    if not spans:
        return text, hits

    return _splice(text, spans, strategy.mask), hits


def _occurrences(text: str, value: str) -> list[Span]:
    if len(value) < SHORT_VALUE:
        alone = re.compile(r"(?<!\w)" + re.escape(value) + r"(?!\w)")
        return [match.span() for match in alone.finditer(text)]

    spans = []
    start = text.find(value)
    while start != -1:
        spans.append((start, start + len(value)))
        start = text.find(value, start + 1)

    return spans


def mask_values_in_text(text: str, values: Iterable[str]) -> tuple[str, int]:
    """
    Replace every occurrence of known sensitive values in free text.

    For texts that may echo a value masked elsewhere, such as an error
    about a row whose values the same statement masked.  Each occurrence
    becomes L{REDACTED}.  Values shorter than L{SHORT_VALUE} characters
    are replaced only where they stand alone, so a masked C{7} does not
    garble every number in the text; empty values are ignored.

    Args:
        text: The text.
        values: The sensitive values, decoded.

    Returns:
        The masked text and the number of spans replaced (overlapping
        occurrences count once).
    """
    spans = []

    for value in set(values):
        if value:
            spans.extend(_occurrences(text, value))

    if not spans:
        return text, 0

    masked = _splice(text, spans, REDACT.mask)
    return masked, _merged_count(spans)


def _merged_count(spans: list[Span]) -> int:
    count = 0
    end = -1

    for start, stop in sorted(spans):
        if start >= end:
            count += 1
        end = max(end, stop)

    return count


# Row plans.


@frozen
class PassColumn:
    """
    Leave the column's values as they are.
    """


PASS = PassColumn()


@frozen
class MaskColumn:
    """
    Mask every value of the column (a lineage rule: the column is known
    to hold sensitive data).

    Attributes:
        strategy: What replaces each value.
    """

    strategy: Strategy


def _detector_tuple(detectors: Iterable[Detector]) -> tuple[Detector, ...]:
    return tuple(detectors)


def _some(instance: object, attribute: object, detectors: tuple[Detector, ...]) -> None:
    if not detectors:
        raise ValueError("a scanned column needs at least one detector")


def _postgres_int8(raw: bytes) -> str:
    (value,) = struct.unpack(">q", raw)
    return str(value)


def _postgres_numeric(raw: bytes) -> str:
    """
    PostgreSQL's binary numeric: digit count, weight (of the first
    base-10000 digit), sign and display scale, then the digits.
    """
    count, weight, sign, scale = struct.unpack_from(">hhHH", raw)
    if sign not in (0x0000, 0x4000):
        return "NaN"
    digits = struct.unpack_from(f">{count}H", raw, 8)
    groups = [f"{d:04d}" for d in digits]
    whole = groups[: weight + 1] if weight >= 0 else []
    whole += ["0000"] * (weight + 1 - len(whole))
    fraction = (
        groups[weight + 1 :] if weight >= 0 else ["0000"] * (-weight - 1) + groups
    )
    text = ("".join(whole).lstrip("0") or "0") + "." + "".join(fraction)
    integer, _, decimals = text.partition(".")
    decimals = decimals[:scale].ljust(scale, "0")
    minus = "-" if sign == 0x4000 else ""
    return f"{minus}{integer}.{decimals}" if scale else f"{minus}{integer}"


def _raw(raw: bytes) -> str:
    # Each byte one character: text held inside a binary container (an
    # array's or a record's elements) stays readable to detectors.
    return raw.decode("latin-1")


#: Readers of values that arrive in a binary form other than text, by
#: the name a plugin gives in L{hoopgate.plugin.Column.binary}: each
#: turns one value into the text detectors read.  C{raw} reads the
#: bytes as they are, for containers whose elements may be text.
BINARY_TEXT: Mapping[str, Callable[[bytes], str]] = MappingProxyType(
    {
        "postgres.int8": _postgres_int8,
        "postgres.numeric": _postgres_numeric,
        "raw": _raw,
    }
)


def _binary_name(instance: object, attribute: object, value: str) -> None:
    if value and value not in BINARY_TEXT:
        raise ValueError(f"no reader for binary values of {value!r}")


@frozen
class ScanColumn:
    """
    Look for sensitive substrings in each value and mask what is found.

    Attributes:
        detectors: What to look for.
        strategy: What replaces each hit; L{Nullify} nulls the value.
        binary: For values that arrive in a binary form, the name of
            their reader in L{BINARY_TEXT}; a value with a hit is then
            nulled, whatever C{strategy} says.
    """

    detectors: tuple[Detector, ...] = field(converter=_detector_tuple, validator=_some)
    strategy: Strategy
    binary: str = field(default="", validator=_binary_name)


ColumnAction: TypeAlias = PassColumn | MaskColumn | ScanColumn

_ASCII = bytes(range(128))


def _check_encoding(encoding: str) -> str:
    """
    Normalise an encoding name, refusing one that is not an ASCII superset.

    The byte-level checks (hints, lengths, the ASCII fast paths) rely on
    ASCII characters being single bytes of the same value.
    """
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None

    try:
        same = _ASCII.decode(name) == _ASCII.decode("ascii")
    except UnicodeDecodeError:
        same = False

    if not same:
        raise ValueError(f"encoding {encoding!r} does not extend ASCII")

    return name


def _keep_last(strategy: KeepLast, encoding: str) -> Callable[[bytes], bytes]:
    count = strategy.count
    pad = PAD.encode("ascii")

    def keep_last(raw: bytes) -> bytes:
        if raw.isascii():
            keep = count if len(raw) > count else 0
            hidden = len(raw) - keep
            return pad * hidden + raw[hidden:]

        text = raw.decode(encoding, "surrogateescape")
        return strategy.mask(text).encode(encoding, "surrogateescape")

    return keep_last


def _keyed_hash(strategy: KeyedHash, encoding: str) -> Callable[[bytes], bytes]:
    prefix = HASH_PREFIX.encode("ascii")
    utf8 = encoding == "utf-8"
    hex_digest = strategy._hex

    def keyed_hash(raw: bytes) -> bytes:
        if not (utf8 or raw.isascii()):
            raw = raw.decode(encoding, "surrogateescape").encode(
                "utf-8", "surrogateescape"
            )

        return prefix + hex_digest(raw)

    return keyed_hash


def _binary_scanner(
    read: Callable[[bytes], str], scan: Callable[[bytes], bytes | None]
) -> Callable[[bytes], bytes | None]:
    def binary(raw: bytes) -> bytes | None:
        try:
            text = read(raw).encode("latin-1")
        except (struct.error, UnicodeEncodeError):
            # A value the reader cannot read cannot be checked.
            return None
        return raw if scan(text) is not None else None

    return binary


def _scanner(
    detectors: tuple[Detector, ...],
    strategy: Strategy,
    encoding: str,
    hits: dict[str, int],
) -> Callable[[bytes], bytes | None]:
    entries = tuple(
        (
            detector,
            tuple(hint.encode("ascii") for hint in detector.hints),
            detector.min_length,
        )
        for detector in detectors
    )
    nullify = isinstance(strategy, Nullify)
    mask = strategy.mask

    def scan(raw: bytes) -> bytes | None:
        # In an ASCII superset a text of n characters has at least n bytes
        # and holds an ASCII hint only if its bytes do: both checks are
        # safe on the raw bytes, before any decoding.
        size = len(raw)
        text = None
        spans: list[Span] | None = None

        for detector, hints, min_length in entries:
            if size < min_length:
                continue

            if hints:
                for hint in hints:
                    if raw.find(hint) != -1:
                        break
                else:
                    continue

            if text is None:
                text = raw.decode(encoding, "surrogateescape")

            found = detector.search(text)
            if found:
                hits[detector.name] = hits.get(detector.name, 0) + len(found)
                spans = found if spans is None else spans + found

        if spans is None or text is None:
            return raw

        if nullify:
            return None

        return _splice(text, spans, mask).encode(encoding, "surrogateescape")

    return scan


class RowPlan:
    """
    A compiled per-result row transformer; see L{compile_plan}.

    Call it with one row's raw values to get the values to send.  Only the
    masked columns are looked at; every other value is passed on as the
    same object.
    """

    __slots__ = (
        "_calls",
        "_constants",
        "_hits",
        "_memory",
        "_nulls",
        "_remember",
        "_rows",
        "_scans",
        "_whole",
        "encoding",
        "width",
    )

    def __init__(
        self, columns: Sequence[ColumnAction], encoding: str, remember: int = 0
    ) -> None:
        self.width = len(columns)
        self.encoding = encoding
        self._rows = 0
        self._nulls = [0] * self.width
        self._remember = remember
        self._memory: dict[bytes, None] = {}

        constants: list[tuple[int, bytes | None]] = []
        calls: list[tuple[int, Callable[[bytes], bytes]]] = []
        scans: list[tuple[int, Callable[[bytes], bytes | None]]] = []
        hits: list[tuple[int, dict[str, int]]] = []

        for index, action in enumerate(columns):
            match action:
                case PassColumn():
                    pass
                case MaskColumn(strategy=Redact()):
                    constants.append((index, REDACTED.encode("ascii")))
                case MaskColumn(strategy=Nullify()):
                    constants.append((index, None))
                case MaskColumn(strategy=KeepLast() as keep):
                    calls.append((index, _keep_last(keep, encoding)))
                case MaskColumn(strategy=KeyedHash() as keyed):
                    calls.append((index, _keyed_hash(keyed, encoding)))
                case ScanColumn(detectors=detectors, strategy=strategy, binary=binary):
                    counter: dict[str, int] = {}
                    if binary:
                        scan = _binary_scanner(
                            BINARY_TEXT[binary],
                            _scanner(detectors, NULLIFY, "ascii", counter),
                        )
                    else:
                        scan = _scanner(detectors, strategy, encoding, counter)
                    scans.append((index, scan))
                    hits.append((index, counter))
                case _:
                    raise TypeError(f"column {index}: not a column action: {action!r}")

        self._constants = tuple(constants)
        self._calls = tuple(calls)
        self._scans = tuple(scans)
        self._hits = tuple(hits)
        self._whole = tuple(index for index, _ in constants + calls)

    @property
    def masked_indexes(self) -> tuple[int, ...]:
        """
        The indexes of the columns the plan may change, in order.
        """
        scanned = tuple(index for index, _ in self._scans)
        return tuple(sorted(self._whole + scanned))

    @property
    def rows(self) -> int:
        """
        How many rows the plan has transformed.
        """
        return self._rows

    @property
    def remembered(self) -> tuple[bytes, ...]:
        """
        Distinct original values of whole-column masks, from the first
        rows, at most as many as the plan was told to remember: for
        L{mask_values_in_text} on an error or notice of the same result.
        """
        return tuple(self._memory)

    @property
    def counts(self) -> dict[tuple[int, str], int]:
        """
        What the plan masked: C{(column index, name)} to a count.

        For a whole-column rule the name is L{COLUMN_RULE} and the count
        is the values masked (C{NULL} values are not); for a scanned
        column it is each detector's name and the hits it found (hits of
        two detectors that overlap count for both).  Only non-zero counts
        appear.
        """
        counts = {}

        for index in self._whole:
            masked = self._rows - self._nulls[index]
            if masked:
                counts[index, COLUMN_RULE] = masked

        for index, counter in self._hits:
            for name, hits in counter.items():
                counts[index, name] = hits

        return counts

    def __call__(self, values: list[bytes | None]) -> list[bytes | None]:
        """
        Transform one row.

        Args:
            values: The row's raw values in the plan's encoding, C{None}
                for C{NULL}.  Not changed.

        Returns:
            A new list of the values to send.

        Raises:
            ValueError: The row does not have the plan's number of values.
        """
        if len(values) != self.width:
            raise ValueError(
                f"row has {len(values)} values, the plan expects {self.width}"
            )

        self._rows += 1
        out = values.copy()
        nulls = self._nulls
        if self._remember:
            self._keep(values)

        for index, replacement in self._constants:
            if values[index] is None:
                nulls[index] += 1
            else:
                out[index] = replacement

        for index, mask in self._calls:
            raw = values[index]
            if raw is None:
                nulls[index] += 1
            else:
                out[index] = mask(raw)

        for index, scan in self._scans:
            raw = values[index]
            if raw is not None:
                out[index] = scan(raw)

        return out

    def _keep(self, values: list[bytes | None]) -> None:
        memory = self._memory
        for index in self._whole:
            raw = values[index]
            if raw is not None and len(raw) <= _REMEMBERED_SIZE:
                memory[raw] = None
                if len(memory) >= self._remember:
                    self._remember = 0
                    return


def compile_plan(
    columns: Sequence[ColumnAction], *, encoding: str = "utf-8", remember: int = 0
) -> RowPlan:
    """
    Compile one action per result column into a row transformer.

    Called once per result, when its columns are known.  The plan is for
    text-format values: a binary or typed column that may be masked must
    be re-described as text (or masked by L{Nullify}) by the caller.

    Args:
        columns: What to do with each column, in result order.
        encoding: The Python name of the client encoding the values are
            in (C{utf-8}, C{latin-1}, ...); it must extend ASCII.
        remember: How many distinct original values of whole-column
            masks to keep from the first rows (L{RowPlan.remembered});
            values longer than 512 bytes are never kept.

    Returns:
        The plan.

    Raises:
        ValueError: The encoding is unknown or does not extend ASCII.
        TypeError: An entry is not a column action.
    """
    return RowPlan(columns, _check_encoding(encoding), remember)
