"""Evidence that the alert log was not rewritten: links, signatures, checkpoints, verification.

Every fact about an alert (raised, updated, retracted, acknowledged, resolved) is a *link*:
a canonical JSON document hashed together with its position and its predecessor's hash,
and signed with the service's Ed25519 key. At a fixed interval the service signs a
*checkpoint* of the chain's head (how many links, the last hash) and publishes it outside
the database. Someone who can rewrite the database but does not hold the key can neither
re-sign an edited link nor forge a checkpoint that covers fewer links, so

* an edited link fails its hash or, once recomputed, its signature: that link is named;
* a deleted tail is shorter than the last checkpoint says;
* an alert row whose status (or content) differs from the fold of its links, or that has
  no link at all, is named with its alert id.

This module is pure (no file, network or database access, no clock) so that a third party
can check an exported bundle with nothing but the public key: ``verify(bundle, keys)``.
Link hashes cover the stored document text byte for byte, so a verifier in another
language needs SHA-256, Ed25519 and a JSON parser, never our serialiser.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

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


# ---------------------------------------------------------------------------- keys


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


# ---------------------------------------------------------------------------- alerts as stored


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert row as the database holds it: what the fold of its links must reproduce."""

    id: str
    seq: int
    kind: str
    severity: str
    device_id: str
    port: str | None
    fence_id: str | None
    ts: datetime
    message: str
    evidence: JSONValue
    status: str
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    resolution: str | None = None
    ended_at: datetime | None = None
    fence_versions: JSONValue = None  # the fence sets it was raised under; None before migration 008
    assigned_to: str | None = None

    def content(self) -> dict[str, JSONValue]:
        """The alert as raised: what a ``raised`` link carries."""
        return {
            "fence_versions": self.fence_versions,
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "device_id": self.device_id,
            "port": self.port,
            "fence_id": self.fence_id,
            "ts": iso(self.ts),
            "message": self.message,
            "evidence": self.evidence,
        }

    def to_json(self) -> dict[str, JSONValue]:
        def t(value: datetime | None) -> str | None:
            return None if value is None else iso(value)

        return {
            **self.content(),
            "seq": self.seq,
            "status": self.status,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": t(self.acknowledged_at),
            "resolved_by": self.resolved_by,
            "resolved_at": t(self.resolved_at),
            "resolution": self.resolution,
            "ended_at": t(self.ended_at),
            "assigned_to": self.assigned_to,
        }

    @classmethod
    def from_json(cls, obj: object) -> AlertRecord:
        if not isinstance(obj, dict):
            raise AuditError("an alert is a JSON object")
        what = f"alert {obj.get('id')!r}"

        def s(key: str, optional: bool = False) -> str | None:
            value = obj.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, str):
                raise AuditError(f"{what}: {key} must be a string")
            return value

        def t(key: str) -> datetime | None:
            value = obj.get(key)
            return None if value is None else parse_ts(value, f"{what}: {key}")

        seq = obj.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise AuditError(f"{what}: seq must be an integer")
        ts = t("ts")
        if ts is None:
            raise AuditError(f"{what}: ts is required")
        return cls(
            id=str(s("id")),
            seq=seq,
            kind=str(s("kind")),
            severity=str(s("severity")),
            device_id=str(s("device_id")),
            port=s("port", True),
            fence_id=s("fence_id", True),
            ts=ts,
            message=str(s("message")),
            evidence=obj.get("evidence"),
            status=str(s("status")),
            acknowledged_by=s("acknowledged_by", True),
            acknowledged_at=t("acknowledged_at"),
            resolved_by=s("resolved_by", True),
            resolved_at=t("resolved_at"),
            resolution=s("resolution", True),
            ended_at=t("ended_at"),
            fence_versions=obj.get("fence_versions"),
            assigned_to=s("assigned_to", True),
        )


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """A row of ``alert_updates``: each must be the subject of an ``updated``/``retracted`` link."""

    alert_id: str
    ts: datetime
    closes: bool
    fields: JSONValue

    def key(self) -> tuple[datetime, bool, Hashable]:
        return (self.ts, self.closes, comparable(self.fields))

    def to_json(self) -> dict[str, JSONValue]:
        return {"alert_id": self.alert_id, "ts": iso(self.ts), "closes": self.closes, "fields": self.fields}

    @classmethod
    def from_json(cls, obj: object) -> UpdateRecord:
        if not isinstance(obj, dict) or not isinstance(obj.get("alert_id"), str):
            raise AuditError("an update is an object with an alert_id")
        closes = obj.get("closes")
        if not isinstance(closes, bool):
            raise AuditError("update: closes must be true or false")
        return cls(str(obj["alert_id"]), parse_ts(obj.get("ts"), "update ts"), closes, obj.get("fields"))


def update_body(ts: datetime, closes: bool, fields: JSONValue) -> dict[str, JSONValue]:
    return {"ts": iso(ts), "closes": closes, "fields": fields}


# ---------------------------------------------------------------------------- bundles


@dataclass(frozen=True, slots=True)
class Bundle:
    """Everything a third party needs to check the alert log without the database."""

    links: tuple[Link, ...]
    alerts: tuple[AlertRecord, ...]
    updates: tuple[UpdateRecord, ...]
    checkpoints: tuple[Checkpoint, ...]

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "format": BUNDLE_FORMAT,
            "links": [link.to_json() for link in self.links],
            "alerts": [a.to_json() for a in self.alerts],
            "updates": [u.to_json() for u in self.updates],
            "checkpoints": [c.to_json() for c in self.checkpoints],
        }

    @classmethod
    def from_json(cls, obj: object) -> Bundle:
        if not isinstance(obj, dict) or obj.get("format") != BUNDLE_FORMAT:
            raise AuditError(f"not a {BUNDLE_FORMAT} bundle")
        parts: dict[str, list[object]] = {}
        for key in ("links", "alerts", "updates", "checkpoints"):
            items = obj.get(key)
            if not isinstance(items, list):
                raise AuditError(f"bundle: {key} must be a list")
            parts[key] = items
        return cls(
            tuple(Link.from_json(x) for x in parts["links"]),
            tuple(AlertRecord.from_json(x) for x in parts["alerts"]),
            tuple(UpdateRecord.from_json(x) for x in parts["updates"]),
            tuple(Checkpoint.from_json(x) for x in parts["checkpoints"]),
        )


# ---------------------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason the log is not intact; ``seq`` names the link, ``alert_id`` the alert."""

    seq: int | None
    alert_id: str | None
    problem: str

    def describe(self) -> str:
        where = f"link #{self.seq}" if self.seq is not None else "no link"
        return f"{where} (alert {self.alert_id or 'unknown'}): {self.problem}"


@dataclass(frozen=True, slots=True)
class Report:
    links: int
    alerts: int
    signatures_checked: bool
    checkpoint: Checkpoint | None  # the newest valid checkpoint the chain was checked against
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_bad(self) -> Finding | None:
        """The earliest link that is wrong (a finding without a link comes after every link)."""
        if not self.findings:
            return None
        return min(self.findings, key=lambda f: (f.seq is None, f.seq or 0))

    def summary(self) -> list[str]:
        anchor = self.checkpoint.describe() if self.checkpoint else "no valid checkpoint"
        lines = []
        if self.ok:
            lines.append(f"alert log intact: {self.links} links, {self.alerts} alerts; checked against {anchor}")
        else:
            first = self.first_bad
            assert first is not None
            lines.append(f"alert log NOT intact; first bad: {first.describe()}")
            lines.append(f"checked against {anchor}; {self.links} links, {self.alerts} alerts")
            lines.extend("  " + f.describe() for f in sorted(self.findings, key=_finding_order) if f is not first)
        lines.extend("note: " + n for n in self.notes)
        return lines


def _finding_order(f: Finding) -> tuple[bool, int]:
    return (f.seq is None, f.seq or 0)


@dataclass
class _State:
    """The fold of one alert's links: what its row must say."""

    first_seq: int
    last_seq: int
    content: dict[str, JSONValue]
    status: str
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    resolution: str | None = None
    ended_at: datetime | None = None
    assigned_to: str | None = None
    updates: list[tuple[datetime, bool, Hashable]] = field(default_factory=list)


def _opt_str(body: Mapping[str, JSONValue], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise AuditError(f"body: {key} must be a string or null")
    return value


def _opt_ts(body: Mapping[str, JSONValue], key: str) -> datetime | None:
    value = body.get(key)
    return None if value is None else parse_ts(value, f"body: {key}")


def _update_key(body: Mapping[str, JSONValue]) -> tuple[datetime, bool, Hashable]:
    closes = body.get("closes")
    if not isinstance(closes, bool):
        raise AuditError("body: closes must be true or false")
    return (parse_ts(body.get("ts"), "body: ts"), closes, comparable(body.get("fields")))


def _apply(states: dict[str, _State], seq: int, f: Fact) -> str | None:
    """Fold one fact into its alert's state; returns a problem when the fact cannot happen there."""
    state = states.get(f.alert_id)
    body = f.body
    if f.fact in (RAISED, LEGACY):
        if state is not None:
            return f"a second '{f.fact}' link for an alert first linked at #{state.first_seq}"
        content = body.get("alert")
        status = body.get("status")
        if not isinstance(content, dict) or content.get("id") != f.alert_id:
            return "its alert content is missing or names another alert"
        if status not in STATUSES:
            return f"unknown status {status!r}"
        state = _State(seq, seq, content, str(status))
        if f.fact == LEGACY:
            state.acknowledged_by = _opt_str(body, "acknowledged_by")
            state.acknowledged_at = _opt_ts(body, "acknowledged_at")
            state.resolved_by = _opt_str(body, "resolved_by")
            state.resolved_at = _opt_ts(body, "resolved_at")
            state.resolution = _opt_str(body, "resolution")
            state.ended_at = _opt_ts(body, "ended_at")
            state.assigned_to = _opt_str(body, "assigned_to")
            updates = body.get("updates", [])
            if not isinstance(updates, list) or not all(isinstance(u, dict) for u in updates):
                return "legacy updates must be a list of objects"
            state.updates = [_update_key(u) for u in updates if isinstance(u, dict)]
        states[f.alert_id] = state
        return None
    if state is None:
        return f"'{f.fact}' for an alert that was never raised"
    state.last_seq = seq
    if f.fact in (UPDATED, RETRACTED):
        key = _update_key(body)
        state.updates.append(key)
        if f.fact == RETRACTED:
            state.status = "resolved"
            state.resolved_by, state.resolved_at = f.actor, f.at
            state.resolution = _opt_str(body, "resolution")
        elif key[1]:
            state.ended_at = key[0]
        return None
    if state.status not in TRANSITIONS[f.fact]:
        return f"'{f.fact}' from status '{state.status}' is not a permitted transition"
    if f.fact == ACKNOWLEDGED:
        state.status = "acknowledged"
        state.acknowledged_by, state.acknowledged_at = f.actor, f.at
    elif f.fact == RESOLVED:
        state.status = "resolved"
        state.resolved_by, state.resolved_at = f.actor, f.at
        # links written before resolutions had their own field carried the note as the resolution
        state.resolution = _opt_str(body, "resolution" if "resolution" in body else "note")
    elif f.fact == REOPENED:
        state.status = "open"
        state.acknowledged_by = state.acknowledged_at = None
        state.resolved_by = state.resolved_at = state.resolution = None
    else:
        state.assigned_to = _opt_str(body, "assignee")
    return None


def _compare(state: _State, row: AlertRecord, updates: list[tuple[datetime, bool, Hashable]]) -> str | None:
    """The first way the row differs from the fold of its links, or None."""
    c = state.content
    expected: list[tuple[str, object, object]] = [
        ("kind", c.get("kind"), row.kind),
        ("severity", c.get("severity"), row.severity),
        ("device_id", c.get("device_id"), row.device_id),
        ("port", c.get("port"), row.port),
        ("fence_id", c.get("fence_id"), row.fence_id),
        ("message", c.get("message"), row.message),
        ("evidence", comparable(c.get("evidence")), comparable(row.evidence)),
        ("fence_versions", comparable(c.get("fence_versions")), comparable(row.fence_versions)),
        ("status", state.status, row.status),
        ("acknowledged_by", state.acknowledged_by, row.acknowledged_by),
        ("acknowledged_at", state.acknowledged_at, row.acknowledged_at),
        ("resolved_by", state.resolved_by, row.resolved_by),
        ("resolved_at", state.resolved_at, row.resolved_at),
        ("resolution", state.resolution, row.resolution),
        ("ended_at", state.ended_at, row.ended_at),
        ("assigned_to", state.assigned_to, row.assigned_to),
    ]
    try:
        expected.insert(5, ("ts", parse_ts(c.get("ts"), "alert ts"), row.ts))
    except AuditError as exc:
        return str(exc)
    for name, linked, stored in expected:
        if linked != stored:
            if name == "evidence":
                return "its evidence differs from what its links say"
            if name == "fence_versions":
                return "its fence_versions differ from what its links say"
            return f"{name} is {stored!r} but its links say {linked!r}"
    if Counter(state.updates) != Counter(updates):
        return f"its stored updates ({len(updates)}) differ from its linked updates ({len(state.updates)})"
    return None


def verify(
    bundle: Bundle, public_keys: Sequence[Ed25519PublicKey], anchors: Iterable[Checkpoint] = ()
) -> Report:
    """Check the chain, its signatures, every checkpoint and every alert row against the links.

    ``anchors`` are checkpoints obtained elsewhere (the retained MQTT message, a copy a
    third party kept): they weigh exactly like those in the bundle, so deleting the newest
    checkpoints from the database does not hide a truncation they covered. Without public
    keys, signatures are not checked and the report says so.
    """
    keys = list(public_keys)
    findings: list[Finding] = []
    notes: list[str] = []
    links = sorted(bundle.links, key=lambda k: k.seq)

    # 1. the chain itself: contiguous, each link hashing its predecessor, each signed
    facts: list[tuple[int, Fact]] = []
    prev, expected_seq, broken = GENESIS, 1, False
    for link in links:
        try:
            fact: Fact | None = link.fact()
        except AuditError as exc:
            fact = None
            problem: str | None = f"unreadable document: {exc}"
        else:
            problem = None
        alert = fact.alert_id if fact else None
        if not broken:
            if link.seq != expected_seq:
                where = expected_seq if link.seq > expected_seq else link.seq
                problem = (
                    f"missing: the chain jumps from #{expected_seq - 1} to #{link.seq}"
                    if link.seq > expected_seq
                    else "appears twice"
                )
                findings.append(Finding(where, alert if link.seq <= expected_seq else None, problem))
                broken = True
            elif link.prev != prev:
                findings.append(Finding(link.seq, alert, "does not follow its predecessor (prev_hash differs)"))
                broken = True
            elif link_hash(link.seq, link.prev, link.doc) != link.hash:
                findings.append(Finding(link.seq, alert, "its content does not match its hash (edited)"))
                broken = True
            elif keys and not signature_ok(keys, link.signed_message(), link.sig):
                why = "carries no signature" if not link.sig else "its signature is not the service key's"
                findings.append(Finding(link.seq, alert, f"{why} (rewritten)"))
                broken = True
            elif problem is not None:
                findings.append(Finding(link.seq, alert, problem))
                broken = True
        prev, expected_seq = link.hash, link.seq + 1
        if fact is not None:
            facts.append((link.seq, fact))
    if not keys:
        notes.append("no public key given: signatures were not checked")

    # 2. checkpoints: each valid one must match the chain at its count
    chain_break = next((f for f in findings if f.seq is not None), None)
    by_seq = {link.seq: link for link in links}
    present = links[-1].seq if links else 0
    valid: list[Checkpoint] = []
    for cp in (*bundle.checkpoints, *anchors):
        if keys and not signature_ok(keys, cp.signed_message(), cp.signature):
            findings.append(Finding(None, None, f"{cp.describe()} has an invalid signature"))
            continue
        valid.append(cp)
    valid.sort(key=lambda c: (c.count, c.at))
    matched = 0
    for cp in valid:
        at_count = by_seq.get(cp.count)
        if cp.count == 0:
            continue
        if cp.count > present:
            first_missing = present + 1
            alert = cp.head_alert if first_missing == cp.count else None
            findings.append(
                Finding(first_missing, alert, f"missing: {cp.describe()} but the chain has only {present} links")
            )
        elif at_count is None or at_count.hash != cp.head:
            # the rewrite began after the last checkpoint that still matches; a broken link there pins it
            seq, alert = matched + 1, None
            if chain_break is not None and chain_break.seq is not None and matched < chain_break.seq <= cp.count:
                seq, alert = chain_break.seq, chain_break.alert_id
            findings.append(
                Finding(seq, alert, f"the chain differs from {cp.describe()}: rewritten after link #{matched}")
            )
        else:
            matched = max(matched, cp.count)
    checkpoint = max(valid, key=lambda c: (c.count, c.at)) if valid else None
    if checkpoint is None:
        notes.append("no checkpoint: a deleted tail cannot be detected")
    elif present > checkpoint.count:
        notes.append(f"links #{checkpoint.count + 1}..#{present} are newer than the last checkpoint")

    # 3. the fold: every alert row equals what its links say; every update is linked
    states: dict[str, _State] = {}
    for seq, fact in facts:
        try:
            problem = _apply(states, seq, fact)
        except AuditError as exc:
            problem = str(exc)
        if problem is not None:
            findings.append(Finding(seq, fact.alert_id, problem))
    stored_updates: dict[str, list[tuple[datetime, bool, Hashable]]] = {}
    for upd in bundle.updates:
        stored_updates.setdefault(upd.alert_id, []).append(upd.key())
    rows = {row.id: row for row in bundle.alerts}
    for alert_id, row in rows.items():
        state = states.get(alert_id)
        if state is None:
            findings.append(Finding(None, alert_id, "the alert has no link (written outside the chain)"))
            continue
        problem = _compare(state, row, stored_updates.get(alert_id, []))
        if problem is not None:
            findings.append(Finding(state.last_seq, alert_id, f"changed without a link: {problem}"))
    for alert_id, state in states.items():
        if alert_id not in rows:
            findings.append(Finding(state.first_seq, alert_id, "its alert row is missing (deleted)"))
    findings.extend(
        Finding(None, alert_id, "updates stored for an alert that does not exist")
        for alert_id in stored_updates
        if alert_id not in rows
    )
    # raised order: the alerts' own sequence must run in the order their first links do
    last_row_seq, last_link = 0, 0
    for alert_id, state in sorted(states.items(), key=lambda kv: kv[1].first_seq):
        stored = rows.get(alert_id)
        if stored is None:
            continue
        if stored.seq <= last_row_seq:
            findings.append(
                Finding(state.first_seq, alert_id, f"stored before the alert of link #{last_link} (reordered)")
            )
        last_row_seq, last_link = max(last_row_seq, stored.seq), state.first_seq
    return Report(len(links), len(rows), bool(keys), checkpoint, tuple(findings), tuple(notes))
