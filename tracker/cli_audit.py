"""``tracker alerts verify`` and ``tracker audit export|verify|keygen|pubkey``: the audit trail from the command line.

Evidence that the alert log was not rewritten (tracker/audit.py): checked against the database and its
newest checkpoint, exported as a bundle a third party verifies with the public key only, and the signing
key pair made or shown. A module of its own because ``verify`` and ``keygen`` run without settings or a
database (an auditor's machine), and none of it is needed to run the service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tracker.config import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from tracker.audit import Checkpoint, Report


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser("alerts", help="alerts").add_subparsers(dest="acmd", required=True)
    av = a.add_parser("verify", help="check the alert log against its signed links and the newest checkpoint")
    _verify_options(av)
    au = sub.add_parser("audit", help="evidence that the alert log was not rewritten").add_subparsers(
        dest="ucmd", required=True
    )
    ue = au.add_parser("export", help="write a bundle (alerts, links, checkpoints) a third party can verify")
    ue.add_argument("--out", default="-", help="file to write (default: standard output)")
    uv = au.add_parser("verify", help="verify an exported bundle with the public key only (no database)")
    uv.add_argument("--bundle", required=True)
    _verify_options(uv)
    uk = au.add_parser("keygen", help="write a new Ed25519 key pair: DIR/signing.key (mode 600), DIR/signing.pub")
    uk.add_argument("--out", required=True, help="directory")
    uk.add_argument("--force", action="store_true", help="replace an existing key")
    au.add_parser("pubkey", help="print the public key of the configured signing key (PEM)")


def offline(args: argparse.Namespace) -> bool:
    """The commands an auditor runs with the public key only: no settings, no database."""
    return args.cmd == "audit" and args.ucmd in ("verify", "keygen")


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    if offline(args):
        return _audit_offline(args)
    if settings is None:
        return 2
    if args.cmd == "alerts":
        return _audit_guard(lambda: asyncio.run(_verify(settings, args)))
    if args.cmd == "audit" and args.ucmd == "export":
        return asyncio.run(_audit_export(settings, args.out))
    if args.cmd == "audit" and args.ucmd == "pubkey":
        return _audit_guard(lambda: _audit_pubkey(settings))
    return 2


def _public_keys(args: argparse.Namespace, settings: Settings | None) -> list[Ed25519PublicKey]:
    from tracker.adapters.audit_keys import read_public_key, signer_from_settings

    keys = [read_public_key(path) for path in args.public_key]
    if not keys and settings is not None:
        signer = signer_from_settings(settings)
        if signer is not None:
            keys.append(signer.public_key)
    return keys


def _anchors(paths: Sequence[str]) -> list[Checkpoint]:
    from tracker.audit import AuditError, Checkpoint

    out = []
    for path in paths:
        try:
            out.append(Checkpoint.from_json(json.loads(Path(path).read_text())))
        except (OSError, json.JSONDecodeError) as exc:
            raise AuditError(f"checkpoint {path}: {exc}") from None
    return out


def _print_report(report: Report) -> int:
    lines = report.summary()
    out = sys.stdout if report.ok else sys.stderr
    for line in lines:
        print(line, file=out)
    return 0 if report.ok else 1


async def _verify(settings: Settings, args: argparse.Namespace) -> int:
    """Check the database's alert log against its links, their signatures and the newest checkpoint."""
    from tracker.adapters.store import Store

    keys = _public_keys(args, settings)
    anchors = _anchors(args.checkpoint)
    store = await Store.connect(settings.db_dsn, max_size=2)
    try:
        report = await store.verify_chain(keys, anchors)
    finally:
        await store.close()
    return _print_report(report)


async def _audit_export(settings: Settings, out: str) -> int:
    from tracker.adapters.store import Store

    store = await Store.connect(settings.db_dsn, max_size=2)
    try:
        bundle = await store.audit_bundle()
    finally:
        await store.close()
    text = json.dumps(bundle.to_json(), ensure_ascii=False, indent=None, separators=(",", ":"))
    if out == "-":
        print(text)
    else:
        await asyncio.to_thread(Path(out).write_text, text + "\n", encoding="utf-8")
        print(
            f"wrote {len(bundle.links)} links, {len(bundle.alerts)} alerts, {len(bundle.checkpoints)} checkpoints"
            f" to {out}",
            file=sys.stderr,
        )
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    """Verify an exported bundle with nothing but the public key: no settings, no database."""
    from tracker.audit import Bundle, verify

    keys = _public_keys(args, None)
    if not keys:
        print("--public-key is required: without it nothing proves who wrote the bundle", file=sys.stderr)
        return 2
    raw = Path(args.bundle).read_text(encoding="utf-8")
    try:
        bundle = Bundle.from_json(json.loads(raw))
    except json.JSONDecodeError as exc:
        print(f"{args.bundle}: not JSON: {exc}", file=sys.stderr)
        return 2
    return _print_report(verify(bundle, keys, _anchors(args.checkpoint)))


def _audit_keygen(out_dir: str, force: bool) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tracker.audit import key_id, private_pem, public_pem

    directory = Path(out_dir)
    key_file, pub_file = directory / "signing.key", directory / "signing.pub"
    if key_file.exists() and not force:
        print(f"{key_file} exists; not replacing a signing key (--force to do so)", file=sys.stderr)
        return 1
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    tmp = key_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem(key))
    tmp.replace(key_file)
    pub_file.write_bytes(public_pem(key.public_key()))
    print(f"key {key_id(key.public_key())}: private {key_file} (mode 600), public {pub_file}")
    return 0


def _audit_pubkey(settings: Settings) -> int:
    from tracker.adapters.audit_keys import signer_from_settings
    from tracker.audit import public_pem

    signer = signer_from_settings(settings)
    if signer is None:
        print("no signing key configured (TRACKER_AUDIT_KEY_FILE or TRACKER_AUDIT_KEY)", file=sys.stderr)
        return 1
    sys.stdout.write(public_pem(signer.public_key).decode())
    print(f"key id {signer.key_id}", file=sys.stderr)
    return 0


def _verify_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--public-key", action="append", default=[], help="Ed25519 public key file (PEM or 32 bytes); repeatable"
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="a checkpoint kept outside the database, e.g. the retained tracker/audit/checkpoint message",
    )


def _audit_offline(args: argparse.Namespace) -> int:
    if args.ucmd == "keygen":
        return _audit_keygen(args.out, args.force)
    return _audit_guard(lambda: _audit_verify(args))


def _audit_guard(run: Callable[[], int]) -> int:
    """A key, bundle or checkpoint that cannot be read is a usage error (exit 2), not a verdict."""
    from tracker.audit import AuditError

    try:
        return run()
    except (AuditError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
