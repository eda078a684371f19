"""
The contracts between the core, its interceptors and protocol plugins.

test-case-name: tests.unit.test_plugin_api
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from hoopgate._chain import Context
    from hoopgate._config import ListenerConfig
    from hoopgate._configreader import ConfigReader
    from hoopgate._events import Event, SessionRequested, StatementPart
    from hoopgate._identity import Identity
    from hoopgate._notify import Notification
    from hoopgate._session import Session
    from hoopgate._verdicts import Verdict


class IProtocolPluginDeclaration(Interface):
    """
    A dropin's declaration of a protocol plugin, cheap to import.

    Twisted's plugin loader finds these in the dropin folders; the plugin
    module itself is imported only when a configuration uses it.
    """

    name = Attribute("The protocol's name in configuration (C{postgres}).")
    description = Attribute("One line for C{twistd hoopgate --help}.")

    def load() -> IProtocolPlugin:
        """
        Import the plugin module and return its plugin object.
        """


class IProtocolPlugin(Interface):
    """
    A protocol the gateway can relay: its configuration and its listener.

    A plugin whose protocol carries statements should also provide
    L{IStatementClassifier}, so that C{hoopgate policy test} judges text
    exactly as the plugin classifies it on the wire.
    """

    name = Attribute("The protocol's name in configuration.")

    def read_listener(reader: ConfigReader) -> object:
        """
        Validate a listener's protocol-specific keys.

        Args:
            reader: A L{hoopgate.plugin.ConfigReader} over the listener
                mapping; read only the keys the core does not know, then
                leave; the core checks for unknown keys afterwards.

        Returns:
            The plugin's own settings object for the listener.
        """

    def read_target(reader: ConfigReader) -> object:
        """
        Validate a target's protocol-specific keys (as L{read_listener}).

        Returns:
            The plugin's own settings object for the target.
        """

    def make_factory(listener: ListenerConfig, gateway: IGateway) -> object:
        """
        Build the protocol factory that serves one listener.

        Args:
            listener: The L{hoopgate.plugin.ListenerConfig}.
            gateway: The gateway, for sessions and decisions.

        Returns:
            An C{IProtocolFactory}.
        """


class IAdminResource(Interface):
    """
    HTTP resources of a protocol plugin on the gateway's admin listener.

    Optional: a protocol plugin declares it beside L{IProtocolPlugin}
    when it serves requests outside its own protocol (the SSH plugin
    issues certificates).  The core mounts the resource under
    C{/plugins/NAME/} at start; like listeners, it is built once, and a
    reload does not rebuild it.  The admin token does not guard it: the
    resource authenticates its callers itself (L{IGateway.identify}).
    """

    def admin_resource(
        gateway: IGateway, listeners: Sequence[ListenerConfig]
    ) -> object | None:
        """
        Build the resource.

        Args:
            gateway: The gateway.
            listeners: The configuration's listeners of this plugin.

        Returns:
            A C{twisted.web.resource.IResource}, or C{None} when there is
            nothing to serve.
        """


class IStatementClassifier(Interface):
    """
    The plugin's own statement classifier, for tools outside a session.

    Optional: a protocol plugin declares it beside L{IProtocolPlugin}
    when its protocol has statements (SQL).  C{hoopgate policy test}
    calls it; without it, the tool judges each text as one statement of
    effect C{unknown}, as the guardrails do with a C{StatementReceived}
    that has no parts.
    """

    def classify(text: str, user: str | None = None) -> tuple[StatementPart, ...]:
        """
        Classify what a client may send as one query string.

        Args:
            text: The query string.
            user: The account a session would log in to the target as
                (the user of the credential set the access rule picks),
                for what depends on it (PostgreSQL's C{"$user"} in the
                search path); C{None}: no account.

        Returns:
            One L{hoopgate.plugin.StatementPart} per statement it holds,
            in order, judged with a new session's defaults (search path,
            string and encoding settings) for C{user}, exactly as the
            plugin fills C{StatementReceived.parts}.
        """


class ISessionHandle(Interface):
    """
    What the core may ask of a live session's connection.

    Implemented by protocol plugins; the core calls it for limits,
    token expiry, cancels and revocations, from any process's request.
    """

    def terminate(reason: str, message: str) -> None:
        """
        End the session now, telling the client C{message} in its
        protocol's own form.
        """

    def cancel() -> None:
        """
        Cancel what the session is running on the target, if anything,
        and keep the session.
        """


class IGateway(Interface):
    """
    What a protocol plugin may use of the gateway.
    """

    reactor = Attribute("The reactor to schedule and connect with.")

    def open_session(
        request: SessionRequested, handle: ISessionHandle
    ) -> Deferred[Session]:
        """
        Authenticate and authorise a L{hoopgate.plugin.SessionRequested}.

        Returns:
            A C{Deferred} firing with a L{hoopgate.plugin.Session}, or
            failing with L{hoopgate.plugin.SessionRefusedError}.
        """

    def register_cancel_key(session: Session, key: bytes) -> None:
        """
        Let a later cancel request carrying C{key} reach C{session}, from
        any connection to any gateway process sharing the store.
        """

    def cancel(protocol: str, key: bytes) -> Deferred[bool]:
        """
        Cancel the work of the session that handed out cancel C{key}.

        Returns:
            A C{Deferred} firing with whether a session was found.
        """

    def identify(token: str, protocol: str, peer: str = "") -> Deferred[Identity]:
        """
        Prove a caller from its token outside a session (the identity
        stage, as for a session), for a plugin that issues credentials
        of its own; the access policy must let it reach at least one
        target of C{protocol}.

        Returns:
            A C{Deferred} firing with the L{hoopgate.plugin.Identity}, or
            failing with L{hoopgate.plugin.SessionRefusedError}.
        """


class IInterceptor(Interface):
    """
    A step of the chain that decides about events.
    """

    name = Attribute("A short name for logs and records.")
    stage = Attribute(
        "C{identity}, C{guardrails}, C{approval} or C{masking}: where in "
        "the fixed order it runs."
    )
    event_types = Attribute("The event classes it decides about.")

    def decide(event: Event, context: Context) -> Verdict | Deferred[Verdict]:
        """
        Decide about an event.

        Returns:
            A verdict, or a C{Deferred} firing with one.
        """


class IObserver(Interface):
    """
    A step of the chain that sees every decision and changes none.
    """

    def observe(event: Event, verdict: Verdict, context: Context) -> None:
        """
        Note an event and the verdict it got.
        """


class IStore(Interface):
    """
    Shared state: what another gateway process must see.

    Keys are text; values are text; every value may have a time to live.
    Every operation may fail with L{hoopgate._store.StoreUnavailableError}
    when the shared state cannot be reached; callers fail closed.

    Published messages are only a wake-up: a subscriber that was cut off
    loses what was published meanwhile, so whoever waits for a value
    reads it again when L{on_resubscribe} calls back, and now and then.
    """

    description = Attribute("What the store is, for the log at start.")

    def put(key: str, value: str, ttl: float | None = None) -> Deferred[None]:
        """
        Set a value.  Returns a C{Deferred} firing when stored.
        """

    def get(key: str) -> Deferred[str | None]:
        """
        Returns a C{Deferred} firing with the value or C{None}.
        """

    def delete(key: str) -> Deferred[None]:
        """
        Returns a C{Deferred} firing when removed.
        """

    def keys(prefix: str) -> Deferred[list[str]]:
        """
        Returns a C{Deferred} firing with the keys starting with C{prefix}.
        """

    def publish(channel: str, message: str) -> Deferred[int]:
        """
        Wake subscribers of C{channel}.  Returns a C{Deferred}.
        """

    def subscribe(channel: str, callback: Callable[[str], object]) -> None:
        """
        Call C{callback(message)} for each message on C{channel} (a glob
        pattern over channel names).
        """

    def put_if_absent(key: str, value: str, ttl: float | None = None) -> Deferred[bool]:
        """
        Set a value only if the key has none, atomically across every
        process sharing the store.

        Returns:
            A C{Deferred} firing with whether this call set it.
        """

    def increment(key: str, ttl: float | None = None) -> Deferred[int]:
        """
        Add one to a counter atomically (an absent key counts as zero);
        C{ttl} applies when this call creates the counter.

        Returns:
            A C{Deferred} firing with the new count.
        """

    def on_resubscribe(callback: Callable[[], object]) -> None:
        """
        Call C{callback()} each time the subscriptions are in place again
        after the connection to the shared state was lost (messages sent
        meanwhile are gone: read again what you wait for).
        """


class INotifier(Interface):
    """
    Tells approvers that a request waits for them (mail, chat, a log).
    """

    name = Attribute("A short name for logs (C{email}, C{webhook}, C{log}).")

    def notify(notification: Notification) -> Deferred[None]:
        """
        Deliver a notification: its request (literals masked) and one
        link per approver, each for that approver only.

        Returns:
            A C{Deferred} firing once delivered, or failing (logged) when
            it could not be.
        """
