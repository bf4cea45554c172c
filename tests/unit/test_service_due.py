"""The service's timer queue after each batch: exactly the due times of the states it adopted.

``Service._adopt`` takes the due times ``run_batch`` already computed (``BatchOutcome.due``) instead of
computing them again. The queue must stay what computing every touched device afresh gives: a device left
with a stale or missing entry would never be woken, and its signal would be lost without an alert. The
service's own batch path (``build_batch`` then ``_adopt``, as the soak drives it) is run on the real Santos
fences without broker or database, fixes and ticks in one batch as well as apart.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from geofences import load_port
from tests.unit.detector_helpers import OPEN
from tracker.adapters.store import BatchResult
from tracker.config import Settings
from tracker.core.model import Alert, Ping
from tracker.service import Fences, Service
from tracker.service_base import Decoded

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
TRUCKS = [f"TRK-{i}" for i in range(8)]


def _fix(i: int, sec: int) -> Ping:
    """Truck ``i`` driving slowly east through the open port, one fix every 10 s."""
    lon, lat = OPEN
    return Ping(TRUCKS[i], T0 + timedelta(seconds=sec), lon + 0.00005 * sec / 10 + 0.001 * i, lat, speed=5.0)


def test_every_touched_device_is_queued_at_its_fresh_due_time_and_every_silent_truck_is_woken() -> None:
    settings = dataclasses.replace(Settings(), unknown_devices="register")
    svc = Service(settings)
    santos = load_port("santos")
    fences = Fences.build([santos], settings.hysteresis_m, settings.entry_margin_m, files=frozenset({santos.port}))
    svc._install(fences)
    expected: dict[str, datetime | None] = {}
    lost: dict[str, datetime] = {}
    used_batch_due = 0

    def step(decoded: list[Decoded], tick_at: datetime | None) -> None:
        nonlocal used_batch_due
        batch, working = svc.build_batch(decoded, tick_at)
        used_batch_due += len(svc._pending_due)
        svc._adopt(batch, working, BatchResult(len(batch.pings), list(batch.alerts), len(batch.updates)))
        ticked = svc._pending_ticks[1] if svc._pending_ticks is not None else frozenset()
        # the oracle: every device this batch touched, its due time computed afresh on the adopted state
        for dev in {*working, *ticked}:
            expected[dev] = svc.pipeline.next_due(svc.states[dev], tick_at if dev in ticked else None)
        assert {d: svc.timers.when(d) for d in expected} == expected
        for alert in batch.alerts:
            if isinstance(alert, Alert) and alert.kind == "signal_lost":
                assert tick_at is not None
                lost.setdefault(alert.device_id, tick_at)

    silent_from = {dev: 60 + 40 * i for i, dev in enumerate(TRUCKS)}  # the trucks fall silent one by one
    for sec in range(0, 1800):
        now = T0 + timedelta(seconds=sec)
        decoded: list[Decoded] = [
            (_fix(i, sec), "tracker/x/fix", b"")
            for i, dev in enumerate(TRUCKS)
            if sec % 10 == i % 10 and sec < silent_from[dev]
        ]
        if sec % 5:
            if decoded:
                step(decoded, None)
        elif sec % 10:
            step(decoded, now)  # fixes and a tick in one batch: the batch computes the due times itself
        else:
            if decoded:
                step(decoded, None)
            step([], now)
    assert used_batch_due > 0  # the batch's own due times were taken, not only recomputed ones
    assert set(lost) == set(TRUCKS)  # no silent truck was left unwoken
    for dev, at in lost.items():
        assert at > T0 + timedelta(seconds=silent_from[dev])
