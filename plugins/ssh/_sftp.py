"""
Watching an SFTP subsystem for the record, without holding its data.

The relay passes SFTP bytes through (C{_sftpgate} holds the requests
the chain judges); L{SftpWatcher} reads the same bytes as they pass and
records what was done: each file opened (path, mode, bytes read and
written, outcome) once it is closed, and
each remove, rename, mkdir, rmdir, setstat and symlink with the target's
answer.  Packet framing is followed in a streaming way: only the first
bytes of a packet are kept (the fields to record), file data is counted
and skipped, so memory stays small whatever the file size.

Requests follow SFTP version 3 (draft-ietf-secsh-filexfer-02), which
OpenSSH speaks.

test-case-name: tests.unit.ssh.test_sftp
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Protocol

from attrs import define

from hoopgate.plugin import Event
from hoopgate_plugins.ssh._events import SftpOperation

OPEN, CLOSE, READ, WRITE = 3, 4, 5, 6
SETSTAT, REMOVE, MKDIR, RMDIR, RENAME, SYMLINK = 9, 13, 14, 15, 18, 20
EXTENDED = 200
STATUS, HANDLE, DATA = 101, 102, 103

_STATUS_NAMES = {
    0: "ok",
    1: "eof",
    2: "no_such_file",
    3: "permission_denied",
    4: "failure",
    5: "bad_message",
    6: "no_connection",
    7: "connection_lost",
    8: "op_unsupported",
}

_PATH_OPERATIONS = {
    SETSTAT: "setstat",
    REMOVE: "remove",
    MKDIR: "mkdir",
    RMDIR: "rmdir",
}

# Bytes kept of a packet whose body is file data (WRITE, DATA): enough
# for the id, the handle and the lengths.
_DATA_HEAD = 512

# Bytes kept of any other packet (paths); a longer one is recorded as
# far as it was kept.
_HEAD = 16 * 1024

# Outstanding requests and open handles followed; beyond these the
# oldest are forgotten, so a hostile client cannot grow the gateway.
_MAX_PENDING = 4096
_MAX_HANDLES = 1024


class _Recorder(Protocol):
    id: str

    def observe(self, event: Event) -> None:
        """
        Record C{event}.
        """


class _Fields:
    """
    Reads SFTP fields from a packet head; short reads give empty values.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def u32(self) -> int:
        chunk = self._data[self._at : self._at + 4]
        self._at += 4
        return struct.unpack(">L", chunk)[0] if len(chunk) == 4 else 0

    def skip(self, size: int) -> None:
        self._at += size

    def string(self) -> bytes:
        size = self.u32()
        chunk = self._data[self._at : self._at + size]
        self._at += size
        return chunk

    def text(self) -> str:
        return self.string().decode("utf-8", "replace")


class PacketStream:
    """
    Splits one direction of SFTP bytes into packets, keeping only heads.

    Args:
        on_packet: Called with each packet's type, its kept head (the
            bytes after the type) and the full body length.
    """

    def __init__(self, on_packet: Callable[[int, bytes, int], None]) -> None:
        self._on_packet = on_packet
        self._header = b""
        self._kind = 0
        self._left = 0
        self._keep = 0
        self._head: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if not self._left and len(self._header) < 5:
                view = self._read_header(view)
                continue
            take = min(self._left, len(view))
            if self._keep:
                kept = min(self._keep, take)
                self._head.append(bytes(view[:kept]))
                self._keep -= kept
            self._left -= take
            view = view[take:]
            if not self._left:
                self._done()

    def _read_header(self, view: memoryview) -> memoryview:
        need = 5 - len(self._header)
        self._header += bytes(view[:need])
        view = view[need:]
        if len(self._header) == 5:
            length, self._kind = struct.unpack(">LB", self._header)
            self._size = max(0, length - 1)
            self._left = self._size
            limit = _DATA_HEAD if self._kind in (WRITE, DATA) else _HEAD
            self._keep = min(self._size, limit)
            self._head = []
            if not self._left:
                self._done()
        return view

    def _done(self) -> None:
        head = b"".join(self._head)
        kind, size = self._kind, self._size
        self._header, self._head = b"", []
        self._on_packet(kind, head, size)


@define
class _File:
    path: str
    mode: str
    read: int = 0
    written: int = 0


def _mode(flags: int) -> str:
    letters = ("r" if flags & 1 else "") + ("w" if flags & 2 else "")
    for bit, letter in ((4, "a"), (8, "c"), (16, "t"), (32, "x")):
        if flags & bit:
            letters += letter
    return letters


class SftpWatcher:
    """
    Records the SFTP operations of one subsystem channel.

    Args:
        session: Where to record (C{observe}).
        command_id: The subsystem's id, carried by each record.
    """

    def __init__(self, session: _Recorder, command_id: str) -> None:
        self._session = session
        self._command_id = command_id
        self._pending: dict[int, tuple[int, str, str, bytes]] = {}
        self._files: dict[bytes, _File] = {}
        self._opening: dict[int, _File] = {}
        self._client = PacketStream(self._client_packet)
        self._server = PacketStream(self._server_packet)

    def from_client(self, data: bytes) -> None:
        """
        Bytes the client sent toward the target.
        """
        self._client.feed(data)

    def from_server(self, data: bytes) -> None:
        """
        Bytes the target sent toward the client.
        """
        self._server.feed(data)

    def not_passed(self, packet: bytes, code: int) -> None:
        """
        A whole client request the target never saw, answered by the
        gateway with status C{code} on the target's behalf (its path did
        not resolve there): recorded as if the target had answered.
        """
        if len(packet) < 9:
            return
        (request_id,) = struct.unpack(">L", packet[5:9])
        self._client_packet(packet[4], packet[5 : 5 + _HEAD], len(packet) - 5)
        answer = struct.pack(">LL", request_id, code)
        self._server_packet(STATUS, answer, len(answer))

    def finish(self) -> None:
        """
        The channel ended: files never closed are recorded as such.
        """
        for handle in list(self._files):
            self._record_file(self._files.pop(handle), "unclosed")

    def _remember(self, request_id: int, entry: tuple[int, str, str, bytes]) -> None:
        if len(self._pending) >= _MAX_PENDING:
            self._pending.pop(next(iter(self._pending)))
        self._pending[request_id] = entry

    def _client_packet(self, kind: int, head: bytes, size: int) -> None:
        fields = _Fields(head)
        request_id = fields.u32()
        if kind == OPEN:
            path = fields.text()
            file = _File(path, _mode(fields.u32()))
            self._opening[request_id] = file
            self._remember(request_id, (kind, path, "", b""))
        elif kind in (CLOSE, READ):
            self._remember(request_id, (kind, "", "", fields.string()))
        elif kind == WRITE:
            handle = fields.string()
            fields.skip(8)
            written = self._files.get(handle)
            if written is not None:
                written.written += fields.u32()
        elif kind in _PATH_OPERATIONS:
            self._remember(request_id, (kind, fields.text(), "", b""))
        elif kind in (RENAME, SYMLINK):
            first = fields.text()
            self._remember(request_id, (kind, first, fields.text(), b""))
        elif kind == EXTENDED and fields.text() == "posix-rename@openssh.com":
            first = fields.text()
            self._remember(request_id, (RENAME, first, fields.text(), b""))

    def _server_packet(self, kind: int, head: bytes, size: int) -> None:
        fields = _Fields(head)
        request_id = fields.u32()
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return
        operation, _, _, handle = entry
        if kind == HANDLE and operation == OPEN:
            self._opened(request_id, fields.string())
        elif kind == DATA and operation == READ:
            file = self._files.get(handle)
            if file is not None:
                file.read += fields.u32()
        elif kind == STATUS:
            self._status(request_id, entry, fields.u32())

    def _opened(self, request_id: int, handle: bytes) -> None:
        file = self._opening.pop(request_id, None)
        if file is None:
            return
        if len(self._files) >= _MAX_HANDLES:
            old = next(iter(self._files))
            self._record_file(self._files.pop(old), "untracked")
        self._files[handle] = file

    def _status(
        self, request_id: int, entry: tuple[int, str, str, bytes], code: int
    ) -> None:
        operation, path, second, handle = entry
        status = _STATUS_NAMES.get(code, f"status_{code}")
        if operation == OPEN:
            file = self._opening.pop(request_id, None)
            if file is not None:
                self._record_file(file, status)
        elif operation == CLOSE:
            file = self._files.pop(handle, None)
            if file is not None:
                self._record_file(file, status)
        elif operation == READ:
            return
        else:
            name = _PATH_OPERATIONS.get(operation) or (
                "rename" if operation == RENAME else "symlink"
            )
            self._record(name, path, second, status)

    def _record_file(self, file: _File, status: str) -> None:
        self._session.observe(
            SftpOperation(
                session_id=self._session.id,
                protocol="ssh",
                command_id=self._command_id,
                operation="open",
                path=file.path,
                status=status,
                bytes_read=file.read,
                bytes_written=file.written,
                mode=file.mode,
            )
        )

    def _record(self, operation: str, path: str, second: str, status: str) -> None:
        self._session.observe(
            SftpOperation(
                session_id=self._session.id,
                protocol="ssh",
                command_id=self._command_id,
                operation=operation,
                path=path,
                target_path=second,
                status=status,
            )
        )


__all__ = ["PacketStream", "SftpWatcher"]
