"""Encryption of stored secrets (provider API keys, tool credentials) with Fernet.

Secrets are either referenced by environment variable name (preferred: nothing stored)
or stored encrypted with ``cryptography``'s Fernet (AES-128-CBC + HMAC-SHA256). Keys come
from ``SECRETS_ENCRYPTION_KEYS`` (comma-separated Fernet keys, newest first, so old
ciphertexts still decrypt after rotation); when unset, one key is derived from
``SECRET_KEY`` with HKDF-SHA256 (info ``controlplane-secrets``).
"""

from __future__ import annotations

import base64
import os
import re
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

ENV_VAR_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")


class SecretUnavailableError(Exception):
    """A secret could not be resolved (unset environment variable, undecryptable value)."""


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    configured = [k.strip() for k in settings.SECRETS_ENCRYPTION_KEYS if k.strip()]
    if configured:
        try:
            return MultiFernet([Fernet(k) for k in configured])
        except ValueError as exc:
            raise ImproperlyConfigured(
                "SECRETS_ENCRYPTION_KEYS must be Fernet keys "
                "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
            ) from exc
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"controlplane-secrets"
    ).derive(settings.SECRET_KEY.encode())
    return MultiFernet([Fernet(base64.urlsafe_b64encode(derived))])


def encrypt_secret(plaintext: str) -> str:
    """Encrypt ``plaintext``; returns the Fernet token as text (safe to store)."""
    return _fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt_secret(token: str) -> str:
    """Decrypt a value from ``encrypt_secret``. Raises ``SecretUnavailableError``."""
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError) as exc:
        raise SecretUnavailableError(
            "a stored secret cannot be decrypted (was SECRETS_ENCRYPTION_KEYS rotated?)"
        ) from exc


def resolve_secret(*, env_var: str = "", encrypted: str = "") -> str:
    """The secret's value from its environment variable or its encrypted form.

    Raises ``SecretUnavailableError`` when the variable is unset/empty or nothing is given.
    """
    if env_var:
        value = os.environ.get(env_var, "")
        if not value:
            raise SecretUnavailableError(f"environment variable {env_var} is not set")
        return value
    if encrypted:
        return decrypt_secret(encrypted)
    raise SecretUnavailableError("no credential is configured")
