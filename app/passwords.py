"""Document passwords at rest: encrypted with PAGEMILL_SECRET_KEY (Fernet: AES with an
HMAC), so the database, logs and status never hold one in clear."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from app.settings import Settings, get_settings


class SecretKeyMissing(RuntimeError):
    """Distributed mode without PAGEMILL_SECRET_KEY: a password could not be read back."""


def _key_file(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "secret.key"


def _fernet(settings: Settings, *, create: bool) -> Fernet:
    if settings.secret_key is not None:
        return Fernet(settings.secret_key.get_secret_value().encode())
    if not settings.embedded:
        raise SecretKeyMissing(
            "PAGEMILL_SECRET_KEY is not set: document passwords cannot be stored "
            "(generate one with `python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'` and give it to the API and workers)"
        )
    path = _key_file(settings)
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two processes creating it at once keep the first one's key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
    return Fernet(path.read_bytes().strip())


def require_key(settings: Settings) -> None:
    """SecretKeyMissing unless passwords can be stored (checked before anything is sent)."""
    _fernet(settings, create=True)


def encrypt_password(password: str, settings: Settings | None = None) -> str:
    return _fernet(settings or get_settings(), create=True).encrypt(password.encode()).decode()


def decrypt_password(ciphertext: str, settings: Settings | None = None) -> str:
    try:
        return _fernet(settings or get_settings(), create=False).decrypt(ciphertext).decode()
    except (InvalidToken, FileNotFoundError):
        raise SecretKeyMissing(
            "the document password cannot be decrypted: PAGEMILL_SECRET_KEY differs from "
            "the one it was stored with"
        ) from None
