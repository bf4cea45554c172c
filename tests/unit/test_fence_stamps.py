"""The fence-set versions an alert names are part of its signed content: swapping them is found."""

from __future__ import annotations

import dataclasses

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unit.test_audit import T0, Log
from tracker import audit
from tracker.adapters.store_fences import fence_stamp

V2: dict[str, audit.JSONValue] = {"version": 2, "sha256": "a" * 64}
V3: dict[str, audit.JSONValue] = {"version": 3, "sha256": "b" * 64}


def test_an_alert_names_its_ports_set_or_all_sets_when_it_has_no_port() -> None:
    versions: dict[str, dict[str, audit.JSONValue]] = {"santos": V2, "callao": {"version": None, "sha256": "c" * 64}}
    assert fence_stamp(versions, "santos") == {"santos": V2}
    assert fence_stamp(versions, None) == versions
    assert fence_stamp(versions, "rotterdam") == versions  # a port without a set: everything in force
    assert fence_stamp({}, "santos") == {}


def test_a_fence_version_changed_in_the_row_is_a_finding() -> None:
    signer = audit.Signer(Ed25519PrivateKey.generate())
    log = Log(signer)
    aid = log.raise_alert(1)
    rec = dataclasses.replace(log.alerts[aid], fence_versions={"santos": V2})
    log.links.clear()
    log._append(aid, audit.RAISED, "system", T0, {"alert": rec.content(), "status": "open"})
    log.alerts[aid] = rec
    assert audit.verify(log.bundle(), [signer.public_key]).ok
    # an insider with the database claims the alert was raised under another set
    log.alerts[aid] = dataclasses.replace(rec, fence_versions={"santos": V3})
    report = audit.verify(log.bundle(), [signer.public_key])
    assert [f.problem for f in report.findings] == [
        "changed without a link: its fence_versions differ from what its links say"
    ]


def test_alerts_from_before_versions_compare_as_none() -> None:
    signer = audit.Signer(Ed25519PrivateKey.generate())
    log = Log(signer)
    log.raise_alert(1)
    assert audit.verify(log.bundle(), [signer.public_key]).ok


def test_the_bundle_round_trip_keeps_fence_versions() -> None:
    signer = audit.Signer(Ed25519PrivateKey.generate())
    log = Log(signer)
    aid = log.raise_alert(1)
    rec = dataclasses.replace(log.alerts[aid], fence_versions={"santos": V2})
    assert audit.AlertRecord.from_json(rec.to_json()) == rec
