"""
The SFTP watcher: packets split anywhere, file data counted, not kept.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from hoopgate_plugins.ssh import _sftp as s
from hoopgate_plugins.ssh._codec import ns
from tests.unit.ssh.support import FakeSession


def packet(kind: int, body: bytes) -> bytes:
    return struct.pack(">LB", len(body) + 1, kind) + body


def u32(value: int) -> bytes:
    return struct.pack(">L", value)


def upload(path: bytes, data: bytes) -> list[tuple[str, bytes]]:
    """
    A client's open, write and close of C{path} with the server's
    answers, in the order they cross the gateway.
    """
    ok = u32(0) + ns(b"") + ns(b"")
    return [
        ("client", packet(s.OPEN, u32(1) + ns(path) + u32(2 | 8 | 16) + u32(0))),
        ("server", packet(s.HANDLE, u32(1) + ns(b"h1"))),
        ("client", packet(s.WRITE, u32(2) + ns(b"h1") + bytes(8) + ns(data))),
        ("server", packet(s.STATUS, u32(2) + ok)),
        ("client", packet(s.CLOSE, u32(3) + ns(b"h1"))),
        ("server", packet(s.STATUS, u32(3) + ok)),
    ]


def replay(
    watcher: s.SftpWatcher, steps: list[tuple[str, bytes]], cuts: tuple[int, ...] = ()
) -> None:
    """
    Feed each step, cut at C{cuts} (offsets into each packet).
    """
    for side, data in steps:
        feed = watcher.from_client if side == "client" else watcher.from_server
        at = 0
        for cut in sorted({c % len(data) for c in cuts}):
            feed(data[at:cut])
            at = cut
        feed(data[at:])


class TestWatcher:
    def test_upload(self) -> None:
        """
        One record per file, with its mode and bytes written.
        """
        session = FakeSession()
        watcher = s.SftpWatcher(session, "S1.1")
        replay(watcher, upload(b"/tmp/f", b"x" * 70000))

        [record] = session.events("ssh.sftp")
        assert (
            record.operation,
            record.path,
            record.mode,
            record.bytes_written,
            record.status,
        ) == ("open", "/tmp/f", "wct", 70000, "ok")

    @given(st.lists(st.integers(min_value=0, max_value=400), max_size=12))
    def test_any_split(self, cuts: list[int]) -> None:
        """
        Where TCP cuts the stream changes nothing.
        """
        session = FakeSession()
        watcher = s.SftpWatcher(session, "S1.1")
        replay(watcher, upload(b"/srv/data.bin", b"y" * 300), tuple(cuts))

        [record] = session.events("ssh.sftp")
        assert (record.path, record.bytes_written) == ("/srv/data.bin", 300)

    def test_failed_open_and_rename(self) -> None:
        session = FakeSession()
        watcher = s.SftpWatcher(session, "S1.1")

        watcher.from_client(packet(s.OPEN, u32(9) + ns(b"/no/x") + u32(2) + u32(0)))
        watcher.from_client(packet(s.RENAME, u32(10) + ns(b"/a") + ns(b"/b")))
        watcher.from_server(packet(s.STATUS, u32(9) + u32(2) + ns(b"") + ns(b"")))
        watcher.from_server(packet(s.STATUS, u32(10) + u32(0) + ns(b"") + ns(b"")))

        records = [
            (r.operation, r.path, r.target_path, r.status)
            for r in session.events("ssh.sftp")
        ]
        assert records == [
            ("open", "/no/x", "", "no_such_file"),
            ("rename", "/a", "/b", "ok"),
        ]

    def test_download_counts_reads(self) -> None:
        session = FakeSession()
        watcher = s.SftpWatcher(session, "S1.1")
        watcher.from_client(packet(s.OPEN, u32(1) + ns(b"/f") + u32(1) + u32(0)))
        watcher.from_server(packet(s.HANDLE, u32(1) + ns(b"h")))

        watcher.from_client(packet(s.READ, u32(2) + ns(b"h") + bytes(8) + u32(5000)))
        watcher.from_server(packet(s.DATA, u32(2) + ns(b"z" * 4000)))
        watcher.finish()

        [record] = session.events("ssh.sftp")
        assert (record.bytes_read, record.status, record.mode) == (
            4000,
            "unclosed",
            "r",
        )

    def test_head_kept_small(self) -> None:
        """
        A large WRITE keeps only its head.
        """
        heads: list[tuple[int, int, int]] = []
        stream = s.PacketStream(
            lambda kind, head, size: heads.append((kind, len(head), size))
        )
        body = u32(1) + ns(b"h") + bytes(8) + ns(b"q" * 200000)

        stream.feed(packet(s.WRITE, body))

        assert heads == [(s.WRITE, 512, len(body))]
