"""
The servers approvals run against, as C{tests/services.sh} starts them:
Redis refusing clients without its password, slapd with the test
directory (groups, memberOf, hashed passwords, StartTLS and ldaps with
the run's certificate), and the SMTP sink writing each mail as a file.

test-case-name: tests.integration.test_approvals_services
"""

from __future__ import annotations

import smtplib
import ssl
import subprocess
from pathlib import Path

import pytest
from ldap3 import BASE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPSocketOpenError

from tests.support.servers import approval_servers

__all__ = ["approval_servers"]

pytestmark = pytest.mark.timeout(60)

PEOPLE = "ou=people,dc=example,dc=org"
GROUPS = "ou=groups,dc=example,dc=org"


def redis_cli(servers: dict[str, str], *args: str, auth: bool = True) -> str:
    env = {"REDISCLI_AUTH": servers["REDIS_PASSWORD"]} if auth else {}
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", servers["REDIS_PORT"], *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return done.stdout.strip()


def admin(servers: dict[str, str]) -> Connection:
    server = Server("127.0.0.1", port=int(servers["LDAP_PORT"]), connect_timeout=5)
    return Connection(
        server,
        servers["LDAP_ADMIN_DN"],
        servers["LDAP_ADMIN_PASSWORD"],
        auto_bind=True,
        auto_referrals=False,
    )


class TestRedis:
    """
    Redis answers with its password and refuses without it.
    """

    def test_password_required(self, approval_servers: dict[str, str]) -> None:
        """
        Without AUTH a command is refused; with the password it runs.
        """
        refused = redis_cli(approval_servers, "get", "x", auth=False)
        allowed = redis_cli(approval_servers, "ping")

        assert refused.startswith("NOAUTH")
        assert allowed == "PONG"


class TestDirectory:
    """
    The test directory holds the groups and people tests rely on.
    """

    def test_group_members(self, approval_servers: dict[str, str]) -> None:
        """
        dba-approvers lists alice and bob; the overlay gives them memberOf.
        """
        conn = admin(approval_servers)
        try:
            conn.search(
                PEOPLE,
                f"(memberOf=cn=dba-approvers,{GROUPS})",
                attributes=["uid", "mail"],
            )
            found = sorted((str(e.uid), str(e.mail)) for e in conn.entries)
            conn.search(
                f"cn=ssh-approvers,{GROUPS}",
                "(objectClass=*)",
                BASE,
                attributes=["member"],
            )
            single = [str(m) for m in conn.entries[0].member]
        finally:
            conn.unbind()

        assert found == [("alice", "alice@example.org"), ("bob", "bob@example.org")]
        assert single == [f"uid=carol,{PEOPLE}"]

    def test_user_bind(self, approval_servers: dict[str, str]) -> None:
        """
        A person binds with the shared test password and not with another;
        the password is stored hashed.
        """
        server = Server("127.0.0.1", port=int(approval_servers["LDAP_PORT"]))
        dn = f"uid=ci-runner,{PEOPLE}"
        good = Connection(server, dn, approval_servers["LDAP_USER_PASSWORD"])
        bad = Connection(server, dn, "not-the-password")
        try:
            assert good.bind()
            assert not bad.bind()
        finally:
            good.unbind()
            bad.unbind()

        conn = admin(approval_servers)
        try:
            conn.search(dn, "(objectClass=*)", BASE, attributes=["userPassword"])
            stored = bytes(conn.entries[0].userPassword.value)
        finally:
            conn.unbind()
        assert stored.startswith(b"{SSHA}")

    def test_tls_verified(self, approval_servers: dict[str, str]) -> None:
        """
        StartTLS and ldaps verify against the run's certificate (checked
        here with OpenLDAP's own client), and fail against the system's
        trust store.
        """
        env = {
            "LDAPTLS_CACERT": approval_servers["TLS_CERT"],
            "LDAPTLS_REQCERT": "demand",
        }
        whoami = subprocess.run(
            [
                "ldapwhoami",
                "-x",
                "-ZZ",
                "-H",
                approval_servers["LDAP_URL"],
                "-D",
                f"uid=alice,{PEOPLE}",
                "-y",
                approval_servers["LDAP_USER_PASSWORD_FILE"],
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        untrusted = Tls(validate=ssl.CERT_REQUIRED)
        ldaps = Server(
            "127.0.0.1",
            port=int(approval_servers["LDAPS_PORT"]),
            use_ssl=True,
            tls=untrusted,
            connect_timeout=5,
        )

        assert whoami.stdout.strip() == f"dn:uid=alice,{PEOPLE}", whoami.stderr
        with pytest.raises(LDAPSocketOpenError, match="CERTIFICATE_VERIFY_FAILED"):
            Connection(ldaps).open()


class TestMailSink:
    """
    The SMTP sink offers STARTTLS and writes every message as a file.
    """

    def test_message_file(self, approval_servers: dict[str, str]) -> None:
        """
        A message sent after STARTTLS lands in the maildir's C{new}, with
        its envelope.
        """
        folder = Path(approval_servers["SMTP_MAILDIR"]) / "new"
        before = set(folder.iterdir())
        context = ssl.create_default_context(cafile=approval_servers["TLS_CERT"])

        with smtplib.SMTP(
            "127.0.0.1", int(approval_servers["SMTP_PORT"]), timeout=10
        ) as smtp:
            smtp.starttls(context=context)
            smtp.sendmail(
                "gateway@example.org",
                ["nobody@example.org"],
                "Subject: sink test\r\n\r\nbody line\r\n",
            )

        [new] = set(folder.iterdir()) - before
        text = new.read_text()
        new.unlink()
        assert "X-Sink-To: nobody@example.org" in text
        assert "X-Sink-TLS: yes" in text
        assert "Subject: sink test" in text
        assert text.rstrip().endswith("body line")
