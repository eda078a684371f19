"""
Plugins' resources on the admin listener (L{hoopgate._admin.plugin_resources})
and the admin listener's TLS setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.web import resource
from zope.interface import implementer

from hoopgate._admin import plugin_resources
from hoopgate._config import ListenerConfig, TLSFiles, parse_config
from hoopgate._configreader import ConfigError, ConfigReader
from hoopgate._interfaces import IAdminResource, IGateway, IProtocolPlugin


@implementer(IProtocolPlugin)
class Plain:
    """
    A plugin with nothing for the admin listener.
    """

    name = "plain"

    def read_listener(self, reader: ConfigReader) -> None:
        return None

    def read_target(self, reader: ConfigReader) -> None:
        return None

    def make_factory(self, listener: ListenerConfig, gateway: IGateway) -> object:
        raise NotImplementedError("nothing is served")


@implementer(IProtocolPlugin, IAdminResource)
class Serving(Plain):
    """
    A plugin serving a resource; notes the listeners it was given.
    """

    name = "serving"

    def __init__(self, serve: bool = True) -> None:
        self.serve = serve
        self.given: list[tuple[str, ...]] = []

    def admin_resource(self, gateway: IGateway, listeners: Any) -> object | None:
        self.given.append(tuple(x.name for x in listeners))
        return resource.Resource() if self.serve else None


class Config:
    def __init__(self, plugins: dict[str, object], listeners: list[str]) -> None:
        self.plugins = plugins
        self.listeners = [
            ListenerConfig(name, protocol, "tcp:0", None, False)
            for name, protocol in (x.split("=") for x in listeners)
        ]


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config


class TestPluginResources:
    def test_mounted_by_name(self) -> None:
        """
        Each plugin providing L{IAdminResource} gets C{/plugins/NAME/},
        built with its own listeners only.
        """
        serving = Serving()
        config = Config(
            {"plain": Plain(), "serving": serving},
            ["a=serving", "b=plain", "c=serving"],
        )

        mount = plugin_resources(Gateway(config))  # type: ignore[arg-type]

        assert sorted(mount.listStaticNames()) == [b"serving"]
        assert serving.given == [("a", "c")]

    def test_nothing_to_serve(self) -> None:
        config = Config({"serving": Serving(serve=False)}, [])

        mount = plugin_resources(Gateway(config))  # type: ignore[arg-type]

        assert mount.listStaticNames() == []


CONFIG = """\
gateway:
  admin:
    listen: "tcp:0:interface=127.0.0.1"
    tls:
      certificate: {certificate}
      key: {key}
identity:
  issuers: []
policy:
  version: 1
  access: []
"""


class TestAdminTLS:
    def test_read(self, tmp_path: Path) -> None:
        certificate, key = tmp_path / "c.pem", tmp_path / "k.pem"
        certificate.write_text("c")
        key.write_text("k")

        config = parse_config(
            CONFIG.format(certificate=certificate, key=key), plugins={}
        )

        assert config.gateway.admin_tls == TLSFiles(str(certificate), str(key))

    def test_missing_file(self, tmp_path: Path) -> None:
        certificate = tmp_path / "c.pem"
        certificate.write_text("c")
        text = CONFIG.format(certificate=certificate, key=tmp_path / "none")

        with pytest.raises(ConfigError) as caught:
            parse_config(text, plugins={})
        assert "gateway.admin.tls.key (line 6)" in str(caught.value)
