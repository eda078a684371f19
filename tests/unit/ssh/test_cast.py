"""
Terminal recordings: asciicast v2 lines, masked whole lines, resizes,
and the relay starting and ending them.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from hoopgate._masking import DETECTORS, Redact, mask_text
from hoopgate_plugins.ssh import _codec as c
from hoopgate_plugins.ssh._cast import MAX_PENDING, TerminalCast
from hoopgate_plugins.ssh._relay import Relay
from tests.unit.ssh.support import FakeLeg, FakeSession, settings

CARD = "4111111111111111"


def mask(text: str) -> str:
    return mask_text(text, DETECTORS.values(), Redact())[0]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def cast_in(tmp_path: Path, clock: Clock) -> tuple[TerminalCast, Path]:
    path = tmp_path / "S1.0.cast"
    cast = TerminalCast.create(
        path,
        mask,
        term="xterm",
        columns=120,
        rows=40,
        started=1_700_000_000.5,
        clock=clock,
    )
    return cast, path


class TestTerminalCast:
    def test_header_and_events(self, tmp_path: Path, clock: Clock) -> None:
        """
        A version 2 header, then output and resizes at their times since
        the start; the file is the owner's only.
        """
        cast, path = cast_in(tmp_path, clock)

        clock.now = 100.25
        cast.output(b"hello\r\n")
        clock.now = 101.0
        cast.resize(100, 30)
        cast.close()

        assert lines(path) == [
            {
                "version": 2,
                "width": 120,
                "height": 40,
                "timestamp": 1_700_000_000,
                "env": {"TERM": "xterm"},
            },
            [0.25, "o", "hello\r\n"],
            [1.0, "r", "100x30"],
        ]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_split_value_masked(self, tmp_path: Path, clock: Clock) -> None:
        """
        A card number sent in two packets is held until its line ends
        and masked whole; nothing of it reaches the file.
        """
        cast, path = cast_in(tmp_path, clock)

        cast.output(f"card {CARD[:7]}".encode())
        cast.output(f"{CARD[7:]} ok\r\n$ ".encode())
        cast.close()

        events = lines(path)[1:]
        assert [e[2] for e in events] == ["card [masked] ok\r\n", "$ "]
        assert CARD[:7] not in path.read_text()

    def test_utf8_split(self, tmp_path: Path, clock: Clock) -> None:
        cast, path = cast_in(tmp_path, clock)
        data = "grüße\n".encode()

        cast.output(data[:3])
        cast.output(data[3:])
        cast.close()

        assert [e[2] for e in lines(path)[1:]] == ["grüße\n"]

    def test_long_line_written_in_pieces(self, tmp_path: Path, clock: Clock) -> None:
        """
        Output without a line end is held only up to MAX_PENDING.
        """
        cast, path = cast_in(tmp_path, clock)

        cast.output(b"x" * (MAX_PENDING + 1))

        assert [e[2] for e in lines(path)[1:]] == ["x" * (MAX_PENDING + 1)]

    def test_never_overwrites(self, tmp_path: Path, clock: Clock) -> None:
        path = tmp_path / "S1.0.cast"
        path.write_text("old")

        with pytest.raises(FileExistsError):
            TerminalCast.create(
                path, mask, term="x", columns=1, rows=1, started=0, clock=clock
            )
        assert path.read_text() == "old"


PTY = c.ns(b"xterm") + (80).to_bytes(4, "big") + (24).to_bytes(4, "big") + bytes(8)
PTY += c.ns(b"")


class TestRelayCasts:
    """
    The relay starts a cast for a granted terminal, feeds it what the
    client is sent, and closes it with the channel.
    """

    def test_cast_lifecycle(self, tmp_path: Path, clock: Clock) -> None:
        session = FakeSession()
        client, upstream = FakeLeg("client"), FakeLeg("upstream")
        made: list[tuple[str, c.Pty]] = []
        path = tmp_path / "S1.0.cast"

        def casts(channel: str, pty: c.Pty) -> TerminalCast:
            made.append((channel, pty))
            return TerminalCast.create(
                path,
                mask,
                term=pty.term,
                columns=pty.columns,
                rows=pty.rows,
                started=0,
                clock=clock,
            )

        relay = Relay(session, settings(), client, upstream, lambda: None, casts=casts)
        relay.from_client(
            c.MSG_CHANNEL_OPEN, c.channel_open("session", 7, 1 << 20, 1 << 15)
        )
        relay.from_upstream(
            c.MSG_CHANNEL_OPEN_CONFIRMATION,
            c.open_confirmation(0, 70, 1 << 20, 1 << 15),
        )
        relay.from_client(
            c.MSG_CHANNEL_REQUEST, c.channel_request(0, "pty-req", False, PTY)
        )
        change = (132).to_bytes(4, "big") + (50).to_bytes(4, "big") + bytes(8)
        relay.from_client(
            c.MSG_CHANNEL_REQUEST, c.channel_request(0, "window-change", False, change)
        )
        relay.from_upstream(c.MSG_CHANNEL_DATA, c.data(0, f"pan {CARD}\r\n".encode()))
        relay.from_upstream(c.MSG_CHANNEL_CLOSE, c.channel_only(0))
        relay.from_client(c.MSG_CHANNEL_CLOSE, c.channel_only(0))

        assert made == [("0", c.Pty("xterm", 80, 24))]
        assert [e[1:] for e in lines(path)[1:]] == [
            ["r", "132x50"],
            ["o", "pan [masked]\r\n"],
        ]
        assert (CARD.encode() in b"".join(p for _, p in client.sent)) is True
        [notice] = session.events("notice")
        assert (notice.kind, notice.detail) == ("asciicast", "S1.0.cast")
        assert relay.channels == 0
