"""Anchoring the signed alert chain outside the database: periodic checkpoints and the anchor file.

A part of ``Service`` (tracker/service.py) of its own because it is the one place that defends the
evidence against someone holding the schema owner's rights: it never signs over a chain that lost
what the anchor file remembers, and says so in /readyz.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from tracker.adapters.mqtt import PublishError
from tracker.audit import CHECKPOINT_TOPIC, AuditError, Checkpoint, signature_ok
from tracker.service_base import ServiceBase

log = logging.getLogger(__name__)


class Anchoring(ServiceBase):
    """Checkpoints of the chain head, published retained and kept in the anchor file (a part of ``Service``)."""

    _published: Checkpoint | None
    _anchor_problem: str | None

    async def checkpoint(self) -> Checkpoint | None:
        """Sign the chain head if it moved, store that, and publish the newest checkpoint retained.

        The retained copy on the broker is the anchor outside the database; a failed publish is
        retried at the next interval (the stored copy is already safe).
        """
        if self.signer is None or self.store is None:
            return None
        if not await self.anchor_holds():
            return None  # never sign over a chain that lost what was anchored: the last good copies stay
        cp = await self.store.checkpoint(self.signer)
        if cp is not None:
            self._write_anchor(cp)
        if cp is not None and cp != self._published and self.link is not None:
            try:
                await self.link.publish(CHECKPOINT_TOPIC, cp.to_bytes(), qos=1, retain=True)
                self._published = cp
            except PublishError as exc:
                log.warning("checkpoint of %d links stored, not yet published (%s); retrying", cp.count, exc)
        return cp

    async def anchor_holds(self) -> bool:
        """Whether the chain still holds the last checkpoint kept outside the database.

        Someone with the schema owner's rights can cut the chain's tail and delete the stored checkpoints
        together; a service that then signed a new checkpoint over the shorter chain would launder the cut
        (its retained MQTT copy replaces the old one). The anchor file, which the database cannot reach,
        remembers what was covered: if that link is gone or different, the service stops checkpointing,
        says so loudly and reports not ready, so the last good checkpoints stay the evidence.
        """
        path = self.settings.audit_anchor_file
        if not path or self.store is None or self.signer is None:
            return True
        try:
            raw = await asyncio.to_thread(Path(path).read_bytes)
        except FileNotFoundError:
            return True
        try:
            anchor = Checkpoint.from_json(json.loads(raw))
        except (ValueError, AuditError) as exc:
            return self._anchor_failed(f"anchor file {path} is unreadable: {exc}")
        if not signature_ok([self.signer.public_key], anchor.signed_message(), anchor.signature):
            return self._anchor_failed(f"anchor file {path} is not signed by this service's key")
        held = await self.store.link_hash_at(anchor.count) if anchor.count > 0 else anchor.head
        if held != anchor.head:
            what = "is gone" if held is None else "was rewritten"
            return self._anchor_failed(f"link #{anchor.count} covered by {anchor.describe()} {what}")
        self._anchor_problem = None
        self.metrics.audit_anchor_broken.set(0)
        return True

    def _anchor_failed(self, problem: str) -> bool:
        if self._anchor_problem != problem:
            log.critical(
                "ALERT LOG ROLLED BACK OR REWRITTEN: %s; no checkpoint is signed until this is resolved", problem
            )
        self._anchor_problem = problem
        self.metrics.audit_anchor_broken.set(1)
        return False

    def _write_anchor(self, cp: Checkpoint) -> None:
        path = self.settings.audit_anchor_file
        if not path:
            return
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(cp.to_bytes())
        os.replace(tmp, target)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.audit_checkpoint_s)
            try:
                await self.checkpoint()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audit checkpoint failed; retrying next period")
