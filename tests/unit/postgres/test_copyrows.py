"""
Tests for L{hoopgate_plugins.postgres._copyrows}: COPY TO STDOUT rows in
text and CSV format, split, masked and encoded again.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopgate._masking import REDACT, MaskColumn, PassColumn, compile_plan
from hoopgate_plugins.postgres._copyrows import (
    CopyFormatError,
    CopyMasker,
    decode_text_field,
    encode_csv_field,
    encode_text_field,
    split_csv_row,
    split_text_row,
)

PASS = PassColumn()
MASK = MaskColumn(REDACT)


class TestText:
    """
    Text format: tabs, backslash escapes, \\N.
    """

    def test_fields(self) -> None:
        """
        Fields split on tabs and decode their escapes; \\N is NULL.
        """
        raws = split_text_row(b"1\ta\\tb\\\\c\\n\t\\N\t\\101\\x42\n")

        assert [decode_text_field(r) for r in raws] == [
            b"1",
            b"a\tb\\c\n",
            None,
            b"AB",
        ]

    @given(st.one_of(st.none(), st.binary()))
    def test_round_trip(self, value: bytes | None) -> None:
        """
        Any value encodes to one field that decodes back to it.
        """
        field = encode_text_field(value)

        assert b"\t" not in field and b"\n" not in field
        assert decode_text_field(field) == value

    def test_unterminated(self) -> None:
        """
        A row without its line break is not a row.
        """
        with pytest.raises(CopyFormatError):
            split_text_row(b"1\t2")


class TestCsv:
    """
    CSV format: quotes, doubled quotes, unquoted empty NULL.
    """

    def test_fields(self) -> None:
        """
        Quoted fields keep commas and quotes; an unquoted empty field is
        NULL, a quoted one the empty string.
        """
        raws, values = split_csv_row(b'1,"a,b",,"","x""y",\n')

        assert raws == [b"1", b'"a,b"', b"", b'""', b'"x""y"', b""]
        assert values == [b"1", b"a,b", None, b"", b'x"y', None]

    @given(st.lists(st.one_of(st.none(), st.binary()), min_size=1, max_size=5))
    def test_round_trip(self, values: list[bytes | None]) -> None:
        """
        Encoded values split back into the same values.
        """
        line = b",".join(encode_csv_field(v) for v in values) + b"\n"

        assert split_csv_row(line)[1] == values

    @pytest.mark.parametrize("line", [b'"open\n', b'"a"b\n', b'a"b\n', b"no end"])
    def test_malformed(self, line: bytes) -> None:
        """
        Rows that do not read as CSV are refused.
        """
        with pytest.raises(CopyFormatError):
            split_csv_row(line)


class TestCopyMasker:
    """
    A row plan applied to COPY rows.
    """

    def test_text(self) -> None:
        """
        Masked fields are replaced; the others keep their very bytes; a
        row with nothing masked is the same payload.
        """
        masker = CopyMasker(compile_plan([PASS, MASK, PASS]), "text")
        row = b"1\tsecret\\tvalue\ta\\\\b\n"

        masked = masker(row)
        untouched = masker(b"2\t\\N\tz\n")

        assert masked == b"1\t[masked]\ta\\\\b\n"
        assert untouched == b"2\t\\N\tz\n"
        assert masker.last == [b"2", None, b"z"]

    def test_csv_with_header(self) -> None:
        """
        The header row passes; masked CSV fields are re-quoted as needed.
        """
        masker = CopyMasker(compile_plan([PASS, MASK]), "csv+header")
        header = b"id,email\n"

        assert masker(header) is header
        assert masker(b'1,"a,b@c.org"\n') == b"1,[masked]\n"

    def test_unreadable_formats(self) -> None:
        """
        Formats masking cannot read are refused.
        """
        for stream_format in ("binary", "other", "csv+footer"):
            with pytest.raises(ValueError, match="cannot be masked"):
                CopyMasker(compile_plan([MASK]), stream_format)
