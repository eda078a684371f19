"""
Terminal recordings: what a pty channel showed (and, where policy says
so, what was typed into it) as an asciicast v2 file, masked before it
is written.

One file per terminal, beside the session's JSON-lines recording
(C{SESSION.CHANNEL.cast}), playable with C{asciinema play}: a header
line (size, TERM, start time), then C{[seconds, "o", text]} for output,
C{[seconds, "i", text]} for typed input and C{[seconds, "r",
"COLSxROWS"]} for resizes.

Masking works on text, so each direction is decoded as UTF-8 (bad bytes
become U+FFFD) and held until a line ends before the session's
C{mask_text} sees it whole: a card number split over two packets, or
typed one key at a time, is still found.  A line longer than
L{MAX_PENDING} characters is written in pieces, cut only where no value
can straddle the cut (L{LineMasker}).  A private key block spans lines:
once its first line is seen, every line up to its end line is written
as C{[masked]}.

Typed input is recorded only when the cast is made with C{keyboard}
(policy's C{keyboard_input}), a line at a time (when Enter is typed,
with backspaces applied, so the masking detectors see what was typed).
The gateway cannot see the target terminal's echo setting, so it
guesses: input typed after output whose current line is a secret
prompt (it ends with a colon and names a password, passphrase, PIN,
token, secret or one-time code; L{is_secret_prompt}) is dropped up to
and including the next Enter.  Only the output since the previous input
counts, so the echo of a command that mentions "password:", which comes
back a key at a time, is no prompt.  Typed ahead before the prompt
shows, input cannot be told from a command and is recorded (masked).
Only channels with a terminal have a cast: the standard input of a
command without one (C{ssh host cmd < file}, scp, rsync) is data, not
typing, and is never recorded.

test-case-name: tests.unit.ssh.test_cast
"""

from __future__ import annotations

import codecs
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from twisted.logger import Logger

#: Characters of an unfinished line held back for masking.
MAX_PENDING = 4096

#: What stands for text that is not written.
REDACTED = "[masked]"

# A forced cut that is not at a safe character keeps this much behind
# it for the next piece (longer than any value the cut can split and
# the masking check below still miss).
_HOLD = 1024

# Characters no built-in detector's value contains (a private key block
# aside, handled by lines): a cut after one cannot split a value.
_LAST_SAFE = re.compile(r".*[^\w .%+@()\-]", re.DOTALL)
_FIRST_SAFE = re.compile(r"[^\w .%+@()\-]")

_KEY_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_KEY_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----")

# The last line of output that fits in this many characters is kept to
# tell a secret prompt.
_PROMPT_TAIL = 256

_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: window titles
    r"|\x1b[@-Z\\-_]"
)

_SECRET_WORDS = re.compile(
    r"pass ?(?:word|wd|wort|phrase|code)|mot de passe|contrase\u00f1a"
    r"|\bpin\b|\botp\b|one-time|token|secret|verification code",
    re.IGNORECASE,
)

# Keys that edit the line being typed.
_ERASE = frozenset("\x7f\x08")
_KILL_LINE = "\x15"


def is_secret_prompt(line: str) -> bool:
    """
    Whether the terminal's current output line asks for a secret: it
    ends with a colon (escape sequences and spaces aside) and names a
    password, passphrase, passcode, PIN, token, secret or one-time code
    (C{Password:}, C{[sudo] password for ada:}, C{Password for
    'https://host':}, C{Enter passphrase for key 'k':}).
    """
    text = _ESCAPES.sub("", line).rstrip()
    if not text.endswith((":", "\uff1a")):
        return False
    return _SECRET_WORDS.search(text) is not None


class LineMasker:
    """
    Text of one direction, held until a line ends and masked whole.

    A line longer than L{MAX_PENDING} is cut after the last character
    no value contains, so the piece written holds only whole values and
    the rest waits for more.  Where the end of the line is one long run
    of value characters, it is cut L{_HOLD} characters from the end if
    masking the two pieces apart gives what masking them together does
    (no value straddles the cut); failing that, the run is written as
    C{[masked]} up to the next safe character.  Memory stays within
    L{MAX_PENDING} plus one packet.

    Args:
        mask: Masks text (the session's C{mask_text}).
    """

    def __init__(self, mask: Callable[[str], str]) -> None:
        self._mask = mask
        self.pending = ""
        self._in_key = False
        self._redacting = False

    def add(self, text: str) -> str:
        """
        Take C{text}; what can be written now, masked (often C{""}).
        """
        if self._redacting:
            text = self._skip_run(text)
        self.pending += text
        cut = max(self.pending.rfind("\n"), self.pending.rfind("\r")) + 1
        written = ""
        if cut:
            head, self.pending = self.pending[:cut], self.pending[cut:]
            written = self._masked(head)
        if len(self.pending) > MAX_PENDING:
            written += self._forced()
        return written

    def flush(self) -> str:
        """
        Everything still held, masked.
        """
        rest, self.pending = self.pending, ""
        return self._masked(rest) if rest else ""

    def _skip_run(self, text: str) -> str:
        # The run written as [masked] goes on to the next safe character.
        found = _FIRST_SAFE.search(text)
        if found is None:
            return ""
        self._redacting = False
        return text[found.start() :]

    def _forced(self) -> str:
        text = self.pending
        if self._in_key:
            self.pending = ""
            return self._masked(text)
        last = _LAST_SAFE.match(text)
        start = last.end() if last is not None else 0
        if len(text) - start <= MAX_PENDING // 2:
            self.pending = text[start:]
            return self._masked(text[:start])

        whole = self._mask(text)
        for cut in (len(text) - _HOLD, len(text) - 2 * _HOLD):
            head, tail = text[:cut], text[cut:]
            masked = self._mask(head)
            if masked + self._mask(tail) == whole:
                self.pending = tail
                return self._key_state(head, masked)
        self.pending = ""
        self._redacting = True
        return self._masked(text[:start]) + REDACTED

    def _masked(self, text: str) -> str:
        if not text:
            return ""
        if self._in_key:
            end = _KEY_END.search(text)
            if end is None:
                return REDACTED + text[len(text.rstrip("\r\n")) :]
            self._in_key = False
            rest = text[end.end() :]
            return REDACTED + self._key_state(rest, self._mask(rest))
        return self._key_state(text, self._mask(text))

    def _key_state(self, raw: str, masked: str) -> str:
        # A key block begun and not ended in this text goes on below.
        begins = list(_KEY_BEGIN.finditer(raw))
        if begins and not _KEY_END.search(raw, begins[-1].end()):
            self._in_key = True
        return masked


class TerminalCast:
    """
    The asciicast of one terminal.

    Args:
        handle: The open file (created for this cast only).
        mask: Masks text before it is written.
        clock: Seconds, for event times (monotonic).
        path: The file's name, for the log.
        keyboard: Record typed input too.

    Attributes:
        path: The file's name.
        keyboard: Whether typed input is recorded.
    """

    _log = Logger()

    def __init__(
        self,
        handle: IO[str],
        mask: Callable[[str], str],
        clock: Callable[[], float] = time.monotonic,
        path: str = "",
        keyboard: bool = False,
    ) -> None:
        self._handle: IO[str] | None = handle
        self._clock = clock
        self._start = clock()
        self._out = _utf8()
        self._in = _utf8()
        self._output = LineMasker(mask)
        self._input = LineMasker(mask)
        self._line = ""
        self._secret = False
        self.path = path
        self.keyboard = keyboard

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
        keyboard: bool = False,
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
        cast = cls(handle, mask, clock, str(path), keyboard)
        header = {
            "version": 2,
            "width": columns or 80,
            "height": rows or 24,
            "timestamp": int(started),
            "env": {"TERM": term},
        }
        cast._line_out(header)
        return cast

    def output(self, data: bytes) -> None:
        """
        Note output the client was sent.
        """
        if self._handle is None:
            return
        text = self._out.decode(data)
        self._follow_line(text)
        self._event("o", self._output.add(text))

    def input(self, data: bytes) -> None:
        """
        Note what the client typed (passed on to the target); ignored
        unless the cast records the keyboard.
        """
        if self._handle is None or not self.keyboard:
            return
        text = self._in.decode(data)
        if not self._secret and is_secret_prompt(self._line):
            self._secret = True
            self._event("i", self._input.flush())
        # Only output after this input can be a new prompt: the echo of
        # typing "password:" comes a key at a time.
        self._line = ""
        if self._secret:
            text = self._after_secret(text)
        self._event("i", self._input.add(_edited(self._input, text)))

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
        self._event("o", self._output.add(self._out.decode(b"", final=True)))
        self._event("o", self._output.flush())
        if self.keyboard and not self._secret:
            self._event("i", self._input.add(self._in.decode(b"", final=True)))
            self._event("i", self._input.flush())
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError as e:
                self._failed(e)

    def _follow_line(self, text: str) -> None:
        # The output's current line since the last input, to tell a
        # secret prompt.
        end = max(text.rfind("\n"), text.rfind("\r"))
        line = text[end + 1 :] if end >= 0 else self._line + text
        self._line = line[-_PROMPT_TAIL:]

    def _after_secret(self, text: str) -> str:
        # Drop what answers the prompt, its Enter included.
        end = min((i for i in (text.find("\r"), text.find("\n")) if i >= 0), default=-1)
        if end < 0:
            return ""
        self._secret = False
        return text[end + 1 :]

    def _event(self, code: str, text: str) -> None:
        if not text:
            return
        elapsed = round(self._clock() - self._start, 6)
        self._line_out([elapsed, code, text])

    def _line_out(self, value: object) -> None:
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


def _utf8() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def _edited(lines: LineMasker, text: str) -> str:
    """
    Apply backspace and kill-line keys to the held input line; the text
    left to add.
    """
    if not (_ERASE.intersection(text) or _KILL_LINE in text):
        return text
    kept: list[str] = []
    for char in text:
        if char in _ERASE:
            if kept:
                kept.pop()
            else:
                lines.pending = lines.pending[:-1]
        elif char == _KILL_LINE:
            kept.clear()
            lines.pending = ""
        else:
            kept.append(char)
    return "".join(kept)


__all__ = ["MAX_PENDING", "REDACTED", "LineMasker", "TerminalCast", "is_secret_prompt"]
