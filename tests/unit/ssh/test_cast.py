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
from hoopgate_plugins.ssh._cast import MAX_PENDING, TerminalCast, is_secret_prompt
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


def cast_in(
    tmp_path: Path, clock: Clock, *, keyboard: bool = False
) -> tuple[TerminalCast, Path]:
    path = tmp_path / "S1.0.cast"
    cast = TerminalCast.create(
        path,
        mask,
        term="xterm",
        columns=120,
        rows=40,
        started=1_700_000_000.5,
        clock=clock,
        keyboard=keyboard,
    )
    return cast, path


def typed(cast: TerminalCast, text: str) -> None:
    """
    Type C{text} one key (one packet) at a time.
    """
    for char in text:
        cast.input(char.encode())


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
        Output without a line end is held only up to MAX_PENDING: a piece
        is written then, the rest at close, nothing lost.
        """
        cast, path = cast_in(tmp_path, clock)

        cast.output(b"x" * (MAX_PENDING + 1))
        written = [e[2] for e in lines(path)[1:]]
        cast.close()

        assert len(written) == 1
        assert 0 < len(written[0]) < MAX_PENDING + 1
        assert "".join(e[2] for e in lines(path)[1:]) == "x" * (MAX_PENDING + 1)

    @pytest.mark.parametrize("shift", [-40, -9, -1, 0, 1, 7, 30])
    def test_value_at_cut_masked(
        self, tmp_path: Path, clock: Clock, shift: int
    ) -> None:
        """
        A card number that arrives as a long line outgrows MAX_PENDING
        is not written in two pieces: the cut falls before it.
        """
        cast, path = cast_in(tmp_path, clock)
        line = "a" * (MAX_PENDING + shift) + f", {CARD} ok\r\n"
        split = MAX_PENDING + 5

        cast.output(line[:split].encode())
        cast.output(line[split:].encode())
        cast.close()

        text = "".join(e[2] for e in lines(path)[1:])
        assert text == mask(line)
        assert "[masked]" in text
        assert CARD[:6] not in path.read_text()

    @pytest.mark.parametrize("back", [1000, 1010, 1020, 1030, 1040])
    def test_spaced_value_in_long_run(
        self, tmp_path: Path, clock: Clock, back: int
    ) -> None:
        """
        In a long run without a safe place to cut (letters, digits and
        spaces only), a spaced card number near the forced cut is still
        masked whole.
        """
        cast, path = cast_in(tmp_path, clock)
        spaced = "4111 1111 1111 1111"
        filler = "ab " * ((MAX_PENDING + 200) // 3)
        at = len(filler) - back
        run = filler[:at] + " " + spaced + " " + filler[at:]

        for i in range(0, len(run), 512):
            cast.output(run[i : i + 512].encode())
        cast.output(b"\r\n")
        cast.close()

        text = "".join(e[2] for e in lines(path)[1:])
        assert "[masked]" in text
        assert "4111 1111" not in text
        assert "1111 1111" not in text

    def test_run_without_clean_cut_redacted(self, tmp_path: Path, clock: Clock) -> None:
        """
        When values straddle every cut tried in a long run, the run is
        written as [masked] up to the next safe character; what follows
        is recorded again.
        """
        cast, path = cast_in(tmp_path, clock)
        spaced = "4111 1111 1111 1111 "
        run = spaced * ((MAX_PENDING + 400) // len(spaced))

        cast.output(run.encode())
        cast.output(b"4111 1111; after\r\n")
        cast.close()

        text = "".join(e[2] for e in lines(path)[1:])
        assert "1111" not in text
        assert text.endswith("[masked]; after\r\n")

    def test_private_key_lines_masked(self, tmp_path: Path, clock: Clock) -> None:
        """
        Every line of a private key block is masked, not only the first.
        """
        cast, path = cast_in(tmp_path, clock)
        body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"

        cast.output(b"$ cat id\r\n-----BEGIN OPENSSH PRIVATE KEY-----\r\n")
        cast.output(f"{body}\r\n{body[::-1]}\r\n".encode())
        cast.output(b"-----END OPENSSH PRIVATE KEY-----\r\n$ ")
        cast.close()

        events = [e[2] for e in lines(path)[1:]]
        assert events == [
            "$ cat id\r\n[masked]",
            "[masked]\r\n",
            "[masked]\r\n",
            "$ ",
        ]
        assert body not in path.read_text()

    def test_never_overwrites(self, tmp_path: Path, clock: Clock) -> None:
        path = tmp_path / "S1.0.cast"
        path.write_text("old")

        with pytest.raises(FileExistsError):
            TerminalCast.create(
                path, mask, term="x", columns=1, rows=1, started=0, clock=clock
            )
        assert path.read_text() == "old"


class TestKeyboardInput:
    """
    Typed input: recorded only when asked, a masked line per Enter,
    never after a secret prompt.
    """

    def test_off_by_default(self, tmp_path: Path, clock: Clock) -> None:
        cast, path = cast_in(tmp_path, clock)

        typed(cast, "echo hi\r")
        cast.close()

        assert [e[1] for e in lines(path)[1:]] == []

    def test_lines_masked(self, tmp_path: Path, clock: Clock) -> None:
        """
        A card number and an e-mail typed key by key are masked whole;
        an "i" event per line, at the time Enter was typed.
        """
        cast, path = cast_in(tmp_path, clock, keyboard=True)

        typed(cast, f"echo {CARD}\r")
        clock.now = 102.5
        typed(cast, "mail ada@example.org\r")
        cast.close()

        assert lines(path)[1:] == [
            [0.0, "i", "echo [masked]\r"],
            [2.5, "i", "mail [masked]\r"],
        ]
        assert CARD not in path.read_text()
        assert "ada@" not in path.read_text()

    def test_backspace_applied(self, tmp_path: Path, clock: Clock) -> None:
        """
        A card number corrected with backspace is still found.
        """
        cast, path = cast_in(tmp_path, clock, keyboard=True)

        typed(cast, f"{CARD[:8]}9\x7f{CARD[8:]}\r")
        typed(cast, "oops\x15ls\r")
        cast.close()

        assert [e[2] for e in lines(path)[1:]] == ["[masked]\r", "ls\r"]

    def test_password_prompt_not_recorded(self, tmp_path: Path, clock: Clock) -> None:
        """
        What is typed after a password prompt, up to Enter, is dropped;
        the next command is recorded again.
        """
        cast, path = cast_in(tmp_path, clock, keyboard=True)

        typed(cast, "sudo -k id\r")
        cast.output(b"sudo -k id\r\n[sudo] password for ada: ")
        typed(cast, "hunter2-secret\r")
        cast.output(b"\r\nuid=0(root)\r\n$ ")
        typed(cast, "ls\r")
        cast.close()

        inputs = [e[2] for e in lines(path)[1:] if e[1] == "i"]
        assert inputs == ["sudo -k id\r", "ls\r"]
        assert "hunter2" not in path.read_text()

    def test_echoed_command_is_no_prompt(self, tmp_path: Path, clock: Clock) -> None:
        """
        Typing a command that mentions "password:" (each key echoed back)
        is recorded whole.
        """
        cast, path = cast_in(tmp_path, clock, keyboard=True)

        for char in "grep password: notes\r":
            cast.input(char.encode())
            cast.output(char.encode() if char != "\r" else b"\r\n")
        cast.close()

        inputs = [e[2] for e in lines(path)[1:] if e[1] == "i"]
        assert inputs == ["grep password: notes\r"]

    def test_prompt_answer_in_one_packet(self, tmp_path: Path, clock: Clock) -> None:
        """
        A pasted answer with more after its Enter: only the answer goes.
        """
        cast, path = cast_in(tmp_path, clock, keyboard=True)

        cast.output(b"Password: ")
        cast.input(b"pasted-secret\rwhoami\r")
        cast.close()

        assert [e[2] for e in lines(path)[1:] if e[1] == "i"] == ["whoami\r"]
        assert "pasted-secret" not in path.read_text()

    @pytest.mark.parametrize(
        ("line", "secret"),
        [
            ("Password: ", True),
            ("[sudo] password for ada: ", True),
            ("Password for 'https://ada@git.example':", True),
            ("Enter passphrase for key '/root/.ssh/id_ed25519': ", True),
            ("Enter PEM pass phrase:", True),
            ("\x1b[1mEnter PIN for 'card':\x1b[0m ", True),
            ("Verification code: ", True),
            ("ada@box:~$ ", False),
            ("$ echo password", False),
            ("Username: ", False),
        ],
    )
    def test_secret_prompts(self, line: str, secret: bool) -> None:
        assert is_secret_prompt(line) is secret


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

    def test_keyboard_input_fed(self, tmp_path: Path, clock: Clock) -> None:
        """
        With a keyboard cast, what the client sends on the terminal's
        channel is recorded once passed on, masked; output as before.
        """
        session = FakeSession()
        client, upstream = FakeLeg("client"), FakeLeg("upstream")
        path = tmp_path / "S1.0.cast"

        def casts(channel: str, pty: c.Pty) -> TerminalCast:
            return TerminalCast.create(
                path,
                mask,
                term=pty.term,
                columns=80,
                rows=24,
                started=0,
                clock=clock,
                keyboard=True,
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
        for char in f"echo {CARD}\r":
            relay.from_client(c.MSG_CHANNEL_DATA, c.data(0, char.encode()))
        relay.from_upstream(c.MSG_CHANNEL_DATA, c.data(0, b"[masked]\r\n"))
        relay.from_upstream(c.MSG_CHANNEL_CLOSE, c.channel_only(0))
        relay.from_client(c.MSG_CHANNEL_CLOSE, c.channel_only(0))

        assert [e[1:] for e in lines(path)[1:]] == [
            ["i", "echo [masked]\r"],
            ["o", "[masked]\r\n"],
        ]
        data = [p for m, p in upstream.sent if m == c.MSG_CHANNEL_DATA]
        assert [c.parse_data(p)[1] for p in data] == [
            ch.encode() for ch in f"echo {CARD}\r"
        ]
        kinds = [(n.kind, n.detail) for n in session.events("notice")]
        assert ("asciicast.keyboard", "S1.0.cast") in kinds
