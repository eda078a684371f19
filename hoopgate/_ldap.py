"""
Approvers from the directory (LDAP, with ldap3).

L{Directory} answers three questions, each on a thread pool of its own
(ldap3 blocks; the reactor's pool also resolves host names):

  - who is in these approver groups (C{member}, C{uniqueMember}, nested
    groups to a bounded depth, and entries whose C{memberOf} names the
    group), with their mail and the configured notification attributes;
  - which entry is this identity (a configured claim matched against a
    configured attribute), so a requester is never their own approver;
  - does this login and password bind (a simple bind as that person).

Decisions worth knowing:

  - Every lookup opens its own connection, binds, searches and unbinds:
    membership is read fresh each time (at request and again at
    decision time), never cached.
  - Filter values are escaped (RFC 4515); DNs are compared in a
    normalised form (attribute types and values in lower case).
  - TLS (C{ldaps://} or StartTLS) verifies the certificate and the host
    name with Python's own context: ldap3's default verifies nothing, and
    its own host name check uses a function Python removed.
  - Referrals are never followed; a cycle of groups ends where it began;
    deeper nesting than C{max_depth} is left out and logged.
  - Anything that goes wrong (the server is down, the service account
    cannot bind, an identity matches two entries) is a
    L{DirectoryUnavailableError}: nothing can then be approved.
  - An empty password never binds (an LDAP simple bind with an empty
    password is an anonymous bind that servers accept).

test-case-name: tests.unit.test_approvals_ldap
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from attrs import frozen
from ldap3 import BASE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from hoopgate._configreader import ConfigReader
from hoopgate._secrets import Secret

T = TypeVar("T")

_GROUP_CLASSES: Final = frozenset(
    {"groupofnames", "groupofuniquenames", "group", "groupofmembers"}
)
_MEMBER_ATTRIBUTES: Final = ("member", "uniqueMember")


class DirectoryUnavailableError(Exception):
    """
    The directory cannot answer; the message says why, without secrets.
    """


def normalise_dn(dn: str) -> str:
    """
    A DN in the form used to compare DNs: attribute types and values in
    lower case, no blanks around separators.

    Raises:
        ValueError: It is not a DN.
    """
    try:
        parts = parse_dn(dn.strip())
    except LDAPException as e:
        raise ValueError(f"{dn!r} is not a DN: {e}") from None
    return ",".join(
        f"{kind.lower()}={value.strip().lower()}" for kind, value, _ in parts
    )


def looks_like_dn(text: str) -> bool:
    """
    Whether C{text} parses as a DN of at least one attribute.
    """
    try:
        return bool(normalise_dn(text))
    except ValueError:
        return False


@frozen
class Person:
    """
    A directory entry that can approve or request.

    Attributes:
        dn: Its DN as the directory gave it.
        login: Its login attribute's value (what approvers sign in with).
        mail: Its mail address, or C{""}.
        attributes: The configured notification attributes it has.
    """

    dn: str
    login: str
    mail: str = ""
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """
        The normalised DN.
        """
        return normalise_dn(self.dn)


@frozen
class DirectorySettings:
    """
    Where the directory is and how to read it.

    Attributes:
        url: C{ldap://HOST:PORT} or C{ldaps://HOST:PORT}.
        start_tls: Upgrade an C{ldap://} connection with StartTLS.
        ca: A CA file to verify the server with (else the system's).
        bind_dn: The service account that reads groups.
        bind_password: Its password.
        people: Where people are searched (identities, logins).
        login_attribute: What approvers sign in with (C{uid}).
        mail_attribute: Their mail address (C{mail}).
        notify_attributes: More attributes notifiers may use.
        identity_claim: The token claim naming a requester's entry.
        identity_attribute: The attribute that claim is matched with.
        person_filter: What a person entry looks like.
        max_depth: How deep nested groups are followed.
        max_members: The most people one lookup returns.
        timeout: Seconds for connecting and for each operation.
        threads: Threads of the directory's own pool.
    """

    url: str
    bind_dn: str
    bind_password: Secret
    people: str
    start_tls: bool = False
    ca: str | None = None
    login_attribute: str = "uid"
    mail_attribute: str = "mail"
    notify_attributes: tuple[str, ...] = ()
    identity_claim: str = "sub"
    identity_attribute: str = "uid"
    person_filter: str = "(objectClass=person)"
    max_depth: int = 3
    max_members: int = 1000
    timeout: float = 5.0
    threads: int = 4


def _dn(reader: ConfigReader, key: str, default: Any = ...) -> str:
    value = reader.string(key) if default is ... else reader.string(key, default)
    if not looks_like_dn(value):
        raise reader.error(key, f"{value!r} is not a DN")
    return value


def _attribute(reader: ConfigReader, key: str, default: str) -> str:
    value = reader.string(key, default)
    if not value.replace("-", "").isalnum():
        raise reader.error(key, f"{value!r} is not an attribute name")
    return value


def read_directory_settings(reader: ConfigReader) -> DirectorySettings:
    """
    Validate C{gateway.approvals.directory}.

    Raises:
        ConfigError: Naming the key and line of the mistake.
    """
    url = reader.string("url")
    parts = urlsplit(url)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise reader.error("url", "must be ldap://HOST:PORT or ldaps://HOST:PORT")
    ca = reader.raw("ca", None)
    if ca is not None and not Path(str(ca)).is_file():
        raise reader.error("ca", f"{ca} is not a readable file")
    identity = reader.section("identity")
    person_filter = reader.string("person_filter", "(objectClass=person)")
    if not (person_filter.startswith("(") and person_filter.endswith(")")):
        raise reader.error("person_filter", "must be an LDAP filter in parentheses")

    settings = DirectorySettings(
        url=url,
        start_tls=reader.boolean("start_tls", False),
        ca=ca,
        bind_dn=_dn(reader, "bind_dn"),
        bind_password=reader.secret("bind_password"),
        people=_dn(reader, "people"),
        login_attribute=_attribute(reader, "login_attribute", "uid"),
        mail_attribute=_attribute(reader, "mail_attribute", "mail"),
        notify_attributes=reader.strings("notify_attributes", ()),
        identity_claim=identity.string("claim", "sub"),
        identity_attribute=_attribute(identity, "attribute", "uid"),
        person_filter=person_filter,
        max_depth=reader.integer("max_depth", 3, low=0, high=10),
        max_members=reader.integer("max_members", 1000, low=1, high=100_000),
        timeout=reader.duration("timeout", 5.0),
        threads=reader.integer("threads", 4, low=1, high=32),
    )
    if settings.start_tls and parts.scheme == "ldaps":
        raise reader.error("start_tls", "is for ldap:// URLs; ldaps:// is TLS already")
    identity.done()
    reader.done()
    return settings


class _VerifiedTls(Tls):  # type: ignore[misc]
    """
    ldap3's TLS settings with a verifying context of Python's own: the
    certificate chain and the host name are checked in the handshake.
    """

    def __init__(self, ca: str | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=ca)

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        context = ssl.create_default_context(cafile=self.ca_certs_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        connection.socket = context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )


def _values(entry: Any, name: str) -> list[str]:
    attributes = entry.get("attributes", {})
    for key, value in attributes.items():
        if key.lower() == name.lower():
            if isinstance(value, list | tuple):
                return [str(v) for v in value]
            return [str(value)] if value not in (None, "") else []
    return []


def _close(connection: Connection) -> None:
    # Closing a connection whose TLS handshake failed fails again; the
    # first error is the one worth reporting.
    try:
        connection.unbind()
    except LDAPException:
        return


def _member_dn(value: str) -> str:
    # uniqueMember may carry an optional unique identifier: DN#'0101'B.
    if "#'" in value and value.endswith("'B"):
        return value[: value.rindex("#'")]
    return value


class Directory:
    """
    The directory the approvers are found in.

    Args:
        reactor: Runs the callbacks.
        settings: Where and how.
        pool: The thread pool to use (the directory's own by default).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        settings: DirectorySettings,
        pool: ThreadPool | None = None,
    ) -> None:
        self._reactor = reactor
        self.settings = settings
        self._own_pool = pool is None
        self._pool = pool or ThreadPool(
            minthreads=0, maxthreads=settings.threads, name="hoopgate-ldap"
        )
        parts = urlsplit(settings.url)
        self._host = parts.hostname or ""
        self._ssl = parts.scheme == "ldaps"
        self._port = parts.port or (636 if self._ssl else 389)
        self.where = f"{parts.scheme}://{self._host}:{self._port}"

    # -- life cycle ------------------------------------------------------

    def start(self) -> None:
        """
        Start the directory's thread pool.
        """
        if self._own_pool:
            self._pool.start()

    def stop(self) -> None:
        """
        Stop the directory's thread pool (waits for running lookups).
        """
        if self._own_pool:
            self._pool.stop()

    def _in_pool(self, work: Callable[[], T], what: str) -> Deferred[T]:
        def blocking() -> T:
            try:
                return work()
            except LDAPException as e:
                raise DirectoryUnavailableError(
                    f"the directory at {self.where} failed to {what}: "
                    f"{type(e).__name__}: {e}"
                ) from None

        running: Deferred[T] = deferToThreadPool(self._reactor, self._pool, blocking)
        return running

    # -- questions -------------------------------------------------------

    def members(self, groups: Sequence[str]) -> Deferred[dict[str, Person]]:
        """
        Everyone in any of C{groups} (DNs), by normalised DN.
        """
        chosen = tuple(groups)
        return self._in_pool(lambda: self._members(chosen), "read approver groups")

    def find(self, value: str) -> Deferred[Person | None]:
        """
        The entry whose identity attribute is C{value}, if one is.
        """
        attribute = self.settings.identity_attribute
        return self._in_pool(lambda: self._find(attribute, value), "find an identity")

    def authenticate(self, login: str, password: str) -> Deferred[Person | None]:
        """
        The person whose login and password bind, or C{None}.
        """
        return self._in_pool(
            lambda: self._authenticate(login, password), "check a sign-in"
        )

    # -- blocking work (on the pool) --------------------------------------

    def _connect(self, user: str, password: str) -> Connection | None:
        settings = self.settings
        tls = _VerifiedTls(settings.ca) if (self._ssl or settings.start_tls) else None
        server = Server(
            self._host,
            port=self._port,
            use_ssl=self._ssl,
            tls=tls,
            connect_timeout=settings.timeout,
            get_info="NO_INFO",
        )
        connection = Connection(
            server,
            user=user,
            password=password,
            auto_referrals=False,
            # ldap3 packs it into a socket option as a whole number.
            receive_timeout=max(1, math.ceil(settings.timeout)),
            read_only=True,
            raise_exceptions=False,
        )
        try:
            connection.open()
            if settings.start_tls and not connection.start_tls():
                raise DirectoryUnavailableError(
                    f"the directory at {self.where} refused StartTLS"
                )
            if connection.bind():
                return connection
        except BaseException:
            _close(connection)
            raise
        _close(connection)
        return None

    def _service(self) -> Connection:
        settings = self.settings
        connection = self._connect(settings.bind_dn, settings.bind_password.reveal())
        if connection is None:
            raise DirectoryUnavailableError(
                f"the directory at {self.where} refused the service account "
                f"{settings.bind_dn}"
            )
        return connection

    def _attributes(self) -> list[str]:
        settings = self.settings
        names = ["objectClass", *_MEMBER_ATTRIBUTES, settings.login_attribute]
        names += [settings.mail_attribute, *settings.notify_attributes]
        return names

    def _person(self, entry: Any) -> Person:
        settings = self.settings
        login = _values(entry, settings.login_attribute)
        mail = _values(entry, settings.mail_attribute)
        extra = tuple(
            (name, value)
            for name in settings.notify_attributes
            for value in _values(entry, name)[:1]
        )
        return Person(
            dn=str(entry["dn"]),
            login=login[0] if login else "",
            mail=mail[0] if mail else "",
            attributes=extra,
        )

    def _read(self, connection: Connection, dn: str) -> Any | None:
        found = connection.search(
            dn,
            "(objectClass=*)",
            search_scope=BASE,
            attributes=self._attributes(),
            size_limit=1,
        )
        if not found or not connection.response:
            return None
        return next(
            (r for r in connection.response if r.get("type") == "searchResEntry"), None
        )

    def _search(self, connection: Connection, query: str, limit: int) -> list[Any]:
        connection.search(
            self.settings.people,
            query,
            search_scope=SUBTREE,
            attributes=self._attributes(),
            size_limit=limit,
        )
        result = connection.result or {}
        if result.get("result") not in (0, 4):  # success, size limit exceeded
            raise DirectoryUnavailableError(
                f"the directory at {self.where} refused a search: "
                f"{result.get('description', 'unknown error')}"
            )
        return [
            r for r in connection.response or () if r.get("type") == "searchResEntry"
        ]

    def _members(self, groups: Iterable[str]) -> dict[str, Person]:
        connection = self._service()
        try:
            return _Walk(self, connection).run(groups)
        finally:
            connection.unbind()

    def _find(self, attribute: str, value: str) -> Person | None:
        match = f"({attribute}={escape_filter_chars(value)})"
        query = f"(&{self.settings.person_filter}{match})"
        connection = self._service()
        try:
            entries = self._search(connection, query, 2)
        finally:
            connection.unbind()
        if len(entries) > 1:
            raise DirectoryUnavailableError(
                f"{attribute}={value} matches more than one entry under "
                f"{self.settings.people}"
            )
        return self._person(entries[0]) if entries else None

    def _authenticate(self, login: str, password: str) -> Person | None:
        if not login or not password:
            return None
        person = self._find(self.settings.login_attribute, login)
        if person is None:
            return None
        connection = self._connect(person.dn, password)
        if connection is None:
            return None
        connection.unbind()
        return person


class _Walk:
    """
    One walk through approver groups, breadth first, bounded in depth
    and in the number of people.
    """

    _log = Logger()

    def __init__(self, directory: Directory, connection: Connection) -> None:
        self._directory = directory
        self._connection = connection
        self._people: dict[str, Person] = {}
        self._seen: set[str] = set()

    def run(self, groups: Iterable[str]) -> dict[str, Person]:
        settings = self._directory.settings
        level = list(groups)
        for depth in range(settings.max_depth + 1):
            nested: list[str] = []
            for group in level:
                nested.extend(self._group(group, depth))
            if not nested:
                break
            level = nested
        else:
            if level:
                self._log.warn(
                    "Approver groups nest deeper than {depth} levels; "
                    "{count} groups below that were left out",
                    depth=settings.max_depth,
                    count=len(level),
                )
        return self._people

    def _group(self, group: str, depth: int) -> list[str]:
        key = normalise_dn(group)
        if key in self._seen:
            return []
        self._seen.add(key)
        directory = self._directory
        entry = directory._read(self._connection, group)
        if entry is None:
            self._log.warn("Approver group {group} does not exist", group=group)
            return []

        nested = []
        for attribute in _MEMBER_ATTRIBUTES:
            for value in _values(entry, attribute):
                nested.extend(self._member(_member_dn(value)))
        query = f"(memberOf={escape_filter_chars(group)})"
        limit = directory.settings.max_members
        for found in directory._search(self._connection, query, limit):
            self._add(directory._person(found))
        return nested

    def _member(self, dn: str) -> list[str]:
        if normalise_dn(dn) in self._seen or normalise_dn(dn) in self._people:
            return []
        entry = self._directory._read(self._connection, dn)
        if entry is None:
            return []
        classes = {c.lower() for c in _values(entry, "objectClass")}
        if classes & _GROUP_CLASSES:
            return [dn]
        self._add(self._directory._person(entry))
        return []

    def _add(self, person: Person) -> None:
        limit = self._directory.settings.max_members
        if len(self._people) >= limit:
            raise DirectoryUnavailableError(
                f"approver groups hold more than {limit} people (max_members)"
            )
        self._people.setdefault(person.key, person)
