"""One validation reports every problem: a field that fails to load hides no other rule.

When some fields of an object do not load, the converter still runs the object's rules with
those fields set to a placeholder; each rule that needs one is skipped alone (``Check.rule``),
so the problems of the other fields show up in the same pass, not after the first fix.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import pkgutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from cli_runner import edgekit

import edgekit.model as model_package
from edgekit import config
from edgekit.errors import ConfigError
from edgekit.model import (
    Cluster,
    ClusterProfile,
    EdgeHost,
    Forge,
    GateCheck,
    HealthGate,
    Pack,
    ProfileRef,
    RegistrationToken,
    Rollout,
    Secret,
    Wave,
    Window,
    _base,
)
from edgekit.model._base import ModelValueError, checks_of
from edgekit.model.selectors import Selector
from edgekit.model.userdata import RegistryMirror, StylusRegistry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def found(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, list[str]]:
    """path -> messages, for asserting on what one validation reported."""
    out: dict[str, list[str]] = {}
    for p in exc.value.problems:
        out.setdefault(p.path, []).append(p.message)
    return out


def assert_reports(got: dict[str, list[str]], expected: dict[str, str]) -> None:
    """Exactly the expected paths, each with a message holding the expected fragment."""
    assert sorted(got) == sorted(expected), got
    for path, fragment in expected.items():
        assert any(fragment in m for m in got[path]), (path, got[path])


# --- a roll-out (the document) ------------------------------------------------------

BAD_ROLLOUT = """\
apiVersion: edgekit/v1
kind: Rollout
name: r1
profile: {name: retail, version: "1.0.0"}
waves:
  - {name: canary, count: 1}
maxUnavailable: 0
gate:
  soak: 5 minutes
  maxFailedClusters: x
  webhook: ftp://x
  checks:
    - {name: smoke}
    - {name: smoke}
"""

ROLLOUT_PROBLEMS = {
    "$.gate.soak": "'5 minutes' is not a duration",
    "$.gate.maxFailedClusters": "expected an integer",
    "$.gate.webhook": "'ftp://x' is not an http(s) URL",
    "$.gate.checks": "two checks are called 'smoke'",
    "$.maxUnavailable": "must be at least 1",
}


def test_rollout_reports_load_and_every_rule_problem_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        config.loads(BAD_ROLLOUT, Rollout)
    assert_reports(found(e), ROLLOUT_PROBLEMS)


def test_validate_reports_the_rollout_problems_in_one_pass(tmp_path: Path) -> None:
    bad = tmp_path / "bad-rollout.yaml"
    bad.write_text(BAD_ROLLOUT)
    proc = edgekit("validate", str(bad))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == f"error: {len(ROLLOUT_PROBLEMS)} problems found:"
    reported = [line.strip().split(":", 1)[0] for line in lines[1:]]
    assert sorted(reported) == sorted(ROLLOUT_PROBLEMS)


def test_rollout_window_and_wave_rules_survive_an_unloadable_neighbour() -> None:
    doc = """\
kind: Rollout
name: r1
profile: {name: retail, version: "1.0.0"}
waves:
  - {name: canary, count: many, percent: 150, clusters: [bad name]}
window: {cron: "0 2 * *", duration: [4h], timezone: Mars/Olympus}
onFailure: explode
"""
    with pytest.raises(ConfigError) as e:
        config.loads(doc, Rollout)
    assert_reports(
        found(e),
        {
            "$.waves[0].count": "expected an integer",
            "$.waves[0].percent": "150.0 is not in (0, 100]",
            "$.waves[0].clusters[0]": "'bad name' is not a cluster name",
            "$.window.duration": "expected a string",
            "$.window.cron": "is not five cron fields",
            "$.window.timezone": "'Mars/Olympus' is not an IANA time zone",
            "$.onFailure": "not one of",
        },
    )


# --- a forge file ---------------------------------------------------------------------------

QUICKSTART = (EXAMPLES / "quickstart" / "edgeforge.yaml").read_text()


def _forge_doc() -> str:
    doc = QUICKSTART
    for old, new in [
        # Forge: an unloadable name, and two sites of one name.
        ("name: quickstart\n", "name: 7\n"),
        ("  - name: store-0043\n", "  - name: store-0042\n"),
        # An images entry: an unloadable profile, a relative path to remove, no repo.
        ("    profile: retail\n", "    profile: 5\n    remove: [etc/motd]\n"),
        ("    repo: edgekit/sample\n", ""),
        # The ISO: an unloadable name, a bad volume label, a relative kernel path.
        ("  name: edgekit-installer\n", "  name: [x]\n  kernelPath: boot/vmlinuz\n"),
        ("volumeLabel: COS_LIVE", "volumeLabel: cos live"),
        # Registration: an unloadable endpoint, a token where its variable's name belongs.
        ("endpoint: http://10.0.2.2:8080", "endpoint: {url: x}"),
        ("tokenEnv: EDGEKIT_REGISTRATION_TOKEN", "tokenEnv: s3cr3t-t0ken"),
    ]:
        assert doc.count(old) == 1, old
        doc = doc.replace(old, new)
    return doc


def test_forge_reports_load_and_every_rule_problem_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        config.loads(_forge_doc(), Forge)
    assert_reports(
        found(e),
        {
            "$.name": "expected a string",
            "$.sites": "name 'store-0042' is used more than once",
            "$.images[0].profile": "expected a string",
            "$.images[0].remove[0]": "'etc/motd' is not an absolute path inside the image",
            "$.images[0].repo": "required unless reference is given",
            "$.iso.name": "expected a string",
            "$.iso.volumeLabel": "must be 1-32 characters of A-Z, 0-9 and _",
            "$.iso.kernelPath": "'boot/vmlinuz' is not an absolute path inside the image",
            "$.registration.endpoint": "expected a string",
            "$.registration.tokenEnv": "must be the name of an environment variable",
        },
    )
    assert "s3cr3t" not in str(e.value)


# --- a cluster profile and a cluster --------------------------------------------------------


def test_profile_reports_load_and_every_rule_problem_at_once() -> None:
    doc = """\
kind: ClusterProfile
name: 5
version: "1.2"
packs:
  - {name: os, layer: os, version: "1"}
  - {name: k8s, layer: k8s, version: "1.30.4"}
  - {name: os, layer: cni, version: "1"}
"""
    with pytest.raises(ConfigError) as e:
        config.loads(doc, ClusterProfile)
    assert_reports(
        found(e),
        {
            "$.name": "expected a string",
            "$.version": "'1.2' is not a semantic version such as 1.0.0",
            "$.packs": "pack name 'os' is used more than once",
        },
    )


def test_pack_reports_load_and_every_rule_problem_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        config.structure({"name": 5, "layer": "os", "version": " "}, Pack)
    assert_reports(
        found(e),
        {"$.name": "expected a string", "$.version": "must not be empty or blank"},
    )


def test_cluster_reports_load_and_every_rule_problem_at_once() -> None:
    doc = """\
kind: Cluster
name: Store_42
profile: {name: retail, version: 1.0.0}
controlPlane:
  name: [cp]
  hosts:
    - {uid: h1, staticIp: 10.0.10.21/24}
    - {uid: h1, staticIp: 10.0.10.22/24}
    - {uid: h3, staticIp: 10.0.10.23/24}
workers:
  - name: w
    hosts:
      - {uid: 5, staticIp: 10.0.10.30}
twoNode: maybe
overlayCidr: 100.64.0.0/40
"""
    with pytest.raises(ConfigError) as e:
        config.loads(doc, Cluster)
    assert_reports(
        found(e),
        {
            "$.name": "'Store_42' is not a DNS label",
            "$.controlPlane.name": "expected a string",
            "$.controlPlane.hosts": "host 'h1' is listed more than once",
            "$.workers[0].hosts[0].uid": "expected a string",
            "$.workers[0].hosts[0].staticIp": "'10.0.10.30' needs a prefix length",
            "$.twoNode": "expected true or false",
            "$.overlayCidr": "'100.64.0.0/40' is not a network in CIDR form",
        },
    )


# --- every rule of the model is fenced ------------------------------------------------------


def _model_classes() -> list[type]:
    """The attrs classes defined in edgekit.model's modules that have rules."""
    found: set[type] = set()
    for info in pkgutil.iter_modules(model_package.__path__):
        module = importlib.import_module(f"edgekit.model.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (
                obj.__module__ == module.__name__
                and attrs.has(obj)
                and getattr(obj, "__attrs_post_init__", None) is not None
            ):
                found.add(obj)
    return sorted(found, key=lambda cls: cls.__qualname__)


def _walk(value: Any) -> Iterator[Any]:
    if attrs.has(type(value)):
        yield value
        for a in attrs.fields(type(value)):
            yield from _walk(getattr(value, a.name))
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _walk(v)


@functools.cache
def _valid_instances() -> dict[type, list[Any]]:
    """Valid objects of every model class with rules, from the examples and a few built here."""
    roots: list[Any] = [
        config.load(EXAMPLES / "quickstart" / "edgeforge.yaml"),
        config.load(EXAMPLES / "forge-matrix.yaml"),
        config.load(EXAMPLES / "cluster-store.yaml"),
        config.load(EXAMPLES / "profile-retail.yaml"),
        config.load(EXAMPLES / "site-store.yaml"),
        config.load(EXAMPLES / "user-data.yaml"),
        Rollout(
            "r1",
            ProfileRef("retail", "1.0.0"),
            clusters=Selector(tags={"tier": "store"}, profile="retail"),
            waves=(Wave("canary", clusters=("store-1",)), Wave("ten", percent=10), Wave("rest")),
            gate=HealthGate(
                soak="5m", webhook="https://hooks.example.com/w", checks=(GateCheck("smoke"),)
            ),
            window=Window("0 2 * * *", "4h", "America/Chicago"),
            provider_image="registry.example.com/edge/ubuntu:k3s",
        ),
        EdgeHost("edge-7f3a", site="store-1", mac="52:54:00:12:34:56", address="10.0.0.5"),
        RegistrationToken("t1", Secret("secret-value"), site="store-1", max_hosts=3),
        StylusRegistry({"docker.io": RegistryMirror("https://mirror.example.com:5000/v2")}),
    ]
    forge = roots[0]
    roots.extend(forge.expand_images())
    out: dict[type, list[Any]] = {}
    for root in roots:
        for obj in _walk(root):
            out.setdefault(type(obj), []).append(obj)
    return out


# The placeholder is used as _base.INVALID, never imported by name: pytest looks at a test
# module's names while collecting, and any look at the placeholder raises Unavailable.
def _with_invalid(obj: Any, name: str) -> Any:
    # As the converter's partial path assembles an object: no constructor, the field that did
    # not load set to the placeholder, every other field as it is.
    copy: Any = object.__new__(type(obj))
    for a in attrs.fields(type(obj)):
        object.__setattr__(copy, a.name, _base.INVALID if a.name == name else getattr(obj, a.name))
    return copy


def test_every_model_class_with_rules_is_covered() -> None:
    missing = [c.__qualname__ for c in _model_classes() if c not in _valid_instances()]
    assert missing == []


def test_no_rule_stops_the_others_on_an_unloadable_field() -> None:
    # With one field a placeholder, the rules must reach the end (Check.done): returning, or
    # raising ModelValueError with what they found. Anything else (Unavailable, a TypeError
    # from re or ipaddress) means a rule touching that field ended every later rule.
    instances = _valid_instances()
    stopped = []
    for cls in _model_classes():
        for obj in instances[cls][:3]:
            for a in attrs.fields(cls):
                if a.metadata.get("open"):
                    continue  # the converter always gives an open mapping ({} at worst)
                copy = _with_invalid(obj, a.name)
                finished: list[bool] = []

                def run(copy: Any = copy, done: list[bool] = finished) -> None:
                    with contextlib.suppress(ModelValueError):
                        copy.__attrs_post_init__()
                    done.append(True)

                checks_of(run)
                if not finished:
                    stopped.append(f"{cls.__qualname__}.{a.name}")
    assert sorted(set(stopped)) == []
