"""
Transcript tests of SFTP judging in the relay
(L{hoopgate_plugins.ssh._sftpjudge}): the gateway's REALPATH goes to
the target right before the request it serves, the chain judges the
resolved path, and the answer to the gateway's own request never
reaches the client.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from twisted.internet.defer import Deferred

from hoopgate.plugin import (
    ALLOW,
    Deny,
    DenyReason,
    Event,
    FileOperationRequested,
    Hold,
    Verdict,
)
from hoopgate_plugins.ssh import _codec as c
from hoopgate_plugins.ssh import _sftpgate as g
from hoopgate_plugins.ssh._channels import WINDOW
from hoopgate_plugins.ssh._relay import Relay
from hoopgate_plugins.ssh._sftpgate import RESERVED, status
from tests.unit.ssh.support import FakeLeg, FakeSession, settings
from tests.unit.ssh.test_sftpgate import (
    handle_answer,
    name_answer,
    open_request,
    read_request,
    request,
    string,
)

UPSTREAM_ID = 70


def no_etc(event: Event) -> Verdict:
    """
    Refuse file operations under C{/etc}, as a guardrail would.
    """
    if isinstance(event, FileOperationRequested) and event.path.startswith("/etc"):
        reason = DenyReason("guardrail.blocked", "file blocked", "test", "no-etc")
        return Deny(reason)
    return ALLOW


class Sftp:
    """
    A relayed SFTP channel between fake legs.
    """

    def __init__(self, verdict: Callable[[Event], Verdict] = no_etc) -> None:
        self.client = FakeLeg("client")
        self.upstream = FakeLeg("upstream")
        self.session = FakeSession(verdict)
        self.relay = Relay(
            self.session, settings(), self.client, self.upstream, lambda: None
        )
        self.relay.from_client(
            c.MSG_CHANNEL_OPEN, c.channel_open("session", 7, 1 << 20, 1 << 15)
        )
        self.relay.from_upstream(
            c.MSG_CHANNEL_OPEN_CONFIRMATION,
            c.open_confirmation(0, UPSTREAM_ID, 1 << 20, 1 << 15),
        )
        self.relay.from_client(
            c.MSG_CHANNEL_REQUEST,
            c.channel_request(0, "subsystem", False, c.command("sftp")),
        )
        self.upstream.take()
        self.client.take()

    def send(self, data: bytes) -> None:
        self.relay.from_client(c.MSG_CHANNEL_DATA, c.data(0, data))

    def answer(self, data: bytes) -> None:
        self.relay.from_upstream(c.MSG_CHANNEL_DATA, c.data(0, data))

    def to_target(self) -> bytes:
        return _data(self.upstream.take())

    def to_client(self) -> bytes:
        return _data(self.client.take())


def _data(sent: list[tuple[int, bytes]]) -> bytes:
    return b"".join(c.parse_data(p)[1] for m, p in sent if m == c.MSG_CHANNEL_DATA)


def _our_id(packet: bytes) -> int:
    kind, request_id = struct.unpack(">BL", packet[4:9])
    assert kind == g.REALPATH
    return int(request_id)


class TestResolution:
    """
    Paths are judged as the target resolves them.
    """

    def test_link_into_denied_directory(self) -> None:
        """
        An open of C{/srv/link/passwd} is preceded by the gateway's
        REALPATH; the target says C{/etc/passwd}; the chain refuses it:
        the client gets permission denied and the target never sees the
        open nor does the client see the REALPATH answer.
        """
        sftp = Sftp()
        opened = open_request(5, "/srv/link/passwd", 0x01)

        sftp.send(opened)
        lookup = sftp.to_target()
        sftp.answer(name_answer(_our_id(lookup), "/etc/passwd"))

        assert lookup == request(
            g.REALPATH, _our_id(lookup), string("/srv/link/passwd")
        )
        assert _our_id(lookup) >= RESERVED
        assert sftp.to_target() == b""
        answer = sftp.to_client()
        assert answer[4:13] == struct.pack(">BLL", g.STATUS, 5, g.PERMISSION_DENIED)
        assert b"rule no-etc" in answer
        [event] = sftp.session.events("file.requested")
        assert (event.operations, event.path) == (("read",), "/etc/passwd")

    def test_shown_path(self) -> None:
        """
        What the target resolved is judged, bytes that are not UTF-8
        shown as U+FFFD.
        """
        sftp = Sftp()
        sftp.send(request(g.STAT, 3, string("/srv/x")))
        resolved = request(
            g.NAME,
            _our_id(sftp.to_target()),
            struct.pack(">L", 1),
            string(b"/srv/\xfe"),
            string(b""),
            struct.pack(">L", 0),
        )
        sftp.answer(resolved)

        [event] = sftp.session.events("file.requested")
        assert event.path == "/srv/\ufffd"

    def test_allowed_open_then_handle(self) -> None:
        """
        An allowed open passes after its REALPATH, judged on the
        resolved path; reads on its handle pass, fsetstat is judged on
        that path.
        """
        seen: list[FileOperationRequested] = []

        def record(event: Event) -> Verdict:
            if isinstance(event, FileOperationRequested):
                seen.append(event)
            return ALLOW

        sftp = Sftp(record)
        opened = open_request(5, "data/f", 0x01)

        sftp.send(opened)
        sftp.answer(name_answer(_our_id(sftp.to_target()), "/srv/data/f"))
        assert sftp.to_target() == opened
        sftp.answer(handle_answer(5, b"h"))
        assert sftp.to_client() == handle_answer(5, b"h")
        sftp.send(read_request(6, b"h"))
        fsetstat = request(g.FSETSTAT, 7, string(b"h"), struct.pack(">LL", 4, 0o600))
        sftp.send(fsetstat)

        assert sftp.to_target() == read_request(6, b"h") + fsetstat
        assert [(e.operations, e.path) for e in seen] == [
            (("read",), "/srv/data/f"),
            (("setstat",), "/srv/data/f"),
        ]

    def test_path_bytes_kept(self) -> None:
        """
        A path that is not UTF-8 is resolved as the exact bytes the
        target will act on; the event shows U+FFFD in their place.
        """
        sftp = Sftp()
        raw = b"/srv/\xfflink"
        opened = request(g.OPEN, 5, string(raw), struct.pack(">LL", 1, 0))

        sftp.send(opened)
        lookup = sftp.to_target()
        sftp.answer(name_answer(_our_id(lookup), "/etc/passwd"))

        assert lookup == request(g.REALPATH, _our_id(lookup), string(raw))
        assert sftp.to_target() == b""
        [event] = sftp.session.events("file.requested")
        assert event.path == "/etc/passwd"

    def test_unresolved_fails_closed(self) -> None:
        """
        A path the target cannot resolve: the request never goes, and
        the client gets the target's status; the chain is not asked.
        """
        sftp = Sftp()
        removed = request(g.REMOVE, 9, string("/nope/x"))

        sftp.send(removed)
        lookup = sftp.to_target()
        sftp.answer(status(_our_id(lookup), g.NO_SUCH_FILE, "No such file"))

        assert lookup == request(g.REALPATH, _our_id(lookup), string("/nope"))
        assert sftp.to_target() == b""
        assert sftp.to_client() == status(9, g.NO_SUCH_FILE, "No such file")
        assert sftp.session.events("file.requested") == []

    def test_order_kept_while_held(self) -> None:
        """
        While a request waits for an approval, the next one's REALPATH
        waits too, so it sees what the first did.
        """
        held: Deferred[Verdict] = Deferred()

        def hold(event: Event) -> Verdict:
            if isinstance(event, FileOperationRequested):
                return Hold(held)
            return ALLOW

        sftp = Sftp(hold)
        made = request(g.MKDIR, 1, string("/srv/a"), struct.pack(">L", 0))
        stat = request(g.STAT, 2, string("/srv/a"))

        sftp.send(made + stat)
        first = sftp.to_target()
        sftp.answer(name_answer(_our_id(first), "/srv"))
        assert sftp.to_target() == b""
        held.callback(ALLOW)

        out = sftp.to_target()
        assert out.startswith(made)
        assert out[len(made) :] == request(
            g.REALPATH, _our_id(out[len(made) :]), string("/srv/a")
        )

    def test_own_answers_reopen_the_window(self) -> None:
        """
        The target's answers to the gateway's own requests are not
        passed on, yet the window they used is reopened.
        """
        sftp = Sftp(lambda event: ALLOW)
        size, i = 0, 0
        sent: list[tuple[int, bytes]] = []
        while size < 2 * WINDOW:
            i += 1
            sftp.send(request(g.STAT, i, string("/srv/x")))
            answer = name_answer(_our_id(sftp.to_target()), "/srv/" + "y" * 1000)
            size += len(answer)
            sftp.answer(answer)
            sent += sftp.upstream.take()

        adjusts = [
            c.parse_window_adjust(p)[1]
            for m, p in sent
            if m == c.MSG_CHANNEL_WINDOW_ADJUST
        ]
        assert sum(adjusts) >= size - WINDOW // 2 > 0
        assert sftp.to_client() == b""
