"""The chain's vocabulary: canonical JSON, facts, links and checkpoints, and how a link is hashed.

The part of the audit model everything else builds on (the store appends these links, the verifier
folds them, the custody report quotes them); apart from the keys (tracker/audit_sign.py) and the
verification (tracker/audit_verify.py) so that changing how a bundle is checked cannot change what
is hashed. Pure: no file, network, database or clock (tracker/audit.py says why).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from tracker.audit_sign import Signer


JSONValue: TypeAlias = "dict[str, JSONValue] | list[JSONValue] | str | int | float | bool | None"

GENESIS = "0" * 64
"""The predecessor hash of link #1."""
LINK_HASH_PREFIX = b"port-tracker alert link v1\n"
LINK_SIGNATURE_PREFIX = b"port-tracker alert link signature v1\n"
CHECKPOINT_SIGNATURE_PREFIX = b"port-tracker alert checkpoint v1\n"
BUNDLE_FORMAT = "port-tracker-audit-bundle/1"
CHECKPOINT_TOPIC = "tracker/audit/checkpoint"

RAISED, UPDATED, RETRACTED, ACKNOWLEDGED, RESOLVED, LEGACY, REOPENED, ASSIGNED = (
    "raised",
    "updated",
    "retracted",
    "acknowledged",
    "resolved",
    "legacy",
    "reopened",
    "assigned",
)
FACTS = frozenset({RAISED, UPDATED, RETRACTED, ACKNOWLEDGED, RESOLVED, LEGACY, REOPENED, ASSIGNED})
"""``legacy``: an alert stored before the links existed, anchored as it was found (its earlier
history is not proven, only that it has not changed since)."""
STATUSES = frozenset({"logged", "open", "acknowledged", "resolved"})
TRANSITIONS: Mapping[str, frozenset[str]] = {
    ACKNOWLEDGED: frozenset({"open", "logged"}),
    RESOLVED: frozenset({"open", "logged", "acknowledged"}),
    REOPENED: frozenset({"acknowledged", "resolved"}),
    ASSIGNED: frozenset({"open", "logged", "acknowledged"}),
}
"""Which statuses an operator's fact may start from (mirrors the API's rules)."""


class AuditError(ValueError):
    """A bundle, link document, checkpoint or key that cannot even be read."""


def canonical(value: object) -> str:
    """The one serialisation that is hashed and signed: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def jsonable(value: object) -> JSONValue:
    """Plain JSON of a value the way the store writes it (datetimes and other objects as text)."""
    loaded: JSONValue = json.loads(json.dumps(value, default=str))
    return loaded


def comparable(value: object) -> Hashable:
    """A value as the database may hand it back: numbers by value, not by spelling.

    ``jsonb`` prints 1e16 as ``10000000000000000``, which reads back as an int; a row is not
    edited because its numbers are spelt differently from the signed document.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return ("n", Decimal(repr(value) if isinstance(value, float) else value).normalize())
    if isinstance(value, list):
        return ("l", tuple(comparable(v) for v in value))
    if isinstance(value, dict):
        return ("d", tuple(sorted((str(k), comparable(v)) for k, v in value.items())))
    return ("?", repr(value))


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat()


def parse_ts(text: object, what: str) -> datetime:
    if not isinstance(text, str):
        raise AuditError(f"{what}: not a timestamp string")
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise AuditError(f"{what}: not an ISO 8601 timestamp: {text!r}") from None
    if ts.tzinfo is None:
        raise AuditError(f"{what}: timestamp without a time zone: {text!r}")
    return ts


def link_hash(seq: int, prev: str, doc: str) -> str:
    """SHA-256 over the position, the predecessor's hash and the exact document text."""
    return hashlib.sha256(LINK_HASH_PREFIX + f"{seq}\n{prev}\n".encode() + doc.encode()).hexdigest()


# ---------------------------------------------------------------------------- links


@dataclass(frozen=True, slots=True)
class Fact:
    """What a link says: one fact about one alert, who established it and when."""

    alert_id: str
    fact: str
    actor: str
    at: datetime
    body: dict[str, JSONValue]

    def document(self) -> str:
        return canonical(
            {"alert_id": self.alert_id, "fact": self.fact, "actor": self.actor, "at": iso(self.at), "body": self.body}
        )


@dataclass(frozen=True, slots=True)
class Link:
    """One stored link: position, predecessor, the document as hashed, its hash and signature."""

    seq: int
    prev: str
    doc: str
    hash: str
    sig: str | None = None

    def signed_message(self) -> bytes:
        return LINK_SIGNATURE_PREFIX + self.hash.encode()

    def fact(self) -> Fact:
        return parse_document(self.doc)

    def to_json(self) -> dict[str, JSONValue]:
        return {"seq": self.seq, "prev": self.prev, "doc": self.doc, "hash": self.hash, "sig": self.sig}

    @classmethod
    def from_json(cls, obj: object) -> Link:
        if not isinstance(obj, dict):
            raise AuditError("a link is a JSON object")
        seq, prev, doc, digest, sig = (obj.get(k) for k in ("seq", "prev", "doc", "hash", "sig"))
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise AuditError("link: seq must be an integer")
        if not isinstance(prev, str) or not isinstance(doc, str) or not isinstance(digest, str):
            raise AuditError(f"link #{seq}: prev, doc and hash must be strings")
        if sig is not None and not isinstance(sig, str):
            raise AuditError(f"link #{seq}: sig must be a string or null")
        return cls(seq, prev, doc, digest, sig)


def make_link(seq: int, prev: str, fact: Fact, signer: Signer | None) -> Link:
    doc = fact.document()
    digest = link_hash(seq, prev, doc)
    link = Link(seq, prev, doc, digest)
    if signer is None:
        return link
    return Link(seq, prev, doc, digest, signer.sign(link.signed_message()))


def parse_document(doc: str) -> Fact:
    try:
        obj = json.loads(doc)
    except json.JSONDecodeError as exc:
        raise AuditError(f"document is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise AuditError("document is not a JSON object")
    alert, fact, actor, body = obj.get("alert_id"), obj.get("fact"), obj.get("actor"), obj.get("body")
    if not isinstance(alert, str) or not isinstance(actor, str) or not isinstance(body, dict):
        raise AuditError("document lacks alert_id, actor or body")
    if fact not in FACTS:
        raise AuditError(f"unknown fact {fact!r}")
    return Fact(alert, str(fact), actor, parse_ts(obj.get("at"), "document 'at'"), body)


# ---------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: 'the chain had ``count`` links ending in ``head`` at ``at``'."""

    count: int
    head: str
    head_alert: str | None
    at: str  # ISO 8601, kept as signed
    key_id: str
    signature: str = ""

    def body(self) -> dict[str, JSONValue]:
        return {
            "type": "port-tracker/alert-checkpoint",
            "v": 1,
            "count": self.count,
            "head": self.head,
            "head_alert": self.head_alert,
            "at": self.at,
            "key_id": self.key_id,
        }

    def signed_message(self) -> bytes:
        return CHECKPOINT_SIGNATURE_PREFIX + canonical(self.body()).encode()

    def to_json(self) -> dict[str, JSONValue]:
        return {"body": self.body(), "signature": self.signature}

    def to_bytes(self) -> bytes:
        return canonical(self.to_json()).encode()

    @classmethod
    def from_json(cls, obj: object) -> Checkpoint:
        if not isinstance(obj, dict) or not isinstance(obj.get("body"), dict):
            raise AuditError("a checkpoint is an object with 'body' and 'signature'")
        body = obj["body"]
        assert isinstance(body, dict)
        count, head, head_alert, at, kid = (body.get(k) for k in ("count", "head", "head_alert", "at", "key_id"))
        signature = obj.get("signature")
        if body.get("type") != "port-tracker/alert-checkpoint" or body.get("v") != 1:
            raise AuditError("not a version 1 port-tracker checkpoint")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise AuditError("checkpoint: count must be a non-negative integer")
        if not isinstance(head, str) or not isinstance(at, str) or not isinstance(kid, str):
            raise AuditError("checkpoint: head, at and key_id must be strings")
        if head_alert is not None and not isinstance(head_alert, str):
            raise AuditError("checkpoint: head_alert must be a string or null")
        if not isinstance(signature, str):
            raise AuditError("checkpoint: signature must be a string")
        parse_ts(at, "checkpoint 'at'")
        return cls(count, head, head_alert, at, kid, signature)

    def describe(self) -> str:
        return f"checkpoint of {self.at} covering {self.count} links (key {self.key_id})"


def make_checkpoint(count: int, head: str, head_alert: str | None, at: datetime, signer: Signer) -> Checkpoint:
    unsigned = Checkpoint(count, head, head_alert, iso(at), signer.key_id)
    return Checkpoint(count, head, head_alert, unsigned.at, signer.key_id, signer.sign(unsigned.signed_message()))
