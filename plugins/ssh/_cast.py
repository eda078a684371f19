"""
Terminal recordings: the output of a pty channel as an asciicast v2
file, masked before it is written.

One file per terminal, beside the session's JSON-lines recording
(C{SESSION.CHANNEL.cast}), playable with C{asciinema play}: a header
line (size, TERM, start time), then C{[seconds, "o", text]} for output
and C{[seconds, "r", "COLSxROWS"]} for resizes.  Keyboard input is not
recorded (typed passwords).

Masking works on text, so output is decoded as UTF-8 (bad bytes become
U+FFFD) and held until a line ends before the session's C{mask_text}
sees it whole: a card number split over two packets is still found.  A
line longer than L{MAX_PENDING} characters is masked and written in
pieces.

test-case-name: tests.unit.ssh.test_cast
"""

from __future__ import annotations

import codecs
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from twisted.logger import Logger

#: Characters of an unfinished line held back for masking.
# FIXME(#6): a value that straddles the cut of a line longer than this
# is written in two pieces that the detectors see apart.
MAX_PENDING = 4096


class TerminalCast:
    """
    The asciicast of one terminal.

    Args:
        handle: The open file (created for this cast only).
        mask: Masks text before it is written.
        clock: Seconds, for event times (monotonic).
        path: The file's name, for the log.

    Attributes:
        path: The file's name.
    """

    _log = Logger()

    def __init__(
        self,
        handle: IO[str],
        mask: Callable[[str], str],
        clock: Callable[[], float] = time.monotonic,
        path: str = "",
    ) -> None:
        self._handle: IO[str] | None = handle
        self._mask = mask
        self._clock = clock
        self._start = clock()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self.path = path

    @classmethod
    def create(
        cls,
        path: Path,
        mask: Callable[[str], str],
        *,
        term: str,
        columns: int,
        rows: int,
        started: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> TerminalCast:
        """
        Create the file (owner-only, never over an existing one) and
        write the header.

        Raises:
            OSError: It cannot be created.
        """
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        # Line-buffered: each event reaches the file as it happens.
        handle = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        cast = cls(handle, mask, clock, str(path))
        header = {
            "version": 2,
            "width": columns or 80,
            "height": rows or 24,
            "timestamp": int(started),
            "env": {"TERM": term},
        }
        cast._line(header)
        return cast

    def output(self, data: bytes) -> None:
        """
        Note output the client was sent.
        """
        if self._handle is None:
            return
        self._pending += self._decoder.decode(data)
        cut = max(self._pending.rfind("\n"), self._pending.rfind("\r")) + 1
        if cut == 0 and len(self._pending) <= MAX_PENDING:
            return
        if cut == 0:
            cut = len(self._pending)
        text, self._pending = self._pending[:cut], self._pending[cut:]
        self._event("o", self._mask(text))

    def resize(self, columns: int, rows: int) -> None:
        """
        Note a terminal resize.
        """
        self._event("r", f"{columns}x{rows}")

    def close(self) -> None:
        """
        Write what is held back and close the file.
        """
        if self._handle is None:
            return
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if rest:
            self._event("o", self._mask(rest))
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError as e:
                self._failed(e)

    def _event(self, code: str, text: str) -> None:
        elapsed = round(self._clock() - self._start, 6)
        self._line([elapsed, code, text])

    def _line(self, value: object) -> None:
        handle = self._handle
        if handle is None:
            return
        try:
            handle.write(json.dumps(value, ensure_ascii=False) + "\n")
        except OSError as e:
            self._failed(e)

    def _failed(self, error: OSError) -> None:
        # Only the cast stops; the session's JSON lines go on.
        self._log.error(
            "Cannot write the terminal recording {path}: {error}",
            path=self.path,
            error=error.strerror,
        )
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError:
                self._log.debug("Closing {path} failed too", path=self.path)


__all__ = ["MAX_PENDING", "TerminalCast"]
