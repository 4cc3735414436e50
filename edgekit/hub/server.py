"""The hub's HTTP server (Starlette on uvicorn), shaped after Palette's v1 edge API.

The layers: :mod:`edgekit.hub.wire` (strict JSON in), :mod:`edgekit.hub.routes` (one module
per resource), :mod:`edgekit.hub.domain` (operations and rules, shared with the airgap
import), :mod:`edgekit.hub.store` (SQLite, nothing of HTTP). This module runs them.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import secrets
import socket
import ssl
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from edgekit.errors import ConfigError, EdgekitError
from edgekit.hub.domain import API_KEY_SETTING
from edgekit.hub.security import hash_secret
from edgekit.hub.store import DEFAULT_UNREACHABLE_AFTER, HubStore
from edgekit.hub.throttle import DEFAULT_THROTTLE, ThrottleLimits
from edgekit.hub.views import cluster_json, host_json, token_json
from edgekit.hub.wire import DEFAULT_MAX_BODY

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_MAX_BODY",
    "MIN_API_KEY_BITS",
    "MIN_API_KEY_LENGTH",
    "HubExtraMissing",
    "HubServeError",
    "ThrottleLimits",
    "TlsFiles",
    "api_key_problem",
    "cluster_json",
    "create_app",
    "ensure_api_key",
    "host_json",
    "main",
    "serve",
    "token_json",
]

log = logging.getLogger("edgekit.hub")

API_KEY_ENV = "EDGEKIT_HUB_API_KEY"
_API_KEY_SETTING = API_KEY_SETTING
#: An admin API key must be at least this long, with an entropy estimate of at least
#: MIN_API_KEY_BITS (see api_key_problem).
MIN_API_KEY_LENGTH = 32
MIN_API_KEY_BITS = 100


@attrs.frozen
class TlsFiles:
    """A PEM certificate (chain) and its private key, for serving HTTPS."""

    certfile: Path = attrs.field(converter=Path)
    keyfile: Path = attrs.field(converter=Path)


def api_key_problem(key: str) -> str | None:
    """Why ``key`` is too weak to be the admin API key, or None.

    At least :data:`MIN_API_KEY_LENGTH` printable ASCII characters, and an entropy estimate
    of at least :data:`MIN_API_KEY_BITS`: the length times the smaller of the bits per
    character its character classes allow and the Shannon entropy of its characters. The
    estimate is conservative for random keys (32 random hex digits, 128 bits, estimate
    about 118; a generated ``eka_`` key about 240) and catches repetition and small
    alphabets (``"password" * 4``: 88).
    """
    if len(key) < MIN_API_KEY_LENGTH:
        return f"must be at least {MIN_API_KEY_LENGTH} characters (it has {len(key)})"
    if not all(33 <= ord(c) <= 126 for c in key):
        return "must be printable ASCII without spaces"
    alphabet = 0
    for chars, size in (
        ("abcdefghijklmnopqrstuvwxyz", 26),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 26),
        ("0123456789", 10),
    ):
        if any(c in chars for c in key):
            alphabet += size
    if any(not c.isalnum() for c in key):
        alphabet += 32
    counts = Counter(key)
    shannon = -sum(n / len(key) * math.log2(n / len(key)) for n in counts.values())
    bits = len(key) * min(math.log2(alphabet), shannon)
    if bits < MIN_API_KEY_BITS:
        return (
            f"is too predictable (an estimated {bits:.0f} bits; at least {MIN_API_KEY_BITS}): "
            "use a random value, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return None


def _explicit_key(api_key: str | None) -> str | None:
    """The key given by the argument or ``EDGEKIT_HUB_API_KEY`` (None without one);
    ConfigError when it is too weak."""
    explicit = api_key is not None and api_key != ""
    key = api_key or os.environ.get(API_KEY_ENV) or None
    if key is not None:
        problem = api_key_problem(key)
        if problem is not None:
            raise ConfigError.single("api_key" if explicit else f"${API_KEY_ENV}", problem)
    return key


def ensure_api_key(store: HubStore, api_key: str | None) -> str | None:
    """Make the store hold the admin key's hash; returns a newly generated key, else None.

    An explicit key (argument or ``EDGEKIT_HUB_API_KEY``) replaces the stored one, and must
    be strong enough (:func:`api_key_problem`); with neither, a stored key is kept, and only
    a fresh database gets a generated key.
    """
    key = _explicit_key(api_key)
    if key is not None:
        if store.get_setting(_API_KEY_SETTING) != hash_secret(key):
            store.set_setting(_API_KEY_SETTING, hash_secret(key))
        return None
    if store.get_setting(_API_KEY_SETTING) is not None:
        return None
    generated = "eka_" + secrets.token_urlsafe(32)
    store.set_setting(_API_KEY_SETTING, hash_secret(generated))
    return generated


class HubExtraMissing(EdgekitError):
    """Serving needs the ``hub`` extra (starlette, uvicorn), which is not installed."""

    exit_code = 2


def _server_modules() -> None:
    """Refuse in one line, naming the fix, when the server's dependencies are missing."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as exc:
        raise HubExtraMissing(
            f"serving the hub needs the 'hub' extra ({exc.name} is not installed): "
            "pip install 'edgekit[hub]'"
        ) from None


def create_app(store: HubStore, **options: Any) -> Starlette:
    """The hub's ASGI application (see :func:`edgekit.hub.routes.create_app`)."""
    _server_modules()
    from edgekit.hub.routes import create_app as build

    return build(store, **options)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging with the access log on stderr too: stdout carries only the
    generated API key, so it can be captured apart from every log line."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config


# -- running --------------------------------------------------------------------------------
class HubServeError(EdgekitError):
    """The hub cannot start serving (port in use, address not available)."""


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise HubServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _check_tls(tls: TlsFiles) -> None:
    """Load the certificate and key as uvicorn will, so that a bad pair is a clear error
    before anything starts (uvicorn fails only once it runs, after "listening on")."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An encrypted key is refused (no password is asked for): it would make uvicorn
        # prompt on the terminal.
        context.load_cert_chain(str(tls.certfile), str(tls.keyfile), password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or "unreadable"
        raise ConfigError.single(
            "tls",
            f"cannot use the certificate {tls.certfile} with the key {tls.keyfile} ({reason}):"
            " give a PEM certificate (chain) and its unencrypted PEM private key",
        ) from None


def serve(
    host: str,
    port: int,
    db_path: str | Path,
    api_key: str | None = None,
    tls: TlsFiles | None = None,
    *,
    fd: int | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    access_log: bool = True,
    synchronous: str = "NORMAL",
    unreachable_after: float = DEFAULT_UNREACHABLE_AFTER,
    throttle: ThrottleLimits = DEFAULT_THROTTLE,
    rollout_interval: float = 1.0,
) -> None:
    """Run the hub until interrupted (blocking); the function the CLI calls.

    The admin API key comes from ``api_key``, else ``EDGEKIT_HUB_API_KEY``, else the one
    stored in the database; a fresh database without either gets a generated key that is
    printed once, to stdout; every log line (the access log too) goes to stderr.
    ``rollout_interval``: seconds between two ticks of the roll-out controller.
    """
    _server_modules()
    import uvicorn  # imported here: only serving needs the server extra

    if not log.handlers:
        # uvicorn configures only its own loggers; show the hub's next to them on stderr.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    if synchronous not in ("NORMAL", "FULL"):
        raise ConfigError.single("synchronous", "must be NORMAL or FULL")
    if fd is None and not 0 <= port <= 65535:
        raise ConfigError.single("port", f"{port} is not a TCP port (0 to 65535; 0: any free one)")
    # A weak key or unusable TLS files are refused before the store is opened: a refused
    # start creates no database, and never says it listens.
    _explicit_key(api_key)
    if tls is not None:
        _check_tls(tls)
    store = HubStore(db_path, synchronous="FULL" if synchronous == "FULL" else "NORMAL")
    try:
        generated = ensure_api_key(store, api_key)
        if generated is not None:
            print(f"edgekit hub: generated admin API key (shown once): {generated}", flush=True)
        app = create_app(
            store,
            max_body=max_body,
            unreachable_after=unreachable_after,
            throttle=throttle,
            rollout_interval=rollout_interval,
        )
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            access_log=access_log,
            log_config=_log_config(),
            log_level="info",
            ssl_certfile=str(tls.certfile) if tls else None,
            ssl_keyfile=str(tls.keyfile) if tls else None,
            timeout_graceful_shutdown=5,
        )
        # An inherited listening socket is handed over as a socket object (uvicorn's own
        # ``fd`` option assumes a Unix socket); otherwise we bind here, so that a busy port
        # is an error that names it instead of uvicorn's exit.
        sock = socket.socket(fileno=fd) if fd is not None else _listen(host, port)
        # uvicorn does not announce sockets it is given; say where we listen ourselves.
        bound = sock.getsockname()
        scheme = "https" if tls else "http"
        log.info("edgekit hub listening on %s://%s:%s", scheme, bound[0], bound[1])
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgekit.hub.server``: what :class:`HubServer` runs in its subprocess."""
    parser = argparse.ArgumentParser(prog="python -m edgekit.hub.server")
    parser.add_argument("--db", required=True, help="sqlite:///PATH, a path, or postgresql://...")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--fd", type=int, default=None, help="serve on this listening socket")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY)
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    parser.add_argument("--unreachable-after", type=float, default=DEFAULT_UNREACHABLE_AFTER)
    parser.add_argument("--auth-failures-per-source", type=int, default=DEFAULT_THROTTLE.per_source)
    parser.add_argument("--auth-failures-per-target", type=int, default=DEFAULT_THROTTLE.per_target)
    parser.add_argument("--auth-window", type=float, default=DEFAULT_THROTTLE.window)
    parser.add_argument("--rollout-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    tls = TlsFiles(args.certfile, args.keyfile) if args.certfile and args.keyfile else None
    try:
        _serve_main(args, tls)
    except EdgekitError as exc:
        print(f"edgekit hub: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def _serve_main(args: argparse.Namespace, tls: TlsFiles | None) -> None:
    serve(
        args.host,
        args.port,
        args.db,
        tls=tls,
        fd=args.fd,
        max_body=args.max_body,
        access_log=not args.no_access_log,
        synchronous=args.synchronous,
        unreachable_after=args.unreachable_after,
        throttle=ThrottleLimits(
            per_source=args.auth_failures_per_source,
            per_target=args.auth_failures_per_target,
            window=args.auth_window,
        ),
        rollout_interval=args.rollout_interval,
    )


if __name__ == "__main__":
    sys.exit(main())
