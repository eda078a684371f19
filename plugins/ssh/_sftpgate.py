"""
Holding SFTP requests for a verdict, and answering refused ones.

L{SftpGate} reads both directions of an SFTP subsystem as they pass.
From the client it splits out each request that names a path (open,
opendir, remove, rename, mkdir, rmdir, setstat, stat, lstat, readlink,
symlink and the OpenSSH extensions that name paths) whole, so the relay
can hold it until the chain decides; everything else (reads, writes and
closes on granted handles, file data) passes as it comes, never held
whole.  From the target it follows packet boundaries without keeping
packets, so the status answering a refused request goes in between two
of the target's packets.

Requests follow SFTP version 3 (draft-ietf-secsh-filexfer-02), which
OpenSSH speaks.

test-case-name: tests.unit.ssh.test_sftpgate
"""

from __future__ import annotations

import struct
from collections import deque

from attrs import frozen

OPEN, LSTAT, SETSTAT, OPENDIR = 3, 7, 9, 11
REMOVE, MKDIR, RMDIR, STAT, RENAME, READLINK, SYMLINK = 13, 14, 15, 17, 18, 19, 20
EXTENDED, STATUS = 200, 101

#: The SFTP status a refused request gets.
PERMISSION_DENIED = 3

# Requests naming one path, with the operation policy calls them.
_ONE_PATH = {
    OPENDIR: "list",
    REMOVE: "remove",
    MKDIR: "mkdir",
    RMDIR: "rmdir",
    SETSTAT: "setstat",
    STAT: "stat",
    LSTAT: "stat",
    READLINK: "stat",
}

_TWO_PATHS = {RENAME: "rename", SYMLINK: "symlink"}

# OpenSSH extensions naming paths, with how many and the operation.
_EXTENSIONS = {
    "posix-rename@openssh.com": (2, "rename"),
    "hardlink@openssh.com": (2, "link"),
    "statvfs@openssh.com": (1, "stat"),
    "lsetstat@openssh.com": (1, "setstat"),
}

_JUDGED = frozenset({OPEN, EXTENDED, *_ONE_PATH, *_TWO_PATHS})

# A judged request longer than this is refused unread: paths are short.
MAX_REQUEST = 64 * 1024

# Open flags that change the file.
_WRITING = 0x02 | 0x04 | 0x08 | 0x10


@frozen
class FileRequest:
    """
    A client request held for a verdict.

    Attributes:
        request_id: The SFTP request id.
        operations: What it does, in policy's words.
        path: The path it names (C{""} when it could not be read).
        target_path: The second path, if any.
        packet: The whole packet as the client sent it, to pass on if
            allowed; empty for one refused unread (too long).
        size: Its length on the wire.
    """

    request_id: int
    operations: tuple[str, ...]
    path: str
    target_path: str = ""
    packet: bytes = b""
    size: int = 0


class _Reader:
    """
    Reads SFTP fields; a short read raises L{ValueError}.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def u32(self) -> int:
        chunk = self._data[self._at : self._at + 4]
        if len(chunk) < 4:
            raise ValueError("short packet")
        self._at += 4
        return int(struct.unpack(">L", chunk)[0])

    def text(self) -> str:
        size = self.u32()
        chunk = self._data[self._at : self._at + size]
        if len(chunk) < size:
            raise ValueError("short string")
        self._at += size
        return chunk.decode("utf-8", "replace")


def _open_operations(flags: int) -> tuple[str, ...]:
    operations = ("read",) if flags & 0x01 or not flags & _WRITING else ()
    return operations + (("write",) if flags & _WRITING else ())


def _read_request(
    kind: int, body: bytes
) -> tuple[int, tuple[str, ...], str, str] | None:
    """
    The id, operations and paths of a judged request; C{None} for an
    extension that names no path (it passes).
    """
    fields = _Reader(body)
    request_id = fields.u32()
    try:
        if kind == OPEN:
            path = fields.text()
            return request_id, _open_operations(fields.u32()), path, ""
        if kind in _ONE_PATH:
            return request_id, (_ONE_PATH[kind],), fields.text(), ""
        if kind in _TWO_PATHS:
            first = fields.text()
            return request_id, (_TWO_PATHS[kind],), first, fields.text()
        extension = _EXTENSIONS.get(fields.text())
        if extension is None:
            return None
        count, operation = extension
        first = fields.text()
        second = fields.text() if count == 2 else ""
        return request_id, (operation,), first, second
    except ValueError:
        # Unreadable: judged with no path, which file rules refuse.
        return request_id, ("read",) if kind == OPEN else ("stat",), "", ""


def status(request_id: int, code: int, message: str) -> bytes:
    """
    An SFTP status packet.
    """
    text = message.encode("utf-8")
    body = struct.pack(">BLLL", STATUS, request_id, code, len(text)) + text
    body += struct.pack(">L", 0)
    return struct.pack(">L", len(body)) + body


# FIXME(#6): requests on an open handle (fsetstat) are not judged, and
# paths are judged as sent, not as the target resolves symbolic links.
class SftpGate:
    """
    Splits the client's requests for judging and the target's answers at
    packet boundaries, for one SFTP channel.
    """

    def __init__(self) -> None:
        self._header = b""
        self._left = 0
        self._kind = 0
        self._whole: list[bytes] | None = None
        self._kept = 0
        self._size = 0
        self._target_header = 0
        self._target_bytes = b""
        self._target_left = 0
        self._answers: deque[bytes] = deque()

    # -- from the client ------------------------------------------------------

    def from_client(self, data: bytes) -> list[bytes | FileRequest]:
        """
        What to pass on for C{data}: bytes as they are, and requests to
        judge (in order).
        """
        out: list[bytes | FileRequest] = []
        view = memoryview(data)
        while view:
            if not self._left:
                view = self._client_header(view, out)
                continue
            take = min(self._left, len(view))
            chunk = bytes(view[:take])
            view = view[take:]
            self._left -= take
            self._client_body(chunk, out)
        return out

    def _client_header(
        self, view: memoryview, out: list[bytes | FileRequest]
    ) -> memoryview:
        need = 5 - len(self._header)
        self._header += bytes(view[:need])
        view = view[need:]
        if len(self._header) < 5:
            return view

        length, self._kind = struct.unpack(">LB", self._header)
        header, self._header = self._header, b""
        self._left = max(0, length - 1)
        if self._kind not in _JUDGED:
            _emit(out, header)
        else:
            self._whole, self._kept = [header], 5
            self._size = 5 + self._left
        if not self._left:
            self._client_body(b"", out)
        return view

    def _client_body(self, chunk: bytes, out: list[bytes | FileRequest]) -> None:
        whole = self._whole
        if whole is None:
            _emit(out, chunk)
            return
        room = 5 + MAX_REQUEST - self._kept
        if room > 0 and chunk:
            whole.append(chunk[:room])
            self._kept += min(room, len(chunk))
        if self._left:
            return

        self._whole = None
        _emit(out, self._request(b"".join(whole), self._size))

    def _request(self, packet: bytes, size: int) -> bytes | FileRequest:
        body = packet[5:]
        if size > len(packet):
            request_id = _Reader(body).u32() if len(body) >= 4 else 0
            return FileRequest(request_id, ("read",), "", size=size)
        try:
            read = _read_request(self._kind, body)
        except ValueError:
            read = (0, ("stat",), "", "")
        if read is None:
            return packet
        request_id, operations, path, second = read
        return FileRequest(request_id, operations, path, second, packet, size)

    # -- from the target ------------------------------------------------------

    def from_target(self, data: bytes) -> list[bytes]:
        """
        What to pass on for C{data}, with the answers to refused
        requests put in where one of the target's packets ends.
        """
        out: list[bytes] = []
        at = 0
        while at < len(data):
            if not self._target_left and self._target_header == 0:
                out.extend(self._answers)
                self._answers.clear()
            at = self._target_step(data, at, out)
        if not self._target_left and self._target_header == 0:
            out.extend(self._answers)
            self._answers.clear()
        return out

    def _target_step(self, data: bytes, at: int, out: list[bytes]) -> int:
        if not self._target_left:
            # Count header bytes; the length is in the first four.
            take = min(5 - self._target_header, len(data) - at)
            self._target_bytes += data[at : at + take]
            self._target_header += take
            out.append(data[at : at + take])
            if self._target_header == 5:
                length = int(struct.unpack(">L", self._target_bytes[:4])[0])
                self._target_bytes = b""
                self._target_header = 0
                self._target_left = max(0, length - 1)
            return at + take
        take = min(self._target_left, len(data) - at)
        out.append(data[at : at + take])
        self._target_left -= take
        return at + take

    def refuse(self, request_id: int, message: str) -> bytes:
        """
        Answer a refused request: the status packet to send now, or
        C{b""} when it waits for the target's packet in passage to end.
        """
        answer = status(request_id, PERMISSION_DENIED, message)
        if self._target_left or self._target_header:
            self._answers.append(answer)
            return b""
        return answer


def _emit(out: list[bytes | FileRequest], chunk: bytes | FileRequest) -> None:
    if isinstance(chunk, FileRequest):
        out.append(chunk)
        return
    if not chunk:
        return
    if out and isinstance(out[-1], bytes):
        out[-1] += chunk
    else:
        out.append(chunk)


__all__ = ["MAX_REQUEST", "PERMISSION_DENIED", "FileRequest", "SftpGate", "status"]
