"""The hub's store: one connection, short transactions, on SQLite (the default) or
PostgreSQL (:mod:`edgekit.hub.dialects` says what differs; the queries are one set).

On SQLite:

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. A commit is
appended to the WAL before the call returns, so once the hub has answered a request the
change survives the hub process being killed (SIGKILL, OOM, crash); only a power loss or
kernel crash can drop the last few commits, because NORMAL does not fsync the WAL on every
commit. Pass ``synchronous="FULL"`` for power-loss durability at a lower write rate.

On PostgreSQL a commit is durable when the call returns (the server's
``synchronous_commit``), and a lost connection makes the request fail whole with
:class:`~edgekit.hub.dialects.StoreUnavailable` (503) and reconnects on the next one.

The store is not thread-safe by design: the server calls it from its one event-loop thread,
which makes every transaction (including the ``max_hosts`` check) trivially atomic.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from edgekit.errors import EdgekitError
from edgekit.hub.dialects import (
    POSTGRESQL,
    SQLITE,
    DbConnection,
    PgConnection,
    ReadOnlyTransaction,
    SqlDialect,
    StoreUnavailable,
)
from edgekit.hub.errors import HubError
from edgekit.hub.migrations import (
    LEGACY_VERSION,
    MIGRATIONS,
    SCHEMA_VERSION,
    current_revision,
    open_postgres,
    parse_url,
    redact,
    upgrade,
)
from edgekit.hub.records import (
    DEFAULT_UNREACHABLE_AFTER,
    HOST_STATES,
    ClusterRecord,
    HostFields,
    HostRecord,
    HostSecrets,
    PoolAssignment,
    TokenRecord,
)
from edgekit.hub.sql_clusters import statements
from edgekit.hub.store_hosts import HostStore
from edgekit.hub.store_tokens import TokenStore

__all__ = [
    "DEFAULT_UNREACHABLE_AFTER",
    "HOST_STATES",
    "SCHEMA_VERSION",
    "ApiError",
    "ClusterRecord",
    "HostFields",
    "HostRecord",
    "HostSecrets",
    "HubStore",
    "PoolAssignment",
    "ReadOnlyTransaction",
    "StoreError",
    "TokenRecord",
]


class StoreError(EdgekitError):
    """The hub's database cannot be opened or is from a newer edgekit."""


#: The name this module used for :class:`~edgekit.hub.errors.HubError` before the layers.
ApiError = HubError


def _create_private(path: Path) -> None:
    """Create an absent database file readable by its owner only (0600).

    SQLite gives the ``-wal`` and ``-shm`` files the database file's mode, so they are 0600
    too. An existing file keeps its mode: the administrator chose it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"hub database {path} cannot be created: {exc.strerror}") from None
    os.close(fd)


class HubStore(HostStore, TokenStore):
    """All hub state in one database (the hosts and clusters: :class:`HostStore`; the token
    tables: :class:`TokenStore`).

    ``url``: ``sqlite:///PATH`` or a plain file path (the default kind), or
    ``postgresql://USER@HOST:PORT/DB`` (needs ``pip install 'edgekit[postgresql]'``).
    """

    def __init__(
        self, url: str | os.PathLike[str], *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    ) -> None:
        self.url = os.fspath(url)
        self._depth = 0
        #: Set while a :meth:`snapshot` is the open transaction (see :meth:`in_snapshot`).
        self._read_only = False
        #: Set while an :meth:`unordered` write is the open transaction.
        self._unordered = False
        kind, target = parse_url(url)
        self.dialect: SqlDialect = POSTGRESQL if kind == "postgresql" else SQLITE
        self._pg: PgConnection | None = None
        self._db: DbConnection
        if kind == "postgresql":
            self.path = None
            self._pg = open_postgres(target)
            self._db = self._pg
            try:
                self._migrate_alembic()
            except StoreUnavailable as exc:
                self._pg.close()
                raise StoreError(
                    f"hub database {redact(target)} cannot be opened: {exc.detail}"
                ) from None
            return
        self.path = Path(target)
        _create_private(self.path)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so each write
        # transaction takes the write lock up front and never deadlocks on upgrade.
        try:
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._db = db
            db.row_factory = sqlite3.Row
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"hub database {self.path}: cannot use WAL mode (got {mode})")
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"hub database {self.path} cannot be opened: {exc}") from exc

    # -- plumbing ----------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        if self._pg is not None:
            self._pg.close()
        else:
            self._sqlite.close()

    @property
    def _sqlite(self) -> sqlite3.Connection:
        assert isinstance(self._db, sqlite3.Connection)
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[DbConnection]:
        """One write transaction, rolled back on any exception: ``BEGIN IMMEDIATE`` on
        SQLite; on PostgreSQL ``BEGIN`` and the hub's writer lock (one writer at a time
        across replicas: :data:`~edgekit.hub.dialects.WRITER_LOCK`).

        Re-entrant: the store's own writes inside it join it, so a whole request (every
        check, every write, the answer's rendering) commits or rolls back as one.
        """
        if self._depth:
            if self._read_only:
                # A bug in the caller, not the client's doing: never silently widen a
                # snapshot (no writer lock on PostgreSQL) into a write.
                raise ReadOnlyTransaction("a write was attempted inside a read-only snapshot")
            if self._unordered:
                raise ReadOnlyTransaction(
                    "an ordered write was attempted inside an unordered one (no writer lock)"
                )
            with self._joined():
                yield self._db
            return
        with self._outermost(read_only=False):
            yield self._db

    @contextmanager
    def unordered(self) -> Iterator[DbConnection]:
        """One write transaction for statements that record no event (a heartbeat's
        ``last_seen``): on PostgreSQL a plain ``BEGIN`` *without* the writer lock, so
        replicas' heartbeats do not queue behind one another or behind a long write; row
        locks order them with the writers. The lock exists to commit event revisions in
        order, and these statements fire no event trigger (the caller's promise: a write
        that changes an evented column must use :meth:`transaction`). On SQLite
        ``BEGIN IMMEDIATE`` as :meth:`transaction`.

        Inside an open transaction it joins it; :meth:`transaction` inside it fails loudly
        (:class:`ReadOnlyTransaction`), as inside a :meth:`snapshot`."""
        if self._depth:
            if self._read_only:
                raise ReadOnlyTransaction("a write was attempted inside a read-only snapshot")
            with self._joined():
                yield self._db
            return
        with self._outermost(read_only=False, ordered=False):
            yield self._db

    @contextmanager
    def snapshot(self) -> Iterator[DbConnection]:
        """One read-only transaction: every statement in it sees the same committed state.

        On PostgreSQL ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`` and *no* writer
        lock, so replicas answer reads in parallel with each other and with the one writer
        (a read-only repeatable-read transaction never fails to serialize). Writers commit
        one at a time under the lock and release it only after their commit is visible, so
        a snapshot holds a prefix of the commit order: it never sees event revision n+1
        without n. On SQLite ``BEGIN IMMEDIATE`` as :meth:`transaction` (one process, one
        thread: nothing to gain), with ``PRAGMA query_only`` for its duration.

        A write inside it fails loudly: :class:`ReadOnlyTransaction` for the store's own
        write methods, the database's read-only error for any other statement. Inside an
        open :meth:`transaction` it joins that transaction (reading one's own writes).
        """
        if self._depth:
            with self._joined():
                yield self._db
            return
        with self._outermost(read_only=True):
            yield self._db

    @property
    def in_snapshot(self) -> bool:
        """True while the open transaction is a :meth:`snapshot` (writes are refused)."""
        return self._read_only

    @contextmanager
    def _joined(self) -> Iterator[None]:
        """A nested transaction or snapshot: part of the open one, which commits it."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    @contextmanager
    def _outermost(self, *, read_only: bool, ordered: bool = True) -> Iterator[None]:
        pg = self._pg
        if pg is None:
            self._db.execute("BEGIN IMMEDIATE")
            if read_only:
                self._db.execute("PRAGMA query_only=ON")
        else:
            try:
                pg.begin(read_only=read_only, ordered=ordered)
            except BaseException:
                pg.rollback()
                raise
        self._depth = 1
        self._read_only = read_only
        self._unordered = not ordered
        try:
            yield
        except BaseException:
            self._depth = 0
            self._read_only = False
            self._unordered = False
            if pg is None:
                if read_only:
                    self._db.execute("PRAGMA query_only=OFF")
                self._db.execute("ROLLBACK")
            else:
                pg.rollback()
            raise
        self._depth = 0
        self._read_only = False
        self._unordered = False
        if pg is None:
            if read_only:
                self._db.execute("PRAGMA query_only=OFF")
            self._db.execute("COMMIT")
        else:
            pg.commit()

    _write = transaction

    def _migrate(self) -> None:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"hub database {self.path} has schema version {version}; this edgekit knows up to "
                f"{SCHEMA_VERSION}: upgrade edgekit",
            )
        # The chain every SQLite file was made with, up to schema 6; Alembic from there.
        for step in range(version, min(SCHEMA_VERSION, LEGACY_VERSION)):
            with self._write() as db:
                for statement in statements(MIGRATIONS[step]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={step + 1}")
        self._migrate_alembic()

    def _migrate_alembic(self) -> None:
        """Bring the database to the newest Alembic revision (nothing to do, and no Alembic
        import, when it is there already: the common case of every start)."""
        where = self.path if self.path is not None else redact(self.url)
        current = current_revision(self._db, self.dialect)
        if current is not None and int(current) > SCHEMA_VERSION:
            raise StoreError(
                f"hub database {where} has schema version {int(current)}; this edgekit knows "
                f"up to {SCHEMA_VERSION}: upgrade edgekit",
            )
        stamp = None
        if current is None and self._pg is None:
            # An SQLite file of an edgekit before Alembic (schema 6, or 7 with the roll-outs'
            # staging table): it is at the revision its user_version names.
            stamp = f"{int(self._db.execute('PRAGMA user_version').fetchone()[0]):04d}"
            current = stamp
        if current is None or int(current) < SCHEMA_VERSION:
            upgrade(self.url if self._pg is not None else f"sqlite:///{self.path}", stamp=stamp)
        elif stamp is not None:
            upgrade(f"sqlite:///{self.path}", stamp=stamp)
        if self._pg is None:
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        """The database's schema version (its Alembic revision; SQLite: ``user_version``)."""
        if self._pg is None:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])
        current = current_revision(self._db, self.dialect)
        return 0 if current is None else int(current)

    # -- settings ----------------------------------------------------------------------
    def get_setting(self, key: str) -> str | None:
        """A stored setting, or None."""
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        """Store a setting, replacing any earlier value."""
        with self._write() as db:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
