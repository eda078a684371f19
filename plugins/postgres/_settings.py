"""
The PostgreSQL plugin's own configuration values.

test-case-name: tests.unit.postgres.test_plugin
"""

from __future__ import annotations

from attrs import frozen

from hoopgate.plugin import ListenerConfig, Session


@frozen
class ListenerSettings:
    """
    The PostgreSQL keys of a listener.

    Attributes:
        max_message: The largest client message accepted, in bytes.
        login_timeout: Seconds a client has from connecting to a ready
            session (start-up, token, the gateway's own login).
    """

    max_message: int
    login_timeout: float = 60.0


@frozen
class TargetSettings:
    """
    The PostgreSQL keys of a target.

    Attributes:
        database: The database the gateway logs in to.
        allowed_options: Run-time settings a client may pass in the
            startup C{options} (C{-c search_path=...}); others are
            dropped and the drop is recorded.
        connect_timeout: Seconds to wait for the target's TCP connect.
        hold_in_transaction: The longest a statement may wait for an
            approval inside an open transaction; keep it below the
            target's C{idle_in_transaction_session_timeout}.
    """

    database: str
    allowed_options: frozenset[str]
    connect_timeout: float
    hold_in_transaction: float = 30.0


def listener_settings(listener: ListenerConfig) -> ListenerSettings:
    """
    The PostgreSQL keys of a listener the plugin read.
    """
    settings = listener.settings
    assert isinstance(settings, ListenerSettings)
    return settings


def target_settings(session: Session) -> TargetSettings:
    """
    The PostgreSQL keys of a session's target.
    """
    settings = session.target.settings
    assert isinstance(settings, TargetSettings)
    return settings
