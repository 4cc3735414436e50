"""Notebook and text renderings of hub results, and ``to_dataframe()`` with pandas optional."""

from __future__ import annotations

import sys

import pytest

from edgekit.hub.client_clusters import ClusterList, HostSummary, HubCluster
from edgekit.hub.plans import HostChange, UpdatePlan
from edgekit.hub.status import ClusterStatus, HostStatus, conditions

PLAN = UpdatePlan(
    "store-1",
    1,
    2,
    3,
    4,
    (
        HostChange("h-1", "update", "reboot", "cp", "control-plane", ("k3s version 1 -> 2",)),
        HostChange("h-<2>", "release", "none", reasons=("removed from the cluster",)),
    ),
)
CLUSTER = HubCluster(
    "u1",
    "store-1",
    {
        "profile": {"name": "retail", "version": "1.0.0"},
        "machinePoolConfig": [
            {
                "poolConfig": {"name": "cp", "isControlPlane": True},
                "cloudConfig": {"edgeHosts": [{"hostUid": "h-1"}]},
            }
        ],
    },
    labels={"tier": "big"},
    generation=2,
    resource_version=4,
)


def _host(uid: str, observed: int | None, phase: str | None, state: str = "in_use") -> HostStatus:
    return HostStatus(
        uid, "worker", "w", "update", "in_place", 2, observed, phase, None, None, state, None
    )


def test_plan_renders_as_text_and_escaped_html() -> None:
    text = str(PLAN)
    lines = text.splitlines()
    assert lines[0] == "cluster store-1 generation 1 -> 2"
    assert lines[1].split() == ["host", "action", "upgrade", "pool", "role", "why"]
    assert "h-1" in lines[3]
    assert "reboot" in lines[3]
    html = PLAN._repr_html_()
    assert "h-&lt;2&gt;" in html
    assert "<2>" not in html
    assert html.count("<tr>") == 3
    assert UpdatePlan.from_json(PLAN.to_json()) == PLAN


def test_conditions_follow_desired_observed_and_heartbeats() -> None:
    ready = conditions([_host("a", 2, "healthy"), _host("b", 2, "healthy")])
    assert [(c.type, c.status) for c in ready] == [
        ("Ready", True),
        ("Updating", False),
        ("Degraded", False),
    ]
    rolling = conditions([_host("a", 2, "healthy"), _host("b", 1, "applying")])
    assert [c.status for c in rolling] == [False, True, False]
    assert "b" in rolling[1].message
    silent = conditions([_host("a", 2, "healthy", state="unreachable")])
    assert [c.status for c in silent] == [False, False, True]
    failed = conditions([_host("a", 1, "rolled-back"), _host("b", 1, "downloading")])
    assert [c.status for c in failed] == [False, True, True]
    assert failed[2].message == "1 host(s) degraded: a"
    status = ClusterStatus("c", "u", 2, 3, ready, (_host("a", 2, "healthy"),))
    assert ClusterStatus.from_json(status.to_json()) == status
    assert "Ready=True" in str(status).splitlines()[0]


def test_to_dataframe_needs_pandas_only_when_called(monkeypatch: pytest.MonkeyPatch) -> None:
    summary = HostSummary(("state",), (({"state": "ready"}, 3), ({"state": "in_use"}, 2)), 2, 5)
    listed = ClusterList([CLUSTER])
    listed.total = 1
    assert "store-1" in listed._repr_html_()
    assert "retail@1.0.0" in str(listed)
    assert "<table" in summary._repr_html_()
    assert "<table" in CLUSTER._repr_html_()
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(ImportError, match="pip install pandas"):
        summary.to_dataframe()


def test_to_dataframe_with_pandas() -> None:
    pd = pytest.importorskip("pandas")  # optional: the path without it is tested above
    frame = HostSummary(("state",), (({"state": "ready"}, 3),), 1, 3).to_dataframe()
    assert isinstance(frame, pd.DataFrame)
    assert frame.to_dict("records") == [{"state": "ready", "count": 3}]
    assert list(PLAN.to_dataframe()["host"]) == ["h-1", "h-<2>"]
    assert CLUSTER.to_dataframe().iloc[0]["generation"] == 2
