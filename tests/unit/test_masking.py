"""
Tests for L{hoopgate._masking}: detectors, strategies, row plans and
free-text masking.
"""

from __future__ import annotations

import base64
import hmac
import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import iban as stdnum_iban
from stdnum import luhn, numdb
from twisted.trial.unittest import SynchronousTestCase

from hoopgate._masking import (
    API_KEY,
    CARD_NUMBER,
    COLUMN_RULE,
    DETECTORS,
    EMAIL,
    IBAN,
    JWT,
    NULLIFY,
    PASS,
    PHONE,
    PRIVATE_KEY,
    REDACT,
    REDACTED,
    US_SSN,
    ColumnAction,
    Detector,
    KeepLast,
    KeyedHash,
    MaskColumn,
    Nullify,
    Redact,
    ScanColumn,
    Strategy,
    compile_plan,
    custom_detector,
    is_card_number,
    is_iban,
    mask_text,
    mask_values_in_text,
)
from hoopgate._verdicts import RowTransformer

KEY = b"0123456789abcdef-test-key"

VISA = "4111111111111111"
AMEX = "378282246310005"
IBAN_DE = "DE89370400440532013000"
IBAN_GB = "GB82WEST12345698765432"
SSN = "536-90-4399"

#: The bytea value of the demo's row 2, as raw bytes that are not UTF-8.
RAW = b"\xff\xfe\x00\x41"


def found(detector: Detector, text: str) -> list[str]:
    """
    The texts of a detector's hits in C{text}.
    """
    return [text[start:end] for start, end in detector.find(text)]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt(header: object, payload: object = None, signature: str = "c2ln") -> str:
    """
    A compact JWS with the given header; the signature is not real.
    """
    body = b64url(json.dumps(payload or {"sub": "ci-runner"}).encode())
    return f"{b64url(json.dumps(header).encode())}.{body}.{signature}"


class EmailTests(SynchronousTestCase):
    """
    L{EMAIL} finds e-mail addresses with a dotted, alphabetic domain.
    """

    def test_in_error_message(self) -> None:
        """
        An address quoted in a PostgreSQL error is found without quotes.
        """
        text = 'invalid input syntax for type integer: "alice@example.org"'

        assert found(EMAIL, text) == ["alice@example.org"]

    def test_several_and_subdomains(self) -> None:
        """
        Every address is found, with dots, plus signs and subdomains, but
        not a sentence's final dot.
        """
        text = "to j.doe+tag@mail.example.co.uk, cc bob@example.com."

        assert found(EMAIL, text) == ["j.doe+tag@mail.example.co.uk", "bob@example.com"]

    def test_unicode(self) -> None:
        """
        Letters outside ASCII count as letters.
        """
        assert found(EMAIL, "jörg@müller.de") == ["jörg@müller.de"]

    def test_single_host_is_not_an_address(self) -> None:
        """
        C{user@localhost}, IP literals and one-letter top-level labels are
        not taken for addresses.
        """
        for text in ["user@localhost", "ci-runner@10.0.0.1", "a@b.c", "@example.org"]:
            assert found(EMAIL, text) == [], text

    def test_sql_literal_keeps_quotes(self) -> None:
        """
        A quoted literal loses the address, not its quotes.
        """
        masked, _ = mask_text(
            "select 1 where email = 'alice@example.org'", [EMAIL], REDACT
        )

        assert masked == f"select 1 where email = '{REDACTED}'"


class CardNumberTests(SynchronousTestCase):
    """
    L{CARD_NUMBER} finds 13 to 19 digits passing the Luhn check.
    """

    def test_forms(self) -> None:
        """
        Contiguous, spaced and dashed forms are found, Amex grouping too.
        """
        for text in [
            VISA,
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            AMEX,
            "3782 822463 10005",
            "4222222222222",
        ]:
            assert found(CARD_NUMBER, f"card: {text}.") == [text], text

    def test_not_luhn(self) -> None:
        """
        Sixteen digits failing the Luhn check are not a card number.
        """
        assert not luhn.is_valid("4111111111111112")

        assert found(CARD_NUMBER, "ref 4111111111111112") == []
        assert found(CARD_NUMBER, "ref 4111 1111 1111 1112") == []

    def test_lengths(self) -> None:
        """
        Twelve Luhn-valid digits are too few; a run of twenty digits is not
        a card even when it starts with one.
        """
        twelve = "41111111111" + luhn.calc_check_digit("41111111111")
        twenty = VISA + "0000"

        assert found(CARD_NUMBER, twelve) == []
        assert found(CARD_NUMBER, twenty) == []

    def test_within_more_groups(self) -> None:
        """
        A spaced card number next to other digit groups is still found.
        """
        assert found(CARD_NUMBER, "order 123 4111 1111 1111 1111 2024") == [
            "4111 1111 1111 1111"
        ]

    def test_ordinary_numbers(self) -> None:
        """
        Dates, times, amounts, phone numbers and lists of small numbers are
        not card numbers.
        """
        text = (
            "2024-01-15 10:30:45, 52000.00, 555-123-4567, "
            "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16"
        )

        assert found(CARD_NUMBER, text) == []

    def test_unicode_digits(self) -> None:
        """
        Digits of other scripts are not card digits.
        """
        assert not is_card_number("٤١١١١١١١١١١١١١١١")


class IBANTests(SynchronousTestCase):
    """
    L{IBAN} finds account numbers that pass the registry and mod-97 checks.
    """

    def test_forms(self) -> None:
        """
        Compact, grouped and lower-case IBANs are found.
        """
        for text in [
            IBAN_DE,
            "DE89 3704 0044 0532 0130 00",
            "GB82 WEST 1234 5698 7654 32",
            "fr14 2004 1010 0505 0001 3m02 606",
        ]:
            assert found(IBAN, f"IBAN: {text}") == [text], text

    def test_bad_checksum(self) -> None:
        """
        An IBAN with wrong check digits is not an IBAN.
        """
        assert not stdnum_iban.is_valid("DE88370400440532013000")

        assert found(IBAN, "DE88370400440532013000") == []
        assert found(IBAN, "DE88 3704 0044 0532 0130 00") == []

    def test_unknown_country_and_format(self) -> None:
        """
        A country missing from the registry, or an account number of the
        wrong shape for its country, is not an IBAN even when mod 97 holds.
        """
        for unchecked in ["XX" + IBAN_DE[2:], "DE89" + IBAN_DE[4:] + "0"]:
            digits = stdnum_iban.calc_check_digits(unchecked)
            number = unchecked[:2] + digits + unchecked[4:]

            assert found(IBAN, number) == [], number

    def test_followed_by_words(self) -> None:
        """
        Words after a grouped IBAN do not hide it.
        """
        text = "DE89 3704 0044 0532 0130 00 EUR bei der Bank"

        assert found(IBAN, text) == ["DE89 3704 0044 0532 0130 00"]

    def test_every_registry_country(self) -> None:
        """
        For every country of the IBAN registry, a well-formed IBAN is found
        and one with a wrong length or check digits is not.
        """
        chars = {"n": "0123456789", "a": "ABCDEFGHIJ", "c": "0123456789ABCDEF"}
        rng = random.Random(4)
        countries = [info[1] for info in numdb.get("iban").prefixes]

        for country in countries:
            structure = numdb.get("iban").info(country)[0][1]["bban"]
            bban = "".join(
                "".join(rng.choice(chars[kind]) for _ in range(int(count)))
                for count, kind in re.findall(r"([0-9]+)!([nac])", structure)
            )
            number = country + stdnum_iban.calc_check_digits(country + "00" + bban)
            number += bban
            wrong = number[:2] + f"{(int(number[2:4]) + 1) % 97:02d}" + number[4:]

            assert stdnum_iban.is_valid(number, check_country=False)
            assert found(IBAN, f"to {number}.") == [number], number
            assert found(IBAN, f"to {wrong}.") == [], wrong
            assert not is_iban(number + "0"), number

    @settings(max_examples=300, deadline=None)
    @given(
        country=st.sampled_from(["DE", "GB", "FR", "NL", "BE", "XX", "QA", "NO"]),
        body=st.text(alphabet="0123456789ABCDEFWXYZ", min_size=10, max_size=30),
        checked=st.booleans(),
    )
    def test_agrees_with_stdnum(self, country: str, body: str, checked: bool) -> None:
        """
        L{is_iban} decides as C{stdnum.iban.is_valid(check_country=False)}.
        """
        number = country + "00" + body
        if checked:
            digits = stdnum_iban.calc_check_digits(number)
            number = country + digits + body

        assert is_iban(number) == stdnum_iban.is_valid(number, check_country=False)


class SSNTests(SynchronousTestCase):
    """
    L{US_SSN} finds dashed numbers that could have been issued.
    """

    def test_found(self) -> None:
        """
        A dashed SSN is found.
        """
        assert found(US_SSN, f"ssn {SSN}.") == [SSN]

    def test_never_issued(self) -> None:
        """
        Areas 000, 666 and 9xx, group 00, serial 0000 and the published
        example numbers are not SSNs.
        """
        for text in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "123-00-4567",
            "123-45-0000",
            "078-05-1120",
        ]:
            assert found(US_SSN, text) == [], text

    def test_needs_dashes(self) -> None:
        """
        Nine bare digits and digits running on are not taken.
        """
        assert found(US_SSN, "536904399") == []
        assert found(US_SSN, "1536-90-4399") == []
        assert found(US_SSN, "536-90-43990") == []


class PhoneTests(SynchronousTestCase):
    """
    L{PHONE} finds international numbers and nothing that is a plain integer.
    """

    def test_found(self) -> None:
        """
        Numbers starting with C{+} are found, with common separators.
        """
        for text in ["+14155552671", "+1 (415) 555-2671", "+44 20 7946 0958"]:
            assert found(PHONE, f"call {text} now") == [text], text

    def test_plain_integers(self) -> None:
        """
        Integers, sums and too short or too long digit runs are not phones.
        """
        for text in [
            "14155552671",
            "(415) 555-2671",
            "1+2345678901",
            "+1234567",
            "+12345678901234567",
        ]:
            assert found(PHONE, text) == [], text


class JWTTests(SynchronousTestCase):
    """
    L{JWT} finds compact tokens whose header is JSON with an C{alg}.
    """

    def test_found(self) -> None:
        """
        A bearer token is found whole.
        """
        token = jwt({"alg": "RS256", "typ": "JWT"})

        assert found(JWT, f"Authorization: Bearer {token}") == [token]

    def test_unsigned(self) -> None:
        """
        A token with an empty signature is still a token.
        """
        token = jwt({"alg": "none"}, signature="")

        assert found(JWT, token + " ") == [token]

    def test_not_tokens(self) -> None:
        """
        A header without C{alg}, a header that is not JSON and JSON nested
        too deeply for the parser are not tokens.
        """
        deep = b64url(b'{"alg": ' + b"[" * 100_000)
        for text in [
            jwt({"typ": "JWT"}),
            jwt({"alg": 256}),
            "eyJub3QganNvbg.e30.c2ln",
            f"{deep}.e30.c2ln",
        ]:
            assert found(JWT, text) == [], text[:40]


class APIKeyTests(SynchronousTestCase):
    """
    L{API_KEY} finds keys by their issuers' prefixes.
    """

    def test_found(self) -> None:
        """
        AWS, GitHub, Stripe, Slack and GitLab keys are found.
        """
        keys = [
            "AKIA" + "IOSFODNN7EXAMPLE",
            "ASIA" + "Q3EGRZ4SAMPLE234",
            "ghp_" + "aB3" * 12,
            "gho_" + "Zz9" * 12,
            "github_pat_" + "11ABCDEFG" + "x" * 13 + "_" + "y" * 59,
            "sk_live_" + "a1B2" * 6,
            "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKl",
            "glpat-" + "xY_z-0123456789abcdef",
        ]

        for key in keys:
            assert found(API_KEY, f"key={key} ") == [key], key[:6]

    def test_near_misses(self) -> None:
        """
        Prefixes without a key's length and shape are not keys.
        """
        for text in [
            "AKIA" + "short",
            "akia" + "iosfodnn7example",
            "ghp_" + "tooShort",
            "sk_test_" + "a1B2" * 6,
            "glpat-" + "short",
        ]:
            assert found(API_KEY, text) == [], text


class PrivateKeyTests(SynchronousTestCase):
    """
    L{PRIVATE_KEY} finds PEM private key blocks.
    """

    def test_block(self) -> None:
        """
        The block is found from BEGIN to END, whatever the key type.
        """
        for kind in ["PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY"]:
            block = (
                f"-----BEGIN {kind}-----\nMIIBOgIBAAJB\nAKj34G==\n-----END {kind}-----"
            )

            assert found(PRIVATE_KEY, f"key:\n{block}\nend") == [block]

    def test_unterminated(self) -> None:
        """
        A block cut short is masked to the end of the text.
        """
        text = "key: -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI"

        assert found(PRIVATE_KEY, text) == [text[5:]]

    def test_public_key(self) -> None:
        """
        Public keys and certificates are not private keys.
        """
        text = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----"

        assert found(PRIVATE_KEY, text) == []


class CustomDetectorTests(SynchronousTestCase):
    """
    L{custom_detector} builds detectors from configuration.
    """

    def test_plain(self) -> None:
        """
        Without a validator every match is a hit.
        """
        detector = custom_detector("employee", r"EMP-[0-9]{6}")

        assert found(detector, "by EMP-004211 and EMP-1") == ["EMP-004211"]

    def test_luhn(self) -> None:
        """
        The C{luhn} validator keeps matches whose digits pass Luhn.
        """
        detector = custom_detector("imei", r"\b[0-9]{15}\b", "luhn")

        assert found(detector, "490154203237518 490154203237519") == ["490154203237518"]

    def test_luhn_needs_digits(self) -> None:
        """
        The C{luhn} validator refuses matches that are not all digits.
        """
        detector = custom_detector("code", r"[0-9A-F]{4}-[0-9A-F]{4}", "luhn")

        assert found(detector, "0000-0000 00A0-0000") == ["0000-0000"]

    def test_iban(self) -> None:
        """
        The C{iban} validator keeps valid IBANs.
        """
        detector = custom_detector("account", r"\b[A-Z0-9]{22}\b", "iban")

        assert found(detector, f"{IBAN_DE} DE88370400440532013000") == [IBAN_DE]

    def test_hints(self) -> None:
        """
        A text holding none of the hints is not searched.
        """
        detector = custom_detector("ticket", r"[0-9]{4}", hints=["#"])

        assert found(detector, "ticket 1234") == []
        assert found(detector, "ticket #1234") == ["1234"]

    def test_empty_matches(self) -> None:
        """
        A pattern that can match nothing yields no empty hits.
        """
        detector = custom_detector("stars", r"\**")

        assert detector.find("a*b") == [(1, 2)]

    def test_errors(self) -> None:
        """
        A bad pattern, an unknown validator or a non-ASCII hint is refused,
        naming the detector.
        """
        with pytest.raises(ValueError, match="detector broken: invalid pattern"):
            custom_detector("broken", "([0-9]")

        with pytest.raises(ValueError, match="unknown validator 'crc'"):
            custom_detector("crc", "[0-9]+", "crc")

        with pytest.raises(ValueError, match="ASCII"):
            custom_detector("euro", "[0-9]+", hints=["€"])

    def test_builtin_names(self) -> None:
        """
        The built-in detectors are listed by their names.
        """
        assert sorted(DETECTORS) == (
            [
                "api_key",
                "card_number",
                "email",
                "iban",
                "jwt",
                "phone",
                "private_key",
                "us_ssn",
            ]
        )
        for name, detector in DETECTORS.items():
            assert detector.name == name


class StrategyTests(SynchronousTestCase):
    """
    Each strategy gives its documented output.
    """

    def test_redact(self) -> None:
        """
        L{Redact} gives the marker, whatever the value.
        """
        assert REDACTED == "[masked]"
        assert Redact().mask("alice@example.org") == "[masked]"
        assert Redact().mask("") == "[masked]"

    def test_keep_last(self) -> None:
        """
        L{KeepLast} pads all but the last characters, keeping the length.
        """
        assert KeepLast(4).mask(VISA) == "************1111"
        assert KeepLast(4).mask("4111-1111") == "*****1111"
        assert KeepLast(2).mask("Größe") == "***ße"
        assert KeepLast(0).mask("secret") == "******"

    def test_keep_last_short_values(self) -> None:
        """
        A value no longer than the count is hidden entirely.
        """
        assert KeepLast(4).mask("1234") == "****"
        assert KeepLast(4).mask("12") == "**"
        assert KeepLast(4).mask("") == ""

    def test_keep_last_count(self) -> None:
        """
        A negative count is refused.
        """
        with pytest.raises(ValueError, match="count"):
            KeepLast(-1)

    def test_keyed_hash(self) -> None:
        """
        L{KeyedHash} gives C{h:} and the first hex digits of HMAC-SHA-256
        over the UTF-8 text.
        """
        expected = hmac.new(KEY, "Größe".encode(), "sha256").hexdigest()

        assert KeyedHash(KEY).mask("Größe") == "h:" + expected[:12]
        assert KeyedHash(KEY, 64).mask("Größe") == "h:" + expected

    def test_keyed_hash_keys(self) -> None:
        """
        Equal values hash equally under one key and differently under
        another; long keys follow HMAC's rule of hashing them first.
        """
        long_key = b"k" * 100
        expected = hmac.new(long_key, b"alice", "sha256").hexdigest()

        assert KeyedHash(KEY).mask("alice") == KeyedHash(KEY).mask("alice")
        assert KeyedHash(KEY).mask("alice") != KeyedHash(KEY + b"2").mask("alice")
        assert KeyedHash(long_key, 64).mask("alice") == "h:" + expected

    def test_keyed_hash_key_is_secret(self) -> None:
        """
        A short key is refused, and the key never shows in a repr.
        """
        with pytest.raises(ValueError, match="16 bytes"):
            KeyedHash(b"short")

        assert "0123456789" not in repr(KeyedHash(KEY))

    def test_null_in_text(self) -> None:
        """
        L{Nullify} has no C{NULL} to put into text, so gives the marker.
        """
        assert Nullify().mask("alice@example.org") == REDACTED


def plan_of(*actions: ColumnAction, encoding: str = "utf-8") -> RowTransformer:
    """
    A compiled plan, typed as the protocol plugins see it.
    """
    return compile_plan(list(actions), encoding=encoding)


class WholeColumnTests(SynchronousTestCase):
    """
    A L{MaskColumn} masks every value of its column.
    """

    def test_strategies(self) -> None:
        """
        Each strategy's output replaces the raw value.
        """
        row: list[bytes | None] = [
            b"alice@example.org",
            SSN.encode(),
            VISA.encode(),
            b"alice@example.org",
        ]
        plan = compile_plan(
            [
                MaskColumn(REDACT),
                MaskColumn(NULLIFY),
                MaskColumn(KeepLast(4)),
                MaskColumn(KeyedHash(KEY)),
            ]
        )

        hashed = KeyedHash(KEY).mask("alice@example.org").encode()

        assert plan(row) == [b"[masked]", None, b"************1111", hashed]

    def test_null_stays_null(self) -> None:
        """
        C{NULL} stays C{NULL} under every strategy, never a mask or C{""}.
        """
        strategies: list[Strategy] = [REDACT, NULLIFY, KeepLast(4), KeyedHash(KEY)]
        plan = compile_plan([MaskColumn(s) for s in strategies])

        assert plan([None] * 4) == [None] * 4

    def test_multibyte_keep_last(self) -> None:
        """
        L{KeepLast} counts characters, not bytes, in UTF-8 and LATIN1.
        """
        for encoding in ["utf-8", "latin-1"]:
            plan = plan_of(MaskColumn(KeepLast(3)), encoding=encoding)

            out = plan(["Größe 42ß".encode(encoding)])

            assert out == ["******42ß".encode(encoding)], encoding

    def test_hash_across_encodings(self) -> None:
        """
        A value hashes the same whatever the client encoding.
        """
        value = "Größe"
        outputs = [
            plan_of(MaskColumn(KeyedHash(KEY)), encoding=encoding)(
                [value.encode(encoding)]
            )
            for encoding in ["utf-8", "latin-1", "cp1252"]
        ]

        assert outputs == [[KeyedHash(KEY).mask(value).encode()]] * 3

    def test_undecodable_bytes(self) -> None:
        """
        Bytes that are not UTF-8 are hashed and kept as they were, never
        replaced by a replacement character.
        """
        hashed = plan_of(MaskColumn(KeyedHash(KEY)))([RAW])
        kept = plan_of(MaskColumn(KeepLast(2)))([RAW])

        digest = hmac.new(KEY, RAW, "sha256").hexdigest()[:12]
        assert hashed == [b"h:" + digest.encode()]
        assert kept == [b"**\x00\x41"]


class ScanColumnTests(SynchronousTestCase):
    """
    A L{ScanColumn} masks what its detectors find inside each value.
    """

    def test_hit_inside_value(self) -> None:
        """
        Only the hit is replaced; the rest of the value stays.
        """
        plan = plan_of(ScanColumn([EMAIL, CARD_NUMBER, IBAN], REDACT))

        out = plan([b"mail alice@example.org or pay DE89 3704 0044 0532 0130 00"])

        assert out == [b"mail [masked] or pay [masked]"]

    def test_no_hit_is_same_object(self) -> None:
        """
        A value without hits is passed on as the very same bytes object.
        """
        value = b"Alice Johnson, 52000.00, user@localhost"
        scan = ScanColumn(DETECTORS.values(), REDACT)
        plan = plan_of(scan, scan)

        out = plan([value, RAW])

        assert out[0] is value
        assert out[1] is RAW

    def test_undecodable_bytes_around_hit(self) -> None:
        """
        Bytes that are not valid UTF-8 survive unchanged around a hit.
        """
        plan = plan_of(ScanColumn([EMAIL], REDACT))

        out = plan([RAW + b" alice@example.org \xc3\x28" + RAW])

        assert out == [RAW + b" [masked] \xc3\x28" + RAW]

    def test_latin1(self) -> None:
        """
        LATIN1 values are decoded as LATIN1 and stay LATIN1.
        """
        value = "Größe: jörg@müller.de, 4111 1111 1111 1111".encode("latin-1")
        plan = plan_of(ScanColumn([EMAIL, CARD_NUMBER], KeepLast(4)), encoding="latin1")

        out = plan([value])

        expected = "Größe: **********r.de, ***************1111"
        assert out == [expected.encode("latin-1")]

    def test_nullify_hit(self) -> None:
        """
        With L{Nullify} a value with a hit becomes C{NULL}; others stay.
        """
        clean = b"nothing here"
        plan = plan_of(ScanColumn([EMAIL], NULLIFY))

        assert plan([b"alice@example.org"]) == [None]
        assert plan([clean])[0] is clean

    def test_hash_hit(self) -> None:
        """
        With L{KeyedHash} each hit becomes its hash.
        """
        plan = plan_of(ScanColumn([EMAIL], KeyedHash(KEY)))

        out = plan([b"from alice@example.org"])

        hashed = KeyedHash(KEY).mask("alice@example.org")
        assert out == [f"from {hashed}".encode()]

    def test_overlapping_hits(self) -> None:
        """
        Hits of two detectors that overlap are masked as one span.
        """
        digits = custom_detector("digits", r"[0-9]{4,}")
        plan = compile_plan([ScanColumn([EMAIL, digits], REDACT)])

        out = plan([b"id 12345 user12345@example.org"])

        assert out == [b"id [masked] [masked]"]
        assert plan.counts == {(0, "email"): 1, (0, "digits"): 2}

    def test_null(self) -> None:
        """
        C{NULL} in a scanned column stays C{NULL}.
        """
        plan = plan_of(ScanColumn([EMAIL], REDACT), ScanColumn([EMAIL], NULLIFY))

        assert plan([None, None]) == [None, None]

    def test_needs_detectors(self) -> None:
        """
        A scanned column without detectors is a configuration error.
        """
        with pytest.raises(ValueError, match="at least one detector"):
            ScanColumn([], REDACT)


class PlanTests(SynchronousTestCase):
    """
    L{compile_plan} builds a row transformer that touches only its columns.
    """

    def test_pass_columns_identical(self) -> None:
        """
        Unmasked values, including bytes that are not UTF-8 and C{NULL},
        are passed on as the same objects, in a new list.
        """
        row: list[bytes | None] = [b"2", b"alice@example.org", None, RAW]
        plan = plan_of(PASS, MaskColumn(REDACT), PASS, PASS)

        out = plan(row)

        assert out is not row
        assert row == [b"2", b"alice@example.org", None, RAW]
        assert out[0] is row[0]
        assert out[3] is RAW
        assert out == [b"2", b"[masked]", None, RAW]

    def test_counts(self) -> None:
        """
        The plan counts masked values per column and hits per detector,
        never counting C{NULL}.
        """
        plan = compile_plan(
            [
                PASS,
                MaskColumn(REDACT),
                MaskColumn(KeepLast(4)),
                ScanColumn([EMAIL, IBAN], REDACT),
            ]
        )
        rows: list[list[bytes | None]] = [
            [b"1", b"a", b"4111111111111111", b"a@example.org b@example.org"],
            [b"2", None, None, None],
            [b"3", b"c", b"4242424242424242", IBAN_DE.encode()],
            [b"4", b"d", b"5555", b"nothing"],
        ]

        for row in rows:
            plan(row)

        assert plan.rows == 4
        assert plan.masked_indexes == (1, 2, 3)
        assert plan.counts == (
            {
                (1, COLUMN_RULE): 3,
                (2, COLUMN_RULE): 3,
                (3, "email"): 2,
                (3, "iban"): 1,
            }
        )

    def test_no_counts_yet(self) -> None:
        """
        A plan that has seen no rows has no counts.
        """
        plan = compile_plan([MaskColumn(REDACT), ScanColumn([EMAIL], REDACT)])

        assert (plan.rows, plan.counts) == (0, {})

    def test_wrong_width(self) -> None:
        """
        A row with another number of values than the plan is refused.
        """
        plan = plan_of(PASS, MaskColumn(REDACT))

        with pytest.raises(ValueError, match="row has 3 values, the plan expects 2"):
            plan([b"1", b"2", b"3"])

    def test_encodings(self) -> None:
        """
        Unknown encodings and encodings that do not extend ASCII are
        refused; aliases are accepted.
        """
        with pytest.raises(ValueError, match="unknown encoding"):
            compile_plan([PASS], encoding="klingon")

        for encoding in ["utf-16", "utf-32", "utf-7", "cp037"]:
            with pytest.raises(ValueError, match="does not extend ASCII"):
                compile_plan([PASS], encoding=encoding)

        assert compile_plan([PASS], encoding="LATIN1").encoding == "iso8859-1"

    def test_not_an_action(self) -> None:
        """
        Something that is not a column action is refused.
        """
        with pytest.raises(TypeError, match="column 1: not a column action"):
            compile_plan([PASS, REDACT])  # type: ignore[list-item]


#: Values a row may hold: text with and without hits, bytes that are not
#: text, and NULL.
values = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.text(max_size=40).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [b"alice@example.org", VISA.encode(), IBAN_DE.encode(), SSN.encode()]
    ),
)

actions = st.sampled_from(
    [
        PASS,
        MaskColumn(REDACT),
        MaskColumn(NULLIFY),
        MaskColumn(KeepLast(4)),
        MaskColumn(KeyedHash(KEY)),
        ScanColumn(DETECTORS.values(), REDACT),
        ScanColumn([EMAIL, CARD_NUMBER, IBAN], KeepLast(4)),
    ]
)


class PlanPropertyTests(SynchronousTestCase):
    """
    Properties of plans over random rows.
    """

    @settings(max_examples=300, deadline=None)
    @given(
        columns=st.lists(st.tuples(actions, values), min_size=1, max_size=8),
        encoding=st.sampled_from(["utf-8", "latin-1"]),
    )
    def test_random_rows(
        self,
        columns: list[tuple[ColumnAction, bytes | None]],
        encoding: str,
    ) -> None:
        """
        The output has one value per column; pass columns are the same
        objects; C{NULL} stays C{NULL}; masked values are bytes or C{NULL}.
        """
        row = [value for _, value in columns]
        plan = compile_plan([action for action, _ in columns], encoding=encoding)

        out = plan(row)

        assert len(out) == len(row)
        for (action, value), masked in zip(columns, out, strict=True):
            if action is PASS:
                assert masked is value
            elif value is None:
                assert masked is None
            else:
                assert isinstance(masked, (bytes, type(None)))

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet="abcdefghij XYZ.,;:!?()[]{}'\"\n\tßéü€", max_size=200))
    def test_clean_text_untouched(self, text: str) -> None:
        """
        Text that no detector can match comes back as the same bytes.
        """
        value = text.encode()
        plan = plan_of(ScanColumn(DETECTORS.values(), REDACT))

        assert plan([value])[0] is value

    @settings(max_examples=200, deadline=None)
    @given(
        before=st.text(alphabet="abc xyz,;", max_size=30),
        after=st.text(alphabet="abc xyz,;", max_size=30),
        secret=st.sampled_from(
            ["alice@example.org", VISA, "4111-1111-1111-1111", IBAN_GB, SSN]
        ),
    )
    def test_masked_text_has_no_hits(
        self, before: str, after: str, secret: str
    ) -> None:
        """
        After masking, the secret is gone, the surroundings stay, and a
        second pass finds nothing.
        """
        detectors = [EMAIL, CARD_NUMBER, IBAN, US_SSN]
        text = f"{before} {secret} {after}"

        masked, hits = mask_text(text, detectors, REDACT)

        assert masked == f"{before} {REDACTED} {after}"
        assert sum(hits.values()) == 1
        assert mask_text(masked, detectors, REDACT) == (masked, {})


class MaskTextTests(SynchronousTestCase):
    """
    L{mask_text} masks detector hits in free text.
    """

    def test_error_message(self) -> None:
        """
        The address echoed by a failed cast is removed from the error.
        """
        text = 'invalid input syntax for type integer: "alice@example.org"'

        masked, hits = mask_text(text, [EMAIL, CARD_NUMBER, IBAN], REDACT)

        assert masked == 'invalid input syntax for type integer: "[masked]"'
        assert hits == {"email": 1}

    def test_nothing_found(self) -> None:
        """
        Text without hits comes back as it was, with no hits.
        """
        text = 'invalid input syntax for type integer: "abc"'

        masked, hits = mask_text(text, DETECTORS.values(), REDACT)

        assert masked is text
        assert hits == {}

    def test_strategies(self) -> None:
        """
        The strategy decides what replaces each hit; L{Nullify} gives the
        marker.
        """
        text = f"card {VISA}"

        assert mask_text(text, [CARD_NUMBER], KeepLast(4))[0] == "card ************1111"
        assert mask_text(text, [CARD_NUMBER], NULLIFY)[0] == "card [masked]"


class MaskValuesInTextTests(SynchronousTestCase):
    """
    L{mask_values_in_text} replaces known sensitive values in free text.
    """

    def test_long_values(self) -> None:
        """
        A known value is replaced wherever it occurs, even inside words.
        """
        text = 'value "536904399" out of range; key x536904399y'

        masked, count = mask_values_in_text(text, ["536904399"])

        assert masked == 'value "[masked]" out of range; key x[masked]y'
        assert count == 2

    def test_short_values(self) -> None:
        """
        A short value is replaced only where it stands alone.
        """
        masked, count = mask_values_in_text('"42" at 1042, column 42b, 42', ["42"])

        assert masked == '"[masked]" at 1042, column 42b, [masked]'
        assert count == 2

    def test_overlapping_values(self) -> None:
        """
        Overlapping values are replaced once, the longer span winning.
        """
        masked, count = mask_values_in_text(
            "alice@example.org!", ["alice@example.org", "example.org", "alice"]
        )

        assert (masked, count) == ("[masked]!", 1)

    def test_nothing_to_replace(self) -> None:
        """
        Empty values and absent values change nothing.
        """
        text = "division by zero"

        masked, count = mask_values_in_text(text, ["", "alice@example.org"])

        assert masked is text
        assert count == 0

    def test_special_characters(self) -> None:
        """
        Values are literal text, not patterns.
        """
        masked, _ = mask_values_in_text("a.b a+b (x)", ["a+b", "(x)", "."])

        assert masked == "a.b [masked] [masked]"
