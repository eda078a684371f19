"""
Relayed channels: both ends of a channel pair and the pipes between them.

A client channel on the gateway's server leg is paired with a channel the
gateway opens on its connection to the target.  What one end receives
goes through a L{Pipe} to the other end, in order: data, extended data,
requests, EOF and close.  Flow control is the pipes' job and follows one
rule: the gateway reopens a sender's window only for bytes it has passed
on within the receiver's window.  So nothing waits in the gateway beyond
one window per direction, and a slow reader stops the sender on the far
side instead of filling memory.  Conch's own channel classes reopen a
window before the data is handed on and buffer writes without bound,
which is why the relay does not use them.

Requests are answered in the order they came, as RFC 4254 wants: each
request that wants a reply takes a L{ReplySlot} on the end it came from;
the slot is filled by the far side's answer or by the gateway's own, and
answers go out only from the front of the queue.

test-case-name: tests.unit.ssh.test_channels
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from attrs import define, field

from hoopgate_plugins.ssh import _codec as c

#: Our receive window per channel (bytes in flight toward the gateway).
WINDOW = 2 * 1024 * 1024

#: The largest data packet we accept.
MAX_PACKET = 32 * 1024


class Leg(Protocol):
    """
    One of the gateway's two SSH connections, as the pipes see it.
    """

    side: str

    def send(self, message: int, payload: bytes) -> None:
        """
        Send one connection-protocol message.
        """

    @property
    def writable(self) -> bool:
        """
        Whether the connection's socket takes more bytes now.
        """


@define(eq=False)
class ReplySlot:
    """
    An answer owed to a peer for one request.

    Attributes:
        owner: The end whose peer made the request and gets the answer.
        result: C{True} (success) or C{False} (failure) once known.
    """

    owner: End
    result: bool | None = None

    def settle(self, ok: bool) -> None:
        """
        Fill the slot and send the owner's answers now due.
        """
        self.owner.answer(self, ok)


@define(eq=False)
class End:
    """
    One end of a relayed channel: the channel on one leg.

    Attributes:
        leg: The connection it lives on.
        local_id: Our channel number there.
        remote_id: The peer's number for it, once known.
        remote_window: Bytes the peer still accepts from us.
        remote_max_packet: The largest data packet the peer accepts.
        window_left: Bytes the peer may still send us.
        replies: Answers owed to the peer, in request order.
        awaiting: Our requests to the peer that wait for its answer.
        got_eof: The peer sent EOF.
        sent_eof: We sent EOF.
        got_close: The peer sent CLOSE.
        sent_close: We sent CLOSE.
    """

    leg: Leg
    local_id: int
    remote_id: int | None = None
    remote_window: int = 0
    remote_max_packet: int = 0
    window_left: int = WINDOW
    replies: deque[ReplySlot] = field(factory=deque)
    awaiting: deque[ReplySlot] = field(factory=deque)
    got_eof: bool = False
    sent_eof: bool = False
    got_close: bool = False
    sent_close: bool = False

    @property
    def open(self) -> bool:
        """
        Whether we may still send on it.
        """
        return self.remote_id is not None and not self.sent_close

    @property
    def done(self) -> bool:
        """
        Whether both sides have closed it.
        """
        return self.sent_close and self.got_close

    def peer_opened(self, remote_id: int, window: int, max_packet: int) -> None:
        self.remote_id = remote_id
        self.remote_window = window
        self.remote_max_packet = max(1, min(max_packet, 256 * 1024))

    def received(self, size: int) -> None:
        """
        The peer sent C{size} data bytes.

        Raises:
            ProtocolError: It sent more than its window or a packet larger
                than we accept.
        """
        if size > self.window_left or size > MAX_PACKET:
            raise c.ProtocolError(
                f"peer sent {size} bytes on channel {self.local_id} "
                f"with {self.window_left} left in its window"
            )
        self.window_left -= size

    def expect_reply(self) -> ReplySlot:
        """
        A slot for the answer to a request the peer just made.
        """
        slot = ReplySlot(self)
        self.replies.append(slot)
        return slot

    def answer(self, slot: ReplySlot, ok: bool) -> None:
        """
        Fill C{slot} and send every answer now due, in order.
        """
        slot.result = ok
        self.flush_replies()

    def flush_replies(self) -> None:
        while self.replies and self.replies[0].result is not None:
            ok = self.replies.popleft().result
            if self.open:
                assert self.remote_id is not None
                message = c.MSG_CHANNEL_SUCCESS if ok else c.MSG_CHANNEL_FAILURE
                self.leg.send(message, c.channel_only(self.remote_id))

    def send_close(self) -> None:
        if not self.open:
            return
        assert self.remote_id is not None
        self.leg.send(c.MSG_CHANNEL_CLOSE, c.channel_only(self.remote_id))
        self.sent_close = True
        self.fail_awaiting()

    def fail_awaiting(self) -> None:
        """
        Answers the peer will never give count as failures.
        """
        while self.awaiting:
            self.awaiting.popleft().settle(False)


@define(eq=False)
class Data:
    """
    Channel data (C{kind} 0) or extended data (C{kind} 1: stderr);
    C{own} for bytes the gateway wrote itself, which reopen no window.
    """

    chunk: bytes
    kind: int = 0
    own: bool = False


@define(eq=False)
class Request:
    """
    A channel request to pass on; C{slot} gets the far side's answer.
    """

    name: str
    rest: bytes
    slot: ReplySlot | None = None


@define(eq=False)
class Eof:
    """
    No more data in this direction.
    """


@define(eq=False)
class Close:
    """
    The channel ends in this direction.
    """


@define(eq=False)
class Pending:
    """
    A place held in the pipe until a verdict arrives.

    Attributes:
        items: What to send in its place, once decided.
    """

    items: list[Item] | None = None


Item = Data | Request | Eof | Close | Pending


class Pipe:
    """
    One direction of a channel pair: from C{source}'s peer to C{sink}'s.

    Args:
        source: The end the items come from.
        sink: The end they go to.
        on_sent: Called with each data chunk as it is passed on.
    """

    def __init__(
        self,
        source: End,
        sink: End,
        on_sent: Callable[[Data], None] | None = None,
    ) -> None:
        self.source = source
        self.sink = sink
        self.items: deque[Item] = deque()
        self.uncredited = 0
        self._on_sent = on_sent

    @property
    def empty(self) -> bool:
        return not self.items

    def push(self, item: Item) -> None:
        """
        Queue an item behind everything before it and pass on what fits.
        """
        self.items.append(item)
        self.pump()

    def pump(self) -> None:
        """
        Pass on items in order while the sink takes them.
        """
        sink = self.sink
        while self.items:
            item = self.items[0]
            if isinstance(item, Pending):
                if item.items is None:
                    break
                self.items.popleft()
                self.items.extendleft(reversed(item.items))
                continue
            if not sink.open:
                self._drop(self.items.popleft())
                continue
            if isinstance(item, Data):
                if not self._send_data(item):
                    break
            else:
                self._send_control(item)
            self.items.popleft()
        self.credit()

    def _send_data(self, item: Data) -> bool:
        """
        Send what the sink's window allows; C{True} if all of it went.
        """
        sink = self.sink
        if not sink.leg.writable:
            return False
        room = min(len(item.chunk), sink.remote_window)
        if room <= 0:
            return False

        assert sink.remote_id is not None
        step = sink.remote_max_packet
        chunk = item.chunk
        for at in range(0, room, step):
            part = chunk[at : min(at + step, room)]
            if item.kind:
                payload = c.extended_data(sink.remote_id, item.kind, part)
                sink.leg.send(c.MSG_CHANNEL_EXTENDED_DATA, payload)
            else:
                sink.leg.send(c.MSG_CHANNEL_DATA, c.data(sink.remote_id, part))
        sink.remote_window -= room
        if not item.own:
            self.uncredited += room
        if self._on_sent is not None:
            self._on_sent(Data(chunk[:room], item.kind))
        if room < len(chunk):
            item.chunk = chunk[room:]
            return False
        return True

    def _send_control(self, item: Item) -> None:
        sink = self.sink
        assert sink.remote_id is not None
        if isinstance(item, Request):
            want = item.slot is not None
            payload = c.channel_request(sink.remote_id, item.name, want, item.rest)
            sink.leg.send(c.MSG_CHANNEL_REQUEST, payload)
            if item.slot is not None:
                sink.awaiting.append(item.slot)
        elif isinstance(item, Eof):
            if not sink.sent_eof:
                sink.leg.send(c.MSG_CHANNEL_EOF, c.channel_only(sink.remote_id))
                sink.sent_eof = True
        elif isinstance(item, Close):
            sink.send_close()

    def _drop(self, item: Item) -> None:
        # The sink is closed: what was meant for it is gone, but requests
        # still owe their senders an answer.
        if isinstance(item, Request) and item.slot is not None:
            item.slot.settle(False)
        elif isinstance(item, Data) and not item.own:
            self.uncredited += len(item.chunk)

    def credit(self) -> None:
        """
        Reopen the source's window for bytes passed on, once it is half
        used, as OpenSSH does.
        """
        source = self.source
        if not self.uncredited or not source.open or source.got_close:
            return
        if source.window_left >= WINDOW // 2:
            return
        assert source.remote_id is not None
        added, self.uncredited = self.uncredited, 0
        source.window_left += added
        source.leg.send(
            c.MSG_CHANNEL_WINDOW_ADJUST, c.window_adjust(source.remote_id, added)
        )

    def clear(self) -> None:
        """
        Forget what is queued (the connection is gone).
        """
        while self.items:
            item = self.items.popleft()
            if isinstance(item, Request) and item.slot is not None:
                item.slot.settle(False)


__all__ = [
    "MAX_PACKET",
    "WINDOW",
    "Close",
    "Data",
    "End",
    "Eof",
    "Leg",
    "Pending",
    "Pipe",
    "ReplySlot",
    "Request",
]
