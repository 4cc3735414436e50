"""The roll-out tables over a :class:`~edgekit.hub.store.HubStore`: roll-outs, their
clusters per wave and their transitions. Only SQL lives here; the rules are
:mod:`edgekit.hub.domain_rollouts` and :mod:`edgekit.hub.controller`.

Every write joins the caller's transaction (:meth:`HubStore.transaction` is re-entrant): a
transition, the cluster update it records and its event commit as one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from edgekit.hub.store import HubStore

__all__ = [
    "ACTIVE",
    "HostReport",
    "RolloutClusterRow",
    "RolloutRow",
    "RolloutTables",
    "TransitionRow",
]

#: Roll-out states in which the controller still has work (and the clusters stay held).
ACTIVE = ("running", "paused", "rolling-back")

#: One host as a gate sees it: uid, observed generation, phase, message, last seen, and the
#: generation its phase is about (None: reported to a hub before schema 7).
HostReport = tuple[str, int, str | None, str, float, int | None]


@attrs.frozen
class RolloutRow:
    """A roll-out and where it is."""

    name: str
    spec: Mapping[str, Any]  # the kind: Rollout document, as unstructured
    state: str
    wave: int
    wave_state: str
    wave_started: float | None
    soak_started: float | None
    approved: int
    message: str
    created: float
    updated: float
    finished: float | None


@attrs.frozen
class RolloutClusterRow:
    """One cluster of a roll-out: its wave and progress."""

    rollout: str
    cluster_uid: str
    cluster_name: str
    wave: int
    position: int
    state: str
    from_generation: int | None
    to_generation: int | None
    from_profile: Mapping[str, Any] | None
    to_profile: Mapping[str, Any] | None
    rollback_generation: int | None
    started: float | None
    converged: float | None
    finished: float | None
    message: str
    #: The provider image before the roll-out and the one it set (None: no image change).
    from_provider_image: str | None = None
    to_provider_image: str | None = None


@attrs.frozen
class TransitionRow:
    """One recorded transition."""

    id: int
    rollout: str
    time: float
    type: str
    wave: int | None
    cluster: str | None
    data: Mapping[str, Any]


def _rollout(r: Any) -> RolloutRow:
    return RolloutRow(
        name=r["name"],
        spec=json.loads(r["spec"]),
        state=r["state"],
        wave=r["wave"],
        wave_state=r["wave_state"],
        wave_started=r["wave_started"],
        soak_started=r["soak_started"],
        approved=r["approved"],
        message=r["message"],
        created=r["created"],
        updated=r["updated"],
        finished=r["finished"],
    )


def _transition(r: Any) -> TransitionRow:
    return TransitionRow(
        r["id"], r["rollout"], r["time"], r["type"], r["wave"], r["cluster"], json.loads(r["data"])
    )


def _member(r: Any) -> RolloutClusterRow:
    return RolloutClusterRow(
        rollout=r["rollout"],
        cluster_uid=r["cluster_uid"],
        cluster_name=r["cluster_name"],
        wave=r["wave"],
        position=r["position"],
        state=r["state"],
        from_generation=r["from_generation"],
        to_generation=r["to_generation"],
        from_profile=json.loads(r["from_profile"]) if r["from_profile"] else None,
        to_profile=json.loads(r["to_profile"]) if r["to_profile"] else None,
        rollback_generation=r["rollback_generation"],
        started=r["started"],
        converged=r["converged"],
        finished=r["finished"],
        message=r["message"],
        from_provider_image=r["from_provider_image"],
        to_provider_image=r["to_provider_image"],
    )


#: The columns :meth:`RolloutTables.set_rollout` and :meth:`set_cluster` may change.
_ROLLOUT_COLUMNS = frozenset(
    {"state", "wave", "wave_state", "wave_started", "soak_started", "approved", "message"}
    | {"finished"}
)
_CLUSTER_COLUMNS = frozenset(
    {"state", "from_generation", "to_generation", "from_profile", "to_profile"}
    | {"rollback_generation", "started", "converged", "finished", "message"}
    | {"from_provider_image", "to_provider_image"}
)


class RolloutTables:
    """SQL for roll-outs."""

    def __init__(self, store: HubStore) -> None:
        self.store = store
        self._db = store._db  # the store's one connection: same transactions
        self._sql = store.dialect

    def add(
        self,
        name: str,
        spec: Mapping[str, Any],
        members: Sequence[tuple[str, str, int, int]],
        now: float,
    ) -> None:
        """Store a new roll-out and its planned clusters ``(uid, name, wave, position)``."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO rollouts (name, spec, state, created, updated)"
                " VALUES (?, ?, 'running', ?, ?)",
                (name, json.dumps(dict(spec), sort_keys=True), now, now),
            )
            db.executemany(
                "INSERT INTO rollout_clusters (rollout, cluster_uid, cluster_name, wave, position)"
                " VALUES (?, ?, ?, ?, ?)",
                [(name, uid, cname, wave, pos) for uid, cname, wave, pos in members],
            )

    def get(self, name: str) -> RolloutRow | None:
        """One roll-out, or None."""
        row = self._db.execute("SELECT * FROM rollouts WHERE name = ?", (name,)).fetchone()
        return None if row is None else _rollout(row)

    def list_rollouts(self, states: Sequence[str] = ()) -> list[RolloutRow]:
        """Roll-outs (in ``states``), oldest first."""
        if states:
            rows = self._db.execute(
                f"SELECT * FROM rollouts WHERE state IN ({','.join('?' * len(states))})"
                " ORDER BY created, name",
                list(states),
            ).fetchall()
        else:
            rows = self._db.execute("SELECT * FROM rollouts ORDER BY created, name").fetchall()
        return [_rollout(r) for r in rows]

    def set_rollout(self, name: str, now: float, **columns: Any) -> None:
        """Change some of a roll-out's columns."""
        assert set(columns) <= _ROLLOUT_COLUMNS, columns
        sets = ", ".join(f"{c} = ?" for c in columns)
        with self.store.transaction() as db:
            db.execute(
                f"UPDATE rollouts SET {sets}, updated = ? WHERE name = ?",
                [*columns.values(), now, name],
            )

    def clusters(self, name: str, wave: int | None = None) -> list[RolloutClusterRow]:
        """A roll-out's clusters (of one wave), in wave and plan order."""
        if wave is None:
            rows = self._db.execute(
                "SELECT * FROM rollout_clusters WHERE rollout = ? ORDER BY wave, position",
                (name,),
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT * FROM rollout_clusters WHERE rollout = ? AND wave = ? ORDER BY position",
                (name, wave),
            ).fetchall()
        return [_member(r) for r in rows]

    def set_cluster(self, name: str, cluster_uid: str, **columns: Any) -> None:
        """Change some of one roll-out cluster's columns (mappings stored as JSON)."""
        assert set(columns) <= _CLUSTER_COLUMNS, columns
        values = [
            json.dumps(dict(v), sort_keys=True) if isinstance(v, Mapping) else v
            for v in columns.values()
        ]
        sets = ", ".join(f"{c} = ?" for c in columns)
        with self.store.transaction() as db:
            db.execute(
                f"UPDATE rollout_clusters SET {sets} WHERE rollout = ? AND cluster_uid = ?",
                [*values, name, cluster_uid],
            )

    def member_hosts(self, name: str, wave: int | None = None) -> dict[str, list[HostReport]]:
        """cluster uid -> its hosts' reports, for a roll-out's clusters (of one wave), in one
        query: what a gate needs."""
        status = [
            self._sql.json_text("h.status", key)
            for key in ("observedGeneration", "phase", "message", "attemptedGeneration")
        ]
        sql = (
            f"SELECT rc.cluster_uid, h.uid, {', '.join(status[:3])}, h.last_seen, {status[3]}"
            " FROM rollout_clusters rc JOIN hosts h ON h.cluster_uid = rc.cluster_uid"
            " WHERE rc.rollout = ?"
        )
        args: list[Any] = [name]
        if wave is not None:
            sql += " AND rc.wave = ?"
            args.append(wave)
        out: dict[str, list[HostReport]] = {}
        for r in self._db.execute(sql + " ORDER BY h.uid", args).fetchall():
            phase = None if r[3] is None else str(r[3])
            out.setdefault(str(r[0]), []).append(
                (
                    str(r[1]),
                    int(r[2] or 0),
                    phase,
                    str(r[4] or ""),
                    float(r[5]),
                    None if r[6] is None else int(r[6]),
                )
            )
        return out

    def active_holder(self, cluster_uids: Sequence[str]) -> dict[str, str]:
        """cluster uid -> the active roll-out that has it, for the given clusters."""
        if not cluster_uids:
            return {}
        out: dict[str, str] = {}
        # Bounded IN lists: SQLite limits the number of parameters of one statement.
        for i in range(0, len(cluster_uids), 500):
            chunk = list(cluster_uids[i : i + 500])
            rows = self._db.execute(
                "SELECT rc.cluster_uid, r.name FROM rollout_clusters rc"
                " JOIN rollouts r ON r.name = rc.rollout"
                f" WHERE r.state IN ({','.join('?' * len(ACTIVE))})"
                f" AND rc.cluster_uid IN ({','.join('?' * len(chunk))})",
                [*ACTIVE, *chunk],
            ).fetchall()
            out.update({str(r[0]): str(r[1]) for r in rows})
        return out

    def transition(
        self,
        name: str,
        kind: str,
        now: float,
        *,
        wave: int | None = None,
        cluster: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a transition (a trigger makes it a ``rollout`` event)."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO rollout_transitions (rollout, time, type, wave, cluster, data)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, now, kind, wave, cluster, json.dumps(dict(data or {}), sort_keys=True)),
            )

    def wave_events(self, name: str) -> list[tuple[int, str, float]]:
        """A roll-out's ``wave-started`` and ``wave-passed`` transitions ``(wave, type,
        time)``, oldest first: what its ETA is measured from."""
        rows = self._db.execute(
            "SELECT wave, type, time FROM rollout_transitions WHERE rollout = ?"
            " AND type IN ('wave-started', 'wave-passed') ORDER BY id",
            (name,),
        ).fetchall()
        return [(int(r[0]), str(r[1]), float(r[2])) for r in rows]

    def check_verdicts(self, name: str) -> list[TransitionRow]:
        """A roll-out's gate-check verdicts and timeouts (transitions ``gate-check-*``),
        oldest first: the checks' whole record, in the table every transition is in."""
        rows = self._db.execute(
            "SELECT * FROM rollout_transitions WHERE rollout = ?"
            " AND type IN ('gate-check-passed', 'gate-check-failed', 'gate-check-timed-out')"
            " ORDER BY id",
            (name,),
        ).fetchall()
        return [_transition(r) for r in rows]

    def transitions(self, name: str, limit: int = 1000) -> list[TransitionRow]:
        """A roll-out's newest transitions, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM (SELECT * FROM rollout_transitions WHERE rollout = ?"
            " ORDER BY id DESC LIMIT ?) AS newest ORDER BY id",
            (name, limit),
        ).fetchall()
        return [_transition(r) for r in rows]
