"""
The SSH plugin object and its configuration keys.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from hoopgate._config import parse_config
from hoopgate._configreader import load_yaml
from hoopgate.plugin import ConfigError, ConfigReader, IProtocolPlugin, ListenerConfig
from hoopgate_plugins.ssh._keys import load_or_create_host_key
from hoopgate_plugins.ssh._plugin import plugin
from hoopgate_plugins.ssh._server import GatewaySSHFactory
from hoopgate_plugins.ssh._settings import ForwardRule, TargetSettings, login_key
from tests.unit.postgres.test_adapter import FakeGateway


def _reader(text: str) -> ConfigReader:
    return load_yaml(text, "test.yaml")


_CONFIG = """\
gateway: {}
identity:
  issuers: []
listeners: []
policy:
  version: 1
  access: []
"""


def _indent(target: str) -> str:
    lines = target.splitlines()
    return "".join(
        ("  - " if n == 0 else "    ") + line + "\n" for n, line in enumerate(lines)
    )


class TestPlugin:
    @pytest.fixture(autouse=True)
    def _files(self, tmp_path: Path) -> None:
        base = tmp_path
        self.key_path = base / "client_key"
        key, _ = load_or_create_host_key(str(self.key_path))
        self.known_hosts = base / "known_hosts"
        line = key.public().toString("openssh").decode()
        self.known_hosts.write_text(f"[127.0.0.1]:2222 {line}\n")
        self.blob = key.public().blob()
        self.base = base

    def target(self, extra: str = "", port: int = 2222) -> str:
        return f"""\
name: box
protocol: ssh
host: 127.0.0.1
port: {port}
known_hosts: {self.known_hosts}
credentials:
  - name: main
    user: root
    private_key: {{file: {self.key_path}}}
{extra}"""

    def test_provides_interface(self) -> None:
        assert verifyObject(IProtocolPlugin, plugin)

    def test_target(self) -> None:
        reader = _reader(self.target('forward_to: ["127.0.0.1:5432", "db-*:*"]'))

        settings = plugin.read_target(reader)

        assert isinstance(settings, TargetSettings)
        assert settings.host_keys == {self.blob}
        assert settings.forward_to == (
            ForwardRule("127.0.0.1", 5432),
            ForwardRule("db-*", None),
        )
        assert settings.forward_allowed("db-eu", 3306)
        assert not settings.forward_allowed("127.0.0.1", 5433)
        assert settings.env_allowed("LC_ALL")
        assert not settings.env_allowed("LD_PRELOAD")

    def test_no_key_for_port(self) -> None:
        """
        A known-hosts file without the target's C{[host]:port} fails.
        """
        with pytest.raises(ConfigError) as caught:
            plugin.read_target(_reader(self.target(port=22)))
        error = caught.value
        assert "no key for 127.0.0.1" in str(error)

    def test_host_key_required(self) -> None:
        text = self.target().replace(f"known_hosts: {self.known_hosts}\n", "")

        with pytest.raises(ConfigError) as caught:
            plugin.read_target(_reader(text))
        error = caught.value
        assert "fail closed" in str(error)

    def test_credential_without_key(self) -> None:
        """
        An SSH credential set without a private key is refused at load.
        """
        text = self.target().replace(
            f"    private_key: {{file: {self.key_path}}}\n", ""
        )

        with pytest.raises(ConfigError) as caught:
            plugin.read_target(_reader(text))
        error = caught.value
        assert "credentials[0].private_key (line 7)" in str(error)
        assert "needs the key it logs in with" in str(error)

    def test_credential_key_not_a_key(self) -> None:
        """
        A private key that does not parse is refused at load, naming
        where it came from but never its text.
        """
        text = self.target().replace(
            f"{{file: {self.key_path}}}", "not-a-key-but-secret-text"
        )

        with pytest.raises(ConfigError) as caught:
            plugin.read_target(_reader(text))
        error = str(caught.value)
        assert "the key from inline is not a private key" in error
        assert "not-a-key-but-secret-text" not in error

    def test_credential_key_public(self) -> None:
        public = self.base / "client_key.pub"
        text = self.target().replace(f"file: {self.key_path}", f"file: {public}")

        with pytest.raises(ConfigError) as caught:
            plugin.read_target(_reader(text))
        assert "holds a public key, not a private one" in str(caught.value)

    def test_credential_key_inline(self) -> None:
        """
        The core reads C{private_key} into the credential set (here inline
        PEM text); the plugin logs in with that key.
        """
        pem = self.key_path.read_text()
        indented = "".join(f"      {line}\n" for line in pem.splitlines())
        text = self.target().replace(
            f"private_key: {{file: {self.key_path}}}", "private_key: |\n" + indented
        )
        config = parse_config(
            _CONFIG + "targets:\n" + _indent(text), plugins={"ssh": plugin}
        )

        credential = config.targets["box"].credentials["main"]

        assert credential.private_key is not None
        assert credential.private_key.source == "inline"
        assert "BEGIN" not in repr(credential)
        assert login_key(credential).public().blob() == self.blob

    def test_bad_forward(self) -> None:
        with pytest.raises(ConfigError) as caught:
            plugin.read_target(_reader(self.target("forward_to: [nohostport]")))
        error = caught.value
        assert "forward_to" in str(error)

    def test_factory_creates_host_key(self) -> None:
        """
        The listener's host key is created on first start.
        """
        host_key = self.base / "gateway_key"
        listener = ListenerConfig(
            name="ssh",
            protocol="ssh",
            listen="tcp:0:interface=127.0.0.1",
            tls=None,
            cleartext_without_tls=False,
            settings=plugin.read_listener(_reader(f"host_key: {host_key}\n")),
        )

        factory = plugin.make_factory(listener, FakeGateway())  # type: ignore[arg-type]

        assert isinstance(factory, GatewaySSHFactory)
        assert host_key.exists()
