"""
Tests for L{hoopgate_plugins.postgres._codec}: counted lists and the
client reader's limits.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopgate_plugins.postgres import _codec as pg

#: More elements than a signed 16-bit count can hold.
MANY = 40_000


def _u16(value: int) -> bytes:
    return struct.pack(">H", value)


def _i32(value: int) -> bytes:
    return struct.pack(">i", value)


def _framed(type_byte: bytes, payload: bytes) -> bytes:
    return type_byte + _i32(len(payload) + 4) + payload


class TestCounts:
    """
    Counts of parameters, format codes and columns are unsigned 16-bit
    numbers, as PostgreSQL reads and writes them.
    """

    def test_parse_many_parameter_types(self) -> None:
        """
        A Parse fixing 40,000 parameter types (count bytes 9c 40) gives
        all 40,000 OIDs.
        """
        oids = b"".join(_i32(23) for _ in range(MANY))
        payload = b"s1\0select 1\0" + b"\x9c\x40" + oids

        message = pg.parse_parse(payload)

        assert message.name == "s1"
        assert len(message.param_type_oids) == MANY
        assert set(message.param_type_oids) == {23}

    def test_bind_many_parameters(self) -> None:
        """
        A Bind of 40,000 parameters with one format code each gives every
        value in order.
        """
        formats = _u16(MANY) + b"\0\0" * MANY
        values = _u16(MANY) + b"".join(
            _i32(len(str(i))) + str(i).encode() for i in range(MANY)
        )
        payload = b"\0\0" + formats + values + _u16(0)

        message = pg.parse_bind(payload)

        assert len(message.params) == MANY
        assert message.params[0] == b"0"
        assert message.params[-1] == b"39999"
        assert message.param_formats == (0,) * MANY
        assert message.param_format(MANY - 1) == 0

    def test_bind_largest_count(self) -> None:
        """
        65,535 NULL parameters, the most the count holds, are read.
        """
        payload = b"\0\0" + _u16(0) + b"\xff\xff" + b"\xff" * 4 * 65_535 + _u16(0)

        message = pg.parse_bind(payload)

        assert len(message.params) == 65_535
        assert set(message.params) == {None}

    def test_bind_count_beyond_payload(self) -> None:
        """
        A count claiming more values than the payload holds is a
        protocol violation, not a short list.
        """
        payload = b"\0\0" + _u16(0) + _u16(MANY) + _i32(-1) + _u16(0)

        with pytest.raises(pg.ProtocolViolation, match="truncated"):
            pg.parse_bind(payload)

    def test_parameter_description_many(self) -> None:
        """
        The server's ParameterDescription of a 40,000-parameter statement
        gives 40,000 types.
        """
        payload = _u16(MANY) + _i32(25) * MANY

        message = pg.parse_parameter_description(payload)

        assert message.type_oids == (25,) * MANY

    def test_column_number_stays_signed(self) -> None:
        """
        A column's attribute number is signed (system columns such as
        ctid are negative) while the column count is not.
        """
        field = b"ctid\0" + _i32(16384) + b"\xff\xff" + _i32(27) + _u16(6)
        payload = _u16(1) + field + _i32(-1) + _u16(0)

        [column] = pg.parse_row_description(payload).fields

        assert (column.name, column.column_number, column.type_size) == (
            "ctid",
            -1,
            6,
        )
        assert pg.row_description([column])[5:] == payload

    def test_builders_pack_unsigned(self) -> None:
        """
        Builders write 40,000 as 9c 40 and the parsers read it back.
        """
        values = [b"x"] * MANY

        bind = pg.bind("", "", values, [1])
        described = pg.parameter_description([23] * MANY)

        assert bind[5:13] == b"\0\0" + _u16(1) + b"\0\x01" + b"\x9c\x40"
        assert pg.parse_bind(bind[5:]).params == tuple(values)
        assert pg.parse_parameter_description(described[5:]).type_oids == (23,) * MANY

    def test_builders_refuse_more_than_65535(self) -> None:
        """
        A list longer than the count can say is refused, not wrapped.
        """
        with pytest.raises(ValueError, match="65536 elements"):
            pg.parse("", "select 1", [0] * 65_536)

    @given(st.lists(st.one_of(st.none(), st.binary(max_size=4)), max_size=40))
    def test_data_row_round_trip(self, values: list[bytes | None]) -> None:
        """
        Any row builds to a DataRow the fast parser reads back.
        """
        built = pg.data_row(values)

        assert pg.parse_data_row(built[5:]) == values
