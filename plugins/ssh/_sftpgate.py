"""
Holding SFTP requests for a verdict, and answering refused ones.

L{SftpGate} reads both directions of an SFTP subsystem as they pass.
From the client it takes each request whole (at most L{MAX_REQUEST}
bytes) and sorts it:

  - a request naming paths (open, opendir, remove, rename, mkdir,
    rmdir, setstat, stat, lstat, readlink, symlink and the OpenSSH
    extensions that name paths) becomes a L{FileRequest}, whose paths
    the relay resolves on the target (L{lookups}, C{SSH_FXP_REALPATH})
    before the chain judges them;
  - a request on a handle (read, write, fstat, fsetstat, readdir,
    close, and the fsync, fstatvfs and copy-data extensions) is judged
    against the path and operations its open was granted: what the
    open was granted passes, anything else becomes a L{FileRequest} on
    that path, and a handle the gate never saw granted is refused;
  - REALPATH, the handshake and the OpenSSH extensions that name no
    file pass; any other request is refused as unsupported.

Only writes on a handle granted writing are not held whole: their
file data passes as it comes.  From the target the gate follows packet
boundaries, keeping only what it must read: the handle a granted open
got, and the answers to its own REALPATH requests (ids from
L{RESERVED} up, which a client may not use), which never reach the
client.  The status answering a refused request goes in between two of
the target's packets.

Requests follow SFTP version 3 (draft-ietf-secsh-filexfer-02), which
OpenSSH speaks, with OpenSSH's order of the symlink request's paths
(the link's contents first, then where the link is made).

test-case-name: tests.unit.ssh.test_sftpgate
"""

from __future__ import annotations

import struct
from collections import deque

from attrs import define, frozen

INIT, VERSION = 1, 2
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = range(3, 11)
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT = range(11, 18)
RENAME, READLINK, SYMLINK = 18, 19, 20
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
EXTENDED, EXTENDED_REPLY = 200, 201

#: SFTP status codes the gate answers with.
NO_SUCH_FILE, PERMISSION_DENIED, FAILURE, BAD_MESSAGE = 2, 3, 4, 5
OP_UNSUPPORTED = 8

#: Request ids from here up are the gateway's own (its REALPATH
#: requests); a client request using one is refused.
RESERVED = 0xFFF00000

_OURS = 0x100000000 - RESERVED

#: A request longer than this is refused unread: requests other than
#: writes are short, and a write held whole is one that cannot succeed.
MAX_REQUEST = 64 * 1024

#: Handles open (or being opened) at once; more opens are refused.
MAX_HANDLES = 1024

# How a path is resolved before it is judged: as the target follows it
# (open, stat), by its parent for requests on the name itself (remove,
# rename, lstat), or as a symbolic link's contents, from the link's
# directory.
FOLLOW, PARENT, LINK = "follow", "parent", "link"

# Requests naming paths: the operation and how each path resolves.
_PATHS: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {
    OPENDIR: (("list",), (FOLLOW,)),
    REMOVE: (("remove",), (PARENT,)),
    MKDIR: (("mkdir",), (PARENT,)),
    RMDIR: (("rmdir",), (PARENT,)),
    SETSTAT: (("setstat",), (FOLLOW,)),
    STAT: (("stat",), (FOLLOW,)),
    LSTAT: (("stat",), (PARENT,)),
    READLINK: (("stat",), (PARENT,)),
    RENAME: (("rename",), (PARENT, PARENT)),
    SYMLINK: (("symlink",), (LINK, PARENT)),
}

# A hard link gives its new name all the access the old one has, and
# what is done through it cannot be traced back: judged as link, read
# and write on both paths.
_HARDLINK = ("link", "read", "write")

_EXTENSION_PATHS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "posix-rename@openssh.com": (("rename",), (PARENT, PARENT)),
    "hardlink@openssh.com": (_HARDLINK, (PARENT, PARENT)),
    "statvfs@openssh.com": (("stat",), (FOLLOW,)),
    "lsetstat@openssh.com": (("setstat",), (PARENT,)),
}

# Requests on a handle, with the operation each does on its file.
_ON_HANDLE = {
    READ: "read",
    WRITE: "write",
    FSTAT: "stat",
    FSETSTAT: "setstat",
    READDIR: "list",
}

_EXTENSION_HANDLES = {"fstatvfs@openssh.com": "stat", "fsync@openssh.com": "write"}

# Extensions that name no file and change nothing.
_EXTENSIONS_FREE = frozenset(
    {
        "limits@openssh.com",
        "expand-path@openssh.com",
        "home-directory",
        "users-groups-by-id@openssh.com",
    }
)

# Answers from the target that carry a request id.
_ANSWERS = frozenset({STATUS, HANDLE, DATA, NAME, ATTRS, EXTENDED_REPLY})

# Open flags that change the file.
_WRITING = 0x02 | 0x04 | 0x08 | 0x10

# SFTP handles are at most this long.
_MAX_HANDLE = 256

# A HANDLE answer is read whole up to this size.
_MAX_HANDLE_PACKET = 1024


@frozen
class FileRequest:
    """
    A client request held for a verdict.

    Attributes:
        request_id: The SFTP request id.
        operations: What it does, in policy's words.
        path: The path it names as sent, bytes that are not UTF-8 kept
            as surrogates (L{shown}); for a request on a handle: the path
            its open was judged on.
        target_path: The second path, if any.
        packet: The whole packet as the client sent it, to pass on if
            allowed.
        size: Its length on the wire.
        kind: The SFTP request type.
        resolve: How each path is resolved on the target before it is
            judged (L{lookups}); empty for paths already resolved.
    """

    request_id: int
    operations: tuple[str, ...]
    path: str
    target_path: str = ""
    packet: bytes = b""
    size: int = 0
    kind: int = 0
    resolve: tuple[str, ...] = ()

    @property
    def opens(self) -> bool:
        """
        Whether it opens a handle (open, opendir).
        """
        return self.kind in (OPEN, OPENDIR)


@frozen
class Refused:
    """
    A client request the gate refuses by itself: it never reaches the
    target nor the chain.

    Attributes:
        request_id: The SFTP request id.
        code: The SFTP status to answer.
        message: Why, for the client and the log.
        size: Its length on the wire.
    """

    request_id: int
    code: int
    message: str
    size: int


@frozen
class Resolved:
    """
    The target's answer to one of the gate's REALPATH requests.

    Attributes:
        request_id: The gate's request id.
        path: The resolved path, or C{""} when it could not be resolved.
        code: The target's status when it could not (C{0} otherwise).
        message: The target's message then.
        size: The answer's length on the wire (never passed on).
    """

    request_id: int
    path: str
    code: int = 0
    message: str = ""
    size: int = 0


@define
class _Grant:
    """
    What an open was granted: its path (as judged) and operations.
    """

    path: str
    operations: frozenset[str]

    def covers(self, operation: str) -> bool:
        # The attributes of a file come with reading or writing it.
        return operation in self.operations or operation == "stat"


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

    def skip(self, size: int) -> None:
        if self._at + size > len(self._data):
            raise ValueError("short packet")
        self._at += size

    def string(self) -> bytes:
        size = self.u32()
        chunk = self._data[self._at : self._at + size]
        if len(chunk) < size:
            raise ValueError("short string")
        self._at += size
        return chunk

    def text(self) -> str:
        # Bytes that are not UTF-8 survive, so the gateway's REALPATH
        # asks about exactly the path the target will act on.
        return self.string().decode("utf-8", "surrogateescape")


def _open_operations(flags: int) -> tuple[str, ...]:
    operations = ("read",) if flags & 0x01 or not flags & _WRITING else ()
    return operations + (("write",) if flags & _WRITING else ())


def status(request_id: int, code: int, message: str) -> bytes:
    """
    An SFTP status packet.
    """
    text = message.encode("utf-8")
    body = struct.pack(">BLLL", STATUS, request_id, code, len(text)) + text
    body += struct.pack(">L", 0)
    return struct.pack(">L", len(body)) + body


def shown(path: str) -> str:
    """
    A path as events, logs and recordings show it: bytes that are not
    UTF-8 become U+FFFD.
    """
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def realpath_request(request_id: int, path: str) -> bytes:
    """
    An SFTP REALPATH request.
    """
    text = path.encode("utf-8", "surrogateescape")
    body = struct.pack(">BLL", REALPATH, request_id, len(text)) + text
    return struct.pack(">L", len(body)) + body


def lookups(request: FileRequest) -> list[tuple[str, str]]:
    """
    For each path of C{request} that needs resolving: what to ask the
    target's REALPATH for, and the last component to add to its answer.

    A request acting on a name itself (remove, rename, lstat, a link's
    own path) resolves the name's directory and keeps the name; one
    ending in C{/}, C{.} or C{..} is resolved whole.  A link's contents
    are resolved from the link's directory.
    """
    paths = (request.path, request.target_path)
    found = []
    for path, mode in zip(paths, request.resolve, strict=False):
        if mode == LINK:
            found.append((_link_contents(path, request.target_path), ""))
        elif mode == PARENT:
            found.append(_parent(path))
        else:
            found.append((path, ""))
    return found


def _parent(path: str) -> tuple[str, str]:
    head, slash, last = path.rpartition("/")
    if last in ("", ".", ".."):
        return path, ""
    if not slash:
        return ".", last
    return head or "/", last


def _link_contents(contents: str, link: str) -> str:
    if contents.startswith("/"):
        return contents
    head, slash, _ = link.rpartition("/")
    if not slash:
        return contents
    return f"{head}/{contents}"


def joined(resolved: str, last: str) -> str:
    """
    A resolved directory with a last component put back.
    """
    if not last:
        return resolved
    return f"{resolved.rstrip('/')}/{last}"


class SftpGate:
    """
    Sorts the client's requests and follows the target's answers at
    packet boundaries, for one SFTP channel.
    """

    def __init__(self) -> None:
        self._header = b""
        self._left = 0
        self._kind = 0
        self._parts: list[bytes] | None = None
        self._kept = 0
        self._size = 0
        self._head_wanted = 0
        self._grants: dict[bytes, _Grant] = {}
        self._opening: dict[int, _Grant] = {}
        self._ours: set[int] = set()
        self._next_ours = 0
        self._target = _TargetStream(self)

    # -- from the client ------------------------------------------------------

    def from_client(self, data: bytes) -> list[bytes | FileRequest | Refused]:
        """
        What to pass on for C{data}: bytes as they are, requests to
        judge and requests refused (in order).
        """
        out: list[bytes | FileRequest | Refused] = []
        view = memoryview(data)
        while view:
            if self._parts is None and not self._left:
                view = self._client_header(view, out)
            elif self._parts is None:
                take = min(self._left, len(view))
                _emit(out, bytes(view[:take]))
                self._left -= take
                view = view[take:]
            else:
                view = self._client_body(view, out)
        return out

    def _client_header(
        self, view: memoryview, out: list[bytes | FileRequest | Refused]
    ) -> memoryview:
        need = 5 - len(self._header)
        self._header += bytes(view[:need])
        view = view[need:]
        if len(self._header) < 5:
            return view

        length, self._kind = struct.unpack(">LB", self._header)
        self._parts, self._kept = [self._header], 5
        self._header = b""
        if not length:
            # No type: whatever follows cannot be framed; never passed.
            self._kind = 0
        self._size = 4 + max(1, length)
        self._left = max(0, length - 1)
        # A write on a granted handle passes once its handle is read.
        self._head_wanted = 13 if self._kind == WRITE else 0
        if not self._left:
            self._client_done(out)
        return view

    def _client_body(
        self, view: memoryview, out: list[bytes | FileRequest | Refused]
    ) -> memoryview:
        parts = self._parts
        assert parts is not None
        take = min(self._left, len(view))
        if self._head_wanted:
            take = min(take, max(1, self._head_wanted - self._kept))
        room = 5 + MAX_REQUEST - self._kept
        if room > 0:
            parts.append(bytes(view[: min(room, take)]))
            self._kept += min(room, take)
        self._left -= take
        view = view[take:]

        if not self._left:
            self._client_done(out)
        elif self._head_wanted and self._kept >= self._head_wanted:
            self._write_head(out)
        return view

    def _write_head(self, out: list[bytes | FileRequest | Refused]) -> None:
        parts = self._parts
        assert parts is not None
        head = b"".join(parts)
        parts[:] = [head]
        (size,) = struct.unpack(">L", head[9:13])
        if size <= _MAX_HANDLE and len(head) < 13 + size:
            self._head_wanted = 13 + size
            return

        self._head_wanted = 0
        (request_id,) = struct.unpack(">L", head[5:9])
        grant = self._grants.get(head[13:]) if size <= _MAX_HANDLE else None
        if request_id >= RESERVED or grant is None or not grant.covers("write"):
            return
        # Granted: the head goes now and the data as it comes.
        self._parts = None
        _emit(out, head)

    def _client_done(self, out: list[bytes | FileRequest | Refused]) -> None:
        parts = self._parts
        assert parts is not None
        self._parts = None
        _emit(out, self._sort(b"".join(parts), self._size))

    def _sort(self, packet: bytes, size: int) -> bytes | FileRequest | Refused:
        if self._kind == INIT:
            return packet
        fields = _Reader(packet[5:])
        try:
            request_id = fields.u32()
        except ValueError:
            return Refused(0, BAD_MESSAGE, "malformed request", size)
        if request_id >= RESERVED:
            return Refused(request_id, BAD_MESSAGE, "request id reserved", size)
        if size > len(packet):
            return Refused(request_id, PERMISSION_DENIED, "request too long", size)
        try:
            return self._request(request_id, fields, packet, size)
        except ValueError:
            return Refused(request_id, BAD_MESSAGE, "malformed request", size)

    def _request(
        self, request_id: int, fields: _Reader, packet: bytes, size: int
    ) -> bytes | FileRequest | Refused:
        kind = self._kind
        if kind == OPEN:
            path = fields.text()
            operations = _open_operations(fields.u32())
            return FileRequest(
                request_id, operations, path, "", packet, size, OPEN, (FOLLOW,)
            )
        if kind in _PATHS:
            return self._naming(request_id, _PATHS[kind], fields, packet, size)
        if kind == CLOSE:
            self._grants.pop(fields.string(), None)
            return packet
        if kind in _ON_HANDLE:
            return self._on_handle(request_id, _ON_HANDLE[kind], fields, packet, size)
        if kind == REALPATH:
            return packet
        if kind == EXTENDED:
            return self._extension(request_id, fields, packet, size)
        return Refused(request_id, OP_UNSUPPORTED, "unsupported request", size)

    def _naming(
        self,
        request_id: int,
        spec: tuple[tuple[str, ...], tuple[str, ...]],
        fields: _Reader,
        packet: bytes,
        size: int,
    ) -> FileRequest:
        operations, modes = spec
        first = fields.text()
        second = fields.text() if len(modes) == 2 else ""
        return FileRequest(
            request_id, operations, first, second, packet, size, self._kind, modes
        )

    def _on_handle(
        self,
        request_id: int,
        operation: str,
        fields: _Reader,
        packet: bytes,
        size: int,
    ) -> bytes | FileRequest | Refused:
        grant = self._grants.get(fields.string())
        if grant is None:
            return Refused(request_id, PERMISSION_DENIED, "unknown handle", size)
        if grant.covers(operation):
            return packet
        return FileRequest(
            request_id, (operation,), grant.path, "", packet, size, self._kind
        )

    def _extension(
        self, request_id: int, fields: _Reader, packet: bytes, size: int
    ) -> bytes | FileRequest | Refused:
        name = fields.text()
        if name in _EXTENSION_PATHS:
            spec = _EXTENSION_PATHS[name]
            return self._naming(request_id, spec, fields, packet, size)
        if name in _EXTENSION_HANDLES:
            operation = _EXTENSION_HANDLES[name]
            return self._on_handle(request_id, operation, fields, packet, size)
        if name == "copy-data":
            return self._copy_data(request_id, fields, packet, size)
        if name in _EXTENSIONS_FREE:
            return packet
        return Refused(request_id, OP_UNSUPPORTED, "unsupported extension", size)

    def _copy_data(
        self, request_id: int, fields: _Reader, packet: bytes, size: int
    ) -> bytes | Refused:
        source = self._grants.get(fields.string())
        fields.skip(16)
        sink = self._grants.get(fields.string())
        if source is None or sink is None:
            return Refused(request_id, PERMISSION_DENIED, "unknown handle", size)
        if source.covers("read") and sink.covers("write"):
            return packet
        message = "copy-data needs a handle granted reading and one granted writing"
        return Refused(request_id, PERMISSION_DENIED, message, size)

    # -- grants and the gate's own requests -------------------------------------

    def granted(self, request: FileRequest, path: str) -> str:
        """
        An open on C{path} was allowed and goes to the target now; the
        handle it gets is granted its operations.

        Returns:
            C{""}, or why it must be refused after all (too many open
            handles, or a request id already opening another).
        """
        if request.request_id in self._opening:
            return "request id already in use"
        if len(self._grants) + len(self._opening) >= MAX_HANDLES:
            return "too many open handles"
        grant = _Grant(path, frozenset(request.operations))
        self._opening[request.request_id] = grant
        return ""

    def realpath(self, path: str) -> tuple[int, bytes] | None:
        """
        A REALPATH request of the gateway's own for C{path}: its id and
        the packet to send the target where the request it serves goes;
        C{None} when every id of the gateway's is in use.
        """
        if len(self._ours) >= _OURS:
            return None
        request_id = RESERVED + self._next_ours
        while request_id in self._ours:
            self._next_ours = (self._next_ours + 1) % _OURS
            request_id = RESERVED + self._next_ours
        self._next_ours = (self._next_ours + 1) % _OURS
        self._ours.add(request_id)
        return request_id, realpath_request(request_id, path)

    # -- from the target ------------------------------------------------------

    def from_target(self, data: bytes) -> list[bytes | Resolved]:
        """
        What to pass on for C{data} (answers to refused requests put in
        where one of the target's packets ends), and the answers to the
        gate's own REALPATH requests.
        """
        return self._target.feed(data)

    def refuse(
        self, request_id: int, message: str, code: int = PERMISSION_DENIED
    ) -> bytes:
        """
        Answer a refused request: the status packet to send now, or
        C{b""} when it waits for the target's packet in passage to end.
        """
        return self._target.answer(status(request_id, code, message))

    def _answer_kept(self, kind: int, request_id: int) -> str:
        """
        What to do with a target answer: C{ours} (read and swallow),
        C{handle} (read, then pass), or C{pass}.
        """
        if request_id in self._ours:
            self._ours.discard(request_id)
            return "ours"
        if request_id in self._opening:
            if kind == HANDLE:
                return "handle"
            self._opening.pop(request_id)
        return "pass"

    def _handle_answer(self, request_id: int, packet: bytes) -> None:
        grant = self._opening.pop(request_id, None)
        fields = _Reader(packet[9:])
        try:
            handle = fields.string()
        except ValueError:
            return
        if grant is not None and len(handle) <= _MAX_HANDLE:
            self._grants[handle] = grant


class _TargetStream:
    """
    The target's direction of an SFTP channel: packet boundaries, the
    few answers read whole, and refusals put in between packets.
    """

    def __init__(self, gate: SftpGate) -> None:
        self._gate = gate
        self._header = b""
        self._left = 0
        self._passing = False
        self._kept: list[bytes] | None = None
        self._kept_size = 0
        self._mode = "pass"
        self._request_id = 0
        self._size = 0
        self._answers: deque[bytes] = deque()

    def answer(self, packet: bytes) -> bytes:
        if self._passing:
            self._answers.append(packet)
            return b""
        return packet

    def feed(self, data: bytes) -> list[bytes | Resolved]:
        out: list[bytes | Resolved] = []
        view = memoryview(data)
        while view:
            if not self._passing and self._answers:
                out.extend(self._answers)
                self._answers.clear()
            if self._kept is None and not self._left:
                view = self._read_header(view, out)
            elif self._kept is None:
                take = min(self._left, len(view))
                _emit_target(out, bytes(view[:take]))
                self._left -= take
                view = view[take:]
                self._passing = bool(self._left)
            else:
                view = self._keep(view, out)
        if not self._passing and self._answers:
            out.extend(self._answers)
            self._answers.clear()
        return out

    def _read_header(self, view: memoryview, out: list[bytes | Resolved]) -> memoryview:
        take = min(self._wanted() - len(self._header), len(view))
        self._header += bytes(view[:take])
        view = view[take:]
        if len(self._header) == self._wanted():
            self._start(out)
        return view

    def _wanted(self) -> int:
        # The length and type, then the request id of an answer.
        if len(self._header) < 5:
            return 5
        length, kind = struct.unpack(">LB", self._header[:5])
        return 9 if kind in _ANSWERS and length >= 5 else 5

    def _start(self, out: list[bytes | Resolved]) -> None:
        header, self._header = self._header, b""
        length, kind = struct.unpack(">LB", header[:5])
        self._size = 4 + max(1, length)
        self._left = self._size - len(header)
        self._mode = "pass"
        if len(header) == 9:
            self._request_id = int(struct.unpack(">L", header[5:9])[0])
            self._mode = self._gate._answer_kept(kind, self._request_id)
        if self._mode == "pass":
            _emit_target(out, header)
            self._passing = bool(self._left)
            return
        self._kept, self._kept_size = [header], len(header)
        if not self._left:
            self._kept_done(out)

    def _keep(self, view: memoryview, out: list[bytes | Resolved]) -> memoryview:
        kept = self._kept
        assert kept is not None
        take = min(self._left, len(view))
        bound = MAX_REQUEST if self._mode == "ours" else _MAX_HANDLE_PACKET
        room = bound - self._kept_size
        if room > 0:
            kept.append(bytes(view[: min(room, take)]))
            self._kept_size += min(room, take)
        self._left -= take
        view = view[take:]
        if not self._left:
            self._kept_done(out)
        elif self._mode == "handle" and room <= take:
            # Too long for a handle: passed on, and never granted.
            self._gate._opening.pop(self._request_id, None)
            self._kept = None
            _emit_target(out, b"".join(kept))
            self._passing = True
        return view

    def _kept_done(self, out: list[bytes | Resolved]) -> None:
        kept = self._kept
        assert kept is not None
        self._kept = None
        packet = b"".join(kept)
        if self._mode == "handle":
            self._gate._handle_answer(self._request_id, packet)
            _emit_target(out, packet)
            return
        out.append(_resolved(self._request_id, packet, self._size))


def _resolved(request_id: int, packet: bytes, size: int) -> Resolved:
    if size > len(packet):
        return Resolved(request_id, "", FAILURE, "resolved path too long", size)
    kind = packet[4]
    fields = _Reader(packet[9:])
    try:
        if kind == NAME and fields.u32() >= 1:
            return Resolved(request_id, fields.text(), size=size)
        if kind == STATUS:
            code = fields.u32()
            message = shown(fields.text())
            return Resolved(request_id, "", code or FAILURE, message, size)
    except ValueError:
        pass
    return Resolved(request_id, "", FAILURE, "the path could not be resolved", size)


def _emit(
    out: list[bytes | FileRequest | Refused], chunk: bytes | FileRequest | Refused
) -> None:
    if not isinstance(chunk, bytes):
        out.append(chunk)
        return
    if not chunk:
        return
    if out and isinstance(out[-1], bytes):
        out[-1] += chunk
    else:
        out.append(chunk)


def _emit_target(out: list[bytes | Resolved], chunk: bytes) -> None:
    if not chunk:
        return
    if out and isinstance(out[-1], bytes):
        out[-1] += chunk
    else:
        out.append(chunk)


__all__ = [
    "MAX_HANDLES",
    "MAX_REQUEST",
    "PERMISSION_DENIED",
    "RESERVED",
    "FileRequest",
    "Refused",
    "Resolved",
    "SftpGate",
    "joined",
    "lookups",
    "realpath_request",
    "shown",
    "status",
]
