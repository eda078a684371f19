"""
The SSH plugin object and its configuration keys.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from zope.interface.verify import verifyObject

from hoopgate._config import parse_config
from hoopgate._configreader import load_yaml
from hoopgate.plugin import (
    ConfigError,
    ConfigReader,
    IAdminResource,
    IProtocolPlugin,
    ListenerConfig,
)
from hoopgate_plugins.ssh._certs import CertificatePolicy, public_blob
from hoopgate_plugins.ssh._issuer import Certificates
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


def _ca_file(path: Path, mode: int = 0o600) -> Path:
    key = ed25519.Ed25519PrivateKey.generate()
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path.write_bytes(data)
    path.chmod(mode)
    return path


class TestCertificateSettings:
    """
    A listener's C{certificates}: the CA key, trusted CA keys, and what
    issued certificates grant.
    """

    def listener(self, tmp_path: Path, section: str) -> str:
        return f"host_key: {tmp_path / 'host'}\ncertificates:\n{section}"

    def test_defaults(self, tmp_path: Path) -> None:
        ca = _ca_file(tmp_path / "ca")

        settings = plugin.read_listener(
            _reader(self.listener(tmp_path, f"  ca_key: {ca}\n"))
        )

        certificates = settings.certificates
        assert certificates is not None
        assert certificates.ca_key is not None
        assert certificates.trusted == {public_blob(certificates.ca_key)}
        assert certificates.policy == CertificatePolicy(
            validity=600.0, permit_pty=True, permit_port_forwarding=True
        )

    def test_read_twice_equal(self, tmp_path: Path) -> None:
        """
        The same file read again gives equal settings (a reload sees no
        listener change); another CA key gives different ones.
        """
        ca = _ca_file(tmp_path / "ca")
        text = self.listener(tmp_path, f"  ca_key: {ca}\n")

        first = plugin.read_listener(_reader(text))
        again = plugin.read_listener(_reader(text))
        _ca_file(tmp_path / "ca")
        rotated = plugin.read_listener(_reader(text))

        assert first == again
        assert first != rotated

    def test_everything(self, tmp_path: Path) -> None:
        """
        Older CA keys stay trusted beside the signing one (rotation).
        """
        ca = _ca_file(tmp_path / "ca")
        old = ed25519.Ed25519PrivateKey.generate().public_key()
        line = old.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()
        section = (
            f"  ca_key: {ca}\n"
            f'  trusted_ca_keys: ["{line} old-ca"]\n'
            "  validity: 5m\n"
            "  permit_pty: false\n"
            "  permit_port_forwarding: false\n"
            "  source_address: [requester, 10.0.0.0/8]\n"
        )

        settings = plugin.read_listener(_reader(self.listener(tmp_path, section)))

        certificates = settings.certificates
        assert certificates is not None
        assert len(certificates.trusted) == 2
        assert certificates.policy == CertificatePolicy(
            validity=300.0,
            permit_pty=False,
            permit_port_forwarding=False,
            source_address=("requester", "10.0.0.0/8"),
        )

    def test_verify_only(self, tmp_path: Path) -> None:
        old = ed25519.Ed25519PrivateKey.generate().public_key()
        line = old.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()

        settings = plugin.read_listener(
            _reader(self.listener(tmp_path, f'  trusted_ca_keys: ["{line}"]\n'))
        )

        assert settings.certificates is not None
        assert settings.certificates.ca_key is None

    @pytest.mark.parametrize(
        ("section", "error"),
        [
            ("  validity: 10m\n", "need ca_key or trusted_ca_keys"),
            ("  ca_key: {ca}\n  validity: 2d\n", "must be at most 24h"),
            ("  ca_key: {ca}\n  source_address: [nowhere]\n", "not a CIDR block"),
            ("  trusted_ca_keys: [nope]\n", "trusted_ca_keys"),
            ("  ca_key: {missing}\n", "cannot read"),
            ("  ca_key: {open}\n", "readable by its owner only (chmod 600)"),
            ("  ca_key: {junk}\n", "is not an unencrypted private key"),
            ("  ca_key: {ca}\n  permit_x11: true\n", "is not a known key"),
        ],
    )
    def test_refused(self, tmp_path: Path, section: str, error: str) -> None:
        """
        A CA key others may read, or any other mistake, is a
        configuration error naming the key.
        """
        files = {
            "ca": _ca_file(tmp_path / "ca"),
            "open": _ca_file(tmp_path / "open", 0o644),
            "missing": tmp_path / "missing",
            "junk": tmp_path / "junk",
        }
        files["junk"].write_text("junk")
        files["junk"].chmod(0o600)
        text = self.listener(tmp_path, section.format(**files))

        with pytest.raises(ConfigError) as caught:
            plugin.read_listener(_reader(text))
        assert "certificates." in str(caught.value)
        assert error in str(caught.value)


class TestAdminResource:
    def test_provides_interface(self) -> None:
        assert verifyObject(IAdminResource, plugin)

    def test_nothing_without_a_ca(self, tmp_path: Path) -> None:
        listener = ListenerConfig(
            name="ssh",
            protocol="ssh",
            listen="tcp:0",
            tls=None,
            cleartext_without_tls=False,
            settings=plugin.read_listener(_reader(f"host_key: {tmp_path / 'h'}\n")),
        )

        assert plugin.admin_resource(FakeGateway(), [listener]) is None  # type: ignore[arg-type]

    def test_certificates_child(self, tmp_path: Path) -> None:
        ca = _ca_file(tmp_path / "ca")
        text = f"host_key: {tmp_path / 'h'}\ncertificates:\n  ca_key: {ca}\n"
        listener = ListenerConfig(
            name="ssh",
            protocol="ssh",
            listen="tcp:0",
            tls=None,
            cleartext_without_tls=False,
            settings=plugin.read_listener(_reader(text)),
        )

        root = plugin.admin_resource(FakeGateway(), [listener])  # type: ignore[arg-type]

        assert isinstance(root.getStaticEntity(b"certificates"), Certificates)
