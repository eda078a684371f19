"""
The PostgreSQL plugin object: its configuration keys and its listener.

test-case-name: tests.unit.postgres.test_plugin
"""

from __future__ import annotations

import re
from typing import Any

from zope.interface import implementer

from hoopgate.plugin import (
    ConfigReader,
    IGateway,
    IProtocolPlugin,
    IStatementClassifier,
    ListenerConfig,
    StatementPart,
    server_tls_options,
)
from hoopgate_plugins.postgres._adapter import ClientFactory
from hoopgate_plugins.postgres._catalog import split_name
from hoopgate_plugins.postgres._settings import (
    DEFAULT_MAX_STATEMENT,
    ListenerSettings,
    TargetSettings,
    allowed_functions,
)
from hoopgate_plugins.postgres._sql import (
    SessionState,
    classify,
    qualified_name,
    quote_name,
)

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def _trusted_function(reader: ConfigReader, text: str) -> str:
    """
    A C{trusted_functions} entry, rendered as classifications render
    names: C{schema.name} or C{schema.*}, unquoted parts in lower case.
    """
    schema, name = split_name(text)
    why = ""
    if not schema or text.count('"') % 2:
        why = "must be schema.name or schema.*"
    else:
        for part in text.replace('""', "").split('"')[::2]:
            if part != part.lower():
                why = (
                    "unquoted names must be in lower case, as PostgreSQL"
                    " folds them; quote a name with capitals"
                )
    if why:
        raise reader.error("trusted_functions", f"{text!r}: {why}")
    if name == "*" and not text.endswith('"*"'):
        return f"{quote_name(schema)}.*"
    return qualified_name(schema, name)


@implementer(IProtocolPlugin, IStatementClassifier)
class PostgresPlugin:
    """
    Relays PostgreSQL sessions.
    """

    name = "postgres"

    def read_listener(self, reader: ConfigReader) -> ListenerSettings:
        max_message = reader.integer("max_message", 1 << 30, low=1 << 16, high=1 << 30)
        max_statement = reader.integer(
            "max_statement",
            min(DEFAULT_MAX_STATEMENT, max_message),
            low=1 << 16,
            high=max_message,
        )

        return ListenerSettings(
            max_message=max_message,
            login_timeout=reader.duration("login_timeout", 60.0),
            max_statement=max_statement,
        )

    def read_target(self, reader: ConfigReader) -> TargetSettings:
        allowed = reader.strings("allowed_options", ())
        for name in allowed:
            if not _SETTING_NAME.match(name):
                raise reader.error("allowed_options", f"{name!r} is not a setting")

        trusted = frozenset(
            _trusted_function(reader, text)
            for text in reader.strings("trusted_functions", ())
        )

        return TargetSettings(
            database=reader.string("database"),
            allowed_options=frozenset(n.lower() for n in allowed),
            connect_timeout=reader.duration("connect_timeout", 10.0),
            hold_in_transaction=reader.duration("hold_in_transaction", 30.0),
            trusted_functions=trusted,
            allowed_functions=allowed_functions(trusted),
        )

    def classify(self, text: str, user: str | None = None) -> tuple[StatementPart, ...]:
        """
        Classify a query string as a session of C{user} with default
        settings would (for C{hoopgate policy test}).
        """
        return tuple(c.to_part() for c in classify(text, SessionState(user=user)))

    def make_factory(self, listener: ListenerConfig, gateway: IGateway) -> Any:
        tls = (
            server_tls_options(listener.tls, (b"postgresql",)) if listener.tls else None
        )

        return ClientFactory(gateway, listener, tls)


plugin = PostgresPlugin()
