"""
Logging in through the gateway: refused tokens, the start-up exchange on
a raw socket (BC05), TLS requirements, and SCRAM channel binding across
the gateway's TLS termination (BC07).

A refused login must be a FATAL with SQLSTATE 28000, a generic message that does not say what exactly
was wrong, and a C{session.refused} line in the recordings that does.

test-case-name: tests.integration.test_postgres_auth
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from joserfc import jwk, jwt

from tests.support.gateway import RunningGateway, lines_of, wait_for
from tests.support.pgwire import (
    GSSENC_REQUEST_CODE,
    SSL_REQUEST_CODE,
    Message,
    WireClient,
    error_fields,
    negotiate_fields,
    password_message,
    special_request,
    startup_message,
)
from tests.support.servers import pg_connect_args

pytestmark = pytest.mark.timeout(120)

AUTH_CLEARTEXT = 3
IDENTITY_MESSAGE = "authentication failed"
ACCESS_MESSAGE = "access denied"
WAIT = 10.0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    value: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    )
    return value


def good_claims(servers: dict[str, str], **changes: Any) -> dict[str, Any]:
    """
    Claims a valid ci-runner token would carry, with C{changes}.
    """
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": servers["OIDC_ISSUER"],
        "sub": "ci-runner",
        "aud": servers["OIDC_AUDIENCE"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    claims.update(changes)
    return claims


def issuer_key(servers: dict[str, str]) -> jwk.RSAKey:
    return jwk.RSAKey.import_key(json.loads(Path(servers["OIDC_KEY_FILE"]).read_text()))


def expired_token(gateway: RunningGateway) -> str:
    return gateway.token(ttl=0)


def wrong_audience_token(gateway: RunningGateway) -> str:
    return gateway.token(aud="https://other.test")


def wrong_issuer_token(gateway: RunningGateway) -> str:
    """
    Signed with the real issuer's key, but naming another issuer.
    """
    servers = gateway.servers
    header = {"alg": "RS256", "typ": "at+jwt", "kid": "test-rs256"}
    claims = good_claims(servers, iss="http://127.0.0.1:9/elsewhere")
    return jwt.encode(header, claims, issuer_key(servers))


def unsigned_token(gateway: RunningGateway) -> str:
    """
    alg none, no signature.
    """
    header = {"alg": "none", "typ": "at+jwt"}
    return f"{b64url_json(header)}.{b64url_json(good_claims(gateway.servers))}."


def hmac_confused_token(gateway: RunningGateway) -> str:
    """
    HS256 with the issuer's public key (PEM) as the shared secret.
    """
    public = issuer_key(gateway.servers).as_pem(private=False)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": "test-rs256"}
    signing_input = f"{b64url_json(header)}.{b64url_json(good_claims(gateway.servers))}"
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def tampered_token(gateway: RunningGateway) -> str:
    """
    A genuine token of mallory with its subject changed to ci-runner,
    the signature kept.
    """
    token = gateway.token(sub="mallory")
    header, _, signature = token.split(".")
    claims = claims_of(token)
    claims["sub"] = "ci-runner"
    return f"{header}.{b64url_json(claims)}.{signature}"


def mallory_token(gateway: RunningGateway) -> str:
    return gateway.token(sub="mallory")


# (case, token maker, recorded reason, words the client must not see)
REFUSALS: list[tuple[str, Callable[[RunningGateway], str], str, tuple[str, ...]]] = [
    ("expired", expired_token, "identity.expired", ("expired",)),
    (
        "wrong_audience",
        wrong_audience_token,
        "identity.audience",
        ("audience", "other.test"),
    ),
    (
        "wrong_issuer",
        wrong_issuer_token,
        "identity.unknown_issuer",
        ("issuer", "elsewhere"),
    ),
    ("unsigned", unsigned_token, "identity.algorithm", ("alg", "none")),
    ("hmac_confused", hmac_confused_token, "identity.algorithm", ("alg", "HS256")),
    ("tampered", tampered_token, "identity.signature", ("signature",)),
    ("no_access_rule", mallory_token, "access.denied", ("mallory", "rule")),
]


def refused_lines(
    gateway: RunningGateway, mark: set[tuple[str, int]], count: int
) -> list[dict[str, Any]]:
    """
    Wait (bounded) for C{count} new session.refused lines and return the
    new lines.
    """

    def enough() -> list[dict[str, Any]] | None:
        lines = gateway.lines_since(mark)
        return lines if len(lines_of(lines, "session.refused")) >= count else None

    found: list[dict[str, Any]] = wait_for(
        enough, WAIT, f"{count} session.refused lines"
    )
    return found


class TestRefusedTokens:
    """
    Tokens that prove nothing, and a subject no rule admits.
    """

    @pytest.mark.parametrize(
        ("make", "reason", "hidden"),
        [pytest.param(m, r, h, id=case) for case, m, r, h in REFUSALS],
    )
    def test_refused(
        self,
        gateway: RunningGateway,
        make: Callable[[RunningGateway], str],
        reason: str,
        hidden: tuple[str, ...],
    ) -> None:
        """
        psycopg gets a FATAL with the generic message; a raw client sees
        SQLSTATE 28000 (for a subject without a rule too, as PostgreSQL
        answers a login no pg_hba line admits); both
        attempts are recorded as session.refused with the precise reason,
        which the client never sees; no session opens.
        """
        token = make(gateway)
        identity = reason.startswith("identity.")
        generic = IDENTITY_MESSAGE if identity else ACCESS_MESSAGE
        mark = gateway.recording_mark()

        with pytest.raises(psycopg.OperationalError) as raised:
            psycopg.connect(**gateway.connect_args(token))
        with WireClient(gateway.pg_port) as raw:
            raw.start_tls(gateway.servers["TLS_CERT"])
            answer = raw.login(token)
            closed = raw.closed_by_peer()
        lines = refused_lines(gateway, mark, 2)

        client_text = str(raised.value)
        assert "FATAL" in client_text
        assert generic in client_text
        assert answer[-1].type == "E", answer
        fields = error_fields(answer[-1])
        assert fields["V"] == "FATAL"
        assert fields["C"] == "28000"
        assert generic in fields["M"]
        assert closed
        refusals = lines_of(lines, "session.refused")
        assert [x["reason"] for x in refusals] == [reason, reason]
        assert lines_of(lines, "session.opened") == []
        for line in refusals:
            assert line["detail"]
            assert line["detail"] not in client_text
            assert line["detail"] not in fields["M"] + fields.get("D", "")
        # The detail names the refused session, for the operator's log.
        references = {f"hoopgate reference {x['session_id']}" for x in refusals}
        assert fields["D"] in references
        assert len(references) == 2
        for word in hidden:
            assert word not in client_text.split("FATAL", 1)[1]
            assert word not in fields["M"] + fields.get("D", "") + fields.get("H", "")
        assert gateway.files_containing(token) == []

    def test_empty_password(self, gateway: RunningGateway) -> None:
        """
        An empty password (libpq refuses to send one, so a raw client
        does) is refused with 28000 and recorded as identity.missing.
        """
        mark = gateway.recording_mark()

        with WireClient(gateway.pg_port) as raw:
            raw.start_tls(gateway.servers["TLS_CERT"])
            answer = raw.login("")
        lines = refused_lines(gateway, mark, 1)

        fields = error_fields(answer[-1])
        assert (answer[0].type, answer[0].auth_code) == ("R", AUTH_CLEARTEXT)
        assert (fields["V"], fields["C"]) == ("FATAL", "28000")
        assert IDENTITY_MESSAGE in fields["M"]
        assert [x["reason"] for x in lines_of(lines, "session.refused")] == [
            "identity.missing"
        ]
        assert lines_of(lines, "session.opened") == []

    def test_good_token_still_works(self, gateway: RunningGateway) -> None:
        """
        Control: a valid ci-runner token minted the same way logs in.
        """
        with psycopg.connect(**gateway.connect_args(gateway.token())) as conn:
            assert conn.execute("select 1").fetchone() == (1,)


class TestListenerWithoutTLS:
    """
    A listener without TLS and without cleartext_without_tls never takes
    a token.
    """

    def test_psql_sslmode_disable_refused(self, gateway: RunningGateway) -> None:
        """
        psql with sslmode=disable (and prefer, which gets N and goes on in
        clear) is refused with a FATAL that speaks of TLS; no session opens.
        """
        token = gateway.token()
        mark = gateway.recording_mark()

        results = [
            gateway.psql(token, "-c", "select 1", sslmode=mode, port=gateway.plain_port)
            for mode in ("disable", "prefer")
        ]
        time.sleep(0.5)  # anything recorded for those attempts is written by now

        for result in results:
            assert result.returncode == 2, result.stdout
            assert "FATAL" in result.stderr
            assert re.search(
                r"(?i)\b(tls|ssl|encrypt)", result.stderr.split("FATAL", 1)[1]
            )
        assert lines_of(gateway.lines_since(mark), "session.opened") == []
        assert gateway.files_containing(token) == []

    def test_refused_before_the_password(self, gateway: RunningGateway) -> None:
        """
        A raw StartupMessage gets a FATAL (28000 or 08P01) at once, never a
        password request: the client never gets to send its token in clear.
        """
        with WireClient(gateway.plain_port) as raw:
            raw.send(startup_message({"user": "ci-runner", "database": "appdb"}))
            answer = raw.read_until("R", "E")
            closed = raw.closed_by_peer()

        assert [m.type for m in answer] == ["E"]
        fields = error_fields(answer[0])
        assert fields["V"] == "FATAL"
        assert fields["C"] in ("28000", "08P01")
        assert closed

    def test_sslmode_require_fails_client_side(self, gateway: RunningGateway) -> None:
        """
        sslmode=require: the listener answers N and libpq gives up itself.
        """
        result = gateway.psql(
            gateway.token(),
            "-c",
            "select 1",
            sslmode="require",
            port=gateway.plain_port,
        )

        assert result.returncode == 2
        assert "server does not support SSL" in result.stderr
        assert "FATAL" not in result.stderr


def _gateway_login(
    gateway: RunningGateway, raw: WireClient, first: list[Message]
) -> list[Message]:
    """
    Finish a login whose start-up was sent: the password request must be
    the last message in C{first}; send a token, read to ReadyForQuery.
    """
    assert first[-1].type == "R", first
    assert first[-1].auth_code == AUTH_CLEARTEXT
    raw.send(password_message(gateway.token()))
    return raw.read_until("Z", "E")


class TestBC05StartupExchange:
    """
    BC05: one-byte answers to SSLRequest and GSSENCRequest, and the
    start-up packets around them, on a raw socket.
    """

    def test_bc05_gssenc_answered_n(self, gateway: RunningGateway) -> None:
        """
        GSSENCRequest gets exactly N (the gateway offers no GSSAPI
        encryption; PostgreSQL built with GSSAPI would say G); the same
        socket goes on to a StartupMessage, a cleartext password request
        and, with a token, ReadyForQuery.
        """
        with WireClient(gateway.pg_port) as raw:
            raw.send(special_request(GSSENC_REQUEST_CODE))
            answer = raw.recv_exact(1)
            raw.send(startup_message({"user": "ci-runner", "database": "appdb"}))
            first = raw.read_until("R", "E")
            rest = _gateway_login(gateway, raw, first)

        assert answer == b"N"
        assert [m.type for m in first] == ["R"]
        assert rest[-1].type == "Z"
        assert ("R", 0) in [(m.type, m.auth_code) for m in rest if m.type == "R"]

    def test_bc05_ssl_request_without_tls_answered_n(
        self, gateway: RunningGateway
    ) -> None:
        """
        SSLRequest on the listener without TLS gets exactly N, and the
        socket stays usable for a StartupMessage (which is then refused,
        since that listener takes no token in clear).
        """
        with WireClient(gateway.plain_port) as raw:
            raw.send(special_request(SSL_REQUEST_CODE))
            answer = raw.recv_exact(1)
            raw.send(startup_message({"user": "ci-runner", "database": "appdb"}))
            after = raw.read_until("R", "E")

        assert answer == b"N"
        assert [m.type for m in after] == ["E"]
        assert error_fields(after[0])["V"] == "FATAL"

    def test_bc05_ssl_request_with_tls_answered_s(
        self, gateway: RunningGateway
    ) -> None:
        """
        SSLRequest on the TLS listener gets S; the handshake verifies the
        gateway's certificate; the login reaches ReadyForQuery.
        """
        with WireClient(gateway.pg_port) as raw:
            raw.start_tls(gateway.servers["TLS_CERT"])
            answer = raw.login(gateway.token())

        assert answer[0].auth_code == AUTH_CLEARTEXT
        assert answer[-1].type == "Z"

    def test_newer_minor_version_negotiated(
        self, gateway: RunningGateway, servers: dict[str, str]
    ) -> None:
        """
        A StartupMessage for protocol 3.2 with a _pq_ option gets
        NegotiateProtocolVersion (3.0 to 3.2, in PostgreSQL's encoding, the
        option named as unrecognised), as PostgreSQL does, then the
        password request; the login completes.
        """
        params = {"user": "app", "database": "appdb", "_pq_.foo": "bar"}
        with WireClient(int(servers["PG_PORT"])) as direct:
            direct.send(startup_message(params, 3, 2))
            direct_first = direct.read_until("R", "E")

        params["user"] = "ci-runner"
        with WireClient(gateway.pg_port) as raw:
            raw.send(startup_message(params, 3, 2))
            first = raw.read_until("R", "E")
            rest = _gateway_login(gateway, raw, first)

        assert [m.type for m in direct_first] == ["v", "R"]
        assert negotiate_fields(direct_first[0]) == (3 << 16, ["_pq_.foo"])
        assert [m.type for m in first] == ["v", "R"]
        version, unrecognised = negotiate_fields(first[0])
        assert version >> 16 == 3
        assert 0 <= version & 0xFFFF <= 2
        assert unrecognised == ["_pq_.foo"]
        assert rest[-1].type == "Z"

    def test_libpq_protocol_3_2(
        self, gateway: RunningGateway, servers: dict[str, str]
    ) -> None:
        """
        libpq 18 (psycopg's) asking for protocol 3.2 logs in through the
        gateway as it does directly (there PostgreSQL 15 downgrades it to
        3.0 with NegotiateProtocolVersion).
        """
        direct_args = pg_connect_args(
            servers, "app", servers["APP_PASSWORD"], max_protocol_version="3.2"
        )
        with psycopg.connect(**direct_args) as conn:
            want = (
                conn.pgconn.full_protocol_version,
                conn.execute("select 1").fetchone(),
            )

        args = gateway.connect_args(gateway.token(), max_protocol_version="3.2")
        with psycopg.connect(**args) as conn:
            got = (
                conn.pgconn.full_protocol_version,
                conn.execute("select 1").fetchone(),
            )

        assert want == (30000, (1,))
        assert got[1] == (1,)
        assert 30000 <= got[0] <= 30002

    def test_replication_refused(self, gateway: RunningGateway) -> None:
        """
        replication=database in the StartupMessage is refused with a
        FATAL (before or after the password), never ReadyForQuery.
        """
        params = {"user": "ci-runner", "database": "appdb", "replication": "database"}
        with WireClient(gateway.pg_port) as raw:
            raw.send(startup_message(params))
            answer = raw.read_until("R", "E")
            if answer and answer[-1].type == "R":
                raw.send(password_message(gateway.token()))
                answer += raw.read_until("Z", "E")
            closed = raw.closed_by_peer()

        types = [m.type for m in answer]
        assert "Z" not in types
        assert types[-1] == "E"
        fields = error_fields(answer[-1])
        assert fields["V"] == "FATAL"
        assert fields["C"]
        assert closed


class TestBC07ChannelBinding:
    """
    BC07: SCRAM channel binding cannot cross the gateway's TLS termination;
    clients must see that client-side, never as a server FATAL.
    """

    def test_bc07_default_channel_binding(self, gateway: RunningGateway) -> None:
        """
        sslmode=require with the default channel_binding (prefer) logs in.
        """
        result = gateway.psql(gateway.token(), "-c", "select 1", sslmode="require")

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "1"

    @pytest.mark.parametrize("sslmode", ["require", "disable"])
    def test_bc07_channel_binding_required(
        self, gateway: RunningGateway, sslmode: str
    ) -> None:
        """
        channel_binding=require either logs in, or libpq refuses on its
        own (its words, no FATAL from the gateway).
        """
        result = gateway.psql(
            gateway.token(),
            "-c",
            "select 1",
            sslmode=sslmode,
            options="channel_binding=require",
        )

        if result.returncode == 0:
            assert sslmode == "require"
            assert result.stdout.strip() == "1"
        else:
            assert result.returncode == 2
            assert "channel binding required" in result.stderr
            assert "FATAL" not in result.stderr
