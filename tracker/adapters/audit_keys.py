"""Where the audit keys come from: a key file (refused when others can read it) or the environment.

The signing key must live outside the database, or whoever rewrites the alert log could
also re-sign it; the file check is the same one ssh applies to its private keys.
"""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tracker.audit import AuditError, Signer, load_private_key, load_public_key
from tracker.config import Settings


def read_private_key_file(path: str | Path) -> bytes:
    """The key file's bytes, provided no one but its owner may read or change it."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise AuditError(f"audit key file {p}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AuditError(f"audit key file {p} is not a regular file")
    if st.st_mode & 0o077:
        raise AuditError(
            f"audit key file {p} is accessible to group or others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
        )
    return p.read_bytes()


def signer_from_settings(settings: Settings) -> Signer | None:
    """The configured signing key, or None when none is configured (the caller decides if that is allowed)."""
    if settings.audit_key_file:
        return Signer(load_private_key(read_private_key_file(settings.audit_key_file)))
    if settings.audit_key:
        return Signer(load_private_key(settings.audit_key.encode()))
    return None


def read_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AuditError(f"public key {path}: {exc.strerror or exc}") from None
    return load_public_key(data)
