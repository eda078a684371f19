"""
Sans-IO SCRAM-SHA-256 client for the gateway's own login to PostgreSQL.

Implements RFC 5802 with the SHA-256 hash of RFC 7677, without channel
binding (the GS2 header is always `n,,`). The client only turns messages
into messages; the adapter carries them in SASLInitialResponse and
SASLResponse and reads the server's in AuthenticationSASLContinue and
AuthenticationSASLFinal.

The password is prepared the way PostgreSQL prepares it (see `saslprep`),
so the gateway derives the same key as the verifier the server stored.
The PBKDF2 derivation is the cost of every upstream login, so its results
are kept in a small bounded cache keyed by password, salt and iterations.

test-case-name: tests.unit.postgres.test_scram
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from enum import Enum, auto

MECHANISM = "SCRAM-SHA-256"
"""The SASL mechanism name this client implements."""

MIN_ITERATIONS = 1
"""The fewest PBKDF2 iterations accepted (PostgreSQL allows any)."""

MAX_ITERATIONS = 10_000_000
"""The most PBKDF2 iterations accepted, so a server cannot stall us."""

_GS2_HEADER = "n,,"
_CHANNEL_BINDING = base64.b64encode(_GS2_HEADER.encode("ascii")).decode()
_NONCE_BYTES = 18
_MAX_ITERATION_DIGITS = len(str(MAX_ITERATIONS))


class ScramError(Exception):
    """
    The SCRAM exchange failed: a malformed or dishonest server message,
    a server-reported error, or a call out of order.

    Attributes:
        message: A short description, safe to log; never key material.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Step(Enum):
    """
    Where a `ScramClient` is in the exchange.
    """

    START = auto()
    SENT_FIRST = auto()
    SENT_FINAL = auto()
    DONE = auto()
    FAILED = auto()


class ScramClient:
    """
    One SCRAM-SHA-256 exchange, from the client's side.

    Call `first_message`, then `handle_server_first` with the server's
    first message, then `verify_server_final` with its final message.
    Any failure leaves the client unusable.
    """

    def __init__(
        self,
        username: str,
        password: str | bytes,
        *,
        nonce: str | None = None,
    ) -> None:
        """
        Args:
            username: Sent in the client-first message; PostgreSQL
                ignores it (it takes the user from the startup packet),
                so an empty string is usual.
            password: The password, prepared with `saslprep`.
            nonce: A fixed client nonce, for tests only; a random one
                from `secrets` otherwise.
        """
        if nonce is None:
            nonce = secrets.token_urlsafe(_NONCE_BYTES)

        if not _is_printable(nonce):
            raise ValueError("a SCRAM nonce is printable ASCII without ','")

        self._password = _prepare(password)
        self._client_nonce = nonce
        self._first_bare = f"n={_escape(username)},r={nonce}"
        self._server_signature = b""
        self._step = _Step.START

    def first_message(self) -> bytes:
        """
        Make the client-first message.

        Returns:
            The data for SASLInitialResponse.
        """
        self._advance(_Step.START, _Step.SENT_FIRST)
        return (_GS2_HEADER + self._first_bare).encode("utf-8")

    def handle_server_first(self, data: bytes) -> bytes:
        """
        Check the server-first message and make the client-final one.

        Args:
            data: The data of AuthenticationSASLContinue.

        Returns:
            The data for SASLResponse.

        Raises:
            ScramError: The message is malformed, its nonce does not
                extend ours, or its iteration count is out of range.
        """
        self._advance(_Step.SENT_FIRST, _Step.SENT_FINAL)
        try:
            return self._client_final(data)
        except ScramError:
            self._step = _Step.FAILED
            raise

    def verify_server_final(self, data: bytes) -> None:
        """
        Check that the server knew the password too.

        Args:
            data: The data of AuthenticationSASLFinal.

        Raises:
            ScramError: The server reported an error, or its signature
                does not match.
        """
        self._advance(_Step.SENT_FINAL, _Step.FAILED)

        value = _server_final_value(_text(data))
        signature = _b64decode(value, "server signature")
        if not hmac.compare_digest(signature, self._server_signature):
            raise ScramError("server signature does not match")

        self._step = _Step.DONE

    def _advance(self, expected: _Step, following: _Step) -> None:
        """
        Move to the next step, refusing calls out of order.
        """
        if self._step is not expected:
            step = self._step.name.lower()
            raise ScramError(f"SCRAM step called out of order ({step})")

        self._step = following

    def _client_final(self, data: bytes) -> bytes:
        """
        Derive the keys and the proof from the server-first message.
        """
        server_first = _text(data)
        nonce, salt, iterations = _parse_server_first(server_first)
        if not nonce.startswith(self._client_nonce) or nonce == (self._client_nonce):
            raise ScramError("server nonce does not extend the client nonce")

        final_bare = f"c={_CHANNEL_BINDING},r={nonce}"
        auth_message = ",".join(
            (self._first_bare, server_first, final_bare),
        ).encode("utf-8")

        salted = _salted_password(self._password, salt, iterations)
        proof = _client_proof(salted, auth_message)
        self._server_signature = _hmac(
            _hmac(salted, b"Server Key"),
            auth_message,
        )

        proof_text = base64.b64encode(proof).decode("ascii")

        return f"{final_bare},p={proof_text}".encode("ascii")


# -- Message parsing -----------------------------------------------------


def _text(data: bytes) -> str:
    """
    Decode a server message.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ScramError("server message is not valid UTF-8") from None


def _parse_server_first(message: str) -> tuple[str, bytes, int]:
    """
    Split `r=...,s=...,i=...` into nonce, salt and iteration count.
    """
    parts = message.split(",")
    if parts[0].startswith("m="):
        raise ScramError("server requires an unsupported extension")

    if len(parts) != 3:
        raise ScramError("malformed server-first message")

    nonce = _attribute(parts[0], "r")
    if not _is_printable(nonce):
        raise ScramError("server nonce holds invalid characters")

    salt = _b64decode(_attribute(parts[1], "s"), "salt")
    if not salt:
        raise ScramError("server sent an empty salt")

    return nonce, salt, _iterations(_attribute(parts[2], "i"))


def _attribute(part: str, name: str) -> str:
    """
    The value of `name=value`, which must be the attribute expected.
    """
    if part[:2] != f"{name}=":
        raise ScramError(f"expected attribute {name!r}")

    return part[2:]


def _iterations(text: str) -> int:
    """
    Parse an iteration count within `MIN_ITERATIONS..MAX_ITERATIONS`.
    """
    if not text.isdigit() or not text.isascii():
        raise ScramError("iteration count is not a number")

    if len(text) > _MAX_ITERATION_DIGITS:
        raise ScramError("iteration count is too large")

    count = int(text)
    if not MIN_ITERATIONS <= count <= MAX_ITERATIONS:
        raise ScramError(f"iteration count {count} is out of range")

    return count


def _server_final_value(message: str) -> str:
    """
    The signature of `v=...`, or a `ScramError` for `e=...`.
    """
    if message.startswith("e="):
        raise ScramError(f"server reported {message[2:]!r}")

    if "," in message:
        raise ScramError("malformed server-final message")

    return _attribute(message, "v")


def _b64decode(text: str, what: str) -> bytes:
    """
    Decode strict base64.
    """
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ScramError(f"{what} is not valid base64") from None


def _is_printable(text: str) -> bool:
    """
    Whether `text` is a valid SCRAM nonce: printable ASCII but ','.
    """
    return bool(text) and all(0x21 <= ord(ch) <= 0x7E and ch != "," for ch in text)


def _escape(username: str) -> str:
    """
    Escape a saslname: `=` as `=3D`, `,` as `=2C`.
    """
    return username.replace("=", "=3D").replace(",", "=2C")


# -- Key derivation ------------------------------------------------------


def _hmac(key: bytes, message: bytes) -> bytes:
    """
    HMAC-SHA-256.
    """
    return hmac.new(key, message, hashlib.sha256).digest()


@functools.lru_cache(maxsize=256)
def _salted_password(password: bytes, salt: bytes, iterations: int) -> bytes:
    """
    PBKDF2-HMAC-SHA-256, cached: this is the cost of each new login.
    """
    return hashlib.pbkdf2_hmac("sha256", password, salt, iterations)


def _client_proof(salted: bytes, auth_message: bytes) -> bytes:
    """
    ClientKey XOR HMAC(H(ClientKey), AuthMessage).
    """
    client_key = _hmac(salted, b"Client Key")
    stored_key = hashlib.sha256(client_key).digest()
    signature = _hmac(stored_key, auth_message)

    return bytes(a ^ b for a, b in zip(client_key, signature, strict=True))


# -- SASLprep ------------------------------------------------------------


def _prepare(password: str | bytes) -> bytes:
    """
    The password bytes to derive keys from, as libpq computes them:
    SASLprep when it succeeds, the raw bytes when it does not.
    """
    if isinstance(password, bytes):
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return password
    else:
        text = password

    prepared = saslprep(text)
    if prepared is None:
        return text.encode("utf-8", "surrogatepass")

    return prepared.encode("utf-8")


def _prohibited(ch: str) -> bool:
    """
    Whether a character is prohibited by RFC 4013 (tables C.1.2-C.9)
    or unassigned in Unicode 3.2 (table A.1).
    """
    return (
        stringprep.in_table_a1(ch)
        or stringprep.in_table_c12(ch)
        or stringprep.in_table_c21_c22(ch)
        or stringprep.in_table_c3(ch)
        or stringprep.in_table_c4(ch)
        or stringprep.in_table_c5(ch)
        or stringprep.in_table_c6(ch)
        or stringprep.in_table_c7(ch)
        or stringprep.in_table_c8(ch)
        or stringprep.in_table_c9(ch)
    )


def _bidi_ok(text: str) -> bool:
    """
    RFC 3454 section 6: right-to-left text has no left-to-right
    character and starts and ends with a right-to-left one.
    """
    if not any(stringprep.in_table_d1(ch) for ch in text):
        return True

    if any(stringprep.in_table_d2(ch) for ch in text):
        return False

    return stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])


def saslprep(password: str) -> str | None:
    """
    Prepare a password with SASLprep (RFC 4013) as PostgreSQL does.

    PostgreSQL differs from the RFC in two ways that decide which key
    its stored verifier holds, and this follows it: a pure ASCII string
    is returned as is (even with control characters), and the prohibited
    and bidirectional checks look at the mapped text before NFKC
    normalisation rather than after.

    Args:
        password: The password.

    Returns:
        The prepared password, or `None` where PostgreSQL gives up (a
        prohibited or unassigned character, bad bidirectional text, an
        empty result), in which case libpq uses the raw bytes.
    """
    if password.isascii():
        return password

    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in password
        if not stringprep.in_table_b1(ch)
    )
    if not mapped:
        return None

    if any(_prohibited(ch) for ch in mapped) or not _bidi_ok(mapped):
        return None

    return unicodedata.normalize("NFKC", mapped)


# -- MD5 -----------------------------------------------------------------


def md5_password(user: str, password: str, salt: bytes) -> str:
    """
    The answer to AuthenticationMD5Password.

    Args:
        user: The role name from the startup packet.
        password: The password.
        salt: The 4-byte salt the server sent.

    Returns:
        `md5` followed by the hex of md5(hex(md5(password + user)) + salt).
    """
    inner = hashlib.md5(  # noqa: S324 (the protocol mandates MD5)
        (password + user).encode("utf-8"),
    ).hexdigest()
    outer = hashlib.md5(  # noqa: S324 (the protocol mandates MD5)
        inner.encode("ascii") + salt,
    ).hexdigest()

    return f"md5{outer}"
