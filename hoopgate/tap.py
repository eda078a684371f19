"""
C{twistd hoopgate}: options and service construction.

test-case-name: tests.unit.test_tap
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.application.service import IService
from twisted.python import usage

from hoopgate._config import load_config
from hoopgate._configreader import ConfigError
from hoopgate._discovery import discover
from hoopgate._service import GatewayService


def _plugin_lines() -> str:
    try:
        found = discover()
    except Exception as e:  # help output must never crash
        return f"  (plugin discovery failed: {e})"
    if not found:
        return "  (none found)"
    return "\n".join(
        f"  {name:<10} {found[name].description}" for name in sorted(found)
    )


class Options(usage.Options):
    """
    Command-line options of C{twistd hoopgate}.
    """

    synopsis = "[options]"
    longdesc = "Run the hoopgate access gateway."
    optParameters: ClassVar[list[list[str]]] = [
        ["config", "c", "etc/hoopgate.yaml", "The configuration file."],
    ]

    def getUsage(self, width: int | None = None) -> str:
        usage_text: str = super().getUsage(width)
        return f"{usage_text}\nProtocol plugins found:\n{_plugin_lines()}\n"

    def postOptions(self) -> None:
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(f"invalid configuration: {e}") from None


def makeService(options: Any) -> IService:
    """
    Build the gateway service from validated options.
    """
    # Imported here: importing the reactor installs it, and twistd must
    # install the one its options ask for first.
    from twisted.internet import reactor  # noqa: PLC0415

    return GatewayService(reactor, options["config"], options["loaded"])
