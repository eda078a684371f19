"""
The gateway's configuration and policy, loaded and validated at start.

One YAML file holds the gateway settings, trusted issuers, listeners,
targets and policy.  Loading checks every key and names the file, the key
and the line of any mistake; a reload builds a new L{Config} and swaps it
in whole.

Tools that read recordings or judge policy without running the gateway
load it C{offline}: secrets are read only if something reveals them, and
what only a running gateway uses (the shared store's connection, the
approval machinery, the admin listener's TLS files, the plugins' own
listener and target keys) is not read, so a file naming secrets and
files that are gone (a stopped demo's) still serves them.

test-case-name: tests.unit.test_config
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import field, frozen

from hoopgate._approvals import (
    ApprovalSettings,
    check_approvals,
    read_approval_settings,
)
from hoopgate._configreader import ConfigError, ConfigReader, load_yaml
from hoopgate._discovery import DEFAULT_PLUGIN_PACKAGES, discover
from hoopgate._guardrails import check_targets
from hoopgate._interfaces import IProtocolPlugin
from hoopgate._maskrules import check_mask_targets
from hoopgate._oidc import IssuerConfig, validate_algorithms
from hoopgate._policy import (
    AccessRule,
    Policy,
    check_recording_targets,
    read_policy,
)
from hoopgate._recording import DEFAULT_MAX_TEXT
from hoopgate._redisstore import RedisSettings, read_redis_settings
from hoopgate._scope import check_scope_targets
from hoopgate._secrets import Secret


@frozen
class TLSFiles:
    """
    A certificate and its key, as files.

    Attributes:
        certificate: PEM certificate chain file.
        key: PEM private key file.
    """

    certificate: str
    key: str


@frozen
class ListenerConfig:
    """
    One listening socket served by a protocol plugin.

    Attributes:
        name: The listener's name.
        protocol: The plugin serving it.
        listen: A Twisted server endpoint string.
        tls: Certificate and key for TLS toward clients, if any.
        cleartext_without_tls: Accept bearer tokens on an unencrypted
            connection (loopback development only).
        settings: The plugin's own settings (C{None} when loaded
            offline).
    """

    name: str
    protocol: str
    listen: str
    tls: TLSFiles | None
    cleartext_without_tls: bool
    settings: object = None


@frozen
class Credential:
    """
    A credential set the gateway holds for a target.

    Attributes:
        name: The set's name, which access rules refer to.
        user: The account on the target.
        password: Its password, if it uses one.
        private_key: The private key it logs in with, if it uses one
            (SSH): PEM or OpenSSH text, inline, C{{env: NAME}} or
            C{{file: PATH}}.
    """

    name: str
    user: str
    password: Secret | None = None
    private_key: Secret | None = None


@frozen
class TargetConfig:
    """
    A system behind the gateway.

    Attributes:
        name: What clients ask for.
        protocol: The plugin that relays to it.
        host: Its address.
        port: Its port.
        tls_mode: C{disable}, C{prefer}, C{require} or C{verify-full}.
        tls_ca: CA file for C{verify-full}.
        credentials: The credential sets by name.
        settings: The plugin's own settings (C{None} when loaded
            offline).
    """

    name: str
    protocol: str
    host: str
    port: int
    tls_mode: str
    tls_ca: str | None
    credentials: Mapping[str, Credential]
    settings: object = None


@frozen
class GatewaySettings:
    """
    Process-wide settings.

    Attributes:
        admin_listen: Endpoint string of the admin HTTP listener.
        admin_token: Required for admin actions that change state, if set.
        admin_tls: Certificate and key when the admin listener speaks
            HTTPS.
        admin_allowed_hosts: More names (lower case) the admin listener
            answers to in the C{Host} header, beside its own address.
        recordings: Folder for session recordings.
        on_recording_failure: C{close} ends the session when a record
            cannot be written; C{continue} goes on and logs.
        recording_max_text: The most characters of one text (a
            statement, an error, bound parameters) a recording line
            keeps.
        store: C{memory} (one process) or C{redis} (shared).
        plugin_packages: Packages whose C{dropins/} hold plugins.
        dropin_dirs: Extra dropin folders.
        redis: Where the shared state is, with C{store: redis} (C{None}
            when loaded offline).
        approvals: The directory, notifiers and links of approvals
            (C{None} when loaded offline).
    """

    admin_listen: str
    admin_token: Secret | None
    recordings: str
    on_recording_failure: str
    store: str
    plugin_packages: tuple[str, ...]
    dropin_dirs: tuple[str, ...]
    redis: RedisSettings | None = None
    approvals: ApprovalSettings | None = None
    admin_tls: TLSFiles | None = None
    admin_allowed_hosts: tuple[str, ...] = ()
    recording_max_text: int = DEFAULT_MAX_TEXT


@frozen
class Config:
    """
    A whole validated configuration.

    Attributes:
        source: The file it came from.
        gateway: Process-wide settings.
        issuers: Trusted token issuers.
        listeners: Listening sockets.
        targets: Targets by name.
        policy: Who may do what.
        plugins: The loaded protocol plugins by name.
        offline: Whether it was loaded for a tool that runs no gateway
            (see L{load_config}): settings only a running gateway uses
            are missing, and secrets are read when revealed.
    """

    source: str
    gateway: GatewaySettings
    issuers: tuple[IssuerConfig, ...]
    listeners: tuple[ListenerConfig, ...]
    targets: Mapping[str, TargetConfig]
    policy: Policy
    plugins: Mapping[str, IProtocolPlugin] = field(factory=dict)
    offline: bool = False


def _read_gateway(reader: ConfigReader, offline: bool) -> GatewaySettings:
    admin = reader.section("admin")
    recordings = reader.section("recordings")
    store = reader.section("store")
    plugins = reader.section("plugins")
    kind = store.choice("kind", ("memory", "redis"), "memory")
    settings = GatewaySettings(
        admin_listen=admin.string("listen", "tcp:8091:interface=127.0.0.1"),
        admin_token=admin.secret("token") if admin.has("token") else None,
        admin_tls=_read_tls_files(admin, offline) if admin.has("tls") else None,
        admin_allowed_hosts=_read_host_names(admin, "allowed_hosts"),
        recordings=recordings.string("directory", "var/recordings"),
        on_recording_failure=recordings.choice(
            "on_failure", ("close", "continue"), "close"
        ),
        recording_max_text=recordings.integer(
            "max_text", DEFAULT_MAX_TEXT, low=256, high=1 << 30
        ),
        store=kind,
        redis=read_redis_settings(store) if kind == "redis" and not offline else None,
        approvals=_read_approvals(reader, offline),
        plugin_packages=plugins.strings("packages", DEFAULT_PLUGIN_PACKAGES),
        dropin_dirs=plugins.strings("dropin_dirs", ()),
    )
    # Offline, the store's connection keys are left unread.
    checked = (
        (admin, recordings, plugins) if offline else (admin, recordings, store, plugins)
    )
    for section in checked:
        section.done()
    reader.done()
    return settings


def _read_approvals(reader: ConfigReader, offline: bool) -> ApprovalSettings | None:
    if offline:
        # Known, not read: the directory, notifiers and links.
        reader.raw("approvals", None)
        return None
    if not reader.has("approvals"):
        return None
    return read_approval_settings(reader.section("approvals"))


_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[?[0-9a-f:.]+\]?")


def _read_host_names(reader: ConfigReader, key: str) -> tuple[str, ...]:
    names = tuple(n.lower().rstrip(".") for n in reader.strings(key, ()))
    for name in names:
        if not _HOST_NAME.fullmatch(name):
            raise reader.error(key, f"{name!r} is not a host name or address")
    return tuple(n.strip("[]") for n in names)


def _read_tls_files(reader: ConfigReader, offline: bool) -> TLSFiles:
    section = reader.section("tls")
    files = TLSFiles(section.string("certificate"), section.string("key"))
    for key in () if offline else ("certificate", "key"):
        if not Path(section.string(key)).is_file():
            raise section.error(key, f"{section.string(key)} is not a readable file")
    section.done()
    return files


def _read_issuer(reader: ConfigReader) -> IssuerConfig:
    algorithms = reader.strings("algorithms", ("RS256", "ES256"))
    try:
        validate_algorithms(algorithms)
    except ValueError as e:
        raise reader.error("algorithms", str(e)) from None

    groups = reader.raw("groups_claim", None)
    if groups is not None and not isinstance(groups, str):
        raise reader.error("groups_claim", "must be a claim name")

    issuer = IssuerConfig(
        name=reader.string("name"),
        issuer=reader.string("issuer"),
        audiences=reader.strings("audience"),
        algorithms=algorithms,
        subject_claim=reader.string("subject_claim", "sub"),
        groups_claim=groups,
        required_claims=reader.strings("required_claims", ()),
        leeway=reader.duration("leeway", 30.0),
        jwks_uri=reader.raw("jwks_uri", None),
        ca_file=reader.raw("ca_file", None),
    )
    reader.done()
    return issuer


def _plugin(
    reader: ConfigReader, plugins: Mapping[str, IProtocolPlugin]
) -> IProtocolPlugin:
    protocol = reader.string("protocol")
    if protocol not in plugins:
        known = ", ".join(sorted(plugins)) or "none"
        raise reader.error(
            "protocol", f"no plugin serves {protocol!r} (found: {known})"
        )
    return plugins[protocol]


def _read_listener(
    reader: ConfigReader, plugins: Mapping[str, IProtocolPlugin], offline: bool
) -> ListenerConfig:
    plugin = _plugin(reader, plugins)
    tls = None
    if reader.has("tls"):
        section = reader.section("tls")
        tls = TLSFiles(section.string("certificate"), section.string("key"))
        section.done()

    listener = ListenerConfig(
        name=reader.string("name"),
        protocol=plugin.name,
        listen=reader.string("listen"),
        tls=tls,
        cleartext_without_tls=reader.boolean("cleartext_without_tls", False),
        settings=None if offline else plugin.read_listener(reader),
    )
    if listener.cleartext_without_tls and not _is_loopback(listener.listen):
        raise reader.error(
            "cleartext_without_tls",
            "is allowed only on a listener bound to a loopback interface "
            "(tcp:PORT:interface=127.0.0.1)",
        )
    if not offline:
        # Offline, the plugin's keys are left unread.
        reader.done()
    return listener


def _is_loopback(endpoint: str) -> bool:
    """
    Whether a Twisted server endpoint string listens on loopback only.
    """
    parts = [p.replace("\\:", ":") for p in re.split(r"(?<!\\):", endpoint)]
    options = dict(part.split("=", 1) for part in parts[1:] if "=" in part)
    interface = options.get("interface", "")
    return interface == "::1" or interface.startswith("127.")


def _read_credential(reader: ConfigReader) -> Credential:
    credential = Credential(
        name=reader.string("name"),
        user=reader.string("user"),
        password=reader.secret("password") if reader.has("password") else None,
        private_key=reader.secret("private_key") if reader.has("private_key") else None,
    )
    reader.done()
    return credential


def _read_target(
    reader: ConfigReader, plugins: Mapping[str, IProtocolPlugin], offline: bool
) -> TargetConfig:
    plugin = _plugin(reader, plugins)
    tls = reader.section("tls")
    credentials = {
        c.name: c for c in map(_read_credential, reader.sections("credentials"))
    }
    if not credentials:
        raise reader.error("credentials", "at least one credential set is required")

    target = TargetConfig(
        name=reader.string("name"),
        protocol=plugin.name,
        host=reader.string("host"),
        port=reader.integer("port", low=1, high=65535),
        tls_mode=tls.choice(
            "mode", ("disable", "prefer", "require", "verify-full"), "prefer"
        ),
        tls_ca=tls.raw("ca", None),
        credentials=credentials,
        settings=None if offline else plugin.read_target(reader),
    )
    if target.tls_mode == "verify-full" and not target.tls_ca:
        raise tls.error("ca", "is required with mode verify-full")
    tls.done()
    if not offline:
        # Offline, the plugin's keys are left unread.
        reader.done()
    return target


def _load_plugins(settings: GatewaySettings) -> dict[str, IProtocolPlugin]:
    declarations = discover(settings.plugin_packages, settings.dropin_dirs)
    return {name: d.load() for name, d in declarations.items()}


def _unique(items: list[Any], what: str, reader: ConfigReader, key: str) -> None:
    names = [i.name for i in items]
    for name in names:
        if names.count(name) > 1:
            raise reader.error(key, f"{what} {name!r} is defined twice")


def _check_access(
    reader: ConfigReader,
    rules: tuple[AccessRule, ...],
    targets: Mapping[str, TargetConfig],
) -> None:
    for rule in rules:
        names = targets if "*" in rule.targets else rule.targets
        for name in names:
            if name not in targets:
                raise reader.error(
                    "policy", f"access rule {rule.name!r} names unknown target {name!r}"
                )
            if rule.effect == "deny":
                continue
            if rule.credential not in targets[name].credentials:
                raise reader.error(
                    "policy",
                    f"access rule {rule.name!r}: target {name!r} has no "
                    f"credential set {rule.credential!r}",
                )


def parse_config(
    text: str,
    source: str = "<config>",
    plugins: Mapping[str, IProtocolPlugin] | None = None,
    *,
    offline: bool = False,
) -> Config:
    """
    Validate a configuration text.

    Args:
        text: The YAML.
        source: Its file name, for messages.
        plugins: Protocol plugins to use; discovered from the configured
            packages when not given.
        offline: Read it for a tool that runs no gateway (see
            L{load_config}).

    Raises:
        ConfigError: Anything is wrong; the message names key and line.
    """
    top = load_yaml(text, source, lazy_secrets=offline)
    gateway = _read_gateway(top.section("gateway"), offline)
    if plugins is None:
        plugins = _load_plugins(gateway)

    identity = top.section("identity")
    issuers = tuple(_read_issuer(r) for r in identity.sections("issuers"))
    identity.done()

    listeners = [_read_listener(r, plugins, offline) for r in top.sections("listeners")]
    _unique(listeners, "listener", top, "listeners")
    target_list = [_read_target(r, plugins, offline) for r in top.sections("targets")]
    _unique(target_list, "target", top, "targets")
    targets = {t.name: t for t in target_list}

    policy = read_policy(top.section("policy", required=True))
    _check_access(top, policy.access, targets)
    check_targets(policy.guardrails, targets)
    if offline:
        check_scope_targets(policy.approvals, targets, "approval rule")
    else:
        check_approvals(policy.approvals, targets, gateway.approvals, gateway.store)
    check_mask_targets(policy.masking.rules, targets)
    check_recording_targets(policy.recording, targets)
    top.done()

    return Config(
        source=source,
        gateway=gateway,
        issuers=issuers,
        listeners=tuple(listeners),
        targets=targets,
        policy=policy,
        plugins=dict(plugins),
        offline=offline,
    )


def load_config(
    path: str,
    plugins: Mapping[str, IProtocolPlugin] | None = None,
    *,
    offline: bool = False,
) -> Config:
    """
    Read and validate the configuration file at C{path}.

    Args:
        path: The file.
        plugins: Protocol plugins to use; discovered from the configured
            packages when not given.
        offline: Read it for a tool that reads recordings or judges
            policy and runs no gateway: secrets are read only when
            revealed (a target's credentials never are); the store's
            connection, C{gateway.approvals}, the admin listener's TLS
            files and the plugins' own listener and target keys are not
            read (their settings are C{None}).  Everything else is
            checked as for the gateway.

    Raises:
        ConfigError: The file cannot be read or is not valid; the message
            names the file first.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}", path) from None

    try:
        return parse_config(text, path, plugins, offline=offline)
    except ConfigError as e:
        raise e.in_file(path) from None
