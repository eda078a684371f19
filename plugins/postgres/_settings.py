"""
The PostgreSQL plugin's own configuration values.

test-case-name: tests.unit.postgres.test_plugin
"""

from __future__ import annotations

from attrs import frozen

from hoopgate.plugin import ListenerConfig, Session
from hoopgate_plugins.postgres._sql import DEFAULT_ALLOWED_FUNCTIONS

# Classifying a statement takes many times its size in memory and time
# (pglast's JSON parse tree loaded into dicts: about 5 times the text for
# one long literal, 60 times for a multi-row INSERT of small values).
# Long statements are classified in a worker process, one at a time
# (_worker.py); this limit bounds what that worker takes.
DEFAULT_MAX_STATEMENT = 8 << 20
"""The default C{max_statement}: 8 MiB, room for bulk INSERTs of a few
MB, well below PostgreSQL's 1 GiB."""


@frozen
class ListenerSettings:
    """
    The PostgreSQL keys of a listener.

    Attributes:
        max_message: The largest client message accepted, in bytes; a
            longer one is a protocol violation that ends the session.
        login_timeout: Seconds a client has from connecting to a ready
            session (start-up, token, the gateway's own login).
        max_statement: The longest statement text accepted, in bytes:
            the length of a Query or Parse message.  A longer one is
            refused with SQLSTATE 54000 (program_limit_exceeded) without
            being buffered, and the session goes on.
    """

    max_message: int
    login_timeout: float = 60.0
    max_statement: int = DEFAULT_MAX_STATEMENT


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
        trusted_functions: Functions of the target's own that the
            operator vouches for (they neither write what policy protects
            nor run SQL it must see), as C{schema.name} or C{schema.*},
            rendered as classifications render names: calling them, and
            triggers or defaults that run them, are not of unknown
            effect.
        allowed_functions: What the classifier lets statements call
            (L{allowed_functions} of the trusted ones).
    """

    database: str
    allowed_options: frozenset[str]
    connect_timeout: float
    hold_in_transaction: float = 30.0
    trusted_functions: frozenset[str] = frozenset()
    allowed_functions: frozenset[str] = DEFAULT_ALLOWED_FUNCTIONS


def allowed_functions(trusted: frozenset[str]) -> frozenset[str]:
    """
    What the classifier may let a statement call: the built-in
    allow-list and the trusted functions, qualified and by name.
    """
    names = {t.rsplit(".", 1)[1] for t in trusted}
    names.discard("*")
    return DEFAULT_ALLOWED_FUNCTIONS | trusted | names


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
