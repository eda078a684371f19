"""
The public plugin API: everything a protocol plugin may use.

A protocol plugin (built in or third party) imports only this module.  It
ships a dropin declaring a L{ProtocolPluginDeclaration}, implements
L{IProtocolPlugin}, turns its wire traffic into the events below, asks
its L{Session} for verdicts, and renders a L{Deny} in its protocol's own
error form.  See C{docs/plugins.md}.
"""

from __future__ import annotations

import importlib

from attrs import frozen
from twisted.plugin import IPlugin
from zope.interface import implementer

from hoopgate._config import Credential, ListenerConfig, TargetConfig, TLSFiles
from hoopgate._configreader import ConfigError, ConfigReader
from hoopgate._events import (
    Column,
    CommandReceived,
    DiagnosticReceived,
    Event,
    FileOperationRequested,
    ForwardRequested,
    HttpRequestReceived,
    MaskCount,
    Notice,
    Parameter,
    ResultDescribed,
    ResultSample,
    SessionClosed,
    SessionOpened,
    SessionRequested,
    StatementBound,
    StatementCompleted,
    StatementPart,
    StatementReceived,
)
from hoopgate._gateway import refuse_now
from hoopgate._identity import Identity
from hoopgate._interfaces import (
    IAdminResource,
    IGateway,
    IProtocolPlugin,
    IProtocolPluginDeclaration,
    ISessionHandle,
    IStatementClassifier,
)
from hoopgate._secrets import Secret
from hoopgate._session import Session, SessionRefusedError
from hoopgate._tls import client_tls_options, server_tls_options
from hoopgate._verdicts import (
    ALLOW,
    Allow,
    Deny,
    DenyReason,
    Hold,
    Rewrite,
    RowTransformer,
    Verdict,
)


@implementer(IPlugin, IProtocolPluginDeclaration)
@frozen
class ProtocolPluginDeclaration:
    """
    A lazy declaration of a protocol plugin, for a dropin module.

    Attributes:
        name: The protocol's name in configuration.
        description: One line for C{twistd hoopgate --help}.
        module: The dotted module holding the plugin object.
        attribute: The plugin object's name in that module.
    """

    name: str
    description: str
    module: str
    attribute: str = "plugin"

    def load(self) -> IProtocolPlugin:
        module = importlib.import_module(self.module)
        plugin = getattr(module, self.attribute)
        if not IProtocolPlugin.providedBy(plugin):
            raise TypeError(f"{self.module}.{self.attribute} is not a protocol plugin")
        return plugin


__all__ = [
    "ALLOW",
    "Allow",
    "Column",
    "CommandReceived",
    "ConfigError",
    "ConfigReader",
    "Credential",
    "Deny",
    "DenyReason",
    "DiagnosticReceived",
    "Event",
    "FileOperationRequested",
    "ForwardRequested",
    "Hold",
    "HttpRequestReceived",
    "IAdminResource",
    "IGateway",
    "IProtocolPlugin",
    "IProtocolPluginDeclaration",
    "ISessionHandle",
    "IStatementClassifier",
    "Identity",
    "ListenerConfig",
    "MaskCount",
    "Notice",
    "Parameter",
    "ProtocolPluginDeclaration",
    "ResultDescribed",
    "ResultSample",
    "Rewrite",
    "RowTransformer",
    "Secret",
    "Session",
    "SessionClosed",
    "SessionOpened",
    "SessionRefusedError",
    "SessionRequested",
    "StatementBound",
    "StatementCompleted",
    "StatementPart",
    "StatementReceived",
    "TLSFiles",
    "TargetConfig",
    "Verdict",
    "client_tls_options",
    "refuse_now",
    "server_tls_options",
]
