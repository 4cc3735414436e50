"""Secrets for the hub: generation, hashing, constant-time checks and a redacting wrapper."""

from __future__ import annotations

import hashlib
import hmac
import secrets

# One redacting type across edgekit: the model's (repr and str are '***').
from edgekit.model.hosts import Secret

__all__ = ["Secret", "hash_secret", "new_secret", "secret_matches"]


def new_secret(prefix: str) -> str:
    """A fresh 256-bit secret, URL-safe, with a readable prefix (``ekt_`` token, ``ekh_`` host)."""
    return prefix + secrets.token_urlsafe(32)


def hash_secret(value: str) -> str:
    """Hex sha256 of a secret.

    The secrets are 256-bit random values, so a fast unsalted hash is enough: there is no
    dictionary to attack, and hashing lets the store look a secret up by its digest.
    """
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def secret_matches(value: str, stored_hash: str) -> bool:
    """Whether ``value`` hashes to ``stored_hash``, compared in constant time."""
    return hmac.compare_digest(hash_secret(value), stored_hash)
