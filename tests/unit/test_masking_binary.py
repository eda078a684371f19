"""
Tests for the readers of binary number forms in L{hoopgate._masking}
(L{BINARY_TEXT}) and for scanning columns through them.  The byte
strings are what PostgreSQL 15 sends for each value in binary format.
"""

from __future__ import annotations

import struct

import pytest

from hoopgate._masking import (
    BINARY_TEXT,
    DETECTORS,
    NULLIFY,
    PASS,
    RowPlan,
    ScanColumn,
)

NUMERIC = BINARY_TEXT["postgres.numeric"]
INT8 = BINARY_TEXT["postgres.int8"]


class TestReaders:
    @pytest.mark.parametrize(
        ("raw", "text"),
        [
            (
                b"\x00\x04\x00\x03\x00\x00\x00\x00\x10\x0f\x04W\x04W\x04W",
                "4111111111111111",
            ),
            (b"\x00\x02\x00\x00@\x00\x00\x01\x00\x0c\x13\x88", "-12.5"),
            (b"\x00\x02\xff\xff\x00\x00\x00\x06\x00\x01\x08\xfc", "0.000123"),
            (b"\x00\x00\x00\x00\xc0\x00\x00\x00", "NaN"),
            (b"\x00\x00\x00\x00\x00\x00\x00\x00", "0"),
        ],
    )
    def test_numeric(self, raw: bytes, text: str) -> None:
        assert NUMERIC(raw) == text

    def test_int8(self) -> None:
        assert INT8(struct.pack(">q", 4111111111111111)) == "4111111111111111"
        assert INT8(struct.pack(">q", -7)) == "-7"

    def test_unknown_reader_refused(self) -> None:
        with pytest.raises(ValueError, match="no reader"):
            ScanColumn((DETECTORS["card_number"],), NULLIFY, "mysql.int8")


class TestScanningBinaryNumbers:
    def test_card_number_nulled_others_kept(self) -> None:
        card = struct.pack(">q", 4111111111111111)
        other = struct.pack(">q", 4111111111111112)  # fails the Luhn check
        column = ScanColumn((DETECTORS["card_number"],), NULLIFY, "postgres.int8")
        plan = RowPlan([column, PASS], "utf-8")

        rows = [plan([card, b"x"]), plan([other, b"y"]), plan([None, b"z"])]

        assert rows == [[None, b"x"], [other, b"y"], [None, b"z"]]
        assert plan.counts == {(0, "card_number"): 1}

    def test_unreadable_value_nulled(self) -> None:
        column = ScanColumn((DETECTORS["card_number"],), NULLIFY, "postgres.int8")
        plan = RowPlan([column], "utf-8")

        assert plan([b"\x01\x02"]) == [None]
