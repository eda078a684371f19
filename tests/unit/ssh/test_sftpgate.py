"""
Tests for L{hoopgate_plugins.ssh._sftpgate}: sorting the client's SFTP
requests, following the target's answers, resolving paths.
"""

from __future__ import annotations

import struct

import pytest
from twisted.trial.unittest import SynchronousTestCase

from hoopgate_plugins.ssh import _sftpgate as g
from hoopgate_plugins.ssh._sftpgate import (
    MAX_HANDLES,
    MAX_REQUEST,
    PERMISSION_DENIED,
    RESERVED,
    FileRequest,
    Refused,
    Resolved,
    SftpGate,
    joined,
    lookups,
    status,
)


def string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack(">L", len(data)) + data


def packet(kind: int, body: bytes) -> bytes:
    return struct.pack(">LB", len(body) + 1, kind) + body


def request(kind: int, request_id: int, *fields: bytes) -> bytes:
    return packet(kind, struct.pack(">L", request_id) + b"".join(fields))


def open_request(request_id: int, path: str, flags: int) -> bytes:
    return request(g.OPEN, request_id, string(path), struct.pack(">LL", flags, 0))


def write_request(request_id: int, handle: bytes, data: bytes) -> bytes:
    offset = struct.pack(">Q", 0)
    return request(g.WRITE, request_id, string(handle), offset, string(data))


def read_request(request_id: int, handle: bytes) -> bytes:
    return request(g.READ, request_id, string(handle), struct.pack(">QL", 0, 4096))


def handle_answer(request_id: int, handle: bytes) -> bytes:
    return request(g.HANDLE, request_id, string(handle))


def name_answer(request_id: int, path: str) -> bytes:
    entry = string(path) + string(path) + struct.pack(">L", 0)
    return request(g.NAME, request_id, struct.pack(">L", 1), entry)


def extended(request_id: int, name: str, *fields: bytes) -> bytes:
    return request(g.EXTENDED, request_id, string(name), *fields)


def bytewise(gate: SftpGate, stream: bytes) -> list[bytes | FileRequest | Refused]:
    """
    Feed C{stream} a byte at a time; bytes passed are joined.
    """
    out: list[bytes | FileRequest | Refused] = []
    for i in range(len(stream)):
        for piece in gate.from_client(stream[i : i + 1]):
            if isinstance(piece, bytes) and out and isinstance(out[-1], bytes):
                out[-1] += piece
            else:
                out.append(piece)
    return out


def granted(gate: SftpGate, flags: int, handle: bytes, path: str = "/srv/f") -> None:
    """
    Open C{path} with C{flags} through C{gate} as the relay would, and
    let the target answer with C{handle}.
    """
    [opened] = gate.from_client(open_request(1, "/srv/link/f", flags))
    assert isinstance(opened, FileRequest)
    assert gate.granted(opened, path) == ""
    assert gate.from_target(handle_answer(1, handle)) == [handle_answer(1, handle)]


class ClientRequestTests(SynchronousTestCase):
    """
    L{SftpGate.from_client} holds each request whole and sorts it.
    """

    def test_open_split_out(self) -> None:
        """
        An open arrives whole as a request to resolve and judge, however
        it was split.
        """
        gate = SftpGate()
        opened = open_request(7, "/etc/passwd", 0x02 | 0x08)

        out = bytewise(gate, opened)

        assert out == [
            FileRequest(
                7,
                ("write",),
                "/etc/passwd",
                "",
                opened,
                len(opened),
                g.OPEN,
                ("follow",),
            )
        ]

    def test_operations(self) -> None:
        """
        Renames, symlinks and the OpenSSH extensions carry both paths
        and how each resolves; a hard link is judged as link, read and
        write; a read-write open does both; limits passes.
        """
        gate = SftpGate()
        rename = request(g.RENAME, 1, string("/a"), string("/b"))
        link = extended(2, "hardlink@openssh.com", string("/c"), string("/d"))
        symlink = request(g.SYMLINK, 3, string("../x"), string("/e/l"))
        limits = extended(5, "limits@openssh.com")

        out = gate.from_client(
            rename + link + symlink + open_request(4, "/e", 0x03) + limits
        )

        assert [
            (p.operations, p.path, p.target_path, p.resolve)
            for p in out
            if isinstance(p, FileRequest)
        ] == [
            (("rename",), "/a", "/b", ("parent", "parent")),
            (("link", "read", "write"), "/c", "/d", ("parent", "parent")),
            (("symlink",), "../x", "/e/l", ("link", "parent")),
            (("read", "write"), "/e", "", ("follow",)),
        ]
        assert out[-1] == limits

    def test_long_request_refused_unread(self) -> None:
        """
        A request longer than the bound is not kept: it is refused.
        """
        gate = SftpGate()
        long = open_request(9, "/" + "a" * MAX_REQUEST, 0x01)

        assert gate.from_client(long) == [
            Refused(9, PERMISSION_DENIED, "request too long", len(long))
        ]

    def test_reserved_id_refused(self) -> None:
        """
        A client may not use the gateway's own request ids.
        """
        gate = SftpGate()
        stat = request(g.STAT, RESERVED + 3, string("/a"))

        assert gate.from_client(stat) == [
            Refused(RESERVED + 3, g.BAD_MESSAGE, "request id reserved", len(stat))
        ]

    def test_unsupported_refused(self) -> None:
        """
        An extension or request type the gate does not know is refused
        as unsupported, never passed uninspected.
        """
        gate = SftpGate()
        unknown = extended(4, "copy-file@example.com", string("/a"), string("/b"))
        odd = request(77, 5, string("/a"))

        assert gate.from_client(unknown + odd) == [
            Refused(4, g.OP_UNSUPPORTED, "unsupported extension", len(unknown)),
            Refused(5, g.OP_UNSUPPORTED, "unsupported request", len(odd)),
        ]

    def test_malformed_refused(self) -> None:
        gate = SftpGate()
        short = request(g.STAT, 6, struct.pack(">L", 40) + b"/a")

        assert gate.from_client(short) == [
            Refused(6, g.BAD_MESSAGE, "malformed request", len(short))
        ]


class HandleTests(SynchronousTestCase):
    """
    Requests on a handle are judged against what its open was granted.
    """

    def test_granted_operations_pass(self) -> None:
        """
        On a handle granted reading: reads and fstat pass.
        """
        gate = SftpGate()
        granted(gate, 0x01, b"h1")
        reads = read_request(2, b"h1") + request(g.FSTAT, 3, string(b"h1"))

        assert bytewise(gate, reads) == [reads]

    def test_other_operations_judged(self) -> None:
        """
        On a handle granted reading: fsetstat, a write and readdir are
        requests to judge on the open's path; close passes and forgets
        the handle, so a read after it is refused.
        """
        gate = SftpGate()
        granted(gate, 0x01, b"h1")
        fsetstat = request(g.FSETSTAT, 2, string(b"h1"), struct.pack(">LL", 4, 0o777))
        wrote = write_request(3, b"h1", b"x" * 100)
        listed = request(g.READDIR, 4, string(b"h1"))
        closed = request(g.CLOSE, 5, string(b"h1"))
        after = read_request(6, b"h1")

        out = bytewise(gate, fsetstat + wrote + listed + closed + after)

        assert out == [
            FileRequest(2, ("setstat",), "/srv/f", "", fsetstat, len(fsetstat), 10),
            FileRequest(3, ("write",), "/srv/f", "", wrote, len(wrote), g.WRITE),
            FileRequest(4, ("list",), "/srv/f", "", listed, len(listed), g.READDIR),
            closed,
            Refused(6, PERMISSION_DENIED, "unknown handle", len(after)),
        ]

    def test_granted_write_streams(self) -> None:
        """
        A write on a handle granted writing passes as it comes: its
        head once the handle is read, then the data.
        """
        gate = SftpGate()
        granted(gate, 0x02 | 0x08, b"h2")
        wrote = write_request(2, b"h2", b"y" * 1000)

        first = gate.from_client(wrote[:20])
        rest = gate.from_client(wrote[20:])

        assert first == [wrote[:20]]
        assert rest == [wrote[20:]]

    def test_unknown_handle_write_refused(self) -> None:
        gate = SftpGate()
        wrote = write_request(8, b"nope", b"z" * 300)

        assert bytewise(gate, wrote) == [
            Refused(8, PERMISSION_DENIED, "unknown handle", len(wrote))
        ]

    def test_copy_data(self) -> None:
        """
        copy-data passes from a handle granted reading to one granted
        writing, and is refused the other way round.
        """
        gate = SftpGate()
        granted(gate, 0x01, b"r")
        granted(gate, 0x02, b"w")
        offsets = struct.pack(">QQ", 0, 0)
        ok = extended(3, "copy-data", string(b"r"), offsets, string(b"w"), offsets[:8])
        back = extended(
            4, "copy-data", string(b"w"), offsets, string(b"r"), offsets[:8]
        )

        out = gate.from_client(ok + back)

        assert out[0] == ok
        assert isinstance(out[1], Refused)
        assert out[1].request_id == 4

    def test_handle_of_unknown_open_not_granted(self) -> None:
        """
        A handle the target gives for a request the gate never let
        through as an open grants nothing.
        """
        gate = SftpGate()

        assert gate.from_target(handle_answer(9, b"h9")) == [handle_answer(9, b"h9")]
        assert isinstance(gate.from_client(read_request(10, b"h9"))[0], Refused)

    def test_open_bounds(self) -> None:
        """
        An open reusing the id of one in flight, or beyond MAX_HANDLES,
        is refused at its decision.
        """
        gate = SftpGate()
        [first] = gate.from_client(open_request(1, "/a", 1))
        assert isinstance(first, FileRequest)

        assert gate.granted(first, "/a") == ""
        assert gate.granted(first, "/a") == "request id already in use"
        for i in range(2, MAX_HANDLES + 1):
            assert (
                gate.granted(FileRequest(i, ("read",), "/a", kind=g.OPEN), "/a") == ""
            )
        late = FileRequest(MAX_HANDLES + 1, ("read",), "/a", kind=g.OPEN)
        assert gate.granted(late, "/a") == "too many open handles"


class TargetTests(SynchronousTestCase):
    """
    L{SftpGate.from_target} passes the target's packets, keeps the
    answers to the gate's own REALPATH requests, and puts refusals in
    between packets.
    """

    def test_own_answers_kept(self) -> None:
        """
        The answers to the gate's REALPATH requests never pass; others
        do, whole, however split.
        """
        gate = SftpGate()
        found = gate.realpath("/srv/link")
        missing = gate.realpath("/nope/x")
        assert found is not None and missing is not None
        (first, sent), (second, _) = found, missing
        other = name_answer(4, "/home")
        answers = name_answer(first, "/etc") + other
        gone = status(second, g.NO_SUCH_FILE, "No such file")
        answers += gone

        out = [
            p for i in range(len(answers)) for p in gate.from_target(answers[i : i + 1])
        ]

        assert first >= RESERVED
        assert sent == request(g.REALPATH, first, string("/srv/link"))
        assert b"".join(p for p in out if isinstance(p, bytes)) == other
        assert [p for p in out if isinstance(p, Resolved)] == [
            Resolved(first, "/etc", size=len(name_answer(first, "/etc"))),
            Resolved(second, "", g.NO_SUCH_FILE, "No such file", len(gone)),
        ]

    def test_refusal_between_packets(self) -> None:
        """
        A refusal while a target packet is in passage waits for its end;
        at a boundary it goes at once.
        """
        gate = SftpGate()
        data = packet(103, struct.pack(">L", 1) + string(b"z" * 50))
        answer = status(5, PERMISSION_DENIED, "no")

        first = gate.from_target(data[:12])
        waiting = gate.refuse(5, "no")
        rest = gate.from_target(data[12:])

        assert b"".join(p for p in first if isinstance(p, bytes)) == data[:12]
        assert waiting == b""
        assert b"".join(p for p in rest if isinstance(p, bytes)) == data[12:] + answer
        assert gate.refuse(5, "no") == answer


@pytest.mark.parametrize(
    ("path", "mode", "expected"),
    [
        ("/a/b/c", "parent", ("/a/b", "c")),
        ("/c", "parent", ("/", "c")),
        ("c", "parent", (".", "c")),
        ("/a/b/", "parent", ("/a/b/", "")),
        ("/a/..", "parent", ("/a/..", "")),
        ("/a/b", "follow", ("/a/b", "")),
    ],
)
def test_lookups(path: str, mode: str, expected: tuple[str, str]) -> None:
    """
    Requests on a name resolve its directory; others the whole path.
    """
    assert lookups(FileRequest(1, ("stat",), path, resolve=(mode,))) == [expected]


@pytest.mark.parametrize(
    ("contents", "link", "expected"),
    [
        ("../x", "/srv/d/l", "/srv/d/../x"),
        ("/etc", "/srv/d/l", "/etc"),
        ("x", "l", "x"),
        ("x", "/l", "/x"),
    ],
)
def test_link_contents(contents: str, link: str, expected: str) -> None:
    """
    A symbolic link's contents resolve from the link's directory.
    """
    symlink = FileRequest(1, ("symlink",), contents, link, resolve=("link", "parent"))

    assert lookups(symlink)[0] == (expected, "")


def test_joined() -> None:
    assert (joined("/", "c"), joined("/a/", "c"), joined("/a", "")) == (
        "/c",
        "/a/c",
        "/a",
    )
