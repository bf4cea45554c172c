"""Verification of a bundle: replay the links, fold them into each alert's state, compare with the rows.

``verify(bundle, keys)`` needs only the public keys, so a third party can run it on an export; it names
the first bad link, a tail shorter than a checkpoint, and each alert row that differs from its links.
Apart from the model (tracker/audit_chain.py, tracker/audit_records.py) because this is the part that
changes when a new kind of fact is added. Pure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tracker.audit_chain import (
    ACKNOWLEDGED,
    GENESIS,
    LEGACY,
    RAISED,
    REOPENED,
    RESOLVED,
    RETRACTED,
    STATUSES,
    TRANSITIONS,
    UPDATED,
    AuditError,
    Checkpoint,
    Fact,
    JSONValue,
    comparable,
    link_hash,
    parse_ts,
)
from tracker.audit_records import AlertRecord, Bundle
from tracker.audit_sign import signature_ok

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


def verify(bundle: Bundle, public_keys: Sequence[Ed25519PublicKey], anchors: Iterable[Checkpoint] = ()) -> Report:
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
