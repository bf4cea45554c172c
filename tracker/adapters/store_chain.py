"""The signed alert chain as stored: appending links under one lock, the legacy anchor, checkpoints, bundles.

Every transaction that states a fact about an alert opens a ``_Chain`` (which takes ``CHAIN_LOCK``)
and appends its links there, so links from the ingest task and from the API take turns and a planted
row cannot stop alerting. The checks themselves are pure (tracker/audit.py); this module only reads
and writes what they need.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tracker import audit
from tracker.adapters.errors import ChainContendedError

log = logging.getLogger(__name__)


CHAIN_LOCK = 424243
"""Advisory lock held by every transaction that appends links: one writer of the chain at a time."""


ALERT_COLUMNS = (
    "SELECT alert_id, seq, kind, severity, device_id, port, fence_id, ts, message, evidence, status,"
    " acknowledged_by, acknowledged_at, resolved_by, resolved_at, resolution, ended_at, assigned_to, fence_versions"
    " FROM alerts"
)


def _alert_record(r: Mapping[str, Any]) -> audit.AlertRecord:
    return audit.AlertRecord(
        id=str(r["alert_id"]),
        seq=int(r["seq"]),
        kind=r["kind"],
        severity=r["severity"],
        device_id=r["device_id"],
        port=r["port"],
        fence_id=r["fence_id"],
        ts=r["ts"],
        message=r["message"],
        evidence=json.loads(r["evidence"]),
        status=r["status"],
        acknowledged_by=r["acknowledged_by"],
        acknowledged_at=r["acknowledged_at"],
        resolved_by=r["resolved_by"],
        resolved_at=r["resolved_at"],
        resolution=r["resolution"],
        ended_at=r["ended_at"],
        fence_versions=None if r["fence_versions"] is None else json.loads(r["fence_versions"]),
        assigned_to=r["assigned_to"],
    )


def _checkpoint(r: Mapping[str, Any]) -> audit.Checkpoint:
    return audit.Checkpoint.from_json({"body": json.loads(r["body"]), "signature": r["signature"]})


SEQ_CEILING = 2**62
"""No real chain gets near this; a link above it can only have been planted."""
TRUSTED_TAIL_SCAN = 50
"""How many of the newest links are searched for the last one this service signed."""


class _Chain:
    """The links one transaction appends. It holds ``CHAIN_LOCK``, so the tail it read stays the tail."""

    def __init__(
        self, conn: asyncpg.Connection, signer: audit.Signer | None, seq: int, head: str, at: datetime
    ) -> None:
        self.conn = conn
        self.signer = signer
        self.seq = seq
        self.head = head
        self.at = at  # the transaction's time: every fact and column it writes carries it
        self._rows: list[tuple[object, ...]] = []

    @classmethod
    async def open(cls, conn: asyncpg.Connection, signer: audit.Signer | None) -> _Chain:
        """Lock the chain and find where the next link goes, robust to rows planted by someone else.

        The service's role may insert links, so may whoever holds its credentials. A planted row must
        not stop alerting (it is for ``tracker alerts verify`` to name it): the next link chains onto the
        newest link this service signed, takes the first free position after the newest row, and ignores
        rows above ``SEQ_CEILING`` (a row at 2^63-1 would otherwise make every next position overflow).
        """
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
        rows = await conn.fetch(
            "SELECT seq, hash, sig FROM alert_links WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
            SEQ_CEILING,
            TRUSTED_TAIL_SCAN,
        )
        at: datetime = await conn.fetchval("SELECT now()")
        if not rows:
            return cls(conn, signer, 0, audit.GENESIS, at)
        head = str(rows[0]["hash"])
        if signer is not None:
            for r in rows:
                link_hash = str(r["hash"])
                message = audit.Link(0, "", "", link_hash).signed_message()
                if audit.signature_ok([signer.public_key], message, r["sig"]):
                    head = link_hash
                    break
        return cls(conn, signer, int(rows[0]["seq"]), head, at)

    def append(self, alert_id: uuid.UUID, fact: str, actor: str, body: dict[str, audit.JSONValue]) -> audit.Link:
        try:
            link = audit.make_link(
                self.seq + 1, self.head, audit.Fact(str(alert_id), fact, actor, self.at, body), self.signer
            )
        except ValueError as exc:  # NaN and the like: refused the way the database refuses them
            raise asyncpg.DataError(f"alert {alert_id}: '{fact}' is not storable JSON: {exc}") from exc
        self.seq, self.head = link.seq, link.hash
        self._rows.append((link.seq, alert_id, fact, actor, self.at, link.doc, link.prev, link.hash, link.sig))
        return link

    async def flush(self) -> None:
        for row in self._rows:
            stored = await self.conn.fetchval(
                "INSERT INTO alert_links (seq, alert_id, fact, actor, at, doc, prev_hash, hash, sig)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING seq",
                *row,
            )
            if stored is None:
                # someone wrote that position between our read and our insert (only possible without the
                # chain lock, i.e. not the service): not this batch's fault; it is retried on a new tail
                raise ChainContendedError(f"alert_links position {row[0]} was taken by another writer")
        self._rows = []


class AuditStore:
    """The chain's reads and checkpoints; ``Store`` (tracker/adapters/store.py) inherits them."""

    pool: asyncpg.Pool
    signer: audit.Signer | None

    async def anchor_legacy(self) -> int:
        """Give each alert stored before the chain existed one ``legacy`` link that holds it as found.

        Only alerts the owner's migration listed in ``audit_legacy`` qualify (the service role
        cannot add to that list), so this cannot launder an alert slipped in later.
        """
        sql = (
            ALERT_COLUMNS + " WHERE alert_id IN (SELECT alert_id FROM audit_legacy)"  # noqa: S608 - constant SQL
            " AND NOT EXISTS (SELECT 1 FROM alert_links k WHERE k.alert_id = alerts.alert_id)"
        )
        if not await self.pool.fetchval(f"SELECT EXISTS ({sql})"):
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            chain = await _Chain.open(conn, self.signer)
            rows = [_alert_record(r) for r in await conn.fetch(sql + " ORDER BY seq")]
            updates: dict[str, list[audit.JSONValue]] = {}
            for u in await conn.fetch(
                "SELECT alert_id, ts, closes, fields FROM alert_updates WHERE alert_id = ANY($1::uuid[]) ORDER BY id",
                [uuid.UUID(r.id) for r in rows],
            ):
                updates.setdefault(str(u["alert_id"]), []).append(
                    audit.update_body(u["ts"], u["closes"], json.loads(u["fields"]))
                )
            for rec in rows:
                state = rec.to_json()
                body: dict[str, audit.JSONValue] = {
                    "alert": rec.content(),
                    **{k: state[k] for k in ("status", "acknowledged_by", "acknowledged_at", "resolved_by")},
                    **{k: state[k] for k in ("resolved_at", "resolution", "ended_at", "assigned_to")},
                    "updates": updates.get(rec.id, []),
                }
                chain.append(uuid.UUID(rec.id), audit.LEGACY, "legacy", body)
            await chain.flush()
        log.warning("anchored %d alerts stored before the signed chain (facts before now are not proven)", len(rows))
        return len(rows)

    async def audit_bundle(self) -> audit.Bundle:
        """Links, alerts, updates and checkpoints as one consistent snapshot."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            links = [
                audit.Link(int(r["seq"]), r["prev_hash"], r["doc"], r["hash"], r["sig"])
                for r in await conn.fetch("SELECT seq, prev_hash, doc, hash, sig FROM alert_links ORDER BY seq")
            ]
            alerts = [_alert_record(r) for r in await conn.fetch(ALERT_COLUMNS + " ORDER BY seq")]
            updates = [
                audit.UpdateRecord(str(r["alert_id"]), r["ts"], r["closes"], json.loads(r["fields"]))
                for r in await conn.fetch("SELECT alert_id, ts, closes, fields FROM alert_updates ORDER BY id")
            ]
            checkpoints = [
                _checkpoint(r) for r in await conn.fetch("SELECT body, signature FROM audit_checkpoints ORDER BY id")
            ]
        return audit.Bundle(tuple(links), tuple(alerts), tuple(updates), tuple(checkpoints))

    async def verify_chain(
        self, public_keys: Sequence[Ed25519PublicKey], anchors: Sequence[audit.Checkpoint] = ()
    ) -> audit.Report:
        return audit.verify(await self.audit_bundle(), public_keys, anchors)

    async def link_hash_at(self, seq: int) -> str | None:
        """The hash of the link at ``seq``: whether the chain still holds what a checkpoint covered."""
        value = await self.pool.fetchval("SELECT hash FROM alert_links WHERE seq = $1", seq)
        return None if value is None else str(value)

    async def checkpoint(self, signer: audit.Signer) -> audit.Checkpoint | None:
        """Sign and store the chain head unless the newest checkpoint already covers it.

        Returns the newest checkpoint (new or not), None while the chain is empty.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
            # the newest link this service signed: a row planted after it (see _Chain.open) is not vouched for
            head = None
            for r in await conn.fetch(
                "SELECT seq, hash, alert_id, sig FROM alert_links WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                SEQ_CEILING,
                TRUSTED_TAIL_SCAN,
            ):
                if audit.signature_ok(
                    [signer.public_key], audit.Link(0, "", "", str(r["hash"])).signed_message(), r["sig"]
                ):
                    head = r
                    break
            row = await conn.fetchrow("SELECT body, signature FROM audit_checkpoints ORDER BY id DESC LIMIT 1")
            last = _checkpoint(row) if row is not None else None
            if head is None:
                return last
            if last is not None and (last.count, last.head, last.key_id) == (head["seq"], head["hash"], signer.key_id):
                return last
            at = await conn.fetchval("SELECT now()")
            cp = audit.make_checkpoint(int(head["seq"]), head["hash"], str(head["alert_id"]), at, signer)
            await conn.execute(
                "INSERT INTO audit_checkpoints (count, head_hash, at, key_id, body, signature)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                cp.count,
                cp.head,
                at,
                cp.key_id,
                audit.canonical(cp.body()),
                cp.signature,
            )
        return cp
