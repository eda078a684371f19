"""
Tests for L{hoopgate_plugins.postgres._codec}: counted lists and the
client reader's limits.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
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


#: The statement limit of the readers below.
LIMIT = 100_000


def _reader() -> pg.FrontendReader:
    return pg.FrontendReader(max_length=1 << 24, statement_limit=LIMIT)


def _frames(reader: pg.FrontendReader, data: bytes, step: int) -> list[pg.Frame]:
    """
    Feed C{data} C{step} bytes at a time, taking frames as they come.
    """
    frames: list[pg.Frame] = []
    for start in range(0, len(data), step):
        reader.feed(data[start : start + step])
        frames.extend(reader)
    return frames


class TestStatementLimit:
    """
    A Query or Parse over the statement limit is refused at its header
    and dropped as it arrives; the session's next message reads as usual.
    """

    def test_query_over_limit_not_buffered(self) -> None:
        """
        A 1 MB Query gives one oversized frame holding only its header;
        the reader never holds more than one 64 KiB chunk of it, and the
        Sync behind it is read whole.
        """
        big = pg.query("select '" + "x" * 1_000_000 + "'")
        reader = _reader()
        frames: list[pg.Frame] = []
        most = 0

        for start in range(0, len(big), 65_536):
            reader.feed(big[start : start + 65_536])
            frames.extend(reader)
            most = max(most, reader.buffered)
        reader.feed(pg.sync())
        frames.extend(reader)

        assert [f.type for f in frames] == [
            pg.OVERSIZED_STATEMENT,
            pg.FrontendType.SYNC,
        ]
        assert frames[0].payload == big[:5]
        assert frames[0].raw == b""
        assert pg.parse_oversized(frames[0].payload) == pg.OversizedStatement(
            pg.FrontendType.QUERY, len(big) - 1, ""
        )
        assert most == 0
        assert reader.skipping == 0

    def test_parse_over_limit_names_statement(self) -> None:
        """
        A Parse over the limit gives its statement name, even when the
        name arrives a byte at a time.
        """
        big = pg.parse("bulk_1", "insert into t values " + "(1)," * 50_000 + "(1)")
        reader = _reader()

        frames = _frames(reader, big[:20], 1) + _frames(reader, big[20:], 4096)

        [frame] = frames
        assert frame.type == pg.OVERSIZED_STATEMENT
        assert pg.parse_oversized(frame.payload) == pg.OversizedStatement(
            pg.FrontendType.PARSE, len(big) - 1, "bulk_1"
        )

    def test_at_limit_read_whole(self) -> None:
        """
        A Query whose length field is the limit is an ordinary frame.
        """
        text = "s" * (LIMIT - 5)
        wire = pg.query(text)
        reader = _reader()

        [frame] = _frames(reader, wire, 65_536)

        assert len(wire) == LIMIT + 1
        assert frame.type == pg.FrontendType.QUERY
        assert pg.parse_query(frame.payload).text == text

    def test_other_messages_read_whole(self) -> None:
        """
        A Bind over the statement limit (bulk parameters) is read whole.
        """
        wire = pg.bind("", "", [b"v" * 200_000])
        reader = _reader()

        [frame] = _frames(reader, wire, 65_536)

        assert frame.type == pg.FrontendType.BIND
        assert pg.parse_bind(frame.payload).params == (b"v" * 200_000,)

    def test_over_message_limit_still_violation(self) -> None:
        """
        A Query over the limit for every message is a protocol violation,
        as without a statement limit.
        """
        reader = pg.FrontendReader(max_length=200_000, statement_limit=LIMIT)
        reader.feed(b"Q" + _i32(300_000))

        with pytest.raises(pg.ProtocolViolation, match="exceeds the limit"):
            reader.next_frame()

    def test_long_statement_name(self) -> None:
        """
        A Parse over the limit whose name runs past 4096 bytes is a
        protocol violation.
        """
        reader = _reader()
        reader.feed(b"P" + _i32(LIMIT + 10) + b"n" * 5000)

        with pytest.raises(pg.ProtocolViolation, match="statement name"):
            reader.next_frame()

    def test_without_limit(self) -> None:
        """
        Without a statement limit a long Query is an ordinary frame.
        """
        wire = pg.query("q" * 200_000)
        reader = pg.FrontendReader()

        [frame] = _frames(reader, wire, 65_536)

        assert frame.type == pg.FrontendType.QUERY

    @settings(max_examples=50, deadline=None)
    @given(
        st.lists(st.sampled_from(["small", "big", "parse", "sync"]), max_size=6),
        st.lists(st.floats(min_value=0, max_value=1), max_size=12),
    )
    def test_stream_split_anywhere(self, kinds: list[str], cuts: list[float]) -> None:
        """
        Whatever the mix and wherever the stream is cut, the frames are
        the messages in order, big statements as oversized frames.
        """
        wires = {
            "small": pg.query("select 1"),
            "big": pg.query("-" * LIMIT),
            "parse": pg.parse("p", "-" * LIMIT),
            "sync": pg.sync(),
        }
        want = {
            "small": pg.FrontendType.QUERY,
            "big": pg.OVERSIZED_STATEMENT,
            "parse": pg.OVERSIZED_STATEMENT,
            "sync": pg.FrontendType.SYNC,
        }
        stream = b"".join(wires[k] for k in kinds)
        points = sorted({0, len(stream), *(int(c * len(stream)) for c in cuts)})
        reader = _reader()
        frames: list[pg.Frame] = []

        for start, end in itertools.pairwise(points):
            reader.feed(stream[start:end])
            frames.extend(reader)

        assert [f.type for f in frames] == [want[k] for k in kinds]
        assert reader.buffered == 0
        assert reader.skipping == 0
