"""
Verify OIDC access tokens (signed JWTs) against trusted issuers.

Every protocol hands the credential it was given (a PostgreSQL password, an
SSH password, an HTTP bearer token) to one L{OIDCVerifier}. It picks the
issuer by the token's unverified C{iss}, finds the signing key through OIDC
discovery and the issuer's JWKS (cached, shared by concurrent callers and
refetched at a bounded rate), checks the signature against an explicit list
of asymmetric algorithms, then the claims, and yields an L{Identity}.

A token is usable until its C{exp} plus the issuer's C{leeway}, measured on
the verifier's clock: it is accepted before that instant and refused from
it on, and the identity's C{expires_at} I{is} that instant, so whatever
ends with the credential (a session under C{on_token_expiry: close}, an
SSH certificate issued for it) ends when acceptance would stop too.

Every refusal is a L{TokenRejected} with a short reason code and a detail
safe to log; the token itself is never logged or kept.

test-case-name: tests.unit.test_oidc
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Literal, NoReturn, TypeGuard
from urllib.parse import urlsplit

from attrs import Attribute, define, field, frozen
from cryptography import x509
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    InvalidClaimError,
    InvalidKeyCurveError,
    InvalidKeyIdError,
    JoseError,
    KeyParameterError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import JWKRegistry, Key, KeySet
from joserfc.jws import JWSRegistry
from OpenSSL import SSL, crypto
from twisted.internet import defer

# IOpenSSLTrustRoot is public (optionsForClientTLS takes it) but is only
# importable from where it is defined.
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    ensureDeferred,
    gatherResults,
)
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer

from hoopgate._identity import Identity

__all__ = [
    "FETCH_TIMEOUT",
    "MAX_DOCUMENT_SIZE",
    "MAX_TOKEN_SIZE",
    "IssuerConfig",
    "OIDCVerifier",
    "Reason",
    "TokenRejected",
    "validate_algorithms",
]

#: Tokens longer than this (in characters) are refused unread.
MAX_TOKEN_SIZE: Final = 16 * 1024

#: Discovery documents and JWKS larger than this (in bytes) are refused.
MAX_DOCUMENT_SIZE: Final = 1024 * 1024

#: Seconds allowed for each HTTP fetch (discovery, JWKS).
FETCH_TIMEOUT: Final = 5.0

Reason = Literal[
    "malformed",
    "unknown_issuer",
    "algorithm",
    "signature",
    "unknown_key",
    "expired",
    "not_yet_valid",
    "audience",
    "issuer",
    "missing_claim",
    "issuer_unreachable",
]

# Asymmetric JWS algorithms an issuer may be configured with.  "none" and
# the HMAC family are absent on purpose: a verifier holding only public keys
# must never accept a MAC (the public key would become the shared secret).
_SIGNING_ALGORITHMS: Final = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
        "Ed25519",
        "Ed448",
    }
)

# RFC 9068 access tokens say "at+jwt"; many issuers say "JWT" or nothing.
# The "application/" prefix may be present (RFC 7515, section 4.1.9).
_ACCEPTED_TYPES: Final = frozenset({"jwt", "at+jwt"})

# Header parameters that would change how the token must be processed.
# We understand no extension, so we refuse rather than ignore them.
_REFUSED_HEADERS: Final = ("crit", "b64")

# Non-secret claims copied into the identity for policy and recordings.
_RECORDED_CLAIMS: Final = (
    "client_id",
    "azp",
    "scope",
    "repository",
    "ref",
    "environment",
)

_COMPACT_JWS: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_GROUP_SEPARATORS: Final = re.compile(r"[\s,]+")
_DISCOVERY_PATH: Final = "/.well-known/openid-configuration"


class TokenRejected(Exception):  # noqa: N818 (the name the gateway uses)
    """
    A token did not prove anything; the caller stays anonymous.

    Attributes:
        reason: A short, stable code for policy, metrics and the peer's
            error message (C{expired}, C{audience}, ...).
        detail: What exactly failed, precise enough for an operator and
            safe to log: it never contains the token.
    """

    def __init__(self, reason: Reason, *, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class _FetchError(Exception):
    """
    Discovery or the JWKS could not be fetched or understood.
    """


def validate_algorithms(algorithms: Iterable[str]) -> None:
    """
    Check a configured list of token signing algorithms.

    Args:
        algorithms: JWS C{alg} names, such as C{("RS256", "ES256")}.

    Raises:
        ValueError: The list is empty, names an unsupported algorithm, or
            names C{none} or an HMAC (C{HS*}) algorithm, which are never
            accepted.
    """
    if isinstance(algorithms, str):
        raise ValueError("algorithms must be a list, not one string")
    names = list(algorithms)
    if not names:
        raise ValueError("at least one signing algorithm is required")

    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"algorithm {name!r} is not a name")
        if _never_accepted(name):
            raise ValueError(
                f"{name!r} is never accepted: tokens must be signed with "
                "an asymmetric key"
            )
        if name not in _SIGNING_ALGORITHMS:
            known = ", ".join(sorted(_SIGNING_ALGORITHMS))
            raise ValueError(f"unsupported algorithm {name!r} (use {known})")


def _never_accepted(alg: str) -> bool:
    lowered = alg.strip().lower()
    return lowered == "none" or lowered.startswith("hs")


def _check_algorithms(
    _: object, attribute: Attribute[Any], value: tuple[str, ...]
) -> None:
    if not isinstance(value, tuple):
        raise TypeError(f"{attribute.name} must be a tuple")
    validate_algorithms(value)


def _check_text(_: object, attribute: Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must be a non-empty string")


def _check_optional_text(_: object, attribute: Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"{attribute.name} must be a non-empty string or None")


def _check_texts(_: object, attribute: Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise TypeError(f"{attribute.name} must be a tuple of strings")
    for item in value:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{attribute.name} holds {item!r}, not a name")


def _check_audiences(
    instance: object, attribute: Attribute[Any], value: object
) -> None:
    _check_texts(instance, attribute, value)
    if not value:
        raise ValueError(f"{attribute.name} needs at least one audience")


def _check_optional_url(_: object, attribute: Attribute[Any], value: object) -> None:
    if value is not None:
        _check_url(_, attribute, value)


def _check_url(_: object, attribute: Attribute[Any], value: object) -> None:
    problem = _url_problem(value)
    if problem:
        raise ValueError(f"{attribute.name} {value!r} {problem}")


def _url_problem(value: object) -> str:
    """
    Say why C{value} is not an absolute HTTP(S) URL we can fetch, or C{""}.
    """
    if not isinstance(value, str) or not value.isascii():
        return "is not an ASCII string"
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return "is not an absolute http(s) URL"
    if parts.query or parts.fragment or any(c.isspace() for c in value):
        return "must not hold a query, fragment or spaces"
    return ""


def _check_seconds(
    minimum: float, maximum: float
) -> Callable[[object, Attribute[Any], object], None]:
    def check(_: object, attribute: Attribute[Any], value: object) -> None:
        if not _is_number(value) or not minimum <= value <= maximum:
            raise ValueError(
                f"{attribute.name} must be a number of seconds between "
                f"{minimum:g} and {maximum:g}, not {value!r}"
            )

    return check


@frozen
class IssuerConfig:
    """
    One trusted token issuer.

    Attributes:
        name: A short name for logs and errors (C{corp-sso}).
        issuer: The issuer URL, compared exactly with the token's C{iss} and
            the discovery document's C{issuer}.
        audiences: Accepted C{aud} values; a token needs one of them.
        algorithms: Accepted C{alg} values, never C{none} or C{HS*}.
        subject_claim: The claim naming the subject (a non-empty string).
        groups_claim: The claim holding groups (a list of strings, or one
            string separated by spaces or commas), or C{None}.
        required_claims: Claims a token must carry, non-empty.
        leeway: Seconds of clock skew allowed for C{exp}, C{nbf}, C{iat}
            (whole seconds count for C{nbf} and C{iat}).  A token is
            usable until C{exp} plus C{leeway}: the identity's
            C{expires_at}.
        jwks_uri: Where the signing keys are, or C{None} to use discovery.
        cache_ttl: Seconds to trust fetched keys before refetching them.
        refresh_interval: Least seconds between fetches not caused by the
            cache expiring: a token naming an unknown key, or a retry after
            a failed fetch.
        ca_file: A PEM file of certificate authorities trusted for this
            issuer's HTTPS in addition to the platform's.
    """

    name: str = field(validator=_check_text)
    issuer: str = field(validator=_check_url)
    audiences: tuple[str, ...] = field(validator=_check_audiences)
    algorithms: tuple[str, ...] = field(
        default=("RS256", "ES256"), validator=_check_algorithms
    )
    subject_claim: str = field(default="sub", validator=_check_text)
    groups_claim: str | None = field(default=None, validator=_check_optional_text)
    required_claims: tuple[str, ...] = field(default=(), validator=_check_texts)
    leeway: float = field(default=30.0, validator=_check_seconds(0, 600))
    jwks_uri: str | None = field(default=None, validator=_check_optional_url)
    cache_ttl: float = field(default=300.0, validator=_check_seconds(1, 86400))
    refresh_interval: float = field(default=30.0, validator=_check_seconds(0, 86400))
    ca_file: str | None = field(default=None, validator=_check_optional_text)


@define
class _IssuerState:
    """
    What one verifier knows about one issuer's keys.

    Attributes:
        config: The issuer's configuration.
        fetch: Fetches a URL's body.
        registry: The JWS registry allowing exactly the configured
            algorithms.
        keys: The usable public signing keys last fetched.
        fetched_at: When C{keys} were fetched, or C{None}.
        attempted_at: When the last fetch began, or C{None}.
        problem: Why the last fetch failed, or C{""}.
        waiters: One Deferred per caller waiting for the fetch under way;
            empty when no fetch is under way.
    """

    config: IssuerConfig
    fetch: Callable[[str], Deferred[bytes]]
    registry: JWSRegistry
    keys: tuple[Key, ...] = ()
    fetched_at: float | None = None
    attempted_at: float | None = None
    problem: str = "keys were never fetched"
    waiters: list[Deferred[None]] = field(factory=list)


class OIDCVerifier:
    """
    Turn access tokens into identities, or refuse them.

    Keys are fetched lazily (or at start with L{prime}), cached for each
    issuer's C{cache_ttl}, and refetched early when a token names a key we
    do not know, at most once per C{refresh_interval}. Concurrent callers
    share one fetch. When a refresh fails the keys fetched before stay in
    use; with none, tokens are refused as C{issuer_unreachable} and the
    next attempt waits for C{refresh_interval}. Fetches time out after
    L{FETCH_TIMEOUT}, must answer 200 without redirecting, and are capped
    at L{MAX_DOCUMENT_SIZE}.

    Args:
        issuers: The trusted issuers; their C{issuer} URLs must differ.
        reactor: The clock for token times, cache ages and fetch timeouts.
            Without C{agent} or C{fetch} it must also provide
            L{IReactorTCP}: the HTTP client connects through it.
        agent: The HTTP client for discovery and JWKS; by default one
            L{Agent} per issuer, verifying HTTPS certificates against the
            platform's authorities plus the issuer's C{ca_file}.
        fetch: Fetches a URL's body, replacing HTTP entirely (for tests).
    """

    log = Logger()

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        reactor: IReactorTime,
        agent: IAgent | None = None,
        fetch: Callable[[str], Deferred[bytes]] | None = None,
    ) -> None:
        self._reactor = reactor
        self._issuers: dict[str, _IssuerState] = {}

        names = [config.name for config in issuers]
        for config in issuers:
            if config.issuer in self._issuers:
                raise ValueError(f"issuer {config.issuer!r} is configured twice")
            if names.count(config.name) > 1:
                raise ValueError(f"issuer name {config.name!r} is used twice")
            self._issuers[config.issuer] = _IssuerState(
                config=config,
                fetch=self._http_fetch(config, agent) if fetch is None else fetch,
                registry=_registry(config.algorithms),
            )

    def _http_fetch(
        self, config: IssuerConfig, agent: IAgent | None
    ) -> Callable[[str], Deferred[bytes]]:
        if agent is not None:
            if config.ca_file is not None:
                self.log.warn(
                    "ca_file of issuer {issuer} is ignored: the HTTP agent "
                    "was given and decides what it trusts",
                    issuer=config.name,
                )
            return _HTTPFetcher(agent)
        if not IReactorTCP.providedBy(self._reactor):
            raise TypeError("the reactor cannot connect: pass an agent or fetch")
        return _HTTPFetcher(_agent(self._reactor, config.ca_file))

    def verify(self, token: str) -> Deferred[Identity]:
        """
        Check a token and say who it proves.

        Args:
            token: A compact JWS access token, as presented.

        Returns:
            A Deferred firing with the L{Identity}, or failing with
            L{TokenRejected}: never with any other error, unless the caller
            cancels it (then L{CancelledError}).
        """
        return ensureDeferred(self._verify_or_reject(token))

    def prime(self) -> Deferred[None]:
        """
        Fetch every issuer's keys now, so the first callers need not wait.

        Returns:
            A Deferred firing with C{None} once every fetch has finished;
            failures are logged, never raised.
        """
        refreshes = [self._refresh(state) for state in self._issuers.values()]

        def done(_: object) -> None:
            return None

        return gatherResults(refreshes, consumeErrors=True).addBoth(done)

    async def _verify_or_reject(self, token: str) -> Identity:
        try:
            identity = await self._verify(token)
        except TokenRejected as rejected:
            self.log.warn(
                "Refused a token ({reason}): {detail}",
                reason=rejected.reason,
                detail=rejected.detail,
            )
            raise
        except CancelledError:
            raise
        except Exception:
            self.log.failure("Unexpected error while verifying a token")
            raise TokenRejected(
                "malformed", detail="internal error while verifying the token"
            ) from None

        self.log.debug(
            "Token of {subject} from {issuer} verified",
            subject=identity.subject,
            issuer=identity.issuer,
        )
        return identity

    async def _verify(self, token: str) -> Identity:
        header, payload = _split(token)
        state = self._state_for(payload)
        alg, kid = _check_header(header, state.config)

        keys = await self._keys_for(state, alg, kid)
        claims = _check_signature(token, keys, state)
        usable_until = _check_claims(claims, state.config, self._reactor.seconds())

        return _identity(token, claims, state.config, usable_until)

    def _state_for(self, payload: dict[str, Any]) -> _IssuerState:
        issuer = payload.get("iss")
        if not isinstance(issuer, str) or not issuer:
            raise TokenRejected("malformed", detail="the token names no issuer")

        state = self._issuers.get(issuer)
        if state is None:
            raise TokenRejected(
                "unknown_issuer", detail=f"issuer {_quote(issuer)} is not trusted"
            )
        return state

    async def _keys_for(self, state: _IssuerState, alg: str, kid: str | None) -> KeySet:
        if self._is_stale(state) and self._may_refresh(state):
            await self._refresh(state)
        if not state.keys:
            raise TokenRejected(
                "issuer_unreachable",
                detail=f"no keys from issuer {state.config.name}: {state.problem}",
            )

        found = _usable_keys(state.keys, alg, kid)
        if not found and self._may_refresh(state):
            await self._refresh(state)
            found = _usable_keys(state.keys, alg, kid)
        if not found:
            raise TokenRejected("unknown_key", detail=_no_key_detail(state, alg, kid))

        return KeySet(list(found))

    def _is_stale(self, state: _IssuerState) -> bool:
        if state.fetched_at is None:
            return True
        age = self._reactor.seconds() - state.fetched_at
        return age >= state.config.cache_ttl

    def _may_refresh(self, state: _IssuerState) -> bool:
        if state.waiters or state.attempted_at is None:
            return True
        since = self._reactor.seconds() - state.attempted_at
        return since >= state.config.refresh_interval

    def _refresh(self, state: _IssuerState) -> Deferred[None]:
        """
        Fetch the issuer's keys, or join the fetch already under way.

        Returns:
            A Deferred firing with C{None} when the fetch has finished,
            whatever its outcome (which is left in C{state}).
        """
        waiter: Deferred[None] = Deferred()
        state.waiters.append(waiter)

        if len(state.waiters) == 1:
            state.attempted_at = self._reactor.seconds()
            loading = ensureDeferred(self._load(state))
            loading.addBoth(self._loaded, state)
        return waiter

    def _loaded(self, result: tuple[Key, ...] | Failure, state: _IssuerState) -> None:
        waiters, state.waiters = state.waiters, []

        if isinstance(result, Failure):
            self._load_failed(state, result)
        else:
            state.keys = result
            state.fetched_at = self._reactor.seconds()
            state.problem = ""
            self.log.info(
                "Loaded {count} signing keys of issuer {issuer}",
                count=len(result),
                issuer=state.config.name,
            )

        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)

    def _load_failed(self, state: _IssuerState, failure: Failure) -> None:
        if isinstance(failure.value, _FetchError):
            state.problem = str(failure.value)
        else:
            state.problem = "internal error while loading keys"
            self.log.failure(
                "Unexpected error loading keys of issuer {issuer}",
                failure,
                issuer=state.config.name,
            )

        if state.keys:
            self.log.warn(
                "Could not refresh keys of issuer {issuer}: {problem}; "
                "still using the {count} keys fetched before",
                issuer=state.config.name,
                problem=state.problem,
                count=len(state.keys),
            )
        else:
            self.log.error(
                "Identity provider {issuer} is unreachable: {problem}",
                issuer=state.config.name,
                problem=state.problem,
            )

    async def _load(self, state: _IssuerState) -> tuple[Key, ...]:
        jwks_uri = state.config.jwks_uri
        if jwks_uri is None:
            jwks_uri = await self._discover(state)

        document = await self._get_json(state, jwks_uri)
        return self._import_keys(state.config, document)

    async def _discover(self, state: _IssuerState) -> str:
        config = state.config
        url = config.issuer.rstrip("/") + _DISCOVERY_PATH
        document = await self._get_json(state, url)

        named = document.get("issuer")
        if named != config.issuer:
            raise _FetchError(
                f"discovery at {url} names issuer {_quote(named)}, "
                f"not {config.issuer!r}"
            )

        jwks_uri = document.get("jwks_uri")
        problem = _url_problem(jwks_uri)
        if not problem and _downgrades(config.issuer, jwks_uri):
            problem = "is plain http for an https issuer"
        if problem:
            raise _FetchError(
                f"discovery at {url}: jwks_uri {_quote(jwks_uri)} {problem}"
            )
        assert isinstance(jwks_uri, str)
        return jwks_uri

    async def _get_json(self, state: _IssuerState, url: str) -> dict[str, Any]:
        fetching = state.fetch(url)
        fetching.addTimeout(FETCH_TIMEOUT, self._reactor)
        try:
            body = await fetching
        except defer.TimeoutError:
            raise _FetchError(f"GET {url} timed out after {FETCH_TIMEOUT:g}s") from None
        except _FetchError as error:
            raise _FetchError(f"GET {url}: {error}") from None
        except Exception as error:
            raise _FetchError(f"GET {url} failed: {_describe(error)}") from None

        return _json_object(body, url)

    def _import_keys(
        self, config: IssuerConfig, document: dict[str, Any]
    ) -> tuple[Key, ...]:
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise _FetchError("the JWKS has no list of keys")

        keys: list[Key] = []
        for position, entry in enumerate(entries):
            if isinstance(entry, dict) and entry.get("use", "sig") != "sig":
                continue  # an encryption key, not meant for us
            key = _public_signing_key(entry)
            if isinstance(key, str):
                self.log.warn(
                    "Ignoring key {position} of issuer {issuer}: {problem}",
                    position=position,
                    issuer=config.name,
                    problem=key,
                )
            else:
                keys.append(key)

        if not keys:
            raise _FetchError("the JWKS holds no usable public signing key")
        for key in keys:
            key.ensure_kid()  # a key without kid gets its thumbprint
        return tuple(keys)


def _registry(algorithms: tuple[str, ...]) -> JWSRegistry:
    """
    A JWS registry allowing exactly C{algorithms}.

    Unknown header parameters are ignored, as RFC 7515 asks (C{crit} and
    C{b64} are refused before the registry sees them); the size limits
    follow L{MAX_TOKEN_SIZE} rather than joserfc's 512-byte header limit.
    """
    registry = JWSRegistry(algorithms=list(algorithms), strict_check_header=False)
    registry.max_header_length = MAX_TOKEN_SIZE
    registry.max_payload_length = MAX_TOKEN_SIZE
    return registry


def _split(token: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Decode a token's header and payload, without trusting either yet.
    """
    if not isinstance(token, str):
        raise TokenRejected("malformed", detail="the token is not text")
    if len(token) > MAX_TOKEN_SIZE:
        raise TokenRejected(
            "malformed",
            detail=f"the token is {len(token)} characters long, "
            f"over the limit of {MAX_TOKEN_SIZE}",
        )
    if _COMPACT_JWS.fullmatch(token) is None:
        raise TokenRejected(
            "malformed",
            detail="not a compact JWS (three base64url parts joined by dots)",
        )

    header_part, payload_part, _ = token.split(".")
    header = _decode_part(header_part, "header")
    alg = header.get("alg")
    if isinstance(alg, str) and _never_accepted(alg):
        raise TokenRejected("algorithm", detail=f"alg {_quote(alg)} is never accepted")

    return header, _decode_part(payload_part, "payload")


def _decode_part(part: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_without_duplicates,
            parse_constant=_refuse_constant,
        )
    except (ValueError, RecursionError):
        raise TokenRejected(
            "malformed", detail=f"the {what} is not base64url-encoded JSON"
        ) from None

    if not isinstance(value, dict):
        raise TokenRejected("malformed", detail=f"the {what} is not a JSON object")
    return value


def _without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """
    Build a JSON object, refusing repeated names that parsers disagree on.
    """
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("repeated member name")
    return value


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _check_header(
    header: dict[str, Any], config: IssuerConfig
) -> tuple[str, str | None]:
    """
    Check the header against the issuer's rules.

    Returns:
        The algorithm and the key id (or C{None}) the header names.
    """
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenRejected("malformed", detail="the header names no alg")
    if alg not in config.algorithms:
        raise TokenRejected(
            "algorithm",
            detail=f"alg {_quote(alg)} is not accepted from issuer {config.name}",
        )

    typ = header.get("typ")
    if typ is not None and not _accepted_type(typ):
        raise TokenRejected(
            "malformed", detail=f"typ {_quote(typ)} is not an access token type"
        )
    for name in _REFUSED_HEADERS:
        if name in header:
            raise TokenRejected(
                "malformed", detail=f"header parameter {name} is not supported"
            )

    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenRejected("malformed", detail="the header's kid is not a string")
    return alg, kid


def _accepted_type(typ: object) -> bool:
    if not isinstance(typ, str):
        return False
    lowered = typ.lower()
    return lowered.removeprefix("application/") in _ACCEPTED_TYPES


def _usable_keys(keys: tuple[Key, ...], alg: str, kid: str | None) -> tuple[Key, ...]:
    """
    The keys that may verify a token signed with C{alg} naming C{kid}.

    A token without a kid is only checked when exactly one key fits.
    """
    key_type = JWSRegistry.algorithms[alg].key_type
    found = tuple(
        key
        for key in keys
        if key.key_type == key_type
        and key.get("alg") in (None, alg)
        and (kid is None or key.kid == kid)
    )
    if kid is None and len(found) != 1:
        return ()
    return found


def _no_key_detail(state: _IssuerState, alg: str, kid: str | None) -> str:
    name = state.config.name
    if kid is None:
        return f"the token names no kid and issuer {name} has no single {alg} key"
    return f"issuer {name} has no {alg} key with kid {_quote(kid)}"


def _check_signature(token: str, keys: KeySet, state: _IssuerState) -> dict[str, Any]:
    """
    Verify the signature with C{keys}.

    Returns:
        The claims, now known to come from the issuer.
    """
    name = state.config.name
    try:
        verified = jwt.decode(
            token,
            keys,
            algorithms=list(state.config.algorithms),
            registry=state.registry,
        )
    except BadSignatureError:
        raise TokenRejected(
            "signature", detail=f"the signature does not verify with {name}'s key"
        ) from None
    except InvalidKeyIdError:
        raise TokenRejected(
            "unknown_key", detail=f"no key of issuer {name} matches the token"
        ) from None
    except UnsupportedAlgorithmError as error:
        raise TokenRejected("algorithm", detail=error.description) from None
    except (KeyParameterError, InvalidKeyCurveError) as error:
        raise TokenRejected(
            "unknown_key", detail=f"key of issuer {name} unfit: {error.description}"
        ) from None
    except JoseError as error:
        raise TokenRejected(
            "malformed", detail=f"{error.error}: {error.description}"
        ) from None

    return verified.claims


def _check_claims(claims: dict[str, Any], config: IssuerConfig, now: float) -> float:
    """
    Check the verified claims: issuer, audience, times, required claims.

    Returns:
        The instant the token stops being usable (L{_usable_until}).
    """
    # exp is judged by _usable_until alone, so that acceptance and
    # expiry agree to the second (joserfc would round now down).
    registry = jwt.JWTClaimsRegistry(
        now=int(now),
        leeway=int(config.leeway),
        iss={"essential": True, "value": config.issuer},
        aud={"essential": True, "values": list(config.audiences)},
    )
    try:
        registry.validate({k: v for k, v in claims.items() if k != "exp"})
    except MissingClaimError as error:
        raise TokenRejected(
            "missing_claim", detail=f"the token lacks {error.claim}"
        ) from None
    except InvalidClaimError as error:
        raise _invalid_claim(error, claims, config, now) from None

    usable_until = _usable_until(claims, config)
    if now >= usable_until:
        raise TokenRejected(
            "expired",
            detail=f"the token expired at {_quote(claims['exp'])}; it is "
            f"now {now:.0f} and the leeway is {config.leeway:g}s",
        )

    for name in config.required_claims:
        if claims.get(name) in (None, "", [], {}):
            raise TokenRejected(
                "missing_claim", detail=f"the token lacks required claim {name}"
            )
    return usable_until


def _usable_until(claims: dict[str, Any], config: IssuerConfig) -> float:
    """
    The instant a token stops being usable: its C{exp} plus the issuer's
    leeway.  The one rule for both ends of a token's life: it is accepted
    while the clock is before this, and what it opened ends here.
    """
    exp = claims.get("exp")
    if exp is None:
        raise TokenRejected("missing_claim", detail="the token lacks exp")
    if not _is_number(exp):
        raise TokenRejected("malformed", detail="exp is not a number")

    try:
        usable_until = float(exp) + config.leeway
    except OverflowError:
        usable_until = math.inf
    if not math.isfinite(usable_until):
        raise TokenRejected("malformed", detail="exp is out of range")
    return usable_until


def _invalid_claim(
    error: InvalidClaimError,
    claims: dict[str, Any],
    config: IssuerConfig,
    now: float,
) -> TokenRejected:
    claim = error.claim
    value = claims.get(claim)

    if claim == "aud":
        accepted = ", ".join(config.audiences)
        return TokenRejected(
            "audience",
            detail=f"audience {_quote(value)} is none of: {accepted}",
        )
    if claim == "iss":
        return TokenRejected(
            "issuer",
            detail=f"iss {_quote(value)} is not exactly {config.issuer!r}",
        )
    if claim in ("nbf", "iat") and _is_number(value):
        return TokenRejected(
            "not_yet_valid",
            detail=f"{claim} {value} is in the future; it is now {now:.0f} "
            f"and the leeway is {config.leeway:g}s",
        )
    return TokenRejected("malformed", detail=f"claim {claim}: {error.description}")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _identity(
    token: str, claims: dict[str, Any], config: IssuerConfig, usable_until: float
) -> Identity:
    """
    Describe who verified, checked C{claims} prove, until when.
    """
    return Identity(
        subject=_subject(claims, config.subject_claim),
        issuer=config.issuer,
        groups=_groups(claims, config.groups_claim),
        token_id_hash=_token_id_hash(token, claims),
        expires_at=usable_until,
        claims=_recorded_claims(claims),
    )


def _subject(claims: dict[str, Any], name: str) -> str:
    subject = claims.get(name)
    if subject is None or subject == "":
        raise TokenRejected(
            "missing_claim", detail=f"the token lacks subject claim {name}"
        )
    if not isinstance(subject, str) or not subject.isprintable():
        raise TokenRejected(
            "malformed", detail=f"subject claim {name} is not printable text"
        )
    return subject


def _groups(claims: dict[str, Any], name: str | None) -> tuple[str, ...]:
    if name is None or claims.get(name) is None:
        return ()

    value = claims[name]
    if isinstance(value, str):
        value = _GROUP_SEPARATORS.split(value)
    if not isinstance(value, list) or not all(
        isinstance(group, str) and group.isprintable() for group in value
    ):
        raise TokenRejected(
            "malformed", detail=f"groups claim {name} is not a list of names"
        )
    return tuple(group for group in value if group)


def _token_id_hash(token: str, claims: dict[str, Any]) -> str:
    jti = claims.get("jti")
    basis = jti if isinstance(jti, str) and jti else token
    digest = hashlib.sha256(basis.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def _recorded_claims(claims: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (name, claims[name])
        for name in _RECORDED_CLAIMS
        if isinstance(claims.get(name), str) and claims[name].isprintable()
    )


def _quote(value: object, limit: int = 80) -> str:
    """
    Show a value from a token or document in a log line: quoted, so that
    control characters cannot forge lines, and cut to C{limit} characters.
    """
    text = repr(value)
    if len(text) > limit:
        return text[: limit - 3] + "..."
    return text


def _downgrades(issuer: str, url: object) -> bool:
    return (
        isinstance(url, str)
        and issuer.startswith("https:")
        and not url.startswith("https:")
    )


def _json_object(body: bytes, url: str) -> dict[str, Any]:
    if len(body) > MAX_DOCUMENT_SIZE:
        raise _FetchError(f"{url} sent more than {MAX_DOCUMENT_SIZE} bytes")
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise _FetchError(f"{url} did not send valid JSON") from None
    if not isinstance(value, dict):
        raise _FetchError(f"{url} did not send a JSON object")
    return value


def _public_signing_key(entry: object) -> Key | str:
    """
    Import one JWKS entry.

    Returns:
        The key, or why it cannot verify our tokens.
    """
    if not isinstance(entry, dict):
        return "not a JSON object"
    if entry.get("kty") == "oct":
        return "a symmetric key"

    try:
        key = JWKRegistry.import_key(entry)
    except (JoseError, ValueError, TypeError, KeyError) as error:
        return f"unreadable ({type(error).__name__})"
    if key.is_private:
        return "holds private key material"
    return key


def _describe(error: Exception) -> str:
    if isinstance(error, ResponseFailed | ResponseNeverReceived):
        reasons = "; ".join(reason.getErrorMessage() for reason in error.reasons)
        return f"{type(error).__name__}: {reasons}"
    return f"{type(error).__name__}: {error}"


def _agent(reactor: IReactorTime, ca_file: str | None) -> IAgent:
    """
    An HTTP client verifying HTTPS against platform trust plus C{ca_file}.
    """
    trust = None if ca_file is None else _ExtraTrust(_load_authorities(ca_file))
    policy = BrowserLikePolicyForHTTPS(trustRoot=trust)
    agent: IAgent = Agent(reactor, contextFactory=policy)
    return agent


def _load_authorities(path: str) -> list[crypto.X509]:
    """
    Read every certificate of a PEM file, once, at start.

    Raises:
        ValueError: The file cannot be read or holds no certificate.
    """
    try:
        with open(path, "rb") as pem:
            found = x509.load_pem_x509_certificates(pem.read())
    except (OSError, ValueError) as error:
        raise ValueError(f"ca_file {path!r}: {error}") from None
    return [crypto.X509.from_cryptography(certificate) for certificate in found]


@implementer(IOpenSSLTrustRoot)
class _ExtraTrust:
    """
    Trust the platform's certificate authorities and a few more.

    Attributes:
        authorities: The extra authorities.
    """

    def __init__(self, authorities: list[crypto.X509]) -> None:
        self.authorities = authorities

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.set_default_verify_paths()
        store = context.get_cert_store()
        assert store is not None  # a context always has a store
        for authority in self.authorities:
            store.add_cert(authority)


class _HTTPFetcher:
    """
    GET a URL with an L{IAgent}, refusing non-200 answers and large bodies.

    Args:
        agent: The HTTP client.
        limit: The largest body accepted, in bytes.
    """

    def __init__(self, agent: IAgent, limit: int = MAX_DOCUMENT_SIZE) -> None:
        self._agent = agent
        self._limit = limit

    def __call__(self, url: str) -> Deferred[bytes]:
        headers = Headers(
            {b"accept": [b"application/json"], b"user-agent": [b"hoopgate"]}
        )
        requesting = self._agent.request(b"GET", url.encode("ascii"), headers)
        return requesting.addCallback(self._read)

    def _read(self, response: IResponse) -> Deferred[bytes]:
        body = _BoundedBody(self._limit)
        response.deliverBody(body)

        def check_status(content: bytes) -> bytes:
            if response.code != 200:
                raise _FetchError(f"HTTP status {response.code}")
            return content

        return body.finished.addCallback(check_status)


class _BoundedBody(Protocol):
    """
    Collect a response body, giving up beyond a size limit.

    Attributes:
        finished: Fires with the body once complete, or fails.
    """

    def __init__(self, limit: int) -> None:
        self.finished: Deferred[bytes] = Deferred(self._cancel)
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.finished.errback(
                _FetchError(f"response larger than {self._limit} bytes")
            )
            self._abort()
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:
            return
        if isinstance(reason.value, ResponseDone):
            self.finished.callback(b"".join(self._chunks))
        else:
            self.finished.errback(reason)

    def _cancel(self, _: Deferred[bytes]) -> None:
        self._abort()

    def _abort(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
