"""A pytest plugin for people who write edgekit plugins (and for edgekit's own tests).

Installed with edgekit and activated automatically. It gives you a plugin manager that sees
only what you register, so a test exercises your plugin against the real host::

    def test_my_builder_is_found(edgekit_plugins, register_plugin):
        register_plugin(my_plugin_module)
        builder = edgekit_plugins.image_builder("mine")
        ...

Fixtures:

``edgekit_plugins``
    A fresh :class:`~edgekit.plugins.PluginManager` that loads no entry points.
``register_plugin``
    ``register_plugin(plugin, name=None) -> name``: registers into ``edgekit_plugins`` and
    unregisters when the test ends.
``hook_recorder``
    A :class:`HookRecorder` attached to ``edgekit_plugins``: every hook call is recorded.
``forge_project``
    A :class:`ForgeProject`: a project directory and a real ``Forge`` run with the
    built-in backends plus the plugins the test registers (the integration test of a
    backend: ``forge_project.register(my_plugin); forge_project.run(FORGE_YAML)``).
``upgradable_images``
    Session-scoped :class:`UpgradableImages`: the sample provider image built by a real
    forge run in three versions, ``v1`` and ``v2`` (bootable, each with its own
    ``org.opencontainers.image.version`` label, digest and ``/etc/os-release`` ``VERSION``)
    and ``v3``, broken on purpose (its ``/init`` exits, so its kernel panics), for upgrade
    and rollback tests. Built once per session (:func:`build_upgradable_images`); the
    layers and the sample OS come from ``$EDGEKIT_TEST_CACHE`` (default
    ``/tmp/edgekit-test-cache``), so later sessions reuse them.
``install_plugin``
    ``install_plugin(distribution, source, module=..., version="0.1.0") -> Path``: installs
    a real distribution (module files and a ``*.dist-info`` with an ``edgekit`` entry
    point) into a temporary directory on ``sys.path``, so ``PluginManager()`` finds it as
    it finds an installed plugin. Removed, with its imported modules, when the test ends.
    :func:`install_distribution` does the same into a directory you choose (for a
    subprocess, put that directory on ``PYTHONPATH``).

Contract suites (:mod:`edgekit.contracts`): :class:`PublisherContract`,
:class:`ImageBuilderContract`, :class:`IsoAssemblerContract` and :class:`TransportContract`,
pytest classes a backend's tests subclass to check it does what its capability promises
(every built-in backend passes them).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from edgekit.contracts import (
    ImageBuilderContract,
    IsoAssemblerContract,
    PublisherContract,
    TransportContract,
    tiny_layout,
)
from edgekit.plugins.manager import PluginManager

if TYPE_CHECKING:
    from edgekit.forge import Forge, ForgeResult

__all__ = [
    "ForgeProject",
    "HookCall",
    "HookRecorder",
    "ImageBuilderContract",
    "IsoAssemblerContract",
    "PublisherContract",
    "TransportContract",
    "UpgradableImage",
    "UpgradableImages",
    "build_upgradable_images",
    "install_distribution",
    "tiny_layout",
]


@attrs.frozen
class HookCall:
    """One recorded hook call: its name, keyword arguments and the plugins it reached."""

    name: str
    kwargs: Mapping[str, Any]
    plugins: tuple[str, ...]


class HookRecorder:
    """Records every hook call made through a plugin manager until :meth:`close`."""

    def __init__(self, manager: PluginManager) -> None:
        self.calls: list[HookCall] = []
        pm = manager.hook_manager

        def before(hook_name: str, hook_impls: Any, kwargs: Mapping[str, Any]) -> None:
            names = tuple(pm.get_name(i.plugin) or repr(i.plugin) for i in hook_impls)
            self.calls.append(HookCall(hook_name, dict(kwargs), names))

        def after(outcome: Any, hook_name: str, hook_impls: Any, kwargs: Any) -> None:
            return None

        self._undo: Callable[[], None] = pm.add_hookcall_monitoring(before, after)

    def named(self, name: str) -> list[HookCall]:
        """The recorded calls of one hook, in order."""
        return [c for c in self.calls if c.name == name]

    def names(self) -> list[str]:
        """The names of every recorded call, in order."""
        return [c.name for c in self.calls]

    def close(self) -> None:
        """Stop recording."""
        self._undo()


@pytest.fixture
def edgekit_plugins() -> PluginManager:
    """A plugin manager that sees only the plugins a test registers."""
    return PluginManager(entry_points=False, disabled="")


@pytest.fixture
def register_plugin(edgekit_plugins: PluginManager) -> Iterator[Callable[..., str]]:
    """Register plugins into ``edgekit_plugins`` for the duration of one test."""
    names: list[str] = []

    def register(plugin: object, name: str | None = None) -> str:
        registered = edgekit_plugins.register(plugin, name=name)
        names.append(registered)
        return registered

    yield register
    for name in reversed(names):
        if edgekit_plugins.hook_manager.has_plugin(name):
            edgekit_plugins.unregister(name)


@pytest.fixture
def hook_recorder(edgekit_plugins: PluginManager) -> Iterator[HookRecorder]:
    """Record every hook call made through ``edgekit_plugins``."""
    recorder = HookRecorder(edgekit_plugins)
    yield recorder
    recorder.close()


def install_distribution(
    root: Path,
    distribution: str,
    source: str | Mapping[str, str],
    *,
    module: str | None = None,
    version: str = "0.1.0",
    entry_point: str | None = None,
) -> Path:
    """Install a tiny distribution providing an edgekit plugin under ``root``; returns root.

    ``source`` is the text of the module ``module`` (default: the distribution name with
    ``_`` for ``-``), dedented; or a mapping of relative paths to file texts for a package
    (``{"pkg/__init__.py": ..., "pkg/impl.py": ...}``). The entry point is named after the
    module and points at ``entry_point`` (default: the module). What is written is what
    pip writes for a wheel: importable files and a ``*.dist-info`` directory with
    ``METADATA`` and ``entry_points.txt``, which :mod:`importlib.metadata` reads.
    """
    module = module or distribution.replace("-", "_")
    files = {f"{module}.py": source} if isinstance(source, str) else dict(source)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    info = root / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
    )
    (info / "entry_points.txt").write_text(
        f"[edgekit]\n{module.split('.')[0]} = {entry_point or module}\n"
    )
    # The import system caches directory listings; files written a moment ago may be
    # missed without this.
    importlib.invalidate_caches()
    return root


@pytest.fixture
def install_plugin(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Path]]:
    """Install distributions with an edgekit plugin on a temporary ``sys.path`` entry."""
    root = tmp_path_factory.mktemp("site-packages")
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)

    def install(distribution: str, source: str | Mapping[str, str], **kwargs: Any) -> Path:
        return install_distribution(root, distribution, source, **kwargs)

    yield install
    for name in set(sys.modules) - before:
        origin = getattr(sys.modules.get(name), "__file__", None) or ""
        if origin.startswith(str(root)):
            del sys.modules[name]


class ForgeProject:
    """A forge project in a temporary directory, run by a real :class:`~edgekit.forge.Forge`
    with the built-in backends and the plugins a test registers (third-party plugins that
    happen to be installed stay out, so the test sees only what it is about)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        #: The built-ins (from their entry points), and what :meth:`register` adds.
        self.plugins = PluginManager(disabled="1")
        self.output = root / "dist"

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register the plugin under test (a module or an object with hooks)."""
        return self.plugins.register(plugin, name=name)

    def write(self, relative: str, text: str) -> Path:
        """Write a file of the project (dedented), e.g. an overlay or a user-data file."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def forge(self, text: str | None = None) -> Forge:
        """The project's ``edgeforge.yaml`` (written from ``text`` when given), loaded."""
        from edgekit.forge import Forge

        if text is not None:
            self.write("edgeforge.yaml", text)
        return Forge.load(
            self.root / "edgeforge.yaml", output_dir=self.output, plugins=self.plugins
        )

    def run(self, text: str | None = None, **kwargs: Any) -> ForgeResult:
        """Plan and run the project (``Forge.run`` arguments pass through)."""
        return self.forge(text).run(**kwargs)


@pytest.fixture
def forge_project(tmp_path: Path) -> ForgeProject:
    """A :class:`ForgeProject` in ``tmp_path``: ``forge_project.register(my_plugin)``, then
    ``forge_project.run(FORGE_YAML)`` is a real forge run with the built-ins."""
    return ForgeProject(tmp_path / "project")


# --- upgradable images (issue 11 item 5) ----------------------------------------------------

#: The forge file of :func:`build_upgradable_images`: one profile, the sample OS, three images.
UPGRADABLE_FORGE = """\
apiVersion: edgekit/v1
kind: Forge
name: upgradable
profiles:
  - name: sample
    version: 1.0.0
    packs:
      - {name: sample-os, layer: os, version: "12"}
      - {name: edge-k3s, layer: k8s, version: "1.30.4", source: {path: ./k3s}}
images:
"""
_IMAGE = """\
  - name: sample-{v}
    profile: sample
    os: {{distribution: debian, version: "12"}}
    kubernetes: {{distribution: k3s, version: "1.30.4"}}
    base: {{sampleOs: debian-12}}
    repo: edgekit/sample
    reference: localhost/edgekit/sample:{v}
    labels: {{org.opencontainers.image.version: "{v}"}}
    overlays:
{overlays}"""
#: v3's /init: exits at once, so the kernel panics ("Attempted to kill init!") before any
#: hook runs. Neither its agent nor a health check can run: only the boot loader's try
#: count brings the machine back, which is what a rollback test must show.
BROKEN_INIT = """#!/bin/sh
echo "edgekit-init: this is the broken sample image {v}: /init exits, the kernel panics"
exit 1
"""


@attrs.frozen
class UpgradableImage:
    """One version of the sample provider image, in its own OCI layout."""

    version: str
    #: An OCI image layout holding only this image, tagged :attr:`version`.
    layout: Path
    #: The manifest digest (``sha256:...``).
    digest: str
    #: True for the image that must not boot (v3).
    broken: bool

    @property
    def oci(self) -> str:
        """The image as a skopeo/containers transport reference (``oci:LAYOUT:TAG``)."""
        return f"oci:{self.layout}:{self.version}"

    def push(self, registry_host: str, repo: str = "edgekit/sample") -> str:
        """Copy the image to a plain-HTTP registry (digest kept); return ``host/repo:tag``."""
        ref = f"{registry_host}/{repo}:{self.version}"
        _tool(
            "skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false", self.oci,
            f"docker://{ref}",
        )  # fmt: skip
        return ref


@attrs.frozen
class UpgradableImages:
    """What :func:`build_upgradable_images` built."""

    v1: UpgradableImage
    v2: UpgradableImage
    v3: UpgradableImage
    #: The sample OS tree the images' base layer holds (its /boot/vmlinuz and /boot/initrd).
    sample_os: Path


def _tool(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def build_upgradable_images(workdir: Path, *, cache_dir: Path) -> UpgradableImages:
    """Build v1, v2 and the broken v3 of the sample provider image with a real forge run.

    The images differ in their version label (so ``image.json``'s ``version`` differs), in
    an overlay ``/etc/os-release`` (``VERSION=v1``/``v2``, visible on the booted device),
    and so in their digests; v3's overlay replaces ``/init`` with :data:`BROKEN_INIT`.
    Each image is copied (skopeo, digest preserved) into ``workdir/<version>``.
    """
    from edgekit.forge import Forge

    project = workdir / "project"
    (project / "k3s").mkdir(parents=True, exist_ok=True)
    (project / "k3s" / "k3s").write_text("#!/bin/sh\necho 'a placeholder, not Kubernetes'\n")
    text = UPGRADABLE_FORGE
    for v in ("v1", "v2", "v3"):
        files = project / "overlays" / v
        files.mkdir(parents=True, exist_ok=True)
        (files / "os-release").write_text(
            'ID=edgekit-sample\nID_LIKE=debian\nNAME="edgekit sample OS"\nVERSION_ID=12\n'
            f"VERSION={v}\n"
            f'PRETTY_NAME="edgekit sample OS 12 {v} (demos and tests only, NOT production)"\n'
        )
        overlays = f"      - {{source: ./overlays/{v}/os-release, target: /etc/os-release}}\n"
        if v == "v3":
            (files / "init").write_text(BROKEN_INIT.format(v=v))
            (files / "init").chmod(0o755)
            overlays += f"      - {{source: ./overlays/{v}/init, target: /init}}\n"
        text += _IMAGE.format(v=v, overlays=overlays)
    text += "registry: {target: oci:registry}\n"
    (project / "edgeforge.yaml").write_text(text)
    forge = Forge.load(
        project / "edgeforge.yaml",
        output_dir=project / "dist",
        cache_dir=cache_dir,
        plugins=PluginManager(disabled="1"),
    )
    result = forge.run()
    images: dict[str, UpgradableImage] = {}
    for v in ("v1", "v2", "v3"):
        artifact = result.artifacts[f"provider-image/sample-{v}"]
        layout = workdir / v
        if layout.exists():
            shutil.rmtree(layout)
        _tool(
            "skopeo", "copy", "--preserve-digests", f"oci:{artifact.path}:{artifact.reference}",
            f"oci:{layout}:{v}",
        )  # fmt: skip
        index = json.loads((layout / "index.json").read_text())
        digest = str(index["manifests"][0]["digest"])
        if digest != artifact.digest:
            raise RuntimeError(f"skopeo changed the digest of {v}: {artifact.digest} -> {digest}")
        images[v] = UpgradableImage(v, layout, digest, broken=v == "v3")
    tree = cache_dir.resolve() / "sample-os" / "debian-12-amd64"
    return UpgradableImages(images["v1"], images["v2"], images["v3"], sample_os=tree)


@pytest.fixture(scope="session")
def upgradable_images(tmp_path_factory: pytest.TempPathFactory) -> UpgradableImages:
    """v1, v2 and the broken v3 of the sample image (see :func:`build_upgradable_images`)."""
    cache = Path(os.environ.get("EDGEKIT_TEST_CACHE", "/tmp/edgekit-test-cache"))
    return build_upgradable_images(tmp_path_factory.mktemp("upgradable"), cache_dir=cache)


# -- hub fixtures: every hub test on SQLite and on PostgreSQL ------------------------------
#: The store backends the hub fixtures are parametrised over.
HUB_BACKENDS = ("sqlite", "postgresql")


class PostgresServer:
    """A throw-away PostgreSQL server on 127.0.0.1 (Debian's ``postgresql`` package), in a
    temporary directory, for one test session; :meth:`database` makes a fresh database.

    As root, the server runs as the ``postgres`` user (PostgreSQL refuses to run as root).
    ``fsync`` is off (a test never survives a power loss, only process crashes), and unless
    ``durable``, so is ``synchronous_commit`` (a server crash may lose the last commits: fine
    for tests that kill the hub, not the server).
    """

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        import pwd
        import shutil

        self.root = root
        self.bindir = _postgres_bindir()
        self.data = root / "data"
        self.port = _free_port()
        self._count = 0
        self.durable = durable
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            pw = pwd.getpwnam(self._user)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        self._shutil = shutil

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self._user is not None:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")

    def start(self) -> PostgresServer:
        """initdb (once) and start the server; waits until it accepts connections."""
        if not self.data.exists():
            self._run(
                str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
            )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            f" -c synchronous_commit={'on' if self.durable else 'off'} -c full_page_writes=off"
            " -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash: no shutdown checkpoint)."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL for ``database``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def database(self) -> str:
        """A new empty database; returns its URL."""
        self._count += 1
        name = f"hub_{os.getpid()}_{self._count}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop a database :meth:`database` made (closing what is still connected)."""
        name = url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        """Stop the server and remove its files."""
        try:
            self.stop()
        finally:
            self._shutil.rmtree(self.root, ignore_errors=True)


def _postgres_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "the hub tests on PostgreSQL need Debian's postgresql package "
            "(scripts/install-deps --test installs it)"
        )
    return found[-1].parent


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def hub_postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, started when a test first needs it."""
    import tempfile

    server = PostgresServer(Path(tempfile.mkdtemp(prefix="edgekit-pg-"))).start()
    # A SIGTERM (a CI time-out, `timeout`) would end pytest without its teardowns and leave
    # the server running: make it an interrupt, which pytest tears down after.
    previous = signal.getsignal(signal.SIGTERM)

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.signal(signal.SIGTERM, interrupted)
    try:
        yield server
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        server.close()


def _hub_database(request: pytest.FixtureRequest, path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(path / "hub.db")
        return
    server: PostgresServer = request.getfixturevalue("hub_postgres")
    url = server.database()
    try:
        yield url
    finally:
        server.drop(url)


@pytest.fixture(params=HUB_BACKENDS)
def hub_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A hub database for one test, on each backend in turn: a SQLite file path in
    ``tmp_path``, or the URL of a fresh PostgreSQL database (dropped afterwards)."""
    yield from _hub_database(request, tmp_path)


@pytest.fixture(scope="module", params=HUB_BACKENDS)
def hub_db_module(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """:func:`hub_db` shared by a module's tests (for a module-scoped hub)."""
    yield from _hub_database(request, tmp_path_factory.mktemp("hub"))


@pytest.fixture(params=HUB_BACKENDS)
def hub_db_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """``new() -> str``: a fresh hub database per call, on each backend in turn (for tests
    that need many, such as one per Hypothesis example); all dropped afterwards."""
    made: list[str] = []
    server: PostgresServer | None = None
    if request.param == "postgresql":
        server = request.getfixturevalue("hub_postgres")

    def new() -> str:
        url = str(tmp_path / f"hub-{len(made)}.db") if server is None else server.database()
        made.append(url)
        return url

    yield new
    if server is not None:
        for url in made:
            server.drop(url)
