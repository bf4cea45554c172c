"""Custody reports offline: a signed report verifies with the public key alone, in its JSON, HTML and PDF
forms; one edited byte, a checkpoint that does not cover an alert's links, a status its links do not
give, or another key, each fail verification."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from shapely.geometry import Polygon

from geofences import Fence, FenceKind
from geofences.geo import haversine_m
from tracker import audit, custody, custody_render
from tracker.__main__ import main
from tracker.adapters.store_exports import Track

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def track(n: int = 500) -> Track:
    ts = np.array([int((T0 + timedelta(seconds=10 * i)).timestamp() * 1e6) for i in range(n)], dtype=np.int64)
    lon = -46.30 + np.linspace(0, 0.01, n)
    lat = -23.96 + 0.002 * np.sin(np.linspace(0, 6, n))
    return Track(ts, lon, lat, np.full(n, 3.0, np.float32), np.full(n, 90.0, np.float32))


def build(signer: audit.Signer, *, covered: bool = True, status_override: str | None = None) -> dict[str, Any]:
    """A report of two alerts: a stop (raised, updated with its end, acknowledged, resolved) and a breach."""
    rec = audit.AlertRecord(
        id="0b0a6c1e-1111-4c3b-9d6e-000000000001",
        seq=1,
        kind="unexpected_stop",
        severity="high",
        device_id="CNT-1",
        port="santos",
        fence_id="q1",
        ts=T0 + timedelta(minutes=40),
        message="CNT-1 has been standing still for 30 min",
        evidence={"centre": {"lon": -46.295, "lat": -23.96}, "started_at": (T0 + timedelta(minutes=10)).isoformat()},
        status="open",
    )
    breach = audit.AlertRecord(
        id="0b0a6c1e-1111-4c3b-9d6e-000000000002",
        seq=2,
        kind="restricted_entry",
        severity="critical",
        device_id="CNT-1",
        port="santos",
        fence_id="r1",
        ts=T0 + timedelta(minutes=60),
        message="entered restricted area",
        evidence={"fix": {"lon": -46.292, "lat": -23.958}},
        status="open",
    )
    at = T0 + timedelta(hours=2)
    end_ts = T0 + timedelta(minutes=45)
    update = audit.update_body(end_ts, True, {"ended_at": end_ts.isoformat(), "duration_s": 2100.0})
    facts = [
        audit.Fact(rec.id, audit.RAISED, "system", at, {"alert": rec.content(), "status": "open"}),
        audit.Fact(breach.id, audit.RAISED, "system", at, {"alert": breach.content(), "status": "open"}),
        audit.Fact(rec.id, audit.UPDATED, "system", at, update),
        audit.Fact(rec.id, audit.ACKNOWLEDGED, "op-anna", at + timedelta(minutes=1), {"note": "calling driver"}),
        audit.Fact(
            rec.id,
            audit.RESOLVED,
            "op-anna",
            at + timedelta(minutes=5),
            {"note": "on break", "resolution": "false_alarm"},
        ),
    ]
    links = []
    prev = audit.GENESIS
    for seq, fact in enumerate(facts, 1):
        link = audit.make_link(seq, prev, fact, signer)
        links.append(link)
        prev = link.hash
    cp = audit.make_checkpoint(len(links) if covered else 3, links[-1 if covered else 2].hash, rec.id, at, signer)
    resolved = audit.AlertRecord(
        **{
            **{f: getattr(rec, f) for f in rec.__slots__},
            "status": status_override or "resolved",
            "acknowledged_by": "op-anna",
            "acknowledged_at": at + timedelta(minutes=1),
            "resolved_by": "op-anna",
            "resolved_at": at + timedelta(minutes=5),
            "resolution": "false_alarm",
            "ended_at": end_ts,
        }
    )
    upd = {"ts": audit.iso(end_ts), "closes": True, "fields": update["fields"]}
    fence = Fence(
        "q1",
        "Quay 1",
        FenceKind.QUAY,
        "santos",
        Polygon([(-46.3, -23.97), (-46.29, -23.97), (-46.29, -23.95), (-46.3, -23.95)]),
    )
    far = Fence(
        "x9", "Elsewhere", FenceKind.TERMINAL, "santos", Polygon([(-45.0, -23.0), (-44.9, -23.0), (-44.9, -22.9)])
    )
    tracks = {"CNT-1": track()}
    alerts_json = [resolved.to_json(), breach.to_json()]
    inspections = [
        {
            "inspection_id": "i1",
            "result": "cleared",
            "ts": audit.iso(T0 + timedelta(hours=1)),
            "facility": None,
            "seal": "S1",
            "source": "api",
        }
    ]
    content = {
        "type": custody.REPORT_TYPE,
        "v": custody.REPORT_VERSION,
        "container_no": "MSCU1234565",
        "from": audit.iso(T0),
        "to": audit.iso(T0 + timedelta(days=1)),
        "generated_at": audit.iso(at),
        "generated_for": {"name": "insurer-a", "role": "insurer"},
        "devices": ["CNT-1"],
        "trucks": [],
        "trips": [],
        "trips_note": "none",
        "track": custody.track_summary(tracks),
        "stops": custody.stops_from_alerts(alerts_json, {rec.id: [upd]}),
        "alerts": [
            {
                "alert": resolved.to_json(),
                "updates": [upd],
                "links": [link.to_json() for link in links if link.fact().alert_id == rec.id],
            },
            {"alert": breach.to_json(), "updates": [], "links": [links[1].to_json()]},
        ],
        "inspections": inspections,
        "clearance": custody.clearance_times(inspections),
        "fences": custody.fences_involved([fence, far], tracks, ["r1"]),
        "checkpoint": cp.to_json(),
    }
    return custody.sign(content, signer)


@pytest.fixture
def signer() -> audit.Signer:
    return audit.Signer(Ed25519PrivateKey.generate())


def test_a_signed_report_verifies_and_its_content_is_what_was_gathered(signer: audit.Signer) -> None:
    doc = build(signer)
    verdict = custody.verify(json.loads(json.dumps(doc)), [signer.public_key])
    assert verdict.ok, verdict.problems
    report = doc["report"]
    t = track()
    expected = sum(
        haversine_m(float(t.lon[i]), float(t.lat[i]), float(t.lon[i + 1]), float(t.lat[i + 1]))
        for i in range(len(t) - 1)
    )
    assert report["track"]["fixes"] == 500
    assert report["track"]["distance_m"] == pytest.approx(expected, abs=0.5)
    assert report["track"]["first"] == T0.isoformat() and len(report["track"]["points"]) <= custody.TRACK_POINTS
    assert [f["id"] for f in report["fences"]] == ["q1"]  # the track passes through q1; x9 is far away
    assert report["stops"][0]["end"] == (T0 + timedelta(minutes=45)).isoformat()
    assert report["stops"][0]["duration_s"] == 2100.0
    assert report["clearance"]["cleared_at"] == audit.iso(T0 + timedelta(hours=1))


def test_one_edited_byte_fails_verification(signer: audit.Signer) -> None:
    text = audit.canonical(build(signer))
    at = text.index('"MSCU1234565"') + 5
    edited = text[:at] + ("9" if text[at] != "9" else "8") + text[at + 1 :]
    assert len(edited) == len(text) and edited != text
    verdict = custody.verify(json.loads(edited), [signer.public_key])
    assert not verdict.ok and "signature" in verdict.problems[0]


def test_the_checkpoint_must_cover_every_alert_link(signer: audit.Signer) -> None:
    verdict = custody.verify(build(signer, covered=False), [signer.public_key])
    assert not verdict.ok
    assert any("not covered by the checkpoint" in p for p in verdict.problems), verdict.problems


def test_a_status_the_links_do_not_give_fails_even_when_signed(signer: audit.Signer) -> None:
    # the report's own signature is good (the service signed it), but its alert says what its links do not
    verdict = custody.verify(build(signer, status_override="acknowledged"), [signer.public_key])
    assert not verdict.ok
    assert any("status" in p for p in verdict.problems), verdict.problems


def test_another_key_fails(signer: audit.Signer) -> None:
    other = audit.Signer(Ed25519PrivateKey.generate())
    assert not custody.verify(build(signer), [other.public_key]).ok


def test_html_and_pdf_embed_the_signed_json_and_the_cli_checks_them(signer: audit.Signer, tmp_path: Path) -> None:
    doc = build(signer)
    key = tmp_path / "signing.pub"
    key.write_bytes(audit.public_pem(signer.public_key))
    page = custody_render.render_html(doc)
    assert "<svg" in page and "MSCU1234565" in page
    # the map: the one fence involved, the track, start + end + the stop, drawn from the report's data
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert svg.count("<polygon") == 1 and svg.count("<polyline") == 1 and svg.count("<circle") == 3
    pdf = custody_render.render_pdf(doc)
    assert pdf.startswith(b"%PDF-")
    for name, data in (("r.json", audit.canonical(doc).encode()), ("r.html", page.encode()), ("r.pdf", pdf)):
        assert custody.read_document(data) == doc, name
        (tmp_path / name).write_bytes(data)
        assert main(["custody", "verify", str(tmp_path / name), "--public-key", str(key)]) == 0, name
    # one byte of the PDF's attached JSON changed: the PDF still opens, the report no longer verifies
    at = pdf.index(b'"container_no":"MSCU1234565"') + len(b'"container_no":"MSCU')
    edited = pdf[:at] + (b"9" if pdf[at : at + 1] != b"9" else b"8") + pdf[at + 1 :]
    (tmp_path / "edited.pdf").write_bytes(edited)
    assert custody.read_document(edited) != doc
    assert main(["custody", "verify", str(tmp_path / "edited.pdf"), "--public-key", str(key)]) == 1
    (tmp_path / "junk.pdf").write_bytes(b"%PDF-1.4 nothing")
    assert main(["custody", "verify", str(tmp_path / "junk.pdf"), "--public-key", str(key)]) == 2


def test_the_pdf_shows_the_evidence(signer: audit.Signer) -> None:
    import io

    from pypdf import PdfReader

    text = "".join(
        page.extract_text() for page in PdfReader(io.BytesIO(custody_render.render_pdf(build(signer)))).pages
    )
    for expected in ("MSCU1234565", "unexpected_stop", "false_alarm", "Quay 1", "cleared"):
        assert expected in text, expected
