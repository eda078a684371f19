"""
L{hoopgate._ldap.Directory} against the test slapd: group members by
C{member}, C{uniqueMember} and C{memberOf}, nested groups to a bounded
depth, cycles, identities, sign-ins, filter escaping, verified TLS, an
unreachable directory, and every lookup on the directory's own threads.

test-case-name: tests.integration.test_approvals_ldap
"""

from __future__ import annotations

import threading
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from hoopgate._ldap import Directory, DirectorySettings, DirectoryUnavailableError
from hoopgate._secrets import inline_secret
from tests.support.gateway import free_ports
from tests.support.servers import APPROVAL_SERVER_VARS, SERVER_VARS, require_env

PEOPLE = "ou=people,dc=example,dc=org"
GROUPS = "ou=groups,dc=example,dc=org"


def group(name: str) -> str:
    return f"cn={name},{GROUPS}"


def failure_of(deferred: Deferred[Any]) -> Deferred[BaseException]:
    """
    The exception C{deferred} fails with, as a value.
    """

    def succeeded(value: object) -> BaseException:
        raise AssertionError(f"expected a failure, got {value!r}")

    caught: Deferred[BaseException] = deferred.addCallbacks(
        succeeded, lambda f: f.value
    )
    return caught


class DirectoryTests(TestCase):
    """
    The directory as the approvals see it.
    """

    def setUp(self) -> None:
        self.env = require_env(SERVER_VARS + APPROVAL_SERVER_VARS, "slapd")
        self.settings = DirectorySettings(
            url=self.env["LDAP_URL"],
            bind_dn=self.env["LDAP_ADMIN_DN"],
            bind_password=inline_secret(self.env["LDAP_ADMIN_PASSWORD"]),
            people=PEOPLE,
            person_filter="(objectClass=inetOrgPerson)",
            notify_attributes=("mobile",),
            timeout=5.0,
        )

    def directory(self, **changes: Any) -> Directory:
        directory = Directory(reactor, attrs.evolve(self.settings, **changes))
        directory.start()
        self.addCleanup(directory.stop)
        return directory

    @inlineCallbacks
    def test_members(self) -> Any:
        """
        A groupOfNames lists its people with mail and the notification
        attributes they have.
        """
        members = yield self.directory().members([group("dba-approvers")])

        people = sorted((p.login, p.mail, p.attributes) for p in members.values())
        assert people == [
            ("alice", "alice@example.org", (("mobile", "+44 7700 900001"),)),
            ("bob", "bob@example.org", ()),
        ]
        assert set(members) == {f"uid=alice,{PEOPLE}", f"uid=bob,{PEOPLE}"}

    @inlineCallbacks
    def test_unique_members(self) -> Any:
        """
        A groupOfUniqueNames is read through uniqueMember.
        """
        members = yield self.directory().members([group("runner-approvers")])

        assert sorted(p.login for p in members.values()) == ["alice", "ci-runner"]

    @inlineCallbacks
    def test_nested_and_bounded(self) -> Any:
        """
        Nested groups are followed to max_depth and no further.
        """
        deep = yield self.directory().members([group("all-approvers")])
        shallow = yield self.directory(max_depth=0).members([group("all-approvers")])

        assert sorted(p.login for p in deep.values()) == ["alice", "bob", "carol"]
        assert sorted(p.login for p in shallow.values()) == ["carol"]

    @inlineCallbacks
    def test_cycle(self) -> Any:
        """
        Groups that contain each other end the walk where it began.
        """
        members = yield self.directory(max_depth=10).members([group("loop-a")])

        assert [p.login for p in members.values()] == ["bob"]

    @inlineCallbacks
    def test_missing_group(self) -> Any:
        """
        A group that does not exist has nobody in it.
        """
        members = yield self.directory().members([group("no-such-group")])

        assert members == {}

    @inlineCallbacks
    def test_find_identity(self) -> Any:
        """
        An identity is found by its attribute; a filter value is escaped,
        so a wildcard finds nothing.
        """
        directory = self.directory()

        runner = yield directory.find("ci-runner")
        nobody = yield directory.find("nobody")
        star = yield directory.find("*")
        sneaky = yield directory.find("x)(uid=alice")

        assert runner is not None and runner.dn == f"uid=ci-runner,{PEOPLE}"
        assert (nobody, star, sneaky) == (None, None, None)

    @inlineCallbacks
    def test_authenticate(self) -> Any:
        """
        The right password binds as that person; a wrong or empty one, or
        a wildcard login, does not.
        """
        directory = self.directory()
        password = self.env["LDAP_USER_PASSWORD"]

        alice = yield directory.authenticate("alice", password)
        wrong = yield directory.authenticate("alice", password + "x")
        empty = yield directory.authenticate("alice", "")
        star = yield directory.authenticate("*", password)

        assert alice is not None and alice.dn == f"uid=alice,{PEOPLE}"
        assert (wrong, empty, star) == (None, None, None)

    @inlineCallbacks
    def test_own_threads(self) -> Any:
        """
        Lookups run on the directory's pool, not the reactor's.
        """
        directory = self.directory()

        name = yield directory._in_pool(lambda: threading.current_thread().name, "test")

        assert "hoopgate-ldap" in name

    @inlineCallbacks
    def test_start_tls_verified(self) -> Any:
        """
        StartTLS with the run's CA works; without it (the system's trust
        store) the certificate is refused, and nothing is read.
        """
        trusted = self.directory(start_tls=True, ca=self.env["TLS_CERT"])
        untrusted = self.directory(start_tls=True)

        members = yield trusted.members([group("ssh-approvers")])
        refused = yield failure_of(untrusted.members([group("ssh-approvers")]))

        assert [p.login for p in members.values()] == ["carol"]
        assert isinstance(refused, DirectoryUnavailableError)
        assert "CERTIFICATE_VERIFY_FAILED" in str(refused)

    @inlineCallbacks
    def test_ldaps(self) -> Any:
        """
        ldaps:// verifies the certificate and the host name.
        """
        url = self.env["LDAPS_URL"]
        good = self.directory(url=url, ca=self.env["TLS_CERT"])
        wrong_name = self.directory(
            url=url.replace("127.0.0.1", "localhost.localdomain"),
            ca=self.env["TLS_CERT"],
        )

        person = yield good.find("alice")
        refused = yield failure_of(wrong_name.find("alice"))

        assert person is not None
        assert isinstance(refused, DirectoryUnavailableError)

    @inlineCallbacks
    def test_unreachable(self) -> Any:
        """
        A directory nobody listens on is unavailable, not empty.
        """
        [port] = free_ports(1)
        directory = self.directory(url=f"ldap://127.0.0.1:{port}", timeout=2.0)

        refused = yield failure_of(directory.members([group("dba-approvers")]))
        login = yield failure_of(directory.authenticate("alice", "x"))

        assert isinstance(refused, DirectoryUnavailableError)
        assert f"ldap://127.0.0.1:{port}" in str(refused)
        assert isinstance(login, DirectoryUnavailableError)

    @inlineCallbacks
    def test_bad_service_account(self) -> Any:
        """
        A service account that cannot bind makes the directory unavailable.
        """
        directory = self.directory(bind_password=inline_secret("wrong"))

        refused = yield failure_of(directory.members([group("dba-approvers")]))

        assert isinstance(refused, DirectoryUnavailableError)
        assert "refused the service account" in str(refused)
