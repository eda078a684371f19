"""
Finding protocol plugins with Twisted's plugin loader.

A plugin package ships a C{dropins/} folder of small modules, each holding
an L{IProtocolPluginDeclaration}.  The core never imports plugin code by
name: it points L{hoopgate.dropins} at those folders and lets
C{twisted.plugin.getPlugins} find the declarations.

test-case-name: tests.unit.test_discovery
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable

from twisted.logger import Logger
from twisted.plugin import getPlugins

import hoopgate.dropins
from hoopgate._interfaces import IProtocolPluginDeclaration

DEFAULT_PLUGIN_PACKAGES = ("hoopgate_plugins",)

_log = Logger(namespace="hoopgate.discovery")


def _package_dropins(package: str) -> str | None:
    """
    The C{dropins/} folder of an installed package, found without
    importing the package.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None

    for location in spec.submodule_search_locations:
        folder = os.path.join(location, "dropins")
        if os.path.isdir(folder):
            return folder

    return None


def dropin_path(packages: Iterable[str], folders: Iterable[str]) -> list[str]:
    """
    The folders to search, in order: each package's dropins, then the
    extra folders.
    """
    path = []
    for package in packages:
        folder = _package_dropins(package)
        if folder is None:
            _log.warn("Plugin package {package} has no dropins folder", package=package)
            continue
        path.append(folder)

    path.extend(os.path.abspath(f) for f in folders)
    return path


def discover(
    packages: Iterable[str] = DEFAULT_PLUGIN_PACKAGES,
    folders: Iterable[str] = (),
) -> dict[str, IProtocolPluginDeclaration]:
    """
    Find every protocol plugin declaration, by protocol name.

    A later declaration of a name already found is ignored with a warning,
    so the built-in plugins cannot be replaced by accident.
    """
    hoopgate.dropins.__path__[:] = dropin_path(packages, folders)

    found: dict[str, IProtocolPluginDeclaration] = {}
    for declaration in getPlugins(IProtocolPluginDeclaration, hoopgate.dropins):
        if declaration.name in found:
            _log.warn(
                "Protocol {protocol} is declared twice; keeping the first",
                protocol=declaration.name,
            )
            continue
        found[declaration.name] = declaration

    return found
