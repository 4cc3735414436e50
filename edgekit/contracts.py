"""Contract test suites: what every backend of a capability must do, as pytest classes.

A backend author subclasses the suite of the capability (its name starting with ``Test``,
so pytest collects it), names the backend class and provides what only they know (a
target their publisher claims, an endpoint their transport reaches); every ``test_*`` of
the suite then runs against the backend through a real :class:`PluginManager`, so the
checks of the boundary apply as in a forge run::

    from edgekit.testing import PublisherContract

    class TestMirror(PublisherContract):
        backend_class = MirrorPublisher

        @pytest.fixture
        def target(self, tmp_path):
            return str(tmp_path / "mirror")

Every built-in backend passes these suites (their tests subclass them). Exported from
:mod:`edgekit.testing`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from edgekit import oci_types as mt
from edgekit.errors import Problem
from edgekit.oci_ref import published_reference
from edgekit.plugins import (
    Artifact,
    Backend,
    BuildContext,
    ImageBuilder,
    ImageBuildRequest,
    InspectIsoRequest,
    IsoAssembler,
    IsoInspection,
    PluginManager,
    Publisher,
    PullRequest,
    PullResult,
    PushArtifactRequest,
    PushImageRequest,
    PushResult,
    ReferrersRequest,
    ReferrersResult,
    RegistrationReceipt,
    RegistrationRequest,
    RegistryOptions,
    SelectedBackend,
    SiteIsoRequest,
    Transport,
    hookimpl,
)
from edgekit.plugins.checks import backend_class_problem
from edgekit.plugins.manager import REGISTRATION_HOOKS

__all__ = [
    "BackendContract",
    "ImageBuilderContract",
    "IsoAssemblerContract",
    "PublisherContract",
    "TransportContract",
    "tiny_layout",
]

_UNKNOWN_OPTION = "edgekit-contract-no-such-option"
_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tiny_layout(path: Path, tag: str) -> str:
    """Write a one-layer OCI image layout at ``path`` tagged ``tag``; its manifest digest."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes) -> tuple[str, int]:
        digest = _sha256(data)
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return digest, len(data)

    layer, layer_size = blob(b"edgekit contract layer\n" * 64)
    config, config_size = blob(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [layer]},
            },
            sort_keys=True,
        ).encode()
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": config, "size": config_size},
            "layers": [{"mediaType": _LAYER, "digest": layer, "size": layer_size}],
        },
        sort_keys=True,
    ).encode()
    digest, size = blob(manifest)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": digest,
                "size": size,
                "annotations": {mt.REF_NAME: tag},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(index))
    return digest


class BackendContract:
    """What every backend does, whatever its capability. ``backend_class`` is yours."""

    backend_class: ClassVar[type[Backend]]
    #: Options the backend accepts (checked to give no problems); {} by default.
    valid_options: ClassVar[Mapping[str, Any]] = {}

    @pytest.fixture
    def plugins(self) -> PluginManager:
        """A manager holding only this backend (built-ins stay out: nothing is shared)."""
        cls = self.backend_class
        hook = REGISTRATION_HOOKS[cls.capability]
        plugin = type(f"{cls.__name__}Plugin", (), {hook: hookimpl(lambda self: [cls])})()
        manager = PluginManager(entry_points=False, disabled="")
        manager.register(plugin, name=f"contract-{cls.name}")
        return manager

    @pytest.fixture
    def backend(self, plugins: PluginManager) -> Backend:
        """The guarded instance a forge run would get."""
        return plugins.backend(self.backend_class.capability, self.backend_class.name)

    @pytest.fixture
    def ctx(self, tmp_path: Path, plugins: PluginManager) -> BuildContext:
        cls = self.backend_class
        return BuildContext(
            base_dir=tmp_path,
            output_dir=tmp_path / "out",
            cache_dir=tmp_path / "cache",
            plugins=plugins,
            selected={cls.capability: SelectedBackend(cls.name, dict(self.valid_options))},
        )

    def test_passes_the_plugin_checks(self) -> None:
        from edgekit.plugins import CAPABILITIES

        cls = self.backend_class
        assert backend_class_problem(cls.capability, CAPABILITIES[cls.capability], cls) is None

    def test_checks_its_options(self) -> None:
        cls = self.backend_class
        assert cls.options_problems(dict(self.valid_options)) == []
        problems = cls.options_problems({_UNKNOWN_OPTION: 1})
        assert problems, "an unknown option must be a problem"
        assert all(isinstance(p, Problem) for p in problems)
        assert any(p.path.startswith(_UNKNOWN_OPTION) for p in problems)


class PublisherContract(BackendContract):
    """A publisher pushes byte-exact, says what it did and pulls back what it pushed.

    Provide a ``target`` fixture: a ``registry.target`` this publisher claims.
    """

    backend_class: ClassVar[type[Publisher]]
    #: Whether ``pull`` fetches images into a layout (artifacts are always pulled).
    pulls_images: ClassVar[bool] = True

    @pytest.fixture
    def target(self, tmp_path: Path) -> str:
        raise NotImplementedError("a PublisherContract subclass provides a target fixture")

    @pytest.fixture
    def registry_options(self) -> RegistryOptions:
        """How to reach :meth:`target` (plain HTTP for a test registry_options, say)."""
        return RegistryOptions()

    def test_claims_its_target(self, target: str, registry_options: RegistryOptions) -> None:
        assert self.backend_class.target_problems(target, registry_options) == []

    def test_push_and_pull_an_artifact(
        self,
        backend: Publisher,
        ctx: BuildContext,
        target: str,
        registry_options: RegistryOptions,
        tmp_path: Path,
    ) -> None:
        data = b"an edgekit contract artifact\n" * 1000
        path = tmp_path / "payload.bin"
        path.write_bytes(data)
        ref = published_reference(target, "contract", "artifact-v1")
        request = PushArtifactRequest(
            path, ref, "application/vnd.edgekit.contract.v1", registry_options, {"k": "v"}
        )
        pushed = backend.push_artifact(request, ctx)
        assert isinstance(pushed, PushResult)
        assert pushed.reference
        assert pushed.digest.startswith("sha256:")
        assert len(pushed.digest) == 71
        dest = tmp_path / "pulled"
        dest.mkdir()
        pulled = backend.pull(PullRequest(pushed.reference, dest, registry_options), ctx)
        assert isinstance(pulled, PullResult)
        files = [p for p in dest.rglob("*") if p.is_file()]
        assert [p.read_bytes() for p in files] == [data]

    def test_push_an_image_byte_exact(
        self,
        backend: Publisher,
        ctx: BuildContext,
        target: str,
        registry_options: RegistryOptions,
        tmp_path: Path,
    ) -> None:
        digest = tiny_layout(tmp_path / "layout", "v1")
        ref = published_reference(target, "contract/image", "v1")
        pushed = backend.push_image(
            PushImageRequest(tmp_path / "layout", "v1", ref, registry_options), ctx
        )
        assert isinstance(pushed, PushResult)
        assert pushed.digest == digest, "an image is pushed byte-exact: its manifest digest"
        if not self.pulls_images:
            return
        dest = tmp_path / "pulled-layout"
        pulled = backend.pull(
            PullRequest(pushed.reference, dest, registry_options, tag="again"), ctx
        )
        assert isinstance(pulled, PullResult)
        assert pulled.digest == digest
        index = json.loads((dest / "index.json").read_text())
        tags = {m["annotations"].get(mt.REF_NAME): m["digest"] for m in index["manifests"]}
        assert tags["again"] == digest

    def test_referrers_when_it_lists_them(
        self,
        backend: Publisher,
        ctx: BuildContext,
        target: str,
        registry_options: RegistryOptions,
        tmp_path: Path,
    ) -> None:
        if type(backend).referrers is Publisher.referrers:
            with pytest.raises(Exception, match="cannot list referrers"):
                backend.referrers(ReferrersRequest("x"), ctx)
            return
        digest = tiny_layout(tmp_path / "layout", "v1")
        ref = published_reference(target, "contract/ref", "v1")
        image = backend.push_image(
            PushImageRequest(tmp_path / "layout", "v1", ref, registry_options), ctx
        )
        (tmp_path / "note.txt").write_text("about the image\n")
        kind = "application/vnd.edgekit.contract.note.v1"
        note = published_reference(target, "contract/ref", "note")
        backend.push_artifact(
            PushArtifactRequest(
                tmp_path / "note.txt", note, kind, registry_options, subject=digest
            ),
            ctx,
        )
        found = backend.referrers(ReferrersRequest(image.reference, registry_options, kind), ctx)
        assert isinstance(found, ReferrersResult)
        assert [d.artifact_type for d in found.descriptors] == [kind]


class ImageBuilderContract(BackendContract):
    """An image builder writes ``request.layout`` tagged ``request.tag`` and returns it.

    Provide a ``build_request`` fixture (an :class:`ImageBuildRequest` it can build here).
    """

    backend_class: ClassVar[type[ImageBuilder]]

    @pytest.fixture
    def build_request(self, tmp_path: Path) -> ImageBuildRequest:
        raise NotImplementedError("an ImageBuilderContract subclass provides build_request")

    def test_builds_the_tagged_image_it_reports(
        self, backend: ImageBuilder, ctx: BuildContext, build_request: ImageBuildRequest
    ) -> None:
        art = backend.build_image(build_request, ctx)
        assert isinstance(art, Artifact)
        assert art.kind == "provider-image"
        assert art.path == build_request.layout
        index = json.loads((art.path / "index.json").read_text())
        tagged = [
            m for m in index["manifests"] if m["annotations"].get(mt.REF_NAME) == build_request.tag
        ]
        assert [m["digest"] for m in tagged] == [art.digest]
        blob = art.path / "blobs" / "sha256" / art.digest.removeprefix("sha256:")
        assert _sha256(blob.read_bytes()) == art.digest


class IsoAssemblerContract(BackendContract):
    """An ISO assembler writes every site ISO, in request order, labelled ``cidata``."""

    backend_class: ClassVar[type[IsoAssembler]]

    def test_site_isos_in_request_order(
        self, backend: IsoAssembler, ctx: BuildContext, tmp_path: Path
    ) -> None:
        requests = [
            SiteIsoRequest(
                site,
                f"#cloud-config\nhostname: {site}\n",
                tmp_path / "sites" / f"{site}.iso",
                f"instance-id: {site}\n",
            )
            for site in ("store-2", "store-1")
        ]
        arts = backend.build_site_isos(requests, ctx)
        assert [a.name for a in arts] == ["site-iso/store-2", "site-iso/store-1"]
        for art, request in zip(arts, requests, strict=True):
            assert art.path == request.dest
            assert _sha256(art.path.read_bytes()) == art.digest
            assert art.size == art.path.stat().st_size
        if type(backend).inspect_iso is IsoAssembler.inspect_iso:
            return
        seen = backend.inspect_iso(InspectIsoRequest(arts[0].path), ctx)
        assert isinstance(seen, IsoInspection)
        assert seen.volume_label.lower() == "cidata"
        assert seen.user_data == requests[0].user_data


class TransportContract(BackendContract):
    """A transport carries a registration and never shows the token.

    Provide an ``endpoint`` fixture (what this transport reaches: a hub URL, a directory
    URI) and a ``token`` fixture (a registration token the endpoint accepts).
    """

    backend_class: ClassVar[type[Transport]]
    #: ``registered`` (the hub answered) or ``pending-import`` (store-and-forward).
    state: ClassVar[str] = "registered"

    @pytest.fixture
    def endpoint(self, tmp_path: Path) -> str:
        raise NotImplementedError("a TransportContract subclass provides an endpoint fixture")

    @pytest.fixture
    def token(self) -> str:
        raise NotImplementedError("a TransportContract subclass provides a token fixture")

    def test_registers_and_keeps_the_token_secret(
        self, backend: Transport, ctx: BuildContext, endpoint: str, token: str
    ) -> None:
        host = {"hostUid": "contract-1", "arch": "amd64"}
        request = RegistrationRequest(endpoint, token, host, retry_for=5)
        receipt = backend.register(request, ctx)
        assert isinstance(receipt, RegistrationReceipt)
        assert (receipt.host_uid, receipt.state) == ("contract-1", self.state)
        if self.state == "registered":
            assert receipt.credential is not None
            assert receipt.record
        for shown in (repr(request), repr(receipt)):
            assert token not in shown
