"""What differs between the hub's two databases, in one place: the store's queries are one
set of SQL strings (``?`` placeholders, the subset SQLite and PostgreSQL share), and the few
fragments that cannot be shared (JSON access, "no limit", the newest revision) come from the
:class:`SqlDialect` of the store's database.

On SQLite the store executes on the :mod:`sqlite3` connection itself, as it always did: no
layer between a request and the database, so SQLite costs what it cost before. On PostgreSQL
it executes on a psycopg 3 connection obtained from a SQLAlchemy engine (its URL, pool and
disconnect detection) through :class:`PgConnection`, which gives the store the same small
interface (``execute``, ``executemany``, rows readable by name and by position).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from edgekit.hub.errors import HubError, Refusal

__all__ = [
    "POSTGRESQL",
    "SQLITE",
    "WRITER_LOCK",
    "Cursor",
    "DbConnection",
    "NeedsWriter",
    "PgConnection",
    "ReadOnlyTransaction",
    "SqlDialect",
    "StoreUnavailable",
]

#: The key of the PostgreSQL advisory lock every hub transaction takes first: one writer at a
#: time across every replica, which is what SQLite's ``BEGIN IMMEDIATE`` gives one process
#: (check-then-write rules such as ``max_hosts`` stay atomic, and events get their
#: revisions in commit order, so a reader never sees revision n+1 before n).
WRITER_LOCK = 0x6564_6765_6B69_7401  # "edgekit" + 1


class Cursor(Protocol):
    """What the store reads from an executed statement."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class DbConnection(Protocol):
    """The store's connection: a :class:`sqlite3.Connection` or a :class:`PgConnection`."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...


class StoreUnavailable(HubError):
    """The database cannot be reached (PostgreSQL restarting, connection lost): the request
    changed nothing and may be retried; the HTTP layer answers 503 with ``Retry-After``."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            Refusal.UNAVAILABLE,
            "StoreUnavailable",
            "the hub's database is not reachable; retry later",
            retry_after=1,
        )
        self.detail = detail


class ReadOnlyTransaction(RuntimeError):
    """A write was attempted inside the store's read-only ``snapshot``: a programming error
    (the request path was wrongly marked read-only), never the client's; it answers 500."""


class NeedsWriter(ReadOnlyTransaction):
    """A read inside a snapshot found a write it must make first (a lazy clean-up such as
    ending a rotated credential's grace): the caller redoes the request under the writer
    lock (:meth:`edgekit.hub.routes.common.Context.read`); uncaught it is as loud as its
    base class."""


class SqlDialect:
    """The SQL fragments one database spells its own way."""

    name: str
    #: The LIMIT parameter that means "no limit".
    no_limit: Any
    #: Appended to a SELECT of rows to delete: lock them, skipping (not waiting for) rows
    #: another transaction holds, so concurrent prunes never wait on, or deadlock with,
    #: each other. Empty on SQLite: one writer at a time, nobody else holds a row.
    skip_locked: str

    def json_text(self, column: str, *keys: str) -> str:
        """SQL for the value at ``keys`` in the JSON text ``column`` (NULL when absent)."""
        raise NotImplementedError

    def json_num(self, column: str, key: str) -> str:
        """SQL for the number at ``key`` in the JSON text ``column`` (NULL when absent or not
        a number on PostgreSQL; SQLite gives whatever is there, as it always did)."""
        raise NotImplementedError

    def json_key(self, column: str) -> str:
        """SQL for the value of the JSON object ``column`` at the key given as a parameter
        (see :meth:`json_key_arg`)."""
        raise NotImplementedError

    def json_key_arg(self, key: str) -> str:
        """The parameter :meth:`json_key` takes for ``key`` (any text: quotes, dots)."""
        raise NotImplementedError

    def has_pair(self, column: str) -> str:
        """SQL true when the JSON object ``column`` has the pair (key ``?``, value ``?``)."""
        raise NotImplementedError

    def json_array_of(self, column: str, select: str) -> str:
        """SQL for the JSON array (text, ``[]`` for none) of ``column`` of the rows of
        ``select``, in ``column`` order."""
        raise NotImplementedError

    def set_json_key(self, column: str, key: str) -> str:
        """SQL for the JSON text ``column`` (``{}`` when NULL) with ``key`` set to the JSON
        text given as a parameter."""
        raise NotImplementedError


class _Sqlite(SqlDialect):
    name = "sqlite"
    no_limit = -1
    skip_locked = ""

    def json_text(self, column: str, *keys: str) -> str:
        return f"json_extract({column}, '$.{'.'.join(keys)}')"

    def json_num(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def json_key(self, column: str) -> str:
        return f"json_extract({column}, ?)"

    def json_key_arg(self, key: str) -> str:
        import json

        return "$." + json.dumps(key)

    def has_pair(self, column: str) -> str:
        # json_each compares keys as values, so any tag key (quotes, dots) is safe.
        return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE key = ? AND value = ?)"

    def json_array_of(self, column: str, select: str) -> str:
        # json_group_array keeps the order of the subquery's rows.
        return f"(SELECT json_group_array({column}) FROM ({select} ORDER BY {column}))"

    def set_json_key(self, column: str, key: str) -> str:
        return f"json_set(COALESCE({column}, '{{}}'), '$.{key}', json(?))"


class _Postgres(SqlDialect):
    name = "postgresql"
    no_limit = None  # LIMIT NULL: no limit
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def json_text(self, column: str, *keys: str) -> str:
        return f"({column}::jsonb #>> '{{{','.join(keys)}}}')"

    def json_num(self, column: str, key: str) -> str:
        value = f"{column}::jsonb -> '{key}'"
        return f"(CASE WHEN jsonb_typeof({value}) = 'number' THEN ({value})::numeric END)"

    def json_key(self, column: str) -> str:
        return f"({column}::jsonb ->> ?)"

    def json_key_arg(self, key: str) -> str:
        return key

    def has_pair(self, column: str) -> str:
        return (
            f"EXISTS (SELECT 1 FROM jsonb_each_text({column}::jsonb) WHERE key = ? AND value = ?)"
        )

    def json_array_of(self, column: str, select: str) -> str:
        agg = f"json_agg({column} ORDER BY {column})::text"
        return f"(SELECT COALESCE({agg}, '[]') FROM ({select}) AS a)"

    def set_json_key(self, column: str, key: str) -> str:
        return f"jsonb_set(COALESCE({column}, '{{}}')::jsonb, '{{{key}}}', ?::jsonb)::text"


SQLITE: SqlDialect = _Sqlite()
POSTGRESQL: SqlDialect = _Postgres()


@functools.lru_cache(maxsize=1024)
def _pg_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled); no query of the
    store has a ``?`` inside a string literal."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Row:
    """A row readable by column name and by position, as :class:`sqlite3.Row` is."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: dict[str, int], values: Sequence[Any]) -> None:
        self._names = names
        self._values = values

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._values[self._names[key]]
        return self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._names)

    def __repr__(self) -> str:
        return f"Row({tuple(self._values)!r})"


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], _Row]:
    names = {d.name: i for i, d in enumerate(cursor.description or ())}
    return functools.partial(_Row, names)


def _unstorable(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _refuse_unstorable(params: Sequence[Any], exc: BaseException) -> None:
    """A 400 for text PostgreSQL cannot hold (NUL, a lone surrogate: psycopg refuses it
    before sending, so the transaction goes on), which only a request can bring (a query
    parameter: bodies are checked by :mod:`edgekit.hub.wire` first); anything else is not
    the client's and propagates."""
    if any(_unstorable(p) for p in params):
        raise HubError(
            Refusal.INVALID,
            "InvalidText",
            "the request holds text with a NUL character or a lone surrogate",
        ) from exc


class PgConnection:
    """The store's PostgreSQL connection: reconnects after a loss, and turns a lost or
    refused connection into :class:`StoreUnavailable` (never a 500)."""

    def __init__(self, engine: Any) -> None:
        import psycopg

        self._engine = engine
        self._errors: tuple[type[BaseException], ...] = (
            psycopg.OperationalError,
            psycopg.InterfaceError,
        )
        self._data_error: type[BaseException] = psycopg.DataError
        self._raw: Any = None
        self._conn: Any = None
        #: Set while a transaction is open: a loss then fails the whole transaction.
        self.in_transaction = False
        #: A loss inside the open transaction: every statement until its end is refused, so
        #: that nothing runs outside it on a new connection (code that catches the error
        #: and goes on writing would otherwise commit half a request).
        self._failed: str | None = None

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._drop()
            try:
                self._raw = self._engine.raw_connection()
            except Exception as exc:
                raise StoreUnavailable(str(exc)) from exc
            conn = self._raw.driver_connection
            conn.autocommit = True  # the store issues BEGIN / COMMIT itself
            conn.row_factory = _row_factory
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._raw is not None:
            # A dead connection may fail to close; it is gone anyway.
            with contextlib.suppress(Exception):
                self._raw.invalidate()
        self._raw = self._conn = None

    def _lost(self, exc: BaseException) -> StoreUnavailable:
        self._drop()
        if self.in_transaction:
            self._failed = str(exc)
        return StoreUnavailable(str(exc))

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        if self._failed is not None:
            raise StoreUnavailable(self._failed)
        conn = self._connection()
        params = tuple(parameters)
        try:
            return conn.execute(_pg_sql(sql), params)
        except self._errors as exc:
            raise self._lost(exc) from exc
        except (ValueError, self._data_error) as exc:
            _refuse_unstorable(params, exc)
            raise

    def executemany(self, sql: str, parameters: Any, /) -> Any:
        if self._failed is not None:
            raise StoreUnavailable(self._failed)
        conn = self._connection()
        try:
            cursor = conn.cursor()
            cursor.executemany(_pg_sql(sql), [tuple(p) for p in parameters])
        except self._errors as exc:
            raise self._lost(exc) from exc
        return cursor

    def begin(self, *, read_only: bool = False, ordered: bool = True) -> None:
        """BEGIN and wait for the hub's writer lock (see :data:`WRITER_LOCK`), in one round
        trip (no parameters: the simple protocol, which takes several statements).

        ``read_only``: ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`` instead, without
        the lock: one snapshot for every statement, and the server refuses any write.
        ``ordered=False``: a plain ``BEGIN`` without the lock, for writes that record no
        event (row locks order them with the other writers)."""
        if self._failed is not None:
            raise StoreUnavailable(self._failed)
        conn = self._connection()
        self.in_transaction = True
        if read_only:
            sql = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        elif not ordered:
            sql = "BEGIN"
        else:
            sql = f"BEGIN; SELECT pg_advisory_xact_lock({WRITER_LOCK})"
        try:
            conn.execute(sql)
        except self._errors as exc:
            raise self._lost(exc) from exc

    def commit(self) -> None:
        """COMMIT; a transaction that lost its connection is refused whole instead."""
        failed, self._failed = self._failed, None
        if failed is not None:
            self.in_transaction = False
            raise StoreUnavailable(failed)
        try:
            self.execute("COMMIT")
        finally:
            # A COMMIT whose answer was lost may have committed: the request answers 503
            # and its retry is idempotent (registration by uid, updates by version).
            self.in_transaction = False
            self._failed = None

    def rollback(self) -> None:
        """ROLLBACK, unless the connection is gone (which rolled the transaction back)."""
        was = self.in_transaction
        self.in_transaction = False
        self._failed = None
        if was and self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("ROLLBACK")
            except self._errors:
                self._drop()

    def close(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):  # closing a connection the server dropped
                self._raw.close()
        self._raw = self._conn = None
        self._engine.dispose()
