"""
The test servers' environment, as integration tests see it.

C{tests/services.sh start} starts the servers on loopback and writes
C{$HG_RUN/env}; C{make test} sources it before running pytest. Tests reach it
through the C{servers} fixture (C{tests/integration/conftest.py}), built on
L{require_env}, which fails the test when C{HOOPGATE_REQUIRE_SERVERS=1} or
C{CI=true} and the servers are missing, and skips it otherwise.

A new kind of server (MariaDB, Redis, ...) adds its variables to
C{tests/services.sh} (C{write_env}), a tuple here, and a fixture built on
L{require_env} the way C{servers} is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import pytest

__all__ = [
    "APPROVAL_SERVER_VARS",
    "SERVER_VARS",
    "SSH_SERVER_VARS",
    "approval_servers",
    "pg_connect_args",
    "require_env",
    "servers_required",
]

# Written by tests/services.sh into $HG_RUN/env:
SERVER_VARS: tuple[str, ...] = (
    "HG_RUN",  # the run directory: logs, sockets, password files
    "PG_HOST",  # 127.0.0.1
    "PG_PORT",
    "PG_SOCKET_DIR",  # Unix socket directory (local connections are trusted)
    "PG_DATABASE",  # appdb, owned by `app`, holding tests/fixtures/demo.sql
    "PG_SUPERUSER_PASSWORD",  # role postgres
    "APP_PASSWORD",  # role app (SCRAM); also in $HG_RUN/pg/app.pw
    "APP_RO_PASSWORD",  # role app_ro (SCRAM, SELECT on customers only)
    "MD_PASSWORD",  # role mduser (md5 password and md5 pg_hba rule)
    "SSLONLY_PASSWORD",  # role sslonly (hostssl only, refused without TLS)
    "OIDC_ISSUER",  # http://127.0.0.1:PORT, also the discovery base
    "OIDC_AUDIENCE",  # https://hoopgate.test
    "OIDC_KEY_FILE",  # the issuer's private JWK (kid test-rs256), for forging
    "TLS_CERT",  # self-signed, SAN localhost and 127.0.0.1; its own CA
    "TLS_KEY",
)

# The OpenSSH target, also written by tests/services.sh (root logs in with the
# client key only; the gateway holds that key). Fixture: tests.support.ssh.
SSH_SERVER_VARS: tuple[str, ...] = (
    "SSH_HOST",  # 127.0.0.1
    "SSH_PORT",
    "SSH_KEEPALIVE_PORT",  # same sshd; ClientAliveInterval 1, ClientAliveCountMax 2
    "SSH_USER",  # root
    "SSH_CLIENT_KEY",  # the private key authorized on the target (ed25519)
    "SSH_HOST_KEY_PUB",  # the target's host public key
    "SSH_KNOWN_HOSTS",  # [127.0.0.1]:PORT entries for both ports
)

# Redis, slapd and the SMTP sink, for approvals; also written by
# tests/services.sh. Fixture: approval_servers (below).
APPROVAL_SERVER_VARS: tuple[str, ...] = (
    "REDIS_HOST",  # 127.0.0.1
    "REDIS_PORT",
    "REDIS_PASSWORD",  # requirepass; also in REDIS_PASSWORD_FILE
    "REDIS_PASSWORD_FILE",
    "LDAP_URL",  # ldap://127.0.0.1:PORT (StartTLS offered, certificate TLS_CERT)
    "LDAPS_URL",  # ldaps://127.0.0.1:PORT
    "LDAP_PORT",
    "LDAPS_PORT",
    "LDAP_BASE",  # dc=example,dc=org; entries: tests/ldap/data.ldif
    "LDAP_ADMIN_DN",  # cn=admin,dc=example,dc=org (rootdn)
    "LDAP_ADMIN_PASSWORD",
    "LDAP_ADMIN_PASSWORD_FILE",
    "LDAP_USER_PASSWORD",  # every person's userPassword (alice, bob, ...)
    "LDAP_USER_PASSWORD_FILE",
    "SMTP_HOST",  # 127.0.0.1; the sink offers STARTTLS with TLS_CERT
    "SMTP_PORT",
    "SMTP_MAILDIR",  # each mail a file in SMTP_MAILDIR/new
)


def servers_required() -> bool:
    """
    Whether a missing server must fail the run instead of skipping.
    """
    return (
        os.environ.get("HOOPGATE_REQUIRE_SERVERS") == "1"
        or os.environ.get("CI", "").lower() == "true"
    )


def require_env(names: Iterable[str], what: str) -> dict[str, str]:
    """
    Return the environment variables C{names}, or fail or skip the test.

    Args:
        names: The variables the test needs; C{HG_RUN}, when among them,
            must also name an existing directory.
        what: The servers they describe, for the message.

    Returns:
        A new dict from each name to its value.
    """
    names = tuple(names)
    missing = [n for n in names if not os.environ.get(n)]
    run = os.environ.get("HG_RUN", "")
    if not missing and "HG_RUN" in names and not os.path.isdir(run):
        missing = [f"HG_RUN ({run} does not exist: a stale env file?)"]
    if missing:
        message = (
            f"{what} not available: {', '.join(missing)} unset; start them with "
            "tests/services.sh start and source $HG_RUN/env (make test does both)"
        )
        if servers_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return {n: os.environ[n] for n in names}


def pg_connect_args(
    servers: dict[str, str], user: str, password: str | None, **extra: Any
) -> dict[str, Any]:
    """
    psycopg C{connect} arguments for a direct TCP login to the test
    PostgreSQL, with TLS and full certificate verification.

    C{host=localhost} is the name checked against the certificate, while
    C{hostaddr} pins the connection to 127.0.0.1. C{extra} adds or overrides
    arguments (C{sslmode="disable"}, C{dbname=...}).
    """
    args: dict[str, Any] = {
        "host": "localhost",
        "hostaddr": servers["PG_HOST"],
        "port": int(servers["PG_PORT"]),
        "user": user,
        "dbname": servers["PG_DATABASE"],
        "sslmode": "verify-full",
        "sslrootcert": servers["TLS_CERT"],
        "connect_timeout": 10,
    }
    if password is not None:
        args["password"] = password
    args.update(extra)
    return args


@pytest.fixture(scope="session")
def approval_servers() -> dict[str, str]:
    """
    The test servers of approvals: PostgreSQL and the OIDC issuer (every
    name of C{SERVER_VARS}) plus Redis, slapd and the SMTP sink (every
    name of C{APPROVAL_SERVER_VARS}). Fails or skips the test as
    L{require_env} does when they were not started.
    """
    return require_env(
        SERVER_VARS + APPROVAL_SERVER_VARS,
        "test servers (PostgreSQL, OIDC issuer, Redis, slapd, SMTP sink)",
    )
