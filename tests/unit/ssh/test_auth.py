"""
Login names: C{TARGET} or C{LOGIN@TARGET}, nothing else.
"""

from __future__ import annotations

from hoopgate_plugins.ssh._auth import Login, parse_login


class TestParseLogin:
    def test_target(self) -> None:
        assert parse_login(b"box") == Login("box", "")

    def test_login_at_target(self) -> None:
        assert parse_login(b"deploy@box-2") == Login("box-2", "deploy")

    def test_refused(self) -> None:
        for name in (b"", b"@box", b"root@", b"a b", b"root@box@x", b"\xff", b"-x"):
            assert parse_login(name) is None, name
