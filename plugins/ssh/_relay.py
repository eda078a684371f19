"""
The relay between a client's SSH connection and the target's.

L{Relay} receives every connection-protocol message of both legs (the
transports and user authentication are Conch's) and decides what each
becomes:

  - C{session} channels are opened on the target once the client asks;
    C{exec} and C{shell} pass the chain as C{CommandReceived} first, and
    a refusal answers on the channel itself (a message on stderr, exit
    status 1, close); C{subsystem sftp} passes as L{SubsystemRequested},
    each request naming a path or acting on a handle passes the chain as
    C{FileOperationRequested} with its paths as the target resolves them
    (L{SftpJudge}; a refusal answers that request alone with permission
    denied) and its traffic is watched for the record; C{env} passes
    only for names the target allows; terminals (their output, and
    their typed input where policy says so, recorded as an asciicast,
    masked), resizes and signals pass.
  - C{direct-tcpip} channels are opened as channels of the target's
    connection, so the target, never the gateway, connects; only to
    destinations the target's C{forward_to} lists and the chain allows,
    otherwise "administratively prohibited".
  - Remote forwarding, agent forwarding, X11 and any channel the target
    tries to open toward the client are refused; the target's host-key
    announcements and keepalives are answered or dropped here.
  - Every request that wants a reply gets one, in order; exit-status and
    exit-signal reach the client after all output and before the close.

It is sans-IO in the sense that matters for tests: the two legs are
objects with C{send} and C{writable}, and the session is anything with
C{decide}/C{observe}.

test-case-name: tests.unit.ssh.test_relay
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from twisted.logger import Logger
from twisted.python.failure import Failure

from hoopgate.plugin import (
    CommandReceived,
    Deny,
    Event,
    ForwardRequested,
    Hold,
    Notice,
    Rewrite,
    Verdict,
)
from hoopgate_plugins.ssh import _codec as c
from hoopgate_plugins.ssh import _errors
from hoopgate_plugins.ssh._cast import TerminalCast
from hoopgate_plugins.ssh._certs import Permissions
from hoopgate_plugins.ssh._channels import (
    MAX_PACKET,
    WINDOW,
    Close,
    Data,
    End,
    Eof,
    Item,
    Leg,
    Pending,
    Pipe,
    ReplySlot,
    Request,
)
from hoopgate_plugins.ssh._events import (
    ExitStatus,
    ForwardClosed,
    PtyRequested,
    SubsystemRequested,
)
from hoopgate_plugins.ssh._settings import TargetSettings
from hoopgate_plugins.ssh._sftp import SftpWatcher
from hoopgate_plugins.ssh._sftpjudge import SftpJudge

# Channel requests from the client passed on to the target as they are.
_PASSED_FROM_CLIENT = frozenset(
    {"window-change", "signal", "break", "eow@openssh.com", "xon-xoff"}
)

# Channel requests from the target passed on to the client.
_PASSED_FROM_TARGET = frozenset({"eow@openssh.com", "xon-xoff"})

# Refused client requests, with the notice kind that records them.
_REFUSED_REQUESTS = {
    "x11-req": "x11.refused",
    "auth-agent-req@openssh.com": "agent.refused",
    "auth-agent-req": "agent.refused",
}

# Global requests from the client that are refused and recorded.
_REFUSED_GLOBAL = {
    "tcpip-forward": "remote_forward.refused",
    "streamlocal-forward@openssh.com": "remote_forward.refused",
}


class Judge(Protocol):
    """
    What the relay needs of a session (L{hoopgate.plugin.Session}).
    """

    id: str

    def next_id(self) -> str:
        """
        A new id for a command or forward.
        """

    def decide(self, event: Event) -> Verdict:
        """
        The chain's verdict on C{event}.
        """

    def observe(self, event: Event) -> None:
        """
        Record C{event}.
        """


class Pair:
    """
    A client channel and the target channel relayed with it.

    Attributes:
        kind: C{session} or C{direct-tcpip}.
        request: The client's channel open.
        client: The end on the client's connection; open toward the
            client once the target confirmed its end.
        upstream: The end on the target's connection.
        up: Client to target.
        down: Target to client.
        command_id: The command, shell or subsystem running on it.
        forward: The forward it carries, if any.
        sftp: The SFTP watcher, for an C{sftp} subsystem.
        judge: What resolves and judges its SFTP requests.
        cast: The terminal recording, once a terminal was granted.
        bytes_up: Data bytes passed toward the target.
        bytes_down: Data bytes passed toward the client.
    """

    def __init__(self, request: c.ChannelOpen, client: End, upstream: End) -> None:
        self.kind = request.kind
        self.request = request
        self.client = client
        self.upstream = upstream
        self.up = Pipe(client, upstream, self._sent_up)
        self.down = Pipe(upstream, client, self._sent_down)
        self.command_id = ""
        self.started = False
        self.forward: ForwardRequested | None = None
        self.sftp: SftpWatcher | None = None
        self.judge: SftpJudge | None = None
        self.cast: TerminalCast | None = None
        self.bytes_up = 0
        self.bytes_down = 0

    @property
    def ref(self) -> str:
        return str(self.client.local_id)

    def _sent_up(self, item: Data) -> None:
        self.bytes_up += len(item.chunk)
        # Typing is what goes to a terminal's shell or command; a
        # subsystem's bytes are protocol, never keys.
        if self.cast is not None and not item.kind and self.judge is None:
            self.cast.input(item.chunk)
        if self.sftp is not None and not item.kind:
            self.sftp.from_client(item.chunk)

    def _sent_down(self, item: Data) -> None:
        self.bytes_down += len(item.chunk)
        if self.cast is not None:
            self.cast.output(item.chunk)
        if self.sftp is not None and not item.kind:
            self.sftp.from_server(item.chunk)

    @property
    def done(self) -> bool:
        return self.client.done and self.upstream.done


_Handler = Callable[["Relay", bytes], None]

#: Starts a terminal's recording: channel reference and terminal in.
CastFactory = Callable[[str, c.Pty], TerminalCast | None]


class Relay:
    """
    Relays the channels of one session between its two legs.

    Args:
        session: Decides and records.
        settings: The target's SSH settings.
        client: The client's leg (the gateway is the server there).
        upstream: The target's leg (the gateway is the client there).
        on_idle: Called when the target's leg is gone and no channel is
            left, so the client's connection can end.
        permissions: What the client's certificate grants (terminals,
            forwards); everything for a token login.
        casts: Starts the recording of a granted terminal (channel
            reference and terminal); C{None} records none.
    """

    _log = Logger()

    def __init__(
        self,
        session: Judge,
        settings: TargetSettings,
        client: Leg,
        upstream: Leg,
        on_idle: Callable[[], None],
        *,
        permissions: Permissions | None = None,
        casts: CastFactory | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.permissions = permissions or Permissions()
        self._casts = casts
        self.client = client
        self.upstream = upstream
        self._on_idle = on_idle
        self._by_client: dict[int, Pair] = {}
        self._by_upstream: dict[int, Pair] = {}
        self._next_client = 0
        self._next_upstream = 0
        self._no_more_sessions = False
        self.upstream_gone = False
        self.bytes_from_client = 0
        self.bytes_to_client = 0

    # -- entry points ---------------------------------------------------------

    def from_client(self, message: int, payload: bytes) -> None:
        """
        Handle a connection-protocol message the client sent.

        Raises:
            ProtocolError: The message breaks the protocol.
        """
        handler = _CLIENT_HANDLERS.get(message)
        if handler is None:
            raise c.ProtocolError(f"unexpected message {message} from the client")
        handler(self, payload)

    def from_upstream(self, message: int, payload: bytes) -> None:
        """
        Handle a connection-protocol message the target sent.
        """
        handler = _UPSTREAM_HANDLERS.get(message)
        if handler is None:
            raise c.ProtocolError(f"unexpected message {message} from the target")
        handler(self, payload)

    def resume(self, side: str) -> None:
        """
        A leg's socket takes bytes again: pass on what waits for it.
        """
        for pair in list(self._by_client.values()):
            pipe = pair.down if side == "client" else pair.up
            pipe.pump()

    def upstream_lost(self) -> None:
        """
        The target's connection ended: each channel ends after what the
        target had already sent.
        """
        self.upstream_gone = True
        for pair in list(self._by_client.values()):
            if pair.upstream.remote_id is None:
                self._by_client.pop(pair.client.local_id, None)
                self._refuse_open(pair.request.sender, _errors.TARGET_GONE)
                continue
            end = pair.upstream
            end.got_close = end.sent_close = True
            end.fail_awaiting()
            pair.up.clear()
            pair.down.push(Eof())
            pair.down.push(Close())
            self._maybe_done(pair)
        self._check_idle()

    def client_lost(self) -> None:
        """
        The client's connection ended: forget every channel.
        """
        for pair in list(self._by_client.values()):
            pair.up.clear()
            pair.down.clear()
            self._finish(pair)

    @property
    def channels(self) -> int:
        """
        Channels currently relayed.
        """
        return len(self._by_client)

    # -- helpers ----------------------------------------------------------------

    def _client_pair(self, number: int) -> Pair:
        pair = self._by_client.get(number)
        if pair is None:
            raise c.ProtocolError(f"client used unknown channel {number}")
        return pair

    def _upstream_pair(self, number: int) -> Pair:
        pair = self._by_upstream.get(number)
        if pair is None:
            raise c.ProtocolError(f"target used unknown channel {number}")
        return pair

    def _notice(self, kind: str, detail: str) -> None:
        self.session.observe(
            Notice(session_id=self.session.id, protocol="ssh", kind=kind, detail=detail)
        )

    def _verdict(self, event: Event, then: Callable[[Verdict], None]) -> Verdict:
        """
        Ask the chain; a hold calls C{then} once decided.
        """
        verdict = self.session.decide(event)
        if isinstance(verdict, Hold):

            def failed(failure: Failure) -> None:
                self._log.failure("A held verdict failed", failure)
                then(_errors.internal_deny())

            verdict.decision.addCallbacks(then, failed)
        return verdict

    def _maybe_done(self, pair: Pair) -> None:
        if pair.done and pair.down.empty:
            self._finish(pair)
            self._check_idle()

    def _finish(self, pair: Pair) -> None:
        self._by_client.pop(pair.client.local_id, None)
        self._by_upstream.pop(pair.upstream.local_id, None)
        if pair.forward is not None:
            forward, pair.forward = pair.forward, None
            self.session.observe(
                ForwardClosed(
                    session_id=self.session.id,
                    protocol="ssh",
                    forward_id=forward.forward_id,
                    host=forward.host,
                    port=forward.port,
                    status="closed",
                    bytes_to_target=pair.bytes_up,
                    bytes_from_target=pair.bytes_down,
                )
            )
        if pair.sftp is not None:
            pair.sftp.finish()
        if pair.cast is not None:
            cast, pair.cast = pair.cast, None
            cast.close()

    def _check_idle(self) -> None:
        if self.upstream_gone and not self._by_client:
            self._on_idle()

    # -- global requests --------------------------------------------------------

    def _client_global(self, payload: bytes) -> None:
        request = c.parse_global_request(payload)
        if request.name == "no-more-sessions@openssh.com":
            self._no_more_sessions = True
        refused = _REFUSED_GLOBAL.get(request.name)
        if refused is not None:
            self._log.warn(
                "Session {session_id}: refused {request} (remote forwarding)",
                session_id=self.session.id,
                request=request.name,
            )
            self._notice(refused, request.name)
        # keepalive@openssh.com and everything else: OpenSSH's servers
        # answer failure to what they do not implement, and any answer
        # proves the connection alive.
        if request.want_reply:
            self.client.send(c.MSG_REQUEST_FAILURE, b"")

    def _upstream_global(self, payload: bytes) -> None:
        request = c.parse_global_request(payload)
        # hostkeys-00@openssh.com announces the target's keys: never
        # relayed (the client knows the gateway's key, not the target's).
        if request.want_reply:
            self.upstream.send(c.MSG_REQUEST_FAILURE, b"")

    def _ignore(self, payload: bytes) -> None:
        # Answers to global requests: the gateway sends none.
        return

    # -- channel open -----------------------------------------------------------

    def _client_open(self, payload: bytes) -> None:
        request = c.parse_channel_open(payload)
        if request.kind == "session":
            self._open_session(request)
        elif request.kind == "direct-tcpip":
            self._open_forward(request)
        else:
            self._log.warn(
                "Session {session_id}: refused a {kind} channel",
                session_id=self.session.id,
                kind=request.kind,
            )
            self._notice("channel.refused", request.kind)
            self._refuse_open(request.sender, _errors.CHANNEL_REFUSED)

    def _refuse_open(self, sender: int, reply: _errors.OpenRefusal) -> None:
        self.client.send(
            c.MSG_CHANNEL_OPEN_FAILURE, c.open_failure(sender, reply.code, reply.text)
        )

    def _open_session(self, request: c.ChannelOpen) -> None:
        if self._no_more_sessions:
            self._refuse_open(request.sender, _errors.CHANNEL_REFUSED)
            return
        self._open_pair(request)

    def _open_forward(self, request: c.ChannelOpen) -> None:
        target = c.parse_direct_tcpip(request.extra)
        event = ForwardRequested(
            session_id=self.session.id,
            protocol="ssh",
            forward_id=self.session.next_id(),
            channel="",
            host=target.host,
            port=target.port,
            originator=target.originator,
            originator_port=target.originator_port,
        )
        if not self.permissions.port_forwarding:
            self._log.warn(
                "Session {session_id}: refused a forward to {host}:{port} "
                "(the certificate has no permit-port-forwarding)",
                session_id=self.session.id,
                host=target.host,
                port=target.port,
            )
            self._notice("forward.refused", f"{target.host}:{target.port}")
            self._refuse_open(request.sender, _errors.FORWARD_REFUSED)
            return
        if not self.settings.forward_allowed(target.host, target.port):
            self._log.warn(
                "Session {session_id}: refused a forward to {host}:{port} "
                "(not in the target's forward_to)",
                session_id=self.session.id,
                host=target.host,
                port=target.port,
            )
            self._notice("forward.refused", f"{target.host}:{target.port}")
            self._refuse_open(request.sender, _errors.FORWARD_REFUSED)
            return

        def decided(verdict: Verdict) -> None:
            if isinstance(verdict, Deny):
                self._refuse_open(request.sender, _errors.FORWARD_REFUSED)
                return
            pair = self._open_pair(request)
            if pair is not None:
                pair.forward = event

        verdict = self._verdict(event, decided)
        if not isinstance(verdict, Hold):
            decided(verdict)

    def _open_pair(self, request: c.ChannelOpen) -> Pair | None:
        if self.upstream_gone:
            self._refuse_open(request.sender, _errors.TARGET_GONE)
            return None
        client = End(self.client, self._next_client)
        self._next_client += 1
        upstream = End(self.upstream, self._next_upstream)
        self._next_upstream += 1

        pair = Pair(request, client, upstream)
        self._by_client[client.local_id] = pair
        self._by_upstream[upstream.local_id] = pair
        self.upstream.send(
            c.MSG_CHANNEL_OPEN,
            c.channel_open(
                request.kind, upstream.local_id, WINDOW, MAX_PACKET, request.extra
            ),
        )
        return pair

    def _client_open_answer(self, payload: bytes) -> None:
        raise c.ProtocolError("client answered a channel open the gateway never sent")

    def _upstream_open(self, payload: bytes) -> None:
        request = c.parse_channel_open(payload)
        self._log.info(
            "Session {session_id}: refused a {kind} channel from the target",
            session_id=self.session.id,
            kind=request.kind,
        )
        reply = _errors.CHANNEL_REFUSED
        self.upstream.send(
            c.MSG_CHANNEL_OPEN_FAILURE,
            c.open_failure(request.sender, reply.code, reply.text),
        )

    def _upstream_confirmed(self, payload: bytes) -> None:
        answer = c.parse_open_confirmation(payload)
        pair = self._upstream_pair(answer.recipient)
        if pair.upstream.remote_id is not None:
            raise c.ProtocolError("target confirmed a channel twice")
        pair.upstream.peer_opened(answer.sender, answer.window, answer.max_packet)
        if pair.forward is not None:
            pair.forward = _with_channel(pair.forward, pair.ref)
        request, client = pair.request, pair.client
        client.peer_opened(request.sender, request.window, request.max_packet)
        self.client.send(
            c.MSG_CHANNEL_OPEN_CONFIRMATION,
            c.open_confirmation(request.sender, client.local_id, WINDOW, MAX_PACKET),
        )

    def _upstream_open_failed(self, payload: bytes) -> None:
        answer = c.parse_open_failure(payload)
        pair = self._upstream_pair(answer.recipient)
        if pair.upstream.remote_id is not None:
            raise c.ProtocolError("target refused a channel it had confirmed")
        self._by_client.pop(pair.client.local_id, None)
        self._by_upstream.pop(pair.upstream.local_id, None)
        self.client.send(
            c.MSG_CHANNEL_OPEN_FAILURE,
            c.open_failure(pair.request.sender, answer.code, answer.text),
        )
        forward = pair.forward
        if forward is not None:
            self.session.observe(
                ForwardClosed(
                    session_id=self.session.id,
                    protocol="ssh",
                    forward_id=forward.forward_id,
                    host=forward.host,
                    port=forward.port,
                    status="failed",
                    error=answer.text,
                )
            )

    # -- flow -------------------------------------------------------------------

    def _client_window(self, payload: bytes) -> None:
        number, added = c.parse_window_adjust(payload)
        pair = self._client_pair(number)
        end = pair.client
        end.remote_window = min(end.remote_window + added, 0xFFFFFFFF)
        pair.down.pump()

    def _upstream_window(self, payload: bytes) -> None:
        number, added = c.parse_window_adjust(payload)
        pair = self._upstream_pair(number)
        end = pair.upstream
        end.remote_window = min(end.remote_window + added, 0xFFFFFFFF)
        pair.up.pump()

    def _client_data(self, payload: bytes) -> None:
        number, chunk = c.parse_data(payload)
        self._from_client_end(number, Data(chunk))

    def _client_extended(self, payload: bytes) -> None:
        number, kind, chunk = c.parse_extended_data(payload)
        self._from_client_end(number, Data(chunk, kind or 1))

    def _from_client_end(self, number: int, item: Data) -> None:
        pair = self._client_pair(number)
        if pair.client.got_eof or pair.client.got_close:
            raise c.ProtocolError(f"client sent data after EOF on channel {number}")
        pair.client.received(len(item.chunk))
        self.bytes_from_client += len(item.chunk)
        if pair.judge is None or item.kind:
            pair.up.push(item)
            return
        pair.judge.from_client(item.chunk)

    def _upstream_data(self, payload: bytes) -> None:
        number, chunk = c.parse_data(payload)
        self._from_upstream_end(number, Data(chunk))

    def _upstream_extended(self, payload: bytes) -> None:
        number, kind, chunk = c.parse_extended_data(payload)
        self._from_upstream_end(number, Data(chunk, kind or 1))

    def _from_upstream_end(self, number: int, item: Data) -> None:
        pair = self._upstream_pair(number)
        pair.upstream.received(len(item.chunk))
        self.bytes_to_client += len(item.chunk)
        if pair.judge is None or item.kind:
            pair.down.push(item)
            return
        pair.judge.from_target(item.chunk)

    # -- EOF and close ----------------------------------------------------------

    def _client_eof(self, payload: bytes) -> None:
        pair = self._client_pair(c.parse_channel_number(payload))
        pair.client.got_eof = True
        pair.up.push(Eof())

    def _upstream_eof(self, payload: bytes) -> None:
        pair = self._upstream_pair(c.parse_channel_number(payload))
        pair.upstream.got_eof = True
        pair.down.push(Eof())

    def _client_close(self, payload: bytes) -> None:
        pair = self._client_pair(c.parse_channel_number(payload))
        pair.client.got_close = True
        pair.down.clear()
        pair.client.send_close()
        pair.up.push(Close())
        self._maybe_done(pair)

    def _upstream_close(self, payload: bytes) -> None:
        pair = self._upstream_pair(c.parse_channel_number(payload))
        pair.upstream.got_close = True
        pair.up.clear()
        pair.upstream.send_close()
        pair.down.push(Close())
        self._maybe_done(pair)

    # -- answers to our requests ------------------------------------------------

    def _client_success(self, payload: bytes) -> None:
        self._settle(self._client_pair(c.parse_channel_number(payload)).client, True)

    def _client_failure(self, payload: bytes) -> None:
        self._settle(self._client_pair(c.parse_channel_number(payload)).client, False)

    def _upstream_success(self, payload: bytes) -> None:
        pair = self._upstream_pair(c.parse_channel_number(payload))
        self._settle(pair.upstream, True)

    def _upstream_failure(self, payload: bytes) -> None:
        pair = self._upstream_pair(c.parse_channel_number(payload))
        self._settle(pair.upstream, False)

    @staticmethod
    def _settle(end: End, ok: bool) -> None:
        # An answer after our close (it crossed our CLOSE) has no slot left.
        if end.awaiting:
            end.awaiting.popleft().settle(ok)

    # -- channel requests from the client ---------------------------------------

    def _client_request(self, payload: bytes) -> None:
        request = c.parse_channel_request(payload)
        pair = self._client_pair(request.recipient)
        slot = pair.client.expect_reply() if request.want_reply else None
        name = request.name

        if pair.kind != "session":
            self._answer(slot, False)
        elif name in ("exec", "shell"):
            self._on_command(pair, request, slot)
        elif name == "subsystem":
            self._on_subsystem(pair, request, slot)
        elif name == "pty-req":
            self._on_pty(pair, request, slot)
        elif name == "env":
            self._on_env(pair, request, slot)
        elif name in _PASSED_FROM_CLIENT:
            if name == "window-change" and pair.cast is not None:
                pair.cast.resize(*c.parse_window_change(request.data))
            pair.up.push(Request(name, request.data, slot))
        elif name in _REFUSED_REQUESTS:
            self._log.warn(
                "Session {session_id}: refused {request}",
                session_id=self.session.id,
                request=name,
            )
            self._notice(_REFUSED_REQUESTS[name], name)
            self._answer(slot, False)
        else:
            self._log.debug(
                "Session {session_id}: unknown request {request} answered failure",
                session_id=self.session.id,
                request=name,
            )
            self._answer(slot, False)

    @staticmethod
    def _answer(slot: ReplySlot | None, ok: bool) -> None:
        if slot is not None:
            slot.settle(ok)

    def _on_command(
        self, pair: Pair, request: c.ChannelRequest, slot: ReplySlot | None
    ) -> None:
        if pair.started:
            self._answer(slot, False)
            return
        pair.started = True
        line = c.parse_command(request.data) if request.name == "exec" else ""
        event = CommandReceived(
            session_id=self.session.id,
            protocol="ssh",
            command_id=self.session.next_id(),
            command=line,
            channel=pair.ref,
        )
        pair.command_id = event.command_id
        self._judged(pair, event, Request(request.name, request.data, slot), slot)

    def _on_subsystem(
        self, pair: Pair, request: c.ChannelRequest, slot: ReplySlot | None
    ) -> None:
        name = c.parse_command(request.data)
        if pair.started or name != "sftp":
            self._notice("subsystem.refused", name)
            self._answer(slot, False)
            return
        pair.started = True
        event = SubsystemRequested(
            session_id=self.session.id,
            protocol="ssh",
            command_id=self.session.next_id(),
            channel=pair.ref,
            subsystem=name,
        )
        pair.command_id = event.command_id
        pair.sftp = SftpWatcher(self.session, event.command_id)
        pair.judge = SftpJudge(
            self.session,
            pair.up,
            pair.down,
            command_id=event.command_id,
            channel=pair.ref,
            ask=self._verdict,
            watcher=pair.sftp,
        )
        self._judged(pair, event, Request(request.name, request.data, slot), slot)

    def _judged(
        self, pair: Pair, event: Event, request: Request, slot: ReplySlot | None
    ) -> None:
        """
        Pass C{request} once the chain allows C{event}; a refusal ends
        the channel with the reason on stderr and exit status 1.
        """
        held = Pending()

        def decided(verdict: Verdict) -> None:
            items: list[Item]
            if isinstance(verdict, Deny):
                self._refuse_command(pair, verdict, slot)
                items = [Close()]
            elif (
                request.name == "exec"
                and isinstance(verdict, Rewrite)
                and isinstance(verdict.event, CommandReceived)
            ):
                rest = c.command(verdict.event.command)
                items = [Request(request.name, rest, request.slot)]
            else:
                items = [request]
            held.items = items
            pair.up.pump()

        pair.up.push(held)
        verdict = self._verdict(event, decided)
        if not isinstance(verdict, Hold):
            decided(verdict)

    def _refuse_command(
        self, pair: Pair, verdict: Deny, slot: ReplySlot | None
    ) -> None:
        pair.sftp = None
        pair.judge = None
        self._answer(slot, True)
        text = _errors.command_refused(verdict.reason, self.session.id)
        pair.down.push(Data(text, c.EXTENDED_DATA_STDERR))
        pair.down.push(Request("exit-status", c.exit_status(1)))
        pair.down.push(Eof())
        pair.down.push(Close())

    def _on_pty(
        self, pair: Pair, request: c.ChannelRequest, slot: ReplySlot | None
    ) -> None:
        pty = c.parse_pty(request.data)
        if not self.permissions.pty:
            self._log.warn(
                "Session {session_id}: refused a terminal "
                "(the certificate has no permit-pty)",
                session_id=self.session.id,
            )
            self._notice("pty.refused", pty.term)
            self._answer(slot, False)
            return
        self.session.observe(
            PtyRequested(
                session_id=self.session.id,
                protocol="ssh",
                channel=pair.ref,
                term=pty.term,
                columns=pty.columns,
                rows=pty.rows,
            )
        )
        if self._casts is not None and pair.cast is None:
            pair.cast = self._casts(pair.ref, pty)
            if pair.cast is not None:
                self._notice("asciicast", Path(pair.cast.path).name)
            if pair.cast is not None and pair.cast.keyboard:
                self._notice("asciicast.keyboard", Path(pair.cast.path).name)
        pair.up.push(Request(request.name, request.data, slot))

    def _on_env(
        self, pair: Pair, request: c.ChannelRequest, slot: ReplySlot | None
    ) -> None:
        name, _ = c.parse_env(request.data)
        if self.settings.env_allowed(name):
            pair.up.push(Request(request.name, request.data, slot))
            return
        self._notice("env.dropped", name)
        self._answer(slot, False)

    # -- channel requests from the target ---------------------------------------

    def _upstream_request(self, payload: bytes) -> None:
        request = c.parse_channel_request(payload)
        pair = self._upstream_pair(request.recipient)
        slot = pair.upstream.expect_reply() if request.want_reply else None
        name = request.name
        if name == "exit-status":
            self._on_exit(pair, c.parse_exit_status(request.data), None)
            pair.down.push(Request(name, request.data, slot))
        elif name == "exit-signal":
            self._on_exit(pair, None, c.parse_exit_signal(request.data))
            pair.down.push(Request(name, request.data, slot))
        elif name in _PASSED_FROM_TARGET:
            pair.down.push(Request(name, request.data, slot))
        else:
            # keepalive@openssh.com (sshd's ClientAliveInterval) and
            # anything else: answered here, as OpenSSH's client does.
            self._answer(slot, False)

    def _on_exit(
        self, pair: Pair, status: int | None, signal: c.ExitSignal | None
    ) -> None:
        self.session.observe(
            ExitStatus(
                session_id=self.session.id,
                protocol="ssh",
                command_id=pair.command_id,
                channel=pair.ref,
                status=status,
                signal=signal.signal if signal else "",
                core_dumped=signal.core_dumped if signal else False,
            )
        )


def _with_channel(event: ForwardRequested, channel: str) -> ForwardRequested:
    return ForwardRequested(
        session_id=event.session_id,
        protocol=event.protocol,
        at=event.at,
        forward_id=event.forward_id,
        channel=channel,
        host=event.host,
        port=event.port,
        originator=event.originator,
        originator_port=event.originator_port,
    )


_CLIENT_HANDLERS: dict[int, _Handler] = {
    c.MSG_GLOBAL_REQUEST: Relay._client_global,
    c.MSG_REQUEST_SUCCESS: Relay._ignore,
    c.MSG_REQUEST_FAILURE: Relay._ignore,
    c.MSG_CHANNEL_OPEN: Relay._client_open,
    c.MSG_CHANNEL_OPEN_CONFIRMATION: Relay._client_open_answer,
    c.MSG_CHANNEL_OPEN_FAILURE: Relay._client_open_answer,
    c.MSG_CHANNEL_WINDOW_ADJUST: Relay._client_window,
    c.MSG_CHANNEL_DATA: Relay._client_data,
    c.MSG_CHANNEL_EXTENDED_DATA: Relay._client_extended,
    c.MSG_CHANNEL_EOF: Relay._client_eof,
    c.MSG_CHANNEL_CLOSE: Relay._client_close,
    c.MSG_CHANNEL_REQUEST: Relay._client_request,
    c.MSG_CHANNEL_SUCCESS: Relay._client_success,
    c.MSG_CHANNEL_FAILURE: Relay._client_failure,
}

_UPSTREAM_HANDLERS: dict[int, _Handler] = {
    c.MSG_GLOBAL_REQUEST: Relay._upstream_global,
    c.MSG_REQUEST_SUCCESS: Relay._ignore,
    c.MSG_REQUEST_FAILURE: Relay._ignore,
    c.MSG_CHANNEL_OPEN: Relay._upstream_open,
    c.MSG_CHANNEL_OPEN_CONFIRMATION: Relay._upstream_confirmed,
    c.MSG_CHANNEL_OPEN_FAILURE: Relay._upstream_open_failed,
    c.MSG_CHANNEL_WINDOW_ADJUST: Relay._upstream_window,
    c.MSG_CHANNEL_DATA: Relay._upstream_data,
    c.MSG_CHANNEL_EXTENDED_DATA: Relay._upstream_extended,
    c.MSG_CHANNEL_EOF: Relay._upstream_eof,
    c.MSG_CHANNEL_CLOSE: Relay._upstream_close,
    c.MSG_CHANNEL_REQUEST: Relay._upstream_request,
    c.MSG_CHANNEL_SUCCESS: Relay._upstream_success,
    c.MSG_CHANNEL_FAILURE: Relay._upstream_failure,
}


__all__ = ["CastFactory", "Judge", "Pair", "Relay"]
