"""
Tests for L{hoopgate._config} and L{hoopgate._configreader}: validation that
names the key and the line, secrets that never show, durations.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from hoopgate._config import Config, ListenerConfig, load_config, parse_config
from hoopgate._configreader import ConfigError, ConfigReader, load_yaml
from hoopgate._interfaces import IGateway, IProtocolPlugin
from hoopgate._secrets import Secret

INLINE_PASSWORD = "inline-pass-1"

BASE = """\
gateway:
  admin:
    listen: tcp:9191:interface=127.0.0.1
  recordings:
    directory: /var/lib/hoopgate/recordings
    on_failure: continue
identity:
  issuers:
    - name: corp
      issuer: https://id.example.test
      audience: https://hoopgate.test
      groups_claim: groups
listeners:
  - name: front
    protocol: fake
    listen: tcp:15432:interface=127.0.0.1
    cleartext_without_tls: true
    flavour: fancy
targets:
  - name: db
    protocol: fake
    host: 127.0.0.1
    port: 5432
    tls:
      mode: require
    credentials:
      - name: rw
        user: app
        password: inline-pass-1
policy:
  access:
    - name: ops
      groups: [ops]
      targets: [db]
      credential: rw
"""


@implementer(IProtocolPlugin)
class FakePlugin:
    """
    A protocol plugin with one key of its own on listeners and targets.
    """

    name = "fake"

    def read_listener(self, reader: ConfigReader) -> str:
        return reader.choice("flavour", ("plain", "fancy"), "plain")

    def read_target(self, reader: ConfigReader) -> str:
        return reader.string("schema", "public")

    def make_factory(self, listener: ListenerConfig, gateway: IGateway) -> object:
        raise NotImplementedError("configuration tests serve nothing")


PLUGINS: dict[str, IProtocolPlugin] = {"fake": FakePlugin()}


def parse(text: str, plugins: dict[str, IProtocolPlugin] | None = None) -> Config:
    return parse_config(text, "test.yaml", PLUGINS if plugins is None else plugins)


def edit(old: str, new: str, text: str = BASE) -> str:
    """
    C{text} with its one occurrence of C{old} replaced by C{new}.
    """
    assert text.count(old) == 1, old
    return text.replace(old, new)


def line(text: str, needle: str) -> int:
    """
    The 1-based number of the line of C{text} holding C{needle}.
    """
    matches = [n for n, row in enumerate(text.splitlines(), 1) if needle in row]
    assert len(matches) == 1, (needle, matches)
    return matches[0]


def temporary_folder(case: SynchronousTestCase) -> str:
    """
    A new folder, removed with its contents after the test.
    """
    folder = tempfile.mkdtemp(prefix="hoopgate-test-")
    case.addCleanup(shutil.rmtree, folder, ignore_errors=True)
    return folder


def refusal(text: str, plugins: dict[str, IProtocolPlugin] | None = None) -> str:
    """
    The message of the L{ConfigError} C{text} is refused with.
    """
    with pytest.raises(ConfigError) as raised:
        parse(text, plugins)
    return str(raised.value)


class ParseTests(SynchronousTestCase):
    """
    A valid configuration is read whole, with defaults where keys are
    absent.
    """

    def test_fake_plugin(self) -> None:
        """
        The fake plugin provides the interface the loader expects.
        """
        assert verifyObject(IProtocolPlugin, FakePlugin())

    def test_full(self) -> None:
        """
        Every section reaches the L{Config}.
        """
        config = parse(BASE)

        assert config.source == "test.yaml"
        assert config.gateway.admin_listen == "tcp:9191:interface=127.0.0.1"
        assert config.gateway.admin_token is None
        assert config.gateway.recordings == "/var/lib/hoopgate/recordings"
        assert config.gateway.on_recording_failure == "continue"
        (issuer,) = config.issuers
        assert issuer.issuer == "https://id.example.test"
        assert issuer.audiences == ("https://hoopgate.test",)
        assert issuer.groups_claim == "groups"
        (listener,) = config.listeners
        assert listener == ListenerConfig(
            name="front",
            protocol="fake",
            listen="tcp:15432:interface=127.0.0.1",
            tls=None,
            cleartext_without_tls=True,
            settings="fancy",
        )
        target = config.targets["db"]
        assert (target.host, target.port, target.tls_mode) == (
            "127.0.0.1",
            5432,
            "require",
        )
        assert target.settings == "public"
        assert target.credentials["rw"].user == "app"
        assert [r.name for r in config.policy.access] == ["ops"]
        assert config.plugins == PLUGINS

    def test_defaults(self) -> None:
        """
        Only targets and policy are needed; the rest has defaults.
        """
        text = BASE[BASE.index("targets:") :]

        config = parse(text)

        assert config.gateway.admin_listen == "tcp:8091:interface=127.0.0.1"
        assert config.gateway.recordings == "var/recordings"
        assert config.gateway.on_recording_failure == "close"
        assert config.gateway.store == "memory"
        assert config.gateway.plugin_packages == ("hoopgate_plugins",)
        assert config.gateway.dropin_dirs == ()
        assert config.issuers == ()
        assert config.listeners == ()
        assert config.targets["db"].tls_mode == "require"

    def test_plugin_packages(self) -> None:
        """
        Plugin packages and dropin folders are read as lists.
        """
        text = edit(
            "  recordings:\n",
            "  plugins:\n"
            "    packages: [hoopgate_plugins, acme_plugins]\n"
            "    dropin_dirs: /opt/hoopgate/dropins\n"
            "  recordings:\n",
        )

        gateway = parse(text).gateway

        assert gateway.plugin_packages == ("hoopgate_plugins", "acme_plugins")
        assert gateway.dropin_dirs == ("/opt/hoopgate/dropins",)

    def test_deny_rule_on_target(self) -> None:
        """
        A deny rule naming a target is valid: it needs no credential set.
        """
        text = BASE + (
            "    - name: not-mallory\n"
            "      effect: deny\n"
            "      subjects: [mallory]\n"
            "      targets: [db]\n"
        )

        config = parse(text)

        assert [r.effect for r in config.policy.access] == ["allow", "deny"]

    def test_listener_tls(self) -> None:
        """
        A listener's TLS files are read; cleartext defaults to refused.
        """
        text = edit(
            "    cleartext_without_tls: true\n",
            "    tls:\n      certificate: /etc/hg/cert.pem\n      key: /etc/hg/key.pem\n",
        )

        (listener,) = parse(text).listeners

        assert listener.tls is not None
        assert (listener.tls.certificate, listener.tls.key) == (
            "/etc/hg/cert.pem",
            "/etc/hg/key.pem",
        )
        assert listener.cleartext_without_tls is False

    def test_load_config(self) -> None:
        """
        L{load_config} reads a file and names it as the source.
        """
        path = Path(temporary_folder(self), "hoopgate.yaml")
        path.write_text(BASE, encoding="utf-8")

        config = load_config(str(path), plugins=PLUGINS)

        assert config.source == str(path)
        assert list(config.targets) == ["db"]

    def test_load_missing_file(self) -> None:
        """
        A missing file is a L{ConfigError} naming it.
        """
        with pytest.raises(ConfigError) as raised:
            load_config("/nonexistent/hoopgate.yaml", plugins=PLUGINS)

        assert str(raised.value) == (
            "/nonexistent/hoopgate.yaml: No such file or directory"
        )


class ErrorTests(SynchronousTestCase):
    """
    Every mistake is refused with the key's path and line.
    """

    def test_wrong_type(self) -> None:
        """
        A value of the wrong type is refused at its key.
        """
        text = edit("    port: 5432\n", "    port: five\n")

        assert refusal(text) == (
            f"targets[0].port (line {line(text, 'port: five')}): must be a whole number"
        )

    def test_out_of_range(self) -> None:
        """
        A number outside its range is refused with the range.
        """
        text = edit("    port: 5432\n", "    port: 70000\n")

        assert refusal(text) == (
            f"targets[0].port (line {line(text, 'port: 70000')}): "
            "must be between 1 and 65535"
        )

    def test_cleartext_off_loopback(self) -> None:
        """
        Tokens without TLS are refused on a listener that is not bound to
        a loopback address.
        """
        for listen in ("tcp:15432", "tcp:15432:interface=0.0.0.0"):
            text = edit(
                "    listen: tcp:15432:interface=127.0.0.1\n",
                f"    listen: {listen}\n",
            )

            assert refusal(text) == (
                "listeners[0].cleartext_without_tls "
                f"(line {line(text, 'cleartext_without_tls')}): is allowed only "
                "on a listener bound to a loopback interface "
                "(tcp:PORT:interface=127.0.0.1)"
            )

    def test_cleartext_on_ipv6_loopback(self) -> None:
        """
        The IPv6 loopback address, escaped as endpoint strings need, counts
        as loopback.
        """
        text = edit(
            "    listen: tcp:15432:interface=127.0.0.1\n",
            "    listen: 'tcp:15432:interface=\\:\\:1'\n",
        )

        assert parse(text).listeners[0].cleartext_without_tls is True

    def test_missing_key(self) -> None:
        """
        A missing required key is reported at the mapping that lacks it.
        """
        text = edit("    host: 127.0.0.1\n", "")

        assert refusal(text) == (
            f"targets[0].host (line {line(text, '- name: db')}): is required"
        )

    def test_missing_policy(self) -> None:
        """
        The policy section is required.
        """
        text = BASE[: BASE.index("policy:")]

        assert refusal(text) == "policy (line 1): is required"

    def test_unknown_top_key(self) -> None:
        """
        A misspelt section is refused, not ignored.
        """
        text = "gatway: {}\n" + BASE

        assert refusal(text) == (
            "gatway (line 1): is not a known key (known: gateway, identity, "
            "listeners, policy, targets)"
        )

    def test_unknown_nested_key(self) -> None:
        """
        A misspelt key deep inside a section is refused with its path.
        """
        text = edit("    on_failure: continue\n", "    on_fail: continue\n")

        assert refusal(text) == (
            f"gateway.recordings.on_fail (line {line(text, 'on_fail:')}): "
            "is not a known key (known: directory, max_text, on_failure)"
        )

    def test_unknown_credential_key(self) -> None:
        """
        An unknown key in a list item names the item's index.
        """
        text = edit(
            "        password: inline-pass-1\n", "        pasword: inline-pass-1\n"
        )

        message = refusal(text)

        assert message == (
            f"targets[0].credentials[0].pasword (line {line(text, 'pasword')}): "
            "is not a known key (known: name, password, private_key, user)"
        )

    def test_unknown_plugin_key(self) -> None:
        """
        Keys neither the core nor the plugin reads are refused.
        """
        text = edit("    flavour: fancy\n", "    flavor: fancy\n")

        assert refusal(text) == (
            f"listeners[0].flavor (line {line(text, 'flavor:')}): is not a known key "
            "(known: cleartext_without_tls, flavour, listen, name, protocol, tls)"
        )

    def test_plugin_error(self) -> None:
        """
        A plugin's own checks are reported like the core's.
        """
        text = edit("    flavour: fancy\n", "    flavour: spicy\n")

        assert refusal(text) == (
            f"listeners[0].flavour (line {line(text, 'spicy')}): "
            "must be one of plain, fancy"
        )

    def test_unknown_protocol(self) -> None:
        """
        A protocol no plugin serves is refused, listing what was found.
        """
        text = edit("    protocol: fake\n    host", "    protocol: mysql\n    host")

        assert refusal(text) == (
            f"targets[0].protocol (line {line(text, 'mysql')}): "
            "no plugin serves 'mysql' (found: fake)"
        )

    def test_no_plugins(self) -> None:
        """
        With no plugins at all, the message says none were found.
        """
        message = refusal(BASE, plugins={})

        assert message == (
            f"listeners[0].protocol (line {line(BASE, 'name: front') + 1}): "
            "no plugin serves 'fake' (found: none)"
        )

    def test_verify_full_needs_ca(self) -> None:
        """
        Verifying a target's certificate needs a CA file.
        """
        text = edit("      mode: require\n", "      mode: verify-full\n")

        assert refusal(text) == (
            f"targets[0].tls.ca (line {line(text, 'verify-full')}): "
            "is required with mode verify-full"
        )

    def test_no_credentials(self) -> None:
        """
        A target needs at least one credential set.
        """
        start = BASE.index("    credentials:")
        text = BASE[:start] + BASE[BASE.index("policy:") :]

        assert refusal(text) == (
            f"targets[0].credentials (line {line(text, '- name: db')}): "
            "at least one credential set is required"
        )

    def test_rule_names_unknown_target(self) -> None:
        """
        An access rule may only name configured targets.
        """
        text = edit("      targets: [db]\n", "      targets: [db, warehouse]\n")

        assert refusal(text) == (
            f"policy (line {line(text, 'policy:')}): "
            "access rule 'ops' names unknown target 'warehouse'"
        )

    def test_rule_names_unknown_credential(self) -> None:
        """
        An allow rule's credential set must exist on each of its targets.
        """
        text = edit("      credential: rw\n", "      credential: admin\n")

        assert refusal(text) == (
            f"policy (line {line(text, 'policy:')}): "
            "access rule 'ops': target 'db' has no credential set 'admin'"
        )

    def test_duplicate_target(self) -> None:
        """
        Two targets of one name are refused.
        """
        target = BASE[BASE.index("  - name: db") : BASE.index("policy:")]
        text = edit(target, target + target)

        assert refusal(text) == (
            f"targets (line {text.splitlines().index('targets:') + 1}): "
            "target 'db' is defined twice"
        )

    def test_duplicate_key(self) -> None:
        """
        A key given twice in one mapping is refused at the second.
        """
        text = edit("    port: 5432\n", "    port: 5432\n    port: 5433\n")

        assert refusal(text) == f"port (line {line(text, '5433')}): duplicate key"

    def test_not_yaml(self) -> None:
        """
        Text that is not YAML is refused with the file and line.
        """
        text = edit("    port: 5432\n", "    port: [5432\n")

        # The parser notices the unclosed list on the line after it.
        assert refusal(text) == (
            f"test.yaml (line {line(text, '[5432') + 1}): "
            "expected ',' or ']', but got ':'"
        )

    def test_top_not_mapping(self) -> None:
        """
        The top of the file must be a mapping.
        """
        assert refusal("- a\n- b\n") == "test.yaml: the top level must be a mapping"
        assert refusal("") == "test.yaml: the top level must be a mapping"


class SecretTests(SynchronousTestCase):
    """
    Secrets come inline, from the environment or from a file, and never
    show in C{repr} or C{str}.
    """

    def password(self, value: str) -> Secret:
        """
        The password of target C{db}'s C{rw} set, written as C{value}.
        """
        text = edit("        password: inline-pass-1\n", f"        password: {value}\n")
        secret = parse(text).targets["db"].credentials["rw"].password
        assert secret is not None
        return secret

    def folder(self) -> str:
        return temporary_folder(self)

    def environment(self, value: str) -> str:
        """
        A fresh environment variable holding C{value}, removed after the
        test.
        """
        name = f"HG_TEST_SECRET_{secrets.token_hex(4).upper()}"
        os.environ[name] = value
        self.addCleanup(os.environ.pop, name, None)
        return name

    def assert_hidden(self, value: str, *holders: Any) -> None:
        for holder in holders:
            assert value not in repr(holder)
            assert value not in str(holder)

    def test_inline(self) -> None:
        """
        An inline secret's value is revealed only on request.
        """
        config = parse(BASE)
        credential = config.targets["db"].credentials["rw"]
        secret = credential.password

        assert secret is not None
        assert secret.reveal() == INLINE_PASSWORD
        assert secret.source == "inline"
        assert str(secret) == "<secret from inline>"
        assert repr(secret) == "Secret(source='inline')"
        self.assert_hidden(INLINE_PASSWORD, secret, credential, config)

    def test_env(self) -> None:
        """
        C{{env: NAME}} reads the variable; its name is the source.
        """
        name = self.environment("env-pass-2")

        secret = self.password(f"{{env: {name}}}")

        assert secret.reveal() == "env-pass-2"
        assert secret.source == f"env:{name}"
        self.assert_hidden("env-pass-2", secret)

    def test_file(self) -> None:
        """
        C{{file: PATH}} reads the file without its final newline.
        """
        path = Path(self.folder(), "db.secret")
        path.write_text("file-pass-3\n", encoding="utf-8")

        secret = self.password(f"{{file: {path}}}")

        assert secret.reveal() == "file-pass-3"
        assert secret.source == f"file:{path}"
        self.assert_hidden("file-pass-3", secret)

    def test_admin_token(self) -> None:
        """
        The admin token is a secret too.
        """
        name = self.environment("admin-token-4")
        text = edit(
            "    listen: tcp:9191:interface=127.0.0.1\n",
            f"    listen: tcp:9191:interface=127.0.0.1\n    token: {{env: {name}}}\n",
        )

        gateway = parse(text).gateway

        assert gateway.admin_token is not None
        assert gateway.admin_token.reveal() == "admin-token-4"
        self.assert_hidden("admin-token-4", gateway)

    def test_env_missing(self) -> None:
        """
        An unset variable is refused, naming key, line and variable.
        """
        text = edit(
            "        password: inline-pass-1\n",
            "        password: {env: HG_TEST_NOT_SET_ANYWHERE}\n",
        )

        assert refusal(text) == (
            "targets[0].credentials[0].password "
            f"(line {line(text, 'HG_TEST_NOT_SET')}): "
            "environment variable HG_TEST_NOT_SET_ANYWHERE is not set"
        )

    def test_file_missing(self) -> None:
        """
        An unreadable file is refused, naming key, line and file.
        """
        text = edit(
            "        password: inline-pass-1\n",
            "        password: {file: /nonexistent/pw}\n",
        )

        assert refusal(text) == (
            "targets[0].credentials[0].password "
            f"(line {line(text, '/nonexistent/pw')}): "
            "cannot read /nonexistent/pw: No such file or directory"
        )

    def test_wrong_shape(self) -> None:
        """
        Anything but text, C{env} or C{file} is refused, without echoing
        the value.
        """
        for value in ("{vault: kv/db}", "[a, b]", "{env: A, file: B}", "918273645"):
            text = edit(
                "        password: inline-pass-1\n", f"        password: {value}\n"
            )

            message = refusal(text)

            assert message == (
                "targets[0].credentials[0].password "
                f"(line {line(text, 'password:')}): "
                "must be text, {env: NAME} or {file: PATH}"
            )
            assert "918273645" not in message
            assert "kv/db" not in message


class DurationTests(SynchronousTestCase):
    """
    Durations are written with a unit or as plain seconds.
    """

    def duration(self, value: str) -> float:
        return load_yaml(f"limit: {value}\n", "d.yaml").duration("limit")

    def test_units(self) -> None:
        """
        Each unit converts to seconds.
        """
        cases = {
            "250ms": 0.25,
            "90s": 90.0,
            "10m": 600.0,
            "8h": 28800.0,
            "2d": 172800.0,
            "1.5h": 5400.0,
            "'30'": 30.0,
            "45": 45.0,
            "2.5": 2.5,
            "'20 m'": 1200.0,
        }

        assert {text: self.duration(text) for text in cases} == cases

    def test_default(self) -> None:
        """
        An absent duration takes its default.
        """
        reader = load_yaml("other: 1\n", "d.yaml")

        assert reader.duration("limit", 30.0) == 30.0

    def test_invalid(self) -> None:
        """
        Nonsense, negative and boolean values are refused at their line.
        """
        for value in ("soon", "-5m", "10 minutes", "5w", "true", "[1]"):
            with pytest.raises(ConfigError) as raised:
                self.duration(value)

            assert str(raised.value) == (
                "limit (line 1): must be a duration such as 30s, 10m or 8h"
            ), value

    def test_not_positive(self) -> None:
        """
        A duration must be more than zero.
        """
        for value in ("0s", "0", "-3"):
            with pytest.raises(ConfigError) as raised:
                self.duration(value)

            assert str(raised.value) == "limit (line 1): must be more than zero"

    def test_in_policy(self) -> None:
        """
        Policy durations go through the same reader.
        """
        text = edit(
            "      credential: rw\n", "      credential: rw\n      session_limit: 15m\n"
        )

        (rule,) = parse(text).policy.access

        assert rule.session_limit == 900.0


class ReaderTests(SynchronousTestCase):
    """
    L{ConfigReader}'s other accessors, which plugins use too.
    """

    def test_strings(self) -> None:
        """
        A single text counts as a list of one; empty texts are refused.
        """
        reader = load_yaml("one: a\nmany: [a, b]\nbad: [a, '']\n", "r.yaml")

        assert reader.strings("one") == ("a",)
        assert reader.strings("many") == ("a", "b")
        with pytest.raises(ConfigError, match=r"^bad \(line 3\): must be a list"):
            reader.strings("bad")

    def test_boolean(self) -> None:
        """
        Booleans must be written as such.
        """
        reader = load_yaml("yes_really: true\nquoted: 'true'\n", "r.yaml")

        assert reader.boolean("yes_really") is True
        with pytest.raises(ConfigError, match=r"^quoted \(line 2\): must be true"):
            reader.boolean("quoted")

    def test_done_after_reading(self) -> None:
        """
        L{ConfigReader.done} accepts a mapping whose keys were all read,
        even those read with a default.
        """
        reader = load_yaml("a: 1\nb: x\n", "r.yaml")
        reader.integer("a")
        reader.string("b", "y")

        reader.done()

        assert reader.string("b", "y") == "x"
