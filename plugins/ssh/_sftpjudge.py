"""
Judging the requests of one SFTP channel: resolve, decide, pass or
answer.

L{SftpJudge} sits between a relayed SFTP channel's pipes and its
L{SftpGate}.  Each request naming paths is held in its place in the
stream; right before it the gateway asks the target's REALPATH for each
path (L{lookups}), so the resolution sees everything the channel did
before.  Once the target answered, the request passes the chain as the
core's C{FileOperationRequested} with the resolved paths: the place it
held gets the request if allowed, and a refusal answers it alone with
SSH_FX_PERMISSION_DENIED.  A path the target cannot resolve fails
closed: the request never reaches it, and the client gets the target's
own status (no such file, permission denied, ...).  Requests on a
handle that its open was not granted are judged on the open's path;
requests the gate refuses by itself are answered at once.

The target still acts on the path as the client sent it, so a change
made between the resolution and the request by something else than
this channel (another channel, a shell, another account) is not seen.

test-case-name: tests.unit.ssh.test_sftpjudge
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from attrs import define
from twisted.logger import Logger

from hoopgate.plugin import (
    Deny,
    Event,
    FileOperationRequested,
    Hold,
    Notice,
    Verdict,
)
from hoopgate_plugins.ssh import _errors
from hoopgate_plugins.ssh._channels import Data, Pending, Pipe
from hoopgate_plugins.ssh._sftp import SftpWatcher
from hoopgate_plugins.ssh._sftpgate import (
    FAILURE,
    PERMISSION_DENIED,
    FileRequest,
    Refused,
    Resolved,
    SftpGate,
    joined,
    lookups,
    shown,
)

#: Asks the chain about an event; a hold calls back once decided.
Ask = Callable[[Event, Callable[[Verdict], None]], Verdict]


class _Session(Protocol):
    """
    What the judge needs of a session (L{hoopgate.plugin.Session}).
    """

    id: str

    def next_id(self) -> str:
        """
        A new id.
        """

    def observe(self, event: Event) -> None:
        """
        Record C{event}.
        """


@define(eq=False)
class _Lookup:
    """
    A request waiting for the target to resolve its paths.

    Attributes:
        request: The request.
        held: Its place in the stream toward the target.
        last: Per path, the component to put back after resolving.
        answers: Per path, the target's answer once it came.
    """

    request: FileRequest
    held: Pending
    last: list[str]
    answers: list[Resolved | None]


# The target acts on the path as sent, so a path swapped for a symbolic
# link by something other than this channel (another session, a shell)
# between the REALPATH and the request is not seen: SFTP has no way to
# open a path without following links.  docs/configuration.md says so
# and asks for target accounts with only the rights they need.
class SftpJudge:
    """
    Resolves, judges and answers the requests of one SFTP channel.

    Args:
        session: Records notices and gives ids.
        up: The pipe toward the target.
        down: The pipe toward the client.
        command_id: The subsystem's id.
        channel: The channel reference.
        ask: Asks the chain (the relay's, which handles holds).
        watcher: Records the operations; told of requests answered on
            the target's behalf.
    """

    _log = Logger()

    def __init__(
        self,
        session: _Session,
        up: Pipe,
        down: Pipe,
        *,
        command_id: str,
        channel: str,
        ask: Ask,
        watcher: SftpWatcher | None = None,
    ) -> None:
        self.gate = SftpGate()
        self._session = session
        self._up = up
        self._down = down
        self._command_id = command_id
        self._channel = channel
        self._ask = ask
        self._watcher = watcher
        self._waiting: dict[int, tuple[_Lookup, int]] = {}

    def from_client(self, chunk: bytes) -> None:
        """
        SFTP bytes the client sent: pass, hold or refuse each request.
        """
        for piece in self.gate.from_client(chunk):
            if isinstance(piece, bytes):
                self._up.push(Data(piece))
            elif isinstance(piece, Refused):
                self._refused(piece)
            else:
                self._resolve(piece)

    def from_target(self, chunk: bytes) -> None:
        """
        SFTP bytes the target sent: pass them, keeping the answers to
        the gateway's own requests.
        """
        for piece in self.gate.from_target(chunk):
            if isinstance(piece, Resolved):
                self._down.uncredited += piece.size
                self._resolved(piece)
            else:
                self._down.push(Data(piece))
        self._down.pump()

    # -- requests the gate refused ----------------------------------------------

    def _refused(self, refused: Refused) -> None:
        self._log.warn(
            "Session {session_id}: refused an SFTP request: {why}",
            session_id=self._session.id,
            why=refused.message,
        )
        self._notice("sftp.refused", refused.message)
        self._up.uncredited += refused.size
        self._answer(refused.request_id, refused.code, f"hoopgate: {refused.message}")
        self._up.pump()

    # -- resolving --------------------------------------------------------------

    def _resolve(self, request: FileRequest) -> None:
        held = Pending()
        wanted = lookups(request)
        if not wanted:
            self._up.push(held)
            self._judge(request, (request.path, request.target_path), held)
            return

        ours = [self.gate.realpath(path) for path, _ in wanted]
        if any(o is None for o in ours):
            self._fail(request, held, FAILURE, "too many requests in flight")
            self._up.push(held)
            return
        lookup = _Lookup(
            request, held, [last for _, last in wanted], [None] * len(ours)
        )
        for index, found in enumerate(ours):
            assert found is not None
            request_id, packet = found
            self._waiting[request_id] = (lookup, index)
            self._up.push(Data(packet, own=True))
        self._up.push(held)

    def _resolved(self, answer: Resolved) -> None:
        entry = self._waiting.pop(answer.request_id, None)
        if entry is None:
            return
        lookup, index = entry
        lookup.answers[index] = answer
        if any(a is None for a in lookup.answers):
            return

        answers = [a for a in lookup.answers if a is not None]
        failed = next((a for a in answers if a.code), None)
        if failed is not None:
            self._unresolved(lookup, failed)
            return
        paths = [
            joined(a.path, last) for a, last in zip(answers, lookup.last, strict=True)
        ]
        if len(paths) == 1:
            paths.append(lookup.request.target_path)
        self._judge(lookup.request, paths, lookup.held)

    def _unresolved(self, lookup: _Lookup, answer: Resolved) -> None:
        request = lookup.request
        self._log.info(
            "Session {session_id}: an SFTP request on {path} was not passed: "
            "the target could not resolve its path (status {code})",
            session_id=self._session.id,
            path=shown(request.path),
            code=answer.code,
        )
        self._notice("sftp.unresolved", shown(request.path))
        if self._watcher is not None:
            self._watcher.not_passed(request.packet, answer.code)
        self._fail(request, lookup.held, answer.code, answer.message)
        self._up.pump()

    # -- judging ----------------------------------------------------------------

    def _judge(self, request: FileRequest, paths: Sequence[str], held: Pending) -> None:
        event = FileOperationRequested(
            session_id=self._session.id,
            protocol="ssh",
            operation_id=self._session.next_id(),
            operations=request.operations,
            path=shown(paths[0]),
            target_path=shown(paths[1]),
            command_id=self._command_id,
            channel=self._channel,
        )

        def decided(verdict: Verdict) -> None:
            why = ""
            if not isinstance(verdict, Deny) and request.opens:
                why = self.gate.granted(request, shown(paths[0]))
            if isinstance(verdict, Deny) or why:
                reason = verdict.reason if isinstance(verdict, Deny) else None
                text = _errors.file_refused(reason, self._session.id)
                if why:
                    text = f"hoopgate: {why}; reference {self._session.id}"
                self._fail(request, held, PERMISSION_DENIED, text)
            else:
                held.items = [Data(request.packet)]
            self._up.pump()

        verdict = self._ask(event, decided)
        if not isinstance(verdict, Hold):
            decided(verdict)

    def _fail(self, request: FileRequest, held: Pending, code: int, text: str) -> None:
        held.items = []
        self._up.uncredited += request.size
        self._answer(request.request_id, code, text)

    def _answer(self, request_id: int, code: int, text: str) -> None:
        answer = self.gate.refuse(request_id, text, code)
        if answer:
            self._down.push(Data(answer, own=True))

    def _notice(self, kind: str, detail: str) -> None:
        self._session.observe(
            Notice(
                session_id=self._session.id,
                protocol="ssh",
                kind=kind,
                detail=detail,
            )
        )


__all__ = ["Ask", "SftpJudge"]
