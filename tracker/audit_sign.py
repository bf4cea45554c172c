"""Ed25519 keys and signatures of the alert chain: loading keys, the service's ``Signer``, checking a signature.

Apart from the link model (tracker/audit_chain.py) because keys are what an operator handles (files,
``tracker audit keygen``, rotation: a verifier takes several public keys); nothing here knows what a
link contains. Pure, like the rest of the audit model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tracker.audit_chain import AuditError


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short fingerprint naming a key in checkpoints and messages (not a security boundary)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _raw_32(data: bytes) -> bytes | None:
    """32 key bytes given as 64 hex digits, as base64 or raw; None if it is none of these."""
    text = data.strip()
    try:
        if len(text) == 64:
            return bytes.fromhex(text.decode("ascii"))
        if len(text) == 44:
            decoded = base64.b64decode(text, validate=True)
            if len(decoded) == 32:
                return decoded
    except (ValueError, UnicodeDecodeError, binascii.Error):
        pass
    return data if len(data) == 32 else None


def load_private_key(data: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from PKCS#8 PEM or its 32-byte seed (raw, hex or base64)."""
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data.strip(), password=None)
        except (ValueError, TypeError) as exc:
            raise AuditError(f"not a readable unencrypted PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditError("the PEM private key is not an Ed25519 key")
        return key
    raw = _raw_32(data)
    if raw is None:
        raise AuditError("an Ed25519 private key is PKCS#8 PEM or 32 bytes (raw, 64 hex digits or base64)")
    return Ed25519PrivateKey.from_private_bytes(raw)


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from SubjectPublicKeyInfo PEM or its 32 bytes (raw, hex or base64)."""
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data.strip())
        except (ValueError, TypeError) as exc:
            raise AuditError(f"not a readable PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise AuditError("the PEM public key is not an Ed25519 key")
        return key
    raw = _raw_32(data)
    if raw is None:
        raise AuditError("an Ed25519 public key is PEM or 32 bytes (raw, 64 hex digits or base64)")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Signer:
    """The service's signing key; only ever built from a key that lives outside the database."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._key.sign(message)).decode("ascii")


def signature_ok(keys: Sequence[Ed25519PublicKey], message: bytes, signature: str | None) -> bool:
    if not signature:
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        return False
    for key in keys:
        try:
            key.verify(raw, message)
        except InvalidSignature:
            continue
        return True
    return False
