"""How to reach a registry: the options, credentials and retry policy of a connection,
its errors, and the Docker ``config.json`` lookup (through oras-py's reader)."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import attrs
import oras.auth.utils  # type: ignore[import-untyped]
import oras.provider  # type: ignore[import-untyped]
import oras.utils  # type: ignore[import-untyped]

from edgekit import limits
from edgekit.errors import ConfigError, PublishError
from edgekit.plugins.interfaces import RegistryOptions

from .progress import ProgressCallback

__all__ = [
    "AuthError",
    "ConnectionOptions",
    "Credentials",
    "NotFound",
    "RetryPolicy",
    "TransientError",
]


class AuthError(PublishError):
    """The registry refused our credentials (or wanted some and none were found)."""


class NotFound(PublishError):
    """The registry answered 404 for a manifest, blob or API."""


class TransientError(PublishError):
    """A failure worth retrying (5xx, 429, connection reset or refused, timeout)."""


@attrs.frozen
class RetryPolicy:
    """Bounded exponential backoff: *attempts* tries, ``initial * factor**n`` s up to *max*."""

    attempts: int = 5
    initial_delay: float = 0.5
    max_delay: float = 8.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to sleep after failed *attempt* (0-based), with a little jitter."""
        base = min(self.max_delay, self.initial_delay * self.factor**attempt)
        return float(base * (0.9 + 0.2 * random.random()))


@attrs.frozen(repr=False)
class Credentials:
    """A username and password (or identity token); never shown in reprs or messages."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"

    def basic(self) -> str:
        """The base64 ``user:password`` of a Basic Authorization header."""
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


@attrs.frozen
class ConnectionOptions(RegistryOptions):
    """How to reach a registry (:class:`RegistryOptions`: ``plain_http``, ``ca_cert`` verified
    against instead of the system store, ``auth_config``, a Docker ``config.json``, else
    ``$DOCKER_CONFIG/config.json`` or ``~/.docker``) and how hard to try."""

    #: Explicit credentials; they win over any config.json entry.
    credentials: Credentials | None = None
    retry: RetryPolicy = RetryPolicy()
    #: Seconds to wait to connect and between bytes of a response.
    timeout: float = 60.0
    #: Blobs transferred in parallel.
    concurrency: int = 4
    #: Chunked upload (POST, PATCH chunks, PUT ?digest=); False sends each blob in one PUT.
    chunked: bool = True
    #: Bytes per PATCH in chunked mode (streamed from file, never held in memory).
    chunk_size: int = 64 << 20
    #: Repositories of the same registry to try mounting blobs from.
    mount_from: tuple[str, ...] = ()
    progress: ProgressCallback | None = attrs.field(default=None, eq=False)

    @classmethod
    def extending(cls, options: RegistryOptions, **extra: Any) -> ConnectionOptions:
        """``options`` (a forge's or ``edgekit.dist``'s) with this engine's knobs ``extra``."""
        return cls(**attrs.asdict(options, recurse=False), **extra)


def _load_docker_auth(
    host: str, auth_config: Path | None, reg: oras.provider.Registry
) -> str | None:
    """The base64 basic auth for *host* from a Docker config.json, via oras-py's reader."""
    auth = reg.auth
    if auth_config is not None:
        try:
            # Bounded, regular files only: a FIFO would block, /dev/zero would fill memory.
            cfg = json.loads(limits.read_bytes(auth_config, where="auth_config"))
        except ConfigError as e:
            raise PublishError(f"Docker auth config: {e.problems[0].message}") from None
        except (ValueError, RecursionError) as e:
            raise PublishError(f"cannot read Docker auth config {auth_config}: {e}") from None
        if not isinstance(cfg, dict) or not all(
            isinstance(cfg.get(k, {}), dict) for k in ("auths", "credHelpers")
        ):
            raise PublishError(
                f"Docker auth config {auth_config} must be a JSON object whose 'auths' and "
                "'credHelpers' are objects"
            )
        auth._auth_config = {
            "auths": dict(cfg.get("auths", {})),
            "credsStore": cfg.get("credsStore"),
            "credHelpers": dict(cfg.get("credHelpers", {})),
        }
    else:
        auth._auth_config = oras.auth.utils.load_configs()
    for name in oras.utils.iter_localhosts(host):
        if auth._load_auth(name):
            value = getattr(auth, "_basic_auth", None)
            return str(value) if value else None
    return None
