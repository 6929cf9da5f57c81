"""Encryption of credentials at rest with Fernet, with key rotation."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from shared.settings import Settings


class SecretKeyError(Exception):
    """The secret key is missing or cannot decrypt a stored credential."""


class Vault:
    """Encrypts and decrypts credentials with one or more Fernet keys.

    The first key encrypts; every key may decrypt, so an old key can stay in
    the list until ``rotate`` has re-encrypted everything with the new one.
    """

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretKeyError(
                "No secret key is set. Set APEXSYNC_SECRET_KEY to a Fernet key "
                "(create one with `apexsync secrets generate-key`)."
            )
        try:
            self._fernet = MultiFernet([Fernet(key.strip()) for key in keys])
        except ValueError as exc:
            raise SecretKeyError(
                "APEXSYNC_SECRET_KEY is not a valid Fernet key: each key must be "
                "32 url-safe base64-encoded bytes."
            ) from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        """Build the vault from ``APEXSYNC_SECRET_KEY`` (comma-separated keys)."""
        raw = settings.secret_key.get_secret_value() if settings.secret_key else ""
        return cls([key for key in raw.split(",") if key.strip()])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        """Decrypt a stored credential; raise SecretKeyError if no key fits."""
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyError(
                "A stored credential cannot be decrypted with APEXSYNC_SECRET_KEY. "
                "Add the key it was encrypted with to the list."
            ) from exc

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt ``ciphertext`` with the first key."""
        return self._fernet.rotate(ciphertext.encode()).decode()


def generate_key() -> str:
    return Fernet.generate_key().decode()
