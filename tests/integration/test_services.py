"""
The test servers started by C{tests/services.sh} are what the other
integration tests assume: PostgreSQL with TLS, the roles and the demo
fixtures, and an OIDC issuer minting verifiable tokens.

test-case-name: tests.integration.test_services
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from joserfc import errors, jwk, jwt
from stdnum import iban, luhn

from tests.oidc.mint import mint
from tests.support.servers import pg_connect_args

ROOT = Path(__file__).resolve().parents[2]


def fetch_json(url: str) -> Any:
    """
    GET C{url} (the test issuer, on loopback) and decode its JSON body.
    """
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return json.load(response)


def post_form(
    url: str, fields: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """
    POST C{fields} as a form to C{url} (the test issuer, on loopback);
    return the status and the decoded JSON body, for errors too.
    """
    assert url.startswith("http://127.0.0.1:")
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data, headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.load(e)


def decode(servers: dict[str, str], token: str) -> jwt.Token:
    """
    Verify C{token}'s signature against the issuer's published JWKS.
    """
    keys = jwk.KeySet.import_key_set(fetch_json(servers["OIDC_ISSUER"] + "/jwks"))
    return jwt.decode(token, keys, algorithms=["RS256"])


class TestPostgres:
    """
    PostgreSQL: TLS, roles per authentication method, demo fixtures.
    """

    def test_app_login_tls_verify_full(self, servers: dict[str, str]) -> None:
        """
        `app` logs in over TCP with TLS 1.3, the certificate verified
        against TLS_CERT for the name localhost, and owns appdb.
        """
        args = pg_connect_args(servers, "app", servers["APP_PASSWORD"])
        with psycopg.connect(**args) as conn:
            row = conn.execute(
                "SELECT s.ssl, s.version, current_user, d.datdba::regrole::text"
                " FROM pg_stat_ssl s, pg_database d"
                " WHERE s.pid = pg_backend_pid() AND d.datname = current_database()"
            ).fetchone()
            client_side_tls = conn.pgconn.ssl_in_use

        assert client_side_tls is True
        assert row == (True, "TLSv1.3", "app", "app")

    def test_wrong_password_refused(self, servers: dict[str, str]) -> None:
        """
        Host connections need the right password (scram-sha-256).
        """
        args = pg_connect_args(servers, "app", "not-the-password")
        with pytest.raises(psycopg.OperationalError, match="password authentication"):
            psycopg.connect(**args)

    def test_role_logins(self, servers: dict[str, str]) -> None:
        """
        mduser authenticates with md5, trusty without a password, sslonly
        over TLS; each session reports the role it logged in as.
        """
        logins = [
            ("mduser", servers["MD_PASSWORD"], {}),
            ("trusty", None, {}),
            ("sslonly", servers["SSLONLY_PASSWORD"], {}),
            ("app_ro", servers["APP_RO_PASSWORD"], {"sslmode": "disable"}),
        ]
        seen = []
        for user, password, extra in logins:
            args = pg_connect_args(servers, user, password, **extra)
            with psycopg.connect(**args) as conn:
                seen.append(conn.execute("SELECT current_user").fetchone())

        assert seen == [("mduser",), ("trusty",), ("sslonly",), ("app_ro",)]

    def test_password_hashes(self, servers: dict[str, str]) -> None:
        """
        mduser's password is stored as md5, the others' as SCRAM.
        """
        args = pg_connect_args(servers, "postgres", servers["PG_SUPERUSER_PASSWORD"])
        with psycopg.connect(**args) as conn:
            rows = conn.execute(
                "SELECT rolname, split_part(rolpassword, '$', 1)"
                " FROM pg_authid WHERE rolname IN"
                " ('app', 'app_ro', 'mduser', 'sslonly', 'postgres')"
                " ORDER BY rolname"
            ).fetchall()
        kinds = {name: (h[:3] if h.startswith("md5") else h) for name, h in rows}

        assert kinds == {
            "app": "SCRAM-SHA-256",
            "app_ro": "SCRAM-SHA-256",
            "mduser": "md5",
            "postgres": "SCRAM-SHA-256",
            "sslonly": "SCRAM-SHA-256",
        }

    def test_sslonly_refused_without_tls(self, servers: dict[str, str]) -> None:
        """
        sslonly is rejected by pg_hba on a connection without TLS.
        """
        args = pg_connect_args(
            servers, "sslonly", servers["SSLONLY_PASSWORD"], sslmode="disable"
        )
        with pytest.raises(psycopg.OperationalError, match="no encryption"):
            psycopg.connect(**args)

    def test_app_ro_reads_customers_only(self, servers: dict[str, str]) -> None:
        """
        app_ro may SELECT from customers and nothing else.
        """
        args = pg_connect_args(servers, "app_ro", servers["APP_RO_PASSWORD"])
        with psycopg.connect(**args, autocommit=True) as conn:
            count = conn.execute("SELECT count(*) FROM customers").fetchone()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("INSERT INTO canary VALUES (1)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT count(*) FROM canary")

        assert count == (1000,)

    def test_statements_are_logged(self, servers: dict[str, str]) -> None:
        """
        The server logs every statement (log_statement = all).
        """
        args = pg_connect_args(servers, "app", servers["APP_PASSWORD"])
        with psycopg.connect(**args) as conn:
            setting = conn.execute("SHOW log_statement").fetchone()

        assert setting == ("all",)

    def test_customers_fixture(self, servers: dict[str, str]) -> None:
        """
        customers holds 1,000 rows; row 2 has note NULL and raw ff fe 00 41;
        e-mails are unique and look like first.last@example.com.
        """
        args = pg_connect_args(servers, "app", servers["APP_PASSWORD"])
        with psycopg.connect(**args) as conn:
            count = conn.execute(
                "SELECT count(*), count(DISTINCT email), min(id), max(id)"
                " FROM customers"
            ).fetchone()
            row2 = conn.execute(
                "SELECT note, raw FROM customers WHERE id = 2"
            ).fetchone()
            emails = conn.execute(
                "SELECT count(*) FROM customers"
                " WHERE email !~ '^[a-z]+\\.[a-z]+@example\\.com$'"
            ).fetchone()
            ssns = conn.execute(
                "SELECT count(*) FROM customers"
                " WHERE ssn !~ '^[0-8][0-9]{2}-[0-9]{2}-[0-9]{4}$'"
                " OR ssn LIKE '000-%' OR ssn LIKE '666-%'"
                " OR ssn LIKE '%-00-%' OR ssn LIKE '%-0000'"
            ).fetchone()

        assert count == (1000, 1000, 1, 1000)
        assert row2 == (None, b"\xff\xfe\x00\x41")
        assert emails == (0,)
        assert ssns == (0,)

    def test_card_numbers_pass_luhn(self, servers: dict[str, str]) -> None:
        """
        Every card number has 16 digits and a valid Luhn check digit.
        """
        args = pg_connect_args(servers, "app", servers["APP_PASSWORD"])
        with psycopg.connect(**args) as conn:
            cards = [r[0] for r in conn.execute("SELECT card_number FROM customers")]

        invalid = [c for c in cards if len(c) != 16 or not luhn.is_valid(c)]
        assert len(cards) == 1000
        assert invalid == []
        assert luhn.is_valid(cards[0][:-1] + str((int(cards[0][-1]) + 1) % 10)) is False

    def test_ibans_pass_mod97(self, servers: dict[str, str]) -> None:
        """
        Every IBAN is a DE or GB IBAN with correct mod-97 check digits.
        """
        args = pg_connect_args(servers, "app", servers["APP_PASSWORD"])
        with psycopg.connect(**args) as conn:
            ibans = [r[0] for r in conn.execute("SELECT iban FROM customers")]

        invalid = [i for i in ibans if not iban.is_valid(i)]
        assert len(ibans) == 1000
        assert invalid == []
        assert {i[:2] for i in ibans} == {"DE", "GB"}
        # The same check by hand: rearranged, letters as numbers, mod 97 == 1.
        first = ibans[0][4:] + ibans[0][:4]
        assert int("".join(str(int(ch, 36)) for ch in first)) % 97 == 1

    def test_empty_tables(self, servers: dict[str, str]) -> None:
        """
        canary and t_copy exist and are empty.
        """
        args = pg_connect_args(servers, "app", servers["APP_PASSWORD"])
        with psycopg.connect(**args) as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM canary), (SELECT count(*) FROM t_copy)"
            ).fetchone()

        assert counts == (0, 0)


class TestIssuer:
    """
    The OIDC issuer: discovery, JWKS, minted and client_credentials tokens.
    """

    def test_discovery_names_issuer(self, servers: dict[str, str]) -> None:
        """
        The discovery document names the issuer and its JWKS and token URLs.
        """
        issuer = servers["OIDC_ISSUER"]
        doc = fetch_json(issuer + "/.well-known/openid-configuration")

        assert issuer.startswith("http://127.0.0.1:")
        assert doc["issuer"] == issuer
        assert doc["jwks_uri"] == issuer + "/jwks"
        assert doc["token_endpoint"] == issuer + "/token"

    def test_minted_token(self, servers: dict[str, str]) -> None:
        """
        /mint returns a token signed by the published key, with the
        RFC 9068 header and the requested subject, audience, lifetime and groups.
        """
        before = int(time.time())
        token = mint(servers["OIDC_ISSUER"], "ci-runner", 600, groups="dba,ops")
        decoded = decode(servers, token)
        claims = decoded.claims

        assert decoded.header == {"alg": "RS256", "typ": "at+jwt", "kid": "test-rs256"}
        assert claims["iss"] == servers["OIDC_ISSUER"]
        assert claims["sub"] == "ci-runner"
        assert claims["aud"] == servers["OIDC_AUDIENCE"]
        assert claims["groups"] == ["dba", "ops"]
        assert before <= claims["iat"] == claims["nbf"] <= before + 5
        assert claims["exp"] == claims["iat"] + 600
        assert len(claims["jti"]) == 32
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": servers["OIDC_ISSUER"]},
            aud={"essential": True, "value": servers["OIDC_AUDIENCE"]},
        ).validate(claims)

    def test_mint_negative_ttl_is_expired(self, servers: dict[str, str]) -> None:
        """
        /mint with ttl=-10 gives a token whose exp is in the past, beyond
        a 30 s leeway; validation rejects it as expired.
        """
        token = mint(servers["OIDC_ISSUER"], "ci-runner", -10)
        claims = decode(servers, token).claims

        assert claims["exp"] < time.time() - 30
        with pytest.raises(errors.ExpiredTokenError):
            jwt.JWTClaimsRegistry(leeway=30).validate(claims)

    def test_mint_cli(self, servers: dict[str, str]) -> None:
        """
        tests/oidc/mint.py prints one token for the given subject and audience.
        """
        out = subprocess.run(
            [
                sys.executable,
                str(ROOT / "tests/oidc/mint.py"),
                "--issuer",
                servers["OIDC_ISSUER"],
                "--sub",
                "alice",
                "--ttl",
                "60",
                "--aud",
                "https://ssh.hoopgate.test",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        claims = decode(servers, out.strip()).claims

        assert out.count("\n") == 1
        assert (claims["sub"], claims["aud"]) == ("alice", "https://ssh.hoopgate.test")
        assert "groups" not in claims

    def test_client_credentials(self, servers: dict[str, str]) -> None:
        """
        /token grants svc-ci a token with the asked scope; a wrong secret
        gets 401 invalid_client.
        """
        url = servers["OIDC_ISSUER"] + "/token"
        basic = {"Authorization": "Basic c3ZjLWNpOnN2Yy1jaS1zZWNyZXQ="}
        code, body = post_form(
            url, {"grant_type": "client_credentials", "scope": "db:read"}, basic
        )
        claims = decode(servers, body["access_token"]).claims
        wrong = {
            "grant_type": "client_credentials",
            "client_id": "svc-ci",
            "client_secret": "not-the-secret",
        }
        refused = post_form(url, wrong)

        assert (code, body["token_type"], body["scope"]) == (200, "Bearer", "db:read")
        assert (claims["sub"], claims["client_id"], claims["scope"]) == (
            "svc-ci",
            "svc-ci",
            "db:read",
        )
        assert refused == (401, {"error": "invalid_client"})

    def test_key_file_forges_valid_tokens(self, servers: dict[str, str]) -> None:
        """
        OIDC_KEY_FILE is the issuer's private key: a token signed with it
        verifies against the published JWKS (same kid), and the file is
        readable by its owner only.
        """
        path = Path(servers["OIDC_KEY_FILE"])
        key = jwk.RSAKey.import_key(json.loads(path.read_text()))
        forged = jwt.encode(
            {"alg": "RS256", "typ": "at+jwt", "kid": "test-rs256"},
            {"iss": servers["OIDC_ISSUER"], "sub": "mallory", "exp": 4102444800},
            key,
        )

        assert path.stat().st_mode & 0o777 == 0o600
        assert key.kid == "test-rs256"
        assert decode(servers, forged).claims["sub"] == "mallory"
