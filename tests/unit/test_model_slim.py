"""``Ping.bare`` and ``Alert.slim``: what the reorder window keeps, built by constructor, equal to field copies."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from tracker.core.model import Alert, Ping, Severity

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_bare_drops_source_and_receive_time_only() -> None:
    full = Ping("TRK-1", T0, -46.3, -23.9, 4.5, 90.0, 8.0, ("door_open",), "owntracks", T0 + timedelta(seconds=3))
    assert full.bare() == dataclasses.replace(full, source="native", received=None)
    assert full.bare() != full
    plain = Ping("TRK-1", T0, -46.3, -23.9)
    assert plain.bare() is plain


def test_slim_drops_message_and_evidence_only() -> None:
    alert = Alert("geofence_enter", Severity.HIGH, "TRK-1", T0, "entered", "santos", "f-1", {"fix": {"lon": 1}}, "k")
    assert alert.slim() == dataclasses.replace(alert, message="", evidence={})
    assert alert.slim().id == alert.id
    bare = dataclasses.replace(alert, message="", evidence={})
    assert bare.slim() is bare
