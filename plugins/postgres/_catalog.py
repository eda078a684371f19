"""
Column lineage: which table and column a result column comes from.

A RowDescription names each column's table by OID and its column by
number.  Masking rules name tables and columns, so the gateway maps the
numbers to names with catalog queries on a connection of its own, one
per target, and caches the answer per table for a short while (a table
renamed since is seen again once the entry expires).

test-case-name: tests.integration.test_postgres_lineage
"""

from __future__ import annotations

from collections import deque
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from hoopgate.plugin import Credential, TargetConfig
from hoopgate_plugins.postgres import _codec as pg
from hoopgate_plugins.postgres._upstream import Details, ServerConnection

B = pg.BackendType

_TTL = 60.0

_QUERY = (
    "select a.attrelid, n.nspname, c.relname, a.attnum, a.attname "
    "from pg_catalog.pg_attribute a "
    "join pg_catalog.pg_class c on c.oid = a.attrelid "
    "join pg_catalog.pg_namespace n on n.oid = c.relnamespace "
    "where a.attrelid in ({oids}) and a.attnum > 0"
)


class CatalogError(Exception):
    """
    The catalog could not be read (the caller fails closed).
    """


@frozen
class Table:
    """
    A table's name and its columns by number.

    Attributes:
        relation: C{schema.name}, quoted as statement parts quote it.
        columns: Column numbers to names.
    """

    relation: str
    columns: dict[int, str]


def _quote(part: str) -> str:
    plain = part.isidentifier() and part == part.lower() and part.isascii()
    if plain:
        return part
    escaped = part.replace('"', '""')
    return f'"{escaped}"'


def relation_name(schema: str, name: str) -> str:
    """
    A relation's name as the SQL classifier renders it.
    """
    return f"{_quote(schema)}.{_quote(name)}"


class _Reader:
    """
    The catalog's own connection: runs one query at a time.
    """

    _log = Logger()

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._queue: deque[tuple[str, Deferred[list[list[bytes | None]]]]] = deque()
        self._rows: list[list[bytes | None]] = []
        self._error = ""
        self._ready = False
        self.server: ServerConnection | None = None

    def run(self, sql: str) -> Deferred[list[list[bytes | None]]]:
        result: Deferred[list[list[bytes | None]]] = Deferred()
        self._queue.append((sql, result))
        if self._ready and len(self._queue) == 1:
            self._send()
        return result

    def _send(self) -> None:
        assert self.server is not None
        self.server.write(pg.query(self._queue[0][0]))

    def upstream_failed(self, sqlstate: str, text: str, why: str) -> None:
        self._fail_all(f"{text}: {why}")

    def upstream_authenticated(self) -> None:
        return

    def upstream_ready(self, greeting: bytes, details: Details) -> None:
        self._ready = True
        if self._queue:
            self._send()

    def parameter_changed(self, name: str, value: str) -> None:
        return

    def from_server(self, reader: pg.BackendReader) -> None:
        for frame in reader:
            if frame.type == B.DATA_ROW:
                self._rows.append(pg.parse_data_row(frame.payload))
            elif frame.type == B.ERROR_RESPONSE:
                fields = pg.parse_fields(frame.payload)
                self._error = f"{fields.get('C', '?')}: {fields.get('M', '')}"
            elif frame.type == B.READY_FOR_QUERY:
                self._finish()

    def _finish(self) -> None:
        rows, self._rows = self._rows, []
        error, self._error = self._error, ""
        if not self._queue:
            return
        _, result = self._queue.popleft()
        if self._queue:
            self._send()
        if error:
            result.errback(CatalogError(error))
        else:
            result.callback(rows)

    def upstream_closed(self) -> None:
        self._fail_all("the catalog connection closed")

    def _fail_all(self, why: str) -> None:
        self._ready = False
        self._catalog.reader_lost(self)
        queue, self._queue = self._queue, deque()
        for _, result in queue:
            result.errback(CatalogError(why))


class Catalog:
    """
    Table and column names of one target, looked up and cached.

    Args:
        reactor: Connects and keeps time.
        target: The target.
        credential: The credential set the lookups log in with.
    """

    _log = Logger()

    def __init__(
        self, reactor: Any, target: TargetConfig, credential: Credential
    ) -> None:
        self._reactor = reactor
        self._target = target
        self._credential = credential
        self._tables: dict[int, tuple[float, Table | None]] = {}
        self._reader: _Reader | None = None

    def known(self, oids: set[int]) -> dict[int, Table | None] | None:
        """
        The cached tables, if every one of C{oids} is cached and fresh.
        """
        now = self._reactor.seconds()
        found: dict[int, Table | None] = {}
        for oid in oids:
            entry = self._tables.get(oid)
            if entry is None or entry[0] < now:
                return None
            found[oid] = entry[1]
        return found

    def lookup(self, oids: set[int]) -> Deferred[dict[int, Table | None]]:
        """
        The tables of C{oids} (C{None} for an OID that is no table).
        """
        sql = _QUERY.format(oids=", ".join(str(int(o)) for o in sorted(oids)))

        def store(rows: list[list[bytes | None]]) -> dict[int, Table | None]:
            return self._store(oids, rows)

        return self._connection().run(sql).addCallback(store)

    def _store(
        self, oids: set[int], rows: list[list[bytes | None]]
    ) -> dict[int, Table | None]:
        tables: dict[int, Table | None] = dict.fromkeys(oids)
        for relid, schema, name, number, column in rows:
            assert relid and schema and name and number and column
            oid = int(relid)
            table = tables.get(oid)
            if table is None:
                relation = relation_name(schema.decode(), name.decode())
                table = tables[oid] = Table(relation, {})
            table.columns[int(number)] = column.decode()
        expires = self._reactor.seconds() + _TTL
        for oid, table in tables.items():
            self._tables[oid] = (expires, table)
        return tables

    def _connection(self) -> _Reader:
        if self._reader is None:
            reader = _Reader(self)
            settings = self._target.settings
            reader.server = ServerConnection.connect(
                self._reactor,
                self._target,
                self._credential,
                parameters={
                    "user": self._credential.user,
                    "database": getattr(settings, "database", ""),
                    "application_name": "hoopgate/catalog",
                    "client_encoding": "UTF8",
                },
                client=reader,
                label=f"the catalog of {self._target.name}",
            )
            self._reader = reader
        return self._reader

    def reader_lost(self, reader: _Reader) -> None:
        """
        The connection ended; the next lookup opens another.
        """
        if self._reader is reader:
            self._reader = None


_catalogs: dict[tuple[str, str, int], Catalog] = {}


def catalog_for(reactor: Any, target: TargetConfig, credential: Credential) -> Catalog:
    """
    The catalog of a target, shared by its sessions.
    """
    key = (target.name, target.host, target.port)
    catalog = _catalogs.get(key)
    if catalog is None:
        catalog = _catalogs[key] = Catalog(reactor, target, credential)
    return catalog
