"""The hub's registration tokens: the ``tokens`` table and the sites a token is
bound to (``token_sites``, schema version 4).

A mixin of :class:`~edgekit.hub.store.HubStore` (which provides the connection and the
re-entrant transaction), kept apart so that the store stays one responsibility a module.
Only SQL lives here; the rules are :mod:`edgekit.hub.domain`.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from edgekit.hub.dialects import DbConnection, SqlDialect
from edgekit.hub.records import TokenRecord
from edgekit.hub.security import hash_secret, new_secret

__all__ = ["TokenStore"]


def _select(dialect: SqlDialect) -> str:
    """Every token column, plus its bound sites as a JSON array (sorted; ``[]`` for none)."""
    sites = dialect.json_array_of(
        "site", "SELECT site FROM token_sites WHERE token_uid = tokens.uid"
    )
    return f"SELECT tokens.*, {sites} AS sites FROM tokens"


def _token(row: Any) -> TokenRecord:
    return TokenRecord(
        uid=row["uid"],
        name=row["name"],
        project=row["project"],
        site=row["site"],
        expiry=row["expiry"],
        max_hosts=row["max_hosts"],
        active=bool(row["active"]),
        host_count=row["host_count"],
        created=row["created"],
        sites=tuple(json.loads(row["sites"] or "[]")),
    )


class TokenStore:
    """Registration tokens; mixed into :class:`~edgekit.hub.store.HubStore`."""

    _db: DbConnection
    dialect: SqlDialect

    @functools.cached_property
    def _token_select(self) -> str:
        return _select(self.dialect)

    def transaction(self) -> AbstractContextManager[DbConnection]:
        """One write transaction (the store provides it)."""
        raise NotImplementedError  # pragma: no cover

    def create_token(
        self,
        name: str,
        *,
        expiry: float,
        project: str | None = None,
        site: str | None = None,
        max_hosts: int | None = None,
        sites: Sequence[str] = (),
        now: float | None = None,
    ) -> tuple[TokenRecord, str]:
        """A new token and its secret; only the secret's hash is stored. ``sites``: the
        only sites hosts may register into with it (none: any site)."""
        now = time.time() if now is None else now
        secret = new_secret("ekt_")
        uid = uuid.uuid4().hex
        with self.transaction() as db:
            db.execute(
                "INSERT INTO tokens (uid, name, project, site, secret_hash, expiry, max_hosts,"
                " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (uid, name, project, site, hash_secret(secret), expiry, max_hosts, now),
            )
            db.executemany(
                "INSERT INTO token_sites (token_uid, site) VALUES (?, ?)",
                [(uid, s) for s in sites],
            )
        token = self.get_token(uid)
        assert token is not None
        return token, secret

    def get_token(self, uid: str) -> TokenRecord | None:
        """The token with this uid, or None."""
        row = self._db.execute(self._token_select + " WHERE uid = ?", (uid,)).fetchone()
        return None if row is None else _token(row)

    def list_tokens(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        rows = self._db.execute(self._token_select + " ORDER BY created, uid").fetchall()
        return [_token(r) for r in rows]

    def token_hashes(self) -> list[tuple[str, str]]:
        """(uid, sha256 of the secret) of every token, for schemes keyed on the hash."""
        rows = self._db.execute("SELECT uid, secret_hash FROM tokens ORDER BY uid").fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        """The token whose secret hashes to ``token_hash``, or None."""
        row = self._db.execute(
            self._token_select + " WHERE secret_hash = ?", (token_hash,)
        ).fetchone()
        return None if row is None else _token(row)

    def set_token_active(self, uid: str, active: bool) -> TokenRecord | None:
        """Revoke (``active=False``) or re-enable a token; None if there is no such token."""
        with self.transaction() as db:
            db.execute("UPDATE tokens SET active = ? WHERE uid = ?", (int(active), uid))
        return self.get_token(uid)

    def set_token_expiry(self, uid: str, expiry: float) -> TokenRecord | None:
        """Move a token's expiry (to now, to expire it at once)."""
        with self.transaction() as db:
            db.execute("UPDATE tokens SET expiry = ? WHERE uid = ?", (expiry, uid))
        return self.get_token(uid)

    def delete_token(self, uid: str) -> bool:
        """Delete a token (its site bindings go with it); hosts it registered keep their
        own credentials."""
        with self.transaction() as db:
            return bool(db.execute("DELETE FROM tokens WHERE uid = ?", (uid,)).rowcount > 0)
