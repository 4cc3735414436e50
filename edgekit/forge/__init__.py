"""The EdgeForge pipeline: from a forge file to provider images, ISOs and a manifest.

``Forge.plan()`` turns a forge file into ordered steps with content-addressed cache keys;
``Forge.run()`` executes the steps whose key changed and writes ``manifest.json``. Each site
has its own steps, ``site-iso/<site>`` and ``publish/site-iso/<site>``.

The implementation is split by responsibility: :mod:`.pipeline` (inputs and planning),
:mod:`.runner` (scheduling, state, manifest), :mod:`.sites` (per-site building and
publishing), :mod:`.tasks` (steps as picklable callables over their inputs),
:mod:`.workers` (their context and plugins in any process), :mod:`.farm` (any executor,
a Dask cluster's included), :mod:`.inputs` (content digests), :mod:`.plan` (steps, plans,
results and how they render) and :mod:`.progress` (live progress bars).
"""

from __future__ import annotations

from .inputs import DigestCache
from .pipeline import KIND_ALIASES, STATE_DIR, STEP_KINDS, Forge
from .plan import ForgeEvent, ForgeResult, Plan, Step, StepFinished, StepStarted
from .runner import ISO_ARTIFACT_TYPE, MANIFEST, artifact_to_json
from .sites import SITE_ISO_ARTIFACT_TYPE, FleetPublisher

#: The CLI's ``--json`` serialises artifacts as manifest.json does, with this (old name).
_artifact_to_json = artifact_to_json

__all__ = [
    "ISO_ARTIFACT_TYPE",
    "KIND_ALIASES",
    "MANIFEST",
    "SITE_ISO_ARTIFACT_TYPE",
    "STATE_DIR",
    "STEP_KINDS",
    "DigestCache",
    "FleetPublisher",
    "Forge",
    "ForgeEvent",
    "ForgeResult",
    "Plan",
    "Step",
    "StepFinished",
    "StepStarted",
    "artifact_to_json",
]
