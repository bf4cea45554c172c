"""The pure verifier: tampering of every kind is found and named; an intact log passes with only the public key."""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tracker import audit
from tracker.audit import AlertRecord, Bundle, Checkpoint, Fact, Link, Signer, UpdateRecord

T0 = datetime(2024, 3, 4, 6, 0, tzinfo=UTC)


class Log:
    """An alert log built the way the store builds it, in memory."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self.links: list[Link] = []
        self.alerts: dict[str, AlertRecord] = {}
        self.updates: list[UpdateRecord] = []
        self.checkpoints: list[Checkpoint] = []
        self.clock = T0

    def _tick(self) -> datetime:
        self.clock += timedelta(seconds=7)
        return self.clock

    def _append(self, alert_id: str, fact: str, actor: str, at: datetime, body: dict[str, audit.JSONValue]) -> Link:
        prev = self.links[-1].hash if self.links else audit.GENESIS
        link = audit.make_link(len(self.links) + 1, prev, Fact(alert_id, fact, actor, at, body), self.signer)
        self.links.append(link)
        return link

    def raise_alert(self, n: int, severity: str = "high") -> str:
        at = self._tick()
        rec = AlertRecord(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"alert-{n}")),
            seq=len(self.alerts) + 1,
            kind="geofence_enter",
            severity=severity,
            device_id=f"TRK-{n:03d}",
            port="santos",
            fence_id="f1",
            ts=at - timedelta(seconds=1),
            message=f"TRK-{n:03d} entered restricted 'f1'",
            evidence={"distance_m": 12.5 + n, "fix": {"lat": -23.95, "lon": -46.3}},
            status="open" if severity in ("medium", "high", "critical") else "logged",
        )
        self._append(rec.id, audit.RAISED, "system", at, {"alert": rec.content(), "status": rec.status})
        self.alerts[rec.id] = rec
        return rec.id

    def acknowledge(self, alert_id: str, who: str = "op-ana") -> None:
        at = self._tick()
        self._append(alert_id, audit.ACKNOWLEDGED, who, at, {"note": None})
        self.alerts[alert_id] = dataclasses.replace(
            self.alerts[alert_id], status="acknowledged", acknowledged_by=who, acknowledged_at=at
        )

    def resolve(self, alert_id: str, note: str, who: str = "op-ana") -> None:
        at = self._tick()
        self._append(alert_id, audit.RESOLVED, who, at, {"note": note})
        self.alerts[alert_id] = dataclasses.replace(
            self.alerts[alert_id], status="resolved", resolved_by=who, resolved_at=at, resolution=note
        )

    def update(self, alert_id: str, closes: bool) -> None:
        at = self._tick()
        fields: audit.JSONValue = {"ended_at": at.isoformat(), "duration_s": 310.6}
        self._append(alert_id, audit.UPDATED, "system", at, audit.update_body(at, closes, fields))
        self.updates.append(UpdateRecord(alert_id, at, closes, fields))
        if closes:
            self.alerts[alert_id] = dataclasses.replace(self.alerts[alert_id], ended_at=at)

    def checkpoint(self) -> Checkpoint:
        head = self.links[-1]
        cp = audit.make_checkpoint(head.seq, head.hash, head.fact().alert_id, self._tick(), self.signer)
        self.checkpoints.append(cp)
        return cp

    def bundle(self) -> Bundle:
        return Bundle(tuple(self.links), tuple(self.alerts.values()), tuple(self.updates), tuple(self.checkpoints))

    def rewrite_from(self, seq: int, docs: dict[int, str]) -> None:
        """What someone with the database but without the key can do: new documents, hashes recomputed."""
        out = self.links[: seq - 1]
        for link in self.links[seq - 1 :]:
            prev = out[-1].hash if out else audit.GENESIS
            doc = docs.get(link.seq, link.doc)
            out.append(Link(link.seq, prev, doc, audit.link_hash(link.seq, prev, doc), link.sig))
        self.links = out


@pytest.fixture
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


def sample(signer: Signer) -> tuple[Log, list[str]]:
    """Six alerts with acknowledgements, a resolution and updates; a checkpoint; one link after it."""
    log = Log(signer)
    ids = [log.raise_alert(n, "info" if n == 4 else "high") for n in range(6)]
    log.acknowledge(ids[1])
    log.update(ids[2], closes=True)
    log.resolve(ids[1], "false alarm: crane maintenance")
    log.update(ids[3], closes=False)
    log.checkpoint()
    log.acknowledge(ids[5])
    return log, ids


def test_an_intact_log_verifies_with_the_public_key(signer: Signer) -> None:
    log, _ = sample(signer)
    report = audit.verify(log.bundle(), [signer.public_key])
    assert report.ok, report.summary()
    assert report.links == 11 and report.alerts == 6
    assert report.checkpoint == log.checkpoints[-1]
    assert report.checkpoint.count == 10
    assert any("#11..#11 are newer" in n for n in report.notes)


def test_another_key_fails_every_signature(signer: Signer) -> None:
    log, ids = sample(signer)
    report = audit.verify(log.bundle(), [Ed25519PrivateKey.generate().public_key()])
    assert not report.ok
    assert report.checkpoint is None
    first = report.first_bad
    assert first is not None and (first.seq, first.alert_id) == (1, ids[0])
    assert "signature" in first.problem
    assert any("invalid signature" in f.problem for f in report.findings)


def unacknowledge(log: Log, alert_id: str) -> None:
    log.alerts[alert_id] = dataclasses.replace(
        log.alerts[alert_id], status="open", acknowledged_by=None, acknowledged_at=None
    )


def test_deleting_the_tail_is_detected_against_the_checkpoint(signer: Signer) -> None:
    log, ids = sample(signer)
    # links #10 (the update of alert 3, the newest the checkpoint covers) and #11 go, with every trace in the rows
    log.links = log.links[:9]
    log.updates = [u for u in log.updates if u.alert_id != ids[3]]
    unacknowledge(log, ids[5])
    report = audit.verify(log.bundle(), [signer.public_key])
    assert not report.ok
    first = report.first_bad
    assert first is not None
    assert (first.seq, first.alert_id) == (10, ids[3])
    assert "missing" in first.problem and "covering 10 links" in first.problem
    assert report.checkpoint is not None and report.checkpoint.count == 10


def test_a_tail_newer_than_every_checkpoint_is_not_provable(signer: Signer) -> None:
    """The limit of any checkpoint scheme: what no checkpoint covers yet can be dropped unseen."""
    log, ids = sample(signer)
    log.links = log.links[:10]
    unacknowledge(log, ids[5])
    assert audit.verify(log.bundle(), [signer.public_key]).ok


def test_editing_a_middle_link_and_recomputing_the_hashes_is_named(signer: Signer) -> None:
    log, ids = sample(signer)
    target = log.links[2]  # alert 2 raised
    doc = json.loads(target.doc)
    doc["body"]["alert"]["message"] = "nothing to see"
    log.rewrite_from(3, {3: audit.canonical(doc)})
    log.alerts[ids[2]] = dataclasses.replace(log.alerts[ids[2]], message="nothing to see")
    report = audit.verify(log.bundle(), [signer.public_key])
    first = report.first_bad
    assert first is not None and (first.seq, first.alert_id) == (3, ids[2])
    assert "signature" in first.problem
    assert any("differs from checkpoint" in f.problem for f in report.findings)


def test_editing_a_link_without_recomputing_breaks_its_hash(signer: Signer) -> None:
    log, ids = sample(signer)
    target = log.links[6]  # the acknowledgement of alert 1
    log.links[6] = dataclasses.replace(target, doc=target.doc.replace("op-ana", "op-bob"))
    first = audit.verify(log.bundle(), [signer.public_key]).first_bad
    assert first is not None and (first.seq, first.alert_id) == (7, ids[1])
    assert "does not match its hash" in first.problem


def test_a_status_changed_without_a_link_names_the_alert(signer: Signer) -> None:
    log, ids = sample(signer)
    log.alerts[ids[0]] = dataclasses.replace(log.alerts[ids[0]], status="resolved", resolution="dealt with")
    report = audit.verify(log.bundle(), [signer.public_key])
    first = report.first_bad
    assert first is not None and (first.seq, first.alert_id) == (1, ids[0])
    assert "changed without a link: status is 'resolved' but its links say 'open'" in first.problem


def test_reordering_two_alerts_is_named_at_the_first_moved_link(signer: Signer) -> None:
    log, ids = sample(signer)
    # swap the raising of alerts 0 and 1 (links #1 and #2), hashes recomputed; rows renumbered to match
    log.rewrite_from(1, {1: log.links[1].doc, 2: log.links[0].doc})
    a, b = log.alerts[ids[0]], log.alerts[ids[1]]
    log.alerts[ids[0]], log.alerts[ids[1]] = dataclasses.replace(a, seq=b.seq), dataclasses.replace(b, seq=a.seq)
    report = audit.verify(log.bundle(), [signer.public_key])
    first = report.first_bad
    assert first is not None and (first.seq, first.alert_id) == (1, ids[1])


def test_renumbering_alert_rows_alone_is_a_reorder(signer: Signer) -> None:
    log, ids = sample(signer)
    a, b = log.alerts[ids[2]], log.alerts[ids[3]]
    log.alerts[ids[2]], log.alerts[ids[3]] = dataclasses.replace(a, seq=b.seq), dataclasses.replace(b, seq=a.seq)
    report = audit.verify(log.bundle(), [signer.public_key])
    assert [(f.seq, f.alert_id) for f in report.findings] == [(4, ids[3])]
    assert "reordered" in report.findings[0].problem


def test_rows_outside_the_chain_are_named(signer: Signer) -> None:
    log, ids = sample(signer)
    stray = dataclasses.replace(log.alerts[ids[0]], id=str(uuid.uuid4()), seq=99)
    bundle = log.bundle()
    bundle = dataclasses.replace(
        bundle,
        alerts=(*(a for a in bundle.alerts if a.id != ids[4]), stray),
        updates=(*bundle.updates, UpdateRecord(ids[0], T0, True, {"x": 1})),
    )
    problems = {(f.alert_id, f.problem.split(":")[0]) for f in audit.verify(bundle, [signer.public_key]).findings}
    assert (stray.id, "the alert has no link (written outside the chain)") in problems
    assert (ids[4], "its alert row is missing (deleted)") in problems
    assert (ids[0], "changed without a link") in problems  # an update that no link records


def test_a_checkpoint_kept_elsewhere_still_catches_a_truncation(signer: Signer) -> None:
    log, ids = sample(signer)
    outside = log.checkpoint()  # covers all 11
    log.links = log.links[:10]
    log.checkpoints = log.checkpoints[:1]  # the newest checkpoint deleted from the database too
    unacknowledge(log, ids[5])
    assert audit.verify(log.bundle(), [signer.public_key]).ok
    report = audit.verify(log.bundle(), [signer.public_key], [outside])
    first = report.first_bad
    assert first is not None and (first.seq, first.alert_id) == (11, ids[5])
    assert report.checkpoint == outside


def test_a_forged_checkpoint_is_rejected(signer: Signer) -> None:
    log, _ = sample(signer)
    forged = dataclasses.replace(log.checkpoints[0], count=3, head=log.links[2].hash)
    report = audit.verify(log.bundle(), [signer.public_key], [forged])
    assert [f.problem for f in report.findings] == [f"{forged.describe()} has an invalid signature"]


def test_an_illegal_transition_is_a_finding(signer: Signer) -> None:
    log, ids = sample(signer)
    log.acknowledge(ids[1])  # already resolved
    report = audit.verify(log.bundle(), [signer.public_key])
    assert any(f.seq == 12 and "not a permitted transition" in f.problem for f in report.findings)


def test_without_keys_the_report_says_signatures_were_not_checked(signer: Signer) -> None:
    log, _ = sample(signer)
    report = audit.verify(log.bundle(), [])
    assert report.ok and not report.signatures_checked
    assert "no public key given: signatures were not checked" in report.notes


def test_bundle_round_trip_and_any_edit_fails(signer: Signer) -> None:
    log, _ = sample(signer)
    text = json.dumps(log.bundle().to_json())
    assert audit.verify(Bundle.from_json(json.loads(text)), [signer.public_key]).ok
    obj = json.loads(text)
    edits = []
    for i in range(len(obj["links"])):
        for key in ("doc", "prev", "hash", "sig"):
            edits.append(("links", i, key))
    for i in range(len(obj["alerts"])):
        for key in ("message", "status", "severity", "evidence", "seq", "ts"):
            edits.append(("alerts", i, key))
    for i in range(len(obj["updates"])):
        edits.append(("updates", i, "fields"))
    edits.append(("checkpoints", 0, "signature"))
    for part, i, key in edits:
        edited = json.loads(text)
        value = edited[part][i][key]
        if isinstance(value, str) and key in ("ts",):
            edited[part][i][key] = (datetime.fromisoformat(value) + timedelta(seconds=1)).isoformat()
        elif key == "sig" or key == "signature":
            raw = bytearray(base64.b64decode(value))
            raw[0] ^= 1
            edited[part][i][key] = base64.b64encode(bytes(raw)).decode()
        elif isinstance(value, str):
            edited[part][i][key] = value[:-2] + ("x" if value[-2] != "x" else "y") + value[-1]
        elif key == "seq":  # the seq of another alert: a gap alone is no edit (sequences skip numbers)
            edited[part][i][key] = obj[part][(i + 1) % len(obj[part])][key]
        else:
            edited[part][i][key] = {"edited": True}
        report = audit.verify(Bundle.from_json(edited), [signer.public_key])
        assert not report.ok, f"edit of {part}[{i}].{key} went unnoticed"


def test_a_malformed_bundle_is_an_audit_error() -> None:
    with pytest.raises(audit.AuditError):
        Bundle.from_json({"format": "something else"})
    with pytest.raises(audit.AuditError):
        Bundle.from_json(
            {"format": audit.BUNDLE_FORMAT, "links": [{"seq": "1"}], "alerts": [], "updates": [], "checkpoints": []}
        )


def test_checkpoint_json_round_trip(signer: Signer) -> None:
    log, _ = sample(signer)
    cp = log.checkpoints[0]
    again = Checkpoint.from_json(json.loads(cp.to_bytes()))
    assert again == cp
    assert audit.signature_ok([signer.public_key], again.signed_message(), again.signature)


def test_keys_load_from_pem_hex_base64_and_raw(signer: Signer) -> None:
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    want = audit.key_id(key.public_key())
    for data in (audit.private_pem(key), seed.hex().encode() + b"\n", base64.b64encode(seed), seed):
        assert audit.key_id(audit.load_private_key(data).public_key()) == want
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for data in (audit.public_pem(key.public_key()), pub.hex().encode(), base64.b64encode(pub), pub):
        assert audit.key_id(audit.load_public_key(data)) == want
    for bad in (b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", b"ab" * 31):
        with pytest.raises(audit.AuditError):
            audit.load_private_key(bad)


def test_link_hash_covers_position_predecessor_and_text() -> None:
    base = audit.link_hash(3, "a" * 64, '{"x":1}')
    assert base != audit.link_hash(4, "a" * 64, '{"x":1}')
    assert base != audit.link_hash(3, "b" * 64, '{"x":1}')
    assert base != audit.link_hash(3, "a" * 64, '{"x": 1}')
    assert audit.canonical({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'
    with pytest.raises(ValueError):
        audit.canonical({"x": float("nan")})


def test_numbers_compare_by_value_not_by_spelling(signer: Signer) -> None:
    """jsonb hands 1e16 back as 10000000000000000 (an int once parsed): that is no edit; 2e16 is."""
    log = Log(signer)
    aid = log.raise_alert(1)
    rec = log.alerts[aid]
    log.alerts[aid] = dataclasses.replace(rec, evidence={"big": 1e16, "n": 2.0})
    log.links.clear()
    log._append(aid, audit.RAISED, "system", T0, {"alert": log.alerts[aid].content(), "status": "open"})
    log.alerts[aid] = dataclasses.replace(rec, evidence={"big": 10**16, "n": 2})
    assert audit.verify(log.bundle(), [signer.public_key]).ok
    log.alerts[aid] = dataclasses.replace(rec, evidence={"big": 2 * 10**16, "n": 2})
    report = audit.verify(log.bundle(), [signer.public_key])
    assert [f.problem for f in report.findings] == [
        "changed without a link: its evidence differs from what its links say"
    ]
