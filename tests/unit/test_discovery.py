"""
Tests for L{hoopgate._discovery}: finding protocol plugins in dropin
folders with Twisted's plugin loader.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

import hoopgate.dropins
from hoopgate._discovery import discover, dropin_path
from hoopgate._interfaces import IProtocolPlugin, IProtocolPluginDeclaration

IMPLEMENTATION = """\
from zope.interface import implementer

from hoopgate.plugin import IProtocolPlugin


@implementer(IProtocolPlugin)
class FakeProtocol:
    name = "fakeproto"

    def read_listener(self, reader):
        return None

    def read_target(self, reader):
        return None

    def make_factory(self, listener, gateway):
        return None


plugin = FakeProtocol()
not_a_plugin = object()
"""


class DiscoveryTestCase(SynchronousTestCase):
    """
    Temporary dropin folders and modules, all undone after each test.
    """

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp(prefix="hoopgate-dropins-")
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        saved_path = list(hoopgate.dropins.__path__)
        self.addCleanup(hoopgate.dropins.__path__.__setitem__, slice(None), saved_path)
        self._made = ("hoopgate.dropins.", "declare_", "fake_impl_", "fakepkg_")
        saved_modules = set(sys.modules)
        self.addCleanup(self.forget_modules, saved_modules)
        sys.path.insert(0, self.root)
        self.addCleanup(sys.path.remove, self.root)
        self.implementation = self.unique("fake_impl")
        Path(self.root, f"{self.implementation}.py").write_text(IMPLEMENTATION)
        self.log = EventLoggingObserver()
        globalLogPublisher.addObserver(self.log)
        self.addCleanup(globalLogPublisher.removeObserver, self.log)

    def forget_modules(self, keep: set[str]) -> None:
        """
        Drop the modules this test made, and only those: forgetting a
        library module would make a second copy of its classes.
        """
        for name in set(sys.modules) - keep:
            if name.startswith(self._made):
                del sys.modules[name]

    def unique(self, stem: str) -> str:
        """
        A module name no other test uses (imports are cached by name).
        """
        return f"{stem}_{uuid.uuid4().hex[:12]}"

    def folder(self, *parts: str) -> str:
        path = os.path.join(self.root, *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def declare(
        self,
        folder: str,
        name: str = "fakeproto",
        description: str = "A fake protocol for tests",
        attribute: str = "plugin",
    ) -> str:
        """
        Write a dropin module declaring a plugin in C{folder}.

        Returns:
            The dropin module's name.
        """
        module = self.unique("declare")
        source = f"""\
            from hoopgate.plugin import ProtocolPluginDeclaration

            declaration = ProtocolPluginDeclaration(
                name={name!r},
                description={description!r},
                module={self.implementation!r},
                attribute={attribute!r},
            )
            """
        Path(folder, f"{module}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return module

    def warnings(self) -> list[str]:
        return [
            str(event["log_format"])
            for event in self.log
            if event.get("log_namespace") == "hoopgate.discovery"
        ]


class FolderTests(DiscoveryTestCase):
    """
    Declarations in extra dropin folders are found by protocol name.
    """

    def test_found(self) -> None:
        """
        A declaration in a dropin folder is found under its protocol name.
        """
        dropins = self.folder("dropins")
        self.declare(dropins)

        found = discover(packages=(), folders=[dropins])

        assert list(found) == ["fakeproto"]
        declaration = found["fakeproto"]
        assert IProtocolPluginDeclaration.providedBy(declaration)
        assert declaration.description == "A fake protocol for tests"

    def test_lazy_load(self) -> None:
        """
        The plugin module is imported only when the declaration is loaded,
        and loading returns the plugin object.
        """
        dropins = self.folder("dropins")
        self.declare(dropins)

        declaration = discover(packages=(), folders=[dropins])["fakeproto"]
        imported_early = self.implementation in sys.modules
        plugin = declaration.load()

        assert not imported_early
        assert IProtocolPlugin.providedBy(plugin)
        assert plugin.name == "fakeproto"
        assert plugin is sys.modules[self.implementation].plugin

    def test_not_a_plugin(self) -> None:
        """
        A declaration naming something that is not a plugin fails to load,
        saying what it named.
        """
        dropins = self.folder("dropins")
        self.declare(dropins, attribute="not_a_plugin")

        declaration = discover(packages=(), folders=[dropins])["fakeproto"]

        with pytest.raises(TypeError) as raised:
            declaration.load()
        assert str(raised.value) == (
            f"{self.implementation}.not_a_plugin is not a protocol plugin"
        )

    def test_empty_folder(self) -> None:
        """
        A folder without declarations finds nothing.
        """
        assert discover(packages=(), folders=[self.folder("empty")]) == {}

    def test_first_declaration_wins(self) -> None:
        """
        A protocol declared in two folders keeps the first folder's, with
        a warning.
        """
        first = self.folder("first")
        second = self.folder("second")
        self.declare(first, description="first")
        self.declare(second, description="second")

        found = discover(packages=(), folders=[first, second])

        assert found["fakeproto"].description == "first"
        assert self.warnings() == [
            "Protocol {protocol} is declared twice; keeping the first"
        ]

    def test_several_protocols(self) -> None:
        """
        Several declarations in one folder are all found.
        """
        dropins = self.folder("dropins")
        self.declare(dropins, name="fakeproto")
        self.declare(dropins, name="otherproto")

        found = discover(packages=(), folders=[dropins])

        assert sorted(found) == ["fakeproto", "otherproto"]

    def test_broken_dropin(self) -> None:
        """
        A dropin that fails to import is logged; the others are found.
        """
        dropins = self.folder("dropins")
        self.declare(dropins)
        Path(dropins, f"{self.unique('broken')}.py").write_text(
            "raise ImportError('broken dropin')\n"
        )
        importlib.invalidate_caches()

        found = discover(packages=(), folders=[dropins])

        assert list(found) == ["fakeproto"]
        # trial's flushLoggedErrors is unannotated (Twisted 26.10).
        errors = self.flushLoggedErrors(ImportError)  # type: ignore[no-untyped-call]
        assert len(errors) == 1


class PackageTests(DiscoveryTestCase):
    """
    Plugin packages are searched through their C{dropins/} folders,
    without importing the packages.
    """

    def package(self, with_dropins: bool = True) -> str:
        """
        A package whose import would fail, so a test notices one.
        """
        name = self.unique("fakepkg")
        Path(self.folder(name), "__init__.py").write_text(
            "raise RuntimeError('the package itself was imported')\n"
        )
        if with_dropins:
            self.declare(self.folder(name, "dropins"))
        importlib.invalidate_caches()
        return name

    def test_package_dropins(self) -> None:
        """
        A package's C{dropins/} declarations are found, and the package
        is never imported.
        """
        package = self.package()

        found = discover(packages=[package])

        assert list(found) == ["fakeproto"]
        assert package not in sys.modules

    def test_path_order(self) -> None:
        """
        The search path lists package folders first, then the extra
        folders as absolute paths.
        """
        package = self.package()

        path = dropin_path([package], ["relative/dropins"])

        assert path == [
            os.path.join(self.root, package, "dropins"),
            os.path.abspath("relative/dropins"),
        ]

    def test_package_without_dropins(self) -> None:
        """
        A package without a C{dropins/} folder, or no package at all, is
        skipped with a warning.
        """
        package = self.package(with_dropins=False)

        path = dropin_path([package, self.unique("missing")], [])

        assert path == []
        assert self.warnings() == [
            "Plugin package {package} has no dropins folder",
            "Plugin package {package} has no dropins folder",
        ]
