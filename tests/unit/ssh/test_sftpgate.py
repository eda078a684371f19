"""
Tests for L{hoopgate_plugins.ssh._sftpgate}.
"""

from __future__ import annotations

import struct

from twisted.trial.unittest import SynchronousTestCase

from hoopgate_plugins.ssh._sftpgate import (
    MAX_REQUEST,
    PERMISSION_DENIED,
    FileRequest,
    SftpGate,
    status,
)


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack(">L", len(data)) + data


def packet(kind: int, body: bytes) -> bytes:
    return struct.pack(">LB", len(body) + 1, kind) + body


def open_request(request_id: int, path: str, flags: int) -> bytes:
    body = struct.pack(">L", request_id) + _string(path)
    return packet(3, body + struct.pack(">LL", flags, 0))


def write_request(request_id: int, data: bytes) -> bytes:
    body = struct.pack(">L", request_id) + _string(b"h1") + struct.pack(">Q", 0)
    return packet(6, body + _string(data))


class SftpGateTests(SynchronousTestCase):
    """
    L{SftpGate} holds requests naming paths whole, passes the rest as it
    comes, and answers refusals between the target's packets.
    """

    def test_requests_split_out(self) -> None:
        """
        An open for writing arrives whole as a request, however it was
        split; a write passes as bytes.
        """
        gate = SftpGate()
        opened = open_request(7, "/etc/passwd", 0x02 | 0x08)
        wrote = write_request(8, b"x" * 100)
        stream = opened + wrote

        out = [
            p for i in range(len(stream)) for p in gate.from_client(stream[i : i + 1])
        ]

        requests = [p for p in out if isinstance(p, FileRequest)]
        passed = b"".join(p for p in out if isinstance(p, bytes))
        assert requests == [
            FileRequest(7, ("write",), "/etc/passwd", "", opened, len(opened))
        ]
        assert passed == wrote

    def test_operations(self) -> None:
        """
        Renames and the OpenSSH extensions carry both paths; a read-write
        open does both.
        """
        gate = SftpGate()
        rename = packet(18, struct.pack(">L", 1) + _string("/a") + _string("/b"))
        hardlink = packet(
            200,
            struct.pack(">L", 2)
            + _string("hardlink@openssh.com")
            + _string("/c")
            + _string("/d"),
        )
        limits = packet(200, struct.pack(">L", 3) + _string("limits@openssh.com"))

        out = gate.from_client(rename + hardlink + open_request(4, "/e", 0x03) + limits)

        assert [
            (p.operations, p.path, p.target_path)
            for p in out
            if isinstance(p, FileRequest)
        ] == [
            (("rename",), "/a", "/b"),
            (("link",), "/c", "/d"),
            (("read", "write"), "/e", ""),
        ]
        assert out[-1] == limits

    def test_long_request_refused_unread(self) -> None:
        """
        A request naming a path longer than the bound is not kept: it
        comes out without its packet, to be refused.
        """
        gate = SftpGate()
        long = open_request(9, "/" + "a" * MAX_REQUEST, 0x01)

        [request] = gate.from_client(long)

        assert isinstance(request, FileRequest)
        assert (request.request_id, request.packet, request.size) == (9, b"", len(long))

    def test_refusal_between_packets(self) -> None:
        """
        A refusal while a target packet is in passage waits for its end;
        at a boundary it goes at once.
        """
        gate = SftpGate()
        data = packet(103, struct.pack(">L", 1) + _string(b"z" * 50))
        answer = status(5, PERMISSION_DENIED, "no")

        first = gate.from_target(data[:10])
        waiting = gate.refuse(5, "no")
        rest = gate.from_target(data[10:])

        assert b"".join(first) == data[:10]
        assert waiting == b""
        assert b"".join(rest) == data[10:] + answer
        assert gate.refuse(5, "no") == answer
