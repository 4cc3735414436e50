"""Credentials (explicit, config.json, credential helpers), TLS, and secrets kept out of output."""

from __future__ import annotations

import base64
import json
import logging
import stat
from pathlib import Path

import pytest
from edgekit_oras.client import AuthError, ConnectionOptions, Credentials, RetryPolicy
from edgekit_oras.engine import push_layout
from edgekit_oras.testing import RegistryServer

from edgekit.errors import PublishError

FAST = RetryPolicy(attempts=2, initial_delay=0.05, max_delay=0.1)


def _no_tag(server: RegistryServer, repo: str) -> bool:
    """True if *repo* has no tags at all in the registry's storage."""
    return not (
        server.storage / "docker/registry/v2/repositories" / repo / "_manifests/tags"
    ).exists()


def test_basic_auth_with_explicit_credentials(
    auth_registry: RegistryServer, image: tuple[Path, str], tmp_path: Path
) -> None:
    layout, digest = image
    creds = Credentials(auth_registry.username, auth_registry.password)
    opts = ConnectionOptions(plain_http=True, credentials=creds, auth_config=tmp_path / "none.json")
    assert push_layout(layout, "v1", f"{auth_registry.host}/a/os", options=opts).digest == digest


def test_wrong_password_is_clear_and_secret_free(
    auth_registry: RegistryServer,
    image: tuple[Path, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    layout, _ = image
    secret = "not-the-password-XYZZY"
    creds = Credentials(auth_registry.username, secret)
    opts = ConnectionOptions(plain_http=True, credentials=creds, retry=FAST)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as info:
        push_layout(layout, "v1", f"{auth_registry.host}/a/os", options=opts)
    message = str(info.value)
    assert "rejected the username or password" in message
    encoded = base64.b64encode(f"{auth_registry.username}:{secret}".encode()).decode()
    for text in (message, repr(info.value), repr(opts), repr(creds), caplog.text):
        assert secret not in text
        assert encoded not in text
    assert _no_tag(auth_registry, "a/os")


def test_no_credentials_says_so(
    auth_registry: RegistryServer, image: tuple[Path, str], tmp_path: Path
) -> None:
    layout, _ = image
    opts = ConnectionOptions(plain_http=True, auth_config=tmp_path / "empty.json", retry=FAST)
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(AuthError, match="no credentials"):
        push_layout(layout, "v1", f"{auth_registry.host}/a/os", options=opts)


def test_docker_config_auths(
    auth_registry: RegistryServer, image: tuple[Path, str], tmp_path: Path
) -> None:
    layout, digest = image
    token = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode()).decode()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    opts = ConnectionOptions(plain_http=True, auth_config=config)
    assert push_layout(layout, "v1", f"{auth_registry.host}/b/os", options=opts).digest == digest


@pytest.mark.parametrize("key", ["credHelpers", "credsStore"])
def test_docker_credential_helper(
    auth_registry: RegistryServer,
    image: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
) -> None:
    layout, digest = image
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-edgetest"
    calls = tmp_path / "calls.log"
    # The Docker credential-helper protocol: `get` reads the server URL on stdin.
    helper.write_text(
        "#!/bin/sh\n"
        f'read server; echo "$1 $server" >> {calls}\n'
        f'echo \'{{"ServerURL":"\'$server\'","Username":"{auth_registry.username}",'
        f'"Secret":"{auth_registry.password}"}}\'\n'
    )
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}:{Path('/usr/bin')}:{Path('/bin')}")
    config = tmp_path / "config.json"
    value: object = {auth_registry.host: "edgetest"} if key == "credHelpers" else "edgetest"
    config.write_text(json.dumps({key: value}))
    opts = ConnectionOptions(plain_http=True, auth_config=config)
    assert push_layout(layout, "v1", f"{auth_registry.host}/c/os", options=opts).digest == digest
    assert calls.read_text().split()[:2] == ["get", auth_registry.host]


def test_tls_verified_with_custom_ca(tls_registry: RegistryServer, image: tuple[Path, str]) -> None:
    layout, digest = image
    ref = f"{tls_registry.host}/secure/os:v1"
    opts = ConnectionOptions(ca_cert=tls_registry.ca_file)
    assert push_layout(layout, "v1", ref, options=opts).digest == digest


def test_tls_unknown_ca_refused(tls_registry: RegistryServer, image: tuple[Path, str]) -> None:
    layout, _ = image
    with pytest.raises(PublishError, match="TLS verification failed"):
        push_layout(
            layout, "v1", f"{tls_registry.host}/secure/os:v1", options=ConnectionOptions(retry=FAST)
        )
    assert _no_tag(tls_registry, "secure/os")


def test_plain_http_only_when_asked(registry: RegistryServer, image: tuple[Path, str]) -> None:
    layout, _ = image
    # Without plain_http the client speaks TLS to an HTTP registry and fails clearly.
    with pytest.raises(PublishError, match=registry.host):
        push_layout(layout, "v1", f"{registry.host}/x/os", options=ConnectionOptions(retry=FAST))


def test_bearer_token_auth_against_distribution(
    token_registry: RegistryServer, image: tuple[Path, str]
) -> None:
    """distribution's own token auth: challenge, token from our realm, JWT verified by it."""
    layout, digest = image
    tokens = token_registry.token_server
    assert tokens is not None
    creds = Credentials(tokens.username, tokens.password)
    opts = ConnectionOptions(plain_http=True, credentials=creds)
    first = push_layout(layout, "v1", f"{token_registry.host}/team-a/os", options=opts)
    assert first.digest == digest
    assert ["repository:team-a/os:pull,push"] in tokens.requests
    # A cross-repository mount needs a token for both repositories.
    second = push_layout(layout, "v1", f"{token_registry.host}/team-b/os", options=opts)
    assert second.mounted_blobs == first.uploaded_blobs
    assert any(
        {"repository:team-b/os:pull,push", "repository:team-a/os:pull"} <= set(r)
        for r in tokens.requests
    )


def test_bearer_wrong_password(
    token_registry: RegistryServer, image: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    layout, _ = image
    tokens = token_registry.token_server
    assert tokens is not None
    caplog.set_level(logging.DEBUG)
    secret = "wrong-token-password-PLUGH"
    opts = ConnectionOptions(
        plain_http=True, credentials=Credentials(tokens.username, secret), retry=FAST
    )
    with pytest.raises(AuthError, match=r"token server of .* rejected the credentials") as info:
        push_layout(layout, "v1", f"{token_registry.host}/a/os", options=opts)
    assert secret not in str(info.value) + repr(info.value) + caplog.text
    assert _no_tag(token_registry, "a/os")
